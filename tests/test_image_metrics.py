"""Image metrics against hand computations: PSNR, SSIM, usage/perplexity, Frechet distance, rFID."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from simvq.metrics.image import (
    cached_reference_statistics,
    evaluate_reconstructions,
    feature_statistics,
    frechet_distance,
)
from simvq.quantizers import QuantizerOutput


class FixedReconstructor(nn.Module):
    """Stands in for an ImageAutoencoder: adds a known per-image offset and emits known codes."""

    def __init__(self, codebook_size, offsets, codes):
        super().__init__()
        self.quantizer = nn.Module()
        self.quantizer.codebook_size = codebook_size
        self.offsets, self.codes = offsets, codes
        self.anchor = nn.Parameter(torch.zeros(()))  # gives the module a device
        self.seen = 0

    def forward(self, images):
        n = images.shape[0]
        offsets = self.offsets[self.seen : self.seen + n].view(-1, 1, 1, 1)
        codes = self.codes[self.seen : self.seen + n]
        self.seen += n
        return images + offsets, QuantizerOutput(quantized=images, codes=codes, loss=torch.zeros(()))


class ListDataset(torch.utils.data.Dataset):
    def __init__(self, images):
        self.images = images

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return self.images[i]


def test_psnr_ssim_usage_match_hand_computation():
    from skimage.metrics import structural_similarity

    generator = torch.Generator().manual_seed(0)
    images = torch.rand(10, 1, 16, 16, generator=generator) * 0.5 + 0.25  # offsets keep them in [0, 1]
    offsets = torch.linspace(-0.2, 0.2, 10)
    offsets[4] = 0.05
    codes = torch.randint(0, 6, (10, 4, 4), generator=generator)  # K = 32: at most 6 codes used
    model = FixedReconstructor(32, offsets, codes)
    metrics, counts = evaluate_reconstructions(model, ListDataset(images), batch_size=3, fid_images=0, progress=False)

    # PSNR: per image 10 log10(1 / mse_i) with mse_i = offset_i^2, then the mean
    expected_psnr = np.mean([10 * math.log10(1 / float(o) ** 2) for o in offsets])
    assert metrics["psnr"] == pytest.approx(expected_psnr, rel=1e-5)
    # SSIM: scikit-image's Gaussian SSIM (Wang et al. 2004 settings) per image, then the mean
    expected_ssim = np.mean([
        structural_similarity(images[i, 0].numpy(), (images[i, 0] + offsets[i]).numpy(), data_range=1.0,
                              gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
        for i in range(10)
    ])
    assert metrics["ssim"] == pytest.approx(expected_ssim, abs=2e-2)
    # usage and perplexity over all 160 tokens
    hand_counts = np.bincount(codes.flatten().numpy(), minlength=32)
    probs = hand_counts[hand_counts > 0] / hand_counts.sum()
    assert torch.equal(counts, torch.from_numpy(hand_counts))
    assert metrics["usage"] == pytest.approx((hand_counts > 0).sum() / 32)
    assert metrics["perplexity"] == pytest.approx(math.exp(-(probs * np.log(probs)).sum()), rel=1e-5)
    assert metrics["tokens"] == 160 and metrics["images"] == 10


def test_max_images_limits_the_evaluated_set():
    images = torch.rand(10, 1, 8, 8) * 0.5
    model = FixedReconstructor(8, torch.full((10,), 0.1), torch.zeros(10, 2, 2, dtype=torch.long))
    metrics, _ = evaluate_reconstructions(model, ListDataset(images), max_images=4, fid_images=0, progress=False)
    assert metrics["images"] == 4 and metrics["tokens"] == 16 and metrics["psnr"] == pytest.approx(20.0, rel=1e-5)


def test_frechet_distance_matches_the_closed_form_for_diagonal_gaussians():
    rng = np.random.default_rng(0)
    mu1, mu2 = rng.normal(size=5), rng.normal(size=5)
    var1, var2 = rng.uniform(0.5, 2, size=5), rng.uniform(0.5, 2, size=5)
    expected = ((mu1 - mu2) ** 2).sum() + (var1 + var2 - 2 * np.sqrt(var1 * var2)).sum()
    assert frechet_distance(mu1, np.diag(var1), mu2, np.diag(var2)) == pytest.approx(expected, rel=1e-9)
    assert frechet_distance(mu1, np.diag(var1), mu1, np.diag(var1)) == pytest.approx(0.0, abs=1e-9)


def test_reference_statistics_are_cached(tmp_path):
    features = np.random.default_rng(1).normal(size=(20, 4))
    calls = []

    def compute():
        calls.append(1)
        return features

    first = cached_reference_statistics("set-a", compute, cache_dir=tmp_path)
    second = cached_reference_statistics("set-a", compute, cache_dir=tmp_path)
    assert len(calls) == 1 and (tmp_path / "set-a.npz").is_file()
    mu, sigma = feature_statistics(features)
    for got in (first, second):
        np.testing.assert_allclose(got[0], mu)
        np.testing.assert_allclose(got[1], sigma)
    cached_reference_statistics("set-b", compute, cache_dir=tmp_path)
    assert len(calls) == 2  # another key, another computation


@pytest.mark.slow
def test_rfid_of_a_set_with_itself_is_zero_and_grows_with_noise():
    from simvq.data import FashionMNIST
    from simvq.metrics.image import InceptionFeatures

    dataset = FashionMNIST("test")
    images = torch.stack([dataset[i] for i in range(16)])
    generator = torch.Generator().manual_seed(0)
    extractor = InceptionFeatures()
    clean = extractor(images)
    assert clean.shape == (16, 2048)
    reference = feature_statistics(clean)
    scores = [frechet_distance(*reference, *reference)]
    for sigma in (0.1, 0.3):
        noisy = (images + sigma * torch.randn(images.shape, generator=generator)).clamp(0, 1)
        scores.append(frechet_distance(*feature_statistics(extractor(noisy)), *reference))
    assert scores[0] == pytest.approx(0.0, abs=1e-3)
    assert 0 < scores[1] < scores[2]
