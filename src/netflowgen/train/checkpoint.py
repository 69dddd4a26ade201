"""Checkpoints carry their run: `pretrain` stores the model arguments and the resolved settings
in checkpoint.pt, and `--resume` is refused when the settings that define the run changed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from netflowgen.config import ConfigError, to_dict

# Settings a resumed run may change: how long it goes on and where it runs, not what it trains.
RESUMABLE_CHANGES = frozenset({"max_steps", "max_epochs", "max_minutes", "device", "threads", "log_every"})


def check_resume_settings(ckpt: Path, cfg: Any) -> None:
    """Refuse `--resume` with settings that differ from the checkpoint's run, naming each one."""
    blob = torch.load(ckpt, map_location="cpu", weights_only=True)
    if "config" not in blob:
        raise ConfigError(f"{ckpt}: written by an older netflowgen without its settings; cannot check a resume")
    old, new = json.loads(blob["config"]), to_dict(cfg)
    changed = sorted(k for k in set(old) | set(new) if k not in RESUMABLE_CHANGES and old.get(k) != new.get(k))
    if changed:
        diffs = ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in changed)
        raise ConfigError(f"--resume with changed settings ({diffs}); the checkpoint {ckpt} belongs to another "
                          "run: resume with its settings (config.toml beside it) or start a new --out")
