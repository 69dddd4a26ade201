"""Every input format -> canonical flow record batches (SPEC 1).

    open_source(paths, fmt, options, rejects) -> Iterator[pa.RecordBatch]   # schema.FLOW_SCHEMA
    write_flows(batches, out, rejects) -> int                                # one Parquet file

Each reader streams its input in chunks of `options.batch_size` records and ends with the shared
`normalize` step (validation, rejects by reason, sampling resolution). See docs/sources.md.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import pyarrow as pa
import pyarrow.parquet as pq

from netflowgen.rejects import InputError, RejectCounter
from netflowgen.schema import FLOW_SCHEMA
from netflowgen.sources.options import SourceOptions

__all__ = ["FORMATS", "SourceOptions", "open_source", "write_flows", "guess_format"]

# format -> "module:function", each function(paths, options, rejects) -> Iterator[pa.RecordBatch].
_READERS: dict[str, str] = {
    "parquet": "table:read_parquet",
    "nfcapd": "nfcapd:read_nfcapd",
    "nfdump-csv": "nfdump_csv:read_nfdump_csv",
    "zeek": "zeek:read_zeek",
    "argus": "argus:read_argus",
    "pcap": "pcap:read_pcap",
    "csv": "table:read_csv",
}
FORMATS: tuple[str, ...] = tuple(_READERS)


# format -> "module:constant" naming the files its reader takes from a directory.
_PATTERNS: dict[str, str] = {
    "parquet": "table:PARQUET_PATTERNS", "nfcapd": "nfcapd:FILE_PATTERNS", "nfdump-csv": "nfdump_csv:FILE_PATTERNS",
    "zeek": "zeek:FILE_PATTERNS", "argus": "argus:FILE_PATTERNS", "pcap": "pcap:PCAP_PATTERNS",
    "csv": "table:CSV_PATTERNS",
}


def _files(fmt: str, paths: Sequence[str | Path]) -> list[Path]:
    """The input files a reader of `fmt` reads from `paths` (directories expanded)."""
    from netflowgen.sources.text import expand_paths
    module, name = _PATTERNS[fmt].split(":")
    files = expand_paths(paths, getattr(importlib.import_module(f"netflowgen.sources.{module}"), name))
    return [f for f in files if not (fmt == "nfcapd" and f.name.startswith("nfcapd.current"))]


def _reader(fmt: str) -> Callable[..., Iterator[pa.RecordBatch]]:
    module, func = _READERS[fmt].split(":")
    return getattr(importlib.import_module(f"netflowgen.sources.{module}"), func)


def guess_format(path: str | Path) -> str:
    """Guess the format of a file or directory from its name and first bytes ("auto")."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: no such file or directory")
    if p.is_dir():
        names = [f.name for f in sorted(p.rglob("*")) if f.is_file()]
        if any(n.startswith("nfcapd.") for n in names):
            return "nfcapd"
        if any(n.startswith("conn") and ".log" in n for n in names):
            return "zeek"
        raise InputError(f"{p}: cannot guess the format of this directory; pass --format")
    name = p.name.lower()
    if name.endswith((".pcap", ".pcapng", ".cap")):
        return "pcap"
    if name.endswith(".parquet"):
        return "parquet"
    if name.endswith(".binetflow"):
        return "argus"
    if name.startswith("nfcapd.") or name.endswith((".nfcapd", ".nfdump")):
        return "nfcapd"
    with open(p, "rb") as f:
        head = f.read(4096)
    if head.startswith(b"#separator"):
        return "zeek"
    first = head.split(b"\n", 1)[0]
    if first.startswith(b"ts,te,td,sa,da,sp,dp,pr,flg"):
        return "nfdump-csv"
    if first.startswith(b"StartTime,") and b",Dir," in first:
        return "argus"
    if head[:4] in (b"\xd4\xc3\xb2\xa1", b"\xa1\xb2\xc3\xd4", b"\x0a\x0d\x0d\x0a",
                    b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d"):
        return "pcap"
    if b"," in first:
        return "csv"
    raise InputError(f"{p}: cannot guess the format of this file; pass --format")


def check_timezone(name: str) -> None:
    """InputError unless `name` is an IANA time zone this machine knows (e.g. Europe/Berlin, UTC)."""
    import zoneinfo
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise InputError(f"unknown time zone {name!r}: use an IANA name such as UTC or Europe/Berlin") from None


def open_source(paths: Sequence[str | Path], fmt: str, options: SourceOptions | None = None,
                rejects: RejectCounter | None = None) -> Iterator[pa.RecordBatch]:
    """Stream canonical flow record batches (schema.FLOW_SCHEMA exactly) from files/dirs of format fmt.

    fmt is one of FORMATS, or "auto" to guess from the first path. Bad records are counted in
    `rejects` by reason; raises InputError (naming the file) when a file is unusable, or when the
    source yields no valid record (only bad records, or none at all).
    """
    options = options or SourceOptions()
    rejects = rejects if rejects is not None else RejectCounter()
    if not paths:
        raise InputError("no input path given")
    if fmt == "auto":
        fmt = guess_format(paths[0])
    if fmt not in _READERS:
        raise InputError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)} or auto")
    if options.batch_size <= 0:
        raise InputError(f"batch_size must be positive, got {options.batch_size}")
    check_timezone(options.input_timezone)
    try:
        options.time_window_ms()
    except ValueError as e:
        raise InputError(str(e)) from None
    return _checked(paths, fmt, options, rejects)


