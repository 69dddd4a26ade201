"""Reading the inputs of the detection commands and printing their tables."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl

from netflowgen.rejects import InputError


def read_table(path: Path | str) -> pl.DataFrame:
    """CSV or Parquet by extension; a clear error naming the file otherwise."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{p} does not exist")
    if p.suffix not in (".parquet", ".csv", ".txt"):
        raise InputError(f"{p}: expected .csv or .parquet")
    if p.suffix == ".parquet":
        return read_parquet(p)
    try:
        return pl.read_csv(p, try_parse_dates=False)
    except (OSError, pl.exceptions.PolarsError) as e:
        raise InputError(f"{p}: unreadable CSV ({' '.join(str(e).split())[:160]})") from None


def parquet_columns(path: Path | str) -> list[str]:
    """Column names of a Parquet file (nothing else read); a missing or unreadable file is one clear error."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{p} does not exist")
    try:
        return list(pl.read_parquet_schema(p))
    except (OSError, pl.exceptions.PolarsError) as e:
        raise InputError(f"{p}: not a readable Parquet file ({' '.join(str(e).split())[:160]})") from None


def read_parquet(path: Path | str) -> pl.DataFrame:
    """A Parquet file whatever its name; a missing or unreadable file is one clear error."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{p} does not exist")
    try:
        return pl.read_parquet(p)
    except (OSError, pl.exceptions.PolarsError) as e:
        raise InputError(f"{p}: not a readable Parquet file ({' '.join(str(e).split())[:160]})") from None


def print_table(df: pl.DataFrame | list[dict[str, Any]], title: str) -> None:
    """A rich table on the terminal (plain text when not a terminal)."""
    from rich.console import Console
    from rich.table import Table

    rows = df.to_dicts() if isinstance(df, pl.DataFrame) else df
    t = Table(title=title)
    if not rows:
        Console().print(f"{title}: (empty)")
        return
    for c in rows[0]:
        t.add_column(str(c), justify="right")
    for r in rows:
        t.add_row(*[f"{v:.4g}" if isinstance(v, float) else str(v) for v in r.values()])
    Console(width=160).print(t)


def markdown_table(rows: list[dict[str, Any]], digits: int = 2) -> str:
    """List of dicts (same keys) -> GitHub Markdown table."""
    if not rows:
        return "(no rows)\n"
    keys = list(rows[0])

    def fmt(v: Any) -> str:  # a "|" inside a cell is escaped, or the row gets one column too many
        return (f"{v:.{digits}f}" if isinstance(v, float) else str(v)).replace("|", "\\|")

    out = ["| " + " | ".join(fmt(k) for k in keys) + " |", "|" + "---|" * len(keys)]
    out += ["| " + " | ".join(fmt(r.get(k, "")) for k in keys) + " |" for r in rows]
    return "\n".join(out) + "\n"
