"""Zeek conn.log (TSV with `#fields` header) -> two unidirectional flow records per connection.

Also reads the IoT-23 variant, whose last three columns (tunnel_parents, label, detailed-label) are
separated by three spaces instead of a tab. Mapping (docs/sources.md has the full table):
- orig -> resp: packets = orig_pkts, bytes = orig_ip_bytes (IP-level bytes, as NetFlow counts);
  resp -> orig: resp_pkts, resp_ip_bytes; the reverse record is skipped when resp_pkts is 0.
- TCP flags per direction from `history` (upper case letters: originator, lower case: responder),
  or from `conn_state` when history is unset. Non-TCP records get 0.
- ICMP: Zeek puts the type in id.orig_p and the code in id.resp_p; canonical follows NetFlow:
  src_port 0, dst_port = type*256 + code. Zeek names ICMPv6 "icmp": IPv6 addresses make it 58.
- Zeek logs are built from every packet of a capture, so records carry sampling rate 1.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator, Sequence

import polars as pl
import pyarrow as pa

from netflowgen.rejects import InputError, RejectCounter
from netflowgen.sources.bidirectional import split_bidirectional
from netflowgen.sources.normalize import TimeLayout, normalize
from netflowgen.sources.options import SourceOptions
from netflowgen.sources.text import expand_paths, require_columns, text_frames

REQUIRED = ("ts", "id.orig_h", "id.orig_p", "id.resp_h", "id.resp_p", "proto", "duration",
            "conn_state", "orig_pkts", "orig_ip_bytes", "resp_pkts", "resp_ip_bytes")
LAYOUT = TimeLayout("epoch_s", "UTC", "s")
FILE_PATTERNS = ("conn*.log", "conn*.log.*", "*.conn.log")

SYN, FIN, RST, PSH, ACK = 0x02, 0x01, 0x04, 0x08, 0x10
# history letter (originator's case) -> TCP flags that packet carried.
HISTORY_FLAGS: dict[str, int] = {
    "S": SYN,  # SYN without ACK
    "H": SYN | ACK,  # SYN-ACK
    "A": ACK,  # pure ACK
    "D": ACK | PSH,  # packet with payload: data segments carry ACK, and PSH ends each send
    "F": FIN,  # FIN (its ACK, if any, is counted by A/D)
    "R": RST,
    "Q": SYN,  # multi-flag packet (SYN+FIN or SYN+RST): only the SYN is certain
}
# conn_state -> (originator flags, responder flags), used when history is unset ("-").
CONN_STATE_FLAGS: dict[str, tuple[int, int]] = {
    "S0": (SYN, 0),
    "S1": (SYN | ACK, SYN | ACK),
    "SF": (SYN | ACK | FIN, SYN | ACK | FIN),
    "REJ": (SYN, RST | ACK),
    "S2": (SYN | ACK | FIN, SYN | ACK),
    "S3": (SYN | ACK, SYN | ACK | FIN),
    "RSTO": (SYN | ACK | RST, SYN | ACK),
    "RSTR": (SYN | ACK, SYN | ACK | RST),
    "RSTOS0": (SYN | RST, 0),
    "RSTRH": (0, SYN | ACK | RST),
    "SH": (SYN | FIN, 0),
    "SHR": (0, SYN | ACK | FIN),
    "OTH": (ACK, ACK),
}


def history_flags(history: pl.Expr, upper: bool) -> pl.Expr:
    """OR of the flags of the history letters of one side (upper: originator, else responder)."""
    value = pl.lit(0, pl.Int64)
    for letter, bits in HISTORY_FLAGS.items():
        ch = letter if upper else letter.lower()
        value = value | pl.when(history.str.contains(ch, literal=True)).then(bits).otherwise(0)
    return value


def derive_flags(proto: pl.Expr, history: pl.Expr, conn_state: pl.Expr) -> tuple[pl.Expr, pl.Expr]:
    """(originator flags, responder flags) as Int64 expressions; 0 for non-TCP records."""
    tcp = proto.str.strip_chars().str.to_lowercase() == "tcp"
    has_hist = history.is_not_null() & ~history.is_in(["-", "(empty)", ""])
    out = []
    for side, upper in ((0, True), (1, False)):
        from_state = conn_state.replace_strict({k: v[side] for k, v in CONN_STATE_FLAGS.items()},
                                               default=0, return_dtype=pl.Int64)
        flags = pl.when(has_hist).then(history_flags(history, upper)).otherwise(from_state)
        out.append(pl.when(tcp).then(flags).otherwise(0).cast(pl.String))
    return out[0], out[1]


def read_zeek(paths: Sequence[str | Path], options: SourceOptions, rejects: RejectCounter,
              ) -> Iterator[pa.RecordBatch]:
    """Canonical batches from Zeek conn logs (directories: conn*.log files under them)."""
    for path in expand_paths(paths, FILE_PATTERNS):
        yield from _read_file(path, options, rejects)


def _read_file(path: Path, options: SourceOptions, rejects: RejectCounter) -> Iterator[pa.RecordBatch]:
    name = str(path)
    sep = "\t"
    fields: list[str] | None = None
    three_spaces = False
    with open(path, "rb") as f:
        body_start = 1
        for raw in f:  # the header: "#key value" lines up to #types
            line = raw.rstrip(b"\r\n").decode("utf-8", "replace")
            if not line.startswith("#"):
                raise InputError(f"{name}:{body_start}: not a Zeek TSV log (no #fields header before "
                                 "the first record)")
            body_start += 1
            if line.startswith("#separator"):
                sep = _separator(line, f"{name}:{body_start - 1}")
            elif line.startswith("#fields"):
                three_spaces = "   " in line  # IoT-23: last columns separated by three spaces
                fields = line.replace("   ", sep).split(sep)[1:] if three_spaces else line.split(sep)[1:]
            elif line.startswith("#types"):
                break
        if fields is None:
            raise InputError(f"{name}: not a Zeek TSV log (no #fields line)")
        require_columns(name, fields, REQUIRED)
        for df in text_frames(f, fields, sep, options.batch_size, name, rejects,
                              first_line=body_start, keep=_is_record,
                              three_spaces=three_spaces):
            batch = normalize(_to_flows(df), name, LAYOUT, rejects, own_rate=1,
                              exporter_sampling=options.exporter_sampling,
                              default_rate=options.default_sampling_rate, exporter=options.exporter, time_window=options.time_window_ms())
            if batch.num_rows:
                yield batch


def _separator(line: str, where: str) -> str:
    """The separator of a `#separator \\x09` header line; InputError naming the line otherwise."""
    value = line.split(" ", 1)[1] if " " in line else ""
    try:
        sep = value.encode("ascii").decode("unicode_escape")
    except UnicodeError:
        sep = ""
    if len(sep) != 1:
        raise InputError(f"{where}: bad #separator {value!r} (expected one character, e.g. \\x09)")
    return sep


# Zeek's own directives; any other line starting with "#" is data (and rejected, counted, if it
# does not parse), never skipped silently.
_DIRECTIVES = (b"#separator", b"#set_separator", b"#empty_field", b"#unset_field", b"#path", b"#open",
               b"#fields", b"#types", b"#close")


def _is_record(line: bytes) -> bool:
    return bool(line) and not line.startswith(_DIRECTIVES)


def _to_flows(df: pl.DataFrame) -> pl.DataFrame:
    """Zeek columns -> canonical text columns with the resp_* extras, then split in two."""
    proto = pl.col("proto").str.strip_chars().str.to_lowercase()
    icmp = proto == "icmp"
    v6 = pl.col("id.orig_h").str.contains(":", literal=True)
    history = pl.col("history") if "history" in df.columns else pl.lit(None, pl.String)
    fwd_flags, rev_flags = derive_flags(pl.col("proto"), history, pl.col("conn_state"))
    icmp_port = (pl.col("id.orig_p").cast(pl.Int64, strict=False) * 256
                 + pl.col("id.resp_p").cast(pl.Int64, strict=False)).cast(pl.String)
    flows = df.select(
        pl.col("ts").alias("ts_start"),
        pl.col("duration"),
        pl.col("id.orig_h").alias("src_ip"),
        pl.col("id.resp_h").alias("dst_ip"),
        pl.when(icmp).then(pl.lit("0")).otherwise(pl.col("id.orig_p")).alias("src_port"),
        pl.when(icmp).then(icmp_port).otherwise(pl.col("id.resp_p")).alias("dst_port"),
        pl.when(icmp & v6).then(pl.lit("58")).otherwise(pl.col("proto")).alias("proto"),
        fwd_flags.alias("tcp_flags"),
        pl.col("orig_pkts").alias("packets"),
        pl.col("orig_ip_bytes").alias("bytes"),
        pl.col("resp_pkts").alias("resp_packets"),
        pl.col("resp_ip_bytes").alias("resp_bytes"),
        rev_flags.alias("resp_tcp_flags"),
        pl.col("_line"),
    )
    return split_bidirectional(flows)
