"""How hard is a simulated ISP? The difficulty figure is Table 5's Static-EWMA row, computed by the
same code as `netflowgen experiment paper`: features (Polars) -> EarlyDetect examples (SPEC 9) ->
the FastNetMon-style per-node EWMA threshold (levels fitted on each node's training range) ->
threshold chosen on the headline label regime for the overhead bound -> F1 on the test split.

So the simulator's difficulty and the operator baseline of the report measure one thing, with the
same splits, examples and threshold rule (there used to be a second, simpler static-threshold
implementation here; it scored other windows and another threshold grid).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import polars as pl

from netflowgen.detect.earlydetect import EarlyDetectConfig
from netflowgen.detect.metrics import MetricConfig

if TYPE_CHECKING:
    from netflowgen.simulate.config import SimConfig

METHOD = "Static-EWMA"


@dataclass
class DifficultyReport:
    """Test F1 of the static threshold, its validation F1 at the chosen theta, and the examples."""

    test_f1: float
    val_f1: float
    theta: float
    windows: dict[str, int]
    method: str = METHOD
    labels: str = "360"
    test: dict[str, float] = field(default_factory=dict)  # every test metric of the row


def measure(sim_dir: str | Path, seed: int = 0, labels: str = "360", length: int = 128,
            earlydetect: EarlyDetectConfig | None = None, metrics: MetricConfig | None = None) -> DifficultyReport:
    """The difficulty of a simulator output folder (flows.parquet, customers.csv, alerts.csv).

    Defaults are `experiment paper`'s: 512-minute examples of which the detector sees the last
    128, 360 labels drawn with `seed` from the train split, overhead bound 80 %."""
    from netflowgen.detect.cube import NodeMinuteCube
    from netflowgen.detect.earlydetect import build_earlydetect
    from netflowgen.detect.pipeline import DetectionContext, fit_curves, score
    from netflowgen.features.build import build_features
    from netflowgen.features.settings import FeatureConfig

    d = Path(sim_dir)
    ed = earlydetect or EarlyDetectConfig(seed=seed)
    with tempfile.TemporaryDirectory(prefix="netflowgen-difficulty-") as tmp:
        feats_path = Path(tmp) / "features.parquet"
        build_features([d / "flows.parquet"], feats_path, FeatureConfig(customers=str(d / "customers.csv")))
        feats = pl.read_parquet(feats_path)
    cube = NodeMinuteCube.from_table(feats)
    examples = build_earlydetect(cube, pl.read_csv(d / "alerts.csv"), ed).examples
    ctx = DetectionContext.build(cube, examples, ed.window, min(length, ed.window), None, ed.split)
    res = score(ctx, fit_curves(ctx, METHOD, labels, seed), metrics or MetricConfig())
    ex = ctx.examples
    windows = {f"{sp}_{'attack' if lab else 'normal'}": ex.filter((pl.col("split") == sp) & (pl.col("label") == lab)).height
               for sp in ("train", "val", "test") for lab in (1, 0)}
    return DifficultyReport(float(res.test["f1"]), float(res.validation["f1"]), res.theta, windows, METHOD,
                            labels, dict(res.test))


def measure_config(cfg: "SimConfig", seed: int = 0, labels: str = "360", length: int = 128,
                   earlydetect: EarlyDetectConfig | None = None) -> DifficultyReport:
    """`measure` of a configuration: simulated into a temporary folder first."""
    from netflowgen.simulate import simulate

    with tempfile.TemporaryDirectory(prefix="netflowgen-sim-") as tmp:
        simulate(cfg, tmp)
        return measure(tmp, seed, labels, length, earlydetect)
