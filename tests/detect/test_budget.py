"""False-alarm budgets: the opening count equals the alert lifecycle's, and thresholds chosen on a
reference range keep its alerts within the budget (globally and per node), saved with the detector."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from netflowgen.detect.alerts import node_alerts
from netflowgen.detect.budget import alert_openings, budget_thresholds
from netflowgen.detect.cores import OperatorCore, ScoringData
from netflowgen.detect.cube import NodeMinuteCube
from netflowgen.detect.detector import Detector

from .synthetic import make_dataset


@pytest.mark.parametrize("seed", range(5))
def test_openings_equal_the_alert_lifecycle(seed) -> None:
    rng = np.random.default_rng(seed)
    n, T = 6, 400
    alarm = rng.random((n, T)) < rng.uniform(0.01, 0.2, (n, 1))
    missing = rng.random((n, T)) < 0.1
    minutes = np.arange(T, dtype=np.int64) * 60_000
    want = [len(node_alerts(minutes, np.zeros(T), alarm[i], missing[i], 5)) for i in range(n)]
    assert alert_openings(alarm, missing, 5).tolist() == want


def test_budget_thresholds_stay_within_the_budget() -> None:
    rng = np.random.default_rng(0)
    scores = rng.random((4, 2880)) ** np.array([[1], [3], [6], [10]])  # nodes that alarm more and more
    missing = np.zeros_like(scores, dtype=bool)
    for budget in (0.5, 1.0, 3.0):
        th = float(budget_thresholds(scores, missing, 0, 15, budget))
        per_day = alert_openings(scores < th, missing, 15).sum() / (scores.size / 1440)
        assert per_day <= budget
        per = budget_thresholds(scores, missing, 0, 15, budget, per_node=True)
        counts = alert_openings(scores < per[:, None], missing, 15) / 2.0
        assert (counts <= budget).all() and np.unique(per).size > 1  # each node its own threshold
    assert budget_thresholds(scores, missing, 0, 15, 3.0) >= budget_thresholds(scores, missing, 0, 15, 0.5)


def test_a_detector_with_a_budget_keeps_it_and_carries_it(tmp_path) -> None:
    feats, _, _ = make_dataset(n_nodes=4, n_minutes=2400, attacks_per_node=0)
    cube = NodeMinuteCube.from_table(feats)
    det = Detector("Static-percentile", OperatorCore("Static-percentile", 16, 4), 8, 2, theta=0.9)
    det.calibrate(ScoringData(cube), 0, 600, "training")
    th = det.set_fa_budget(feats, budget=1.0, reference=0.5)
    ref = feats.filter(pl.col("minute") < feats.get_column("minute").min() + pl.duration(minutes=1200))
    from netflowgen.detect.alerts import alerts_from_scores
    alerts = alerts_from_scores(det.score(ref), det.method)
    assert alerts.height / (4 * 1200 / 1440) <= 1.0 and float(th) == det.theta
    det.set_fa_budget(feats, budget=1.0, per_node=True, reference=0.5)
    own = det.core.calib["theta"].copy()
    det.save(tmp_path / "d")
    again = Detector.load(tmp_path / "d")
    np.testing.assert_array_equal(again.core.calib["theta"], own)
    assert again.score(ref)["alarm"].to_list() == det.score(ref)["alarm"].to_list()
    per_node = alerts_from_scores(again.score(ref), det.method).group_by("node").len()
    assert (per_node.get_column("len") / (1200 / 1440) <= 1.0).all()


def test_a_budget_on_nodes_never_seen_calibrates_them_on_the_whole_tables_reference() -> None:
    """New nodes are calibrated on the first `reference` share of the whole table, not of the
    reference slice the budget is chosen on (which would be 36 % of it)."""
    feats, _, _ = make_dataset(n_nodes=4, n_minutes=2400, attacks_per_node=0)
    cube = NodeMinuteCube.from_table(feats)

    def two_known() -> Detector:
        d = Detector("Static-percentile", OperatorCore("Static-percentile", 16, 4), 8, 2, theta=0.9)
        d.calibrate(ScoringData(cube), 0, 600, "training", rows=np.array([0, 1]))
        return d
    det, want = two_known(), two_known()
    det.set_fa_budget(feats, budget=1.0)
    want.calib_rows(ScoringData(cube))
    np.testing.assert_array_equal(det.core.calib["ref"], want.core.calib["ref"])
    assert det.node_source == ["training", "training", "reference", "reference"]


def test_known_attacks_are_masked_from_calibration_and_budget() -> None:
    """A reference range holding attacks (SPEC 14: "or with known attacks masked"): with the alert
    list given, the per-node levels are those of the attack-free minutes and the attacks spend no
    budget, so the threshold lets a 30x attack alarm; without it the attacks set both."""
    feats, alerts, _ = make_dataset(n_nodes=4, n_minutes=2400, attacks_per_node=6, factor=30.0)
    cube = NodeMinuteCube.from_table(feats)

    def fresh() -> Detector:
        return Detector("Static-percentile", OperatorCore("Static-percentile", 16, 4), 8, 2, theta=0.9)
    blind, masked = fresh(), fresh()
    blind.set_fa_budget(feats, budget=1.0, reference=0.6)
    masked.set_fa_budget(feats, budget=1.0, reference=0.6, known=alerts)
    # levels: the masked ones are those of the nodes' quiet minutes (the attacks are 30x them)
    assert (masked.core.calib["ref"] < blind.core.calib["ref"] / 5).all()
    vol = cube.values[:, :1440][..., [cube.features.index(c) for c in ("in_all_pkt", "in_all_byt", "in_all_flow")]]
    near = np.zeros((4, 1440), dtype=bool)  # within 30 minutes of an alert (start .. end)
    t0 = feats.get_column("minute").min()
    for ip, a, b in alerts.select("target_ip", "start", "end").iter_rows():
        lo, hi = int((a - t0).total_seconds() // 60), int((b - t0).total_seconds() // 60)
        near[int(ip.rsplit(".", 1)[1]), max(0, lo - 30):max(0, min(1440, hi + 31))] = True
    want = np.array([np.quantile(vol[r][~near[r]], 0.999, axis=0) for r in range(4)])
    np.testing.assert_allclose(masked.core.calib["ref"], np.maximum(want, 1.0), rtol=1e-5)
    assert masked.info["fa_budget"]["known_attacks_masked"] > 0 == blind.info["fa_budget"]["known_attacks_masked"]
    # the attacks of the test range (the last 40 %) alarm with the masked calibration only
    sc_m, sc_b = masked.score(cube), blind.score(cube)
    onsets = alerts.filter(pl.col("start") >= feats.get_column("minute").min() + pl.duration(minutes=1500))
    hit_m = hit_b = 0
    for ip, start in onsets.select("target_ip", "start").iter_rows():
        at = (pl.col("node") == ip) & (pl.col("minute") >= start) & (pl.col("minute") < start + pl.duration(minutes=10))
        hit_m += bool(sc_m.filter(at)["alarm"].any())
        hit_b += bool(sc_b.filter(at)["alarm"].any())
    assert hit_m == onsets.height and hit_b < onsets.height


def test_masked_minutes_spend_no_budget() -> None:
    rng = np.random.default_rng(1)
    scores = 0.5 + 0.5 * rng.random((3, 2880))
    scores[:, 100:130] = 1e-9  # a burst on every node: one alert each if it counted
    missing = np.zeros_like(scores, dtype=bool)
    mask = np.zeros_like(missing)
    mask[:, 90:140] = True
    strict = float(budget_thresholds(scores, missing, 0, 15, 0.25))
    assert strict <= 1e-9  # two days, 0.25 per day: the burst's alert would overspend
    assert float(budget_thresholds(scores, missing, 0, 15, 0.25, masked=mask)) > 0.5


def test_a_shorter_scoring_length_ends_alerts_with_the_attack(tmp_path) -> None:
    """`set_length`: each score aggregates the last N minutes instead of the evaluated length, the
    old per-node thresholds are dropped, and the saved detector scores with the new length; a
    40-minute attack then alarms for about 40 + N minutes instead of 40 + 128."""
    from typer.testing import CliRunner

    from netflowgen.cli.main import app
    from netflowgen.detect.anchored import sliding_score
    feats, alerts, _ = make_dataset(n_nodes=3, n_minutes=2400, attacks_per_node=4, factor=30.0)
    cube = NodeMinuteCube.from_table(feats)
    det = Detector("Static-percentile", OperatorCore("Static-percentile", 256, 128), 128, 8, theta=0.5)
    det.calibrate(ScoringData(cube), 0, 1440, "training")
    det.set_fa_budget(feats, 1.0, per_node=True, known=alerts)
    long = det.score(cube)
    det.set_length(4)
    assert "theta" not in det.core.calib and det.info["length_changed"] == {"evaluated_length": 128, "length": 4}
    det.set_fa_budget(feats, 1.0, known=alerts)
    short = det.score(cube)
    data, rows = det.prepare(cube)
    x = det.intensities(data, rows, np.arange(3), np.broadcast_to(np.arange(2400), (3, 2400)))
    np.testing.assert_allclose(short["score"].to_numpy().reshape(3, 2400), sliding_score(x, 4, "max"))
    assert short["alarm"].sum() < long["alarm"].sum() / 2 and short["alarm"].sum() >= 12 * 40
    det.save(tmp_path / "short")
    assert Detector.load(tmp_path / "short").score(cube)["alarm"].to_list() == short["alarm"].to_list()
    # the CLI refuses a new length without a new threshold, in one line
    det2 = Detector("Static-percentile", OperatorCore("Static-percentile", 256, 128), 128, 8, theta=0.5)
    det2.calibrate(ScoringData(cube), 0, 1440, "training")
    det2.save(tmp_path / "d")
    feats.write_parquet(tmp_path / "f.parquet")
    r = CliRunner().invoke(app, ["detect", "-d", str(tmp_path / "d"), str(tmp_path / "f.parquet"), "--out",
                                 str(tmp_path / "a.csv"), "--length", "4"])
    assert r.exit_code != 0 and "--fa-budget" in str(r.exception)  # main() prints it as one line
    r = CliRunner().invoke(app, ["detect", "-d", str(tmp_path / "d"), str(tmp_path / "f.parquet"), "--out",
                                 str(tmp_path / "a.csv"), "--length", "4", "--fa-budget", "1", "--calibrate-out",
                                 str(tmp_path / "d4")])
    assert r.exit_code == 0, r.output
    assert Detector.load(tmp_path / "d4").length == 4
