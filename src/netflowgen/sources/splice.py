"""Real attacks onto real hosts' traffic: replay the flows of an attack capture onto one host's
(benign) canonical flows at chosen times, with a truth table (`netflowgen splice`, docs/sources.md).

    detect_victim(attack) -> str                                  # destination receiving most packets
    splice(host, attack, victim, at, duration_min=10, ramp_min=3, scale=1.0,
           attacker_victim=None, seed=0, source_name="") -> SpliceResult
    splice_files(host_flows, attack_paths, victim, at, out, truth, attack_format="auto", ...)

Each insertion at time T takes the capture's flows toward its victim (and the victim's responses),
shifts them so the first starts at T, rewrites the victim address, keeps `duration_min` minutes
(looped with a period of the capture's length rounded up to whole minutes, or cut), thins the first
`ramp_min` minutes (minute m keeps a fraction (m+1)/ramp of the flows) and scales packets and bytes.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from netflowgen.rejects import InputError, RejectCounter
from netflowgen.schema import FLOW_SCHEMA, MS_PER_MINUTE
from netflowgen.sources.options import SourceOptions

__all__ = ["SpliceResult", "detect_victim", "parse_time", "splice", "splice_files", "read_table",
           "TRUTH_COLUMNS"]

TRUTH_COLUMNS: tuple[str, ...] = ("event_id", "kind", "type", "target_ip", "onset", "end",
                                  "attack_source", "attacker_victim", "flows")


@dataclass
class SpliceResult:
    """The spliced flows (FLOW_SCHEMA, sorted by ts_start), one truth row per insertion, the
    number of flows each insertion added, the capture's victim and any warnings."""

    flows: pa.Table
    truth: list[dict[str, object]]
    inserted: list[int]
    attacker_victim: str
    warnings: list[str] = field(default_factory=list)


def parse_time(text: str, what: str = "--at") -> dt.datetime:
    """ISO 8601 time (UTC when it names no zone) -> aware UTC datetime; InputError naming `what`."""
    try:
        t = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise InputError(f"{what} {text!r}: not an ISO 8601 time such as 2024-01-01T10:00") from None
    return (t if t.tzinfo else t.replace(tzinfo=dt.timezone.utc)).astimezone(dt.timezone.utc)


def _check_ip(ip: str, what: str) -> str:
    try:
        return str(ipaddress.ip_address(ip.strip()))
    except ValueError:
        raise InputError(f"{what} {ip!r}: not an IP address") from None


def detect_victim(attack: pa.Table) -> str:
    """The destination IP that receives the most packets (packets x sampling rate) in `attack`."""
    if attack.num_rows == 0:
        raise InputError("attack capture holds no flow")
    pkts = pc.multiply(attack["packets"], pc.cast(attack["sampling_rate"], pa.int64()))
    g = pa.table({"dst_ip": attack["dst_ip"], "p": pkts}).group_by("dst_ip").aggregate([("p", "sum")])
    g = g.sort_by([("p_sum", "descending"), ("dst_ip", "ascending")])
    return str(g["dst_ip"][0].as_py())


def _ms(col: pa.ChunkedArray) -> np.ndarray:
    return np.asarray(pc.cast(col, pa.int64()).to_numpy(zero_copy_only=False), dtype=np.int64)


def _dominant_exporter(host: pa.Table, victim: str) -> str | None:
    """The exporter most of the host's flows of `victim` came through (of all flows if none)."""
    if host.num_rows == 0:
        return None
    mask = pc.or_(pc.equal(host["src_ip"], victim), pc.equal(host["dst_ip"], victim))
    sub = host.filter(mask)
    sub = sub if sub.num_rows else host
    counts = pc.value_counts(sub["exporter"].drop_null())
    if len(counts) == 0:
        return None
    best = max(counts.to_pylist(), key=lambda d: (d["counts"], str(d["values"])))
    return str(best["values"])


