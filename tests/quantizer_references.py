"""Independent reference computations the quantizer and search tests compare against."""

import torch


def brute_force(x, codebook):
    """``(indices, squared distances)`` of the nearest code, by a float64 ``cdist`` over all codes."""
    distances = torch.cdist(x.double(), codebook.double()).pow(2)
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
