"""One probe of this CPU's bf16 support, for the two places simvq decides on bf16 by it.

``cpu_has_native_bf16()``: the CPU computes bf16 dot products in hardware -- x86 AVX512-BF16
(``VDPBF16PS``) or AMX (whose tiles take bf16 on every CPU that has them) -- and oneDNN, which runs
torch's CPU bf16 matmuls and convolutions, may use them (``ONEDNN_MAX_CPU_ISA`` can hold it below).
Both users need exactly that fact:

* training's ``precision="auto"`` (``train.core.resolve_precision``): bf16 autocast convolutions
  beat float32 only with native bf16;
* the nearest-code search's bf16 screen (``search``, ``method="auto"``): it pays only when the bf16
  GEMM outruns the float32 one. Plain AVX-512 does not count (the search used to count it): oneDNN
  then converts bf16 in software. On this project's AVX512-BF16 CPU held to plain AVX-512
  (``ONEDNN_MAX_CPU_ISA=AVX512_CORE``), a (2048 x 68) @ (68 x 1024) bf16 GEMM took 2.2x the
  float32 one and the screened search (K=16384) 1.14x the float32 search; natively 0.2x and 0.36x.

Only x86 is probed: other CPUs report no native bf16 (float32 throughout, as before).
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import torch

# oneDNN's names for the ISA caps below its first with bf16 dot products (AVX512_CORE_BF16)
_ISAS_WITHOUT_BF16 = frozenset({"SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE", "AVX512_CORE_VNNI"})


@functools.cache
def cpu_has_native_bf16() -> bool:
    """Native bf16 dot products that oneDNN may use (module docstring). Read once per process."""
    if os.environ.get("ONEDNN_MAX_CPU_ISA", "").strip().upper() in _ISAS_WITHOUT_BF16:
        return False
    avx512_bf16 = getattr(torch.cpu, "_is_avx512_bf16_supported", None)
    amx = getattr(torch.cpu, "_is_amx_tile_supported", None)
    if avx512_bf16 is not None and amx is not None:  # torch's own probe: any OS, AMX only if enabled
        return bool(avx512_bf16() or amx())
    try:  # a torch without it: the kernel's flags (Linux)
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


__all__ = ["cpu_has_native_bf16"]
