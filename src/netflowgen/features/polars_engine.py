"""Flows -> node-minute features with Polars' embedded streaming engine.

Two streaming passes over the canonical flow Parquet, then a scatter into dense blocks; memory is
bounded by the node-minutes with traffic, not by the number of flows:

1. `survey`: distinct IPs (or destination counts), the minute range and the minutes with data.
2. `semi_aggregate`: each flow becomes one row per node end (in: dst is a node, out: src is a node)
   with its class codes (see `definition`); rows are summed per (node, minute, dir, proto, port,
   flag) under one packed 64-bit key. That "semi" table holds 3 sums per combination (~32 bytes)
   instead of 86 per node-minute, and is much cheaper per flow than 86 conditional sums.
3. `PolarsChunks`: for a range of nodes, the 86 feature conditions (compiled to Polars expressions
   and evaluated once per class-code combination) route each semi row into a zero-filled dense
   block; `dense` writes the blocks out one by one.
"""

from __future__ import annotations

import mmap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Sequence

import numpy as np
import polars as pl
import pyarrow.parquet as pq

from netflowgen.features.definition import (
    DIR_IN,
    DIR_OUT,
    FEATURES,
    FLAG_CODES,
    FLAG_NOT_TCP,
    FLAG_UNLISTED,
    PORT0_CODE,
    PORT_BEARING_PROTOCOLS,
    TCP,
    port_rules,
    protocol_rules,
)
from netflowgen.features.timeline import Survey, TimeRange, survey_from_counts
from netflowgen.progress import progress_bar
from netflowgen.schema import MS_PER_MINUTE

if TYPE_CHECKING:
    from netflowgen.features.scatter import ClassTables

ENGINE: Literal["streaming"] = "streaming"

# Packed group key, low bits first: flag (4) | port (3) | proto (2) | dir (1) | minute | node.
_FLAG_BITS, _PORT_BITS, _PROTO_BITS, _DIR_BITS = 4, 3, 2, 1
_CLS_BITS = _FLAG_BITS + _PORT_BITS + _PROTO_BITS + _DIR_BITS
_MINUTE_BITS = 30  # 2^30 minutes ~ 2000 years of range
_NODE_SHIFT = _CLS_BITS + _MINUTE_BITS  # leaves 23 bits: up to 8 M nodes
MAX_NODES = 1 << (63 - _NODE_SHIFT)
assert FLAG_NOT_TCP < (1 << _FLAG_BITS) and len(port_rules()) <= (1 << _PORT_BITS)
assert len(protocol_rules()[0]) + 1 <= (1 << _PROTO_BITS)


def scan(paths: list[Path]) -> pl.LazyFrame:
    """Canonical flow Parquet files (columns checked by the caller) as one LazyFrame."""
    return pl.scan_parquet([str(p) for p in paths])


