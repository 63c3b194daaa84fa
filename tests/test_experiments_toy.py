"""Toy, clustering and analysis experiments: collapse vs no collapse, k-means parity, rank, movement, CLI."""

import json
import math
import statistics

import numpy as np
import pytest
import torch

from simvq import SimVQ, build_quantizer
from simvq.cli import main
from simvq.data.fashion_mnist import read_idx
from simvq.experiments.analysis import (
    MovementTracker,
    SpectrumTracker,
    code_movement,
    effective_rank,
    index_correspondence,
    singular_values,
)
from simvq.experiments.clustering import (
    fit_kmeans,
    fit_quantizer,
    gaussian_mixture,
    load_fashion_mnist_pixels,
    pca_features,
)
from simvq.experiments.toy import ToyConfig, toy_data, train_toy

# ----------------------------------------------------------------------------- 2-D toy


def test_toy_data_shapes_and_ranges():
    generator = torch.Generator().manual_seed(0)
    square = toy_data("square", 1000, generator=generator, scale=0.5)
    assert square.shape == (1000, 2) and square.abs().max() <= 0.5
    ring = toy_data("ring", 1000, generator=generator)
    radius = ring.norm(dim=1)
    assert abs(float(radius.mean()) - 1.0) < 0.02 and float(radius.min()) > 0.5  # a hole in the middle
    with pytest.raises(ValueError, match="dataset"):
        toy_data("spiral", 10)


COLLAPSE_SEEDS = (0, 1, 2)


@pytest.fixture(scope="module")
def square_runs():
    torch.set_num_threads(1)
    # 4,096 eval points for K = 64: 64 per code, the sampling cap 1 - exp(-64) is 1
    return {
        (method, seed): train_toy(ToyConfig(dataset="square", method=method, steps=1000, snapshot_every=250, eval_samples=4096, seed=seed))
        for method in ("vq", "simvq")
        for seed in COLLAPSE_SEEDS
    }


def test_plain_vq_leaves_most_codes_unused_where_simvq_spreads(square_runs):
    # Final usage at 1,000 steps, measured for seeds 0-4 (the same at 8,192 eval points):
    #   simvq  0.797  0.875  0.484  0.641  0.016   (seed 4: the encoder starts on one code and stays)
    #   vq     0.078  0.297  0.250  0.344  0.250
    # One seed's ratio ranges from 0.06x to 10x, so none is asserted alone. The medians over seeds
    # 0-2 (0.797 and 0.250, 3.2x) and over any three consecutive of the five seeds (simvq >= 0.48,
    # vq <= 0.30, >= 1.9x) clear the thresholds below with margin.
    median = lambda method: statistics.median(float(square_runs[method, seed].usage[-1]) for seed in COLLAPSE_SEEDS)  # noqa: E731
    simvq_usage, vq_usage = median("simvq"), median("vq")
    assert simvq_usage >= 0.4, f"SimVQ median usage {simvq_usage:.3f}"
    assert vq_usage <= 0.4, f"plain VQ median usage {vq_usage:.3f}: expected most codes unused"
    assert simvq_usage >= 1.5 * vq_usage, (vq_usage, simvq_usage)


def test_toy_snapshots_are_self_consistent(square_runs):
    simvq = square_runs["simvq", 0]
    # usage is the fraction of nonzero counts; every eval point is counted once
    torch.testing.assert_close(simvq.usage, (simvq.counts > 0).float().mean(1))
    assert simvq.codebooks.shape == (len(simvq.steps), 64, 2)
    assert int(simvq.counts[-1].sum()) == 4096
    # the snapshot's code table is W(C) of the trained quantizer
    quantizer = simvq.modules["quantizer"]
    torch.testing.assert_close(simvq.codebooks[-1], quantizer.proj(quantizer.basis).detach())


def test_mixture_usage_is_reported_not_asserted_full():
    # 8 modes, 64 codes: usage is bounded by the geometry of the data, not a collapse; report it.
    # (>= 8 codes: at this seed every mode has its own code; a weak check, not a bound)
    result = train_toy(ToyConfig(dataset="mixture", method="simvq", steps=200, snapshot_every=100))
    summary = result.summary()
    assert 0 < summary["final_usage"] <= 1 and summary["final_used_codes"] >= 8
    print("mixture usage (SimVQ, 200 steps):", summary["final_usage"])


# ----------------------------------------------------------------------------- clustering


