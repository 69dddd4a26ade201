"""The class/routing compiler: the feature definition (`definition`) turned into what the
engines compute. A flow end gets class codes (direction, protocol class, port class, flag class)
packed into a few bits; each of the 86 features is a condition on those codes (`feature_terms`),
so every engine compiles the same terms: Polars expressions (`polars_codes`, `feature_conditions`),
Spark columns (`spark_engine`), and the lookup and routing tables of the compiled scatter
(`class_tables`, `routing_slots`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from netflowgen.features.definition import (
    DIR_IN,
    DIR_OUT,
    FEATURES,
    FLAG_CODES,
    FLAG_NOT_TCP,
    FLAG_UNLISTED,
    PORT0_CODE,
    PORT_BEARING_PROTOCOLS,
    TCP,
    port_rules,
    protocol_rules,
)

if TYPE_CHECKING:
    from netflowgen.features.scatter import ClassTables

# Packed group key, low bits first: flag (4) | port (3) | proto (2) | dir (1) | minute | node.
FLAG_BITS, PORT_BITS, PROTO_BITS, DIR_BITS = 4, 3, 2, 1
CLS_BITS = FLAG_BITS + PORT_BITS + PROTO_BITS + DIR_BITS
MINUTE_BITS = 30  # 2^30 minutes ~ 2000 years of range
NODE_SHIFT = CLS_BITS + MINUTE_BITS  # leaves 23 bits: up to 8 M nodes
MAX_NODES = 1 << (63 - NODE_SHIFT)
assert FLAG_NOT_TCP < (1 << FLAG_BITS) and len(port_rules()) <= (1 << PORT_BITS)
assert len(protocol_rules()[0]) + 1 <= (1 << PROTO_BITS)

MEASURES = ("est_pkt", "est_byt", "est_flow")  # the summed measures, in routing order
CODE_COLUMNS = {"proto": "proto_c", "port": "port_c", "flag": "flag_c"}  # definition -> code column


def feature_terms() -> list[tuple[str, int, list[tuple[str, int]], str]]:
    """Per feature (contract order): name, direction, the (code column, value) pairs that must all
    hold, and the measure it sums. The one structure every engine compiles."""
    return [(f.name, f.direction,
             [] if f.code_column is None or f.code is None else [(CODE_COLUMNS[f.code_column], int(f.code))],
             f.value_column) for f in FEATURES]


def polars_codes() -> list[pl.Expr]:
    """Class codes of a flow: proto_c and flag_c (the same from both ends) and the port class
    seen from each end, port_in_c (destination port) and port_out_c (source port)."""
    proto = pl.col("proto").cast(pl.Int32)
    rules, other = protocol_rules()
    pc: Any = pl.when(proto.is_in(rules[0][0])).then(rules[0][1])
    for nums, code in rules[1:]:
        pc = pc.when(proto.is_in(nums)).then(code)
    flags = pl.col("tcp_flags").cast(pl.Int32)
    fc: Any = pl.when(proto != TCP).then(FLAG_NOT_TCP)
    for value, code in FLAG_CODES.items():
        fc = fc.when(flags == value).then(code)
    out = [pc.otherwise(other).alias("proto_c"), fc.otherwise(FLAG_UNLISTED).alias("flag_c")]
    for name, port in (("port_in_c", "dst_port"), ("port_out_c", "src_port")):
        p = pl.col(port).cast(pl.Int32)
        port_code: Any = pl.when(~proto.is_in(PORT_BEARING_PROTOCOLS)).then(PORT0_CODE)
        for lo, hi, code in port_rules():
            port_code = port_code.when(p.is_between(lo, hi)).then(code)
        out.append(port_code.otherwise(PORT0_CODE).alias(name))
    return out


# Code columns that some feature of each direction reads; the others are left out of the key so
# that, e.g., incoming TCP flows with different flags fall into one group (no "in" feature reads
# flags), which cuts the number of groups without changing any sum.
_USED: dict[int, set[str]] = {d: {f.code_column for f in FEATURES if f.direction == d
                                  and f.code_column is not None} for d in (DIR_IN, DIR_OUT)}


def class_bits(direction: int, port_c: str) -> pl.Expr:
    """The packed class bits (dir | proto | port | flag) of one flow end, Int64."""
    used = _USED[direction]
    cls = pl.lit(direction * (1 << (FLAG_BITS + PORT_BITS + PROTO_BITS)), pl.Int64)
    if "proto" in used:
        cls = cls + pl.col("proto_c").cast(pl.Int64) * (1 << (FLAG_BITS + PORT_BITS))
    if "port" in used:
        cls = cls + pl.col(port_c).cast(pl.Int64) * (1 << FLAG_BITS)
    if "flag" in used:
        cls = cls + pl.col("flag_c").cast(pl.Int64)
    return cls



def class_tables() -> "ClassTables":
    """The class bits of `_cls` as lookup tables for the compiled scatter, computed by evaluating
    `_codes` and `_cls` on every (protocol, flags) pair with port 0, and on every port of a
    port-bearing protocol: the class is a sum of independent parts (direction, protocol, port,
    flag), and the port part of a port-bearing protocol depends on the port alone."""
    from netflowgen.features.scatter import ClassTables

    def cls(df: pl.DataFrame) -> pl.DataFrame:
        return df.with_columns(polars_codes()).select(cls_in=class_bits(DIR_IN, "port_in_c"),
                                                cls_out=class_bits(DIR_OUT, "port_out_c"))

    pf = np.arange(1 << 16)
    base = cls(pl.DataFrame({"proto": (pf >> 8).astype(np.uint8), "tcp_flags": (pf & 255).astype(np.uint8),
                             "src_port": np.zeros(1 << 16, np.uint16), "dst_port": np.zeros(1 << 16, np.uint16)}))
    bearing_proto = PORT_BEARING_PROTOCOLS[0]
    ports = cls(pl.DataFrame({"proto": np.full(1 << 16, bearing_proto, np.uint8),
                              "tcp_flags": np.zeros(1 << 16, np.uint8),
                              "src_port": pf.astype(np.uint16), "dst_port": pf.astype(np.uint16)}))
    bearing = np.isin(np.arange(256), PORT_BEARING_PROTOCOLS).astype(np.int64)
    return ClassTables(base["cls_in"].to_numpy(), base["cls_out"].to_numpy(),
                       ports["cls_in"].to_numpy() - ports["cls_in"][0],
                       ports["cls_out"].to_numpy() - ports["cls_out"][0], bearing)


def derived_features() -> dict[int, list[int]]:
    """Features (index -> component indices) that equal the sum of a group of others for every
    class value: each "all traffic" feature is the sum of the protocol features of its direction
    and measure (the protocol classes partition the flows). Checked on all 1024 class values, so a
    change of the definition that breaks the partition just leaves the feature routed."""
    hits = code_frame().select(feature_conditions()).to_numpy().astype(np.int64)  # (1024, 86)
    out = {}
    for i, f in enumerate(FEATURES):
        if f.code_column is not None:
            continue
        parts = [j for j, g in enumerate(FEATURES) if g.code_column == "proto"
                 and g.direction == f.direction and g.value_column == f.value_column]
        if parts and np.array_equal(hits[:, parts].sum(axis=1), hits[:, i]):
            out[i] = parts
    return out


def routing_slots(skip: set[int] | frozenset[int] = frozenset()) -> list[list[np.ndarray]]:
    """Per measure (est_pkt, est_byt, est_flow): the routing slots, each an array class value ->
    the feature index it feeds in that slot (all traffic, protocol, port, flag), or the spare row
    86 where it feeds none. Features in `skip` are fed by none (computed otherwise)."""
    hits = code_frame().select(feature_conditions()).to_numpy()  # (1024, 86) bool
    spare = len(FEATURES)
    out = []
    for m in MEASURES:
        mine = np.array([f.value_column == m and i not in skip for i, f in enumerate(FEATURES)])
        per_cls = [np.flatnonzero(row & mine) for row in hits]
        width = max(len(x) for x in per_cls)
        table = np.full((len(per_cls), width), spare, dtype=np.int64)
        for c, feats in enumerate(per_cls):
            table[c, :len(feats)] = feats
        out.append([np.ascontiguousarray(table[:, k]) for k in range(width)])
    return out


def code_frame() -> pl.DataFrame:
    """Every value of the packed class bits (the low CLS_BITS of a key), decoded into the code
    columns the feature conditions read."""
    c = pl.col("cls")
    return pl.DataFrame({"cls": np.arange(1 << CLS_BITS, dtype=np.int64)}).select(
        "cls",
        dir=(c // (1 << (FLAG_BITS + PORT_BITS + PROTO_BITS))) % 2,
        proto_c=(c // (1 << (FLAG_BITS + PORT_BITS))) % (1 << PROTO_BITS),
        port_c=(c // (1 << FLAG_BITS)) % (1 << PORT_BITS),
        flag_c=c % (1 << FLAG_BITS))


def feature_conditions() -> list[pl.Expr]:
    """The 86 features compiled to Polars boolean expressions over the code columns dir, proto_c,
    port_c, flag_c (contract order); feature i sums its measure over the rows where condition i
    holds."""
    out = []
    for name, direction, terms, _ in feature_terms():
        cond = pl.col("dir") == direction
        for column, value in terms:
            cond = cond & (pl.col(column) == value)
        out.append(cond.alias(name))
    return out

