"""Flow tables in CSV or Parquet: a column map (canonical name -> source column), or a preset for
a known dataset family (`presets.py`), then the shared normalization.

Canonical Parquet (what `write_flows` writes, with typed timestamps) passes through this reader
unchanged apart from validation and the cast to FLOW_SCHEMA. For maps, the extra target names
`duration` (seconds), `duration_ms`, `duration_us` and `resp_packets`, `resp_bytes`,
`resp_tcp_flags` (a reverse direction, split like Zeek/Argus records) are accepted too.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Iterator, Sequence
from zoneinfo import ZoneInfo

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from netflowgen.rejects import InputError, RejectCounter
from netflowgen.sources.bidirectional import split_bidirectional
from netflowgen.sources.normalize import TimeLayout, normalize
from netflowgen.sources.options import SourceOptions
from netflowgen.sources.presets import CANONICAL, PRESET_NAMES, TABLE_PRESETS, Preset, flags_from_counts
from netflowgen.sources.text import expand_paths, text_frames

_DURATIONS = {"duration": "s", "duration_ms": "ms", "duration_us": "us"}
_RESP = ("resp_packets", "resp_bytes", "resp_tcp_flags")
CSV_PATTERNS, PARQUET_PATTERNS = ("*.csv",), ("*.parquet",)  # what a directory contributes
_GUESS_FORMATS = ("epoch", "%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.fZ",
                  "%Y/%m/%d %H:%M:%S%.f", "%d/%m/%Y %H:%M:%S", "%d/%m/%Y %I:%M:%S %p")


def resolve_mapping(file: str, header: Sequence[str], options: SourceOptions) -> tuple[Preset, dict[str, str]]:
    """(preset, target name -> source column) for a table with columns `header`.

    Explicit `options.column_map` entries win over the preset; unknown targets, or mapped source
    columns that do not exist, are an InputError naming them, as are missing required columns.
    """
    if options.preset and options.preset not in TABLE_PRESETS:
        raise InputError(f"unknown preset {options.preset!r}; choose one of {', '.join(PRESET_NAMES)}")
    preset = TABLE_PRESETS[options.preset] if options.preset else CANONICAL
    have = list(header)
    mapping: dict[str, str] = {}
    for target, candidates in preset.columns.items():
        found = next((c for c in candidates if c in have), None)
        if found is not None:
            mapping[target] = found
    known = set(CANONICAL.columns) | set(_DURATIONS) | set(_RESP)
    unknown = sorted(set(options.column_map) - known)
    if unknown:
        raise InputError(f"column map: unknown target name(s) {unknown}; known: {sorted(known)}")
    absent = sorted(src for src in options.column_map.values() if src not in have)
    if absent:
        raise InputError(f"{file}: mapped column(s) {absent} not in the table (found {have})")
    mapping.update(options.column_map)
    required = list(preset.required)
    if preset.needs_start or "ts_start" not in mapping:
        required = [r for r in required if r != "ts_start"]
    missing = [r for r in required if r not in mapping]
    if "ts_start" not in mapping and options.start is None:
        missing.insert(0, "ts_start")
    if missing:
        wanted = {m: list(preset.columns.get(m, (m,))) for m in missing}
        hint = " (this table has no time column: pass --start TIME)" if "ts_start" in missing else ""
        raise InputError(f"{file}: missing column(s) for {wanted}; map them with "
                         f"--map canonical=column{hint} (found {have})")
    return preset, mapping


def _time_layout(preset: Preset, mapping: dict[str, str], sample: pl.Series | None,
                 options: SourceOptions) -> TimeLayout:
    unit = next((u for k, u in _DURATIONS.items() if k in mapping), preset.duration_unit)
    if options.time_format:
        return TimeLayout(options.time_format, options.input_timezone, unit)
    formats = preset.time_formats or _GUESS_FORMATS
    if sample is None or isinstance(sample.dtype, pl.Datetime):
        return TimeLayout("epoch_ms", options.input_timezone, unit)  # typed times carry no format
    if sample.dtype.is_numeric():
        if formats[0].startswith("epoch_"):
            return TimeLayout(formats[0], options.input_timezone, unit)
        sample = sample.cast(pl.String)
    # The layout is chosen on up to 200 values of the chunk: the first format that reads most of them
    # (a few bad times are then counted as unparsable rows, they no longer reject the whole chunk).
    values = sample.drop_nulls().str.strip_chars().head(200)
    need = max(1, (values.len() * 4 + 4) // 5)  # 80 %
    for fmt in formats:
        if fmt == "epoch" or fmt.startswith("epoch_"):
            nums = values.cast(pl.Float64, strict=False)
            if values.len() and values.len() - nums.null_count() >= need:
                # "epoch": each value's unit from its magnitude (decided per value, not per chunk)
                return TimeLayout("epoch_auto" if fmt == "epoch" else fmt, options.input_timezone, unit)
            continue
        parsed = values.str.to_datetime(fmt, strict=False, time_unit="us")
        if values.len() and values.len() - parsed.null_count() >= need:
            return TimeLayout(fmt, options.input_timezone, unit)
    return TimeLayout(formats[0], options.input_timezone, unit)  # rows will be counted unparsable


def _start_ms(options: SourceOptions) -> int:
    assert options.start is not None
    try:
        t = dt.datetime.fromisoformat(options.start)
    except ValueError as e:
        raise InputError(f"--start {options.start!r} is not an ISO 8601 time") from e
    if t.tzinfo is None:
        t = t.replace(tzinfo=ZoneInfo(options.input_timezone))
    return int(t.timestamp() * 1000)


def _to_canonical(df: pl.DataFrame, preset: Preset, mapping: dict[str, str],
                  options: SourceOptions) -> tuple[pl.DataFrame, TimeLayout]:
    layout = _time_layout(preset, mapping, df[mapping["ts_start"]] if "ts_start" in mapping else None,
                          options)
    exprs = [pl.col(src).alias(target if target not in _DURATIONS else "duration")
             for target, src in mapping.items()]
    if "ts_start" not in mapping:  # NF-* v1/v2: no time at all
        layout = TimeLayout("epoch_ms", "UTC", layout.duration_unit)
        exprs.append(pl.lit(_start_ms(options), pl.Int64).alias("ts_start"))
    if "ts_end" in mapping:
        exprs = [e for e in exprs if e.meta.output_name() != "duration"]
    flags = flags_from_counts(df.columns, preset.flag_counts) if "tcp_flags" not in mapping else None
    if flags is not None:
        exprs += [flags.alias("tcp_flags"), flags.alias("resp_tcp_flags")]
    out = df.select(*exprs, pl.col("_line"))
    if "resp_packets" in out.columns:
        if "resp_bytes" not in out.columns:
            raise InputError("a reverse direction needs both resp_packets and resp_bytes columns")
        if "resp_tcp_flags" not in out.columns:
            out = out.with_columns((pl.col("tcp_flags") if "tcp_flags" in out.columns
                                    else pl.lit(0)).alias("resp_tcp_flags"))
        # the split works on text, like the text readers
        out = out.with_columns([pl.col(c).cast(pl.String) for c in
                                ("src_port", "dst_port", "proto", "tcp_flags", "packets", "bytes", *_RESP)
                                if c in out.columns])
        out = split_bidirectional(out)
    return out, layout


def read_csv(paths: Sequence[str | Path], options: SourceOptions, rejects: RejectCounter,
             ) -> Iterator[pa.RecordBatch]:
    """Canonical batches from CSV flow tables (directories: *.csv under them)."""
    if options.preset == "nfdump-csv":
        from netflowgen.sources.nfdump_csv import read_nfdump_csv
        yield from read_nfdump_csv(paths, options, rejects)
        return
    for path in expand_paths(paths, CSV_PATTERNS):
        yield from _read_csv_file(path, options, rejects)


def _read_csv_file(path: Path, options: SourceOptions, rejects: RejectCounter,
                   ) -> Iterator[pa.RecordBatch]:
    """One CSV flow table, read in bounded chunks of numbered lines (the same splitter as the Zeek
    and Argus readers), so every rejected record is reported with its true line number. Fields are
    split on commas and stripped of surrounding quotes; a quoted comma makes a line a counted
    "garbage line" (flow datasets carry none). Blank lines are not records and are skipped."""
    name = str(path)
    with open(path, "rb") as f:
        first = f.readline().decode("utf-8-sig", "replace").rstrip("\r\n")
        header = _dedupe([h.strip().strip('"') for h in first.split(",")])
        preset, mapping = resolve_mapping(name, header, options)
        needed = sorted(set(mapping.values()) | {c for cs in preset.flag_counts.values() for c in cs
                                                 if c in header})

        for df in text_frames(f, header, ",", options.batch_size, name, rejects, first_line=2,
                              keep=lambda ln: bool(ln.strip())):
            df = df.select(*(pl.col(c).str.strip_chars(' "') for c in needed), "_line")
            yield from _normalized(df, name, preset, mapping, options, rejects)


def _dedupe(header: list[str]) -> list[str]:
    """Make repeated names unique ("x", "x.1", ...): CIC-IDS2017 repeats "Fwd Header Length"."""
    seen: dict[str, int] = {}
    out = []
    for h in header:
        n = seen.get(h, 0)
        out.append(h if n == 0 else f"{h}.{n}")
        seen[h] = n + 1
    return out


def read_parquet(paths: Sequence[str | Path], options: SourceOptions, rejects: RejectCounter,
                 ) -> Iterator[pa.RecordBatch]:
    """Canonical batches from Parquet flow tables (canonical ones pass through, validated)."""
    for path in expand_paths(paths, PARQUET_PATTERNS):
        name = str(path)
        try:
            pf = pq.ParquetFile(path)
        except Exception as e:  # pyarrow raises several types for a non-Parquet file
            raise InputError(f"{name}: not a readable Parquet file ({e})") from e
        header = pf.schema_arrow.names
        preset, mapping = resolve_mapping(name, header, options)
        needed = sorted(set(mapping.values()) | {c for cs in preset.flag_counts.values() for c in cs
                                                 if c in header})
        row = 1
        for batch in _batches(pf, name, options.batch_size, needed):
            df = pl.from_arrow(pa.Table.from_batches([batch]))
            assert isinstance(df, pl.DataFrame)
            df = df.with_columns(pl.int_range(row, row + df.height, dtype=pl.Int64).alias("_line"))
            row += df.height
            yield from _normalized(df, name, preset, mapping, options, rejects)


def _batches(pf: pq.ParquetFile, name: str, batch_size: int, columns: list[str]) -> Iterator[pa.RecordBatch]:
    """The file's record batches; a page that cannot be decoded is an InputError naming the file and
    the record where reading stopped (the records before it were read)."""
    it = pf.iter_batches(batch_size=batch_size, columns=columns)
    done = 0
    while True:
        try:
            batch = next(it)
        except StopIteration:
            return
        except (OSError, pa.ArrowException) as e:
            raise InputError(f"{name}: unreadable Parquet data after record {done:,} ({' '.join(str(e).split())})") from None
        done += batch.num_rows
        yield batch


def _normalized(df: pl.DataFrame, name: str, preset: Preset, mapping: dict[str, str],
                options: SourceOptions, rejects: RejectCounter) -> Iterator[pa.RecordBatch]:
    flows, layout = _to_canonical(df, preset, mapping, options)
    batch = normalize(flows, name, layout, rejects, own_rate=preset.own_rate,
                      exporter_sampling=options.exporter_sampling,
                      default_rate=options.default_sampling_rate, exporter=options.exporter, time_window=options.time_window_ms())
    if batch.num_rows:
        yield batch
