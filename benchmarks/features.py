"""Benchmark: canonical flow Parquet -> dense node-minute features, per engine.

    .venv/bin/python benchmarks/features.py --millions 20 100 --engines polars spark pandas

For each size, random but realistic-ish flows are generated in chunks (a few thousand node IPs with
heavy-tailed popularity, several days of minutes with a daily cycle and one outage, a mix of
protocols, ports, TCP flags and sampling rates) and written as canonical Parquet. Each engine then
runs in its own subprocess; its wall time and peak RSS (the child's ru_maxrss) are reported, with
ratios against a plain pandas group-by measured in the same run. pandas materializes everything
in memory, so above --pandas-max-millions it runs on the first part of the data only and its rate
is compared per flow (the table says so).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from netflowgen.schema import FLOW_SCHEMA

T0_MS = 1_700_006_400_000  # 2023-11-15 00:00 UTC, a Wednesday


def generate(path: Path, n_flows: int, n_nodes: int = 2000, days: float = 2.0, seed: int = 0,
             chunk: int = 2_000_000) -> Path:
    """Write `n_flows` random flows to `path` (canonical Parquet) and `customers.csv` beside it."""
    rng = np.random.default_rng(seed)
    node_ints = (10 << 24) + rng.choice(1 << 20, size=n_nodes, replace=False)
    nodes = np.array([f"{i >> 24}.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}" for i in node_ints])
    peers = np.array([f"{rng.integers(11, 223)}.{a}.{b}.{c}"
                      for a, b, c in rng.integers(0, 256, size=(200_000, 3))])
    weight = 1.0 / np.arange(1, n_nodes + 1) ** 1.1  # heavy-tailed node popularity
    weight /= weight.sum()
    n_min = int(days * 1440)
    minute_w = 1.0 + 0.6 * np.sin(np.arange(n_min) * 2 * np.pi / 1440)  # daily cycle
    minute_w[n_min // 2: n_min // 2 + 30] = 0.0  # a 30-minute collector outage
    minute_w /= minute_w.sum()
    with (path.parent / "customers.csv").open("w") as f:
        f.write("customer_id,prefix\n")
        for k, i in enumerate(sorted({i >> 12 for i in node_ints})):  # one customer per /20
            f.write(f"c{k},{i >> 12}.{(i >> 4) & 255}.{(i & 15) << 4}.0/20\n")
    with pq.ParquetWriter(path, FLOW_SCHEMA, compression="zstd") as w:
        done = 0
        while done < n_flows:
            n = min(chunk, n_flows - done)
            w.write_table(_chunk(rng, n, nodes, peers, weight, minute_w))
            done += n
    return path


def _chunk(rng, n, nodes, peers, weight, minute_w) -> pa.Table:
    node = nodes[rng.choice(len(nodes), size=n, p=weight)]
    peer = peers[rng.integers(0, len(peers), size=n)]
    inbound = rng.random(n) < 0.7
    both = rng.random(n) < 0.02  # node-to-node flows
    other = np.where(both, nodes[rng.integers(0, len(nodes), size=n)], peer)
    src = np.where(inbound, other, node)
    dst = np.where(inbound, node, other)
    start = T0_MS + rng.choice(len(minute_w), size=n, p=minute_w) * 60_000 + rng.integers(0, 60_000, n)
    dur = (rng.exponential(4_000, n) * (1 + 30 * (rng.random(n) < 0.05))).astype(np.int64)
    proto = rng.choice(np.array([6, 17, 1, 58, 47], dtype=np.uint8), size=n, p=[.68, .25, .03, .01, .03])
    service = rng.choice(np.array([53, 80, 123, 443, 22, 8080, 3389, 0]), size=n,
                         p=[.15, .15, .05, .4, .1, .05, .05, .05])
    eph = rng.integers(1024, 65536, n)
    sport = np.where(inbound, eph, service)
    dport = np.where(inbound, service, eph)
    portless = (proto != 6) & (proto != 17)
    flags = rng.choice(np.array([27, 16, 24, 2, 17, 18, 4, 25, 0, 31], dtype=np.uint8), size=n,
                       p=[.4, .15, .1, .1, .05, .05, .05, .03, .02, .05])
    pk = np.minimum(1 + rng.pareto(1.2, n) * 3, 1e6).astype(np.int64)
    rate = rng.choice(np.array([1, 10, 100], dtype=np.uint32), size=n, p=[.6, .3, .1])
    cols = {
        "ts_start": pa.array(start).cast(pa.timestamp("ms", tz="UTC")),
        "ts_end": pa.array(start + dur).cast(pa.timestamp("ms", tz="UTC")),
        "src_ip": pa.array(src), "dst_ip": pa.array(dst),
        "src_port": pa.array(np.where(portless, 0, sport).astype(np.uint16)),
        "dst_port": pa.array(np.where(portless, 0, dport).astype(np.uint16)),
        "proto": pa.array(proto), "tcp_flags": pa.array(np.where(proto == 6, flags, 0).astype(np.uint8)),
        "packets": pa.array(pk), "bytes": pa.array(pk * rng.integers(40, 1500, n)),
        "sampling_rate": pa.array(rate),
        "exporter": pa.array(np.where(rate == 1, "r1", "r2")),
        "in_if": pa.nulls(n, pa.uint32()), "out_if": pa.nulls(n, pa.uint32()),
    }
    return pa.Table.from_pydict(cols, schema=FLOW_SCHEMA)