def _checked(paths: Sequence[str | Path], fmt: str, options: SourceOptions,
             rejects: RejectCounter) -> Iterator[pa.RecordBatch]:
    accepted0, rejected0 = rejects.accepted, rejects.rejected
    yielded = 0
    groups: list[Sequence[str | Path]] = [paths]
    if options.skip_bad_files:
        groups = [[f] for f in _files(fmt, paths)]
    for group in groups:
        try:
            for batch in _reader(fmt)(group, options, rejects):
                if batch.schema != FLOW_SCHEMA:  # a reader bug, not user input: fail loudly
                    raise AssertionError(f"{fmt} reader produced {batch.schema}, not FLOW_SCHEMA")
                yielded += batch.num_rows
                yield batch
        except InputError as e:
            if not options.skip_bad_files:
                raise
            rejects.bad_files.append(" ".join(str(e).split()))
    if yielded == 0:
        where = ", ".join(str(p) for p in paths[:3]) + (" ..." if len(paths) > 3 else "")
        bad = rejects.rejected - rejected0
        if bad:
            reasons = "; ".join(f"{r}: {n}" for r, n in rejects.counts.most_common(3))
            hint = ("; records carry no sampling rate: give a default (1 = unsampled) or a "
                    "per-exporter rate" if rejects.counts.get("no sampling rate") else "")
            raise InputError(f"{where}: all {bad:,} records were rejected as {fmt} ({reasons})"
                             + (f", e.g. {_first_sample(rejects)}" if _first_sample(rejects) else "")
                             + hint)
        raise InputError(f"{where}: no flow record found (format {fmt})")
    assert rejects.accepted - accepted0 == yielded


def _first_sample(rejects: RejectCounter) -> str:
    for reason, _ in rejects.counts.most_common():
        if rejects.samples.get(reason):
            return rejects.samples[reason][0]
    return ""


def write_flows(batches: Iterable[pa.RecordBatch], out: str | Path,
                rejects: RejectCounter | None = None) -> int:
    """Stream batches into one canonical Parquet file (zstd); returns the number of records written.

    The file is written to `out.partial` and renamed at the end, so a failed run leaves no file that
    looks complete. `rejects` is not modified here; it is accepted so callers can pass it through.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".partial")
    n = 0
    try:
        with pq.ParquetWriter(tmp, FLOW_SCHEMA, compression="zstd") as writer:
            for batch in batches:
                if batch.num_rows:
                    writer.write_batch(batch.cast(FLOW_SCHEMA) if batch.schema != FLOW_SCHEMA
                                       else batch)
                    n += batch.num_rows
        tmp.replace(out)
    finally:
        tmp.unlink(missing_ok=True)
    return n
