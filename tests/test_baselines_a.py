"""Codebook baselines (vq family, vq_lc, cvq, affine): the shared contract, then each method's
defining update checked against an independent computation (hand formulas, brute-force argmin)."""

import pytest
import torch
import torch.nn.functional as F

from simvq import build_quantizer, list_quantizers
from simvq.quantizers import CVQ, LCVQ, VQ, AffineVQ, KMeansVQ, ResetVQ
from simvq.quantizers.codebook_updates import kmeans

NAMES = ["vq", "vq_ema", "vq_reset", "vq_kmeans", "vq_l2", "vq_lc", "cvq", "affine"]


def brute_force_codes(x, codebook):
    return torch.cdist(x.double(), codebook.double()).argmin(1)


def build(name, dim=8, codebook_size=32, **options):
    return build_quantizer(name, dim=dim, codebook_size=codebook_size, seed=0, **options)


def warmed_up(name, dim=8, codebook_size=32, **options):
    """A quantizer after one training forward (k-means inits done), switched to eval mode."""
    quantizer = build(name, dim, codebook_size, **options)
    quantizer(torch.randn(256, dim, generator=torch.Generator().manual_seed(5)))
    return quantizer.eval()


# ----------------------------------------------------------------------------- shared contract


def test_all_names_registered_and_buildable_with_dim_and_codebook_size():
    assert set(NAMES) <= set(list_quantizers())
    for name in NAMES:
        quantizer = build_quantizer(name, dim=8, codebook_size=16)
        out = quantizer(torch.randn(3, 5, 8))
        assert out.codes.shape == (3, 5) and out.quantized.shape == (3, 5, 8)


@pytest.mark.parametrize("name", NAMES)
def test_gradients_reach_the_encoder_and_codes_in_range(name):
    quantizer = build(name)
    z = torch.randn(4, 6, 8, requires_grad=True)
    out = quantizer(z)
    assert out.codes.dtype == torch.int64 and out.codes.shape == (4, 6)
    assert 0 <= int(out.codes.min()) and int(out.codes.max()) < 32
    assert torch.isfinite(out.loss) and out.loss.ndim == 0
    torch.testing.assert_close(out.loss, sum(out.losses.values()))
    (out.quantized.pow(2).sum() + out.loss).backward()
    assert z.grad is not None and z.grad.abs().sum() > 0
    assert {"usage", "perplexity"} <= set(out.metrics)


