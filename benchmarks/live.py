"""Live serving cost: what `netflowgen serve` sustains on loopback, and what one closed minute costs.

    python benchmarks/live.py [--quick]

1. Receive path. A sender process replays a synthetic IPFIX stream (`export.replay`, ~24 flows per
   datagram, destinations among the detector's nodes, flow starts spread over several minutes so
   minutes close while it runs) for `--seconds` at each datagram rate, into an in-process `Server`
   (guard + nfcapd + the main loop: rotations -> minutes -> features -> Static-EWMA scores ->
   snapshot) whose `step()` runs in the main thread every `poll` s, as the CLI runs it. A rate is
   sustained when no datagram was dropped by the kernel (guard socket and nfcapd's) and every flow
   sent was written. Reference, same run, same stream: nfcapd alone (`Collector(guard=False)`: its
   watcher converts the rotations, no guard, no serve loop), the fastest receiver serve can build on.
2. Per closed minute. Serve pays `MinuteAssembler.close` (batch feature code on the buffered flows:
   3 flows per node in the minute closed and in the next one, still open) and
   `StreamingScorer.step_rows` (one context window per node). The scorer is restored with C minutes
   of history (`StreamingScorer.restore`, what a restarted serve does; C = the core's context) so
   every timed step runs on full buffers; the figure is the median of 5 steps after one untimed.
   Also the per-minute snapshot of the scorer state (`np.savez` of `state()`, which `Server.step`
   writes after every closed minute). Reference, same run: `Detector.score` (strided batch windows)
   on the same N nodes x (C + 5) minutes once, / (C + 5): the batch cost per minute (on at most
   REF_NODES of them, scaled to N: it scores node batches, linear in nodes), given a cube of the
   features the core reads (the table -> cube conversion is not charged to it). Each size runs in a
   fresh process, so its peak RSS (VmHWM) is its own; it includes the synthetic data.
Detectors are untrained (Static-EWMA fitted, MS-LSTM random weights, length 128): the cost does not
depend on the weights. The host is shared (2 cores): rates and seconds move with its load.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

T0_MS = 1_704_067_200_000  # 2024-01-01 00:00 UTC (the simulated ISP's first minute)
FLOWS_PER_DATAGRAM = 24  # IPv4 IPFIX records per 1500-byte datagram (FlowEncoder: 23.8)
WALL_S_PER_MINUTE = 2.0  # the replay's flow starts advance one minute per 2 s of sending
REF_NODES = 2_000  # the batch reference scores at most this many nodes, scaled to N (it is linear in nodes)
GOALS = {10_000: 2.0, 100_000: 20.0}  # nodes -> seconds per closed minute (the goal)
CLI = [sys.executable, "-m", "netflowgen.cli.main"]
SIM = ["--days", "0.125", "--customers", "3", "--nodes", "12", "--attacks-per-day", "100", "--seed", "3"]


def flow_table(dst: pa.Array, start_ms: np.ndarray, rng: np.random.Generator) -> pa.Table:
    """Canonical flows (FLOW_SCHEMA, IPv4, sampling 1) to `dst`, starting at `start_ms` (sorted)."""
    from netflowgen.schema import FLOW_SCHEMA
    n = len(start_ms)
    pool = pa.array([f"{a >> 24}.{a >> 16 & 255}.{a >> 8 & 255}.{a & 255}" for a in rng.integers(20 << 24, 100 << 24, 4096)])
    u16, u8, u32, i64, ts = pa.uint16(), pa.uint8(), pa.uint32(), pa.int64(), pa.timestamp("ms", tz="UTC")
    return pa.table({
        "ts_start": pa.array(start_ms, ts), "ts_end": pa.array(start_ms + rng.integers(0, 5_000, n), ts),
        "src_ip": pool.take(rng.integers(0, len(pool), n)), "dst_ip": dst,
        "src_port": pa.array(rng.integers(1024, 65536, n), u16), "dst_port": pa.array(rng.choice([53, 80, 443], n), u16),
        "proto": pa.array(rng.choice([6, 17], n), u8), "tcp_flags": pa.array(rng.integers(0, 256, n), u8),
        "packets": pa.array(rng.integers(1, 100, n), i64), "bytes": pa.array(rng.integers(40, 150_000, n), i64),
        "sampling_rate": pa.array(np.ones(n, np.uint32), u32), "exporter": pa.nulls(n, pa.string()),
        "in_if": pa.array(rng.integers(0, 8, n), u32), "out_if": pa.array(rng.integers(0, 8, n), u32),
    }, schema=FLOW_SCHEMA)


def peak_gb() -> float:
    """This process's peak RSS (VmHWM: its own, where getrusage's ru_maxrss keeps the parent's across exec)."""
    return int(Path("/proc/self/status").read_text().split("VmHWM:")[1].split()[0]) / 1e6


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- 1. receive path ------------------------------------------------------------------------------
def sender(port: int, rate: int, seconds: float, nodes: list[str], out: Any) -> None:
    """(spawned process) Replay rate x seconds datagrams' worth of flows at most `rate` datagrams/s."""
    from netflowgen.export import replay
    rng = np.random.default_rng(rate)
    n = int(rate * seconds * FLOWS_PER_DATAGRAM)
    start = T0_MS + np.sort(rng.integers(0, int(seconds / WALL_S_PER_MINUTE * 60_000), n))
    table = flow_table(pa.array(nodes).take(rng.integers(0, len(nodes), n)), start, rng)
    out.put("ready")
    out.put(replay(table.to_batches(65_536), ("127.0.0.1", port), "ipfix", speed=None, max_pps=rate).as_dict())


