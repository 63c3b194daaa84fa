"""The codebook VQ family (vq, vq_ema, vq_reset, vq_kmeans, vq_l2) and its k-means helper: each
preset's defining update against a hand computation or a brute-force argmin."""

import pytest
import torch
import torch.nn.functional as F

from quantizer_references import brute_force_codes, clustered_data, distortion
from simvq import build_quantizer
from simvq.quantizers import VQ, KMeansVQ, ResetVQ
from simvq.quantizers.codebook_updates import kmeans, sample_rows


def build(name, dim=8, codebook_size=32, **options):
    return build_quantizer(name, dim=dim, codebook_size=codebook_size, seed=0, **options)


def test_bad_options_raise_clear_errors():
    with pytest.raises(ValueError, match="ema_decay"):
        VQ(8, 16, ema_decay=1.5)
    with pytest.raises(ValueError, match="dead_code_decay"):
        VQ(8, 16, dead_code_decay=1.0)
    with pytest.raises(ValueError, match="codebook_dim"):
        VQ(8, 16, codebook_dim=0)


# ----------------------------------------------------------------------------- vq_ema


def test_ema_update_matches_hand_computation():
    decay, eps = 0.9, 1e-5
    quantizer = VQ(2, 3, ema_decay=decay, ema_eps=eps)
    codes0 = [[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]]
    with torch.no_grad():
        quantizer.embedding.copy_(torch.tensor(codes0))
        quantizer.ema_embed_sum.copy_(torch.tensor(codes0))
    batches = [
        torch.tensor([[0.1, 0.1], [0.9, 0.2], [1.2, -0.1], [0.8, 0.1]]),  # code 2 unused
        torch.tensor([[0.0, 0.8], [0.2, 1.1], [-0.1, 0.2]]),  # code 1 unused
    ]
    # the same rule written out by hand, one code at a time
    size, total_sum, embed = [1.0, 1.0, 1.0], [list(c) for c in codes0], [list(c) for c in codes0]
    for x in batches:
        out = quantizer(x)
        assign = [min(range(3), key=lambda k: sum((a - b) ** 2 for a, b in zip(row, embed[k]))) for row in x.tolist()]
        assert out.codes.tolist() == assign
        # forward used the codebook before the update
        torch.testing.assert_close(out.quantized, torch.tensor([embed[k] for k in assign]))
        # only beta * commitment: no codebook term
        assert set(out.losses) == {"commitment"}
        expected_commit = 0.25 * sum((a - b) ** 2 for row, k in zip(x.tolist(), assign) for a, b in zip(row, embed[k])) / x.numel()
        assert out.losses["commitment"].item() == pytest.approx(expected_commit, rel=1e-5)
        for k in range(3):
            members = [row for row, c in zip(x.tolist(), assign) if c == k]
            size[k] = decay * size[k] + (1 - decay) * len(members)
            for d in range(2):
                total_sum[k][d] = decay * total_sum[k][d] + (1 - decay) * sum(m[d] for m in members)
        n = sum(size)
        smoothed = [(s + eps) / (n + 3 * eps) * n for s in size]
        embed = [[total_sum[k][d] / smoothed[k] for d in range(2)] for k in range(3)]
        torch.testing.assert_close(quantizer.embedding, torch.tensor(embed), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(quantizer.ema_cluster_size, torch.tensor(size), rtol=1e-5, atol=1e-6)


def test_ema_codebook_is_not_a_parameter_and_eval_does_not_update():
    quantizer = build("vq_ema")
    assert "embedding" not in dict(quantizer.named_parameters())
    assert "embedding" in quantizer.state_dict() and "ema_cluster_size" in quantizer.state_dict()
    quantizer.eval()
    before = quantizer.embedding.clone()
    quantizer(torch.randn(50, 8))
    assert torch.equal(quantizer.embedding, before)


# ----------------------------------------------------------------------------- vq_reset


@pytest.mark.parametrize("ema_decay", [None, 0.99])
def test_reset_replaces_exactly_the_dead_codes_with_encoder_outputs(ema_decay):
    quantizer = ResetVQ(4, 8, ema_decay=ema_decay, seed=0)
    usage = torch.tensor([5.0, 5.0, 5.0, 5.0, 0.5, 0.5, 5.0, 0.2])
    with torch.no_grad():
        quantizer.code_usage.copy_(usage)
    before = quantizer.embedding.clone()
    # a batch that only uses codes 0..3: near copies of them
    generator = torch.Generator().manual_seed(0)
    x = before[:4].repeat(6, 1) + 0.01 * torch.randn(24, 4, generator=generator)
    out = quantizer(x)
    counts = torch.bincount(out.codes, minlength=8).float()
    assert counts[4:].sum() == 0
    expected_usage = 0.99 * usage + 0.01 * counts
    torch.testing.assert_close(quantizer.code_usage, expected_usage)
    dead = expected_usage < 1.0
    assert dead.tolist() == [False] * 4 + [True, True, False, True]
    after = quantizer.embedding
    for k in range(8):
        is_batch_row = (x - after[k]).abs().amax(1).min() < 1e-6
        if dead[k]:
            assert is_batch_row, f"dead code {k} was not re-seeded from the batch"
        else:
            assert not is_batch_row
    if ema_decay is None:
        # alive codes untouched (the loss-trained codebook only moves by the optimiser)
        torch.testing.assert_close(after[~dead], before[~dead])
    else:
        # the EMA state reproduces every code, restarted ones included
        smoothed = quantizer._smoothed_cluster_size()
        torch.testing.assert_close(quantizer.ema_embed_sum / smoothed[:, None], after)
    # the forward used the codebook before the restart
    torch.testing.assert_close(out.quantized, before[out.codes])


def test_reset_keeps_full_usage_where_plain_vq_collapses():
    generator = torch.Generator().manual_seed(0)
    data = torch.randn(512, 4, generator=generator) * 0.1 + 3.0  # far from the N(0, 1/4) init codes
    plain, reset = VQ(4, 64, seed=0), ResetVQ(4, 64, seed=0, dead_code_threshold=1.0)
    for quantizer in (plain, reset):
        optimizer = torch.optim.SGD(quantizer.parameters(), lr=0.5) if list(quantizer.parameters()) else None
        for _ in range(20):
            out = quantizer(data)
            if optimizer:
                optimizer.zero_grad(), out.loss.backward(), optimizer.step()
    plain_usage = plain.eval()(data).metrics["usage"].item()
    reset_usage = reset.eval()(data).metrics["usage"].item()
    assert plain_usage < 0.1 and reset_usage > 0.8


# ----------------------------------------------------------------------------- vq_kmeans


def test_kmeans_init_reduces_distortion_and_codes_are_brute_force():
    data, _ = clustered_data()
    random_init = VQ(8, 16, seed=0)
    quantizer = KMeansVQ(8, 16, seed=0)
    assert torch.equal(quantizer.embedding, random_init.embedding)  # same start
    out = quantizer(data)
    assert bool(quantizer.kmeans_done)
    # Forgy-started Lloyd may merge two clusters (a local optimum), so not ~0, but far below random
    assert distortion(data, quantizer.embedding.detach()) < 0.25 * distortion(data, random_init.embedding.detach())
    assert torch.equal(out.codes, brute_force_codes(data, quantizer.embedding.detach()))
    # it runs once: a second forward leaves the (not yet optimised) codebook alone
    before = quantizer.embedding.clone()
    quantizer(torch.randn(100, 8))
    assert torch.equal(quantizer.embedding, before)


def test_kmeans_centroids_are_the_means_of_their_members():
    data, _ = clustered_data(num_clusters=6, per_cluster=30, dim=3, seed=1)
    centroids, counts = kmeans(data, 6, iters=15, generator=torch.Generator().manual_seed(0))
    assign = brute_force_codes(data, centroids)
    assert counts.sum().item() == data.shape[0]
    for k in range(6):
        members = data[assign == k]
        assert members.shape[0] == int(counts[k])
        if members.shape[0]:
            torch.testing.assert_close(centroids[k], members.mean(0), rtol=1e-5, atol=1e-5)


def test_kmeans_with_fewer_vectors_than_clusters_has_no_nan():
    centroids, counts = kmeans(torch.randn(5, 4), 12, iters=3)
    assert torch.isfinite(centroids).all() and counts.sum() == 5


@pytest.mark.parametrize("num_rows", [20, 100])  # without and with replacement
def test_drawn_rows_are_distinct_codes_even_from_a_smaller_or_repetitive_batch(num_rows):
    """A copy of a code ties with it and the lower index always wins, so it would be dead from the
    start: every drawn row is distinct, a vector's first draw is exactly it, a repeat is jittered by
    about 1% of the batch's spread."""
    x = torch.randn(40, 8, generator=torch.Generator().manual_seed(0))
    x[:10] = 0.5  # a blank region: ten identical vectors, so 31 distinct ones
    rows = sample_rows(x, num_rows, generator=torch.Generator().manual_seed(1))
    assert torch.unique(rows, dim=0).shape[0] == num_rows
    gap = torch.cdist(rows, x).min(1).values
    assert 0 < int((gap == 0).sum()) <= 31
    assert float(gap.max()) < 0.1 * float(x.std())


def test_restarts_from_a_batch_smaller_than_the_codebook_leave_no_duplicate_codes():
    quantizer = ResetVQ(4, 64, seed=0, dead_code_threshold=1.0)
    quantizer(torch.randn(16, 4, generator=torch.Generator().manual_seed(0)) + 3.0)  # every code dies and restarts
    assert torch.unique(quantizer.embedding.detach(), dim=0).shape[0] == 64


# ----------------------------------------------------------------------------- vq_l2


def test_l2_codes_are_unit_norm_in_the_low_dim_and_search_is_cosine():
    quantizer = build("vq_l2", dim=16, codebook_size=64, codebook_dim=4)
    assert quantizer.codebook().shape == (64, 4)
    torch.testing.assert_close(quantizer.codebook().norm(dim=1), torch.ones(64))
    z = torch.randn(50, 16)
    out = quantizer(z)
    low = F.normalize(quantizer.project_in(z), dim=-1)
    cosine = low @ F.normalize(quantizer.embedding, dim=-1).T
    assert torch.equal(out.codes, cosine.argmax(1))
    code_vectors = F.normalize(quantizer.embedding[out.codes], dim=-1)
    torch.testing.assert_close(code_vectors.norm(dim=1), torch.ones(50))
    torch.testing.assert_close(out.quantized, quantizer.project_out(code_vectors), rtol=1e-5, atol=1e-6)
    # losses are taken in the normalised low-dim space
    torch.testing.assert_close(out.losses["codebook"], (code_vectors - low).pow(2).mean())
