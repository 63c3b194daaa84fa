"""Plain helpers shared by several test files (fixtures live in conftest.py)."""

from simvq.train.config import load_config


def tiny_image_config(out_dir, *overrides):
    """An image-tokenizer recipe small enough to train for a few steps on the CPU in seconds.

    Only the settings every such test shares are here; ``overrides`` come last, so they win."""
    return load_config(None, [
        f"out_dir={out_dir}",
        "model.channels=8",
        "model.num_res_blocks=0",
        "quantizer.options.seed=0",
        "optim.lr=3e-3",
        "trainer.progress_bar=false",
        "eval.fid_images=0",
        *overrides,
    ])


def train(config, **kwargs):
    # imported here: collecting a test file must not load lightning (its tests skip without it)
    from simvq.train.image import train_tokenizer

    return train_tokenizer(config, **kwargs)
