"""A simvq quantizer in a diffusers ``VQModel`` (``model.quantize``).

``VQModel.decode(h)`` calls ``quant, commit_loss, _ = self.quantize(h)`` on the channel-first
latents and, with ``config.lookup_from_codebook`` and ``force_not_quantize=True``,
``self.quantize.get_codebook_entry(indices, shape)``: taming's ``VectorQuantizer2`` convention,
which :class:`~simvq.compat.VectorQuantizer2` keeps. Pipelines read the indices as
``model.quantize(latents)[2][2]``. diffusers is not imported here.
"""

from __future__ import annotations

from ..quantizers import Quantizer
from .taming import VectorQuantizer2


def replace_quantizer(model, quantizer: str | Quantizer = "simvq", **options) -> VectorQuantizer2:
    """Put a :class:`VectorQuantizer2` around ``quantizer`` into ``model.quantize`` and return it.

    Its size comes from ``model``'s config: ``num_vq_embeddings`` codes of ``vq_embed_dim`` (else
    ``latent_channels``) channels; it takes the device of ``model``'s parameters and its train/eval mode.
    ``options`` go to the quantizer (``seed=0``, ``rotation_trick=True``, ...).
    """
    config = getattr(model, "config", None)
    if config is None or not hasattr(model, "quantize") or not hasattr(config, "num_vq_embeddings"):
        raise TypeError(f"replace_quantizer expects a diffusers VQModel, got {type(model).__name__}")
    dim = config.vq_embed_dim if getattr(config, "vq_embed_dim", None) is not None else config.latent_channels
    adapter = VectorQuantizer2(config.num_vq_embeddings, dim, quantizer=quantizer, **options)
    parameter = next(model.parameters(), None)
    if parameter is not None:
        adapter = adapter.to(parameter.device)
    adapter.train(model.training)
    model.quantize = adapter
    return adapter


__all__ = ["replace_quantizer"]
