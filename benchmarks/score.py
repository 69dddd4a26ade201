"""Minute-by-minute scoring: node-minutes scored per second by `Detector.score` (strided, clock-
anchored windows) next to the naive loop (one window per minute, `anchored.naive_intensities`)
measured in the same run on the same detector, and peak memory for many nodes x 1 day.

    python benchmarks/score.py [--nodes 10000] [--minutes 1440] [--gpt-nodes 64] [--naive-minutes 120]

Detectors are untrained (random weights, per-node levels fitted on the synthetic table): scoring
cost does not depend on the weights. The synthetic table is Poisson traffic with a daily cycle.
"""

from __future__ import annotations

import argparse
import datetime as dt
import resource
import time

import numpy as np
import polars as pl
import torch


def table(n_nodes: int, n_minutes: int, seed: int = 0) -> pl.DataFrame:
    from netflowgen.schema import FEATURE_NAMES
    rng = np.random.default_rng(seed)
    t0 = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)
    base = rng.uniform(5, 500, (n_nodes, 1)) * (1 + 0.4 * np.sin(2 * np.pi * np.arange(n_minutes) / 1440))
    cols = {"node": np.repeat([f"10.{i // 65536}.{i // 256 % 256}.{i % 256}" for i in range(n_nodes)], n_minutes),
            "customer": np.repeat([f"c{i % 10}" for i in range(n_nodes)], n_minutes),
            "minute": pl.datetime_range(t0, t0 + dt.timedelta(minutes=n_minutes - 1), "1m", eager=True,
                                        time_unit="ms").to_numpy().repeat(1).tolist() * n_nodes,
            "missing": np.zeros(n_nodes * n_minutes, bool)}
    lam = base.reshape(-1)
    for f in FEATURE_NAMES:
        cols[f] = rng.poisson(lam * (800 if "byt" in f else 1)).astype(np.float64)
    return pl.DataFrame(cols).with_columns(pl.col("minute").cast(pl.Datetime("ms", "UTC")))


def detector(method: str, feats: pl.DataFrame, length: int, gpt_context: int):
    from types import SimpleNamespace

    from netflowgen.detect.cube import NodeMinuteCube
    from netflowgen.detect.finetune import FinetuneConfig
    from netflowgen.detect.pipeline import DetectionContext
    from netflowgen.model import TrafficGPT, model_config
    from netflowgen.tokens import Binner
    cube = NodeMinuteCube.from_table(feats)
    ex = pl.DataFrame({"id": [0], "node_row": [0], "start": [0], "label": [0], "label_t": [length - 1],
                       "onset_t": [-1], "end_t": [-1], "true_onset_t": [-1], "split": ["train"], "pair": [0],
                       "customer": ["c0"], "attack_type": [""]})
    pre = None
    if method == "NetFlowGen":
        binner = Binner.fit(feats)
        gpt = TrafficGPT(model_config("paper", context=gpt_context, dropout=0.0), len(binner.nodes), len(binner.customers))
        pre = SimpleNamespace(model=gpt.eval(), binner=binner, config={})
    ctx = DetectionContext.build(cube, ex, length, length, pre, [0.6, 0.2], feats if pre else None)
    det = ctx.new_detector(method, FinetuneConfig())
    det.theta, det.warmup = 0.5, 32
    return det


def measure(method: str, n_nodes: int, n_minutes: int, naive_minutes: int, length: int, gpt_context: int) -> None:
    from netflowgen.detect.anchored import naive_intensities
    feats = table(n_nodes, n_minutes)
    det = detector(method, feats, length, gpt_context)
    t0 = time.perf_counter()
    scores = det.score(feats)
    dt_fast = time.perf_counter() - t0
    rate = scores.height / dt_fast
    data, calib = det.prepare(feats.filter(pl.col("node").is_in(feats.get_column("node").unique().sort()[:2].to_list())))
    fn = det.core.window_fn(data, calib)
    minutes = np.arange(len(data.cube.minutes) - naive_minutes, len(data.cube.minutes))
    t0 = time.perf_counter()
    naive_intensities(np.zeros(1, np.int64), minutes[None, :], data.minute0_ms, det.core.context, det.core.stride, fn)
    dt_naive = time.perf_counter() - t0
    naive_rate = naive_minutes / dt_naive
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    print(f"{method:14s} {n_nodes:6d} nodes x {n_minutes} min: {rate:12,.0f} node-min/s ({dt_fast:7.1f} s)  "
          f"naive one window per minute {naive_rate:10,.0f} node-min/s  -> {rate / naive_rate:6.1f} x  "
          f"peak RSS so far {peak:.2f} GB", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=10_000, help="nodes for the operator and LSTM methods")
    ap.add_argument("--minutes", type=int, default=1440)
    ap.add_argument("--gpt-nodes", type=int, default=64, help="nodes for NetFlowGen (4-4-128-512)")
    ap.add_argument("--gpt-context", type=int, default=256)
    ap.add_argument("--length", type=int, default=128)
    ap.add_argument("--naive-minutes", type=int, default=120)
    ap.add_argument("--methods", nargs="+", default=["Static-EWMA", "CUSUM", "MS-LSTM", "NetFlowGen"])
    a = ap.parse_args()
    torch.set_num_threads(2)
    print(f"scoring benchmark: length {a.length}, threads {torch.get_num_threads()}")
    for m in a.methods:
        n = a.gpt_nodes if m == "NetFlowGen" else a.nodes
        measure(m, n, a.minutes, a.naive_minutes, a.length, a.gpt_context)


if __name__ == "__main__":
    main()
