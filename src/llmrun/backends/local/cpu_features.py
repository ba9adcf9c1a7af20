"""What this CPU can do, read once, so the decode loop picks its kernels at load time.

torch reports the vector width its own kernels were dispatched to
(``torch.backends.cpu.get_cpu_capability()``: ``"DEFAULT"``, ``"AVX2"``, ``"AVX512"``, ...), and
Linux lists the instruction sets in ``/proc/cpuinfo``. The choices that depend on them:

- **native bfloat16** (AVX-512 BF16 or AMX-BF16): oneDNN multiplies bfloat16 weights with
  ``vdpbf16ps`` / AMX tiles, so a bfloat16 weight layout is half the bytes *and* fast; without
  them bfloat16 is emulated and slower than float32.
- **int8 dot products** (AVX-512 VNNI, AVX-VNNI or AMX-INT8): int8 weight kernels have native
  multiply-accumulate instructions.

``LLMRUN_CPU_FEATURES`` (a comma-separated flag list, e.g. ``avx2`` or ``avx2,avx512f,avx512_bf16``)
overrides the detected flags, to reproduce another machine's choices or to turn a path off.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass

__all__ = ["CpuFeatures", "detect"]

_ENV = "LLMRUN_CPU_FEATURES"


@dataclass(frozen=True)
class CpuFeatures:
    """The CPU flags that matter to the decode loop's kernels."""

    #: torch's dispatch level: "DEFAULT", "AVX2", "AVX512", "ZVECTOR", "SVE256", ...
    capability: str
    #: Instruction-set flags as Linux names them (``avx2``, ``avx512_bf16``, ``amx_tile``, ...).
    flags: frozenset[str]

    @property
    def avx512(self) -> bool:
        return "avx512f" in self.flags

    @property
    def native_bf16(self) -> bool:
        """bfloat16 arithmetic in hardware (AVX-512 BF16 or AMX-BF16)."""
        return bool({"avx512_bf16", "amx_bf16"} & self.flags)

    @property
    def amx(self) -> bool:
        return "amx_tile" in self.flags

    @property
    def int8_dot(self) -> bool:
        """int8 multiply-accumulate in hardware (AVX-512 VNNI, AVX-VNNI or AMX-INT8)."""
        return bool({"avx512_vnni", "avx_vnni", "amx_int8"} & self.flags)

    def describe(self) -> str:
        """A short line such as ``"AVX512: avx2 avx512f avx512_vnni avx512_bf16"``."""
        shown = [f for f in _SHOWN if f in self.flags]
        return f"{self.capability}: {' '.join(shown) or 'no vector extensions listed'}"


_SHOWN = ("avx2", "avx_vnni", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8")


def _torch_capability() -> str:
    try:
        import torch

        return str(torch.backends.cpu.get_cpu_capability())
    except (ImportError, AttributeError, RuntimeError):
        return "unknown"


def _proc_flags(path: str = "/proc/cpuinfo") -> frozenset[str]:
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                if line.startswith(("flags", "Features")):  # x86 / arm
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


@functools.cache
def detect() -> CpuFeatures:
    """This machine's :class:`CpuFeatures` (cached; ``LLMRUN_CPU_FEATURES`` overrides the flags)."""
    override = os.environ.get(_ENV)
    if override is not None:
        flags = frozenset(f.strip().lower() for f in override.split(",") if f.strip())
        capability = "AVX512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "DEFAULT"
        return CpuFeatures(capability, flags)
    return CpuFeatures(_torch_capability(), _proc_flags())