def _iso(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def splice(host: pa.Table, attack: pa.Table, victim: str, at: Sequence[dt.datetime], *,
           duration_min: float = 10.0, ramp_min: float = 3.0, scale: float = 1.0,
           attacker_victim: str | None = None, seed: int = 0, source_name: str = "") -> SpliceResult:
    """Insert `attack` (canonical flows of a capture) into `host` (canonical flows) at each time of
    `at`, toward `victim`. See the module docstring; raises InputError for unusable arguments."""
    victim = _check_ip(victim, "--victim")
    if not at:
        raise InputError("--at: give at least one insertion time")
    if not duration_min > 0:
        raise InputError(f"--duration {duration_min}: must be a positive number of minutes")
    if not ramp_min >= 0:
        raise InputError(f"--ramp {ramp_min}: must be 0 or more minutes")
    if not (scale > 0 and math.isfinite(scale)):
        raise InputError(f"--scale {scale}: must be a positive number")
    host = host.cast(FLOW_SCHEMA) if host.schema != FLOW_SCHEMA else host
    attack = attack.cast(FLOW_SCHEMA) if attack.schema != FLOW_SCHEMA else attack
    name = source_name or "attack capture"
    if attack.num_rows == 0:
        raise InputError(f"{name}: the attack capture holds no flow")
    av = _check_ip(attacker_victim, "--attacker-victim") if attacker_victim else detect_victim(attack)
    toward = pc.equal(attack["dst_ip"], av)
    sel = attack.filter(pc.or_(toward, pc.equal(attack["src_ip"], av)))
    if not pc.any(pc.equal(sel["dst_ip"], av)).as_py():
        raise InputError(f"{name}: no flow toward the attack's victim {av} (dst_ip)")
    start, end_ = _ms(sel["ts_start"]), _ms(sel["ts_end"])
    t0 = int(start.min())
    span = int(start.max()) - t0
    period = max(1, math.ceil((span + 1) / MS_PER_MINUTE)) * MS_PER_MINUTE
    dur_ms = int(round(duration_min * MS_PER_MINUTE))
    copies = max(1, math.ceil(dur_ms / period))
    rng = np.random.default_rng(seed)
    exporter = _dominant_exporter(host, victim)
    warnings: list[str] = []
    if host.num_rows:
        lo, hi = int(_ms(host["ts_start"]).min()), int(_ms(host["ts_end"]).max())
        if not pc.any(pc.or_(pc.equal(host["src_ip"], victim), pc.equal(host["dst_ip"], victim))).as_py():
            warnings.append(f"--victim {victim}: no host flow has this address")
    else:
        lo = hi = 0
        warnings.append("--host-flows: no host flow; only attack flows are written")
    parts: list[pa.Table] = [host]
    truth: list[dict[str, object]] = []
    inserted: list[int] = []
    for i, when in enumerate(at):
        T = int(round(when.timestamp() * 1000))
        stop = T + dur_ms
        if host.num_rows and not (lo <= T <= hi):
            warnings.append(f"--at {_iso(T)}: outside the host traffic's time range {_iso(lo)} .. {_iso(hi)}")
        elif host.num_rows and stop > hi:
            warnings.append(f"--at {_iso(T)}: the attack ends at {_iso(stop)}, after the host traffic ({_iso(hi)})")
        rows, new_start, new_end = [], [], []
        for k in range(copies):
            shift = T + k * period - t0
            s = start + shift
            keep = np.flatnonzero(s < stop)
            rows.append(keep)
            new_start.append(s[keep])
            new_end.append(np.minimum(end_[keep] + shift, stop))
        idx = np.concatenate(rows)
        ns, ne = np.concatenate(new_start), np.concatenate(new_end)
        if ramp_min > 0:
            minute = (ns - T) // MS_PER_MINUTE
            frac = np.where(minute < ramp_min, np.minimum(1.0, (minute + 1) / ramp_min), 1.0)
            kept = rng.random(len(idx)) < frac
            idx, ns, ne = idx[kept], ns[kept], ne[kept]
        part = _rewrite(sel.take(pa.array(idx, pa.int64())), ns, ne, av, victim, scale, exporter)
        parts.append(part)
        inserted.append(part.num_rows)
        truth.append({"event_id": i, "kind": "attack", "type": "spliced", "target_ip": victim,
                      "onset": _iso(T), "end": _iso(stop), "attack_source": name,
                      "attacker_victim": av, "flows": part.num_rows})
    flows = pa.concat_tables(parts).combine_chunks()
    flows = flows.take(pc.sort_indices(flows, [("ts_start", "ascending")]))
    return SpliceResult(flows, truth, inserted, av, warnings)


def _rewrite(t: pa.Table, ts_start: np.ndarray, ts_end: np.ndarray, av: str, victim: str,
             scale: float, exporter: str | None) -> pa.Table:
    n = t.num_rows
    src = pc.if_else(pc.equal(t["src_ip"], av), victim, t["src_ip"])
    dst = pc.if_else(pc.equal(t["dst_ip"], av), victim, t["dst_ip"])
    pk = _ms(t["packets"]).astype(np.float64)
    by = _ms(t["bytes"]).astype(np.float64)
    if scale != 1.0:
        pk, by = np.maximum(1.0, np.rint(pk * scale)), np.maximum(1.0, np.rint(by * scale))
    cols = {
        "ts_start": pa.array(ts_start, pa.int64()).cast(FLOW_SCHEMA.field("ts_start").type),
        "ts_end": pa.array(ts_end, pa.int64()).cast(FLOW_SCHEMA.field("ts_end").type),
        "src_ip": src, "dst_ip": dst,
        "src_port": t["src_port"], "dst_port": t["dst_port"], "proto": t["proto"],
        "tcp_flags": t["tcp_flags"],
        "packets": pa.array(pk.astype(np.int64), pa.int64()),
        "bytes": pa.array(by.astype(np.int64), pa.int64()),
        "sampling_rate": t["sampling_rate"],
        "exporter": pa.array([exporter] * n, pa.string()) if exporter is not None else t["exporter"],
        "in_if": pa.nulls(n, pa.uint32()), "out_if": pa.nulls(n, pa.uint32()),
    }
    return pa.table(cols, schema=FLOW_SCHEMA)


def read_table(paths: Sequence[str | Path], fmt: str, options: SourceOptions | None = None,
               rejects: RejectCounter | None = None) -> pa.Table:
    """All canonical flows of a source (open_source) as one table."""
    from netflowgen.sources import open_source
    return pa.Table.from_batches(list(open_source(paths, fmt, options, rejects)), FLOW_SCHEMA)


def write_truth(rows: list[dict[str, object]], path: str | Path) -> None:
    """truth.csv: one row per insertion (columns TRUTH_COLUMNS; read by operator_metrics.attacks_table)."""
    import csv
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(TRUTH_COLUMNS), lineterminator="\n")
        w.writeheader()
        w.writerows(rows)


