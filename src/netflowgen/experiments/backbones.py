"""The pre-trained backbones of the paper's ablations (section 7: Tables 8, 9 and 10), each
pre-trained once on a step budget and cached under the experiment's folder.

A backbone is named by a `BackboneSpec`: the named model configuration ("paper" = 86 input
features, "light" = the 6 volume features of paper section 7.2), its size
"layers-heads-hidden-intermediate" (paper Table 10 notation), the pre-training seed and the nodes
held out of pre-training (Table 8). The pre-training settings are `train.pretrain.PRESETS[preset]`
<- `AblationConfig.pretrain` <- the spec <- `steps`, with the split fractions of the experiment, so
every backbone of one run sees the same train / validation minutes as its detectors.

Cache: CACHE/<name>-<hash>/ is a `netflowgen pretrain` output folder plus `ablation.json` (the
resolved settings, held-out nodes and features file it was trained from); a folder whose
ablation.json matches is reused, any other is pre-trained again. The token arrays (and the filtered
features table of a held-out run) are deleted after training to keep the folder small.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import polars as pl

from netflowgen.config import ConfigError, to_dict

ABLATION_FILE = "ablation.json"


@dataclass
class AblationConfig:
    """Settings of the ablation parts of `experiment paper` (table8, table9, table10)."""

    steps: int = 100  # pre-training steps of every ablation backbone (0 = the preset's own budget)
    preset: str = "demo"  # `netflowgen pretrain` preset the backbones start from
    pretrain: dict[str, Any] = field(default_factory=dict)  # more PretrainConfig settings (context, batch_size...)
    pretrain_seeds: int = 1  # backbones per variant (the run's first seeds)
    seeds: int = 3  # fine-tuning seeds per backbone (the run's first seeds)
    size: str = "4-4-128-512"  # backbone of Tables 8 and 9 (layers-heads-hidden-intermediate)
    sizes: list[str] = field(default_factory=lambda: ["4-4-128-512", "4-4-256-1024"])  # Table 10
    holdout_share: float = 0.2  # Table 8: share of the nodes held out of pre-training and of the labels
    holdout_nodes: list[str] = field(default_factory=list)  # Table 8: these nodes instead of a random share
    cache: str = ""  # backbone folder ("" = OUT/backbones)

    def validate(self) -> None:
        from netflowgen.train.pretrain import PRESETS
        if self.preset not in PRESETS:
            raise ValueError(f"ablations.preset = {self.preset!r}: expected one of {sorted(PRESETS)}")
        for s in [self.size, *self.sizes]:
            parse_size(s)
        if self.steps < 0 or self.pretrain_seeds < 1 or self.seeds < 1 or not 0 < self.holdout_share < 1:
            raise ValueError("ablations: steps >= 0, pretrain_seeds >= 1, seeds >= 1 and 0 < holdout_share < 1")


def parse_size(size: str) -> tuple[int, int, int, int]:
    """"4-4-128-512" -> (n_layers, n_heads, d_model, d_ff); the hidden size must split into the heads."""
    try:
        n_layers, n_heads, d_model, d_ff = (int(p) for p in size.split("-"))
    except ValueError:
        raise ConfigError(f"model size {size!r}: expected layers-heads-hidden-intermediate, e.g. 4-4-128-512") from None
    if min(n_layers, n_heads, d_model, d_ff) < 1 or d_model % n_heads:
        raise ConfigError(f"model size {size!r}: positive numbers, hidden size divisible by the heads")
    return n_layers, n_heads, d_model, d_ff


@dataclass(frozen=True)
class BackboneSpec:
    """Which backbone: named model configuration, size, pre-training seed, nodes held out of it."""

    model: str  # "paper" (86 input features) or "light" (6)
    size: str  # layers-heads-hidden-intermediate
    seed: int
    holdout: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        held = f"-holdout{len(self.holdout)}" if self.holdout else ""
        return f"{'light' if self.model == 'light' else 'full'}-{self.size}-s{self.seed}{held}"


@dataclass
class Backbone:
    """A cached pre-trained backbone: its folder and what pre-training reported."""

    spec: BackboneSpec
    path: Path  # a `netflowgen pretrain` folder (model.safetensors, config.json, binner.json)
    settings: dict[str, Any]  # the resolved PretrainConfig
    summary: dict[str, Any]  # train_summary.json: steps, best_val_loss, parameters, train_time_s...
    best_val: dict[str, float]  # val_loss, val_accuracy, val_perplexity of the best validation


def pretrain_settings(spec: BackboneSpec, cfg: AblationConfig, split: list[float]) -> Any:
    """The PretrainConfig of a backbone (see the module docstring for the precedence)."""
    from netflowgen.train.pretrain import PRESETS, PretrainConfig
    n_layers, n_heads, d_model, d_ff = parse_size(spec.size)
    over: dict[str, Any] = {"model": spec.model, "n_layers": n_layers, "n_heads": n_heads, "d_model": d_model,
                            "d_ff": d_ff, "seed": spec.seed, "train_fraction": float(split[0]),
                            "val_fraction": float(split[1])}
    if cfg.steps:
        over["max_steps"] = cfg.steps
    return PretrainConfig(**{**PRESETS[cfg.preset], **cfg.pretrain, **over})


def pretrained_backbone(spec: BackboneSpec, features: str | Path, cache: Path, cfg: AblationConfig,
                        split: list[float], log: Callable[[str], None] = print) -> Backbone:
    """The backbone of `spec` pre-trained on the node-minute table `features` (held-out nodes
    removed), from the cache when an identical one is there, else pre-trained now (minutes)."""
    from netflowgen.train.pretrain import pretrain

    pcfg = pretrain_settings(spec, cfg, split)
    src = Path(features).resolve()
    key: dict[str, Any] = {"settings": to_dict(pcfg), "holdout": sorted(spec.holdout), "features": str(src),
           "features_bytes": src.stat().st_size}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:8]
    d = cache / f"{spec.name}-{digest}"
    marker = d / ABLATION_FILE
    if not (marker.exists() and json.loads(marker.read_text()) == key and (d / "model.safetensors").exists()):
        if d.exists():
            shutil.rmtree(d)
        d.mkdir(parents=True)
        table: Path = src
        if spec.holdout:
            table = d / "features.parquet"
            _without_nodes(src, spec.holdout).write_parquet(table)
        log(f"  pre-training backbone {spec.name} ({pcfg.max_steps or 'preset'} steps) -> {d}")
        pretrain(table, d, pcfg, log=lambda s: None)
        shutil.rmtree(d / "tokens", ignore_errors=True)
        if spec.holdout:
            table.unlink()
        marker.write_text(json.dumps(key, indent=1))
    else:
        log(f"  backbone {spec.name}: cached at {d}")
    summary = json.loads((d / "train_summary.json").read_text())
    return Backbone(spec, d, key["settings"], summary, best_validation(d / "metrics.jsonl"))


def _without_nodes(path: Path, nodes: tuple[str, ...]) -> pl.DataFrame:
    """The table of `path` without `nodes`; refused if that shortens its minute range (the splits
    of the backbone and of the detectors would then disagree)."""
    df = pl.read_parquet(path)
    kept = df.filter(~pl.col("node").is_in(list(nodes)))
    if kept.height == 0:
        raise ConfigError("ablations: every node is held out of pre-training")
    span = [(t.get_column("minute").min(), t.get_column("minute").max()) for t in (df, kept)]
    if span[0] != span[1]:
        raise ConfigError(f"ablations: holding out {len(nodes)} node(s) changes the table's minute range "
                          f"{span[0]} -> {span[1]}; hold out others")
    return kept


def best_validation(metrics: Path) -> dict[str, float]:
    """val_loss, val_accuracy and val_perplexity of the lowest-loss validation in metrics.jsonl."""
    rows = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    vals = [r for r in rows if "val_loss" in r]
    if not vals:
        return {}
    best = min(vals, key=lambda r: r["val_loss"])
    return {k: float(best[k]) for k in ("val_loss", "val_accuracy", "val_perplexity")} | {"step": int(best["step"])}