def test_simvq_clustering_within_ten_percent_of_kmeans_on_separable_mixture():
    # 3 modes in 2-D with K = 3 <= dim + 1 codes: an affine map of 3 random points reaches any 3
    # points, so W(C) can sit on the modes. Seed 0 reaches KMeans; seed 1 stops in a local minimum
    # at 1.51x (docs/analysis.md), which is why this is a fixed-seed check, not a guarantee.
    torch.set_num_threads(1)
    points, _ = gaussian_mixture(3000, num_modes=3, dim=2, separation=4.0, std=0.3, seed=0)
    points = (points - points.mean(0)) / points.std()
    kmeans = fit_kmeans(points, 3, seed=0)
    simvq = fit_quantizer(points, "simvq", 3, steps=800, seed=0)
    assert simvq.distortion <= 1.10 * kmeans.distortion, (simvq.distortion, kmeans.distortion)
    assert simvq.usage == 1.0
    # distortion is the mean squared distance to the nearest code: check against brute force
    brute = torch.cdist(points.double(), simvq.codebook.double()).pow(2).min(1).values.mean()
    assert math.isclose(simvq.distortion, float(brute), rel_tol=1e-4)


def test_mixture_usage_is_bounded_by_modes_for_every_method():
    # 4 far-apart modes in 16-D, 32 codes: whatever the method, codes between the modes own no
    # point; usage near modes/K is the data's doing, not a collapse (reported, not asserted full)
    points, _ = gaussian_mixture(1000, num_modes=4, dim=16, separation=4.0, std=0.3, seed=0)
    kmeans = fit_kmeans(points, 32, seed=0, n_init=1)
    simvq = fit_quantizer(points, "simvq", 32, steps=200, seed=0)
    print("usage on 4 modes, K=32: kmeans", kmeans.usage, "simvq", simvq.usage)
    assert kmeans.usage == 1.0  # k-means splits modes: every centre owns points by construction
    assert simvq.usage <= 0.5


def test_clustering_fit_records_history_and_calls_back():
    points, _ = gaussian_mixture(500, num_modes=3, dim=4, seed=1)
    calls = []
    fit = fit_quantizer(points, "vq", 8, steps=20, record_every=10, callback=lambda step, q: calls.append(step))
    assert calls == list(range(1, 21)) and fit.history["step"] == [0, 10, 20]
    assert int(fit.counts.sum()) == 500
    with pytest.raises(ValueError, match="data"):
        fit_quantizer(points[0], "vq", 8, steps=1)


def test_idx_reader_and_fashion_mnist_loader(tmp_path):
    import gzip

    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    header = bytes([0, 0, 8, 3]) + b"".join(int(n).to_bytes(4, "big") for n in images.shape)
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    with gzip.open(path, "wb") as handle:
        handle.write(header + images.tobytes())
    np.testing.assert_array_equal(read_idx(path), images)
    pixels = load_fashion_mnist_pixels("test", root=tmp_path)
    assert pixels.shape == (2, 12) and math.isclose(float(pixels[1, 11]), 23 / 255, rel_tol=1e-6)
    with pytest.raises(ValueError, match="split"):
        load_fashion_mnist_pixels("val", root=tmp_path)


def test_pca_features_match_numpy():
    x = torch.randn(200, 10, generator=torch.Generator().manual_seed(0)) * torch.arange(1, 11)
    features = pca_features(x, 3)
    # the variance captured equals the top-3 eigenvalues of the covariance
    centred = (x - x.mean(0)).double().numpy()
    eigenvalues = np.sort(np.linalg.eigvalsh(centred.T @ centred))[::-1][:3]
    np.testing.assert_allclose(np.sort((features.double() ** 2).sum(0).numpy())[::-1], eigenvalues, rtol=1e-4)


# ----------------------------------------------------------------------------- analysis


def test_effective_rank_by_hand():
    # singular values 3, 1: p = (3/4, 1/4), H = -(3/4 ln 3/4 + 1/4 ln 1/4), erank = exp(H)
    weight = torch.diag(torch.tensor([3.0, 1.0]))
    p = np.array([0.75, 0.25])
    assert math.isclose(effective_rank(weight), float(np.exp(-(p * np.log(p)).sum())), rel_tol=1e-9)
    assert math.isclose(effective_rank(torch.eye(5)), 5.0, rel_tol=1e-9)
    rank_one = torch.outer(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([1.0, -1.0, 0.5]))
    assert math.isclose(effective_rank(rank_one), 1.0, rel_tol=1e-6)
    # a rotation does not change it; singular values come out descending
    rotation = torch.linalg.qr(torch.randn(2, 2, generator=torch.Generator().manual_seed(0)))[0]
    assert math.isclose(effective_rank(rotation @ weight), effective_rank(weight), rel_tol=1e-6)
    torch.testing.assert_close(singular_values(rotation @ weight), torch.tensor([3.0, 1.0], dtype=torch.float64))
    with pytest.raises(ValueError):
        singular_values(torch.ones(3))


def test_spectrum_tracker_records_every_n_steps():
    tracker = SpectrumTracker(every=2)
    quantizer = SimVQ(4, 16, seed=0)
    for step in range(5):
        tracker(step, quantizer)
    assert tracker.steps == [0, 2, 4] and len(tracker.effective_ranks) == 3
    with pytest.raises(TypeError, match="proj"):
        tracker(0, build_quantizer("vq", dim=4, codebook_size=16))


