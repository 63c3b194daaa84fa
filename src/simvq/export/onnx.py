"""ONNX export of a trained tokenizer: ``encode.onnx`` (inputs -> codes) and ``decode.onnx`` (codes ->
outputs), for image and audio runs, run by onnxruntime with the codes PyTorch gives.

    simvq export-onnx runs/fmnist                 # runs/fmnist/onnx/{encode,decode}.onnx + onnx.json
    simvq export-onnx runs/speech --out codec --check 16

==========  =======================================  =========================================
graph       image run                                audio run
==========  =======================================  =========================================
encode      ``images`` float32 ``(B, C, H, W)`` in   ``wav`` float32 ``(B, S)`` in [-1, 1] ->
            [0, 1] -> ``codes`` int64 ``(B, h, w)``  ``codes`` int64 ``(B, ceil(S / hop))``
decode      ``codes`` -> ``images`` ``(B, C, H, W)`` ``codes`` -> ``wav`` ``(B, T * hop)`` in
            in [0, 1]                                [-1, 1] (trim it to the input's length)
==========  =======================================  =========================================

``B`` is dynamic in both graphs, and so are ``S`` and ``T`` for audio; ``H`` and ``W`` are the run's
``data.image_size``. Multi-stage quantizers (``residual``, ``residual_simvq``) add a trailing
``stages`` dimension to the codes.

The search stays exact. ``simvq.search.nearest`` scores every code as ``||c||^2 - 2 x.c`` in float32
and takes the first minimum; the encode graph does the same over the eval-mode codebook, frozen into
the graph as a constant (SimVQ's ``W(C)``, VQ's table after its projection and normalisation): one
float32 ``Gemm`` of the ``N x K`` scores and an ``ArgMin``. The memory trade-off: the graph holds the
whole ``N x K`` score matrix, ``N = B x h x w`` tokens (``B x T`` for audio) times ``K`` codes x 4
bytes (64 Fashion-MNIST images x 49 tokens x K=65,536: 822 MB), where PyTorch walks tiles of a few
MiB; feed the graph smaller batches for large codebooks. Scores can differ from PyTorch's by the
rounding of a differently ordered dot product, which changes a code only where two codes tie to
within that rounding (none on the test splits checked: ``check_onnx``). FSQ and LFQ export their
scalar grid (round / sign), with no search. Decoding gathers rows of a ``(K, dim)`` table, the
quantizer's ``decode`` of every code computed once at export; a Vocos decoder's iSTFT is exported as
a real inverse DFT (a matrix product) and an overlap-add of shifted pieces, since ONNX has no
complex tensors: its output equals ``torch.istft``'s to float32 rounding.

Quantizers whose encoding is neither (a search in another space, stochastic codes, codes that need
more than an index to decode) are refused with a message naming the quantizer. The export checks the
graphs' PyTorch modules against the tokenizer before writing (codes equal on the example input), and
``check_onnx`` runs onnxruntime on the run's test split. Needs ``onnx`` and ``onnxscript`` (torch's
dynamo exporter) and, to check, ``onnxruntime``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..quantizers.base import CodebookQuantizer, Quantizer
from ..quantizers.fsq import FSQ
from ..quantizers.lfq import LFQ
from ..quantizers.residual import ResidualQuantizer
from ..quantizers.vq import VQ
from ..runs import load_run_model
from ..utils import write_json

ENCODE_FILE = "encode.onnx"
DECODE_FILE = "decode.onnx"
META_FILE = "onnx.json"
OUT_DIR = "onnx"  # default: inside the run directory
OPSET = 18
# decoded outputs (pixels in [0, 1], samples in [-1, 1]) of onnxruntime against PyTorch, largest |difference|
DECODE_TOLERANCE = 1e-4


class NotExportable(ValueError):
    """A tokenizer the ONNX export cannot express exactly."""


# ----------------------------------------------------------------------------- quantizers


def _linear(layer: nn.Module, x: Tensor) -> Tensor:
    """``simvq.quantizers.base.linear_fp32`` without its autocast context (an export traces no autocast)."""
    if isinstance(layer, nn.Identity):
        return x
    bias = None if layer.bias is None else layer.bias.float()
    return F.linear(x, layer.weight.float(), bias)


class NearestCode(nn.Module):
    """``(N, dim) -> (N,)``: the first ``argmin_k ||c_k||^2 - 2 x.c_k`` over a fixed float32 table, after
    an optional projection and l2 normalisation of ``x`` (VQ's ``to_latent``): the exact search of
    ``simvq.search.nearest`` as one ``Gemm`` + ``ArgMin`` over the full ``N x K`` scores."""

    def __init__(self, table: Tensor, *, project: nn.Module | None = None, normalize: bool = False):
        super().__init__()
        table = table.detach().float()
        self.register_buffer("table_t", table.t().contiguous())
        self.register_buffer("norms", table.pow(2).sum(1))  # as simvq.search computes them
        self.project = project if project is not None else nn.Identity()
        self.normalize = normalize

    def forward(self, x: Tensor) -> Tensor:
        x = _linear(self.project, x.float())
        if self.normalize:
            x = F.normalize(x, dim=-1)
        return torch.addmm(self.norms, x, self.table_t, alpha=-2.0).argmin(dim=1)


class ScalarGrid(nn.Module):
    """FSQ: project, bound, round, mixed-radix code (``FSQ.encode_flat``'s steps)."""

    def __init__(self, quantizer: FSQ):
        super().__init__()
        self.quantizer = quantizer

    def forward(self, x: Tensor) -> Tensor:
        q = self.quantizer
        return q.grid_to_codes(q.bound(_linear(q.project_in, x.float())).round())


class SignBits(nn.Module):
    """LFQ: project, one bit per channel from its sign (``LFQ.encode_flat``'s steps)."""

    def __init__(self, quantizer: LFQ):
        super().__init__()
        self.quantizer = quantizer

    def forward(self, x: Tensor) -> Tensor:
        q = self.quantizer
        return q.bits_to_codes(_linear(q.project_in, x.float()) > 0)


def decode_table(quantizer: Quantizer) -> Tensor:
    """``(K, dim)``: the quantizer's ``decode`` of every code, computed once."""
    with torch.no_grad():
        return quantizer.decode_flat(torch.arange(quantizer.codebook_size)).float().detach().clone()


class ResidualCodes(nn.Module):
    """Residual stages: each searches what the previous ones left, ``(N, dim) -> (N, stages)``."""

    def __init__(self, stages: list[nn.Module], tables: list[Tensor]):
        super().__init__()
        self.stages = nn.ModuleList(stages)
        for index, table in enumerate(tables):
            self.register_buffer(f"table_{index}", table)

    def forward(self, x: Tensor) -> Tensor:
        residual, codes = x.float(), []
        for index, stage in enumerate(self.stages):
            stage_codes = stage(residual)
            residual = residual - F.embedding(stage_codes, getattr(self, f"table_{index}"))
            codes.append(stage_codes)
        return torch.stack(codes, dim=-1)


class CodeVectors(nn.Module):
    """Codes ``(...)`` (``(..., stages)``) -> code vectors ``(..., dim)``: rows of the decode tables, summed
    over the stages in order."""

    def __init__(self, tables: list[Tensor], *, staged: bool):
        super().__init__()
        self.staged = staged
        for index, table in enumerate(tables):
            self.register_buffer(f"table_{index}", table)
        self.count = len(tables)

    def forward(self, codes: Tensor) -> Tensor:
        if not self.staged:
            return F.embedding(codes, self.table_0)
        vectors = F.embedding(codes[..., 0], self.table_0)
        for index in range(1, self.count):
            vectors = vectors + F.embedding(codes[..., index], getattr(self, f"table_{index}"))
        return vectors


def _single_search(quantizer: Quantizer) -> nn.Module | None:
    """The exportable search of a one-index quantizer, or None."""
    kind = type(quantizer)
    if isinstance(quantizer, FSQ) and kind.encode_flat is FSQ.encode_flat:
        return ScalarGrid(quantizer)
    if isinstance(quantizer, LFQ) and kind.encode_flat is LFQ.encode_flat:
        return SignBits(quantizer)
    if isinstance(quantizer, CodebookQuantizer) and kind.search is CodebookQuantizer.search:
        with torch.no_grad():
            table = quantizer.codebook()
        if kind.encode_flat is CodebookQuantizer.encode_flat:
            return NearestCode(table)
        if isinstance(quantizer, VQ) and kind.encode_flat is VQ.encode_flat:
            return NearestCode(table, project=quantizer.project_in, normalize=quantizer.l2_normalize)
    return None


def quantizer_graphs(quantizer: Quantizer, name: str) -> tuple[nn.Module, nn.Module]:
    """``(search: (N, dim) -> codes, vectors: codes -> (N, dim))`` of an exportable quantizer; a
    ``NotExportable`` naming ``name`` otherwise."""
    quantizer = quantizer.eval()
    if isinstance(quantizer, ResidualQuantizer) and type(quantizer).encode_flat is ResidualQuantizer.encode_flat:
        searches = [_single_search(stage) for stage in quantizer.stages]
        if any(search is None for search in searches):
            raise NotExportable(f"quantizer {name!r} (inner {quantizer.inner!r}) cannot be exported to ONNX: its stages' "
                                f"encoding is not a fixed-table search or a scalar grid; exportable: {', '.join(exportable_quantizers())}")
        tables = [decode_table(stage) for stage in quantizer.stages]
        return ResidualCodes(searches, tables), CodeVectors(tables, staged=True)
    search = _single_search(quantizer) if quantizer.code_ndim == 0 and not quantizer.decode_inputs else None
    if search is None:
        raise NotExportable(f"quantizer {name!r} cannot be exported to ONNX: its encoding is not a fixed-table nearest-code "
                            f"search or a scalar grid (exportable: {', '.join(exportable_quantizers())})")
    return search, CodeVectors([decode_table(quantizer)], staged=False)


def exportable_quantizers() -> list[str]:
    """The registered quantizers whose default build exports (residual: with an exportable ``inner``)."""
    from ..quantizers import build_quantizer, list_quantizers

    names = []
    for name in list_quantizers():
        try:
            quantizer = build_quantizer(name, dim=4, codebook_size=16)
            if isinstance(quantizer, ResidualQuantizer):
                ok = all(_single_search(stage) is not None for stage in quantizer.stages)
            else:
                ok = quantizer.code_ndim == 0 and not quantizer.decode_inputs and _single_search(quantizer) is not None
        except (ValueError, TypeError):
            ok = False
        if ok:
            names.append(name)
    return names


# ----------------------------------------------------------------------------- whole tokenizers


class ImageEncode(nn.Module):
    def __init__(self, model, search: nn.Module, *, staged: bool):
        super().__init__()
        self.model, self.search, self.staged = model, search, staged

    def forward(self, images: Tensor) -> Tensor:
        latents = self.model.encode_latents(images)  # (B, h, w, dim)
        batch, height, width, dim = latents.shape
        codes = self.search(latents.reshape(-1, dim))
        return codes.reshape(batch, height, width, -1) if self.staged else codes.reshape(batch, height, width)


class ImageDecode(nn.Module):
    def __init__(self, model, vectors: nn.Module):
        super().__init__()
        self.model, self.vectors = model, vectors

    def forward(self, codes: Tensor) -> Tensor:
        return self.model.decode_latents(self.vectors(codes)).clamp(0, 1)


class AudioEncode(nn.Module):
    def __init__(self, model, search: nn.Module, *, staged: bool):
        super().__init__()
        self.model, self.search, self.staged = model, search, staged

    def forward(self, wav: Tensor) -> Tensor:
        # AudioCodec.encode_latents's zero padding to whole hops, as (S + hop - 1) // hop: ONNX's integer
        # Div truncates, so its -(-S // hop) would round the other way for a ragged length
        hop = self.model.hop_length
        padding = (wav.shape[-1] + hop - 1) // hop * hop - wav.shape[-1]
        latents = self.model.encoder(F.pad(wav.unsqueeze(1), (0, padding)))  # (B, dim, T)
        batch, dim, frames = latents.shape
        codes = self.search(latents.transpose(1, 2).reshape(-1, dim))
        return codes.reshape(batch, frames, -1) if self.staged else codes.reshape(batch, frames)


class RealInverseSTFT(nn.Module):
    """``torch.istft(spectrum, n_fft, hop, window, center=True, length=T * hop)`` of a onesided spectrum
    given as real and imaginary parts ``(B, n_fft // 2 + 1, T)``, in real arithmetic (``n_fft`` a
    multiple of ``hop``, as in the Vocos decoder): the windowed inverse DFT of every frame is one
    matrix product; the overlap-add sums the ``n_fft / hop`` hop-long pieces of each frame, each
    shifted by its place; then division by the overlap-added squared window, and the centre trim."""

    def __init__(self, n_fft: int, hop_length: int, window: Tensor):
        super().__init__()
        if n_fft % hop_length:
            raise NotExportable(f"the iSTFT export needs n_fft ({n_fft}) to be a multiple of hop_length ({hop_length})")
        self.n_fft, self.hop_length, self.pieces = n_fft, hop_length, n_fft // hop_length
        bins = n_fft // 2 + 1
        angle = 2 * math.pi * torch.outer(torch.arange(bins, dtype=torch.float64), torch.arange(n_fft, dtype=torch.float64)) / n_fft
        weight = torch.full((bins, 1), 2.0, dtype=torch.float64)
        weight[0] = 1.0  # the DC and (even n_fft) Nyquist bins count once
        if n_fft % 2 == 0:
            weight[-1] = 1.0
        window = window.detach().double()
        # (2 * bins, n_fft): [real; imag] -> one windowed frame
        basis = torch.cat([weight * torch.cos(angle), -weight * torch.sin(angle)]) / n_fft * window
        self.register_buffer("basis", basis.float())
        self.register_buffer("window_sq", (window * window).float().reshape(1, n_fft, 1))

    def overlap_add(self, frames: Tensor) -> Tensor:
        """``(B, n_fft, T) -> (B, (T + pieces - 1) * hop)``: frame ``t`` added at sample ``t * hop``."""
        batch, _, count = frames.shape
        pieces = frames.reshape(batch, self.pieces, self.hop_length, count)
        total = F.pad(pieces[:, 0], (0, self.pieces - 1))
        for index in range(1, self.pieces):
            total = total + F.pad(pieces[:, index], (index, self.pieces - 1 - index))
        return total.transpose(1, 2).reshape(batch, -1)

    def forward(self, real: Tensor, imag: Tensor) -> Tensor:
        frames = torch.einsum("bft,fn->bnt", torch.cat([real, imag], dim=1), self.basis)
        count = real.shape[-1]
        signal = self.overlap_add(frames)
        envelope = self.overlap_add(self.window_sq.expand(1, self.n_fft, count))
        start = self.n_fft // 2
        return (signal / envelope)[:, start : start + count * self.hop_length].unsqueeze(1)  # (B, 1, T * hop)


class ExportableVocos(nn.Module):
    """``simvq.models.codec.VocosDecoder`` with its iSTFT in real arithmetic (``RealInverseSTFT``)."""

    def __init__(self, decoder):
        super().__init__()
        self.decoder = decoder
        self.istft = RealInverseSTFT(decoder.n_fft, decoder.hop_length, decoder.window)

    def forward(self, z: Tensor) -> Tensor:
        d = self.decoder
        x = d.norm(d.embed(z).transpose(1, 2)).transpose(1, 2)
        x = d.final_norm(d.blocks(x).transpose(1, 2))
        log_magnitude, phase = d.head(x).float().transpose(1, 2).chunk(2, dim=1)
        magnitude = log_magnitude.exp().clamp_max(1e2)
        return self.istft(magnitude * torch.cos(phase), magnitude * torch.sin(phase))


class AudioDecode(nn.Module):
    def __init__(self, model, vectors: nn.Module):
        super().__init__()
        from ..models.codec import VocosDecoder

        self.vectors = vectors
        self.decoder = ExportableVocos(model.decoder) if isinstance(model.decoder, VocosDecoder) else model.decoder

    def forward(self, codes: Tensor) -> Tensor:
        return self.decoder(self.vectors(codes).transpose(1, 2)).clamp(-1, 1)[:, 0]


# ----------------------------------------------------------------------------- the export


def _frozen(model: nn.Module, config) -> nn.Module:
    """A copy of ``model`` (built anew from ``config``: a parametrized module does not deepcopy) with
    weight-normalised convolutions (``torch.nn.utils.parametrizations``) holding their weights as
    plain tensors, each computed once as PyTorch computes it at every call: the same values, and a
    graph without the normalisation (smaller, and quicker to export)."""
    from torch.nn.utils import parametrize

    from ..runs import build_model

    copy = build_model(config)
    copy.load_state_dict(model.state_dict())
    copy.eval()
    for module in [m for m in copy.modules() if parametrize.is_parametrized(m)]:
        for name in list(module.parametrizations.keys()):
            parametrize.remove_parametrizations(module, name, leave_parametrized=True)
    return copy


class OnnxGraphs:
    """A recipe kind's ONNX export (its registry entry's ``onnx``, ``simvq.runs.registry``): the encode
    and decode modules of a trained model, their example inputs, dynamic dimensions and description,
    what PyTorch gives for the same inputs, and the kind's test inputs for the check."""

    encode_input = encode_output = ""

    def __init__(self, model, config):
        self.model, self.config = model, config
        search, vectors = quantizer_graphs(model.quantizer, config.quantizer.name)
        frozen = _frozen(model, config)
        self.staged = model.quantizer.code_ndim == 1
        self.encode, self.decode = (module.eval() for module in self.build(frozen, search, vectors))

    def build(self, model, search: nn.Module, vectors: nn.Module) -> tuple[nn.Module, nn.Module]:
        raise NotImplementedError

    def example(self) -> Tensor:
        """An encode input to trace with (batch 2)."""
        raise NotImplementedError

    def dynamic(self) -> tuple[dict, dict]:
        """The dynamic dimensions of the encode input and of the codes (``torch.export.Dim`` by axis)."""
        raise NotImplementedError

    def shapes(self) -> dict:
        """Names and shapes of the graphs' inputs and outputs, for ``onnx.json``."""
        raise NotImplementedError

    def torch_encode(self, inputs: Tensor) -> Tensor:
        """The PyTorch tokenizer's codes for an encode input of the graph's layout."""
        raise NotImplementedError

    def torch_decode(self, codes: Tensor) -> Tensor:
        """The PyTorch tokenizer's decoding, in the decode graph's output layout."""
        raise NotImplementedError

    def test_inputs(self, count: int) -> list[Tensor]:
        """Encode inputs from the run's test split, about ``count`` items."""
        raise NotImplementedError

    def describe(self) -> dict:
        """``shapes()``, a trailing ``stages`` on the codes of a multi-stage quantizer, and the codebook."""
        described = self.shapes()
        if self.staged:
            for part in ("encode", "decode"):
                for side in ("inputs", "outputs"):
                    if "codes" in described[part][side]:
                        described[part][side]["codes"] = [*described[part][side]["codes"], "stages"]
        quantizer = self.model.quantizer
        return {**described, "codebook_size": quantizer.codebook_size, "stages": quantizer.num_quantizers if self.staged else None}


class ImageGraphs(OnnxGraphs):
    """Images ``(B, C, H, W)`` float32 in [0, 1] <-> codes ``(B, h, w)``; the batch is dynamic."""

    encode_input, encode_output = "images", "codes"

    def build(self, model, search, vectors):
        return ImageEncode(model, search, staged=self.staged), ImageDecode(model, vectors)

    def example(self) -> Tensor:
        data = self.config.data
        return torch.rand(2, data.channels, data.image_size, data.image_size, generator=torch.Generator().manual_seed(0))

    def dynamic(self):
        batch = torch.export.Dim("batch", min=1)
        return {0: batch}, {0: batch}

    def shapes(self) -> dict:
        data = self.config.data
        image = ["batch", data.channels, data.image_size, data.image_size]
        grid = data.image_size // 2**self.config.model.downsamplings
        return {"encode": {"inputs": {"images": image}, "outputs": {"codes": ["batch", grid, grid]}},
                "decode": {"inputs": {"codes": ["batch", grid, grid]}, "outputs": {"images": image}}, "input_range": [0.0, 1.0]}

    def torch_encode(self, inputs: Tensor) -> Tensor:
        return self.model.encode(inputs)

    def torch_decode(self, codes: Tensor) -> Tensor:
        return self.model.decode(codes)

    def test_inputs(self, count: int) -> list[Tensor]:
        """The first ``count`` test images, in batches of at most 32."""
        from ..data import build_image_dataset

        dataset = build_image_dataset(self.config.data, "test", seed=self.config.trainer.seed)
        images = torch.stack([dataset[index] for index in range(min(count, len(dataset)))]).float()
        return list(images.split(32))

class AudioGraphs(OnnxGraphs):
    """Waveforms ``(B, S)`` float32 in [-1, 1] <-> codes ``(B, ceil(S / hop))``; batch and length are dynamic."""

    encode_input, encode_output = "wav", "codes"

    def build(self, model, search, vectors):
        return AudioEncode(model, search, staged=self.staged), AudioDecode(model, vectors)

    def example(self) -> Tensor:
        hop = self.model.hop_length  # a ragged length: the padding to whole hops is traced
        return (torch.rand(2, 3 * hop + hop // 2 + 1, generator=torch.Generator().manual_seed(0)) * 2 - 1) * 0.5

    def dynamic(self):
        # traced as at least two tokens (torch.export specialises a size of 1); the graphs' ops take any
        # length, and one sample / one token runs (tests/test_onnx_export.py)
        batch = torch.export.Dim("batch", min=1)
        return ({0: batch, 1: torch.export.Dim("samples", min=self.model.hop_length + 1)},
                {0: batch, 1: torch.export.Dim("frames", min=2)})

    def shapes(self) -> dict:
        return {"encode": {"inputs": {"wav": ["batch", "samples"]}, "outputs": {"codes": ["batch", "ceil(samples / hop_length)"]}},
                "decode": {"inputs": {"codes": ["batch", "frames"]}, "outputs": {"wav": ["batch", "frames * hop_length"]}},
                "input_range": [-1.0, 1.0], "sample_rate": self.model.sample_rate, "hop_length": self.model.hop_length}

    def torch_encode(self, inputs: Tensor) -> Tensor:
        return self.model.encode(inputs.unsqueeze(1))

    def torch_decode(self, codes: Tensor) -> Tensor:
        return self.model.decode(codes)[:, 0]

    def test_inputs(self, count: int) -> list[Tensor]:
        """The first ``count`` test utterances one at a time (each its own length), then each again cut
        short by a part of a hop, so the graph's padding to whole hops is checked too."""
        from ..data import build_speech_dataset

        dataset = build_speech_dataset(self.config.data, "test", seed=self.config.trainer.seed)
        utterances = [dataset[index].reshape(1, -1).float() for index in range(min(count, len(dataset)))]
        hop = self.model.hop_length
        return utterances + [wav[:, : max(1, wav.shape[1] - 1 - (97 * index) % max(1, hop - 1))] for index, wav in enumerate(utterances)]


def graphs_of(model, config) -> OnnxGraphs:
    """The ONNX graphs of a trained model, as its recipe kind exports them."""
    from ..runs import get_recipe

    graphs = get_recipe(config.recipe).onnx
    if graphs is None:
        raise NotExportable(f"the {config.recipe} recipe has no ONNX export")
    return graphs(model, config)


def _export(module: nn.Module, example: Tensor, path: Path, *, input_name: str, output_name: str, dynamic: dict, opset: int) -> None:
    try:
        import onnxscript  # noqa: F401  (torch's dynamo exporter needs it: one clear line rather than its traceback)
    except ImportError:
        raise ImportError("ONNX export needs onnx and onnxscript: pip install onnx onnxscript") from None
    from ..utils import atomic_path

    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)  # "torchvision is not installed"
    with warnings.catch_warnings(), atomic_path(path) as tmp:
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (example,), tmp, input_names=[input_name], output_names=[output_name], dynamo=True,
                          dynamic_shapes={input_name: dynamic}, opset_version=opset, external_data=False, verbose=False)


def export_onnx(run: str | os.PathLike, out_dir: str | os.PathLike | None = None, *, opset: int = OPSET) -> Path:
    """Write ``encode.onnx``, ``decode.onnx`` and ``onnx.json`` (shapes, names, codebook size, the
    tolerance) for the run (a run directory or its weights; default ``RUN/onnx``); returns the folder."""
    model, config, run_dir = load_run_model(run)
    graphs = graphs_of(model, config)
    example = graphs.example()
    with torch.no_grad():
        codes = graphs.torch_encode(example)
        mismatched = int((graphs.encode(example) != codes).sum())
    if mismatched:  # the graph's modules must give the tokenizer's codes before anything is written
        raise NotExportable(f"quantizer {config.quantizer.name!r}: the exportable search disagrees with the tokenizer on "
                            f"{mismatched} of {codes.numel()} example codes; not exported")
    out = Path(out_dir) if out_dir is not None else run_dir / OUT_DIR
    out.mkdir(parents=True, exist_ok=True)
    inputs, code_dims = graphs.dynamic()
    _export(graphs.encode, example, out / ENCODE_FILE, input_name=graphs.encode_input, output_name="codes", dynamic=inputs, opset=opset)
    _export(graphs.decode, codes, out / DECODE_FILE, input_name="codes", output_name=graphs.encode_input, dynamic=code_dims, opset=opset)
    meta = {"recipe": config.recipe, "quantizer": config.quantizer.name, **graphs.describe(), "opset": opset,
            "encode_file": ENCODE_FILE, "decode_file": DECODE_FILE, "codes_dtype": "int64", "decode_tolerance": DECODE_TOLERANCE,
            "search": "exact: first argmin over codes of ||c||^2 - 2 x.c in float32 (full N x K scores)",
            "run": str(Path(run_dir).resolve())}
    write_json(out / META_FILE, meta)
    return out


# ----------------------------------------------------------------------------- the check


def _sessions(out: Path):
    try:
        import onnxruntime
    except ImportError:
        raise ImportError("checking the ONNX graphs needs onnxruntime: pip install onnxruntime") from None
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    return tuple(onnxruntime.InferenceSession(str(out / name), options, providers=["CPUExecutionProvider"])
                 for name in (ENCODE_FILE, DECODE_FILE))


def check_onnx(run: str | os.PathLike, out_dir: str | os.PathLike | None = None, *, count: int = 64) -> dict:
    """Run the exported graphs with onnxruntime on the first ``count`` items of the run's test split and
    compare them with the PyTorch tokenizer: ``codes_equal`` (every code), ``mismatched_codes``,
    ``decode_max_abs_error`` (ONNX decode against PyTorch decode of the same codes) and whether it
    lies within ``decode_tolerance``. Written into ``onnx.json`` as ``check``."""
    model, config, run_dir = load_run_model(run)
    graphs = graphs_of(model, config)
    out = Path(out_dir) if out_dir is not None else run_dir / OUT_DIR
    encoder, decoder = _sessions(out)
    items = mismatched = total = 0
    largest = 0.0
    with torch.no_grad():
        for batch in graphs.test_inputs(count):
            torch_codes = graphs.torch_encode(batch)
            onnx_codes = torch.from_numpy(encoder.run(None, {encoder.get_inputs()[0].name: batch.numpy()})[0])
            if onnx_codes.shape != torch_codes.shape:
                raise ValueError(f"{out / ENCODE_FILE} gives codes of shape {tuple(onnx_codes.shape)}, PyTorch {tuple(torch_codes.shape)}")
            mismatched += int((onnx_codes != torch_codes).sum())
            total += torch_codes.numel()
            decoded = torch.from_numpy(decoder.run(None, {decoder.get_inputs()[0].name: torch_codes.numpy()})[0])
            largest = max(largest, float((decoded - graphs.torch_decode(torch_codes)).abs().max()))
            items += batch.shape[0]
    report = {"items": items, "codes": total, "codes_equal": mismatched == 0, "mismatched_codes": mismatched,
              "decode_max_abs_error": largest, "decode_tolerance": DECODE_TOLERANCE, "decode_within_tolerance": largest <= DECODE_TOLERANCE}
    meta_file = out / META_FILE
    if meta_file.is_file():
        meta = json.loads(meta_file.read_text())
        write_json(meta_file, {**meta, "check": report})
    return report
