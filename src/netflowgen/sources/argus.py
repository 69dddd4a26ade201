"""Argus binetflow CSV (`ra -c ,` output: StartTime,Dur,Proto,SrcAddr,Sport,Dir,DstAddr,Dport,State,
sTos,dTos,TotPkts,TotBytes[,SrcBytes][,SrcPkts]...) -> unidirectional flow records.

Mapping (docs/sources.md has the tables):
- StartTime is local time of the Argus host ("2013/10/21 13:22:59.340835"): read in
  `options.input_timezone`; end = start + Dur (seconds).
- With SrcPkts and SrcBytes: SrcAddr -> DstAddr gets SrcPkts/SrcBytes, the reverse record gets
  TotPkts - SrcPkts / TotBytes - SrcBytes and is skipped when that is 0 packets. Without them the
  connection stays one record SrcAddr -> DstAddr with the totals (no split is possible), and its
  flags are the OR of both sides. `Dir` is informational only: the record is always Src -> Dst.
- TCP flags from `State`: "SRC_DST" letter sets (F S R P A U E C, e.g. "FSPA_FSPA", "S_RA");
  single-word TCP states (REQ, ACC, CON, CLO, FIN, RST, ...) through TCP_STATE_FLAGS; 0 for others.
- ICMP: Argus prints type/code as hex in Sport (0x0303 = type 3 code 3) and an id in Dport;
  canonical follows NetFlow: src_port 0, dst_port = type*256 + code.
- Argus flows come from every packet of a capture, so records carry sampling rate 1.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator, Sequence

import polars as pl
import pyarrow as pa

from netflowgen.rejects import RejectCounter
from netflowgen.sources.bidirectional import split_bidirectional
from netflowgen.sources.normalize import TimeLayout, normalize
from netflowgen.sources.options import SourceOptions
from netflowgen.sources.text import expand_paths, require_columns, text_frames

REQUIRED = ("StartTime", "Dur", "Proto", "SrcAddr", "Sport", "DstAddr", "Dport", "State",
            "TotPkts", "TotBytes")
TIME_FORMAT = "%Y/%m/%d %H:%M:%S%.f"
FLAG_BITS: dict[str, int] = {"F": 0x01, "S": 0x02, "R": 0x04, "P": 0x08, "A": 0x10, "U": 0x20,
                             "E": 0x40, "C": 0x80}
# Single-word states Argus prints for TCP -> (src flags, dst flags).
TCP_STATE_FLAGS: dict[str, tuple[int, int]] = {
    "REQ": (0x02, 0x00),  # SYN sent, no answer
    "INT": (0x02, 0x00),
    "ACC": (0x02, 0x12),  # SYN answered by SYN-ACK
    "CON": (0x12, 0x12),  # established
    "FIN": (0x13, 0x13),  # closed by FIN
    "CLO": (0x13, 0x13),
    "RST": (0x16, 0x12),  # reset (Argus does not say by whom: put on the source)
    "TIM": (0x10, 0x10),  # timed out mid-stream
}


FILE_PATTERNS = ("*.binetflow", "*.biargus", "*.csv")  # what a directory contributes

def _side_flags(letters: pl.Expr) -> pl.Expr:
    value = pl.lit(0, pl.Int64)
    for ch, bit in FLAG_BITS.items():
        value = value | pl.when(letters.str.contains(ch, literal=True)).then(bit).otherwise(0)
    return value


def state_flags(proto: pl.Expr, state: pl.Expr) -> tuple[pl.Expr, pl.Expr]:
    """(src flags, dst flags) as Int64 expressions from the Argus State column; 0 for non-TCP."""
    tcp = proto.str.strip_chars().str.to_lowercase() == "tcp"
    s = state.str.strip_chars().fill_null("")
    parts = s.str.split_exact("_", 1)
    pair = s.str.contains("_", literal=True)
    out = []
    for side in (0, 1):
        letters = parts.struct.field(f"field_{side}").fill_null("")
        word = s.replace_strict({k: v[side] for k, v in TCP_STATE_FLAGS.items()}, default=0,
                                return_dtype=pl.Int64)
        flags = pl.when(pair).then(_side_flags(letters)).otherwise(word)
        out.append(pl.when(tcp).then(flags).otherwise(0))
    return out[0], out[1]


def read_argus(paths: Sequence[str | Path], options: SourceOptions, rejects: RejectCounter,
               ) -> Iterator[pa.RecordBatch]:
    """Canonical batches from Argus binetflow CSV files (directories: *.binetflow, *.csv)."""
    layout = TimeLayout(TIME_FORMAT, options.input_timezone, "s")
    for path in expand_paths(paths, FILE_PATTERNS):
        yield from _read_file(path, options, rejects, layout)


def _read_file(path: Path, options: SourceOptions, rejects: RejectCounter, layout: TimeLayout,
               ) -> Iterator[pa.RecordBatch]:
    name = str(path)
    with open(path, "rb") as f:
        header = f.readline().rstrip(b"\r\n").decode("utf-8", "replace").split(",")
        header = [h.strip() for h in header]
        require_columns(name, header, REQUIRED)
        for df in text_frames(f, header, ",", options.batch_size, name, rejects, first_line=2):
            batch = normalize(_to_flows(df), name, layout, rejects, own_rate=1,
                              exporter_sampling=options.exporter_sampling,
                              default_rate=options.default_sampling_rate, exporter=options.exporter, time_window=options.time_window_ms())
            if batch.num_rows:
                yield batch


def _to_flows(df: pl.DataFrame) -> pl.DataFrame:
    proto = pl.col("Proto").str.strip_chars().str.to_lowercase()
    icmp = proto.is_in(["icmp", "ipv6-icmp", "icmp6"])
    src_f, dst_f = state_flags(pl.col("Proto"), pl.col("State"))
    sport = pl.col("Sport").str.strip_chars()
    icmp_port = pl.when(sport.str.to_lowercase().str.starts_with("0x")) \
        .then(sport.str.slice(2).str.to_integer(base=16, strict=False).cast(pl.String)) \
        .otherwise(sport)
    common = [
        pl.col("StartTime").alias("ts_start"), pl.col("Dur").alias("duration"),
        pl.col("SrcAddr").alias("src_ip"), pl.col("DstAddr").alias("dst_ip"),
        pl.when(icmp).then(pl.lit("0")).otherwise(pl.col("Sport")).alias("src_port"),
        pl.when(icmp).then(icmp_port).otherwise(pl.col("Dport")).alias("dst_port"),
        pl.col("Proto").alias("proto"), pl.col("_line"),
    ]
    if "SrcPkts" in df.columns and "SrcBytes" in df.columns:
        tot_p = pl.col("TotPkts").cast(pl.Int64, strict=False)
        tot_b = pl.col("TotBytes").cast(pl.Int64, strict=False)
        src_p = pl.col("SrcPkts").cast(pl.Int64, strict=False)
        src_b = pl.col("SrcBytes").cast(pl.Int64, strict=False)

        def diff(total: pl.Expr, part: pl.Expr, raw_total: str) -> pl.Expr:
            # keep the raw text when either side does not parse, so the normalizer names it
            return pl.when(total.is_not_null() & part.is_not_null()) \
                .then((total - part).cast(pl.String)).otherwise(pl.col(raw_total))

        flows = df.select(
            *common,
            pl.col("SrcPkts").alias("packets"), pl.col("SrcBytes").alias("bytes"),
            src_f.cast(pl.String).alias("tcp_flags"),
            diff(tot_p, src_p, "TotPkts").alias("resp_packets"),
            diff(tot_b, src_b, "TotBytes").alias("resp_bytes"),
            dst_f.cast(pl.String).alias("resp_tcp_flags"),
        )
        return split_bidirectional(flows)
    return df.select(*common, pl.col("TotPkts").alias("packets"), pl.col("TotBytes").alias("bytes"),
                     (src_f | dst_f).cast(pl.String).alias("tcp_flags"))
