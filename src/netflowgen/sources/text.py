"""Helpers shared by the text readers: listing input files and reading lines in bounded chunks."""

from __future__ import annotations

import fnmatch
from itertools import islice
from pathlib import Path
from typing import IO, Callable, Iterator, Sequence

import polars as pl

from netflowgen.rejects import InputError, RejectCounter


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


def text_frames(stream: IO[bytes], names: Sequence[str], sep: str, size: int, file: str,
                rejects: RejectCounter, first_line: int = 1,
                keep: Callable[[bytes], bool] = bool, three_spaces: bool = False,
                ) -> Iterator[pl.DataFrame]:
    """The shared loop of the delimited-text readers: chunks of `size` lines of `stream` split
    into String frames (columns `names` plus `_line`, see `split_fields`). Lines for which
    `keep(raw line)` is false (default: empty lines) are skipped; malformed ones are counted in
    `rejects` as "garbage line", naming `file` and the line number (lines counted from
    `first_line`)."""
    def bad(no: int, why: str, detail: str) -> None:
        rejects.reject(why, f"{file}:{no} {detail}")

    for first, lines in line_chunks(stream, size, first_line):
        numbered = [(first + i, ln) for i, ln in enumerate(lines) if keep(ln)]
        yield split_fields(numbered, names, sep, on_bad=bad, three_spaces=three_spaces)


def _utf8_lines(raws: list[bytes]) -> pl.Series:
    """Lines as a String series, null for a line that is not UTF-8: the whole batch decodes at once
    in the common case; only a batch holding a bad line is decoded line by line. (Polars' own cast
    raises on the first bad byte since Polars 2.)"""
    series = pl.Series("text", raws, pl.Binary)
    try:
        return series.cast(pl.String)
    except (pl.exceptions.ComputeError, pl.exceptions.InvalidOperationError):
        decoded: list[str | None] = []
        for raw in raws:
            try:
                decoded.append(raw.decode("utf-8"))
            except UnicodeDecodeError:
                decoded.append(None)
        return pl.Series("text", decoded, pl.String)


def split_fields(lines: Sequence[tuple[int, bytes]], names: Sequence[str], sep: str,
                 on_bad: Callable[[int, str, str], None], three_spaces: bool = False,
                 ) -> pl.DataFrame:
    """Split numbered raw lines into a String frame with columns `names` plus `_line`.

    Done in Polars (vectorized): the per-line Python loop was the bottleneck of the text readers.
    three_spaces: also split on runs of exactly three spaces (IoT-23 Zeek logs).
    A line that is not UTF-8 or has another number of fields is reported through
    `on_bad(line_no, "garbage line", detail)` and left out.
    """
    width = len(names)
    if not lines:
        return pl.DataFrame({**{n: pl.Series(n, [], pl.String) for n in names},
                             "_line": pl.Series("_line", [], pl.Int64)})
    numbers = pl.Series("_line", [no for no, _ in lines], pl.Int64)
    text = _utf8_lines([raw for _, raw in lines])  # null where a line is not UTF-8
    if three_spaces:
        text = text.str.replace_all("   ", sep, literal=True)
    parts = text.str.split(sep, inclusive=False)
    count = parts.list.len().fill_null(-1)
    ok = count == width
    if not ok.all():
        for i in (~ok).arg_true().to_list():
            no, raw = lines[i]
            detail = (f"{count[i]} fields, expected {width}: {raw[:60].decode('utf-8', 'replace')!r}"
                      if count[i] >= 0 else f"not UTF-8 text: {raw[:60]!r}")
            on_bad(no, "garbage line", detail)
        parts, numbers = parts.filter(ok), numbers.filter(ok)
    data = {n: parts.list.get(i).alias(n) for i, n in enumerate(names)}
    return pl.DataFrame({**data, "_line": numbers})


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
