"""The dense node-minute table held in memory as an array, for slicing example windows.

The features stage writes a dense table (every node has a row for every minute), so sorting by
(node, minute) and reshaping gives (n_nodes, n_minutes, F) without any joins.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import polars as pl

from netflowgen.rejects import InputError
from netflowgen.schema import FEATURE_NAMES


@dataclass
class NodeMinuteCube:
    nodes: list[str]  # node IPs, sorted
    customers: list[str]  # customer of each node
    minutes: np.ndarray  # (T,) int64 UTC ms of each minute's start
    values: np.ndarray  # (n_nodes, T, F) float32 feature values
    missing: np.ndarray  # (n_nodes, T) bool
    features: tuple[str, ...]

    @classmethod
    def from_table(cls, table: pl.DataFrame, features: Sequence[str] = FEATURE_NAMES) -> "NodeMinuteCube":
        """Node-minute table (node, customer, minute, missing, features...) -> cube."""
        absent = [c for c in ("node", "customer", "minute", *features) if c not in table.columns]
        if absent:
            raise InputError(f"not a node-minute table: missing column(s) {absent[:6]}"
                             f"{' ...' if len(absent) > 6 else ''} (a table from `netflowgen features`?)")
        if table.height == 0:
            raise InputError("the node-minute table has no rows")
        df = table.with_columns(pl.col("minute").cast(pl.Datetime("ms")).dt.epoch("ms").alias("_ms"))
        df = df.sort(["node", "_ms"])
        nodes = df.get_column("node").unique(maintain_order=True).to_list()
        minutes = np.unique(df.get_column("_ms").to_numpy())
        n, t = len(nodes), len(minutes)
        if df.height != n * t:
            raise InputError(f"node-minute table is not dense: {df.height} rows for {n} nodes x {t} minutes")
        first = df.group_by("node", maintain_order=True).agg(pl.col("customer").first())
        values = df.select(list(features)).to_numpy().astype(np.float32).reshape(n, t, len(features))
        missing = (df.get_column("missing").to_numpy() if "missing" in df.columns
                   else np.zeros(n * t, bool)).reshape(n, t)
        return cls(nodes, [str(c) for c in first.get_column("customer").to_list()], minutes, values,
                   missing.astype(bool), tuple(features))

    @classmethod
    def read(cls, path: Path | str, features: Sequence[str] = FEATURE_NAMES) -> "NodeMinuteCube":
        return cls.from_table(pl.read_parquet(path), features)

    def part(self, rows: Sequence[int] | np.ndarray | None = None, lo: int = 0, hi: int | None = None) -> "NodeMinuteCube":
        """The cube of node rows `rows` (default all) and minutes [lo, hi) (views where numpy allows)."""
        if rows is None:
            return NodeMinuteCube(self.nodes, self.customers, self.minutes[lo:hi], self.values[:, lo:hi],
                                  self.missing[:, lo:hi], self.features)
        r = np.asarray(rows, dtype=np.int64)
        return NodeMinuteCube([self.nodes[i] for i in r], [self.customers[i] for i in r], self.minutes[lo:hi],
                              self.values[r, lo:hi], self.missing[r, lo:hi], self.features)

    def column(self, name: str) -> np.ndarray:
        """(n_nodes, T) values of one feature."""
        return self.values[:, :, self.features.index(name)]

    def windows(self, node: np.ndarray, start: np.ndarray, length: int,
                columns: Sequence[str] | None = None) -> np.ndarray:
        """(N,) node rows and window start minutes -> (N, length, C) values (float32)."""
        cols = [self.features.index(c) for c in columns] if columns is not None else slice(None)
        idx = np.asarray(start)[:, None] + np.arange(length)[None, :]
        return self.values[np.asarray(node)[:, None], idx][..., cols]

    def hours(self, start: np.ndarray, length: int) -> np.ndarray:
        """(N,) window starts -> (N, length) UTC hour of day of each minute."""
        idx = np.asarray(start)[:, None] + np.arange(length)[None, :]
        return ((self.minutes[idx] // 3_600_000) % 24).astype(np.int64)


def key_columns(cube: NodeMinuteCube) -> dict[str, Any]:
    """node, customer, minute (UTC), missing of every (node, minute) of a cube, node-major."""
    n, T = len(cube.nodes), len(cube.minutes)
    return {"node": np.repeat(np.asarray(cube.nodes, dtype=object), T).tolist(),
            "customer": np.repeat(np.asarray(cube.customers, dtype=object), T).tolist(),
            "minute": pl.Series(np.tile(cube.minutes, n), dtype=pl.Int64).cast(pl.Datetime("ms"))
            .cast(pl.Datetime("ms", "UTC")),
            "missing": cube.missing.reshape(-1)}


def cube_to_table(cube: NodeMinuteCube) -> pl.DataFrame:
    """The dense node-minute table of a cube (node, customer, minute, missing, features)."""
    n, T = len(cube.nodes), len(cube.minutes)
    cols = key_columns(cube)
    vals = cube.values.reshape(n * T, -1)
    cols.update({f: vals[:, i].astype(np.float64) for i, f in enumerate(cube.features)})
    return pl.DataFrame(cols)
