"""The notebook API: one function per stage (named so none shadows a subpackage: `simulate_isp`,
`build_features`), taking tables or paths (docs/api.md walks through it).

    import netflowgen as nfg
    sim = nfg.simulate_isp("sim/", nodes=12, days=2)
    table = nfg.build_features(sim / "flows.parquet", "features.parquet", customers=sim / "customers.csv")
    gen = nfg.pretrain("features.parquet", "model/", preset="demo", max_steps=50)
    examples = nfg.earlydetect("features.parquet", sim / "alerts.csv", "ed/")
    det = nfg.fit("NetFlowGen", "features.parquet", examples, model="model/")
    scores = nfg.score(det, table)
    alerts = nfg.alerts(det, scores)

Each function is a thin layer over the stage's own code, with the same settings classes as the CLI.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl


def simulate_isp(out: str | Path, nodes: int = 60, customers: int = 10, days: float = 4.0, seed: int = 0,
             **settings: Any) -> Path:
    """Simulate an ISP into folder `out` (flows.parquet, customers.csv, alerts.csv, truth.csv, ...).
    `settings`: further SimConfig sections as dicts, e.g. events={"attacks_per_day": 70}."""
    from netflowgen import config as cfgmod
    from netflowgen.simulate import SimConfig
    from netflowgen.simulate import simulate as run
    over = cfgmod.merge({"seed": seed, "topology": {"nodes": nodes, "customers": customers}, "time": {"days": days}},
                        settings)
    run(cfgmod.load(SimConfig, None, over), out)
    return Path(out)


def build_features(flows: str | Path, out: str | Path, customers: str | Path | None = None, **settings: Any) -> pl.DataFrame:
    """Canonical flows -> the dense node-minute table (written to `out` and returned)."""
    from netflowgen import config as cfgmod
    from netflowgen.features.build import build_features as build
    from netflowgen.features.settings import FeatureConfig
    cfg = cfgmod.load(FeatureConfig, None, {**settings, **({"customers": str(customers)} if customers else {})})
    build([flows], out, cfg)
    return pl.read_parquet(out)


def pretrain(features: str | Path, out: str | Path, preset: str | None = "demo", **settings: Any) -> Any:
    """Pre-train a model on a node-minute table; returns the NetFlowGen (also saved in `out`)."""
    from netflowgen import config as cfgmod
    from netflowgen.api import NetFlowGen
    from netflowgen.train.pretrain import PRESETS, PretrainConfig
    from netflowgen.train.pretrain import pretrain as run
    cfg = cfgmod.load(PretrainConfig, None, settings, preset=PRESETS[preset] if preset else None)
    run(features, out, cfg, log=lambda s: None)
    return NetFlowGen.from_pretrained(out)


def earlydetect(features: str | Path, alerts: str | Path, out: str | Path, truth: str | Path | None = None,
                **settings: Any) -> pl.DataFrame:
    """Labelled attack / non-attack windows (SPEC 9) of a node-minute table and an alert list;
    written to out/examples.parquet and returned. `settings`: EarlyDetectConfig fields."""
    from netflowgen import config as cfgmod
    from netflowgen.detect.earlydetect import EarlyDetectConfig
    from netflowgen.detect.stages import run_earlydetect
    cfg = cfgmod.load(EarlyDetectConfig, None, settings)
    run_earlydetect(Path(features), Path(alerts), Path(out), cfg, Path(truth) if truth else None)
    return pl.read_parquet(Path(out) / "examples.parquet")


def fit(method: str, features: str | Path | pl.DataFrame, examples: str | Path | pl.DataFrame,
        model: str | Path | None = None, labels: str | int = "360", window: int | None = None,
        length: int = 128, seed: int = 0, **settings: Any) -> Any:
    """Train (operator baselines: fit) a detector on a label regime, choose its threshold on that
    regime's labels, evaluate it on the test split; returns the Detector (test metrics in
    `detector.info["test"]`). `settings`: FinetuneRun fields (finetune={...}, metrics={...})."""
    from netflowgen.detect.stages import fit_detector
    return fit_detector(method, features, examples, model, labels, window, length, seed, **settings)


def score(detector: Any, table: str | Path | pl.DataFrame) -> pl.DataFrame:
    """Every node's score at every minute (`Detector.score`); `detector` a Detector or its folder."""
    from netflowgen.detect.detector import Detector
    det = detector if isinstance(detector, Detector) else Detector.load(detector)
    return det.score(table if isinstance(table, pl.DataFrame) else pl.read_parquet(table))


def alerts(detector: Any, scores: pl.DataFrame, clear_after: int = 15) -> pl.DataFrame:
    """Alerts with a lifecycle from minute scores (`detect.alerts`)."""
    from netflowgen.detect.alerts import AlertConfig, alerts_from_scores
    return alerts_from_scores(scores, getattr(detector, "method", str(detector)), AlertConfig(clear_after))
