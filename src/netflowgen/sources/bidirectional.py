"""Bidirectional connection records (Zeek conn.log, Argus binetflow, nfdump with out counters) ->
two unidirectional flow records, as NetFlow would have exported them.

Input columns (text): the canonical ones for the originator -> responder direction, plus
`resp_packets`, `resp_bytes` and `resp_tcp_flags` for the responder -> originator direction.
The reverse record swaps addresses and ports; it is skipped, without counting a rejection, when its
packet count is 0 (a connection nobody answered). For port-less protocols (ICMP: the reader puts
type*256+code in the forward dst_port) the reverse record gets ports 0/0, because the reply's type is
not known (an echo request 8/0 is answered by type 0/0).
"""

from __future__ import annotations

import polars as pl

from netflowgen.schema import PORT_BEARING_PROTOCOLS

_RESP = ("resp_packets", "resp_bytes", "resp_tcp_flags")


def _port_bearing(proto: pl.Expr) -> pl.Expr:
    s = proto.cast(pl.String).str.strip_chars().str.to_lowercase()
    names = ["tcp", "udp", "sctp", "udplite", "udp-lite"] + [str(p) for p in PORT_BEARING_PROTOCOLS]
    return s.is_in(names)


def split_bidirectional(df: pl.DataFrame) -> pl.DataFrame:
    """Forward records for every row, then reverse records for rows with resp_packets != 0.

    Rows keep `_line`, so both records of a connection name the same input line. Forward and reverse
    records are interleaved per chunk (all forward first) — order inside a batch carries no meaning.
    """
    forward = df.drop([c for c in _RESP if c in df.columns])
    resp_pk = pl.col("resp_packets").str.strip_chars()
    # Keep unparsable counts (the normalizer rejects them, naming the field); skip only a clean 0.
    answered = df.filter(resp_pk.is_not_null() & ~resp_pk.is_in(["", "-", "0"]))
    if answered.height == 0:
        return forward
    ported = _port_bearing(pl.col("proto"))
    reverse = answered.with_columns(
        pl.col("dst_ip").alias("src_ip"), pl.col("src_ip").alias("dst_ip"),
        pl.when(ported).then(pl.col("dst_port")).otherwise(pl.lit("0")).alias("src_port"),
        pl.when(ported).then(pl.col("src_port")).otherwise(pl.lit("0")).alias("dst_port"),
        pl.col("resp_packets").alias("packets"), pl.col("resp_bytes").alias("bytes"),
        pl.col("resp_tcp_flags").alias("tcp_flags"),
    ).drop(list(_RESP))
    return pl.concat([forward, reverse.select(forward.columns)], how="vertical")
