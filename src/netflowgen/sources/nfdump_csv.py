"""nfdump CSV text (`nfdump -o csv`, 48 columns in 1.7; 1.6 prints the same leading columns).

Pitfalls handled (TOOLS-NOTES): times are *local* time at 1 s resolution (read in
`options.input_timezone`); the end is start + `td` (seconds with ms, more precise than `te`);
`pr` is a name (TCP, UDP, ICMP, GRE) or a number; `flg` is the 8-letter string `CEUAPRSF`
(`...AP.SF` = 27); without `-q` nfdump ends with a `Summary` line and a 2-line totals table, which
is skipped; ICMP type/code is already type*256+code in `dp`. Counters: `ipkt/ibyt` are the flow's;
non-zero `opkt/obyt` (NSEL or `nfdump -b` bidirectional records) become a reverse record.
Records carry no sampling rate (as for nfcapd: nfcapd already scaled what it knew).
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

REQUIRED = ("ts", "td", "sa", "da", "sp", "dp", "pr", "flg", "ipkt", "ibyt")
# nfdump column -> canonical (or bidirectional helper) name
RENAME = {"ts": "ts_start", "td": "duration", "sa": "src_ip", "da": "dst_ip", "sp": "src_port",
          "dp": "dst_port", "pr": "proto", "flg": "tcp_flags", "ipkt": "packets", "ibyt": "bytes",
          "opkt": "resp_packets", "obyt": "resp_bytes", "in": "in_if", "out": "out_if",
          "ra": "exporter"}
TIME_FORMAT = "%Y-%m-%d %H:%M:%S%.f"


FILE_PATTERNS = ("*.csv",)  # what a directory contributes

def read_nfdump_csv(paths: Sequence[str | Path], options: SourceOptions, rejects: RejectCounter,
                    ) -> Iterator[pa.RecordBatch]:
    """Canonical batches from nfdump CSV files (directories: every *.csv under them)."""
    layout = TimeLayout(TIME_FORMAT, options.input_timezone, "s")
    for path in expand_paths(paths, FILE_PATTERNS):
        yield from _read_file(path, options, rejects, layout)


def _read_file(path: Path, options: SourceOptions, rejects: RejectCounter, layout: TimeLayout,
               ) -> Iterator[pa.RecordBatch]:
    name = str(path)
    with open(path, "rb") as f:
        header_raw = f.readline().rstrip(b"\r\n")
        header = header_raw.decode("utf-8", "replace").split(",")
        require_columns(name, header, REQUIRED)
        twice = sorted({c for c in header if header.count(c) > 1})
        if twice:
            raise InputError(f"{name}:1: column(s) {twice} appear twice in the header")
        keep = [c for c in header if c in RENAME]
        in_footer = False

        def is_record(ln: bytes) -> bool:
            # nfdump's totals ("Summary" and two lines) end one output; the header of the next
            # concatenated output starts records again
            nonlocal in_footer
            if ln == header_raw:
                in_footer = False
                return False
            if in_footer or ln == b"Summary":
                in_footer = True
                return False
            return bool(ln)

        for df in text_frames(f, header, ",", options.batch_size, name, rejects, first_line=2,
                              keep=is_record):
            df = df.select([pl.col(c).alias(RENAME[c]) for c in keep] + [pl.col("_line")])
            if "resp_packets" in df.columns:
                df = df.with_columns(pl.col("tcp_flags").alias("resp_tcp_flags"))
                if "resp_bytes" not in df.columns:
                    raise InputError(f"{name}: column opkt without obyt")
                df = split_bidirectional(df)
            batch = normalize(df, name, layout, rejects, exporter_sampling=options.exporter_sampling,
                              default_rate=options.default_sampling_rate, exporter=options.exporter, time_window=options.time_window_ms())
            if batch.num_rows:
                yield batch
