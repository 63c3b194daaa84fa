"""SimVQ as ``VQModel.quantize`` in a real diffusers ``VQModel``, trained a few steps on Fashion-MNIST.

The model is built from a config in code (1-channel 28x28 images, 14x14 latents of 4 channels), as
the README snippet does; nothing is downloaded. Checked: the installed ``VQModel``'s own quantizer
call convention (``quant, commit_loss, (_, _, indices) = model.quantize(h)``), which the adapter
keeps; training through ``VQModel.forward``; code usage (``simvq.metrics.CodebookUsage``) on test
images; and the round trip ``encode -> .latents -> decode``, with and without the codebook lookup.
"""

from __future__ import annotations

import inspect

import pytest
import torch
import torch.nn.functional as F

from simvq.compat import VectorQuantizer2, replace_quantizer
from simvq.metrics import CodebookUsage
from test_compat_readme import DIFFUSERS, run_snippet

diffusers = pytest.importorskip("diffusers")
pytestmark = pytest.mark.usefixtures("one_thread")

BATCH, STEPS, TEST_IMAGES = 32, 25, 256


def fashion_mnist(split: str):
    from simvq.data.fashion_mnist import FashionMNIST, MissingDatasetError

    try:
        return FashionMNIST(split).images  # (N, 28, 28) uint8
    except MissingDatasetError as error:  # the Debian package dataset-fashion-mnist (make system-deps)
        pytest.skip(str(error))


def as_images(pixels: torch.Tensor) -> torch.Tensor:
    return pixels.unsqueeze(1).float() / 255.0


def test_the_adapter_keeps_the_installed_vqmodel_quantize_convention():
    from diffusers.models.autoencoders.vae import VectorQuantizer

    torch.manual_seed(0)
    model = diffusers.VQModel(in_channels=1, out_channels=1, latent_channels=4, num_vq_embeddings=64, block_out_channels=(8,), norm_num_groups=4)
    assert isinstance(model.quantize, VectorQuantizer)
    ours = VectorQuantizer2(64, 4, seed=0)
    for method in ("forward", "get_codebook_entry"):  # every parameter diffusers' has, ours takes
        theirs = list(inspect.signature(getattr(VectorQuantizer, method)).parameters)
        assert theirs == list(inspect.signature(getattr(VectorQuantizer2, method)).parameters)[: len(theirs)], method
    h = model.encode(torch.rand(2, 1, 28, 28)).latents
    expected, got = model.quantize(h), ours(h)
    assert len(got) == len(expected) == 3 and len(got[2]) == len(expected[2]) == 3
    assert got[0].shape == expected[0].shape and got[1].shape == expected[1].shape
    assert got[2][2].shape == expected[2][2].shape and got[2][2].dtype == expected[2][2].dtype
    # replace_quantizer: sized from the config, in the model's mode; anything but a VQModel is refused
    adapter = replace_quantizer(model.eval(), "vq", seed=0)
    assert model.quantize is adapter and (adapter.n_e, adapter.e_dim, adapter.training) == (64, 4, False)
    with pytest.raises(TypeError, match="VQModel"):
        replace_quantizer(torch.nn.Linear(2, 2))


def test_simvq_trains_inside_a_diffusers_vqmodel_on_fashion_mnist():
    train, test = fashion_mnist("train"), fashion_mnist("test")
    torch.manual_seed(0)
    namespace = run_snippet(DIFFUSERS, {"images": as_images(train[:BATCH])})
    model = namespace["model"]
    assert isinstance(model, diffusers.VQModel) and isinstance(model.quantize, VectorQuantizer2)
    assert type(model.quantize.quantizer).__name__ == "SimVQ" and model.quantize.n_e == 256
    latents, codes = namespace["latents"], namespace["codes"]
    assert latents.shape == (BATCH, 4, 14, 14) and codes.shape == (BATCH * 14 * 14,) and codes.dtype == torch.int64
    assert namespace["reconstruction"].shape == (BATCH, 1, 28, 28)

    # VQModel.forward: encode -> quantize (SimVQ) -> decode, with the quantizer's loss as commit_loss
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(0)
    reconstruction_losses = []
    for _ in range(STEPS):
        images = as_images(train[torch.randint(0, len(train), (BATCH,), generator=generator)])
        out = model(images)
        reconstruction = F.mse_loss(out.sample, images)
        optimizer.zero_grad()
        (reconstruction + out.commit_loss).backward()
        optimizer.step()
        reconstruction_losses.append(reconstruction.item())
    assert sum(reconstruction_losses[-5:]) < 0.5 * sum(reconstruction_losses[:5]), reconstruction_losses

    model.eval()
    images = as_images(test[:TEST_IMAGES])
    usage = CodebookUsage(model.quantize.n_e, distributed=False)
    with torch.no_grad():
        latents = model.encode(images).latents
        _, _, (_, _, codes) = model.quantize(latents)
        usage.update(codes)
        stats = usage.compute()
        print(f"\nSimVQ in diffusers VQModel after {STEPS} steps: usage {stats['usage']:.1%} of 256 codes, "
              f"perplexity {stats['perplexity']:.1f}, over {stats['tokens']} test tokens; "
              f"train MSE {reconstruction_losses[0]:.4f} -> {reconstruction_losses[-1]:.4f}")
        assert stats["tokens"] == TEST_IMAGES * 14 * 14 and stats["usage"] >= 0.05

        # the round trip through the VQModel API
        decoded = model.decode(latents).sample  # quantizes through SimVQ
        assert torch.equal(model(images).sample, decoded)
        shape = (TEST_IMAGES, 14, 14, 4)  # lookup_from_codebook=True: indices -> get_codebook_entry
        assert torch.equal(model.decode(codes, force_not_quantize=True, shape=shape).sample, decoded)
        assert torch.equal(model.quantize.quantizer.encode(latents), codes.view(TEST_IMAGES, 14, 14))
        assert torch.equal(model.quantize.get_codebook_entry(codes, shape), model.quantize(latents)[0])