def test_index_of_c_is_code_of_effective_codebook():
    quantizer = SimVQ(3, 32, seed=0)
    with torch.no_grad():  # a W far from identity, so searching C alone gives a different answer
        quantizer.proj.weight.copy_(torch.tensor([[3.0, 0.5, 0.0], [0.0, 0.3, 0.0], [1.0, 0.0, -2.0]]))
        quantizer.proj.bias.copy_(torch.tensor([0.5, -0.2, 0.1]))
    z = torch.randn(2000, 3, generator=torch.Generator().manual_seed(1))
    result = index_correspondence(quantizer, z)
    assert result["counts_equal"] and result["max_decode_error"] < 1e-5
    assert int(result["counts_codes"].sum()) == 2000
    assert not torch.equal(result["counts_codes"], result["counts_basis_only"])
    with pytest.raises(TypeError, match="SimVQ"):
        index_correspondence(build_quantizer("vq", dim=3, codebook_size=8), z)


def test_one_step_moves_only_selected_codes_for_vq_and_all_codes_for_simvq():
    torch.manual_seed(0)
    z = torch.randn(16, 8) * 2 + 1  # few tokens, many codes: most codes are not selected
    vq = code_movement(build_quantizer("vq", dim=8, codebook_size=128, seed=0), z, lr=0.1)
    assert 0 < vq["fraction_selected"] < 0.2
    assert torch.equal(vq["moved"], vq["selected"])  # exactly the selected codes moved
    assert torch.all(vq["movement"][~vq["selected"]] == 0)
    simvq = code_movement(SimVQ(8, 128, seed=0), z, lr=0.1)
    assert simvq["fraction_selected"] < 0.2 and simvq["fraction_moved"] == 1.0
    assert simvq["mean_movement_unselected"] > 0
    # a hand check of VQ's step: a selected code moves by lr * dL/dc = lr * 2 * sum_i (c - z_i) / (N * dim)
    quantizer = build_quantizer("vq", dim=8, codebook_size=128, seed=0)
    codes = quantizer.encode(z)
    code = int(codes[0])
    members = z[codes == code]
    expected = 0.1 * 2 * (quantizer.embedding[code].detach() - members).sum(0) / (z.numel())
    assert math.isclose(float(vq["movement"][code]), float(expected.norm()), rel_tol=1e-4)


# ----------------------------------------------------------------------------- CLI


def test_cli_toy_2d_writes_files(tmp_path):
    assert main(["toy", "2d", "--dataset", "square", "--steps", "10", "--seeds", "0", "1", "--out", str(tmp_path)]) == 0
    for name in ("toy_square.png", "toy_square.gif", "toy.json"):
        assert (tmp_path / name).stat().st_size > 0, name
    report = json.loads((tmp_path / "toy.json").read_text())
    assert set(report["square"]["runs"]) == {"seed0", "seed1"}
    assert set(report["square"]["runs"]["seed0"]) == {"vq", "simvq", "simvq_train_c"}
    usage = report["square"]["usage_by_seed"]["vq"]
    assert len(usage) == 2 and usage[0] == report["square"]["runs"]["seed0"]["vq"]["final_usage"]


def test_cli_cluster_and_analysis_write_files(tmp_path):
    args = ["--steps", "30", "--fmnist-samples", "600", "--pca-dim", "8", "--out", str(tmp_path)]
    assert main(["toy", "cluster", *args, "--fmnist-codebook-sizes", "8"]) == 0
    assert main(["toy", "analysis", *args, "--codebook-size", "32"]) == 0
    for name in ("clustering.json", "cluster_fmnist_pca8_k8.png", "analysis.json", "spectrum.png", "code_movement.png", "index_correspondence.png"):
        assert (tmp_path / name).stat().st_size > 0, name
    report = json.loads((tmp_path / "analysis.json").read_text())
    assert report["index_correspondence"]["counts_equal"] is True
    assert report["code_movement"]["simvq"]["fraction_moved"] == 1.0


def test_movement_tracker_counts_codes_that_move_between_calls():
    quantizer = build_quantizer("vq", dim=2, codebook_size=4, seed=0)
    tracker = MovementTracker()
    tracker(0, quantizer)
    with torch.no_grad():
        quantizer.embedding[1] += 0.5  # one of four codes moves
    tracker(1, quantizer)
    tracker(2, quantizer)  # nothing moves
    assert tracker.steps == [1, 2]
    assert tracker.fraction_moved == [0.25, 0.0]
    assert tracker.fraction_never_moved == [0.75, 0.75]
    # in a real fit, plain VQ leaves never-selected codes untouched while SimVQ moves all of them
    points, _ = gaussian_mixture(400, num_modes=2, dim=4, seed=0)
    trackers = {m: MovementTracker() for m in ("vq", "simvq")}
    for method, t in trackers.items():
        fit_quantizer(points, method, 32, steps=30, seed=0, callback=t)
    assert trackers["simvq"].fraction_never_moved[-1] == 0.0
    assert trackers["vq"].fraction_never_moved[-1] > 0.5