def run_sender(port: int, rate: int, seconds: float, nodes: list[str], step: Any = None, poll: float = 0.2) -> dict:
    """Start the sender, call `step()` every `poll` s while it sends; its ReplayStats as a dict."""
    ctx = mp.get_context("spawn")  # a fresh interpreter: nothing of this process's threads or sockets
    q = ctx.Queue()
    p = ctx.Process(target=sender, args=(port, rate, seconds, nodes, q))
    p.start()
    assert q.get(timeout=300) == "ready"  # the flow table is built
    while p.is_alive() and q.empty():
        time.sleep(poll)
        if step is not None:
            step()
    stats = q.get(timeout=60)
    p.join()
    return stats


def serve_run(det: Path, customers: Path, nodes: list[str], rate: int, seconds: float, tmp: Path) -> dict:
    from netflowgen.serve.server import ServeConfig, Server
    port = free_port()
    server = Server(ServeConfig(detector=str(det), customers=str(customers), listen=f"127.0.0.1:{port}",
                                state=str(tmp / f"serve-{rate}"), metrics_listen="", lateness=5.0, rotate=2, poll=0.2))
    server.start()
    col = server.collector
    assert col is not None and col.guard is not None
    sent = run_sender(port, rate, seconds, nodes, server.step, server.cfg.poll)
    time.sleep(0.5)
    server.step()
    guard_drops, received = col.guard.kernel_drops() or 0, col.guard.stats().received
    server.stop()
    m, nfcapd_drops = server.metrics, sum(r.kernel_drops or 0 for r in col.rotations)
    return {"sent": sent, "received": received, "drops": guard_drops + nfcapd_drops, "guard_drops": guard_drops,
            "written": int(m.flows_written._value.get()), "late": server.assembler.late,
            "minutes": int(m.minutes_closed._value.get())}


def bare_run(nodes: list[str], rate: int, seconds: float, tmp: Path) -> dict:
    from netflowgen.live.collector import Collector, CollectorConfig
    port = free_port()
    col = Collector(CollectorConfig(listen=f"127.0.0.1:{port}", out=str(tmp / f"bare-{rate}"), rotate=2,
                                    keep_nfcapd=False, guard=False, poll=0.2))
    col.start()
    sent = run_sender(port, rate, seconds, nodes)
    rot = col.stop()
    return {"sent": sent, "drops": sum(r.kernel_drops or 0 for r in rot), "written": sum(r.flows_written for r in rot)}


