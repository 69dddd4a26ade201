"""Sparse node-minute rows -> the dense node-minute Parquet table (SPEC 3), in bounded memory.

The dense table has nodes x minutes rows, usually far more than fit comfortably in memory as 86
float64 columns, so it is written a few nodes at a time: for each node range the engine hands over
a zero-filled block of feature values with its traffic scattered in, and the block is written as
one Parquet row group. Rows come out sorted by node, then minute.
"""

from __future__ import annotations

import os
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Callable

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from netflowgen.features.timeline import MS_PER_MINUTE, TimeRange
from netflowgen.progress import progress_bar
from netflowgen.schema import FEATURE_NAMES, NODE_MINUTE_SCHEMA, TIMESTAMP

# (lo, hi, n_minutes) -> the feature values of nodes lo..hi-1 x all minutes: float64 array of shape
# (86, (hi - lo) * n_minutes), one row per feature in contract order, node-major then minute.
ChunkSource = Callable[[int, int, int], np.ndarray]


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


def write_dense(out: Path, nodes: pl.DataFrame, rng: TimeRange, chunks: ChunkSource,
                chunk_rows: int = 262_144, compression: str = "zstd",
                node_missing: tuple[np.ndarray, np.ndarray] | None = None) -> int:
    """Write the dense table for `nodes` (node table: node, customer, node_idx = row number) over
    `rng` to `out` (atomically: a temporary file renamed at the end). Returns the row count
    (= nodes x minutes). `node_missing`: (matrix of missing minutes, row of it per node), see
    `TimeRange.node_missing`; None: `rng.missing` for every node."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    n_nodes, n_min = nodes.height, rng.n
    per_chunk = nodes_per_chunk(chunk_rows, n_min)
    names = nodes["node"].to_arrow().cast(pa.string())
    customers = nodes["customer"].to_arrow().cast(pa.string())
    minute_ms = (rng.first + np.arange(n_min, dtype=np.int64)) * MS_PER_MINUTE
    if node_missing is None or len(node_missing[1]) != n_nodes:
        node_missing = (rng.missing[None, :], np.zeros(n_nodes, np.int64))
    rows = 0
    try:
        # Dictionaries and statistics only where they pay: on the key columns. For the 86 mostly
        # zero float columns they cost more CPU than the whole pivot (measured), and zstd alone
        # already packs the zero runs.
        with pq.ParquetWriter(tmp, NODE_MINUTE_SCHEMA, compression=compression,
                              compression_level=1 if compression == "zstd" else None,
                              use_dictionary=["node", "customer"],
                              write_statistics=["node", "customer", "minute", "missing"]) as writer, \
                progress_bar("features: writing node-minutes", total=n_nodes) as advance:
            # Encoding a block (pyarrow, GIL released) overlaps with building the next one; at
            # most one block waits, so memory stays at about two blocks.
            with ThreadPoolExecutor(max_workers=1) as pool:
                pending: Future[None] | None = None
                for lo in range(0, n_nodes, per_chunk):
                    hi = min(n_nodes, lo + per_chunk)
                    missing = node_missing[0][node_missing[1][lo:hi]].ravel()
                    block = _block(lo, hi, chunks(lo, hi, n_min), names, customers, minute_ms,
                                   missing)
                    if pending is not None:
                        pending.result()
                    pending = pool.submit(writer.write_table, block)
                    rows += block.num_rows
                    advance(hi - lo)
                if pending is not None:
                    pending.result()
            if n_nodes == 0:
                writer.write_table(NODE_MINUTE_SCHEMA.empty_table())
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            tmp.unlink()
    return rows


def _block(lo: int, hi: int, values: np.ndarray, names: pa.Array, customers: pa.Array,
           minute_ms: np.ndarray, missing: np.ndarray) -> pa.Table:
    """Arrow table of nodes lo..hi-1 x all minutes around the (86, rows) feature `values`;
    `missing`: (rows,) bool, node-major like the values."""
    n_min = len(minute_ms)
    if values.shape != (len(FEATURE_NAMES), (hi - lo) * n_min):
        raise AssertionError(f"engine block has shape {values.shape}")
    node_ix = pa.array(np.repeat(np.arange(lo, hi, dtype=np.int32), n_min))
    cols = [
        pa.DictionaryArray.from_arrays(node_ix, names).cast(pa.string()),
        pa.DictionaryArray.from_arrays(node_ix, customers).cast(pa.string()),
        pa.array(np.tile(minute_ms, hi - lo), type=pa.int64()).cast(TIMESTAMP),
        pa.array(missing, type=pa.bool_()),
    ] + [pa.array(values[j]) for j in range(len(FEATURE_NAMES))]
    return pa.Table.from_arrays(cols, schema=NODE_MINUTE_SCHEMA)
