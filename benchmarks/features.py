"""Benchmark: canonical flow Parquet -> dense node-minute features, per engine.

    .venv/bin/python benchmarks/features.py --millions 20 100 --engines polars spark pandas

For each size, random but ISP-like flows are generated in chunks and written as canonical
Parquet. The default shape is 1700 node IPs x 1 day (2.45 M dense node-minutes, so 20 M flows are
~8 flows per node-minute, like TOOLS-NOTES' reference of 20 M flows -> 2.36 M node-minutes);
every flow has at least one node end (70 % inbound from 200 k outside peers, 28 % outbound, 2 %
node to node), with a daily cycle, one outage, a mix of protocols, ports, TCP flags and sampling
rates, and 3 exporters. `--nodes`/`--days` give other shapes. Each engine then runs in its own
subprocess; its wall time, CPU seconds, peak RSS (the process tree), the load average and the
phases are reported, with ratios against a plain pandas group-by measured in the same run. pandas
materializes everything in memory, so above --pandas-max-millions it runs on the first part of
the data only and its rate is compared per flow (the table says so).
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


DEFAULT_NODES, DEFAULT_DAYS = 1700, 1.0  # 20 M flows -> 2.45 M node-minutes, ~8 flows each


def generate(path: Path, n_flows: int, n_nodes: int = DEFAULT_NODES, days: float = DEFAULT_DAYS,
             seed: int = 0, chunk: int = 2_000_000) -> Path:
    """Write `n_flows` random flows to `path` (canonical Parquet) and `customers.csv` beside it.

    Every flow has at least one node end (the ISP's customers): 70 % inbound from an outside peer
    (200 k peer IPs), 28 % outbound to one, 2 % node to node. Each node sits behind one of three
    exporters (by node number), whose name the flow carries."""
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
    exporters = np.array(["192.0.2.1", "192.0.2.2", "192.0.2.3"])[np.arange(n_nodes) % 3]
    with (path.parent / "customers.csv").open("w") as f:
        f.write("customer_id,prefix\n")
        for k, i in enumerate(sorted({i >> 12 for i in node_ints})):  # one customer per /20
            f.write(f"c{k},{i >> 12}.{(i >> 4) & 255}.{(i & 15) << 4}.0/20\n")
    with pq.ParquetWriter(path, FLOW_SCHEMA, compression="zstd") as w:
        done = 0
        while done < n_flows:
            n = min(chunk, n_flows - done)
            w.write_table(_chunk(rng, n, nodes, peers, weight, minute_w, exporters))
            done += n
    return path


def _chunk(rng, n, nodes, peers, weight, minute_w, exporters) -> pa.Table:
    node_i = rng.choice(len(nodes), size=n, p=weight)
    node = nodes[node_i]
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
        "exporter": pa.array(exporters[node_i]),
        "in_if": pa.nulls(n, pa.uint32()), "out_if": pa.nulls(n, pa.uint32()),
    }
    return pa.Table.from_pydict(cols, schema=FLOW_SCHEMA)


# --- the engines, each run in its own subprocess ----------------------------------------------
def run_engine(engine: str, flows: Path, customers: Path, out: Path) -> dict:
    """Run one engine in this process; returns seconds and output rows."""
    t0 = time.perf_counter()
    if engine == "pandas":
        rows = pandas_reference(flows, customers, out)
    else:
        from netflowgen.features import FeatureConfig, build_features

        cfg = FeatureConfig(engine=engine, customers=str(customers), spark_master="local[2]",
                            spark_driver_memory="6g")
        summary = build_features([flows], out, cfg)
        rows = summary.rows
        return {"seconds": time.perf_counter() - t0, "rows": rows,
                "phases": {k: [round(w, 2), round(c, 2)] for k, (w, c) in summary.phases.items()}}
    return {"seconds": time.perf_counter() - t0, "rows": rows}


def pandas_reference(flows: Path, customers: Path, out: Path) -> int:
    """The plain way: load everything into pandas, one masked column per feature, group-by sum.
    Writes the sparse node-minute rows (no densifying); returns their number."""
    import pandas as pd
    import polars as pl

    from netflowgen.features.definition import FEATURES
    from netflowgen.nodes import CustomerTable
    from netflowgen.schema import PORT_BEARING_PROTOCOLS, PORT_CLASSES, PROTOCOL_CLASSES, TCP_FLAG_VALUES

    df = pd.read_parquet(flows)
    ips = pd.unique(np.concatenate([df["src_ip"].to_numpy(), df["dst_ip"].to_numpy()]))
    nodes = CustomerTable.from_csv(customers).assign(pl.Series(ips)).to_pandas()
    rate = df["sampling_rate"].astype(np.int64)
    df["est_pkt"], df["est_byt"], df["est_flow"] = df["packets"] * rate, df["bytes"] * rate, rate
    df["minute"] = df["ts_start"].dt.floor("min")
    ends = []
    for d, ip, port in ((0, "dst_ip", "dst_port"), (1, "src_ip", "src_port")):
        e = df.merge(nodes, left_on=ip, right_on="node")
        e["dir"] = d
        e["port"] = e[port].astype(np.int32)
        ends.append(e[["node", "minute", "dir", "proto", "port", "tcp_flags", "est_pkt", "est_byt",
                       "est_flow"]])
    long = pd.concat(ends, ignore_index=True)
    proto = long["proto"].to_numpy().astype(np.int32)
    codes = {"proto": np.full(len(long), list(PROTOCOL_CLASSES).index("other"))}
    for i, (name, nums) in enumerate(PROTOCOL_CLASSES.items()):
        if nums is not None:
            codes["proto"][np.isin(proto, nums)] = i
    port = long["port"].to_numpy()
    pc = np.zeros(len(long), dtype=np.int32)
    for i, (_, lo, hi) in reversed(list(enumerate(PORT_CLASSES))):  # first class wins
        pc[(port >= lo) & (port <= hi)] = i
    pc[~np.isin(proto, PORT_BEARING_PROTOCOLS)] = 0
    codes["port"] = pc
    fl = np.full(len(long), -1)
    for i, v in enumerate(TCP_FLAG_VALUES):
        fl[(proto == 6) & (long["tcp_flags"].to_numpy() == v)] = i
    codes["flag"] = fl
    d = long["dir"].to_numpy()
    cols = {"node": long["node"], "minute": long["minute"]}
    for f in FEATURES:
        mask = d == f.direction
        if f.code_column is not None:
            mask &= codes[f.code_column] == f.code
        cols[f.name] = np.where(mask, long[f.value_column].to_numpy(), 0).astype(np.float64)
    wide = pd.DataFrame(cols).groupby(["node", "minute"], sort=True).sum()
    wide.reset_index().to_parquet(out)
    return len(wide)


def measure(engine: str, flows: Path, customers: Path, out: Path) -> dict:
    """Run `engine` in a subprocess; peak RSS summed over its process tree (Spark's JVM is a
    grandchild), polled every 50 ms, and the child's own ru_maxrss as a cross-check."""
    import psutil

    cmd = [sys.executable, __file__, "--_run", engine, str(flows), str(customers), str(out)]
    env = dict(os.environ, NETFLOWGEN_QUIET="1")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    load = os.getloadavg()[0]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    ps, peak = psutil.Process(proc.pid), 0
    while proc.poll() is None:
        try:
            tree = [ps] + ps.children(recursive=True)
            peak = max(peak, sum(p.memory_info().rss for p in tree if p.is_running()))
        except psutil.Error:
            pass
        time.sleep(0.05)
    stdout, stderr = proc.communicate()
    if proc.returncode != 0:
        return {"error": stderr.strip().splitlines()[-1] if stderr.strip() else f"exit {proc.returncode}"}
    result = json.loads(stdout.strip().splitlines()[-1])
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    result["peak_gb"] = max(peak, after.ru_maxrss * 1024) / 1e9
    # CPU seconds (user + sys) of the child and the descendants it waited for; Spark's JVM may
    # not be among them, so Spark's figure is a lower bound.
    result["cpu_s"] = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    result["load"] = (load + os.getloadavg()[0]) / 2  # 1-minute load average, start and end
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--millions", type=float, nargs="+", default=[20, 100], help="flow counts, in millions")
    ap.add_argument("--engines", nargs="+", default=["polars", "spark", "pandas"],
                    choices=["polars", "spark", "pandas"])
    ap.add_argument("--nodes", type=int, default=DEFAULT_NODES,
                    help="node IPs (customers.csv covers them); the default 1700 nodes x 1 day "
                    "gives 20 M flows ~8 flows per node-minute, as TOOLS-NOTES' reference")
    ap.add_argument("--days", type=float, default=DEFAULT_DAYS, help="days of minutes in the data")
    ap.add_argument("--pandas-max-millions", type=float, default=2.0,
                    help="pandas runs on at most this many flows (it holds everything in memory)")
    ap.add_argument("--repeat", type=int, default=1,
                    help="runs per engine and size; the median run (by wall time) is reported, "
                    "with the wall time of each (this shared machine's timings vary by ~20 %%)")
    ap.add_argument("--workdir", type=Path, default=None, help="keep generated data here (reused)")
    ap.add_argument("--_run", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._run:
        engine, flows, customers, out = args._run
        print(json.dumps(run_engine(engine, Path(flows), Path(customers), Path(out))))
        return
    work = args.workdir or Path(tempfile.mkdtemp(prefix="netflowgen-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    results = []
    print(f"data shape: {args.nodes} nodes x {args.days:g} days = {int(args.nodes * args.days * 1440):,} "
          f"dense node-minutes; 70 % inbound, 28 % outbound, 2 % node-to-node flows; 3 exporters",
          flush=True)
    for m in args.millions:
        n = int(m * 1_000_000)
        d = work / f"{m:g}M-{args.nodes}n-{args.days:g}d"
        d.mkdir(exist_ok=True)
        flows = d / "flows.parquet"
        if not flows.exists():
            t0 = time.perf_counter()
            generate(flows, n, args.nodes, args.days)
            print(f"generated {n:,} flows in {time.perf_counter() - t0:.0f} s -> {flows}", flush=True)
        for engine in args.engines:
            src, n_run = flows, n
            if engine == "pandas" and n > args.pandas_max_millions * 1e6:
                n_run = int(args.pandas_max_millions * 1e6)
                src = d / f"flows-first-{n_run}.parquet"
                if not src.exists():
                    pq.write_table(pq.read_table(flows).slice(0, n_run), src)
            runs = [measure(engine, src, d / "customers.csv", d / f"out-{engine}.parquet")
                    for _ in range(args.repeat)]
            ok = sorted((x for x in runs if "error" not in x), key=lambda x: x["seconds"])
            r = ok[len(ok) // 2] if ok else runs[0]  # the median run by wall time
            if len(ok) > 1:
                r["all_seconds"] = [round(x["seconds"], 2) for x in runs if "error" not in x]
            r.update(engine=engine, millions=m, flows=n_run)
            results.append(r)
            print(_row(r, None), flush=True)
            if "all_seconds" in r:
                print(f"  median of {len(r['all_seconds'])} runs; wall s of each: {r['all_seconds']}",
                      flush=True)
            if r.get("phases"):
                print("  phases (wall s, CPU s): " + ", ".join(
                    f"{k} {w:.1f}/{c:.1f}" for k, (w, c) in r["phases"].items()), flush=True)
    print("\n" + _table(results))


def _row(r: dict, pandas_rate: float | None) -> str:
    if "error" in r:
        return f"| {r['millions']:g} M | {r['engine']} | failed: {r['error']} |"
    rate = r["flows"] / r["seconds"]
    ratio = f"{rate / pandas_rate:.1f}x" if pandas_rate else "-"
    return (f"| {r['millions']:g} M | {r['engine']} | {r['flows']:,} | {r['seconds']:.1f} | "
            f"{rate / 1e6:.2f} M | {r['cpu_s']:.1f} | {r['flows'] / max(r['cpu_s'], 1e-9) / 1e6:.2f} M | "
            f"{r['peak_gb']:.2f} | {r['rows']:,} | {r['flows'] / max(r['rows'], 1):.1f} | "
            f"{r['load']:.1f} | {ratio} |")


def _table(results: list[dict]) -> str:
    lines = ["| size | engine | flows run | wall s | flows/s | CPU s | flows per CPU-s | peak RSS GB "
             "| rows out | flows per row | load avg | speed vs pandas |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        ref = [x for x in results if x["engine"] == "pandas" and x["millions"] == r["millions"]
               and "error" not in x]
        lines.append(_row(r, ref[0]["flows"] / ref[0]["seconds"] if ref else None))
    lines.append("Polars and Spark write the dense table (every node x every minute); pandas writes "
                 "only the sparse node-minutes and runs on at most --pandas-max-millions flows "
                 "(the first ones), so compare rates, not seconds.")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
