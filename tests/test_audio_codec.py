"""Audio codec: token rate and shapes, exact lengths, losses against direct computations, and a short
optimisation that lowers the loss."""

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from simvq.data.spectral import (
    LOG_FLOOR,
    LogMelSpectrogram,
    frame_magnitudes,
    mel_filterbank,
    mel_to_hz,
    noise_floor_magnitude,
    stft_magnitude,
)
from simvq.models import AudioCodec, CodecLoss
from simvq.models.codec import StridedConv, StridedTransposedConv
from simvq.models.codec_losses import MelLoss, MultiResolutionSTFTLoss

pytestmark = pytest.mark.usefixtures("one_thread")

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "speech.yaml"


TINY = dict(channels=4, dim=16, decoder_width=32, decoder_blocks=1, codebook_size=64)


def harmonic_clip(seconds=0.5, rate=16000, seed=0):
    """A voiced-speech stand-in: a gliding 120-200 Hz harmonic tone with a syllable-rate envelope."""
    rng = np.random.default_rng(seed)
    t = np.arange(round(seconds * rate)) / rate
    f0 = 120 + 80 * t / seconds
    phase = 2 * np.pi * np.cumsum(f0) / rate
    wav = sum(np.sin(k * phase) / k for k in range(1, 12)) * (0.5 + 0.5 * np.sin(2 * np.pi * 4 * t)) * 0.2
    return torch.from_numpy(wav + 1e-3 * rng.standard_normal(t.size)).float().view(1, 1, -1)


