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
