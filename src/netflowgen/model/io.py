"""A pre-trained model folder on disk: model.safetensors (weights), config.json (model arguments,
vocabulary sizes, time zone, split fractions, feature-set hash), binner.json. No pickle.

Loaders check what they are handed: the feature-set hash against this code's, the weights' names and
shapes against the config (before any weight is used), finite values. `content_hash` names a model
by its weights and binner, so a detector can say which backbone it belongs to.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from netflowgen.artifacts import read_artifact_json
from netflowgen.model.gpt import ModelConfig, TrafficGPT
from netflowgen.rejects import InputError
from netflowgen.schema import DEFAULT_SPLIT, FEATURE_SET_HASH
from netflowgen.tokens import Binner

MODEL_FORMAT = "netflowgen.model/1"
WEIGHTS, CONFIG, BINNER = "model.safetensors", "config.json", "binner.json"


@dataclass
class Pretrained:
    """A pre-trained model with its binner and settings (what detection and evaluation need;
    `netflowgen.api.NetFlowGen` adds the user-facing inference methods)."""

    model: TrafficGPT
    binner: Binner
    config: dict[str, Any]

    @property
    def split(self) -> list[float]:
        """The train / validation fractions the model was pre-trained with (SPEC 5)."""
        return split_of(self.config)


def split_of(config: dict[str, Any]) -> list[float]:
    """The [train, validation] fractions a model's config.json records (the default where absent)."""
    return [float(config.get("train_fraction", DEFAULT_SPLIT[0])), float(config.get("val_fraction", DEFAULT_SPLIT[1]))]


def load_pretrained(directory: str | Path, device: str | torch.device = "cpu") -> Pretrained:
    """`load_model` as one object; its content hash goes into config["content_hash"]."""
    model, binner, extra = load_model(directory, device)
    return Pretrained(model, binner, {**extra, "content_hash": content_hash(directory)})


def content_hash(directory: str | Path) -> str:
    """sha256 (hex, 16 digits) of a model folder's weights and binner: its identity."""
    d = Path(directory)
    h = hashlib.sha256()
    for name in (WEIGHTS, BINNER):
        h.update((d / name).read_bytes())
    return h.hexdigest()[:16]


def save_model(directory: str | Path, model: TrafficGPT, binner: Binner, extra: dict[str, Any]) -> Path:
    """Write the three files of a model folder; `extra` (time zone, split fractions...) goes into config.json."""
    from safetensors.torch import save_file

    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(d / WEIGHTS), metadata={"format": MODEL_FORMAT})
    cfg = {**extra, "format": MODEL_FORMAT, "feature_set_hash": FEATURE_SET_HASH,
           "model": dataclasses.asdict(model.cfg), "n_nodes": model.n_nodes, "n_customers": model.n_customers}
    (d / CONFIG).write_text(json.dumps(cfg, indent=1))
    binner.save(d / BINNER)
    return d


def read_config(directory: str | Path) -> dict[str, Any]:
    """config.json of a model folder, checked for format and feature-set hash."""
    p = Path(directory) / CONFIG
    cfg = read_artifact_json(p, MODEL_FORMAT, "model", "write one with `netflowgen pretrain`")
    if cfg.get("feature_set_hash") != FEATURE_SET_HASH:
        raise InputError(f"{p}: built for feature set {cfg.get('feature_set_hash')!r}, this netflowgen has "
                         f"{FEATURE_SET_HASH!r}")
    return cfg


def load_model(directory: str | Path, device: str | torch.device = "cpu"
               ) -> tuple[TrafficGPT, Binner, dict[str, Any]]:
    """(model in eval mode, binner, the config's other entries) of a folder written by `save_model`."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    d = Path(directory)
    cfg = read_config(d)
    try:
        margs: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in cfg["model"].items()}
        mcfg = ModelConfig(**margs)
        n_nodes, n_customers = int(cfg["n_nodes"]), int(cfg["n_customers"])
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise InputError(f"{d / CONFIG}: bad model arguments ({e})") from None
    try:
        state = load_file(str(d / WEIGHTS))
    except (SafetensorError, OSError, ValueError) as e:
        raise InputError(f"{d / WEIGHTS}: unreadable weights ({e})") from None
    try:
        with torch.device("meta"):  # shapes only: nothing is allocated before the weights are checked
            expected = {k: tuple(v.shape) for k, v in TrafficGPT(mcfg, n_nodes, n_customers).state_dict().items()}
    except (ValueError, TypeError, RuntimeError) as e:
        raise InputError(f"{d / CONFIG}: bad model arguments ({' '.join(str(e).split())[:200]})") from None
    got = {k: tuple(v.shape) for k, v in state.items()}
    if expected != got:
        diff = sorted(set(expected.items()) ^ set(got.items()))[:4]
        raise InputError(f"{d / WEIGHTS}: weights do not match config.json (e.g. {diff})")
    bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise InputError(f"{d / WEIGHTS}: non-finite values in {bad[:3]}")
    model = TrafficGPT(mcfg, n_nodes, n_customers)
    model.load_state_dict(state)
    model.to(device).eval()
    try:
        binner = Binner.load(d / BINNER)
    except (OSError, ValueError, KeyError, TypeError, IndexError, json.JSONDecodeError) as e:
        raise InputError(f"{d / BINNER}: unreadable binner ({type(e).__name__}: {' '.join(str(e).split())[:160]})") from None
    if len(binner.nodes) != n_nodes:
        raise InputError(f"{d}: binner has {len(binner.nodes)} nodes, the model {n_nodes}")
    extra = {k: v for k, v in cfg.items() if k not in ("model", "n_nodes", "n_customers", "format")}
    extra.setdefault("time_zone", "UTC")
    return model, binner, extra
