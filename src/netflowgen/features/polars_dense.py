"""The dense path (default attribution): flows stream out of Polars in slices and their node ends
are added straight into the whole dense table by the compiled scatter (`scatter.DenseScatter`)."""

from __future__ import annotations

import mmap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow.parquet as pq

from netflowgen.features import exporters
from netflowgen.features.classes import CLS_BITS, MAX_NODES, class_tables, derived_features, routing_slots
from netflowgen.features.definition import FEATURES
from netflowgen.features.polars_scan import ENGINE, scan
from netflowgen.features.timeline import TimeRange
from netflowgen.progress import progress_bar


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
    `exporter_key` xkey (see `exporters.exporter_keying`). Node indices come from a cast of the IP text
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
    routes = [np.stack(m, axis=1) if m else np.zeros((1 << CLS_BITS, 0), np.int64)
              for m in routing_slots(skip=set(derived))]
    classes = class_tables()
    as_node = _node_enum(nodes)
    exporter_key, exporter_keys = exporters.exporter_keying(names)

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
        scatter = DenseScatter(out, n_nodes, n_min, rng.first, classes, routes, CLS_BITS,
                               counts, n_x, exporter_keys)
        for k in range(len(work)):
            assert pending is not None  # one query per slice: submitted for every k
            df = pending.result()
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