@pytest.mark.parametrize("name", NAMES)
def test_decode_and_encode_agree_with_forward(name):
    quantizer = warmed_up(name)
    z = torch.randn(3, 7, 8)
    out = quantizer(z)
    assert torch.equal(quantizer.encode(z), out.codes)
    torch.testing.assert_close(quantizer.decode(out.codes), out.quantized, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_channel_first_matches_channel_last(name):
    channel_last = warmed_up(name)
    channel_first = build(name, channel_first=True)
    channel_first.load_state_dict(channel_last.state_dict())
    channel_first.eval()
    z = torch.randn(2, 8, 5, 3)
    out = channel_first(z)
    ref = channel_last(z.permute(0, 2, 3, 1))
    assert out.quantized.shape == z.shape and torch.equal(out.codes, ref.codes)
    torch.testing.assert_close(out.quantized, ref.quantized.permute(0, 3, 1, 2))
    assert channel_first.decode(out.codes).shape == z.shape


@pytest.mark.parametrize("name", NAMES)
def test_bf16_autocast_searches_and_losses_in_fp32(name):
    quantizer = warmed_up(name)
    z = torch.randn(40, 8)
    ref = quantizer(z)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = quantizer(z)
    assert torch.equal(out.codes, ref.codes)
    assert out.loss.dtype == torch.float32 and out.quantized.dtype == z.dtype
    torch.testing.assert_close(out.quantized, ref.quantized)


@pytest.mark.parametrize("name", NAMES)
def test_state_dict_carries_everything_needed_to_resume(name):
    quantizer = build(name)
    for step in range(3):
        quantizer(torch.randn(128, 8, generator=torch.Generator().manual_seed(step)))
    clone = build_quantizer(name, dim=8, codebook_size=32, seed=1)  # different init: all must come from the state
    clone.load_state_dict(quantizer.state_dict())
    quantizer.eval(), clone.eval()
    z = torch.randn(64, 8)
    assert torch.equal(clone.encode(z), quantizer.encode(z))
    torch.testing.assert_close(clone(z).quantized, quantizer(z).quantized)


@pytest.mark.parametrize("name", NAMES)
def test_eval_mode_never_updates_state(name):
    quantizer = warmed_up(name)
    before = {key: value.clone() for key, value in quantizer.state_dict().items()}
    quantizer(torch.randn(200, 8) + 2.0)
    for key, value in quantizer.state_dict().items():
        assert torch.equal(value, before[key]), key


@pytest.mark.parametrize("name", NAMES)
def test_seed_reproduces_the_quantizer(name):
    z = torch.randn(64, 8, generator=torch.Generator().manual_seed(9))
    first, second = build(name), build(name)
    torch.testing.assert_close(first(z).quantized, second(z).quantized)  # includes seeded k-means / restarts
    for (key, a), (_, b) in zip(first.state_dict().items(), second.state_dict().items()):
        assert torch.equal(a, b), key


def test_bad_options_raise_clear_errors():
    with pytest.raises(ValueError, match="ema_decay"):
        VQ(8, 16, ema_decay=1.5)
    with pytest.raises(ValueError, match="codebook_dim"):
        VQ(8, 16, codebook_dim=0)
    with pytest.raises(ValueError, match="distance"):
        CVQ(8, 16, distance="manhattan")
    with pytest.raises(ValueError, match="anchor"):
        CVQ(8, 16, anchor="nowhere")
    with pytest.raises(ValueError, match="affine"):
        AffineVQ(8, 16, affine="projective")
    with pytest.raises(ValueError, match=r"features must have shape \(codebook_size=16"):
        LCVQ(8, 16, features=torch.randn(15, 4))
    with pytest.raises(TypeError, match="features"):
        LCVQ(8, 16, features=torch.zeros(16, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="channels"):
        build("cvq")(torch.randn(4, 7))


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


def clustered_data(num_clusters=16, per_cluster=40, dim=8, seed=0):
    generator = torch.Generator().manual_seed(seed)
    centres = torch.randn(num_clusters, dim, generator=generator) * 3
    points = centres.repeat_interleave(per_cluster, 0) + 0.05 * torch.randn(num_clusters * per_cluster, dim, generator=generator)
    return points[torch.randperm(points.shape[0], generator=generator)], centres


def distortion(x, codebook):
    return torch.cdist(x, codebook).pow(2).min(1).values.mean().item()


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


# ----------------------------------------------------------------------------- vq_lc


def test_lc_keeps_the_feature_codebook_frozen_and_trains_only_the_projector():
    features = torch.randn(32, 12, generator=torch.Generator().manual_seed(0))
    quantizer = LCVQ(8, 32, features=features, seed=0)
    assert quantizer.proj.in_features == 12 and quantizer.proj.out_features == 8
    assert {name for name, _ in quantizer.named_parameters()} == {"proj.weight", "proj.bias"}
    torch.testing.assert_close(quantizer.basis, features)
    projector_before = quantizer.proj.weight.clone()
    optimizer = torch.optim.Adam(quantizer.parameters(), lr=1e-2)
    z = torch.randn(64, 8)
    for _ in range(3):
        out = quantizer(z)
        optimizer.zero_grad(), out.loss.backward(), optimizer.step()
    torch.testing.assert_close(quantizer.basis, features)
    assert not torch.allclose(quantizer.proj.weight, projector_before)
    out = quantizer(z)
    assert torch.equal(out.codes, brute_force_codes(z, quantizer.proj(features).detach()))


def test_lc_without_features_freezes_kmeans_centres_of_the_first_batch():
    data, _ = clustered_data()
    quantizer = LCVQ(8, 16, seed=0)
    assert not bool(quantizer.features_ready)
    random_distortion = distortion(data, quantizer.basis)
    out = quantizer(data)
    assert bool(quantizer.features_ready)
    # identity projector at start: the codebook is the k-means centres, which fit the clusters
    torch.testing.assert_close(quantizer.codebook(), quantizer.basis)
    assert distortion(data, quantizer.basis) < 0.25 * random_distortion
    assert torch.equal(out.codes, brute_force_codes(data, quantizer.basis))
    centres = quantizer.basis.clone()
    quantizer(torch.randn(64, 8))
    assert torch.equal(quantizer.basis, centres)


# ----------------------------------------------------------------------------- cvq


def test_cvq_reanchors_unused_codes_by_the_official_rule():
    quantizer = CVQ(3, 4, seed=0)
    with torch.no_grad():
        quantizer.embedding.copy_(torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [-1.0, -0.2, 0.0], [0.0, 0.0, -1.0]]))
    before = quantizer.embedding.clone()
    generator = torch.Generator().manual_seed(0)
    # features only near the +x and +y codes (+ a positive z offset): codes 2 and 3 go unused
    x = torch.cat([torch.tensor([[2.0, 0.1, 0.3]]), torch.tensor([[0.1, 2.0, 0.3]])]).repeat(5, 1)
    x = x + 0.05 * torch.randn(10, 3, generator=generator)
    out = quantizer(x)
    cosine = F.normalize(x, dim=1) @ F.normalize(before, dim=1).T
    assert torch.equal(out.codes, cosine.argmax(1))
    share = torch.bincount(out.codes, minlength=4).double() / 10
    assert share[2] == 0 and share[3] == 0
    usage = 0.01 * share
    torch.testing.assert_close(quantizer.usage.double(), usage)
    alpha = torch.exp(-(usage * 4 * 10) / 0.01 - 1e-3)
    anchors = x[cosine.argmax(0)]  # the feature closest (in cosine) to each code
    expected = before * (1 - alpha[:, None].float()) + anchors * alpha[:, None].float()
    torch.testing.assert_close(quantizer.embedding.detach(), expected)
    # unused codes moved (almost entirely) onto features, used ones stayed put
    assert cosine.max(0).values[2:].max() < 0.5
    moved = F.normalize(x, dim=1) @ F.normalize(quantizer.embedding.detach(), dim=1).T
    assert moved.max(0).values[2:].min() > 0.99
    torch.testing.assert_close(quantizer.embedding[:2].detach(), before[:2], rtol=0, atol=1e-6)


