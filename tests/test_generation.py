"""Generation metrics: token statistics against hand-computed values, the domain FID and class
accuracy on known cases, KID against the unbiased MMD^2 computed loop by loop, improved precision and
recall against scikit-learn's k-NN and on toy Gaussians, the eigendecomposition Frechet distance
against scipy's sqrtm one, the reference features' caches, and (slow) the cached domain classifier's
test accuracy."""

import itertools
import math

import numpy as np
import pytest
import torch

from simvq.metrics.generation import classify, domain_metrics, token_statistics
from simvq.models.classifier import ImageClassifier


def test_token_statistics_by_hand():
    counts = torch.tensor([5, 5, 5, 5, 0, 0, 0, 0])  # uniform over 4 of 8 codes
    stats = token_statistics(counts)
    assert stats == pytest.approx({"entropy_bits": 2.0, "perplexity": 4.0, "usage": 0.5, "tokens": 20, "codebook_size": 8})
    skewed = token_statistics(torch.tensor([3, 1]))
    assert skewed["entropy_bits"] == pytest.approx(-(0.75 * math.log2(0.75) + 0.25 * math.log2(0.25)))


def test_classify_reads_uint8_and_float_images_alike():
    torch.manual_seed(0)
    model = ImageClassifier().eval()
    images = torch.randint(0, 256, (6, 1, 28, 28), dtype=torch.uint8)
    features_u8, predictions_u8 = classify(model, images, batch_size=4)
    features_f, predictions_f = classify(model, images.float() / 255.0)
    assert features_u8.shape == (6, 128) and torch.allclose(features_u8, features_f) and torch.equal(predictions_u8, predictions_f)
    assert torch.equal(predictions_u8, model(images.float() / 255.0).argmax(1))


def test_domain_metrics_on_known_cases():
    torch.manual_seed(0)
    model = ImageClassifier().eval()
    reference = torch.rand(300, 1, 28, 28)
    same = domain_metrics(model, reference, reference)
    assert same["domain_fid"] < 1e-3 and same["domain_fid_samples"] == 300
    shifted = domain_metrics(model, (reference * 0.3).clamp(0, 1), reference)
    assert shifted["domain_fid"] > 100 * max(same["domain_fid"], 1e-6)
    _, predictions = classify(model, reference[:50])
    right = domain_metrics(model, reference[:50], reference, labels=predictions)
    wrong = domain_metrics(model, reference[:50], reference, labels=(predictions + 1) % 10)
    assert right["class_accuracy"] == 1.0 and wrong["class_accuracy"] == 0.0


@pytest.mark.slow
def test_domain_classifier_reaches_90_percent_test_accuracy():
    """Trains once (about a minute on two idle CPU cores) and is cached; the accuracy is measured
    here again on the test split, not read from the cache's record."""
    from simvq.data import FashionMNIST
    from simvq.metrics.generation import domain_classifier

    try:
        test = FashionMNIST("test")
    except FileNotFoundError:
        pytest.skip("Fashion-MNIST is not installed")
    model, record = domain_classifier(progress=False)
    _, predictions = classify(model, test.images.unsqueeze(1))
    accuracy = (predictions == test.labels).double().mean().item()
    assert accuracy >= 0.90
    assert record["test_accuracy"] == pytest.approx(accuracy, abs=1e-6)


# ----------------------------------------------------------------------------- KID, precision/recall, Frechet


def polynomial_kernel_by_hand(a, b):
    return (sum(x * y for x, y in zip(a, b)) / len(a) + 1.0) ** 3


