"""`experiment paper` machinery on a tiny synthetic ISP with the operator baselines (fast): every
part runs, the report carries its constants and the raw numbers round-trip through JSON."""

from __future__ import annotations

import json

import numpy as np
import pytest

from netflowgen.detect.earlydetect import EarlyDetectConfig
from netflowgen.detect.metrics import MetricConfig
from netflowgen.experiments.paper import PaperConfig, PaperRun
from netflowgen.experiments.report import write_report

from .synthetic import make_dataset


def test_paper_run_and_report(tmp_path) -> None:
    feats, alerts, truth = make_dataset(n_nodes=4, n_minutes=2400, attacks_per_node=8)
    feats.write_parquet(tmp_path / "f.parquet")
    alerts.write_csv(tmp_path / "a.csv")
    truth.write_csv(tmp_path / "t.csv")
    cfg = PaperConfig(features=str(tmp_path / "f.parquet"), alerts=str(tmp_path / "a.csv"),
                      truth=str(tmp_path / "t.csv"), length=64, seeds=[0, 1],
                      methods=["Static-EWMA", "CUSUM"], headline_labels="16", bounds=[0.5, 0.9],
                      attack_types=["udp"], label_curve=["8", "16"], label_curve_methods=["CUSUM"],
                      earlydetect=EarlyDetectConfig(window=64, horizon=10, margin=30, split=[0.6, 0.2]),
                      metrics=MetricConfig(warmup=8))
    run = PaperRun(cfg, log=lambda s: None)
    run.prepare()
    res = run.run()
    t5 = res["table5"]["CUSUM|16"]["aggregate"]
    assert t5["seeds"] == [0, 1] and t5["counts"]["fit"] + t5["counts"]["stop"] == 16
    # the table's mean ± sd is that of the per-seed runs it keeps, and the numbers mean something:
    # a static threshold catches 30x floods
    f1s = [r["test"]["f1"] for r in res["table5"]["CUSUM|16"]["runs"]]
    assert len(f1s) == 2 and t5["f1"][0] == pytest.approx(np.mean(f1s))
    assert t5["f1"][1] == pytest.approx(np.std(f1s, ddof=1))
    assert res["table5"]["Static-EWMA|16"]["aggregate"]["f1"][0] >= 0.9
    # Fig. 5 re-scores the same curves at other bounds without retraining
    assert {"CUSUM|0.5", "CUSUM|0.9"} <= set(res["fig5"])
    assert res["truth"]["cusum_onset_minus_true"]["n"] > 0
    # operator metrics of each headline detector, minute by minute on the test range, against truth
    op = {r["method"]: r for r in res["operator"]}
    assert set(op) == {"Static-EWMA", "CUSUM"} and op["Static-EWMA"]["attacks"] > 0
    assert op["Static-EWMA"]["detected_within_10min_pct"] >= 90
    for r in op.values():  # the same-rate comparison from the curve, which holds the tuned theta's point
        if r["false_alarms_per_node_day"] <= 2.0:
            assert r["within_2min_at_2_fa_pct"] >= r["detected_within_2min_pct"]
        assert r["within_2min_at_0.5_fa_pct"] <= r["within_2min_at_1_fa_pct"] <= r["within_2min_at_2_fa_pct"]
    # every test false positive classified against the truth; FPR against the alerts = the table's FPR
    for r in res["fpr_audit"]:
        assert r["false_positives"] == sum(r[k] for k in ("unalerted attack", "benign surge", "outage", "other"))
        run0 = res["table5"][f"{r['method']}|16"]["runs"][0]
        assert r["fpr_vs_alerts_pct"] == pytest.approx(run0["test"]["fpr_pct"])
        assert 0 <= r["fpr_vs_truth_pct"] <= 100
    # what the alert labels allow: here every alert is a true attack, so only negatives holding one cost
    c = res["f1_ceiling"]
    run0 = res["table5"]["CUSUM|16"]["runs"][0]
    assert c["positives"] + c["negatives"] == run0["counts"]["test"]
    assert c["positives_with_true_attack"] == c["positives"] > 0
    assert c["f1_ceiling_vs_alerts"] == pytest.approx(2 * c["positives"] / (2 * c["positives"]
                                                                          + c["negatives_with_true_attack"]))
    report = write_report(res, tmp_path / "rep", run)
    text = report.read_text()
    assert "What the alert labels allow" in text
    assert "## Operator metrics" in text and "## False positives against the ground truth" in text
    assert "Table 5" in text and "overhead bound p = 80%" in text and "fig5_violins.png" in text
    assert (tmp_path / "rep" / "report.html").read_text().count("<table>") >= 3
    back = json.loads((tmp_path / "rep" / "results.json").read_text())
    assert back["table5"]["CUSUM|16"]["runs"][1]["seed"] == 1


def test_tables_report_mean_and_sample_sd_over_seeds() -> None:
    from netflowgen.detect.pipeline import MethodResult
    from netflowgen.experiments.paper import aggregate, mean_std
    m, sd = mean_std([0.8, 0.9, float("nan")])  # a NaN (no detection to time) is left out
    assert m == pytest.approx(0.85) and sd == pytest.approx(np.std([0.8, 0.9], ddof=1))
    runs = [MethodResult("X", "16", "all", s, "train[16]", {"fit": 12}, 0.5, {}, {},
                         {k: v for k in ("effectiveness_pct", "overhead", "fpr_pct", "fnr_pct",
                                         "mitigation_abs_median_min")} | {"f1": f}, [], [], [], [], 0.0)
            for s, f, v in ((0, 0.7, 1.0), (1, 0.9, 3.0))]
    agg = aggregate(runs)
    assert agg["seeds"] == [0, 1] and agg["f1"] == pytest.approx((0.8, np.std([0.7, 0.9], ddof=1)))
    assert agg["overhead"] == pytest.approx((2.0, np.std([1.0, 3.0], ddof=1)))
