"""Independent reference computations the quantizer and search tests compare against."""

import torch


def squared_distances(x, codes):
    """Every squared distance from ``x`` to ``codes``, in float64."""
    return torch.cdist(x.double(), codes.double()).pow(2)


def brute_force(x, codebook):
    """``(indices, squared distances)`` of the nearest code, by a float64 ``cdist`` over all codes."""
    distances = squared_distances(x, codebook)
    return distances.argmin(1), distances.min(1).values


def brute_force_codes(x, codebook):
    return brute_force(x, codebook)[0]


def clustered_data(num_clusters=16, per_cluster=40, dim=8, seed=0):
    generator = torch.Generator().manual_seed(seed)
    centres = torch.randn(num_clusters, dim, generator=generator) * 3
    points = centres.repeat_interleave(per_cluster, 0) + 0.05 * torch.randn(num_clusters * per_cluster, dim, generator=generator)
    return points[torch.randperm(points.shape[0], generator=generator)], centres


def distortion(x, codebook):
    return torch.cdist(x, codebook).pow(2).min(1).values.mean().item()


def backward_through_an_encoder(quantizer, dim, count=32):
    """Runs ``count`` points through a linear encoder and ``quantizer``, back-propagates a loss of the
    output, checks the encoder got a finite non-zero gradient, and returns the quantizer's output."""
    encoder = torch.nn.Linear(3, dim)
    out = quantizer(encoder(torch.randn(count, 3)))
    (out.quantized.pow(2).sum() + out.loss).backward()
    assert torch.isfinite(encoder.weight.grad).all() and encoder.weight.grad.abs().sum() > 0
    return out


def assert_channel_first_agrees(quantizer, clone, dim):
    """Loads ``quantizer``'s state into ``clone`` (built with ``channel_first=True``) and checks both
    give the same codes and outputs on one ``(B, dim, H, W)`` batch."""
    clone.load_state_dict(quantizer.state_dict())
    z = torch.randn(2, dim, 3, 3)
    a, b = clone(z), quantizer(z.movedim(1, -1))
    torch.testing.assert_close(a.quantized.movedim(1, -1), b.quantized)
    assert torch.equal(a.codes, b.codes)
