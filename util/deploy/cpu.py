"""What this machine's CPU can do fast: its model name and the instruction-set flags that decide
which inference path pays off (bf16, VNNI, AMX). One home for these facts: the demo's
`--precision auto`, `--backend auto` (and the key its cached choice is stored under) and
benchmarks/bench_deploy.py read them here.

- native bf16: AVX512-BF16 (`avx512_bf16`, e.g. AMD Zen 4, Intel Cooper Lake) or AMX-BF16
  (`amx_bf16`, Intel Sapphire Rapids and later). Elsewhere bf16 is emulated and slower than fp32.
- VNNI (`avx512_vnni`, `avx_vnni`): 8-bit dot products of unsigned x signed bytes, the kernels
  behind int8 with uint8 activations; AMX-INT8 (`amx_int8`) the same on tiles.
"""
from __future__ import annotations

import functools
import platform
from dataclasses import dataclass
from pathlib import Path

BF16_FLAGS = ("avx512_bf16", "amx_bf16")
VNNI_FLAGS = ("avx512_vnni", "avx_vnni")
AMX_FLAGS = ("amx_bf16", "amx_int8", "amx_tile")
REPORTED_FLAGS = ("avx512f",) + BF16_FLAGS[:1] + VNNI_FLAGS + AMX_FLAGS


@dataclass(frozen=True)
class CpuInfo:
    model: str
    flags: frozenset[str]
    cores: int

    @property
    def native_bf16(self) -> bool:
        """bf16 in hardware (AVX512-BF16 or AMX-BF16), where oneDNN's bf16 kernels beat fp32."""
        return bool(self.flags & set(BF16_FLAGS)) and _mkldnn_bf16()

    @property
    def vnni(self) -> bool:
        return bool(self.flags & set(VNNI_FLAGS))

    @property
    def amx(self) -> bool:
        return bool(self.flags & set(AMX_FLAGS))

    def describe(self) -> str:
        """e.g. 'AMD EPYC 9R14, 2 cores; avx512f avx512_bf16 avx512_vnni avx_vnni'."""
        shown = [f for f in REPORTED_FLAGS if f in self.flags]
        return f"{self.model}, {self.cores} cores; " + (" ".join(shown) if shown else "no AVX-512/VNNI/AMX flags")

    def key(self) -> str:
        """What identifies this machine's speed profile (for cached choices)."""
        return f"{self.model}|{self.cores}|{','.join(f for f in REPORTED_FLAGS if f in self.flags)}"


def cpuinfo_fields(text: str) -> dict[str, str]:
    """The fields of the first processor in /proc/cpuinfo text ("vendor_id", "model name", "flags", ...)."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    return fields


def parse_cpuinfo(text: str) -> tuple[str, frozenset[str]]:
    """(model name, flags) of the first processor in /proc/cpuinfo text."""
    fields = cpuinfo_fields(text)
    return fields.get("model name", ""), frozenset(fields.get("flags", "").split())


def _mkldnn_bf16() -> bool:
    """torch's own opinion where it has one (oneDNN built in and willing to run bf16)."""
    import torch

    check = getattr(getattr(torch.ops, "mkldnn", None), "_is_mkldnn_bf16_supported", None)
    if not torch.backends.mkldnn.is_available():
        return False
    try:
        return bool(check()) if check is not None else True
    except Exception:  # an op missing from this build: trust the CPU flags
        return True


@functools.lru_cache(maxsize=1)
def cpu_info() -> CpuInfo:
    """This machine's CPU (Linux: /proc/cpuinfo; elsewhere the model name only, no flags)."""
    import os

    try:
        model, flags = parse_cpuinfo(Path("/proc/cpuinfo").read_text())
    except OSError:
        model, flags = "", frozenset()
    return CpuInfo(model or platform.processor() or platform.machine() or "unknown CPU", flags, os.cpu_count() or 1)
