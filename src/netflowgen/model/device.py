"""Where a model runs: the device a setting names, and the bf16 autocast context."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

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


def autocast(device: torch.device, precision: str) -> AbstractContextManager:
    """bf16 autocast for "bf16" (and for "auto" on CUDA), else nothing; on CPU bf16 is only used when
    asked for (faster where the CPU has avx512_bf16)."""
    use_bf16 = precision == "bf16" or (precision == "auto" and device.type == "cuda")
    return torch.autocast(device.type, dtype=torch.bfloat16) if use_bf16 else nullcontext()
