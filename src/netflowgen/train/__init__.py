"""Pre-training: the loop, checkpoints, DDP (SPEC 8). See `netflowgen.train.pretrain`."""

from typing import Any


def __getattr__(name: str) -> Any:
    # Lazy, so `torchrun -m netflowgen.train.pretrain` does not import the module twice.
    if name in ("PRESETS", "PretrainConfig", "build_model", "pretrain"):
        from netflowgen.train import pretrain as _m
        return getattr(_m, name)
    raise AttributeError(name)