def test_cvq_contrastive_term_matches_the_official_formula():
    quantizer = build("cvq", codebook_size=8, contrastive=True)
    z = torch.randn(40, 8)
    similarity = F.normalize(z, dim=1) @ F.normalize(quantizer.embedding, dim=1).T
    ordered, _ = similarity.sort(dim=0)  # as the official code: ascending along the tokens
    positive = ordered[-max(1, 40 // 8) :].mean(0, keepdim=True)
    negative = ordered[: 40 // 2]
    logits = torch.cat([positive, negative]).T / 0.07
    expected = F.cross_entropy(logits, torch.zeros(8, dtype=torch.long))
    out = quantizer(z)
    torch.testing.assert_close(out.losses["contrastive"], expected)
    out.losses["contrastive"].backward()
    assert quantizer.embedding.grad.abs().sum() > 0


# ----------------------------------------------------------------------------- affine


def test_affine_learned_scale_and_shift_are_applied():
    quantizer = AffineVQ(6, 20, seed=0, affine_lr=10.0)
    with torch.no_grad():
        quantizer.scale_param.copy_(torch.linspace(-0.05, 0.05, 6))
        quantizer.shift_param.copy_(torch.linspace(0.1, -0.1, 6))
    expected = quantizer.embedding * (1 + 10 * quantizer.scale_param) + 10 * quantizer.shift_param
    torch.testing.assert_close(quantizer.codebook(), expected)
    z = torch.randn(30, 6)
    out = quantizer(z)
    assert torch.equal(out.codes, brute_force_codes(z, expected.detach()))
    torch.testing.assert_close(out.quantized, expected[out.codes].detach())


def test_affine_running_statistics_match_the_codebook_to_the_inputs():
    quantizer = AffineVQ(5, 64, seed=0, affine="running")
    z = torch.randn(500, 5) * torch.tensor([0.5, 1.0, 2.0, 3.0, 4.0]) + torch.tensor([1.0, -1.0, 0.0, 5.0, 2.0])
    quantizer(z)
    torch.testing.assert_close(quantizer.input_mean, z.mean(0))
    torch.testing.assert_close(quantizer.input_var, z.var(0, unbiased=False), rtol=1e-4, atol=1e-5)
    codebook = quantizer.codebook()
    torch.testing.assert_close(codebook.mean(0), z.mean(0), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(codebook.var(0, unbiased=False), z.var(0, unbiased=False), rtol=1e-3, atol=1e-4)
    # later batches: EMA with momentum 0.1
    second = torch.randn(500, 5)
    quantizer(second)
    torch.testing.assert_close(quantizer.input_mean, 0.9 * z.mean(0) + 0.1 * second.mean(0), rtol=1e-5, atol=1e-5)


def test_affine_sync_update_gradient_matches_direct_computation():
    nu, beta = 0.2, 0.25
    quantizer = AffineVQ(6, 20, seed=0, sync_nu=nu, beta=beta)
    with torch.no_grad():
        quantizer.scale_param.fill_(0.03)
        quantizer.shift_param.fill_(-0.02)
    z = torch.randn(30, 6, requires_grad=True)
    upstream = torch.randn(30, 6)
    out = quantizer(z)
    torch.testing.assert_close(out.quantized, quantizer.codebook()[out.codes].detach())  # forward value unchanged
    (out.quantized * upstream).sum().add(out.loss).backward()
    # direct: task gradient reaches the chosen codes scaled by nu, plus the codebook loss
    embedding = quantizer.embedding.detach().clone().requires_grad_()
    scale, shift = 1 + 10 * quantizer.scale_param.detach(), 10 * quantizer.shift_param.detach()
    q = embedding[out.codes] * scale + shift
    direct = nu * (q * upstream).sum() + (q - z.detach()).pow(2).mean()
    direct.backward()
    torch.testing.assert_close(quantizer.embedding.grad, embedding.grad)
    # and the encoder gets the plain straight-through gradient plus its commitment term
    expected_z_grad = upstream + beta * 2 * (z.detach() - q.detach()) / z.numel()
    torch.testing.assert_close(z.grad, expected_z_grad)
    assert quantizer.scale_param.grad.abs().sum() > 0 and quantizer.shift_param.grad.abs().sum() > 0


def test_affine_alternating_step_updates_the_codes_in_place():
    lr, momentum = 5.0, 0.9
    quantizer = AffineVQ(6, 20, seed=0, alternating_lr=lr, alternating_momentum=momentum)
    with torch.no_grad():
        quantizer.scale_param.fill_(0.02), quantizer.shift_param.fill_(0.01)
    scale, shift = 1 + 10 * quantizer.scale_param.detach(), 10 * quantizer.shift_param.detach()
    velocity = torch.zeros(20, 6)
    for step in range(2):
        z = torch.randn(30, 6, generator=torch.Generator().manual_seed(step))
        embedding = quantizer.embedding.detach().clone().requires_grad_()
        codes = brute_force_codes(z, (embedding * scale + shift).detach())
        (grad,) = torch.autograd.grad((embedding[codes] * scale + shift - z).pow(2).mean(), [embedding])
        velocity = momentum * velocity + grad
        out = quantizer(z)
        assert torch.equal(out.codes, codes)
        torch.testing.assert_close(quantizer.embedding.detach(), embedding.detach() - lr * velocity)
        torch.testing.assert_close(quantizer.alternating_velocity, velocity)
        # the output is recomputed with the updated codes; affine parameters untouched in place
        torch.testing.assert_close(out.quantized, quantizer.codebook()[codes].detach())
        torch.testing.assert_close(quantizer.scale_param.detach(), torch.full((6,), 0.02))
    assert quantizer.embedding.grad is None  # the in-place step leaves .grad alone
    # the codebook term left in the loss trains the affine parameters, not E
    out = quantizer(torch.randn(30, 6))
    out.losses["codebook"].backward()
    assert quantizer.embedding.grad is None or quantizer.embedding.grad.abs().sum() == 0
    assert quantizer.scale_param.grad.abs().sum() > 0


# ----------------------------------------------------------------------------- DDP code paths


def test_single_process_group_gives_the_same_updates(tmp_path):
    """With a 1-process gloo group the all_reduce/broadcast paths run and must change nothing."""
    import torch.distributed as dist

    data, _ = clustered_data()
    options = {"vq_reset": {}, "vq_kmeans": {}, "cvq": {}, "affine": {"affine": "running"}, "vq_lc": {}}
    reference = {}
    for name, extra in options.items():
        quantizer = build(name, codebook_size=16, **extra)
        quantizer(data), quantizer(data + 0.1)
        reference[name] = quantizer.state_dict()
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        for name, extra in options.items():
            quantizer = build(name, codebook_size=16, **extra)
            quantizer(data), quantizer(data + 0.1)
            for key, value in quantizer.state_dict().items():
                torch.testing.assert_close(value, reference[name][key], msg=f"{name}.{key}")
    finally:
        dist.destroy_process_group()