def splice_files(host_flows: str | Path, attack_paths: Sequence[str | Path], victim: str,
                 at: Sequence[dt.datetime], out: str | Path, truth: str | Path, *,
                 attack_format: str = "auto", attack_sampling: int = 1, duration_min: float = 10.0,
                 ramp_min: float = 3.0, scale: float = 1.0, attacker_victim: str | None = None,
                 seed: int = 0, rejects: RejectCounter | None = None) -> SpliceResult:
    """Read the host's canonical flows and the attack capture (any format of open_source; records
    without a sampling rate get `attack_sampling`, 1 = unsampled as a packet capture is), splice,
    and write `out` (canonical flow Parquet) and `truth` (truth.csv)."""
    from netflowgen.sources import write_flows
    _check_ip(victim, "--victim")
    if not attack_paths:
        raise InputError("--attack: give the attack capture")
    host = read_table([host_flows], "parquet", SourceOptions(), RejectCounter())
    attack = read_table(attack_paths, attack_format, SourceOptions(default_sampling_rate=attack_sampling),
                        rejects if rejects is not None else RejectCounter())
    name = "+".join(Path(p).name for p in attack_paths)
    res = splice(host, attack, victim, at, duration_min=duration_min, ramp_min=ramp_min, scale=scale,
                 attacker_victim=attacker_victim, seed=seed, source_name=name)
    write_flows(res.flows.to_batches(max_chunksize=65_536), out)
    write_truth(res.truth, truth)
    return res
