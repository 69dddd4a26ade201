"""Sparse node-minute rows -> the dense node-minute Parquet table (SPEC 3), in bounded memory.

The dense table has nodes x minutes rows, usually far more than fit comfortably in memory as 86
float64 columns, so it is written a few nodes at a time: for each node range the engine hands over
a zero-filled block of feature values with its traffic scattered in, and the block is written as
one Parquet row group (by Polars' streaming sink). Rows come out sorted by node, then minute.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import polars as pl
import pyarrow.parquet as pq
from polars.io.plugins import register_io_source  # unstable in Polars, covered by the tests

from netflowgen.features.timeline import TimeRange
from netflowgen.progress import progress_bar
from netflowgen.schema import FEATURE_NAMES, MS_PER_MINUTE, NODE_MINUTE_SCHEMA

# (lo, hi, n_minutes) -> the feature values of nodes lo..hi-1 x all minutes: float64 array of shape
# (86, (hi - lo) * n_minutes), one row per feature in contract order, node-major then minute.
ChunkSource = Callable[[int, int, int], np.ndarray]
# (lo, hi, the block's feature values, the block's missing flags (rows,) bool) -> the block's
# missing flags under a further rule (e.g. `OwnRange`); applied to every block before it is written.
MissingRule = Callable[[int, int, np.ndarray, np.ndarray], np.ndarray]
_FLOW_ROWS = [FEATURE_NAMES.index("in_all_flow"), FEATURE_NAMES.index("out_all_flow")]


class OwnRange:
    """`node_range = "own"`: a node-minute outside the node's own observed range - before the first
    or after the last minute of the table in which the node has a flow (in or out: `in_all_flow` or
    `out_all_flow` non-zero), both edges inside the range - is missing too; a node without any flow
    in the table is missing in every minute. Decided from the block's values, so it is the same for
    every engine and attribution (with spreading, a minute a flow covers counts). `added`: the
    node-minutes it marked that were not missing already."""

    def __init__(self, n_minutes: int) -> None:
        self.n_minutes = n_minutes
        self.added = 0

    def __call__(self, lo: int, hi: int, values: np.ndarray, missing: np.ndarray) -> np.ndarray:
        n_min = self.n_minutes
        seen = (values[_FLOW_ROWS] != 0).any(axis=0).reshape(hi - lo, n_min)
        first = np.where(seen.any(axis=1), seen.argmax(axis=1), n_min)  # none seen: all outside
        last = n_min - 1 - seen[:, ::-1].argmax(axis=1)
        minute = np.arange(n_min)
        outside = ((minute[None, :] < first[:, None]) | (minute[None, :] > last[:, None])).ravel()
        self.added += int((outside & ~missing).sum())
        return missing | outside


def scatter_sparse(sparse: pl.DataFrame, lo: int, hi: int, n_minutes: int) -> np.ndarray:
    """Sparse rows (node_idx, minute offset, *FEATURE_NAMES) of nodes lo..hi-1 -> the zero-filled
    (86, (hi - lo) * n_minutes) block of `ChunkSource`."""
    n = (hi - lo) * n_minutes
    values = np.zeros((len(FEATURE_NAMES), n), dtype=np.float64)
    if sparse.height:
        pos = ((sparse["node_idx"].to_numpy().astype(np.int64) - lo) * n_minutes
               + sparse["minute"].to_numpy().astype(np.int64))
        if pos.min() < 0 or pos.max() >= n or len(np.unique(pos)) != len(pos):
            raise AssertionError("engine returned rows outside the chunk or duplicate node-minutes")
        values[:, pos] = sparse.select(FEATURE_NAMES).to_numpy(order="fortran").T
    return values


def nodes_per_chunk(chunk_rows: int, n_minutes: int) -> int:
    """Whole nodes per written block so that a block has about `chunk_rows` rows (at least 1)."""
    return max(1, chunk_rows // max(1, n_minutes))


# The node-minute schema as Polars types (the blocks handed to the sink; `pl.from_arrow` of the
# Arrow schema would import pandas, 0.3 s).
_POLARS_TYPES: dict[str, Any] = {"node": pl.String, "customer": pl.String, "minute": pl.Datetime("ms", "UTC"),
                                 "missing": pl.Boolean, **{name: pl.Float64 for name in FEATURE_NAMES}}
POLARS_NODE_MINUTE_SCHEMA = pl.Schema(_POLARS_TYPES)
assert list(POLARS_NODE_MINUTE_SCHEMA) == NODE_MINUTE_SCHEMA.names
# Parquet codec names of the config -> Polars' names.
_POLARS_CODEC = {"none": "uncompressed"}


def write_dense(out: Path, nodes: pl.DataFrame, rng: TimeRange, chunks: ChunkSource,
                chunk_rows: int = 262_144, compression: str = "zstd",
                node_missing: tuple[np.ndarray, np.ndarray] | None = None,
                missing_rule: MissingRule | None = None) -> int:
    """Write the dense table for `nodes` (node table: node, customer, node_idx = row number) over
    `rng` to `out` (atomically: a temporary file renamed at the end). Returns the row count
    (= nodes x minutes). `node_missing`: (matrix of missing minutes, row of it per node), see
    `TimeRange.node_missing`; None: `rng.missing` for every node. `missing_rule`: a further rule
    applied to each block's missing flags (`OwnRange`).

    The blocks are built here and handed to Polars' streaming Parquet sink, which encodes and
    compresses the columns of a row group on all cores (pyarrow's writer uses one: 1.8 s against
    1.1 s for 2.45 M rows x 90 columns here, measured); the file has `NODE_MINUTE_SCHEMA` exactly."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    n_nodes, n_min = nodes.height, rng.n
    per_chunk = nodes_per_chunk(chunk_rows, n_min)
    names = nodes["node"].cast(pl.String)
    customers = nodes["customer"].cast(pl.String)
    minute_ms = (rng.first + np.arange(n_min, dtype=np.int64)) * MS_PER_MINUTE
    if node_missing is None or len(node_missing[1]) != n_nodes:
        node_missing = (rng.missing[None, :], np.zeros(n_nodes, np.int64))
    try:
        if n_nodes == 0:
            pq.write_table(NODE_MINUTE_SCHEMA.empty_table(), tmp)
        else:
            with progress_bar("features: writing node-minutes", total=n_nodes) as advance:
                def blocks(with_columns: list[str] | None, predicate: pl.Expr | None,
                           n_rows: int | None, batch_size: int | None) -> Iterator[pl.DataFrame]:
                    for lo in range(0, n_nodes, per_chunk):
                        hi = min(n_nodes, lo + per_chunk)
                        missing = node_missing[0][node_missing[1][lo:hi]].ravel()
                        values = chunks(lo, hi, n_min)
                        if missing_rule is not None:
                            missing = missing_rule(lo, hi, values, missing)
                        df = _block(lo, hi, values, names, customers, minute_ms, missing)
                        advance(hi - lo)
                        if predicate is not None:
                            df = df.filter(predicate)
                        yield df.select(with_columns) if with_columns is not None else df

                metadata = {k.decode(): v.decode() for k, v in (NODE_MINUTE_SCHEMA.metadata or {}).items()}
                codec: Any = _POLARS_CODEC.get(compression, compression)  # a Literal of Polars' codecs
                register_io_source(blocks, schema=POLARS_NODE_MINUTE_SCHEMA).sink_parquet(
                    tmp, compression=codec,
                    compression_level=1 if compression == "zstd" else None,
                    row_group_size=per_chunk * n_min, arrow_schema=NODE_MINUTE_SCHEMA,
                    metadata=metadata)
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            tmp.unlink()
    return n_nodes * n_min


def _block(lo: int, hi: int, values: np.ndarray, names: pl.Series, customers: pl.Series,
           minute_ms: np.ndarray, missing: np.ndarray) -> pl.DataFrame:
    """DataFrame of nodes lo..hi-1 x all minutes around the (86, rows) feature `values` (its rows
    are used without copying); `missing`: (rows,) bool, node-major like the values."""
    n_min = len(minute_ms)
    if values.shape != (len(FEATURE_NAMES), (hi - lo) * n_min):
        raise AssertionError(f"engine block has shape {values.shape}")
    node_ix = pl.Series(np.repeat(np.arange(lo, hi, dtype=np.uint32), n_min))
    cols = [names.gather(node_ix).alias("node"), customers.gather(node_ix).alias("customer"),
            pl.Series("minute", np.tile(minute_ms, hi - lo)).cast(pl.Datetime("ms", "UTC")),
            pl.Series("missing", missing, dtype=pl.Boolean)]
    cols += [pl.Series(name, values[j]) for j, name in enumerate(FEATURE_NAMES)]
    return pl.DataFrame(cols)
