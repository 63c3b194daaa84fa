"""LPIPS (Zhang et al. 2018, "The Unreasonable Effectiveness of Deep Features as a Perceptual
Metric"), version 0.1, as the ``lpips`` package computes it: VGG16 (the perceptual training loss)
or AlexNet (the usual evaluation number), without torchvision.

    d(x, y) = sum over taps l of  mean over (h, w) of  w_l . (f_l(x) / (|f_l(x)| + eps) - f_l(y) / (|f_l(y)| + eps))^2

where ``f_l`` is the backbone's ReLU output at tap ``l`` (VGG16: relu1_2, relu2_2, relu3_3, relu4_3,
relu5_3; AlexNet: relu1..relu5) of the input scaled by lpips's ``ScalingLayer`` (``(x - shift) / scale``
on ``[-1, 1]`` images), ``|.|`` the L2 norm over channels, ``eps = 1e-10`` and ``w_l >= 0`` the learned
linear head (a 1x1 convolution without bias).

Weights, none of which is downloaded:

- the backbone: a torchvision-format state dict of ImageNet weights (``vgg16-397923af.pth``,
  ``alexnet-owt-7be5be79.pth``; plain tensors, read with ``torch.load(weights_only=True)``), given as a
  path, else taken from torch hub's cache (``$TORCH_HOME/hub/checkpoints``) where torchvision leaves it;
- the linear heads: ``weights/v0.1/{vgg,alex}.pth`` shipped inside the ``lpips`` wheel (found without
  importing the package, which needs torchvision: install it with ``pip install --no-deps lpips``),
  or a path.

Without them the constructor refuses with one line naming the missing file and the argument (or
config key) that gives it; ``random_weights_for_testing=True`` builds a seeded random network for tests
and says so in ``repr`` and ``.random_weights``.

The network is frozen: its parameters never require grad, it stays in eval mode, and it is left out
of ``state_dict`` (checkpoints of a model that holds it stay small and load without it), since its
weights come from the files above.
"""

from __future__ import annotations

import importlib.util
import os
import re
from collections import OrderedDict
from collections.abc import Iterable
from pathlib import Path
from typing import TypedDict, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..utils import load_torch_file

# lpips.lpips.ScalingLayer: ImageNet mean/std mapped to inputs in [-1, 1]
SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)
EPS = 1e-10  # lpips.normalize_tensor

# torchvision's ``features`` layouts: ints are 3x3 (VGG) convolutions + ReLU with that many output
# channels, "M" a max-pool; taps are the indices of the ReLUs whose outputs LPIPS compares
VGG16_CONFIG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)


class NetSpec(TypedDict):
    """One backbone's entry in ``NETS``."""

    taps: tuple[int, ...]
    channels: tuple[int, ...]
    file: str
    arch: str
    min_size: int


NETS: dict[str, NetSpec] = {
    "vgg": {
        "taps": (3, 8, 15, 22, 29),  # relu1_2, relu2_2, relu3_3, relu4_3, relu5_3
        "channels": (64, 128, 256, 512, 512),
        "file": "vgg16-397923af.pth",
        "arch": "VGG16",
        "min_size": 16,  # four 2x2 pools before relu5_3
    },
    "alex": {
        "taps": (1, 4, 7, 9, 11),  # relu1 .. relu5
        "channels": (64, 192, 384, 256, 256),
        "file": "alexnet-owt-7be5be79.pth",
        "arch": "AlexNet",
        "min_size": 31,  # the stride-4 11x11 convolution and two 3x3/2 pools before relu3
    },
}
INPUT_RANGES = ("[0, 1]", "[-1, 1]")
REDUCTIONS = ("mean", "sum", "none")


def vgg16_features() -> nn.Sequential:
    """torchvision's ``vgg16().features`` up to relu5_3 (the final pool, which has no weights, left off)."""
    layers: list[nn.Module] = []
    channels = 3
    for item in VGG16_CONFIG:
        if isinstance(item, int):
            layers += [nn.Conv2d(channels, item, kernel_size=3, padding=1), nn.ReLU(inplace=True)]
            channels = item
        else:  # "M"
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
    return nn.Sequential(*layers)


