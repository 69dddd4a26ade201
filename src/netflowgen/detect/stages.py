"""The detection stages as functions of paths, shared by the commands (`netflowgen earlydetect`,
`netflowgen finetune`, `netflowgen demo`) and the notebook API: EarlyDetect examples written to a
folder, and a detector fine-tuned, evaluated and saved."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from netflowgen.detect.finetune import FinetuneConfig
from netflowgen.detect.metrics import MetricConfig


@dataclass
class FinetuneRun:
    method: str = "NetFlowGen"  # or any of detect.cores.ALL_METHODS (NetFlowGen+surprisal, MS-LSTM, CUSUM, ...)
    labels: str = "360"  # "val" (the validation split), "all" (train split), or a count drawn from train
    attack_type: str = "all"
    seed: int = 0
    window: int = 0  # minutes per example in the examples file; 0 = the examples' own (earlydetect's window)
    length: int = 128  # minutes each detector sees (the last ones)
    split: list[float] = field(default_factory=list)  # [] = the pre-trained model's (or the default)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    metrics: MetricConfig = field(default_factory=MetricConfig)

    def validate(self) -> None:
        from netflowgen.detect.cores import ALL_METHODS
        if self.method not in ALL_METHODS:
            raise ValueError(f"method = {self.method!r}; known: {', '.join(ALL_METHODS)}")
        if self.window < 0 or not 1 <= self.length <= (self.window or self.length):
            raise ValueError(f"length ({self.length}) must be in 1..window ({self.window}), window >= 0")
        if self.split and len(self.split) != 2:
            raise ValueError(f"split = {self.split}: [train, validation] fractions")
        self.finetune.validate()
        self.metrics.validate()



def run_earlydetect(features: Path, alerts: Path, out: Path, cfg, truth: Path | None = None) -> dict:
    """Build and write the examples; print Table 2. Returns the summary written to summary.json."""

    from netflowgen import config as cfgmod
    from netflowgen.detect.cube import NodeMinuteCube
    from netflowgen.detect.earlydetect import build_earlydetect, table2
    from netflowgen.detect.io import print_table, read_table
    from netflowgen.schema import FEATURE_SET_HASH
    from netflowgen.sources.text import require_columns

    al = read_table(alerts)
    require_columns(str(alerts), al.columns, ["target_ip", "start", "end", "attack_type"])
    cube = NodeMinuteCube.read(features)
    res = build_earlydetect(cube, al, cfg, read_table(truth) if truth else None)
    out.mkdir(parents=True, exist_ok=True)
    res.examples.write_parquet(out / "examples.parquet")
    t2 = table2(res.examples)
    t2.write_csv(out / "table2.csv")
    summary = {"examples": res.examples.height, "dropped": res.dropped,
               "splits": {k: list(v) for k, v in res.bounds.items()}, "features": str(features),
               "alerts": str(alerts), "feature_set_hash": FEATURE_SET_HASH, "table2": t2.to_dicts(),
               "attack_onset_minus_true": _onset_errors(res.examples)}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    cfgmod.save_beside(out, cfg)
    print_table(t2, "EarlyDetect examples (paper Table 2 layout)")
    return summary


def _onset_errors(ex) -> dict | None:
    import numpy as np
    import polars as pl

    a = ex.filter((pl.col("label") == 1) & (pl.col("true_onset_t") >= 0))
    if a.height == 0:
        return None
    d = (a.get_column("onset_t") - a.get_column("true_onset_t")).to_numpy()
    return {"n": int(d.size), "median": float(np.median(d)), "mean_abs": float(np.abs(d).mean()),
            "share_within_2min": float(np.mean(np.abs(d) <= 2))}


def run_finetune(cfg: FinetuneRun, examples: Path, features: Path, out: Path, model: Path | None = None):
    """Fine-tune, score and save (detector weights for learned methods, result.json, config)."""

    from netflowgen import config as cfgmod
    from netflowgen.detect.io import print_table, read_parquet

    cs, res = _fit_and_score(cfg, read_parquet(features), read_parquet(examples), model)
    out.mkdir(parents=True, exist_ok=True)
    cs.detector.info.update({"features": str(features), "examples": str(examples), "model": str(model or "")})
    cs.detector.save(out)
    (out / "result.json").write_text(json.dumps(res.to_json(), indent=1, default=str))
    cfgmod.save_beside(out, cfg)
    m = cfg.metrics
    print_table([{"method": cfg.method, "labels": f"{cfg.labels} ({res.regime})", **{k: v for k, v in res.test.items()}}],
                f"test metrics (p={m.overhead_bound:.0%}, B={m.overhead_budget}, D={m.mitigation_minutes} min, "
                f"volume={m.volume}, theta={res.theta:.3g})")
    return res


def fit_detector(method: str, features: str | Path | pl.DataFrame, examples: str | Path | pl.DataFrame,
                 model: str | Path | None = None, labels: str | int = "360", window: int | None = None,
                 length: int = 128, seed: int = 0, **settings: Any) -> Any:
    """Train (operator baselines: fit) a detector on a label regime, choose its threshold on that
    regime's labels, evaluate it on the test split; returns the Detector (test metrics in
    `detector.info["test"]`). `settings`: FinetuneRun fields (finetune={...}, metrics={...})."""
    from netflowgen import config as cfgmod
    from netflowgen.detect.io import read_parquet
    feats = features if isinstance(features, pl.DataFrame) else read_parquet(features)
    ex = examples if isinstance(examples, pl.DataFrame) else read_parquet(examples)
    cfg = cfgmod.load(FinetuneRun, None, {"method": method, "labels": str(labels), "seed": seed, "window": window or 0,
                                          "length": length, **settings})
    return _fit_and_score(cfg, feats, ex, model)[0].detector


def _fit_and_score(cfg: FinetuneRun, feats: pl.DataFrame, examples: pl.DataFrame, model: str | Path | None
                   ) -> tuple[Any, Any]:
    """(CurveSet, MethodResult) of `cfg`'s method on the examples: the one training path of
    `finetune` and the notebook (split [] or None: the pre-trained model's)."""
    from netflowgen.detect.cube import NodeMinuteCube
    from netflowgen.detect.pipeline import DetectionContext, fit_curves, load_pretrained, score
    cube = NodeMinuteCube.from_table(feats)
    cfg.window = examples_fit_features(cfg.window, cfg.length, examples, len(cube.minutes))
    pre = load_pretrained(model) if model else None
    ctx = DetectionContext.build(cube, examples, cfg.window, cfg.length, pre,
                                 cfg.split or None, feats)
    cs = fit_curves(ctx, cfg.method, cfg.labels, cfg.seed, cfg.attack_type, cfg.finetune)
    return cs, score(ctx, cs, cfg.metrics)


def examples_fit_features(window: int, length: int, examples: pl.DataFrame, n_minutes: int) -> int:
    """The examples' window (`window`, or 0 = their own), checked against their labels and against
    the `n_minutes` of the node-minute table they index: a wrong window would crop every example at the wrong minutes."""
    from netflowgen.detect.earlydetect import example_window
    from netflowgen.rejects import InputError
    own = example_window(examples)
    if window and window != own:
        raise InputError(f"window = {window}, but the examples are {own}-minute windows (earlydetect's window); "
                         "leave window unset (0) to use theirs")
    if length > own:
        raise InputError(f"length = {length} minutes is longer than the examples' {own}-minute windows")
    last = int(examples.get_column("start").to_numpy().max()) + own
    if last > n_minutes:
        raise InputError(f"the examples reach minute {last} but the features table has {n_minutes} minutes: "
                         "they were built from another table")
    return own
