"""Tiny synthetic node-minute tables with known attacks, for the detection tests."""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl

from netflowgen.schema import FEATURE_NAMES

ATTACK_COLS = ("in_all_pkt", "in_all_byt", "in_udp_pkt", "in_udp_byt", "in_all_flow", "in_udp_flow")
T0 = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)


def make_dataset(n_nodes: int = 6, n_minutes: int = 3000, attacks_per_node: int = 6, window: int = 64,
                 seed: int = 0, factor: float = 30.0) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """(features, alerts, truth). Each node carries Poisson traffic with a daily cycle; attacks
    multiply its incoming UDP and total traffic by `factor` from a known onset for 40 minutes; the
    alert fires 5 minutes after the onset. Attacks are spread evenly so every split gets some."""
    rng = np.random.default_rng(seed)
    t = np.arange(n_minutes)
    values = np.zeros((n_nodes, n_minutes, len(FEATURE_NAMES)))
    idx = {n: i for i, n in enumerate(FEATURE_NAMES)}
    alerts, truth = [], []
    for v in range(n_nodes):
        base = rng.uniform(50, 500) * (1 + 0.4 * np.sin(2 * np.pi * t / 1440))
        for name in FEATURE_NAMES:
            scale = 800 if "byt" in name else (0.1 if "flow" in name else 1)
            values[v, :, idx[name]] = rng.poisson(base * scale * (0.3 if "out" in name else 1))
        onsets = np.linspace(window + 50, n_minutes - 80, attacks_per_node).astype(int) + rng.integers(0, 20, attacks_per_node)
        for on in onsets:
            for c in ATTACK_COLS:
                values[v, on:on + 40, idx[c]] *= factor
            alerts.append({"target_ip": f"10.0.0.{v}", "start": T0 + dt.timedelta(minutes=int(on) + 5),
                           "end": T0 + dt.timedelta(minutes=int(on) + 40), "attack_type": "udp_flood",
                           "false_positive": False})
            truth.append({"kind": "attack", "target_ip": f"10.0.0.{v}", "onset": T0 + dt.timedelta(minutes=int(on)),
                          "end": T0 + dt.timedelta(minutes=int(on) + 40)})
    minutes = [T0 + dt.timedelta(minutes=int(m)) for m in t]
    frames = []
    for v in range(n_nodes):
        d = {"node": [f"10.0.0.{v}"] * n_minutes, "customer": [f"c{v % 3}"] * n_minutes, "minute": minutes,
             "missing": [False] * n_minutes}
        d.update({n: values[v, :, idx[n]] for n in FEATURE_NAMES})
        frames.append(pl.DataFrame(d))
    feats = pl.concat(frames).with_columns(pl.col("minute").cast(pl.Datetime("ms", "UTC")))
    return feats, pl.DataFrame(alerts), pl.DataFrame(truth)
