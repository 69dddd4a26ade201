"""`evaluate-pretrain`: the pre-trained model next to the bigram baselines on each split (Table 4)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

from netflowgen.evaluate.pretrain_metrics import Bigram, evaluation_windows, score_model, table4
from netflowgen.model.device import autocast, resolve_device
from netflowgen.model.io import load_pretrained
from netflowgen.progress import progress_bar
from netflowgen.tokens import TokenData, time_splits


@dataclass
class EvaluateConfig:
    """Settings of `netflowgen evaluate-pretrain`."""

    splits: tuple[str, ...] = ("val", "test")
    batch_size: int = 32  # windows per forward pass
    max_windows: int = 0  # 0 = score every target; > 0 = a fixed random subset of windows
    device: str = "auto"
    precision: str = "fp32"  # fp32 or bf16 (autocast)
    threads: int = 0


def evaluate_pretrain(model_dir: str | Path, features: str | Path | None = None,
                      cfg: EvaluateConfig = EvaluateConfig()) -> dict[str, Any]:
    """Scores of a `netflowgen pretrain` output on the requested splits.

    Parameters
    ----------
    model_dir : folder written by `netflowgen pretrain` (or `save_pretrained` plus a tokens/ folder).
    features : node-minute Parquet to evaluate instead of the model's own tokens (tokenized with
        the model's binner; splits by the model's fractions).

    Returns
    -------
    dict
        {split: {"model" | "bigram_pooled" | "bigram_per_node": {"loss", "perplexity", "accuracy",
        "targets", "groups": {group: {...}}}}}, plus "baseline" per split (the stronger bigram).
    """
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.device)
    gen = load_pretrained(model_dir, device=device)
    if features is not None:
        data = TokenData.build(features, gen.binner, None, gen.config.get("time_zone", "UTC"))
    else:
        tok_dir = Path(model_dir) / "tokens"
        if not (tok_dir / "index.json").exists():
            raise FileNotFoundError(f"{tok_dir} not found: pass --features")
        data = TokenData.load(tok_dir)
    splits = time_splits(data.n_minutes, *gen.split)
    predicted = gen.model.cfg.predicted_features
    tr_lo, tr_hi = splits["train"]
    bigrams = {"bigram_pooled": Bigram.fit(data, tr_lo, tr_hi, per_node=False),
               "bigram_per_node": Bigram.fit(data, tr_lo, tr_hi, per_node=True)}
    amp = (lambda: autocast(device, "bf16")) if cfg.precision == "bf16" else None
    result: dict[str, Any] = {"splits": {k: list(v) for k, v in splits.items()}, "nodes": len(data.nodes)}
    with progress_bar("evaluating", total=len(cfg.splits)) as advance:
        for split in cfg.splits:
            lo, hi = splits[split]
            kw: dict[str, Any] = {"amp": amp} if amp else {}
            scores = {"model": score_model(gen.model, data, lo, hi, batch=cfg.batch_size,
                                           max_windows=cfg.max_windows, **kw)}
            wins = evaluation_windows(data, lo, hi, gen.model.cfg.context, cfg.max_windows)  # the same targets
            for name, bg in bigrams.items():
                scores[name] = bg.score(data, lo, hi, predicted, wins)
            result[split] = {name: {**s.summary(), "groups": s.by_group()} for name, s in scores.items()}
            best = min(bigrams, key=lambda n: result[split][n]["loss"])
            result[split]["baseline"] = best
            advance(1)
    return result


def format_report(result: dict[str, Any], splits: Sequence[str]) -> str:
    """Table 4 per split (pre-trained vs bigram baselines), then loss per feature group."""
    names = {"model": "Pre-trained", "bigram_pooled": "Bigram (pooled)", "bigram_per_node": "Bigram (per node)"}
    parts = []
    for split in splits:
        r = result[split]
        rows = {names[k]: r[k] for k in names}
        title = (f"Table 4. Pre-training results of next traffic prediction ({split}, "
                 f"{r['model']['targets']:,} node-minute-feature targets)")
        parts.append(table4(rows, title))
        parts.append(f"baseline to beat: {names[r['baseline']]}; pre-trained "
                     f"{'beats' if r['model']['loss'] < r[r['baseline']]['loss'] else 'does NOT beat'} it on loss")
        g_lines = [f"{'group':<10}{'model loss':>12}{'bigram loss':>13}{'model acc':>11}{'bigram acc':>12}"]
        for g, s in r["model"]["groups"].items():
            b = r[r["baseline"]]["groups"][g]
            g_lines.append(f"{g:<10}{s['loss']:>12.4f}{b['loss']:>13.4f}{s['accuracy']:>11.4f}{b['accuracy']:>12.4f}")
        parts.append("\n".join(g_lines))
    return "\n\n".join(parts)
