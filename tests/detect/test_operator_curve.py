"""The operator curve: operator metrics over thresholds, and the comparison at one false-alarm rate."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest

from netflowgen.detect.alerts import AlertConfig, alerts_from_scores
from netflowgen.detect.operator_curve import at_false_alarm_rate, curve_thresholds, operator_curve
from netflowgen.detect.operator_metrics import operator_metrics

T0 = 1_704_067_200_000  # 2024-01-01 UTC, ms


def frame(score: np.ndarray) -> pl.DataFrame:
    """A Detector.score-shaped frame of scores (n, T), nodes 10.0.0.<i>."""
    n, T = score.shape
    return pl.DataFrame({
        "node": np.repeat([f"10.0.0.{i}" for i in range(n)], T),
        "customer": "c",
        "minute": pl.Series(np.tile(T0 + 60_000 * np.arange(T), n)).cast(pl.Datetime("ms", "UTC")),
        "missing": np.zeros(n * T, dtype=bool),
        "score": score.reshape(-1),
    })


@pytest.fixture()
def case() -> tuple[pl.DataFrame, pl.DataFrame]:
    rng = np.random.default_rng(0)
    n, T = 4, 2 * 1440
    score = rng.uniform(0.05, 1.0, (n, T))
    noise = rng.random((n, T)) < 0.002  # benign dips
    score[noise] = rng.uniform(0.001, 0.02, noise.sum())
    onsets = [(0, 300), (1, 900), (2, 1500), (3, 2100), (0, 2500)]
    for r, a in onsets:  # attacks: a weak first minute, then deep dips
        score[r, a] = 0.03
        score[r, a + 1:a + 8] = 0.0005
    truth = pl.DataFrame({"target_ip": [f"10.0.0.{r}" for r, _ in onsets],
                          "onset": [T0 + 60_000 * a for _, a in onsets],
                          "end": [T0 + 60_000 * (a + 8) for _, a in onsets]}).with_columns(
        pl.col("onset").cast(pl.Datetime("ms", "UTC")), pl.col("end").cast(pl.Datetime("ms", "UTC")))
    return frame(score), truth


def test_a_curve_point_is_the_operator_metrics_at_its_threshold(case) -> None:
    scores, truth = case
    curve = operator_curve(scores, truth, "X", clear_after=15)
    assert curve.height > 10 and curve.get_column("theta").is_sorted()
    for th in curve.get_column("theta").to_list()[::17]:
        alarmed = scores.with_columns((pl.col("score") < th).alias("alarm"))
        m = operator_metrics(alarmed, alerts_from_scores(alarmed, "X", AlertConfig(15)), truth).summary()
        row = curve.filter(pl.col("theta") == th).row(0, named=True)
        for k in ("false_alarms_per_node_day", "detected_within_2min_pct", "alarmed_attack_free_pct"):
            assert row[k] == pytest.approx(m[k]), k
    # a higher threshold alarms at every minute a lower one did: no attack is found later
    for k in (1, 2, 5, 10):
        assert curve.get_column(f"detected_within_{k}min_pct").is_sorted()


def test_at_false_alarm_rate_is_the_best_quiet_enough_point(case) -> None:
    scores, truth = case
    curve = operator_curve(scores, truth, "X")
    fa, d2 = curve.get_column("false_alarms_per_node_day"), curve.get_column("detected_within_2min_pct")
    assert d2.max() == pytest.approx(100.0) and fa.max() > 2  # the sweep reaches every attack and many alarms
    for rate in (0.0, 0.5, 1.0, 3.0):
        ok = fa <= rate
        want = float(d2.filter(ok).max()) if ok.any() else math.nan
        got = at_false_alarm_rate(curve, rate)
        assert (math.isnan(got) and math.isnan(want)) or got == pytest.approx(want)
    assert at_false_alarm_rate(curve, 1.0) <= at_false_alarm_rate(curve, 3.0)
    assert math.isnan(at_false_alarm_rate(curve.head(0), 1.0))


def test_eligible_minutes_bound_the_alarms(case) -> None:
    """Minutes marked not eligible (a reference range) never alarm, whatever the threshold."""
    scores, truth = case
    T = 2 * 1440
    elig = np.tile(np.arange(T) >= T // 2, 4)
    curve = operator_curve(scores.with_columns(pl.Series("eligible", elig)), truth, "X",
                           thresholds=np.array([1.01]))  # every eligible minute alarms
    (row,) = curve.to_dicts()
    assert row["detected_within_1min_pct"] == pytest.approx(60.0)  # the 3 of 5 attacks after the middle
    ths = curve_thresholds(scores.get_column("score").to_numpy(), elig)
    assert ths[0] == scores.get_column("score").to_numpy()[elig].min()  # the zero point: no alarm at all
    (zero,) = operator_curve(scores.with_columns(pl.Series("eligible", elig)), truth, "X", thresholds=ths[:1]).to_dicts()
    assert zero["false_alarms_per_node_day"] == 0 and zero["detected_within_10min_pct"] == 0
    assert curve_thresholds(np.ones(3), np.zeros(3, bool)).size == 0