def alexnet_features() -> nn.Sequential:
    """torchvision's ``alexnet().features`` up to relu5 (the final pool left off)."""
    return nn.Sequential(
        nn.Conv2d(3, 64, kernel_size=11, stride=4, padding=2), nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Conv2d(64, 192, kernel_size=5, padding=2), nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Conv2d(192, 384, kernel_size=3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(384, 256, kernel_size=3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(256, 256, kernel_size=3, padding=1), nn.ReLU(inplace=True),
    )


def load_tensors(path: str | os.PathLike, what: str) -> dict[str, Tensor]:
    """A file of plain tensors (a state dict) read with ``weights_only=True``: anything else (a pickled
    model, arbitrary objects) is refused, never unpickled."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"{what} file {path} does not exist")
    try:
        state = load_torch_file(path)  # the package's one torch.load: weights_only, never unpickles
    except ValueError as error:  # weights_only's refusal, a truncated file, ...
        raise ValueError(f"{what} file {path} is not a state dict of tensors: {str(error).splitlines()[0]}") from error
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ValueError(f"{what} file {path} is not a state dict of tensors (got {type(state).__name__})")
    return dict(state)


def hub_checkpoint(filename: str) -> Path:
    """Where torchvision caches a downloaded weights file: ``<torch hub dir>/checkpoints/<filename>``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / filename


def lpips_head_path(net: str) -> Path | None:
    """``weights/v0.1/<net>.pth`` inside the installed ``lpips`` package (found without importing it:
    importing lpips needs torchvision), or None when the package is not installed."""
    spec = importlib.util.find_spec("lpips")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "weights" / "v0.1" / f"{net}.pth"
    return path if path.is_file() else None


class LPIPS(nn.Module):
    """LPIPS v0.1 distance between image batches ``(B, C, H, W)`` (C = 3, or 1: repeated to RGB).

    Args:
        net: "vgg" (VGG16 taps; the perceptual loss of VQGAN-style training) or "alex" (AlexNet;
            the LPIPS reported in papers).
        backbone_weights: torchvision's ImageNet state dict for ``net`` (a path); None looks for the
            file torchvision caches under torch hub's ``checkpoints`` folder.
        head_weights: lpips's linear heads (a path); None takes ``weights/v0.1/<net>.pth`` from the
            installed ``lpips`` package.
        input_range: "[0, 1]" (the project's images) or "[-1, 1]" (the lpips package's convention:
            ``LPIPS()(x, y) == lpips.LPIPS()(2 * x - 1, 2 * y - 1)``).
        random_weights_for_testing: a seeded random backbone and heads instead of the files (tests
            only: numbers from it are not LPIPS).
        weights_key: how the refusal names the backbone's setting (e.g. a config key).
        heads_key: how the refusal names the heads' setting.

    ``forward(x, y, reduction="mean")``: the mean (or "sum", or per image with "none") distance;
    gradients flow to the inputs, never to the network. ``layer_distances`` gives the per-tap terms.
    The features run in the ambient dtype (autocast applies); the normalisation and the distance are
    computed in float32.
    """

    # lpips's ScalingLayer constants, registered (non-persistent) in __init__
    shift: Tensor
    scale: Tensor

    def __init__(
        self,
        net: str = "vgg",
        *,
        backbone_weights: str | os.PathLike | None = None,
        head_weights: str | os.PathLike | None = None,
        input_range: str = "[0, 1]",
        random_weights_for_testing: bool = False,
        weights_key: str = "backbone_weights",
        heads_key: str = "head_weights",
    ):
        super().__init__()
        if net not in NETS:
            raise ValueError(f"net must be one of {sorted(NETS)}, got {net!r}")
        if input_range not in INPUT_RANGES:
            raise ValueError(f"input_range must be one of {INPUT_RANGES}, got {input_range!r}")
        spec = NETS[net]
        self.net, self.input_range, self.taps = net, input_range, spec["taps"]
        self.min_size = spec["min_size"]
        self.random_weights = bool(random_weights_for_testing)
        self.register_buffer("shift", torch.tensor(SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(SCALE).view(1, 3, 1, 1), persistent=False)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)  # the random-weights network is the same in every test
            self.features = vgg16_features() if net == "vgg" else alexnet_features()
            self.heads = nn.ModuleList(nn.Conv2d(c, 1, kernel_size=1, bias=False) for c in spec["channels"])
            if self.random_weights:
                if backbone_weights is not None or head_weights is not None:
                    raise ValueError("random_weights_for_testing=True builds a random network: give no weight files with it")
                for head in self._head_convs():  # lpips's heads are non-negative
                    head.weight.data.uniform_(0.0, 1.0 / head.weight.shape[1])
        if not self.random_weights:
            self.load_backbone(self._backbone_file(backbone_weights, spec, weights_key))
            self.load_heads(self._head_file(head_weights, heads_key))
        self.requires_grad_(False)
        self.eval()
        self._load_prefixes: list[str] = []
        self.register_load_state_dict_post_hook(_forget_missing_keys)

    # -- weights ------------------------------------------------------------------------------

    def _head_convs(self) -> Iterable[nn.Conv2d]:
        """``self.heads``, typed: the ModuleList holds only the 1x1 convolutions built in __init__."""
        return cast("Iterable[nn.Conv2d]", self.heads)  # a ModuleList iterates as plain Modules

    def _backbone_file(self, path, spec: NetSpec, weights_key: str) -> Path:
        if path is not None:
            return Path(path)
        cached = hub_checkpoint(spec["file"])
        if cached.is_file():
            return cached
        raise FileNotFoundError(
            f"LPIPS-{self.net} needs ImageNet {spec['arch']} weights: set {weights_key} to a local copy of "
            f"torchvision's {spec['file']} (none in {cached.parent}; nothing is downloaded)"
        )

    def _head_file(self, path, heads_key: str = "head_weights") -> Path:
        if path is not None:
            return Path(path)
        found = lpips_head_path(self.net)
        if found is None:
            raise FileNotFoundError(
                f"LPIPS-{self.net} needs the lpips linear heads: `pip install --no-deps lpips` (its wheel ships "
                f"weights/v0.1/{self.net}.pth; its dependencies would replace torch) or set {heads_key} to a local copy of it"
            )
        return found

    def load_backbone(self, path: str | os.PathLike) -> None:
        """Load torchvision's ``features.*`` tensors from a state-dict file (``classifier.*`` ignored)."""
        what = f"{NETS[self.net]['arch']} backbone"
        state = load_tensors(path, what)
        features = {key[len("features."):]: value for key, value in state.items() if key.startswith("features.")}
        expected = set(self.features.state_dict())
        if set(features) != expected:
            missing, extra = sorted(expected - set(features)), sorted(set(features) - expected)
            raise ValueError(
                f"{what} file {path} is not torchvision's {NETS[self.net]['arch']} state dict "
                f"(features.* keys missing: {missing[:4]}, unexpected: {extra[:4]})"
            )
        try:
            self.features.load_state_dict(features)
        except RuntimeError as error:
            raise ValueError(f"{what} file {path} does not fit torchvision's {NETS[self.net]['arch']}: {error}") from error

    def load_heads(self, path: str | os.PathLike) -> None:
        """Load lpips's ``lin<k>.model.<i>.weight`` tensors (its ``NetLinLayer`` 1x1 convolutions)."""
        state = load_tensors(path, f"LPIPS-{self.net} head")
        heads = {}
        for key, value in state.items():
            match = re.fullmatch(r"lin(\d+)\.model\.\d+\.weight", key)
            if match:
                heads[int(match.group(1))] = value
        shapes = [tuple(head.weight.shape) for head in self._head_convs()]
        if sorted(heads) != list(range(len(self.heads))) or [tuple(heads[k].shape) for k in sorted(heads)] != shapes:
            got = {k: tuple(v.shape) for k, v in sorted(heads.items())}
            raise ValueError(f"LPIPS-{self.net} head file {path} holds heads {got}, expected shapes {shapes}")
        for k, head in enumerate(self._head_convs()):
            head.weight.data.copy_(heads[k])

    # -- frozen, and not part of a checkpoint --------------------------------------------------

    def train(self, mode: bool = True):
        return super().train(False)  # always eval: the frozen metric network

    def state_dict(self, *args, destination=None, prefix="", keep_vars=False):
        """Empty: the weights come from their files, not from a checkpoint of a model holding this."""
        return OrderedDict() if destination is None else destination

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        self._load_prefixes.append(prefix)  # lets the post hook forget this subtree's missing keys
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def extra_repr(self) -> str:
        weights = "RANDOM weights (testing only)" if self.random_weights else "pretrained"
        return f"net={self.net!r}, input_range={self.input_range!r}, {weights}"

    # -- the distance -------------------------------------------------------------------------

    def tap_features(self, images: Tensor) -> list[Tensor]:
        """The backbone's outputs at the taps for images in ``input_range``."""
        if images.ndim != 4 or images.shape[1] not in (1, 3):
            raise ValueError(f"images must have shape (B, 1 or 3, H, W), got {tuple(images.shape)}")
        if min(images.shape[-2:]) < self.min_size:
            raise ValueError(f"LPIPS-{self.net} needs images of at least {self.min_size}x{self.min_size}, got {tuple(images.shape[-2:])}")
        if images.shape[1] == 1:
            images = images.expand(-1, 3, -1, -1)
        if self.input_range == "[0, 1]":
            images = images * 2 - 1
        h = (images - self.shift.to(images.dtype)) / self.scale.to(images.dtype)
        outputs = []
        for index, layer in enumerate(self.features):
            h = layer(h)
            if index in self.taps:
                outputs.append(h)
            if index == self.taps[-1]:
                break
        return outputs

    def layer_distances(self, x: Tensor, y: Tensor) -> Tensor:
        """``(B, 5)``: each tap's spatially averaged, head-weighted squared difference (float32)."""
        if x.shape != y.shape:
            raise ValueError(f"x and y must have the same shape, got {tuple(x.shape)} and {tuple(y.shape)}")
        features = self.tap_features(torch.cat([x, y]))
        terms = []
        with torch.autocast(device_type=x.device.type, enabled=False):  # float32 from here on
            for head, f in zip(self._head_convs(), features):
                f = f.float()
                f = f / (f.pow(2).sum(dim=1, keepdim=True).sqrt() + EPS)
                fx, fy = f.chunk(2)
                difference = (fx - fy).pow(2)
                terms.append(F.conv2d(difference, head.weight.float()).mean(dim=(1, 2, 3)))
        return torch.stack(terms, dim=1)

    def forward(self, x: Tensor, y: Tensor, reduction: str = "mean") -> Tensor:
        if reduction not in REDUCTIONS:
            raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
        distances = self.layer_distances(x, y).sum(dim=1)
        return distances.mean() if reduction == "mean" else distances.sum() if reduction == "sum" else distances


def _forget_missing_keys(module: LPIPS, incompatible_keys) -> None:
    """A model holding an LPIPS loads a checkpoint without its (never saved) weights under strict
    loading: drop the missing keys of this subtree."""
    prefixes, module._load_prefixes = tuple(module._load_prefixes), []
    if prefixes:
        missing = incompatible_keys.missing_keys
        missing[:] = [key for key in missing if not key.startswith(prefixes)]


__all__ = ["LPIPS", "NETS", "alexnet_features", "hub_checkpoint", "load_tensors", "lpips_head_path", "vgg16_features"]
