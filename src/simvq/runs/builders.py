"""The models the built-in recipe kinds describe, built from their configs (the models never read a
training config themselves). Each is a kind's ``build_model`` in ``simvq.runs.registry``."""

from __future__ import annotations

import dataclasses

from ..utils import UsageError


def build_image_model(config):
    """The ``ImageAutoencoder`` of an image recipe."""
    from ..models import ImageAutoencoder

    check_norm_groups(config.model)
    return ImageAutoencoder(
        quantizer=config.quantizer.name,
        codebook_size=config.quantizer.codebook_size,
        quantizer_options=config.quantizer.options,
        in_channels=config.data.channels,
        channels=config.model.channels,
        channel_multipliers=config.model.channel_multipliers,
        downsamplings=config.model.downsamplings,
        num_res_blocks=config.model.num_res_blocks,
        norm_groups=config.model.norm_groups,
        dim=config.model.dim,
        mid_blocks=config.model.mid_blocks,
    )


def check_norm_groups(model) -> None:
    """``model.norm_groups`` must divide the width of every level it normalises (GroupNorm takes
    ``min(groups, width)`` groups), refused naming the key rather than as GroupNorm's own error."""
    from ..models.image_autoencoder import level_widths

    groups = model.norm_groups
    if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1:
        raise UsageError("model.norm_groups", f"must be an integer >= 1, got {groups!r}")
    widths = sorted(set(level_widths(model.channels, model.channel_multipliers, model.downsamplings)))
    bad = [width for width in widths if width >= 1 and width % min(groups, width)]
    if bad:
        raise UsageError("model.norm_groups", f"{groups} groups do not divide the level widths {bad} (model.channels={model.channels} "
                         f"x model.channel_multipliers={list(model.channel_multipliers)}); choose a divisor of every width {widths}")


def build_codec(config):
    """The ``AudioCodec`` of an audio recipe: its ``model`` section is the codec's keyword arguments."""
    from ..models import AudioCodec

    return AudioCodec(
        quantizer=config.quantizer.name,
        codebook_size=config.quantizer.codebook_size,
        quantizer_options=config.quantizer.options,
        sample_rate=config.data.sample_rate,
        **dataclasses.asdict(config.model),
    )


def image_token_grid(config) -> str:
    """The tokens of one image in words, e.g. ``7x7`` (28x28 images, two stride-2 levels)."""
    grid = config.data.image_size // 2**config.model.downsamplings
    return f"{grid}x{grid}"


def _stages(model) -> str:
    stages = getattr(model.quantizer, "num_quantizers", None)
    return f" x {stages} stages" if stages and model.quantizer.code_ndim else ""


def image_summary(model, config) -> str:
    """An image tokenizer's inputs and codes in words (its model card)."""
    size, channels = config.data.image_size, config.data.channels
    grid = size // 2**config.model.downsamplings
    return (f"images `(B, {channels}, {size}, {size})` in [0, 1] (any multiple of {2**config.model.downsamplings}) <-> codes "
            f"`(B, {grid}, {grid})` in [0, {model.quantizer.codebook_size}){_stages(model)}")


def audio_summary(model, config) -> str:
    """A speech codec's inputs and codes in words (its model card)."""
    hop = model.hop_length
    return (f"mono waveforms `(B, S)` in [-1, 1] at {model.sample_rate} Hz <-> codes `(B, ceil(S / {hop}))` "
            f"({model.sample_rate / hop:g} tokens/s) in [0, {model.quantizer.codebook_size}){_stages(model)}")
