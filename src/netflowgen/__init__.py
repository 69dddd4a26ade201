"""netflowgen: per-IP traffic models from NetFlow/IPFIX (the NetFlowGen method and beyond).

    from netflowgen import NetFlowGen, Detector

The notebook API (`netflowgen.notebook`) has one function per stage; see docs/api.md.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_LAZY = {"NetFlowGen": ("netflowgen.api", "NetFlowGen"), "Detector": ("netflowgen.detect.detector", "Detector")}
_STAGES = ("simulate_isp", "build_features", "pretrain", "earlydetect", "fit", "score", "alerts")
__all__ = ["NetFlowGen", "Detector", *_STAGES]


def __getattr__(name: str) -> Any:
    """Import the heavy parts (torch) only when first used, so `netflowgen --help` stays instant."""
    import importlib
    if name in _LAZY:
        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    if name in _STAGES:
        return getattr(importlib.import_module("netflowgen.notebook"), name)
    raise AttributeError(f"module 'netflowgen' has no attribute {name!r}")