def receive_path(rates: list[int], seconds: float) -> None:
    import polars as pl

    from netflowgen.detect.cores import OperatorCore, ScoringData
    from netflowgen.detect.cube import NodeMinuteCube
    from netflowgen.detect.detector import Detector
    with tempfile.TemporaryDirectory(prefix="bench-live-") as tmp_s:
        tmp = Path(tmp_s)
        subprocess.run(CLI + ["simulate", *SIM, "--out", str(tmp / "sim")], check=True, capture_output=True)
        subprocess.run(CLI + ["features", str(tmp / "sim" / "flows.parquet"), "--customers", str(tmp / "sim" / "customers.csv"),
                              "--missing-by", "global", "--out", str(tmp / "features.parquet")], check=True, capture_output=True)
        L = 16
        det = Detector("Static-EWMA", OperatorCore("Static-EWMA", 2 * L, L // 2), L, 4, theta=0.05)
        det.calibrate(ScoringData(NodeMinuteCube.read(tmp / "features.parquet")), 0, 100, "training")
        det.save(tmp / "det")
        nodes = pl.read_parquet(tmp / "features.parquet", columns=["node"]).get_column("node").unique().sort().to_list()
        print(f"\n## 1. Sustained flows/s on loopback (IPFIX, {seconds:.0f} s per rate, {len(nodes)} nodes, "
              f"one minute of flow time per {WALL_S_PER_MINUTE:.0f} s sent, serve lateness 5 s, rotate 2 s)\n")
        print("| rate (datagrams/s) | offered (flows/s) | serve: received (dgrams) | kernel drops (dgrams) | "
              "flows written / sent | late (flows) | minutes closed | ok | nfcapd alone: offered (flows/s) | "
              "kernel drops (dgrams) | flows written / sent | ok |")
        print("|---:|---:|---:|---:|---:|---:|---:|:-:|---:|---:|---:|:-:|")
        best = {"serve": 0.0, "bare": 0.0}
        last_ok = {"serve": False, "bare": False}
        for rate in rates:
            s = serve_run(tmp / "det", tmp / "sim" / "customers.csv", nodes, rate, seconds, tmp)
            b = bare_run(nodes, rate, seconds, tmp)
            row = []
            for name, r in (("serve", s), ("bare", b)):
                fps = r["sent"]["flows"] / r["sent"]["seconds"]
                ok = r["drops"] == 0 and r["written"] == r["sent"]["flows"]
                last_ok[name] = ok
                if ok:
                    best[name] = max(best[name], fps)
                row.append((fps, r, ok))
            (sf, s, sok), (bf, b, bok) = row
            print(f"| {rate:,} | {sf:,.0f} | {s['received']:,} | {s['drops']:,} (guard {s['guard_drops']:,}) | "
                  f"{s['written']:,} / {s['sent']['flows']:,} | {s['late']:,} | {s['minutes']} | {'yes' if sok else 'NO'} | "
                  f"{bf:,.0f} | {b['drops']:,} | {b['written']:,} / {b['sent']['flows']:,} | {'yes' if bok else 'NO'} |", flush=True)
        top = {k: " (kept up at the highest rate tried: a lower bound)" if v else "" for k, v in last_ok.items()}
        ratio = best["serve"] / best["bare"] if best["bare"] else float("nan")
        print(f"\n**Goal 1, sustained rate without drops:** serve {best['serve']:,.0f} flows/s{top['serve']}, "
              f"nfcapd alone {best['bare']:,.0f} flows/s{top['bare']} -> serve = {ratio:.2f} x the bare receiver")


# --- 2. per closed minute ------------------------------------------------------------------------
CUSTOMERS_CSV = "customer_id,prefix\n" + "".join(f"c{k:02d},10.{k}.0.0/16\n" for k in range(16))


def synthetic_nodes(n: int) -> tuple[list[str], list[str]]:
    """n IPv4 nodes (sorted) in the 16 customer /16 prefixes of CUSTOMERS_CSV, and their customers."""
    nodes = sorted(f"10.{i % 16}.{i // 16 >> 8}.{i // 16 & 255}" for i in range(n))
    return nodes, [f"c{int(x.split('.')[1]):02d}" for x in nodes]


def child_close(n: int) -> dict:
    """Seconds of MinuteAssembler.close(1) with 3 flows per node in the closed minute and the next."""
    from netflowgen.serve.minutes import MinuteAssembler
    with tempfile.TemporaryDirectory() as tmp:
        nodes, customers = synthetic_nodes(n)[0], Path(tmp) / "customers.csv"
        customers.write_text(CUSTOMERS_CSV)
        rng = np.random.default_rng(n)
        k = 3 * n
        start = np.concatenate([T0_MS + m * 60_000 + np.sort(rng.integers(0, 60_000, k)) for m in range(3)])
        flows = flow_table(pa.array(nodes).take(np.tile(rng.permutation(np.repeat(np.arange(n), 3)), 3)), start, rng)
        a = MinuteAssembler(str(customers), lateness_s=60.0)  # serve's defaults
        a.add(flows, time.time())
        a.close(1)  # minute 0: every node becomes known, as in a running serve
        t0 = time.perf_counter()
        rows = a.close(1)[0]
        secs = time.perf_counter() - t0
    assert rows.height == n, (rows.height, n)
    return {"seconds": secs, "flows": 2 * k, "peak_gb": peak_gb()}


def child_score(method: str, n: int, length: int) -> dict:
    """Median seconds of StreamingScorer.step_rows on full buffers, snapshot seconds, batch reference."""
    import polars as pl
    import torch

    from netflowgen.detect.cores import LstmCore, OperatorCore, ScoringData
    from netflowgen.detect.cube import NodeMinuteCube
    from netflowgen.detect.detector import Detector
    from netflowgen.detect.models import MultiScaleLSTMNet
    from netflowgen.detect.streaming import StreamingScorer, core_features
    from netflowgen.schema import FEATURE_NAMES
    torch.set_num_threads(2)
    torch.manual_seed(0)
    L = length
    core = OperatorCore(method, 2 * L, L // 2) if method == "Static-EWMA" else \
        LstmCore(MultiScaleLSTMNet(len(FEATURE_NAMES), head_hidden=16, dropout=0.0), L, L // 2)
    det = Detector(method, core, L, 4, theta=0.05)
    feats = core_features(det)
    cols = [FEATURE_NAMES.index(f) for f in feats]
    nodes, custs = synthetic_nodes(n)
    rng = np.random.default_rng(n)
    lam = rng.uniform(5, 500, (n, 1))
    scale = np.array([800.0 if "byt" in f else 1.0 for f in FEATURE_NAMES])

    def values(k: int, which: list[int]) -> np.ndarray:  # (n, k, len(which)) Poisson-ish counts
        return rng.poisson(lam[:, :, None] * scale[which], (n, k, len(which))).astype(np.float32)

    calib_t = 30  # minutes the detector is calibrated on
    cal = NodeMinuteCube(nodes, custs, T0_MS + 60_000 * np.arange(calib_t, dtype=np.int64), values(calib_t, cols),
                         np.zeros((n, calib_t), bool), feats)
    det.calibrate(ScoringData(cal), 0, calib_t, "training")
    del cal
    C, steps = det.core.context, 6
    pool = values(4, list(range(len(FEATURE_NAMES))))  # minutes recycled: the cost does not depend on values
    m0 = T0_MS + 60_000 * calib_t
    pool_core = pool[..., cols]  # (n, 4, F core): index minutes after the features (no (n, C, 86) copy)
    hist = np.ascontiguousarray(pool_core[:, np.arange(C) % 4])
    fresh = StreamingScorer(det, nodes, custs)
    meta = {**fresh.meta(), "filled": C, "steps": C, "first_minute_ms": m0}
    s = StreamingScorer.restore(det, meta, {"values": hist, "missing": np.zeros((n, C), bool),
                                            "minutes": m0 + 60_000 * np.arange(C, dtype=np.int64),
                                            "x_ring": np.zeros((n, L))})
    base = pl.DataFrame({"node": nodes, "customer": custs, "missing": np.zeros(n, bool)})
    frames = [base.with_columns(pl.DataFrame(pool[:, k].astype(np.float64), schema=list(FEATURE_NAMES))) for k in range(4)]
    times = []
    for i in range(steps):
        ts = pl.lit(m0 + 60_000 * (C + i)).cast(pl.Datetime("ms")).dt.replace_time_zone("UTC")
        rows = frames[(C + i) % 4].with_columns(ts.alias("minute"))
        t0 = time.perf_counter()
        s.step_rows(rows)
        times.append(time.perf_counter() - t0)
    peak = peak_gb()
    state = s.state()
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        np.savez(Path(tmp) / "scorer.npz", **state)  # type: ignore[arg-type]
        snap = time.perf_counter() - t0
    state_mb = sum(a.nbytes for a in state.values()) / 1e6
    del s, state, frames
    T, k = C + 5, min(n, REF_NODES)
    vals = np.concatenate([hist[:k], pool_core[:k, np.arange(C, T) % 4]], axis=1)
    cube = NodeMinuteCube(nodes[:k], custs[:k], m0 + 60_000 * np.arange(T, dtype=np.int64), vals, np.zeros((k, T), bool), feats)
    t0 = time.perf_counter()
    det.score(cube)
    return {"step_s": float(np.median(times[1:])), "snapshot_s": snap, "state_mb": state_mb, "peak_gb": peak,
            "batch_s": (time.perf_counter() - t0) / T * n / k, "context": C}


def child(kind: str, method: str, n: int, length: int, timeout: float) -> dict | str:
    cmd = [sys.executable, __file__, "--child", kind, "--method", method, "--nodes", str(n), "--length", str(length)]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return f"over {timeout:.0f} s"
    if r.returncode:
        return "failed: " + (r.stderr.strip().splitlines() or ["?"])[-1][:200]
    return json.loads(r.stdout.strip().splitlines()[-1])


def per_minute(sizes: list[int], lstm_sizes: list[int], length: int) -> None:
    print(f"\n## 2. Seconds per closed minute (length {length}, 2 torch threads, each size in a fresh process)\n")
    close = {n: child("close", "", n, length, 900) for n in sizes}
    print("| nodes | flows buffered | MinuteAssembler.close(1) (s) | peak RSS (GB) |\n|---:|---:|---:|---:|")
    for n, c in close.items():
        print(f"| {n:,} | {c['flows']:,} | {c['seconds']:.2f} | {c['peak_gb']:.2f} |" if isinstance(c, dict)
              else f"| {n:,} | | {c} | |", flush=True)
    print(f"\n| method | nodes | context C (min) | step_rows (s, median of 5) | batch (s/min, <= {REF_NODES:,} nodes scaled) | "
          "step / batch | snapshot np.savez (s) | scorer state (MB) | peak RSS (GB) |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    res: dict[tuple[str, int], dict | str] = {}
    for method, n in [("Static-EWMA", n) for n in sizes] + [("MS-LSTM", n) for n in lstm_sizes]:
        prev = res.get((method, n // 10))
        avail = int(Path("/proc/meminfo").read_text().split("MemAvailable:")[1].split()[0]) / 1e6
        if method == "MS-LSTM" and n >= 100_000 and (not isinstance(prev, dict) or prev["step_s"] * 10 > 60
                                                    or prev["peak_gb"] * 10 > 0.7 * avail):
            est = f"~{prev['step_s'] * 10:.0f} s, ~{prev['peak_gb'] * 10:.0f} GB" if isinstance(prev, dict) else "?"
            r = res[(method, n)] = f"skipped: 10 x the {n // 10:,}-node figures ({est}) > 60 s or 70 % of {avail:.0f} GB"
        else:
            r = res[(method, n)] = child("score", method, n, length, 900)
        print(f"| {method} | {n:,} | {r['context']} | {r['step_s']:.3f} | {r['batch_s']:.4f} | {r['step_s'] / r['batch_s']:.1f} "
              f"| {r['snapshot_s']:.3f} | {r['state_mb']:,.0f} | {r['peak_gb']:.2f} |" if isinstance(r, dict)
              else f"| {method} | {n:,} | | {r} | | | | | |", flush=True)
    print()
    for (n, goal), method in [(g, m) for g in GOALS.items() for m in ("Static-EWMA", "MS-LSTM")]:
        c, r, head = close.get(n), res.get((method, n)), f"**Goal {n:,} nodes < {goal:.0f} s per closed minute, {method}:**"
        if not isinstance(c, dict) or not isinstance(r, dict):
            print(f"{head} not measured ({r if isinstance(r, str) else c if isinstance(c, str) else 'size not run'})")
            continue
        total = c["seconds"] + r["step_s"] + r["snapshot_s"]
        print(f"{head} close {c['seconds']:.2f} s + score {r['step_s']:.2f} s + snapshot {r['snapshot_s']:.2f} s "
              f"= {total:.2f} s -> {'met' if total < goal else 'NOT met'}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes and short runs (a smoke test, < 1 min)")
    ap.add_argument("--seconds", type=float, default=None, help="seconds of sending per rate (default 10, quick 2)")
    ap.add_argument("--child", choices=["close", "score"], help=argparse.SUPPRESS)
    ap.add_argument("--method", default="Static-EWMA", help=argparse.SUPPRESS)
    ap.add_argument("--nodes", type=int, default=1000, help=argparse.SUPPRESS)
    ap.add_argument("--length", type=int, default=128, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        print(json.dumps(child_close(a.nodes) if a.child == "close" else child_score(a.method, a.nodes, a.length)))
        return
    t0 = time.perf_counter()
    if a.quick:
        receive_path([2_000, 5_000], a.seconds or 2.0)
        per_minute([1_000], [1_000], 32)
    else:
        receive_path([2_000, 5_000, 10_000, 20_000], a.seconds or 10.0)
        per_minute([1_000, 10_000, 100_000], [1_000, 10_000, 100_000], 128)
    print(f"\n(total {time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
