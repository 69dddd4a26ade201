"""EarlyDetect: windows, filters, splits, clean non-attack windows, CUSUM onsets vs truth."""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl

from netflowgen.detect.cube import NodeMinuteCube
from netflowgen.detect.earlydetect import EarlyDetectConfig, build_earlydetect, table2

from .synthetic import T0, make_dataset


def build(**kw):
    feats, alerts, truth = make_dataset()
    cube = NodeMinuteCube.from_table(feats)
    cfg = EarlyDetectConfig(window=64, horizon=10, margin=30, **kw)
    return cube, alerts, truth, cfg


def test_windows_labels_and_onsets() -> None:
    cube, alerts, truth, cfg = build()
    res = build_earlydetect(cube, alerts, cfg, truth)
    ex = res.examples
    att, non = ex.filter(pl.col("label") == 1), ex.filter(pl.col("label") == 0)
    assert att.height == alerts.height and non.height == att.height
    # window ends `horizon` after the alert: label minute = window - 1 - horizon
    assert (att.get_column("label_t") == 64 - 1 - 10).all()
    assert (non.get_column("label_t") == 63).all()
    # the CUSUM onset lands on the true onset (5 minutes before the alert), almost always exactly
    d = (att.get_column("onset_t") - att.get_column("true_onset_t")).abs().to_numpy()
    assert (att.get_column("true_onset_t") >= 0).all()
    assert np.median(d) == 0 and np.mean(d <= 1) >= 0.85 and d.max() <= 10
    # non-attack windows overlap no alert (+ margin) of their node
    a_s = alerts.select((pl.col("start") - pl.lit(T0)).dt.total_minutes()).to_series().to_numpy()
    for row in non.iter_rows(named=True):
        same = alerts.get_column("target_ip").to_numpy() == row["node"]
        lo, hi = row["start"], row["start"] + 63
        assert not np.any(same & (a_s + 35 + 30 >= lo) & (a_s - 30 <= hi))
    # every split has pairs, and a non-attack stays in its attack's split
    assert set(ex.get_column("split").unique()) == {"train", "val", "test"}
    assert ex.group_by("pair").agg(pl.col("split").n_unique()).get_column("split").max() == 1
    t2 = table2(ex)
    assert t2.get_column("examples").sum() == ex.height and "udp" in t2.columns


def test_alert_filters_are_counted() -> None:
    cube, alerts, truth, cfg = build()
    n = alerts.height
    alerts = alerts.with_columns(
        pl.Series("false_positive", [i == 0 for i in range(n)]),
        # alert 1 reports 10 % of the observed packets: dropped; others report plenty
        pl.Series("reported_pkts", [1e12 if i != 1 else 1.0 for i in range(n)]))
    extra = pl.DataFrame({"target_ip": ["192.168.1.1"], "start": [T0 + dt.timedelta(minutes=500)],
                          "end": [T0 + dt.timedelta(minutes=520)], "attack_type": ["dns"], "false_positive": [False],
                          "reported_pkts": [1e12]})
    res = build_earlydetect(cube, pl.concat([alerts, extra.with_columns(pl.col("start").cast(alerts.schema["start"]),
                                                                        pl.col("end").cast(alerts.schema["end"]))]),
                            cfg)
    assert res.dropped["false_positive"] == 1 and res.dropped["volume_mismatch"] == 1
    assert res.dropped["not_a_node"] == 1
    assert res.examples.filter(pl.col("label") == 1).height == n - 2


def test_seeded_non_attack_windows() -> None:
    cube, alerts, _, cfg = build()
    a = build_earlydetect(cube, alerts, cfg).examples
    b = build_earlydetect(cube, alerts, cfg).examples
    assert a.equals(b)
    c = build_earlydetect(cube, alerts, EarlyDetectConfig(window=64, horizon=10, margin=30, seed=1)).examples
    assert not a.filter(pl.col("label") == 0).get_column("start").equals(c.filter(pl.col("label") == 0).get_column("start"))
