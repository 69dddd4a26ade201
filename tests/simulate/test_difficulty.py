"""The static-threshold difficulty measure: SPEC 9 windows from alerts, and per-node thresholds tuned
on validation and scored on test."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest
import polars as pl
from conftest import Sim

from netflowgen.simulate.difficulty import earlydetect_windows, measure, static_threshold_f1

START = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)
T = 20_000


def _iso(m: int) -> str:
    return (START + dt.timedelta(minutes=int(m))).strftime("%Y-%m-%dT%H:%M:%SZ")


def _synthetic(surge_height: float, seed: int = 0) -> tuple[np.ndarray, pl.DataFrame]:
    """4 nodes of lognormal noise; attacks x30 for 20 minutes every ~1500 minutes, alerted 5
    minutes after onset; benign surges of `surge_height` x normal half-way between attacks."""
    rng = np.random.default_rng(seed)
    x = rng.lognormal(0, 0.2, (2, 4, T)) * np.array([100.0, 1e5])[:, None, None]
    rows = []
    for v in range(4):
        for onset in range(700 + 37 * v, T - 100, 1500):
            x[:, v, onset:onset + 20] *= 30
            rows.append((f"n{v}", _iso(onset + 5), _iso(onset + 20), "udp_flood", False, 0, 0))
            s = onset + 750
            if s + 20 < T:
                x[:, v, s:s + 20] *= surge_height
    alerts = pl.DataFrame(rows, schema=["target_ip", "start", "end", "attack_type", "false_positive",
                                        "reported_pkts", "reported_bytes"], orient="row")
    return x, alerts


def test_windows_follow_spec9() -> None:
    x, alerts = _synthetic(1.0)
    nodes = [f"n{v}" for v in range(4)]
    # one false positive and one under-reported alert must be dropped
    extra = pl.DataFrame([("n0", _iso(5000), _iso(5010), "dns_amp", True, 0, 0)], schema=alerts.schema,
                         orient="row")
    big = alerts.with_columns(pl.lit(10**12).alias("reported_pkts"), pl.lit(10**15).alias("reported_bytes"))
    under = big.with_row_index().with_columns(
        pl.when(pl.col("index") == 3).then(0).otherwise(pl.col("reported_bytes")).alias("reported_bytes")).drop("index")
    w = earlydetect_windows(pl.concat([under, extra]), nodes, START, T, inbound=x)
    att, non = w.filter(pl.col("label") == 1), w.filter(pl.col("label") == 0)
    assert att.height == alerts.height - 1  # the under-reported one went, the false positive too
    starts = {(r[0], r[1]) for r in alerts.select(pl.col("target_ip").str.slice(1).cast(pl.Int64), "start").rows()}
    for r in att.iter_rows(named=True):
        assert r["end"] == r["alert_start"] + 30
        assert (r["node"], _iso(r["alert_start"])) in starts
    # non-attack windows: same nodes and splits as attack windows, clear of every alert (+ margin)
    spans = [(int(a[1:]), s, e) for a, s, e in zip(
        alerts["target_ip"], *[((alerts[c].str.to_datetime(time_zone="UTC") - START).dt.total_minutes())
                               for c in ("start", "end")])]
    spans.append((0, 5000, 5010))
    for r in non.iter_rows(named=True):
        for v, s, e in spans:
            if v == r["node"]:
                assert r["end"] <= s - 60 or r["end"] - 512 >= e + 60
    assert non.height > 0.8 * att.height
    assert set(w["split"]) == {"train", "val", "test"}


def test_static_threshold_separates_clean_attacks_and_is_fooled_by_surges() -> None:
    nodes = [f"n{v}" for v in range(4)]
    f1 = {}
    for height in (1.0, 40.0):
        x, alerts = _synthetic(height)
        w = earlydetect_windows(alerts, nodes, START, T)  # no reported volumes to check
        f1[height] = static_threshold_f1(x, w, T).test_f1
    assert f1[1.0] > 0.95  # attacks far above normal and nothing else: a threshold is enough
    assert f1[40.0] < min(0.85, f1[1.0] - 0.1)  # surges as large as attacks fool a threshold


def test_measure_on_simulated_data(sim: Sim) -> None:
    rep = measure(sim.dir)
    assert rep.windows["train_attack"] > 20 and rep.windows["test_attack"] > 5
    assert 0.0 < rep.test_f1 < 1.0 and set(rep.variants) == {"raw", "ewma0.3"}


def test_measure_config_equals_measure_on_files(sim: Sim) -> None:
    # the in-memory measure sees exactly what the files show
    from netflowgen.simulate.difficulty import measure_config
    a, b = measure_config(sim.cfg), measure(sim.dir)
    assert a.windows == b.windows and a.variants == b.variants


@pytest.mark.slow
def test_default_data_is_not_trivial_for_a_static_threshold() -> None:
    # the documented promise: at the defaults (7 days, 120 nodes) a per-node static threshold
    # tuned on validation stays below F1 0.9 on the test range
    from netflowgen.simulate import SimConfig
    from netflowgen.simulate.difficulty import measure_config
    rep = measure_config(SimConfig())
    assert rep.windows["test_attack"] > 100 and rep.windows["test_normal"] > 50
    assert rep.test_f1 < 0.9, rep
