"""What every Polars pass of the features shares: the flow files as one LazyFrame, the minutes a
flow is attributed to, and the engine the queries run on."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import polars as pl

from netflowgen.schema import MS_PER_MINUTE

ENGINE: Literal["streaming"] = "streaming"


def scan(paths: list[Path]) -> pl.LazyFrame:
    """Canonical flow Parquet files (columns checked by the caller) as one LazyFrame."""
    return pl.scan_parquet([str(p) for p in paths])


def attributed_minutes(spread: bool) -> tuple[pl.Expr, pl.Expr]:
    """(first, last) attributed minute of a flow, minutes since the epoch (Int64)."""
    start = pl.col("ts_start").dt.epoch("ms") // MS_PER_MINUTE
    if not spread:
        return start, start
    end = pl.max_horizontal(pl.col("ts_end").dt.epoch("ms") // MS_PER_MINUTE, start)
    return start, end


