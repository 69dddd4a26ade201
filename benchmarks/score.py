"""Minute-by-minute scoring: node-minutes scored per second by `Detector.score_file` (strided, clock-
anchored windows, node batches) next to the naive loop (one window per minute,
`anchored.naive_intensities`) measured in the same run on the same detector, and the peak memory of
scoring N nodes x 1 day (each method in a fresh process, so its peak RSS is its own).

    python benchmarks/score.py [--nodes 10000] [--minutes 1440] [--gpt-nodes 128] [--naive-minutes 120]

Detectors are untrained (random weights; per-node levels fitted on the first 200 nodes, the others
calibrated on their reference range while scored, as nodes a detector never saw): scoring cost does
not depend on the weights. The synthetic node-minute table (Poisson traffic with a daily cycle, all 86
features) is written in node chunks, so generating it needs little memory either.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

T0 = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)


def write_table(path: Path, n_nodes: int, n_minutes: int, chunk: int = 500, seed: int = 0) -> None:
    """A dense synthetic node-minute Parquet file of n_nodes x n_minutes, written chunk by chunk."""
    import pyarrow.parquet as pq

    from netflowgen.schema import FEATURE_NAMES
    rng = np.random.default_rng(seed)
    minutes = pl.datetime_range(T0, T0 + dt.timedelta(minutes=n_minutes - 1), "1m", eager=True, time_unit="ms")
    cycle = 1 + 0.4 * np.sin(2 * np.pi * np.arange(n_minutes) / 1440)
    writer = None
    for lo in range(0, n_nodes, chunk):
        ids = np.arange(lo, min(n_nodes, lo + chunk))
        lam = (rng.uniform(5, 500, (len(ids), 1)) * cycle).reshape(-1)
        cols = {"node": np.repeat([f"10.{i // 65536}.{i // 256 % 256}.{i % 256}" for i in ids], n_minutes),
                "customer": np.repeat([f"c{i % 10}" for i in ids], n_minutes),
                "minute": pl.concat([minutes] * len(ids)), "missing": np.zeros(len(ids) * n_minutes, bool)}
        for f in FEATURE_NAMES:
            cols[f] = rng.poisson(lam * (800 if "byt" in f else 1)).astype(np.float64)
        table = pl.DataFrame(cols).with_columns(pl.col("minute").dt.replace_time_zone("UTC")).to_arrow()
        writer = writer or pq.ParquetWriter(path, table.schema)
        writer.write_table(table)
    assert writer is not None
    writer.close()


def build_detector(method: str, table_path: Path, length: int, gpt_context: int, out: Path) -> None:
    """Fit (baselines) or initialize (learned) a detector on the table and save it to `out`."""
    from types import SimpleNamespace

    from netflowgen.detect.cube import NodeMinuteCube
    from netflowgen.detect.finetune import FinetuneConfig
    from netflowgen.detect.pipeline import DetectionContext
    from netflowgen.model import TrafficGPT, model_config
    from netflowgen.tokens import Binner
    # fitted on the first 200 nodes; the others are calibrated on their reference range while scoring
    lf = pl.scan_parquet(table_path)
    first = lf.select(pl.col("node").unique().sort().head(200)).collect().get_column("node").to_list()
    feats = lf.filter(pl.col("node").is_in(first)).collect()
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
    det.save(out)


def child(args: argparse.Namespace) -> None:
    """One measurement in this (fresh) process; prints a JSON line."""
    import torch

    from netflowgen.detect.anchored import naive_intensities
    from netflowgen.detect.detector import Detector
    torch.set_num_threads(2)
    det = Detector.load(args.detector)
    t0 = time.perf_counter()
    rows = sum(part.height for part in det.score_file(args.table, node_batch=args.node_batch))
    fast_s = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # GB (ru_maxrss is in kB)
    first = pl.scan_parquet(args.table).select(pl.col("node").min()).collect().item()
    data, calib = det.prepare(pl.scan_parquet(args.table).filter(pl.col("node") == first).collect())
    fn = det.core.window_fn(data, calib)
    T = len(data.cube.minutes)
    t0 = time.perf_counter()
    naive_intensities(np.zeros(1, np.int64), np.arange(T - args.naive_minutes, T)[None, :], data.minute0_ms,
                      det.core.context, det.core.stride, fn)
    naive_s = time.perf_counter() - t0
    print(json.dumps({"rows": rows, "fast_s": fast_s, "naive_rate": args.naive_minutes / naive_s, "peak_gb": peak}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=10_000, help="nodes for the operator baselines and MS-LSTM")
    ap.add_argument("--lstm-nodes", type=int, default=1000, help="nodes for MS-LSTM")
    ap.add_argument("--gpt-nodes", type=int, default=128, help="nodes for NetFlowGen (4-4-128-512)")
    ap.add_argument("--minutes", type=int, default=1440)
    ap.add_argument("--gpt-context", type=int, default=256)
    ap.add_argument("--length", type=int, default=128)
    ap.add_argument("--node-batch", type=int, default=512)
    ap.add_argument("--naive-minutes", type=int, default=120)
    ap.add_argument("--methods", nargs="+", default=["Static-EWMA", "Seasonal-band", "CUSUM", "MS-LSTM", "NetFlowGen"])
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--detector", help=argparse.SUPPRESS)
    ap.add_argument("--table", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        return child(a)
    print(f"scoring benchmark: {a.minutes} minutes per node, length {a.length}, node batches of {a.node_batch}, "
          "2 threads; each method scored in a fresh process")
    with tempfile.TemporaryDirectory() as tmp:
        tables: dict[int, Path] = {}
        for m in a.methods:
            n = {"NetFlowGen": a.gpt_nodes, "MS-LSTM": a.lstm_nodes}.get(m, a.nodes)
            if n not in tables:
                tables[n] = Path(tmp) / f"table{n}.parquet"
                t0 = time.perf_counter()
                write_table(tables[n], n, a.minutes)
                print(f"  synthetic table {n} nodes x {a.minutes} min: {time.perf_counter() - t0:.0f} s")
            det_dir = Path(tmp) / m
            build_detector(m, tables[n], a.length, a.gpt_context, det_dir)
            r = subprocess.run([sys.executable, __file__, "--child", "--detector", str(det_dir), "--table",
                                str(tables[n]), "--node-batch", str(a.node_batch), "--naive-minutes",
                                str(a.naive_minutes)], capture_output=True, text=True, check=True)
            res = json.loads(r.stdout.strip().splitlines()[-1])
            rate = res["rows"] / res["fast_s"]
            print(f"{m:14s} {n:6d} nodes: {rate:12,.0f} node-min/s ({res['fast_s']:7.1f} s)  naive one window per "
                  f"minute {res['naive_rate']:9,.0f} node-min/s -> {rate / res['naive_rate']:7.1f} x  "
                  f"peak RSS {res['peak_gb']:.2f} GB", flush=True)


if __name__ == "__main__":
    main()
