"""The one normalization step every reader ends with (SPEC 1): text columns -> canonical flow records.

A reader turns a chunk of its input into a Polars frame whose columns carry canonical names (values
still as text, or already numeric) plus `_line`, the 1-based line/record number in the file. This
module parses and validates every field, counts each bad record by its first failing reason with a
sample naming `file:line field=value`, resolves the sampling rate, and returns an Arrow batch of
exactly `schema.FLOW_SCHEMA`.

Columns a reader may give (all text unless noted): ts_start (see `TimeLayout`), ts_end or
duration, src_ip, dst_ip, src_port, dst_port, proto (number or name), tcp_flags (number or the
nfdump letter string `CEUAPRSF`), packets, bytes, sampling_rate, exporter, in_if, out_if.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any, Mapping

import polars as pl
import pyarrow as pa

from netflowgen.rejects import RejectCounter
from netflowgen.schema import FLOW_COLUMNS, FLOW_SCHEMA
from netflowgen.sources.options import SourceOptions

# IANA numbers for the protocol names that nfdump, Argus, Zeek and CICFlowMeter print.
PROTOCOL_NUMBERS: dict[str, int] = {
    "icmp": 1, "igmp": 2, "ggp": 3, "ipip": 4, "ipv4": 4, "tcp": 6, "egp": 8, "igp": 9,
    "udp": 17, "rdp": 27, "ipv6": 41, "rsvp": 46, "gre": 47, "esp": 50, "ah": 51,
    "icmp6": 58, "ipv6-icmp": 58, "icmpv6": 58, "eigrp": 88, "ospf": 89, "ospfigp": 89,
    "pim": 103, "vrrp": 112, "l2tp": 115, "isis": 124, "sctp": 132, "udplite": 136,
}
# Names of link-layer or non-IP "protocols" some tools report as flows (Argus: arp, llc, ...).
# ("man" is Argus's own management record.)
NON_IP_PROTOCOLS: frozenset[str] = frozenset({"arp", "rarp", "llc", "lldp", "stp", "ipx", "ipx/spx",
                                              "man", "mpls"})

# nfdump prints the cumulative TCP flags as 8 letters, one position per bit, most significant first.
FLAG_LETTERS = "CEUAPRSF"  # CWR ECE URG ACK PSH RST SYN FIN = 0x80 ... 0x01


@dataclass(frozen=True)
class TimeLayout:
    """How a reader's timestamps are written.

    time_format: "epoch_s" (decimal seconds, e.g. 1655071198.444458), "epoch_ms", "epoch_us", or a
    Polars/chrono strptime format such as "%Y/%m/%d %H:%M:%S%.f" read in `timezone`.
    duration_unit: unit of a `duration` column ("s" decimal seconds, "ms", "us"), used when the
    reader gives no ts_end.
    """

    time_format: str = "epoch_s"
    timezone: str = "UTC"
    duration_unit: str = "s"


def _decimal_to_int(col: pl.Expr, scale_digits: int) -> pl.Expr:
    """Exact decimal text -> integer scaled by 10**scale_digits, truncating further digits.

    Done on the text (not via float) so that "1655071198.444" is 1655071198444 ms, never ...443.
    Null when the text is not a plain decimal (a leading "-" is kept: a negative duration must
    reach the "end before start" check, not pass as unparsable).
    """
    ok = col.str.contains(r"^-?[0-9]+(\.[0-9]*)?$")
    negative = col.str.starts_with("-")
    parts = col.str.strip_prefix("-").str.split_exact(".", 1)
    whole = parts.struct.field("field_0").cast(pl.Int64, strict=False)
    frac = (parts.struct.field("field_1").fill_null("").str.slice(0, scale_digits)
            .str.pad_end(scale_digits, "0"))
    frac_v = frac.cast(pl.Int64, strict=False) if scale_digits else pl.lit(0, pl.Int64)
    value = whole * (10 ** scale_digits) + frac_v
    return pl.when(ok).then(pl.when(negative).then(-value).otherwise(value)).otherwise(None)


def _int_expr(name: str, dtype: pl.DataType, port: bool = False) -> pl.Expr:
    """Text or number -> Int64; accepts decimal and 0x-hex text (Argus prints ICMP ports in hex).

    For ports also "T.C" (nfdump prints an ICMP destination port as type.code): T * 256 + C, the
    value NetFlow exporters put in the field, so ICMP type/code stay as-is in the canonical record.
    """
    col = pl.col(name)
    if dtype.is_numeric():
        if dtype.is_float():
            return pl.when(col == col.floor()).then(col.cast(pl.Int64, strict=False)).otherwise(None)
        return col.cast(pl.Int64, strict=False)
    s = col.str.strip_chars()
    hexa = s.str.to_lowercase().str.starts_with("0x")
    expr: Any = pl.when(hexa).then(s.str.slice(2).str.to_integer(base=16, strict=False))
    if port:
        tc = s.str.split_exact(".", 1)
        icmp = (tc.struct.field("field_0").cast(pl.Int64, strict=False) * 256
                + tc.struct.field("field_1").cast(pl.Int64, strict=False))
        expr = expr.when(s.str.contains(r"^\d{1,3}\.\d{1,3}$")).then(icmp)
    return expr.otherwise(s.cast(pl.Int64, strict=False))


def _time_expr(name: str, dtype: pl.DataType, layout: TimeLayout) -> pl.Expr:
    """Timestamp text -> Int64 ms since the epoch (UTC); null when unparsable."""
    col = pl.col(name)
    fmt = layout.time_format
    if isinstance(dtype, pl.Datetime):  # typed (Parquet): naive times are in layout.timezone
        if dtype.time_zone is None:
            col = col.dt.replace_time_zone(layout.timezone, ambiguous="earliest", non_existent="null")
        return col.dt.convert_time_zone("UTC").dt.epoch("ms")
    if dtype.is_numeric() or fmt.startswith("epoch_"):
        return _ms_from_number(col, dtype, fmt.removeprefix("epoch_"))
    s = col.str.strip_chars()
    parsed = s.str.to_datetime(fmt, time_unit="us", time_zone=layout.timezone, strict=False,
                               ambiguous="earliest")
    return parsed.dt.convert_time_zone("UTC").dt.epoch("ms")


def _ms_from_number(col: pl.Expr, dtype: pl.DataType, unit: str) -> pl.Expr:
    """A number of `unit` ("s", "ms", "us", or "auto"), typed or as decimal text -> Int64 ms
    (floored); null when unparsable.

    "auto": every value in its own unit by its number of integer digits, up to 11
    seconds, 12-14 milliseconds, 15 or more microseconds; unambiguous for every plausible time
    (1990 .. now: 9-10 digits in s, 12-13 in ms, 15-16 in us), so one microsecond row among
    second rows is read right instead of dating the others to 1970."""
    if unit == "auto":  # each value's own unit, by magnitude
        if dtype.is_numeric():
            v = col.cast(pl.Float64)
            digits = v.abs().floor().cast(pl.Int64, strict=False).cast(pl.String).str.len_chars()
        else:
            text = col.str.strip_chars()
            digits = text.str.strip_prefix("-").str.split(".").list.first().str.len_chars()
        s_ms, ms_ms, us_ms = (_ms_from_number(col, dtype, u) for u in ("s", "ms", "us"))
        return pl.when(digits <= 11).then(s_ms).when(digits <= 14).then(ms_ms).otherwise(us_ms)
    if dtype.is_numeric():
        scale = {"s": 1000.0, "ms": 1.0, "us": 0.001}[unit]
        return (col.cast(pl.Float64) * scale).floor().cast(pl.Int64, strict=False)
    s = col.str.strip_chars()
    if unit == "s":
        return _decimal_to_int(s, 3)
    if unit == "ms":
        return _decimal_to_int(s, 0)
    return _decimal_to_int(s, 0) // 1000


def _duration_expr(name: str, dtype: pl.DataType, layout: TimeLayout) -> pl.Expr:
    return _ms_from_number(pl.col(name), dtype, layout.duration_unit)


def _proto_expr(dtype: pl.DataType) -> tuple[pl.Expr, pl.Expr, pl.Expr]:
    """(number or null, is a non-IP name, is an unknown name)."""
    if dtype.is_numeric():
        v = pl.col("proto").cast(pl.Int64, strict=False)
        return v, pl.lit(False), pl.lit(False)
    s = pl.col("proto").str.strip_chars().str.to_lowercase()
    num = s.cast(pl.Int64, strict=False)
    named = s.replace_strict(PROTOCOL_NUMBERS, default=None, return_dtype=pl.Int64)
    value = pl.coalesce(num, named)
    is_text = num.is_null() & s.is_not_null()
    non_ip = is_text & s.is_in(list(NON_IP_PROTOCOLS))
    unknown = is_text & named.is_null() & ~non_ip & ~s.str.contains(r"^-?\d+$")
    return value, non_ip, unknown


def _flags_expr(dtype: pl.DataType) -> pl.Expr:
    if dtype.is_numeric():
        return pl.col("tcp_flags").cast(pl.Int64, strict=False)
    s = pl.col("tcp_flags").str.strip_chars()
    # Letters: each of the 8 positions contributes its bit when it holds its letter.
    letters = pl.lit(0, pl.Int64)
    for i, ch in enumerate(FLAG_LETTERS):
        letters = letters + pl.when(s.str.slice(i, 1) == ch).then(0x80 >> i).otherwise(0)
    is_letters = s.str.contains(r"^[C.][E.][U.][A.][P.][R.][S.][F.]$")
    hexa = s.str.to_lowercase().str.starts_with("0x")
    return (pl.when(is_letters).then(letters)
            .when(hexa).then(s.str.slice(2).str.to_integer(base=16, strict=False))
            .otherwise(s.cast(pl.Int64, strict=False)))


# A dotted quad without leading zeros (what ipaddress accepts), checked in Polars: validating every
# distinct address in Python took most of the time on spoofed-source DDoS captures.
_IPV4 = r"^((25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])$"  # ASCII digits


def _canonical_ips(values: pl.Series) -> tuple[dict[str, str], set[str]]:
    """For the distinct addresses that are not plain IPv4: canonical text (IPv6 compressed, lower
    case) of the valid ones, and the set of bad ones. Plain IPv4 text is already canonical."""
    others = values.filter(~values.str.contains(_IPV4).fill_null(True)).drop_nulls().unique()
    mapping: dict[str, str] = {}
    bad: set[str] = set()
    for v in others.to_list():
        try:
            if not v.isascii():  # ipaddress would accept other scripts' digits in some places
                raise ValueError(v)
            mapping[v] = str(ipaddress.ip_address(v.strip()))
        except ValueError:
            bad.add(v)
    return mapping, bad


def _ip_out(name: str, mapping: dict[str, str]) -> pl.Expr:
    col = pl.col(name).cast(pl.String)
    if not mapping:
        return col
    return pl.when(col.str.contains(_IPV4)).then(col) \
        .otherwise(col.replace_strict(mapping, default=None))


IMPLAUSIBLE_TIME = "implausible time (before earliest_time, default 1990, or over max_days_ahead, 1, after now)"


def normalize(df: pl.DataFrame, file: str, layout: TimeLayout, rejects: RejectCounter,
              *, own_rate: int | None = None, exporter_sampling: Mapping[str, int] | None = None,
              default_rate: int | None = None, exporter: str | None = None,
              time_window: tuple[int, int] | None = None) -> pa.RecordBatch:
    """Validate and convert one chunk of a reader's records to a canonical batch.

    df: columns named as in the module docstring, plus `_line` (Int64, 1-based record position);
    `sampling_rate` column values of 0 or empty mean "not given by the record".
    own_rate: the rate every record of this source carries by construction (1 for flows built from
    every packet of a capture), used where the record has no rate column.
    Resolution order (SPEC 1): record's rate -> exporter_sampling[exporter] -> default_rate ->
    reject as "no sampling rate". Returns a batch of FLOW_SCHEMA (possibly empty); rejected records
    are counted in `rejects` and accepted ones too.
    """
    n = df.height
    if n == 0:
        return pa.RecordBatch.from_pylist([], schema=FLOW_SCHEMA)
    schema = df.schema
    # Text is compared stripped (nfdump pads its columns); empty text and "-" are "not given" in
    # every text format we read.
    stripped = {c: pl.col(c).str.strip_chars() for c, t in schema.items() if t == pl.String}
    df = df.with_columns([pl.when(e.is_in(["", "-"])).then(None).otherwise(e).alias(c)
                          for c, e in stripped.items()])
    cols = set(df.columns)
    required = ["ts_start", "src_ip", "dst_ip", "proto", "packets", "bytes"]
    # Values parsed; a parse failure is null while the raw text is present.
    parsed: dict[str, pl.Expr] = {"ts_start": _time_expr("ts_start", schema["ts_start"], layout)}
    if "ts_end" in cols:
        parsed["ts_end"] = _time_expr("ts_end", schema["ts_end"], layout)
    elif "duration" in cols:
        parsed["duration"] = _duration_expr("duration", schema["duration"], layout)
    for name in ("src_port", "dst_port", "packets", "bytes", "sampling_rate", "in_if", "out_if"):
        if name in cols:
            parsed[name] = _int_expr(name, schema[name], port=name.endswith("_port"))
    if "tcp_flags" in cols:
        parsed["tcp_flags"] = _flags_expr(schema["tcp_flags"])
    proto_v, proto_non_ip, proto_unknown = _proto_expr(schema["proto"])
    parsed["proto"] = proto_v
    df = df.with_columns([e.alias(f"{k}__v") for k, e in parsed.items()])

    src_map, src_bad = _canonical_ips(df["src_ip"].cast(pl.String))
    dst_map, dst_bad = _canonical_ips(df["dst_ip"].cast(pl.String))

    # The third entry names the field shown in the rejects' samples; samples are built only for the
    # few rejected rows shown (see _report), never per row (a string per row made this step 5x slower).
    # (condition, reason, field shown in the sample) in check order.
    checks: list[tuple[pl.Expr, str, str]] = []
    for name in required:
        checks.append((pl.col(name).is_null(), "missing field", name))
    checks.append((pl.col("ts_start__v").is_null(), "unparsable timestamp", "ts_start"))
    # A start at (or before) the epoch means 'unknown': e.g. softflowd's v5/v9 flows that start at
    # the exporter's boot instant are stored by nfcapd with first_switched = 0.
    checks.append((pl.col("ts_start__v") <= 0, "unknown start time (0)", "ts_start"))
    # (one flow dated 2100 would otherwise stretch a features table over 75 years)
    lo_ms, hi_ms = time_window if time_window is not None else SourceOptions().time_window_ms()
    checks.append((~pl.col("ts_start__v").is_between(lo_ms, hi_ms), IMPLAUSIBLE_TIME, "ts_start"))
    if "ts_end" in cols:
        checks.append((pl.col("ts_end").is_not_null() & pl.col("ts_end__v").is_null(),
                       "unparsable timestamp", "ts_end"))
    for name in parsed:
        if name in ("ts_start", "ts_end", "proto"):
            continue
        checks.append((pl.col(name).is_not_null() & pl.col(f"{name}__v").is_null(),
                       "unparsable field", name))
    checks.append((proto_non_ip, "non-IP protocol", "proto"))
    checks.append((proto_unknown, "unknown protocol name", "proto"))
    checks.append((pl.col("proto").is_not_null() & pl.col("proto__v").is_null(),
                   "unparsable field", "proto"))
    checks.append((pl.col("src_ip").is_in(list(src_bad)), "bad IP address", "src_ip"))
    checks.append((pl.col("dst_ip").is_in(list(dst_bad)), "bad IP address", "dst_ip"))
    for name in ("packets", "bytes"):
        checks.append((pl.col(f"{name}__v") < 0, "negative count", name))
    for name in ("src_port", "dst_port"):
        if name in cols:
            checks.append((pl.col(f"{name}__v") > 65535, "port > 65535", name))
            checks.append((pl.col(f"{name}__v") < 0, "value out of range", name))
    checks.append((~pl.col("proto__v").is_between(0, 255), "value out of range", "proto"))
    if "tcp_flags" in cols:
        checks.append((~pl.col("tcp_flags__v").is_between(0, 255), "value out of range",
                       "tcp_flags"))
    for name in ("in_if", "out_if"):
        if name in cols:
            checks.append((~pl.col(f"{name}__v").is_between(0, 2**32 - 1), "value out of range",
                           name))
    if "ts_end" in cols:
        checks.append((pl.col("ts_end__v") < pl.col("ts_start__v"), "end before start",
                       "ts_end"))
    elif "duration" in cols:
        checks.append((pl.col("duration__v") < 0, "end before start", "duration"))

    # Sampling resolution: record -> per-exporter override -> configured default -> reject.
    if "exporter" in cols:
        exp = pl.col("exporter").cast(pl.String).str.strip_chars()
        # records without an exporter (nfpcapd writes 0.0.0.0) get the configured name
        exp = pl.when(exp.is_null() | exp.is_in(["0.0.0.0", "::"])).then(pl.lit(exporter, pl.String)) \
            .otherwise(exp)
    else:
        exp = pl.lit(exporter, pl.String)
    df = df.with_columns(exp.alias("_exporter"))
    rate_parts: list[pl.Expr] = []
    if "sampling_rate" in cols:
        checks.append((pl.col("sampling_rate__v") < 0, "bad sampling rate", "sampling_rate"))
        rate_parts.append(pl.when(pl.col("sampling_rate__v") > 0).then(pl.col("sampling_rate__v")))
    if own_rate is not None:
        rate_parts.append(pl.lit(own_rate, pl.Int64))
    if exporter_sampling:
        rate_parts.append(pl.col("_exporter").replace_strict(
            {str(k): int(v) for k, v in exporter_sampling.items()}, default=None,
            return_dtype=pl.Int64))
    if default_rate is not None:
        rate_parts.append(pl.lit(default_rate, pl.Int64))
    rate = pl.coalesce(rate_parts) if rate_parts else pl.lit(None, pl.Int64)
    df = df.with_columns(rate.alias("_rate"))
    checks.append((pl.col("_rate") > 2**32 - 1, "bad sampling rate", "_rate"))
    checks.append((pl.col("_rate").is_null(), "no sampling rate", "_exporter"))

    first_failed = pl.lit(None, pl.Int32)
    for i in reversed(range(len(checks))):  # first check wins: build the chain from the end
        first_failed = pl.when(checks[i][0].fill_null(False)).then(pl.lit(i, pl.Int32)) \
            .otherwise(first_failed)
    df = df.with_columns(first_failed.alias("_check"))
    bad = df.filter(pl.col("_check").is_not_null())
    if bad.height:
        _report(bad, checks, file, rejects)
    good = df.filter(pl.col("_check").is_null())
    rejects.accept(good.height)

    start = pl.col("ts_start__v")
    if "ts_end" in cols:
        end = pl.coalesce(pl.col("ts_end__v"), start)
    elif "duration" in cols:
        end = start + pl.col("duration__v").fill_null(0)
    else:
        end = start
    null_u32 = pl.lit(None, pl.UInt32)
    out = good.select(
        start.cast(pl.Datetime("ms", "UTC")).alias("ts_start"),
        end.cast(pl.Datetime("ms", "UTC")).alias("ts_end"),
        _ip_out("src_ip", src_map).alias("src_ip"),
        _ip_out("dst_ip", dst_map).alias("dst_ip"),
        (pl.col("src_port__v").fill_null(0) if "src_port" in cols else pl.lit(0)).cast(pl.UInt16)
        .alias("src_port"),
        (pl.col("dst_port__v").fill_null(0) if "dst_port" in cols else pl.lit(0)).cast(pl.UInt16)
        .alias("dst_port"),
        pl.col("proto__v").cast(pl.UInt8).alias("proto"),
        (pl.col("tcp_flags__v").fill_null(0) if "tcp_flags" in cols else pl.lit(0)).cast(pl.UInt8)
        .alias("tcp_flags"),
        pl.col("packets__v").alias("packets"),
        pl.col("bytes__v").alias("bytes"),
        pl.col("_rate").cast(pl.UInt32).alias("sampling_rate"),
        pl.col("_exporter").alias("exporter"),
        (pl.col("in_if__v").cast(pl.UInt32) if "in_if" in cols else null_u32).alias("in_if"),
        (pl.col("out_if__v").cast(pl.UInt32) if "out_if" in cols else null_u32).alias("out_if"),
    )
    return to_canonical_batch(out)


def _report(bad: pl.DataFrame, checks: list[tuple[pl.Expr, str, str]], file: str,
            rejects: RejectCounter) -> None:
    """Count rejected rows per reason, with `file:line field=value` samples of the first ones."""
    for (i,), grp in bad.group_by("_check", maintain_order=True):
        _, reason, field = checks[int(i)]  # type: ignore[arg-type]
        head = grp.head(rejects.max_samples)
        for line, value in zip(head["_line"].to_list(), head[field].cast(pl.String).to_list()):
            if reason == "missing field":
                text = f"{file}:{line} {field} is empty"
            elif field == "_exporter":
                text = f"{file}:{line} exporter={value or '(none)'}"
            else:
                text = f"{file}:{line} {field.lstrip('_')}={'' if value is None else value}"
            rejects.reject(reason, text)
        rejects.reject(reason, "", n=grp.height - head.height)


def to_canonical_batch(frame: pl.DataFrame) -> pa.RecordBatch:
    """A frame with exactly the canonical columns -> one Arrow batch of FLOW_SCHEMA exactly."""
    table = frame.select(list(FLOW_COLUMNS)).to_arrow()
    table = pa.Table.from_arrays([c.cast(f.type) for c, f in zip(table.columns, FLOW_SCHEMA)],
                                 schema=FLOW_SCHEMA)
    return table.combine_chunks().to_batches()[0] if table.num_rows else \
        pa.RecordBatch.from_pylist([], schema=FLOW_SCHEMA)