def _minutes(spread: bool) -> tuple[pl.Expr, pl.Expr]:
    """(first, last) attributed minute of a flow, minutes since the epoch (Int64)."""
    start = pl.col("ts_start").dt.epoch("ms") // MS_PER_MINUTE
    if not spread:
        return start, start
    end = pl.max_horizontal(pl.col("ts_end").dt.epoch("ms") // MS_PER_MINUTE, start)
    return start, end


def survey(paths: list[Path], customers: bool, spread: bool, by_exporter: bool = False,
           ip_text_prefixes: Sequence[str] | None = None) -> Survey:
    """First pass: flows per start minute (per exporter too with `by_exporter`), coverage events
    (spread) and the candidate node IPs (distinct IPs, or flow records per destination).
    `ip_text_prefixes` (with `customers`, see `CustomerTable.text_prefixes`): only IP texts that
    start with one of them are candidates; the others are not collected."""
    return _survey(paths, customers, spread, by_exporter, ip_text_prefixes, hash_exporters=True)


def _survey(paths: list[Path], customers: bool, spread: bool, by_exporter: bool,
            ip_text_prefixes: Sequence[str] | None, hash_exporters: bool) -> Survey:
    lf = scan(paths)
    start, end = _minutes(spread)
    # Per exporter, grouped on a 64-bit hash of its text (0.2 CPU s less than on the text at 20 M
    # flows), named back from the distinct exporter texts; exactly, or again on the text when two
    # of their hashes collide.
    keys = [pl.col("exporter").hash().alias("exporter") if hash_exporters else "exporter"
            ] if by_exporter else []
    spans = lf.select(*keys, s=start, e=end)
    key_names = ["exporter"] if by_exporter else []
    queries = [spans.group_by(*key_names, pl.col("s").alias("minute")).agg(
        n=pl.len().cast(pl.Int64))]
    if by_exporter and hash_exporters:
        queries.append(lf.select("exporter").unique())
    # Distinct IP texts. (Grouping on a 64-bit hash of the text instead was at most ~15 % faster
    # here, within the noise of a shared machine, and two 64-bit hashes were slower: kept exact.)
    if customers:  # each end alone, then the union (a concat of two scans of one file buffers)
        keep = (pl.any_horizontal(pl.col("ip").str.starts_with(t) for t in ip_text_prefixes)
                if ip_text_prefixes else pl.lit(True))
        queries += [lf.select(ip=c).filter(keep).unique() for c in ("src_ip", "dst_ip")]
    else:
        queries.append(lf.group_by("dst_ip").agg(n=pl.len()))
    if spread:
        queries.append(pl.concat([spans.select(*key_names, minute="s", delta=pl.lit(1, pl.Int64)),
                                  spans.select(*key_names, minute=pl.col("e") + 1,
                                               delta=pl.lit(-1, pl.Int64))]
                                 ).group_by(*key_names, "minute").agg(pl.col("delta").sum()))
    # Together, but each with its own scan: with the shared scan (common subplan elimination) the
    # streaming engine buffers the faster branches (survey peak memory 0.74 GB at 20 M flows, 2.6 GB
    # at 100 M, measured; 0.77 / 1.53 GB without sharing, and the queries still run in parallel).
    starts, *rest = pl.collect_all(queries, engine=ENGINE,
                                   optimizations=pl.QueryOptFlags(comm_subplan_elim=False))
    if by_exporter and hash_exporters:
        names, *rest = rest
        if not _hashes_distinct(names["exporter"].drop_nulls()):
            return _survey(paths, customers, spread, by_exporter, ip_text_prefixes, False)
        names = names.with_columns(h=pl.col("exporter").hash())
        lookup = names.select(exporter="h", name="exporter")

        def named(df: pl.DataFrame) -> pl.DataFrame:
            return df.join(lookup, on="exporter", how="left").drop("exporter").rename(
                {"name": "exporter"}).select(df.columns)

        starts = named(starts)
        if spread:
            rest[-1] = named(rest[-1])
    if customers:
        ips = pl.concat(rest[:2]).unique()
        events = rest[2:]
    else:
        ips, *events = rest
    return survey_from_counts(starts, events[0] if events else None, ips)


def _codes() -> list[pl.Expr]:
    """Class codes of a flow: proto_c and flag_c (the same from both ends) and the port class
    seen from each end, port_in_c (destination port) and port_out_c (source port)."""
    proto = pl.col("proto").cast(pl.Int32)
    rules, other = protocol_rules()
    pc: Any = pl.when(proto.is_in(rules[0][0])).then(rules[0][1])
    for nums, code in rules[1:]:
        pc = pc.when(proto.is_in(nums)).then(code)
    flags = pl.col("tcp_flags").cast(pl.Int32)
    fc: Any = pl.when(proto != TCP).then(FLAG_NOT_TCP)
    for value, code in FLAG_CODES.items():
        fc = fc.when(flags == value).then(code)
    out = [pc.otherwise(other).alias("proto_c"), fc.otherwise(FLAG_UNLISTED).alias("flag_c")]
    for name, port in (("port_in_c", "dst_port"), ("port_out_c", "src_port")):
        p = pl.col(port).cast(pl.Int32)
        port_code: Any = pl.when(~proto.is_in(PORT_BEARING_PROTOCOLS)).then(PORT0_CODE)
        for lo, hi, code in port_rules():
            port_code = port_code.when(p.is_between(lo, hi)).then(code)
        out.append(port_code.otherwise(PORT0_CODE).alias(name))
    return out


# Code columns that some feature of each direction reads; the others are left out of the key so
# that, e.g., incoming TCP flows with different flags fall into one group (no "in" feature reads
# flags), which cuts the number of groups without changing any sum.
_USED: dict[int, set[str]] = {d: {f.code_column for f in FEATURES if f.direction == d
                                  and f.code_column is not None} for d in (DIR_IN, DIR_OUT)}


def _cls(direction: int, port_c: str) -> pl.Expr:
    """The packed class bits (dir | proto | port | flag) of one flow end, Int64."""
    used = _USED[direction]
    cls = pl.lit(direction * (1 << (_FLAG_BITS + _PORT_BITS + _PROTO_BITS)), pl.Int64)
    if "proto" in used:
        cls = cls + pl.col("proto_c").cast(pl.Int64) * (1 << (_FLAG_BITS + _PORT_BITS))
    if "port" in used:
        cls = cls + pl.col(port_c).cast(pl.Int64) * (1 << _FLAG_BITS)
    if "flag" in used:
        cls = cls + pl.col("flag_c").cast(pl.Int64)
    return cls


def semi_aggregate(paths: list[Path], nodes: pl.DataFrame, rng: TimeRange, spread: bool,
                   by_exporter: bool = False) -> tuple[pl.DataFrame, pl.DataFrame | None]:
    """Second pass: sums (est_pkt, est_byt, est_flow) per packed key (node, minute, class codes),
    in node blocks (see `PolarsChunks`). Minutes are offsets from `rng.first`; flows outside the
    range are left out (the survey counted them). Integer sums unless `spread` (then Float64).
    With `by_exporter` also (node_idx, exporter, n): flow records per node end and exporter, over
    all the input's records (inside the range or not), for `timeline.attribute_exporters`."""
    rows, lookup, hashed = _ends(paths, nodes, rng, spread, by_exporter)
    queries = []
    if by_exporter:
        queries.append(rows.group_by("node_idx", "xh").agg(n=pl.len().cast(pl.Int64)))
        if not spread:
            rows = rows.filter(pl.col("s").is_between(0, rng.n - 1))
    values = ["est_pkt", "est_byt", "est_flow"]
    if spread:
        # Shares use the whole span; only the minutes inside the range are generated, so a flow
        # with an absurd end time cannot explode into millions of rows.
        k = (pl.col("e") - pl.col("s") + 1).cast(pl.Float64)
        lo, hi = pl.max_horizontal("s", pl.lit(0)), pl.min_horizontal("e", pl.lit(rng.n - 1))
        rows = rows.filter((pl.col("e") >= 0) & (pl.col("s") <= rng.n - 1)).with_columns(
            pl.col(v) / k for v in values).with_columns(
            minute=pl.int_ranges(lo, hi + 1)).explode("minute")
    else:
        rows = rows.rename({"s": "minute"})
    key = pl.col("part") + pl.col("minute").cast(pl.Int64) * (1 << _CLS_BITS)
    semi_query = rows.group_by(key.alias("key")).agg(pl.col(v).sum() for v in values)
    semi, *counts = pl.collect_all([semi_query, *queries], engine=ENGINE)
    if not counts:
        return semi, None
    if hashed:
        return semi, counts[0].join(lookup, on="xh", how="left").select("node_idx", "exporter", "n")
    return semi, counts[0].rename({"xh": "exporter"})


def _ends(paths: list[Path], nodes: pl.DataFrame, rng: TimeRange, spread: bool,
          by_exporter: bool) -> tuple[pl.LazyFrame, pl.DataFrame, bool]:
    """One row per node end of a flow: node_idx, [xh], s, e (minute offsets), est_pkt, est_byt,
    est_flow, part (= node_idx << _NODE_SHIFT | class bits); plus the exporter hash lookup
    (exporter, xh) and whether its hashes are distinct (else xh holds the exporter text)."""
    if nodes.height > MAX_NODES:
        raise ValueError(f"{nodes.height:,} nodes exceed the supported {MAX_NODES:,}")
    start, end = _minutes(spread)
    rate = pl.col("sampling_rate").cast(pl.Int64)
    # Exporters are counted by a 64-bit hash of their text (cheaper to group than the text) and
    # named back from the survey's exporter list, whose hashes are checked to be distinct.
    names = pl.Series("exporter", list(rng.exporters), pl.String)
    lookup = names.to_frame().with_columns(xh=pl.col("exporter").hash())
    hashed = _hashes_distinct(names)
    xc = ["xh"] if by_exporter else []
    xh = pl.col("exporter").hash() if hashed else pl.col("exporter")
    base = scan(paths).with_columns(
        xh=pl.when(pl.col("exporter").is_not_null()).then(xh) if by_exporter else pl.lit(0)
    ).select(
        "src_ip", "dst_ip", "src_port", "dst_port", "proto", "tcp_flags", *xc,
        s=start - rng.first, e=end - rng.first,
        est_pkt=pl.col("packets").cast(pl.Int64) * rate,
        est_byt=pl.col("bytes").cast(pl.Int64) * rate,
        est_flow=rate)
    if not spread and not by_exporter:  # cheap range filter before the joins (spread needs the
        base = base.filter(pl.col("s").is_between(0, rng.n - 1))  # whole span, exporters all)
    # Codes once per flow, before the joins: the two ends share protocol and flags.
    base = base.with_columns(_codes()).select(
        "src_ip", "dst_ip", *xc, "s", "e", "est_pkt", "est_byt", "est_flow",
        cls_in=_cls(DIR_IN, "port_in_c"), cls_out=_cls(DIR_OUT, "port_out_c"))
    lazy_nodes = nodes.lazy().select("node", "node_idx")
    ends = []
    for ip, cls in (("dst_ip", "cls_in"), ("src_ip", "cls_out")):
        ends.append(base.join(lazy_nodes, left_on=ip, right_on="node", how="inner").select(
            "node_idx", *xc, "s", "e", "est_pkt", "est_byt", "est_flow",
            part=pl.col("node_idx").cast(pl.Int64) * (1 << _NODE_SHIFT) + pl.col(cls)))
    return pl.concat(ends), lookup, hashed


def class_tables() -> "ClassTables":
    """The class bits of `_cls` as lookup tables for the compiled scatter, computed by evaluating
    `_codes` and `_cls` on every (protocol, flags) pair with port 0, and on every port of a
    port-bearing protocol: the class is a sum of independent parts (direction, protocol, port,
    flag), and the port part of a port-bearing protocol depends on the port alone."""
    from netflowgen.features.scatter import ClassTables

    def cls(df: pl.DataFrame) -> pl.DataFrame:
        return df.with_columns(_codes()).select(cls_in=_cls(DIR_IN, "port_in_c"),
                                                cls_out=_cls(DIR_OUT, "port_out_c"))

    pf = np.arange(1 << 16)
    base = cls(pl.DataFrame({"proto": (pf >> 8).astype(np.uint8), "tcp_flags": (pf & 255).astype(np.uint8),
                             "src_port": np.zeros(1 << 16, np.uint16), "dst_port": np.zeros(1 << 16, np.uint16)}))
    bearing_proto = PORT_BEARING_PROTOCOLS[0]
    ports = cls(pl.DataFrame({"proto": np.full(1 << 16, bearing_proto, np.uint8),
                              "tcp_flags": np.zeros(1 << 16, np.uint8),
                              "src_port": pf.astype(np.uint16), "dst_port": pf.astype(np.uint16)}))
    bearing = np.isin(np.arange(256), PORT_BEARING_PROTOCOLS).astype(np.int64)
    return ClassTables(base["cls_in"].to_numpy(), base["cls_out"].to_numpy(),
                       ports["cls_in"].to_numpy() - ports["cls_in"][0],
                       ports["cls_out"].to_numpy() - ports["cls_out"][0], bearing)


def _node_enum(nodes: pl.DataFrame) -> pl.Enum:
    """The node IPs as an Enum whose physical code is node_idx (the node table's row number)."""
    names = nodes.sort("node_idx")["node"]
    if not names.equals(nodes["node"]) or not (nodes["node_idx"] == range(nodes.height)).all():
        raise AssertionError("node table must be sorted with node_idx = row number")
    return pl.Enum(names)


def _flow_rows(path: Path, offset: int, length: int, as_node: pl.Enum,
               exporter_key: pl.Expr | None) -> pl.LazyFrame:
    """The raw fields of a slice of `path` (`length` records from `offset`) for
    `DenseScatter.add`, one row per flow: dst_node, src_node (node_idx, -1 when that end is no
    node), proto, tcp_flags, src_port, dst_port, ts_ms, packets, bytes, sampling_rate and with
    `exporter_key` xkey (see `_exporter_keying`). Node indices come from a cast of the IP text
    to `as_node` (`_node_enum`; 1.7 s wall for 20 M flows against 2.2 s for two joins and a
    concat of their results, measured); the rest is computed in the compiled loop. Nulls (not in
    canonical flows, SPEC 1) get what the Polars expressions give them: no port class (port 0),
    unlisted flags, no measure, a minute outside every range."""
    def node_of(ip: str) -> pl.Expr:
        return pl.col(ip).cast(as_node, strict=False).to_physical().cast(pl.Int32).fill_null(-1)

    extra = [] if exporter_key is None else [exporter_key.alias("xkey")]
    never = -(1 << 62)  # ms: no minute of any range
    return scan([path]).slice(offset, length).select(
        *extra, dst_node=node_of("dst_ip"), src_node=node_of("src_ip"),
        proto=pl.col("proto").cast(pl.UInt8).fill_null(255),
        tcp_flags=pl.col("tcp_flags").cast(pl.UInt8).fill_null(255),
        src_port=pl.col("src_port").cast(pl.UInt16).fill_null(0),
        dst_port=pl.col("dst_port").cast(pl.UInt16).fill_null(0),
        ts_ms=pl.col("ts_start").dt.epoch("ms").fill_null(never),
        packets=pl.col("packets").cast(pl.Int64).fill_null(0),
        bytes=pl.col("bytes").cast(pl.Int64).fill_null(0),
        sampling_rate=pl.col("sampling_rate").cast(pl.Int64).fill_null(0))


def _exporter_keying(exporters: pl.Series) -> tuple[pl.Expr, np.ndarray]:
    """How the compiled scatter tells exporters apart: (the expression giving a flow's uint64
    key, the keys of the known exporter texts in their order). The key is the hash of the text
    (0.25 CPU s less than a cast to an Enum at 20 M flows), or the text's row in `exporters` (the
    Enum cast; null and unknown texts get len(exporters)) when two of the known texts, or one and
    a null, share a hash."""
    if _hashes_distinct(exporters):
        return pl.col("exporter").hash(), exporters.hash().to_numpy()
    code = (pl.col("exporter").cast(pl.Enum(exporters), strict=False).to_physical()
            .cast(pl.UInt64).fill_null(len(exporters)))
    return code, np.arange(len(exporters), dtype=np.uint64)


def _hashes_distinct(exporters: pl.Series) -> bool:
    """True when the (distinct, non-null) exporter texts and a null all hash differently."""
    h = pl.concat([exporters.cast(pl.String), pl.Series([None], dtype=pl.String)]).hash()
    return h.n_unique() == len(h)


_SLICE_ROWS = 1 << 21  # flow records per query of dense_aggregate (2 M: same speed as 4 M, 0.5 GB less peak)


def row_slices(path: Path, target: int = _SLICE_ROWS) -> list[tuple[int, int]]:
    """(offset, length) slices of about `target` records covering the file, cut at row-group
    boundaries where possible: a slice that ends inside a row group makes two queries decode that
    group (2 M-record slices of the benchmark file, 1 M-record row groups: 2.5 CPU s misaligned,
    2.0 CPU s aligned, measured). Row groups larger than 2 x target are cut into target slices."""
    meta = pq.ParquetFile(path).metadata
    out: list[tuple[int, int]] = []
    start = size = 0
    for g in range(meta.num_row_groups):
        rows = meta.row_group(g).num_rows
        if size and size + rows > target:
            out.append((start, size))
            start, size = start + size, 0
        if rows > 2 * target:
            out += [(start + k, min(target, rows - k)) for k in range(0, rows, target)]
            start += rows
            continue
        size += rows
    if size:
        out.append((start, size))
    return out


def dense_bytes(n_nodes: int, n_minutes: int) -> int:
    """Memory of `dense_aggregate`'s accumulator for a grid (86 features + a spare row, float64)."""
    return (len(FEATURES) + 1) * n_nodes * n_minutes * 8


def dense_aggregate(paths: list[Path], nodes: pl.DataFrame, rng: TimeRange,
                    by_exporter: bool = False) -> tuple["DenseChunks", pl.DataFrame | None]:
    """Second pass without the semi table (default attribution only): the flows stream out of
    Polars in slices, one row per flow with the node index of each end, and their node ends are
    added straight into the whole dense (86, nodes x minutes) float64 table
    (`scatter.DenseScatter`: 7 entries per node end through the routing slots, bucketed by node
    per slice; the 6 all-traffic features are summed from the protocol ones at the end,
    `derived_features`; the table's pages are allocated up front, `_zeros`), so memory is fixed by
    the grid (`dense_bytes`), not by the flows, and there is no group-by. Sums of integers in
    float64 are exact below 2^53, so the result equals the semi path's. `by_exporter`: also
    (node_idx, exporter, n) as in `semi_aggregate`."""
    from netflowgen.features.scatter import DenseScatter  # numba: imported only where used

    if nodes.height > MAX_NODES:
        raise ValueError(f"{nodes.height:,} nodes exceed the supported {MAX_NODES:,}")
    n_nodes, n_min = nodes.height, rng.n
    names = pl.Series("exporter", list(rng.exporters), pl.String)
    if names.n_unique() != len(names):
        raise AssertionError("exporter names from the survey are not distinct")
    n_x = len(names) + 1  # exporter codes 0..E-1, E = null or unknown
    counts = np.zeros(n_nodes * n_x, dtype=np.int64) if by_exporter else None
    derived = derived_features()
    routes = [np.stack(m, axis=1) if m else np.zeros((1 << _CLS_BITS, 0), np.int64)
              for m in routing_slots(skip=set(derived))]
    classes = class_tables()
    as_node = _node_enum(nodes)
    exporter_key, exporter_keys = _exporter_keying(names)

    def query(path: Path, offset: int, length: int) -> pl.DataFrame:
        return _flow_rows(path, offset, length, as_node,
                          exporter_key if by_exporter else None).collect(engine=ENGINE)

    # Slices of the input, one streaming query each, so at most two slices of flows are in memory
    # (collect_batches buffers without bound when the consumer is slower, measured); the next
    # slice is read in a thread (Polars releases the GIL, and so does the compiled scatter) while
    # this one is added.
    work = [(p, off, length) for p in paths for off, length in row_slices(p)]
    with ThreadPoolExecutor(max_workers=1) as pool, \
            progress_bar("features: adding flows", total=sum(w[2] for w in work)) as advance:
        pending = pool.submit(query, *work[0]) if work else None
        # The table's pages are populated (0.5 s for 1.7 GB here) while the first slice is read.
        out = _zeros((len(FEATURES) + 1, n_nodes * n_min))
        scatter = DenseScatter(out, n_nodes, n_min, rng.first, classes, routes, _CLS_BITS,
                               counts, n_x, exporter_keys)
        for k in range(len(work)):
            df = pending.result()  # type: ignore[union-attr]
            pending = pool.submit(query, *work[k + 1]) if k + 1 < len(work) else None
            scatter.add({c: df[c].to_numpy() for c in df.columns})
            advance(df.height)
            del df
    table = None
    if counts is not None:
        c = counts.reshape(n_nodes, n_x)
        ni, xi = np.nonzero(c)
        known = xi < len(names)
        table = pl.DataFrame({"node_idx": ni[known].astype(np.int32),
                              "exporter": names.to_numpy()[xi[known]] if len(names) else [],
                              "n": c[ni[known], xi[known]]},
                             schema={"node_idx": pl.Int32, "exporter": pl.String, "n": pl.Int64})
    return DenseChunks(out, derived), table


def _zeros(shape: tuple[int, int]) -> np.ndarray:
    """A zero-filled float64 array for the dense table, its pages allocated up front in one
    system call (anonymous mmap with MAP_POPULATE, Linux; else `np.zeros`). The scatter touches
    the 1.7 GB table at random: `np.zeros` leaves that to ~1 page fault per first touch, and
    numpy asks for transparent huge pages on large arrays, whose first touches compacted memory
    here (measured on one 4 M-record slice of the benchmark: 2.4-3.8 CPU s of system time with
    `np.zeros`, 1.0-1.2 s with 4 KiB pages faulted one by one, 0.6 s with MAP_POPULATE)."""
    n = shape[0] * shape[1] * 8
    flags = getattr(mmap, "MAP_POPULATE", None)
    if n == 0 or flags is None or not hasattr(mmap, "MAP_ANONYMOUS"):
        return np.zeros(shape, dtype=np.float64)
    try:
        buf = mmap.mmap(-1, n, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | flags)
    except (OSError, ValueError):
        return np.zeros(shape, dtype=np.float64)
    return np.frombuffer(buf, dtype=np.float64).reshape(shape)  # zeroed by the kernel


class DenseChunks:
    """Blocks of `dense_aggregate`'s finished table: views, no copy. The `derived` features
    (index -> the features they are the sum of) are filled block by block as the blocks are
    asked for, in the writer's thread, beside the encoding of the previous block."""

    def __init__(self, out: np.ndarray, derived: dict[int, list[int]] | None = None) -> None:
        self.out = out
        self.derived = derived or {}

    def __call__(self, lo: int, hi: int, n_minutes: int) -> np.ndarray:
        block = self.out[:len(FEATURES), lo * n_minutes:hi * n_minutes]
        for f, parts in self.derived.items():  # exact: integer sums below 2^53, in any order
            np.sum(block[parts], axis=0, out=block[f])
        return block


def derived_features() -> dict[int, list[int]]:
    """Features (index -> component indices) that equal the sum of a group of others for every
    class value: each "all traffic" feature is the sum of the protocol features of its direction
    and measure (the protocol classes partition the flows). Checked on all 1024 class values, so a
    change of the definition that breaks the partition just leaves the feature routed."""
    hits = _code_frame().select(feature_conditions()).to_numpy().astype(np.int64)  # (1024, 86)
    out = {}
    for i, f in enumerate(FEATURES):
        if f.code_column is not None:
            continue
        parts = [j for j, g in enumerate(FEATURES) if g.code_column == "proto"
                 and g.direction == f.direction and g.value_column == f.value_column]
        if parts and np.array_equal(hits[:, parts].sum(axis=1), hits[:, i]):
            out[i] = parts
    return out


def routing_slots(skip: set[int] | frozenset[int] = frozenset()) -> list[list[np.ndarray]]:
    """Per measure (est_pkt, est_byt, est_flow): the routing slots, each an array class value ->
    the feature index it feeds in that slot (all traffic, protocol, port, flag), or the spare row
    86 where it feeds none. Features in `skip` are fed by none (computed otherwise)."""
    hits = _code_frame().select(feature_conditions()).to_numpy()  # (1024, 86) bool
    spare = len(FEATURES)
    out = []
    for m in PolarsChunks.MEASURES:
        mine = np.array([f.value_column == m and i not in skip for i, f in enumerate(FEATURES)])
        per_cls = [np.flatnonzero(row & mine) for row in hits]
        width = max(len(x) for x in per_cls)
        table = np.full((len(per_cls), width), spare, dtype=np.int64)
        for c, feats in enumerate(per_cls):
            table[c, :len(feats)] = feats
        out.append([np.ascontiguousarray(table[:, k]) for k in range(width)])
    return out


def _code_frame() -> pl.DataFrame:
    """Every value of the packed class bits (the low _CLS_BITS of a key), decoded into the code
    columns the feature conditions read."""
    c = pl.col("cls")
    return pl.DataFrame({"cls": np.arange(1 << _CLS_BITS, dtype=np.int64)}).select(
        "cls",
        dir=(c // (1 << (_FLAG_BITS + _PORT_BITS + _PROTO_BITS))) % 2,
        proto_c=(c // (1 << (_FLAG_BITS + _PORT_BITS))) % (1 << _PROTO_BITS),
        port_c=(c // (1 << _FLAG_BITS)) % (1 << _PORT_BITS),
        flag_c=c % (1 << _FLAG_BITS))


def feature_conditions() -> list[pl.Expr]:
    """The 86 features compiled to Polars boolean expressions over the code columns dir, proto_c,
    port_c, flag_c (contract order); feature i sums its measure over the rows where condition i
    holds."""
    code_col = {"proto": "proto_c", "port": "port_c", "flag": "flag_c"}
    out = []
    for f in FEATURES:
        cond = pl.col("dir") == f.direction
        if f.code_column is not None:
            cond = cond & (pl.col(code_col[f.code_column]) == f.code)
        out.append(cond.alias(f.name))
    return out


class PolarsChunks:
    """Dense feature blocks for node ranges, scattered from the semi table.

    The feature conditions depend only on the class codes, so they are evaluated once on the
    1024 possible class values (not once per row) into routing tables: per measure, a few
    "slots" (all traffic, protocol, port, flag), each mapping a class value to the feature it
    feeds (or to a discarded spare row). A block is then one `np.bincount` over 10 entries per
    semi row (3 slots for pkt and byt, 4 for flow), instead of the 86 conditional sums of a
    group-by. The semi rows are sorted by key (node, minute, class) once, so a block of nodes is
    one contiguous slice of them.
    """

    MEASURES = ("est_pkt", "est_byt", "est_flow")

    def __init__(self, semi: pl.DataFrame) -> None:
        # Sorted by key = by node, then minute (Polars' multithreaded sort was faster here than a
        # radix bucketing by block in numpy, measured); numpy arrays only, so the caller can drop
        # the DataFrame.
        semi = semi.sort("key")
        keys = semi["key"].to_numpy()
        self.keys = keys
        self.vals = [semi[m].to_numpy().astype(np.float64) for m in self.MEASURES]
        del semi
        self.slots = routing_slots()

    def __call__(self, lo: int, hi: int, n_minutes: int) -> np.ndarray:
        a, b = np.searchsorted(self.keys, [lo << _NODE_SHIFT, hi << _NODE_SHIFT])
        key = self.keys[a:b]
        rows = slice(a, b)
        n = (hi - lo) * n_minutes
        pos = ((key >> _NODE_SHIFT) - lo) * n_minutes + ((key >> _CLS_BITS) & ((1 << _MINUTE_BITS) - 1))
        cls = key & ((1 << _CLS_BITS) - 1)
        r = len(pos)
        width = sum(len(x) for x in self.slots)
        idx = np.empty(width * r, dtype=np.int64)
        weights = np.empty(width * r, dtype=np.float64)
        j = 0
        for slots, val in zip(self.slots, self.vals):
            v = val[rows]
            for table in slots:
                np.add(np.take(table, cls) * n, pos, out=idx[j:j + r])
                weights[j:j + r] = v
                j += r
        out = np.bincount(idx, weights=weights, minlength=(len(FEATURES) + 1) * n)
        return out[:len(FEATURES) * n].reshape(len(FEATURES), n)
