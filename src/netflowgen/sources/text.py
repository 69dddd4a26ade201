"""Helpers shared by the text readers: listing input files and reading lines in bounded chunks."""

from __future__ import annotations

import fnmatch
from itertools import islice
from pathlib import Path
from typing import IO, Callable, Iterable, Iterator, Sequence

import polars as pl

from netflowgen.rejects import InputError


def expand_paths(paths: Sequence[str | Path], patterns: Sequence[str] = ("*",)) -> list[Path]:
    """Files given, plus the files under each directory given whose name matches one of `patterns`
    (recursive, sorted, hidden files skipped). Raises InputError for a path that does not exist or a
    directory holding no matching file."""
    out: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if p.is_file():
            out.append(p)
        elif p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and not f.name.startswith(".")
                           and any(fnmatch.fnmatch(f.name, pat) for pat in patterns))
            if not found:
                raise InputError(f"{p}: directory holds no input file matching {list(patterns)}")
            out.extend(found)
        else:
            raise InputError(f"{p}: no such file or directory")
    return out


def line_chunks(stream: IO[bytes], size: int, first_line: int = 1
                ) -> Iterator[tuple[int, list[bytes]]]:
    """Yield (number of the chunk's first line, up to `size` raw lines without line endings)."""
    line_no = first_line
    while True:
        chunk = list(islice(stream, size))
        if not chunk:
            return
        yield line_no, [ln.rstrip(b"\r\n") for ln in chunk]
        line_no += len(chunk)


def split_fields(lines: Iterable[tuple[int, bytes]], names: Sequence[str], sep: str | None,
                 on_bad: Callable[[int, str, str], None], encoding: str = "utf-8",
                 splitter: Callable[[str], list[str]] | None = None) -> pl.DataFrame:
    """Split numbered lines into a String frame with columns `names` plus `_line`.

    A line with another number of fields is reported through `on_bad(line_no, reason, text)` and
    left out (it is counted as a rejected record by the caller's RejectCounter).
    """
    width = len(names)
    rows: list[list[str]] = []
    numbers: list[int] = []
    for no, raw in lines:
        try:
            text = raw.decode(encoding)
        except UnicodeDecodeError:
            on_bad(no, "garbage line", repr(raw[:60]))
            continue
        fields = splitter(text) if splitter else text.split(sep)
        if len(fields) != width:
            on_bad(no, "garbage line", f"{len(fields)} fields, expected {width}: {text[:60]!r}")
            continue
        rows.append(fields)
        numbers.append(no)
    if not rows:
        return pl.DataFrame({**{n: pl.Series(n, [], pl.String) for n in names},
                             "_line": pl.Series("_line", [], pl.Int64)})
    cols = list(zip(*rows))
    data = {n: pl.Series(n, cols[i], pl.String) for i, n in enumerate(names)}
    data["_line"] = pl.Series("_line", numbers, pl.Int64)
    return pl.DataFrame(data)


def require_columns(file: str, have: Sequence[str], need: Sequence[str], optional: Sequence[str] = (),
                    allow_extra: bool = True) -> None:
    """Raise InputError naming the missing (and, when extras are not allowed, the extra) columns."""
    missing = [c for c in need if c not in have]
    extra = [] if allow_extra else [c for c in have if c not in need and c not in optional]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing column(s) {missing}")
        if extra:
            parts.append(f"unexpected column(s) {extra}")
        raise InputError(f"{file}: {'; '.join(parts)} (found {list(have)})")