def mmd2_by_hand(xs, ys):
    """The unbiased MMD^2 of Binkowski et al. 2018 (their eq. for KID), loop by loop."""
    m, n = len(xs), len(ys)
    within_x = sum(polynomial_kernel_by_hand(xs[i], xs[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    within_y = sum(polynomial_kernel_by_hand(ys[i], ys[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    across = sum(polynomial_kernel_by_hand(x, y) for x in xs for y in ys) / (m * n)
    return within_x + within_y - 2 * across


def test_kid_equals_the_unbiased_mmd_computed_by_hand():
    from simvq.metrics.generation import kernel_inception_distance, mmd2_unbiased

    xs = [[0.1, -0.4, 1.2], [0.5, 0.3, -0.2], [1.5, 0.0, 0.7], [-0.9, 0.8, 0.1], [0.3, 0.3, 0.3]]
    ys = [[1.1, 0.4, 0.2], [0.0, -1.3, 0.9], [0.6, 0.6, -0.6], [2.0, 0.1, 0.4], [-0.2, 0.5, 1.0]]
    expected = mmd2_by_hand(xs, ys)
    assert mmd2_unbiased(torch.tensor(xs, dtype=torch.float64), torch.tensor(ys, dtype=torch.float64)) == pytest.approx(expected, rel=1e-12)
    # subsets as large as the sets are permutations of them: every subset gives the same value
    kid = kernel_inception_distance(np.array(xs), np.array(ys), subsets=4, subset_size=10)
    assert kid["kid"] == pytest.approx(expected, rel=1e-12) and kid["kid_std"] == pytest.approx(0.0, abs=1e-12)
    assert kid["kid_subset_size"] == 5 and kid["kid_subsets"] == 4
    # one subset of 3 rows: the by-hand value of some 3 rows of each side
    values = {round(mmd2_by_hand([xs[i] for i in a], [ys[j] for j in b]), 12)
              for a in itertools.combinations(range(5), 3) for b in itertools.combinations(range(5), 3)}
    single = kernel_inception_distance(np.array(xs), np.array(ys), subsets=1, subset_size=3, seed=7)
    assert round(single["kid"], 12) in values


def test_kid_is_near_zero_for_one_distribution_and_positive_for_two():
    from simvq.metrics.generation import kernel_inception_distance

    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(600, 8)), rng.normal(size=(600, 8))
    same = kernel_inception_distance(a, b, subsets=20, subset_size=300)
    shifted = kernel_inception_distance(a, b + 0.5, subsets=20, subset_size=300)
    assert abs(same["kid"]) < 3 * same["kid_std"] + 1e-3
    assert shifted["kid"] > 10 * max(abs(same["kid"]), same["kid_std"])


def precision_recall_by_hand(real, fake, k):
    """Kynkaanniemi et al. 2019 with scikit-learn's exact k-NN for the radii and plain loops for the balls."""
    from sklearn.neighbors import NearestNeighbors

    def radii(points):  # k+1 neighbours: the point itself comes first
        distances, _ = NearestNeighbors(n_neighbors=k + 1).fit(points).kneighbors(points)
        return distances[:, k]

    def covered(points, centres, centre_radii):
        return np.mean([any(np.linalg.norm(p - c) <= r for c, r in zip(centres, centre_radii)) for p in points])

    return covered(fake, real, radii(real)), covered(real, fake, radii(fake))


def test_precision_recall_against_a_by_hand_computation():
    pytest.importorskip("sklearn")
    from simvq.metrics.generation import precision_recall

    rng = np.random.default_rng(1)
    real, fake = rng.normal(size=(40, 3)), rng.normal(size=(30, 3)) * 1.5 + 0.5
    expected = precision_recall_by_hand(real, fake, 3)
    result = precision_recall(real, fake, k=3)
    assert (result["precision"], result["recall"]) == pytest.approx(expected, abs=1e-12)
    assert 0 < result["precision"] < 1 and 0 < result["recall"] < 1


def test_precision_recall_on_toy_gaussians():
    from simvq.metrics.generation import precision_recall

    rng = np.random.default_rng(2)
    real = rng.normal(size=(1000, 4))
    same = precision_recall(real, rng.normal(size=(1000, 4)))
    assert same["precision"] > 0.9 and same["recall"] > 0.9
    apart = precision_recall(real, rng.normal(size=(1000, 4)) + 20.0)
    assert apart == {"precision": 0.0, "recall": 0.0}
    # half the samples on the real distribution, half far away: precision halves, recall stays
    mixed = precision_recall(real, np.concatenate([rng.normal(size=(500, 4)), rng.normal(size=(500, 4)) + 20.0]))
    assert 0.4 < mixed["precision"] < 0.55 and mixed["recall"] > 0.85
    # a collapsed generator (all samples near one point): precise, no recall
    collapsed = precision_recall(real, rng.normal(size=(1000, 4)) * 0.01)
    assert collapsed["precision"] > 0.99 and collapsed["recall"] < 0.05


@pytest.mark.parametrize("rows, dim", [(400, 16), (10, 16)])  # the second: singular covariances
def test_frechet_reference_equals_scipy_sqrtm_frechet_distance(rows, dim):
    from simvq.metrics.generation import FrechetReference
    from simvq.metrics.image import feature_statistics, frechet_distance

    rng = np.random.default_rng(3)
    a = rng.normal(size=(rows, dim)) @ rng.normal(size=(dim, dim))
    b = rng.normal(size=(rows, dim)) * 0.7 + 0.3
    reference = FrechetReference.of(a)
    expected = frechet_distance(*feature_statistics(b), *feature_statistics(a))
    assert reference(b) == pytest.approx(expected, rel=1e-6, abs=1e-6)
    assert reference(a) == pytest.approx(0.0, abs=1e-6)


# ----------------------------------------------------------------------------- cached reference features


def test_reference_features_are_classified_once_and_cached_on_disk(tmp_path, monkeypatch):
    from simvq.metrics import generation

    monkeypatch.setattr(generation, "_MEMORY", {})
    torch.manual_seed(0)
    model = ImageClassifier().eval()
    images = torch.randint(0, 256, (40, 1, 28, 28), dtype=torch.uint8)
    calls = []
    original = generation.classify
    monkeypatch.setattr(generation, "classify", lambda *a, **k: calls.append(1) or original(*a, **k))
    first = generation.cached_features(model, images, cache_dir=tmp_path)
    again = generation.cached_features(model, images, cache_dir=tmp_path)
    assert len(calls) == 1 and again is first
    assert torch.equal(first[0], original(model, images)[0])
    assert len(list((tmp_path / "features").glob("*.safetensors"))) == 1
    monkeypatch.setattr(generation, "_MEMORY", {})  # a new process: read from disk, not classified
    from_disk = generation.cached_features(model, images, cache_dir=tmp_path)
    assert len(calls) == 1 and torch.equal(from_disk[0], first[0]) and torch.equal(from_disk[1], first[1])
    other = ImageClassifier().eval()  # other weights or other images: other keys
    generation.cached_features(other, images, cache_dir=tmp_path)
    generation.cached_features(model, images[:20], cache_dir=tmp_path)
    assert len(calls) == 3 and len(list((tmp_path / "features").glob("*.safetensors"))) == 3


def test_domain_reference_measures_every_metric_and_real_data_scores_as_real(monkeypatch):
    from simvq.metrics import generation
    from simvq.metrics.image import feature_statistics, frechet_distance

    monkeypatch.setattr(generation, "_MEMORY", {})
    torch.manual_seed(0)
    model = ImageClassifier().eval()
    reference_images = torch.rand(300, 1, 28, 28)
    reference = generation.DomainReference(model, reference_images, disk=False, kid_subsets=10, kid_subset_size=100)
    features, _ = classify(model, reference_images)
    samples = (reference_images[:120] * 0.5).clamp(0, 1)
    sample_features, sample_predictions = classify(model, samples)
    metrics = reference.measure(sample_features, sample_predictions, sample_predictions)
    expected = frechet_distance(*feature_statistics(sample_features.numpy()), *feature_statistics(features.numpy()))
    assert metrics["domain_fid"] == pytest.approx(expected, rel=1e-6)
    assert metrics["domain_kid"] > 0 and metrics["domain_kid_std"] >= 0 and metrics["class_accuracy"] == 1.0
    assert metrics["domain_kid_subset_size"] == 100 and metrics["domain_fid_samples"] == 120
    itself = reference.measure(features)
    assert itself["domain_precision"] == 1.0 and itself["domain_recall"] == 1.0 and itself["domain_fid"] < 1e-6
