"""A small synthetic node-minute table (SPEC 3 layout) for the tokens / model / training tests.

Nodes have daily seasonality, per-node scale, Poisson noise, random zero minutes, a feature that is
zero for one node only (pooled fallback), flag features that are always zero, and missing minutes.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl

from netflowgen.schema import FEATURE_NAMES, NODE_MINUTE_SCHEMA

START = dt.datetime(2024, 3, 4, tzinfo=dt.timezone.utc)  # a Monday


def node_minute_table(n_nodes: int = 4, n_minutes: int = 1440, seed: int = 0,
                      missing: tuple[int, ...] = (700,)) -> pl.DataFrame:
    """Dense node-minute table: `n_nodes` nodes x `n_minutes` minutes, 86 float64 features.

    `missing` lists minute indexes at which every node is missing (an exporter outage).
    """
    rng = np.random.default_rng(seed)
    t = np.arange(n_minutes)
    day = 1.0 + 0.8 * np.sin(2 * np.pi * t / 1440.0)  # (T,) daily seasonality
    frames = []
    for i in range(n_nodes):
        scale = 5.0 * (i + 1)
        feat_scale = rng.uniform(0.2, 3.0, len(FEATURE_NAMES))  # (F,)
        lam = scale * day[:, None] * feat_scale[None, :]  # (T, F)
        x = rng.poisson(lam).astype(np.float64) * rng.uniform(1.0, 1.5, (n_minutes, 1))
        x[rng.random(n_minutes) < 0.05] = 0.0  # idle minutes: all zero
        x[:, [j for j, n in enumerate(FEATURE_NAMES) if n.startswith("out_flag")]] = 0.0
        if i == 0:
            x[:, FEATURE_NAMES.index("in_icmp_pkt")] = 0.0  # this node never saw ICMP: pooled cut-offs
        miss = np.zeros(n_minutes, dtype=bool)
        miss[[m for m in missing if m < n_minutes]] = True
        x[miss] = 0.0
        frames.append(pl.DataFrame({
            "node": [f"10.0.0.{i + 1}"] * n_minutes,
            "customer": [f"cust{i % 2}"] * n_minutes,
            "minute": [START + dt.timedelta(minutes=int(m)) for m in t],
            "missing": miss,
            **{name: x[:, j] for j, name in enumerate(FEATURE_NAMES)},
        }))
    df = pl.concat(frames)
    return df.cast({"minute": pl.Datetime("ms", "UTC")}).select(NODE_MINUTE_SCHEMA.names)
