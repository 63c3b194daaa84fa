"""Drop-in adapters: any simvq quantizer behind the interfaces existing VQ code already calls.

``VectorQuantizer2``  taming-transformers' ``VectorQuantizer2`` (VQGAN), also what diffusers'
                      ``VQModel.quantize`` is: ``forward(z (B, C, H, W)) -> (z_q, loss, (perplexity,
                      None, indices))``, ``get_codebook_entry(indices, shape=(B, H, W, C))``.
``replace_quantizer`` puts a ``VectorQuantizer2`` sized from a diffusers ``VQModel``'s config into
                      ``model.quantize``.
``VectorQuantize``    vector-quantize-pytorch's ``VectorQuantize``: ``forward(x) -> (quantized,
                      indices, loss)``, ``channel_last``/``accept_image_fmap``/``accept_3d_fmap``,
                      ``get_output_from_indices``, ``get_codes_from_indices``.

The adapters need torch only; neither taming, diffusers nor vector-quantize-pytorch is imported.
Each wraps a registered quantizer (``quantizer="simvq"`` by default, any name of
``simvq.list_quantizers()`` and its options as keywords) or a built one, kept as ``.quantizer`` for
the simvq API (``encode``, ``decode``, the full ``QuantizerOutput``).
"""

from .diffusers_vq import replace_quantizer
from .taming import VectorQuantizer, VectorQuantizer2
from .vector_quantize import VectorQuantize

__all__ = ["VectorQuantize", "VectorQuantizer", "VectorQuantizer2", "replace_quantizer"]
