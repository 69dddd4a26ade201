"""Ready column maps for flow tables published by research datasets (csv/parquet formats).

A preset maps each canonical name (plus the bidirectional extras resp_packets, resp_bytes,
resp_tcp_flags, and duration) to the source column names it may have, the first one present wins.
Header names are compared after stripping spaces (CICFlowMeter CSVs write " Src IP").
"""

from __future__ import annotations

from dataclasses import dataclass, field

import polars as pl


@dataclass(frozen=True)
class Preset:
    """How one family of flow tables maps to canonical columns.

    columns: canonical (or resp_*/duration) name -> candidate source column names.
    required: canonical names that must be found (InputError naming the missing ones otherwise).
    time_formats: tried in order on the time column (first that parses the first values wins).
    duration_unit: unit of the duration column ("s", "ms", "us").
    own_rate: sampling rate the records carry by construction (None: unknown).
    flag_counts: TCP flag bit -> candidate "flag count" columns (CICFlowMeter); a flag is set in the
    record when its count is > 0.
    needs_start: the table has no time column; `--start` gives every record its start time.
    """

    name: str
    columns: dict[str, tuple[str, ...]]
    required: tuple[str, ...]
    time_formats: tuple[str, ...] = ()
    duration_unit: str = "s"
    own_rate: int | None = None
    flag_counts: dict[int, tuple[str, ...]] = field(default_factory=dict)
    needs_start: bool = False


# NF-* datasets (Sarhan et al., NetFlow v9 fields exported by nProbe from the original pcaps):
# IN_* = source -> destination, OUT_* = destination -> source. v3 adds FLOW_START/END_MILLISECONDS;
# v1/v2 have no time at all. v2/v3 split TCP flags into CLIENT_/SERVER_TCP_FLAGS.
NF = Preset(
    name="nf",
    columns={
        "ts_start": ("FLOW_START_MILLISECONDS",),
        "ts_end": ("FLOW_END_MILLISECONDS",),
        "duration_ms": ("FLOW_DURATION_MILLISECONDS",),
        "src_ip": ("IPV4_SRC_ADDR", "IPV6_SRC_ADDR"),
        "dst_ip": ("IPV4_DST_ADDR", "IPV6_DST_ADDR"),
        "src_port": ("L4_SRC_PORT",),
        "dst_port": ("L4_DST_PORT",),
        "proto": ("PROTOCOL",),
        "tcp_flags": ("CLIENT_TCP_FLAGS", "TCP_FLAGS"),
        "resp_tcp_flags": ("SERVER_TCP_FLAGS", "TCP_FLAGS"),
        "packets": ("IN_PKTS",),
        "bytes": ("IN_BYTES",),
        "resp_packets": ("OUT_PKTS",),
        "resp_bytes": ("OUT_BYTES",),
    },
    required=("src_ip", "dst_ip", "src_port", "dst_port", "proto", "packets", "bytes"),
    time_formats=("epoch_ms",),
    duration_unit="ms",
    own_rate=1,
)

# CICFlowMeter CSV (CIC-IDS2017, CSE-CIC-IDS2018, CIC-DDoS2019): both header spellings, durations in
# microseconds, local times; flags only as per-flow counts of packets carrying each flag.
CICFLOWMETER = Preset(
    name="cicflowmeter",
    columns={
        "ts_start": ("Timestamp",),
        "duration_us": ("Flow Duration",),
        "src_ip": ("Src IP", "Source IP"),
        "dst_ip": ("Dst IP", "Destination IP"),
        "src_port": ("Src Port", "Source Port"),
        "dst_port": ("Dst Port", "Destination Port"),
        "proto": ("Protocol",),
        "packets": ("Tot Fwd Pkts", "Total Fwd Packets", "Total Fwd Packet"),
        "bytes": ("TotLen Fwd Pkts", "Total Length of Fwd Packets", "Total Length of Fwd Packet"),
        "resp_packets": ("Tot Bwd Pkts", "Total Backward Packets", "Total Bwd packets"),
        "resp_bytes": ("TotLen Bwd Pkts", "Total Length of Bwd Packets", "Total Length of Bwd Packet"),
    },
    required=("ts_start", "src_ip", "dst_ip", "src_port", "dst_port", "proto", "packets", "bytes"),
    time_formats=("%Y-%m-%d %H:%M:%S%.f", "%d/%m/%Y %I:%M:%S %p", "%d/%m/%Y %H:%M:%S",
                  "%d/%m/%Y %H:%M"),
    duration_unit="us",
    own_rate=1,
    flag_counts={
        0x01: ("FIN Flag Cnt", "FIN Flag Count"), 0x02: ("SYN Flag Cnt", "SYN Flag Count"),
        0x04: ("RST Flag Cnt", "RST Flag Count"), 0x08: ("PSH Flag Cnt", "PSH Flag Count"),
        0x10: ("ACK Flag Cnt", "ACK Flag Count"), 0x20: ("URG Flag Cnt", "URG Flag Count"),
        0x40: ("ECE Flag Cnt", "ECE Flag Count"), 0x80: ("CWE Flag Count", "CWR Flag Count",
                                                         "CWE Flag Cnt", "CWR Flag Cnt"),
    },
)

# The canonical columns under their own names (also what a generic table defaults to).
CANONICAL = Preset(
    name="canonical",
    columns={n: (n,) for n in ("ts_start", "ts_end", "duration", "src_ip", "dst_ip", "src_port",
                               "dst_port", "proto", "tcp_flags", "packets", "bytes",
                               "sampling_rate", "exporter", "in_if", "out_if")},
    required=("ts_start", "src_ip", "dst_ip", "proto", "packets", "bytes"),
)

TABLE_PRESETS: dict[str, Preset] = {p.name: p for p in (NF, CICFLOWMETER)}
# "nfdump-csv" is also accepted as a preset name; the csv reader hands it to the nfdump CSV reader.
PRESET_NAMES: tuple[str, ...] = ("nfdump-csv", *TABLE_PRESETS)


def flags_from_counts(columns: list[str], flag_counts: dict[int, tuple[str, ...]]) -> pl.Expr | None:
    """OR of the bits whose count column is > 0 (Int64 expression), or None when no column exists."""
    value = None
    for bit, candidates in flag_counts.items():
        name = next((c for c in candidates if c in columns), None)
        if name is None:
            continue
        term = pl.when(pl.col(name).cast(pl.Float64, strict=False) > 0).then(bit).otherwise(0)
        value = term if value is None else value | term
    return value
