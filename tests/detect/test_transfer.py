"""`netflowgen experiment transfer`, benchmark (a): a detector built on one tiny simulated ISP scored
on another it never saw (new nodes onboarded on their reference range, theta by the budget)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from netflowgen.cli.main import app
from netflowgen.detect.cores import OperatorCore, ScoringData
from netflowgen.detect.cube import NodeMinuteCube
from netflowgen.detect.detector import Detector
from netflowgen.experiments.transfer import IspBenchmark, TransferConfig, build_isp, evaluate, run_transfer

TINY = IspBenchmark(seed=3, nodes=6, customers=2, days=0.2, difficulty=0.3, attacks_per_day=60)


@pytest.fixture(scope="module")
def detector(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("transfer")
    feats, _ = build_isp(IspBenchmark(seed=11, nodes=6, customers=2, days=0.1), d / "train", log=lambda s: None)
    det = Detector("Static-percentile", OperatorCore("Static-percentile", 16, 4), 8, 2, theta=0.05)
    det.calibrate(ScoringData(NodeMinuteCube.read(feats)), 0, 60, "training")
    return det.save(d / "det")


def test_isp_benchmark_report(detector: Path, tmp_path: Path) -> None:
    cfg = TransferConfig(benchmarks=["isp"], isp=TINY)
    res = run_transfer([detector], tmp_path / "report", cfg, log=lambda s: None)
    md = (tmp_path / "report" / "transfer.md").read_text()
    assert "Second simulated ISP" in md and "| Static-percentile |" in md
    saved = json.loads((tmp_path / "report" / "results.json").read_text())
    (row,) = saved["benchmarks"]["isp"]["rows"]
    assert row == json.loads(json.dumps(res["benchmarks"]["isp"]["rows"][0]))
    assert row["method"] == "Static-percentile" and row["attacks"] > 0
    assert row["onboarded_nodes"] == row["nodes"] == 6  # every node is new to the detector
    for k in ("detected_within_1min_pct", "detected_within_2min_pct", "detected_within_5min_pct",
              "detected_within_10min_pct", "false_alarms_per_node_day", "alarmed_attack_free_pct", "theta"):
        assert isinstance(row[k], float) and math.isfinite(row[k]), k
    assert row["detected_within_1min_pct"] <= row["detected_within_10min_pct"] <= 100
    assert 0 <= row["theta"] <= 1
    # the operator curve holds the budgeted operating point, and the comparison at a rate reads it
    (point,) = [c for c in row["curve"] if c["theta"] == row["theta"]]
    for k in ("false_alarms_per_node_day", "detected_within_2min_pct"):
        assert point[k] == pytest.approx(row[k]), k
    fa = row["false_alarms_per_node_day"]
    if fa <= 2.0:
        assert row["within_2min_at_2_fa_pct"] >= row["detected_within_2min_pct"]
    assert "At the same false-alarm rate" in md and "![operator curves, isp](curve_isp.png)" in md
    assert (tmp_path / "report" / "curve_isp.png").stat().st_size > 1000


def test_theta_matches_set_fa_budget(detector: Path, tmp_path: Path) -> None:
    """On one grid (the ISP), onboarding + the budget's theta are those of calib_rows + set_fa_budget."""
    from netflowgen.detect.io import read_table
    feats, truth = build_isp(TINY, tmp_path / "isp", log=lambda s: None)
    cube = NodeMinuteCube.read(feats)
    ours = evaluate(Detector.load(detector), cube, read_table(truth), 1.0, 0.6, own=False)
    ref = Detector.load(detector)
    ref.calib_rows(ScoringData(cube))  # onboard on the whole table's first 60 % (set_fa_budget alone would
    th = float(ref.set_fa_budget(cube, 1.0))  # calibrate unseen nodes on 60 % of its 60 % reference slice)
    assert ours["theta"] == pytest.approx(th)
    # and the nodes were calibrated on the same range: identical per-node statistics
    det = Detector.load(detector)
    evaluate(det, cube, read_table(truth), 1.0, 0.6, own=False)
    for k, v in ref.core.calib.items():
        np.testing.assert_allclose(det.core.calib[k], v)


def test_cli_skips_absent_real_data(detector: Path, tmp_path: Path) -> None:
    r = CliRunner().invoke(app, ["experiment", "transfer", "--detectors", str(detector), "--out", str(tmp_path / "r"),
                                 "--benchmarks", "splice", "--real", str(tmp_path / "nowhere")])
    assert r.exit_code == 0, r.output
    assert "Skipped:" in r.output and "absent" in r.output


def test_only_test_range_attacks_are_counted(detector: Path, tmp_path: Path) -> None:
    """Attacks whose onset lies in a node's reference range carry no alarm there; counting them
    counted them as missed (the second ISP: 269 counted, 104 scoreable)."""
    import polars as pl

    from netflowgen.detect.io import read_table
    from netflowgen.detect.operator_metrics import attacks_table
    feats, truth = build_isp(TINY, tmp_path / "isp", log=lambda s: None)
    cube = NodeMinuteCube.read(feats)
    att = attacks_table(read_table(truth)).filter(pl.col("target_ip").is_in(list(cube.nodes)))
    split = int(cube.minutes[int(round(0.6 * len(cube.minutes)))])
    in_test = att.filter(pl.col("onset").dt.epoch("ms") >= split).height
    assert 0 < in_test < att.height
    row = evaluate(Detector.load(detector), cube, read_table(truth), 1.0, 0.6, own=False)
    assert row["attacks"] == in_test
    masked = evaluate(Detector.load(detector), cube, read_table(truth), 1.0, 0.6, own=False,
                      known=read_table(truth.parent / "alerts.csv"))
    assert masked["attacks"] == in_test and masked["masked_reference_minutes"] > 0 == row["masked_reference_minutes"]

