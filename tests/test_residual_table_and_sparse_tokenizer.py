"""The residual table of the sweep (`--stages`) and an image tokenizer over sparse codes (sc_vae)."""

import pytest
import torch

from simvq.experiments import sweep
from simvq.models import ImageAutoencoder
from simvq.tokenizer import Tokenizer
from simvq.train.run_files import build_model

pytestmark = pytest.mark.usefixtures("one_thread")


def test_default_sweep_leaves_out_multi_stage_and_sparse_codes():
    methods = sweep.default_methods()
    assert "vq_wae" in methods and "hqa" in methods
    assert "qinco" not in methods and "sc_vae" not in methods


def test_stages_makes_a_residual_table_with_its_own_variant():
    runs = sweep.image_runs(sweep.SweepSpec(sizes=[1024], seeds=[0], stages=2))
    assert {run.method for run in runs} == set(sweep.RESIDUAL_METHODS) == {"qinco", "residual", "residual_simvq"}
    assert {run.variant for run in runs} == {"stages=2"}
    assert all(run.overrides == ["quantizer.options.num_quantizers=2"] for run in runs)
    # rows at another stage count never share a key with these
    other = sweep.image_runs(sweep.SweepSpec(sizes=[1024], seeds=[0], stages=4))
    assert not {run.key(20) for run in runs} & {run.key(20) for run in other}
    with pytest.raises(ValueError, match="residual"):
        sweep.image_runs(sweep.SweepSpec(methods=["qinco", "vq"], sizes=[1024], seeds=[0], stages=2))


def test_stages_reaches_the_quantizer_through_the_recipe_config():
    from simvq.train.config import load_config

    run = sweep.image_runs(sweep.SweepSpec(methods=["qinco"], sizes=[64], seeds=[0], stages=3))[0]
    config = load_config("configs/bench/fmnist.yaml", [f"quantizer.name={run.method}", *run.overrides])
    model = build_model(config)
    assert model.quantizer.num_quantizers == 3


@pytest.mark.parametrize("name", ["sc_vae", "vq"])
def test_tokenizer_reconstructs_sparse_codes(name):
    torch.manual_seed(0)
    model = ImageAutoencoder(quantizer=name, codebook_size=32, in_channels=1, channels=8, norm_groups=4, dim=8)
    tokenizer = Tokenizer(model)
    images = torch.rand(2, 1, 8, 8)
    reconstruction = tokenizer.reconstruct(images)
    codes = tokenizer.encode(images)
    if name == "sc_vae":
        _, out = model(images)
        latents = model.quantizer.decode(codes, coefficients=out.coefficients)
        expected = model.decode_latents(latents).clamp(0, 1)
        with pytest.raises(ValueError, match="coefficients"):
            tokenizer.decode(codes)
    else:
        expected = tokenizer.decode(codes)
    torch.testing.assert_close(reconstruction, expected, rtol=1e-5, atol=1e-5)
    as_bytes = (images * 255).round().byte()  # uint8 images are scaled as encode scales them
    torch.testing.assert_close(tokenizer.reconstruct(as_bytes), tokenizer.reconstruct(as_bytes.float() / 255))


@pytest.mark.parametrize("name", ["sc_vae", "vq"])
def test_the_run_directorys_reconstruction_grid_shows_the_models_reconstructions(name, tmp_path):
    import numpy as np
    from PIL import Image

    from simvq.train.plots import reconstruction_grid

    torch.manual_seed(0)
    model = ImageAutoencoder(quantizer=name, codebook_size=32, in_channels=1, channels=8, norm_groups=4, dim=8).eval()
    images = torch.rand(3, 1, 8, 8)
    reconstruction_grid(model, list(images), tmp_path / "grid.png", num_images=3, per_row=3)
    grid = np.asarray(Image.open(tmp_path / "grid.png"), dtype=np.float64) / 255
    scale = 256 // 8  # small images are enlarged
    second_row = torch.from_numpy(grid[8 * scale :: scale, ::scale].copy()).float()  # (8, 3 * 8)
    expected = torch.cat(list(model.reconstruct(images)[:, 0]), dim=1)
    torch.testing.assert_close(second_row, expected, atol=1 / 255, rtol=0)


def test_stages_on_the_command_line_replaces_the_configs_method_list():
    import argparse
    from pathlib import Path

    config = str(Path(__file__).resolve().parents[1] / "configs/bench/image.yaml")
    parser = argparse.ArgumentParser()
    sweep.add_parser(parser.add_subparsers())
    spec = sweep._spec_from_args(parser.parse_args(["bench", "image", "--config", config, "--stages", "2"]))
    assert spec.stages == 2 and {run.method for run in sweep.image_runs(spec)} == set(sweep.RESIDUAL_METHODS)
    narrowed = sweep._spec_from_args(
        parser.parse_args(["bench", "image", "--config", config, "--stages", "2", "--methods", "qinco"])
    )
    assert {run.method for run in sweep.image_runs(narrowed)} == {"qinco"}
    plain = sweep._spec_from_args(parser.parse_args(["bench", "image", "--config", config]))
    assert "vq_wae" in plain.methods and "hqa" in plain.methods and plain.stages is None
