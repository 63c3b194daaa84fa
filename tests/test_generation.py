"""Generation metrics: token statistics against hand-computed values, the domain FID and class
accuracy on known cases, and (slow) the cached domain classifier's test accuracy."""

import math

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
