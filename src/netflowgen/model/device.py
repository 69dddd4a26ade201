"""Where a model runs: the device a setting names, and the bf16 autocast context."""

from __future__ import annotations

import functools
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

import torch

from netflowgen.rejects import InputError


def resolve_device(name: str, local_rank: int | None = None) -> torch.device:
    """"auto" -> cuda when a GPU is visible, else cpu; "cuda" under DDP -> this rank's GPU. A GPU
    asked for where none is visible is a clear error, not a traceback from deep inside torch."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise InputError(f"device {name!r}: expected auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(f"device {name!r} asked for, but no CUDA GPU is visible here (use --device cpu)")
        if local_rank is not None:
            return torch.device("cuda", local_rank)
    return device


@functools.cache
def cpu_has_native_bf16() -> bool:
    """True where the CPU has bf16 instructions (x86 avx512_bf16 or amx_bf16, Arm bf16; read from
    /proc/cpuinfo). Elsewhere PyTorch emulates bf16 on the CPU: the paper model pre-trained at 532
    node-minutes/s in bf16 against 3,466 in fp32 on an AVX2-only AMD EPYC (6.5 x slower)."""
    try:
        words = set(Path("/proc/cpuinfo").read_text(errors="replace").split())
    except OSError:
        return False
    return bool(words & {"avx512_bf16", "amx_bf16", "bf16"})


def resolve_precision(device: torch.device, precision: str) -> str:
    """"auto" -> "bf16" on CUDA and on CPUs with bf16 instructions (`cpu_has_native_bf16`), else
    "fp32"; "fp32" and "bf16" stay as asked."""
    if precision != "auto":
        return precision
    return "bf16" if device.type == "cuda" or (device.type == "cpu" and cpu_has_native_bf16()) else "fp32"


def autocast(device: torch.device, precision: str) -> AbstractContextManager:
    """bf16 autocast where `resolve_precision` says bf16, else nothing."""
    use_bf16 = resolve_precision(device, precision) == "bf16"
    return torch.autocast(device.type, dtype=torch.bfloat16) if use_bf16 else nullcontext()
