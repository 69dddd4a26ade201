"""The operator curve: share of attacks detected early against false alarms per node-day, over thresholds.

A false-alarm budget picks one point of this curve on the reference range; where the new traffic
differs from it, the point lands at another false-alarm rate than budgeted, and two detectors
compared at their budgeted thresholds are compared at different rates. The curve sweeps the
threshold over the scored range itself: at each theta, alarm = eligible minute with score < theta,
alerts by their lifecycle (SPEC 14; `alerts_from_scores`), operator metrics against the truth
(`operator_metrics`). `at_false_alarm_rate` reads the best share detected within k minutes among the
thresholds that raise at most a given number of false alarms per node-day: the detectors'
separability at the same false-alarm rate. The thresholds are chosen with the truth, so a point is a
comparison, not a deployable setting (that is the budget's).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import polars as pl

CURVE_LEVELS = tuple(float(x) for x in np.geomspace(1e-6, 0.3, 120))  # shares of the eligible minutes alarmed
CURVE_RATES = (0.5, 1.0, 2.0)  # false alarms per node-day at which the reports compare curves


def curve_thresholds(scores: np.ndarray, eligible: np.ndarray, levels: tuple[float, ...] = CURVE_LEVELS) -> np.ndarray:
    """Ascending unique thresholds: the lowest eligible score (nothing alarms: the curve's zero point)
    and the `levels` quantiles of the eligible scores (n, T), each nudged just above its quantile so
    that the quantile's own minutes alarm (alarm = score < theta)."""
    s = np.asarray(scores, dtype=np.float64)[np.asarray(eligible, dtype=bool)]
    s = s[np.isfinite(s)]
    if s.size == 0:
        return np.empty(0)
    q = np.quantile(s, np.asarray(levels))
    return np.unique(np.concatenate([[s.min()], np.nextafter(q, np.inf)]))  # s.min(): no alarm at all


def operator_curve(scores: pl.DataFrame, truth: pl.DataFrame, method: str, clear_after: int = 15,
                   thresholds: np.ndarray | None = None, margin: int = 30, also: Sequence[float] = ()) -> pl.DataFrame:
    """The operator metrics of `Detector.score` output `scores` (every node at every minute) at each
    threshold, alarms only at minutes whose boolean column `eligible` is true (all when it is absent);
    `margin` as `operator_metrics`; `also`: thresholds added to the default ones (a detector's own
    theta, so that its operating point lies on the curve).

    Returns
    -------
    pl.DataFrame
        theta, false_alarms_per_node_day, alarmed_attack_free_pct, detected_within_{1,2,5,10}min_pct,
        one row per threshold (default `curve_thresholds` of the eligible scores), ascending theta.
    """
    from netflowgen.detect.alerts import AlertConfig, alerts_from_scores
    from netflowgen.detect.operator_metrics import operator_metrics

    s = scores.sort(["node", "minute"])
    score = s.get_column("score").to_numpy()
    elig = s.get_column("eligible").to_numpy().astype(bool) if "eligible" in s.columns else np.ones(len(score), bool)
    ths = curve_thresholds(score, elig) if thresholds is None else np.asarray(thresholds, dtype=np.float64)
    ths = np.union1d(ths, np.asarray(also, dtype=np.float64)) if len(also) else ths
    rows: list[dict[str, Any]] = []
    for th in ths:
        framed = s.with_columns(pl.Series("alarm", elig & (score < th)))
        alerts = alerts_from_scores(framed, method, AlertConfig(clear_after))
        m = operator_metrics(framed, alerts, truth, margin=margin).summary()
        rows.append({"theta": float(th), **{k: v for k, v in m.items() if k.startswith(("false_alarms", "alarmed",
                                                                                         "detected_within"))}})
    return pl.DataFrame(rows, schema={"theta": pl.Float64, "false_alarms_per_node_day": pl.Float64,
                                      "alarmed_attack_free_pct": pl.Float64,
                                      **{f"detected_within_{k}min_pct": pl.Float64 for k in (1, 2, 5, 10)}})


def at_false_alarm_rate(curve: pl.DataFrame | list[dict[str, Any]], rate: float, within: int = 2) -> float:
    """The largest share (%) of attacks detected within `within` minutes among the curve's thresholds
    with at most `rate` false alarms per node-day (nan when none is that quiet)."""
    df = curve if isinstance(curve, pl.DataFrame) else pl.DataFrame(curve)
    if df.height == 0:
        return math.nan
    ok = df.filter(pl.col("false_alarms_per_node_day") <= rate)
    return float(ok.get_column(f"detected_within_{within}min_pct").max()) if ok.height else math.nan  # type: ignore[arg-type]


def same_rate_shares(curve: pl.DataFrame | list[dict[str, Any]], rates: Sequence[float] = CURVE_RATES
                     ) -> dict[str, float]:
    """`within_2min_at_<r>_fa_pct` -> `at_false_alarm_rate(curve, r)` for each rate r: what the reports print."""
    return {f"within_2min_at_{r:g}_fa_pct": at_false_alarm_rate(curve, r) for r in rates}


def plot_curves(curves: dict[str, list[dict[str, Any]]], path: Path, title: str, budget: float | None = None,
                points: dict[str, tuple[float, float]] | None = None) -> Path:
    """PNG of operator curves (label -> `operator_curve` rows): share detected within 2 minutes against
    false alarms per node-day (log axis, 0 drawn at 0.01), a dot per label at `points` (its operating
    point: false alarms per node-day, share %) and a dotted line at `budget`."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for label, curve in curves.items():
        c = sorted(curve, key=lambda p: p["false_alarms_per_node_day"])
        line, = ax.step([max(p["false_alarms_per_node_day"], 0.01) for p in c],
                        [p["detected_within_2min_pct"] for p in c], where="post", label=label)
        if points and label in points:
            ax.plot([max(points[label][0], 0.01)], [points[label][1]], "o", color=line.get_color())
    ax.set_xscale("log")
    ax.set_xlim(0.01, 20)
    ax.set_ylim(0, 100)
    if budget is not None:
        ax.axvline(budget, color="grey", lw=0.8, ls=":")
    ax.set_xlabel("false alarms per node-day (0 drawn at 0.01)")
    ax.set_ylabel("attacks detected within 2 min (%)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