@pytest.mark.parametrize("decoder", ["vocos", "transposed"])
@pytest.mark.parametrize("rate, tokens_per_second", [(16000, 50), (24000, 75)])
def test_token_rate_and_shapes(decoder, rate, tokens_per_second):
    torch.manual_seed(0)
    model = AudioCodec(sample_rate=rate, strides=(2, 4, 5, 8), decoder=decoder, **TINY)
    assert model.hop_length == 320 and model.tokens_per_second == tokens_per_second
    wav = torch.randn(2, 1, rate) * 0.1  # one second
    codes = model.encode(wav)
    assert codes.shape == (2, tokens_per_second) and codes.dtype == torch.int64
    assert int(codes.min()) >= 0 and int(codes.max()) < 64
    decoded = model.decode(codes)
    assert decoded.shape == wav.shape and float(decoded.abs().max()) <= 1.0
    reconstruction, out = model(wav)
    assert reconstruction.shape == wav.shape and torch.equal(out.codes, codes)
    # decode(codes) is the forward pass's output (eval mode: no train-time randomness)
    assert torch.allclose(model.decode(out.codes), reconstruction.clamp(-1, 1), atol=1e-5)
    # any length: padded to a whole hop for the encoder, trimmed back on the way out
    odd = torch.randn(1, 1, rate // 2 + 7) * 0.1
    reconstruction, out = model(odd)
    assert reconstruction.shape == odd.shape and out.codes.shape == (1, math.ceil((rate // 2 + 7) / 320))


@pytest.mark.parametrize("stride", [1, 2, 3, 4, 5, 8])
def test_strided_convs_change_length_by_exactly_the_stride(stride):
    for length in (1, 2, 7):
        x = torch.randn(2, 3, length * stride)
        assert StridedConv(3, 5, stride)(x).shape == (2, 5, length)
        assert StridedTransposedConv(3, 5, stride)(torch.randn(2, 3, length)).shape == (2, 5, length * stride)


@pytest.mark.parametrize("quantizer, options", [("simvq", {}), ("vq", {}), ("vq_ema", {}), ("fsq", {"levels": [4, 4, 4]})])
def test_any_registered_quantizer_fits(quantizer, options):
    torch.manual_seed(0)
    dim = 3 if quantizer == "fsq" else 16
    model = AudioCodec(quantizer=quantizer, quantizer_options=options, **{**TINY, "dim": dim})
    reconstruction, out = model(torch.randn(1, 1, 3200) * 0.1)
    assert out.codes.shape == (1, 10) and reconstruction.shape == (1, 1, 3200)
    assert torch.isfinite(out.loss)


@pytest.mark.parametrize("quantizer", ["simvq", "vq"])
def test_at_initialisation_tokens_spread_over_many_codes(quantizer):
    # with torch's default conv init all 400 tokens fell on 2-4 codes (latents ~ one constant)
    generator = torch.Generator().manual_seed(0)
    clips = torch.cat([harmonic_clip(1.0, seed=s) * (0.5 + s / 8) for s in range(8)])
    clips = clips + 0.02 * torch.randn(clips.shape, generator=generator)
    torch.manual_seed(0)
    codes = AudioCodec(quantizer=quantizer, codebook_size=4096).encode(clips)
    assert codes.shape == (8, 50) and codes.unique().numel() >= 100


def test_input_checks():
    model = AudioCodec(**TINY)
    with pytest.raises(ValueError, match=r"\(B, 1, S\)"):
        model(torch.randn(2, 2, 320))
    with pytest.raises(TypeError, match="floating-point"):
        model(torch.ones(1, 1, 320, dtype=torch.long))
    with pytest.raises(ValueError, match="decoder"):
        AudioCodec(decoder="wavenet")


def test_the_speech_recipe_builds_the_configured_codec():
    from simvq.train.config import load_recipe
    from simvq.train.run_files import build_codec

    config = load_recipe(CONFIG)
    model = build_codec(config)  # the yaml's ``model`` section is ``AudioCodec``'s keyword arguments
    assert isinstance(model, AudioCodec) and model.tokens_per_second == 50 and model.quantizer.codebook_size == 4096
    assert config.loss.quantizer_weight == 1000 and config.optim.warmup_steps > 0 and config.optim.grad_clip
    raw = yaml.safe_load(CONFIG.read_text())["model"]
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in AudioCodec(codebook_size=4096, **raw).parameters())
    assert build_codec(load_recipe(CONFIG, ["model.decoder=transposed", "data.sample_rate=24000"])).tokens_per_second == 75


def test_mel_filterbank_matches_its_definition():
    rate, n_fft, n_mels = 16000, 512, 20
    bank = mel_filterbank(rate, n_fft, n_mels, f_min=50.0, f_max=7000.0).double()
    def mel(f):  # HTK, written out
        return 2595 * math.log10(1 + f / 700)
    points = [mel_to_hz(mel(50.0) + i * (mel(7000.0) - mel(50.0)) / (n_mels + 1)) for i in range(n_mels + 2)]
    for m in range(n_mels):
        for b in range(n_fft // 2 + 1):
            f = b * rate / n_fft
            lo, mid, hi = points[m], points[m + 1], points[m + 2]
            expected = (f - lo) / (mid - lo) if lo <= f <= mid else (hi - f) / (hi - mid) if mid < f <= hi else 0.0
            assert abs(bank[m, b].item() - expected) < 1e-5
    # the triangles overlap to a partition of unity between the first and the last centre
    bins = torch.arange(n_fft // 2 + 1) * rate / n_fft
    inside = (bins >= points[1]) & (bins <= points[-2])
    assert torch.allclose(bank.sum(0)[inside], torch.ones(int(inside.sum()), dtype=torch.float64), atol=1e-6)


def test_log_mel_against_a_direct_dft():
    torch.manual_seed(0)
    wav = torch.randn(1, 1, 2048)
    n_fft, hop = 256, 64
    spectrogram = LogMelSpectrogram(16000, n_fft=n_fft, hop_length=hop, n_mels=16)(wav)
    assert spectrogram.shape == (1, 16, 2048 // hop + 1)
    # frame 5 by hand: reflect-padded signal, Hann window, |DFT| from numpy
    padded = np.pad(wav[0, 0].numpy().astype(np.float64), n_fft // 2, mode="reflect")
    frame = padded[5 * hop : 5 * hop + n_fft] * np.hanning(n_fft + 1)[:-1]
    magnitude = np.abs(np.fft.rfft(frame))
    bank = mel_filterbank(16000, n_fft, 16).double().numpy()
    expected = np.log(np.maximum(bank @ magnitude, 1e-5))
    assert np.allclose(spectrogram[0, :, 5].numpy(), expected, atol=1e-4)
    assert stft_magnitude(wav, n_fft, hop).shape == (1, n_fft // 2 + 1, 2048 // hop + 1)
    # quiet audio meets the floor: each band's response to a flat spectrum at -80 dBFS white noise's
    # RMS magnitude, 1e-4 sqrt(sum w^2) (numpy's window); floor_dbfs=None: the absolute 1e-5
    quiet = wav * 1e-5
    floor = bank.sum(1) * 1e-4 * np.sqrt((np.hanning(n_fft + 1)[:-1] ** 2).sum())
    floored = LogMelSpectrogram(16000, n_fft=n_fft, hop_length=hop, n_mels=16)(quiet)[0, :, 5].numpy()
    assert np.allclose(floored, np.log(np.maximum(bank @ (magnitude * 1e-5), floor)), atol=1e-4)
    assert (floored > np.log(bank @ (magnitude * 1e-5)) + 1).any()  # the floor is what most bands show
    legacy = LogMelSpectrogram(16000, n_fft=n_fft, hop_length=hop, n_mels=16, floor_dbfs=None)(quiet)[0, :, 5].numpy()
    assert np.allclose(legacy, np.log(np.maximum(bank @ (magnitude * 1e-5), 1e-5)), atol=1e-4)


@pytest.mark.parametrize("win_length", [240, 600, 1024])
def test_the_noise_floor_is_what_white_noise_at_that_level_gives(win_length):
    # the reference is measured: white noise with an RMS of -80 dBFS (1e-4), 20 s of it
    rng = torch.Generator().manual_seed(0)
    noise = 1e-4 * torch.randn(1, 1, 320000, generator=rng, dtype=torch.float64)
    magnitude = frame_magnitudes(noise.float(), 1024, 256, win_length).double()[:, :, 1:-1]  # DC and Nyquist are real
    assert magnitude.square().mean().sqrt().item() == pytest.approx(noise_floor_magnitude(-80.0, win_length), rel=0.01)
    assert noise_floor_magnitude(-60.0, win_length) == pytest.approx(10 * noise_floor_magnitude(-80.0, win_length))
    if win_length == 1024:  # each mel band: its mean is the Rayleigh mean, sqrt(pi) / 2 of the RMS, of its floor
        mel = LogMelSpectrogram(16000)
        mean_band = (frame_magnitudes(noise.float(), 1024, 256) @ mel.filterbank.T).mean((0, 1))
        ratio = mean_band / mel.floor
        assert torch.allclose(ratio, torch.full_like(ratio, math.sqrt(math.pi) / 2), rtol=0.03), ratio
        assert mel.floor.max() > 10 * mel.floor.min()  # wide high bands collect more noise than narrow low ones
    assert noise_floor_magnitude(None, win_length) == LOG_FLOOR
    for bad in (0.0, 3.0, -300.0, True, "-80"):
        with pytest.raises(ValueError, match="floor_dbfs must be a level in dBFS"):
            noise_floor_magnitude(bad, win_length)


@pytest.mark.parametrize("n_fft, hop, win", [(256, 64, None), (255, 50, 120), (512, 50, 240)])
def test_stft_magnitude_and_its_gradient_equal_torch_stft(n_fft, hop, win):
    # the reference: torch.stft + complex abs through autograd, in float64
    rng = torch.Generator().manual_seed(0)
    wav = torch.randn(3, 1, 1000, generator=rng, dtype=torch.float64)
    window = torch.hann_window(win or n_fft, dtype=torch.float64)
    ours_input, reference_input = wav.clone().requires_grad_(), wav.clone().requires_grad_()
    reference = torch.stft(reference_input[:, 0], n_fft, hop, win, window, center=True, pad_mode="reflect", return_complex=True).abs()
    ours = stft_magnitude(ours_input.double(), n_fft, hop, win)
    weights = torch.randn(reference.shape, generator=rng, dtype=torch.float64)
    assert ours.shape == reference.shape
    assert torch.allclose(ours.double(), reference.float().double(), rtol=1e-5, atol=1e-5)
    (ours.double() * weights).sum().backward()
    (reference * weights).sum().backward()
    # ours runs in float32 (as every spectral feature here): errors relative to the gradient's scale
    scale = reference_input.grad.abs().max()
    assert (ours_input.grad - reference_input.grad).abs().max() < 1e-5 * scale
    assert ours_input.grad.abs().max() > 1  # a real gradient, not zeros on both sides


def test_stft_magnitude_is_within_two_float32_ulps_of_torch_stft_in_float32():
    torch.manual_seed(0)
    wav = torch.randn(4, 1, 4000) * torch.logspace(-3, 1, 4).view(4, 1, 1)  # quiet to loud
    ours = stft_magnitude(wav, 512, 50, 240)
    reference = torch.stft(wav[:, 0], 512, 50, 240, torch.hann_window(240), center=True, pad_mode="reflect", return_complex=True).abs()
    ulp = reference.nextafter(torch.tensor(float("inf"))) - reference
    assert ((ours - reference).abs() <= 2 * ulp).all()
    assert frame_magnitudes(wav, 512, 50, 240).is_contiguous() and torch.equal(frame_magnitudes(wav, 512, 50, 240).transpose(1, 2), ours)


def test_stft_magnitude_names_a_signal_too_short_for_its_window():
    with pytest.raises(ValueError, match="too short for n_fft=1024"):
        stft_magnitude(torch.zeros(1, 1, 300), 1024, 256)


def test_losses_are_zero_for_identical_audio_and_grow_with_the_error():
    clip = harmonic_clip()
    mel, stft = MelLoss(16000), MultiResolutionSTFTLoss()
    assert mel(clip, clip).item() == 0.0 and stft(clip, clip).item() == 0.0
    rng = torch.Generator().manual_seed(0)
    noise = torch.randn(clip.shape, generator=rng)
    errors = [mel(clip + level * noise, clip).item() for level in (1e-3, 1e-2, 1e-1)]
    assert 0 < errors[0] < errors[1] < errors[2]
    assert 0 < stft(clip + 1e-2 * noise, clip).item() < stft(clip + 1e-1 * noise, clip).item()
    terms = CodecLoss(16000, mel_weight=2.0, stft_weight=0.5)(clip + 1e-2 * noise, clip)
    assert torch.isclose(terms["loss"], 2.0 * terms["mel"] + 0.5 * terms["stft"])


def test_the_losses_ignore_inaudible_noise_in_silence_and_not_audible_noise():
    # speech, then as long again of digital silence (as espeak-ng writes between words)
    clip = torch.cat([harmonic_clip(), torch.zeros(1, 1, 8000)], dim=-1)
    noise = torch.randn(clip.shape, generator=torch.Generator().manual_seed(1))
    new, old = CodecLoss(16000), CodecLoss(16000, floor_dbfs=None)

    def terms(loss, level_dbfs):
        reconstruction = (clip + 10 ** (level_dbfs / 20) * noise).requires_grad_()
        out = loss(reconstruction, clip)
        out["loss"].backward()
        return out, reconstruction.grad[..., -4000:].abs().max().item()  # the gradient deep in the silence

    (quiet, quiet_gradient), (quiet_old, quiet_old_gradient) = terms(new, -90), terms(old, -90)
    assert quiet["mel"] < 0.01 and quiet["stft"] < 0.02  # (measured: 0.002, 0.012)
    assert quiet_old["mel"] > 0.5 and quiet_old["stft"] > 0.5  # with the absolute floor it dominated both
    # in silence, noise below the floor is (nearly: a rare single bin rises above it) not trained on
    assert quiet_gradient < 1e-3 * quiet_old_gradient
    audible, audible_gradient = terms(new, -30)
    assert audible["mel"] > 1.0 and audible["stft"] > 1.0 and audible_gradient > 0


@pytest.mark.parametrize("decoder", ["vocos", "transposed"])
def test_a_few_steps_on_one_clip_lower_the_loss(decoder):
    torch.manual_seed(0)
    model = AudioCodec(decoder=decoder, **TINY)
    loss_fn = CodecLoss(16000, mel_weight=1.0, stft_weight=1.0)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    clip = harmonic_clip(0.4)
    reconstruction_losses, losses = [], []
    for _ in range(16):
        reconstruction, out = model(clip)
        reconstruction_loss = loss_fn(reconstruction, clip)["loss"]
        loss = reconstruction_loss + 10.0 * out.loss
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        reconstruction_losses.append(reconstruction_loss.item())
        losses.append(loss.item())
    assert all(math.isfinite(v) for v in losses)
    # the reconstruction term falls steadily; the quantizer term (commitment) wanders while the
    # encoder's scale settles, so the total is only asked to end lower than it started
    assert np.mean(reconstruction_losses[-3:]) < 0.8 * reconstruction_losses[0], reconstruction_losses
    assert np.mean(losses[-3:]) < losses[0], losses


def test_discriminators_shapes_and_losses():
    from simvq.models.audio_discriminators import (
        MultiPeriodDiscriminator,
        MultiResolutionDiscriminator,
        discriminator_loss,
        feature_matching_loss,
        generator_loss,
    )

    torch.manual_seed(0)
    real = harmonic_clip(0.25)
    fake = real + 0.05 * torch.randn_like(real)
    for discriminator in (MultiPeriodDiscriminator(channels=4, max_channels=16), MultiResolutionDiscriminator(channels=4)):
        real_logits, real_features = discriminator(real)
        fake_logits, fake_features = discriminator(fake)
        count = len(discriminator.discriminators)
        assert len(real_logits) == len(real_features) == count and all(logit.shape[0] == 1 for logit in real_logits)
        assert feature_matching_loss(real_features, real_features).item() == 0.0
        assert feature_matching_loss(real_features, fake_features).item() > 0.0
        # hinge losses written out, averaged over the sub-discriminators
        expected = np.mean([(torch.relu(1 - r).mean() + torch.relu(1 + f).mean()).item() for r, f in zip(real_logits, fake_logits)])
        assert discriminator_loss(real_logits, fake_logits).item() == pytest.approx(expected, rel=1e-6)
        assert generator_loss(fake_logits).item() == pytest.approx(np.mean([torch.relu(1 - f).mean().item() for f in fake_logits]), rel=1e-6)
        fake.requires_grad_(True)
        generator_loss(discriminator(fake)[0]).backward()
        assert fake.grad is not None and torch.isfinite(fake.grad).all()
        fake = fake.detach()


@pytest.mark.parametrize("method, commitment, codebook", [("simvq", 0.25, 1.0), ("vq", 0.25, 1.0), ("vq_ema", 0.25, 0.0), ("fsq", 0.0, 0.0)])
def test_the_quantizer_loss_each_speech_method_adds_is_the_one_the_config_states(method, commitment, codebook):
    # configs/speech.yaml and the README state what loss.quantizer_weight (1000) multiplies, per method
    # of the speech bench: the encoder is pulled to its code with 1000 x 0.25 x MSE by simvq, vq and
    # vq_ema, the code (SimVQ: its projection W) to the encoder with 1000 x MSE by simvq and vq
    # (vq_ema moves codes by EMA), and FSQ adds nothing. The reference: MSE(z, q) by hand.
    from simvq.quantizers import build_quantizer

    quantizer = build_quantizer(method, dim=16, codebook_size=64, channel_first=True, seed=0)
    z = torch.randn(2, 16, 10, generator=torch.Generator().manual_seed(0), requires_grad=True)
    out = quantizer(z)
    q = out.quantized.detach()  # the straight-through output's value is the code itself
    mse = (z.detach() - q).square().mean()
    assert mse > 0.1  # (no loss is zero because z sits on its code)
    assert out.loss.item() == pytest.approx(((commitment + codebook) * mse).item(), rel=1e-5, abs=1e-7)
    weighted = 1000.0 * out.loss  # loss.quantizer_weight
    if method == "fsq":
        assert not weighted.requires_grad and weighted.item() == 0.0
        return
    (encoder_gradient,) = torch.autograd.grad(weighted, z, retain_graph=True)
    assert torch.allclose(encoder_gradient, 1000.0 * commitment * 2 * (z.detach() - q) / z.numel(), rtol=1e-4, atol=1e-8)
    trained = [p for p in quantizer.parameters() if p.requires_grad]
    if codebook:
        gradients = torch.autograd.grad(weighted, trained)
        assert all(g.abs().sum() > 0 for g in gradients)
    else:
        assert trained == []  # vq_ema: the codebook is a buffer the EMA moves


def test_padded_frames_are_masked_in_the_quantizer():
    """A batch of utterances of unequal length (``pad_collate``): the frames past each one's end are
    masked, so the quantizer's loss, metrics and EMA step are those of the real frames alone."""
    import copy

    from simvq.data import pad_collate

    torch.manual_seed(0)
    model = AudioCodec(quantizer="vq_ema", **TINY)
    wav, lengths = pad_collate([harmonic_clip(0.5)[0], harmonic_clip(0.27, seed=1)[0]])  # 8000 and 4320 samples
    assert wav.shape == (2, 1, 8000) and lengths.tolist() == [8000, 4320]
    mask = model.token_mask(lengths, 8000)
    assert mask.sum(1).tolist() == [25, 14]  # ceil(8000 / 320), ceil(4320 / 320)
    assert mask[1, :14].all() and not mask[1, 14:].any()
    reference = copy.deepcopy(model.quantizer)
    reconstruction, out = model(wav, lengths=lengths)
    assert reconstruction.shape == wav.shape
    assert (out.codes[~mask] == -1).all() and (out.codes[mask] >= 0).all()
    latents = model.encode_latents(wav).detach()  # (B, dim, T): the real frames as one (N, dim) batch
    expected = reference(latents.movedim(1, -1)[mask])
    assert torch.equal(out.codes[mask], expected.codes) and torch.equal(out.loss, expected.loss)
    assert all(torch.equal(out.metrics[k], v) for k, v in expected.metrics.items())
    for key, value in reference.state_dict().items():  # the EMA saw the real frames only
        assert torch.equal(model.quantizer.state_dict()[key], value), key
    model.eval()
    codes = model.encode(wav, lengths=lengths)
    assert (codes[~mask] == -1).all()
    latents = model.encode_latents(wav)
    assert torch.equal(codes[mask], model.quantizer.encode(latents.movedim(1, -1)[mask]))
    assert model.decode(codes, mask=mask, length=8000).shape == wav.shape
    with pytest.raises(ValueError, match="pass the mask"):
        model.decode(codes)
    assert torch.equal(model(wav)[1].codes, model.encode(wav))  # no lengths: every frame is real, as before
    for bad, message in (([8000], "one length per utterance"), ([8000, 8001], r"\[1, 8000\]"), ([8000, 0], r"\[1, 8000\]"),
                         ([8000.0, 4320.0], "integer sample counts")):
        with pytest.raises(ValueError, match=rf"lengths must .*{message}"):
            model(wav, lengths=torch.tensor(bad))


def test_the_resolution_discriminator_runs_channels_last_with_the_same_values():
    """Its 2-D convs take the spectrogram channels-last (faster in oneDNN); the logits and feature maps
    are those of the same stack on the plain layout."""
    from simvq.models.audio_discriminators import MultiResolutionDiscriminator, _conv_stack, stft_magnitude

    torch.manual_seed(0)
    wav = harmonic_clip(0.25).repeat(2, 1, 1)
    for sub in MultiResolutionDiscriminator(channels=4).discriminators:
        logits, features = sub(wav)
        plain = stft_magnitude(wav, *sub.resolution).unsqueeze(1).contiguous()
        expected_logits, expected_features = _conv_stack(sub.convs, sub.out, plain)
        torch.testing.assert_close(logits, expected_logits, rtol=1e-5, atol=1e-6)
        for got, want in zip(features, expected_features):
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_a_frozen_discriminator_passes_gradients_to_its_input_only():
    """The generator's step builds its loss through the discriminator with the discriminator's weights
    out of autograd: the input's gradient is the same, no weight gradient is computed, and each weight's
    requires_grad is as it was afterwards (one already off stays off)."""
    from simvq.models.audio_discriminators import MultiPeriodDiscriminator, generator_loss
    from simvq.train.core import frozen

    torch.manual_seed(0)
    discriminator = MultiPeriodDiscriminator(channels=4, max_channels=16)
    held = next(discriminator.parameters()).requires_grad_(False)
    fake = harmonic_clip(0.25).requires_grad_(True)
    generator_loss(discriminator(fake)[0]).backward()
    expected, fake.grad = fake.grad.clone(), None
    discriminator.zero_grad(set_to_none=True)
    with frozen(discriminator):
        generator_loss(discriminator(fake)[0]).backward()
    torch.testing.assert_close(fake.grad, expected, rtol=0, atol=0)
    assert all(p.grad is None for p in discriminator.parameters())
    assert not held.requires_grad and all(p.requires_grad for p in discriminator.parameters() if p is not held)
