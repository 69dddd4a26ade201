"""The "semi" path (any attribution, e.g. flows spread over their minutes): each flow becomes one
row per node end with its packed class bits, summed per (node, minute, class) under one 64-bit key;
`PolarsChunks` scatters that table into dense blocks through the routing tables."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from netflowgen.features import exporters
from netflowgen.features.classes import (
    CLS_BITS,
    MAX_NODES,
    MEASURES,
    MINUTE_BITS,
    NODE_SHIFT,
    class_bits,
    polars_codes,
    routing_slots,
)
from netflowgen.features.definition import DIR_IN, DIR_OUT, FEATURES
from netflowgen.features.polars_scan import ENGINE, attributed_minutes, scan
from netflowgen.features.timeline import TimeRange


def semi_aggregate(paths: list[Path], nodes: pl.DataFrame, rng: TimeRange, spread: bool,
                   by_exporter: bool = False) -> tuple[pl.DataFrame, pl.DataFrame | None]:
    """Second pass: sums (est_pkt, est_byt, est_flow) per packed key (node, minute, class codes),
    in node blocks (see `PolarsChunks`). Minutes are offsets from `rng.first`; flows outside the
    range are left out (the survey counted them). Integer sums unless `spread` (then Float64).
    With `by_exporter` also (node_idx, exporter, n): flow records per node end and exporter, over
    all the input's records (inside the range or not), for `timeline.attribute_exporters`."""
    rows, lookup, hashed = _ends(paths, nodes, rng, spread, by_exporter)
    queries = []
    if by_exporter:
        queries.append(rows.group_by("node_idx", "xh").agg(n=pl.len().cast(pl.Int64)))
        if not spread:
            rows = rows.filter(pl.col("s").is_between(0, rng.n - 1))
    values = ["est_pkt", "est_byt", "est_flow"]
    if spread:
        # Shares use the whole span; only the minutes inside the range are generated, so a flow
        # with an absurd end time cannot explode into millions of rows.
        k = (pl.col("e") - pl.col("s") + 1).cast(pl.Float64)
        lo, hi = pl.max_horizontal("s", pl.lit(0)), pl.min_horizontal("e", pl.lit(rng.n - 1))
        rows = rows.filter((pl.col("e") >= 0) & (pl.col("s") <= rng.n - 1)).with_columns(
            pl.col(v) / k for v in values).with_columns(
            minute=pl.int_ranges(lo, hi + 1)).explode("minute")
    else:
        rows = rows.rename({"s": "minute"})
    key = pl.col("part") + pl.col("minute").cast(pl.Int64) * (1 << CLS_BITS)
    semi_query = rows.group_by(key.alias("key")).agg(pl.col(v).sum() for v in values)
    semi, *counts = pl.collect_all([semi_query, *queries], engine=ENGINE)
    if not counts:
        return semi, None
    if hashed:
        return semi, counts[0].join(lookup, on="xh", how="left").select("node_idx", "exporter", "n")
    return semi, counts[0].rename({"xh": "exporter"})


def _ends(paths: list[Path], nodes: pl.DataFrame, rng: TimeRange, spread: bool,
          by_exporter: bool) -> tuple[pl.LazyFrame, pl.DataFrame, bool]:
    """One row per node end of a flow: node_idx, [xh], s, e (minute offsets), est_pkt, est_byt,
    est_flow, part (= node_idx << NODE_SHIFT | class bits); plus the exporter hash lookup
    (exporter, xh) and whether its hashes are distinct (else xh holds the exporter text)."""
    if nodes.height > MAX_NODES:
        raise ValueError(f"{nodes.height:,} nodes exceed the supported {MAX_NODES:,}")
    start, end = attributed_minutes(spread)
    rate = pl.col("sampling_rate").cast(pl.Int64)
    # Exporters are counted by a 64-bit hash of their text (cheaper to group than the text) and
    # named back from the survey's exporter list, whose hashes are checked to be distinct.
    names = pl.Series("exporter", list(rng.exporters), pl.String)
    lookup = names.to_frame().with_columns(xh=pl.col("exporter").hash())
    hashed = exporters.hashes_distinct(names)
    xc = ["xh"] if by_exporter else []
    xh = pl.col("exporter").hash() if hashed else pl.col("exporter")
    base = scan(paths).with_columns(
        xh=pl.when(pl.col("exporter").is_not_null()).then(xh) if by_exporter else pl.lit(0)
    ).select(
        "src_ip", "dst_ip", "src_port", "dst_port", "proto", "tcp_flags", *xc,
        s=start - rng.first, e=end - rng.first,
        est_pkt=pl.col("packets").cast(pl.Int64) * rate,
        est_byt=pl.col("bytes").cast(pl.Int64) * rate,
        est_flow=rate)
    if not spread and not by_exporter:  # cheap range filter before the joins (spread needs the
        base = base.filter(pl.col("s").is_between(0, rng.n - 1))  # whole span, exporters all)
    # Codes once per flow, before the joins: the two ends share protocol and flags.
    base = base.with_columns(polars_codes()).select(
        "src_ip", "dst_ip", *xc, "s", "e", "est_pkt", "est_byt", "est_flow",
        cls_in=class_bits(DIR_IN, "port_in_c"), cls_out=class_bits(DIR_OUT, "port_out_c"))
    lazy_nodes = nodes.lazy().select("node", "node_idx")
    ends = []
    for ip, cls in (("dst_ip", "cls_in"), ("src_ip", "cls_out")):
        ends.append(base.join(lazy_nodes, left_on=ip, right_on="node", how="inner").select(
            "node_idx", *xc, "s", "e", "est_pkt", "est_byt", "est_flow",
            part=pl.col("node_idx").cast(pl.Int64) * (1 << NODE_SHIFT) + pl.col(cls)))
    return pl.concat(ends), lookup, hashed




class PolarsChunks:
    """Dense feature blocks for node ranges, scattered from the semi table.

    The feature conditions depend only on the class codes, so they are evaluated once on the
    1024 possible class values (not once per row) into routing tables: per measure, a few
    "slots" (all traffic, protocol, port, flag), each mapping a class value to the feature it
    feeds (or to a discarded spare row). A block is then one `np.bincount` over 10 entries per
    semi row (3 slots for pkt and byt, 4 for flow), instead of the 86 conditional sums of a
    group-by. The semi rows are sorted by key (node, minute, class) once, so a block of nodes is
    one contiguous slice of them.
    """

    MEASURES = MEASURES

    def __init__(self, semi: pl.DataFrame) -> None:
        # Sorted by key = by node, then minute (Polars' multithreaded sort was faster here than a
        # radix bucketing by block in numpy, measured); numpy arrays only, so the caller can drop
        # the DataFrame.
        semi = semi.sort("key")
        keys = semi["key"].to_numpy()
        self.keys = keys
        self.vals = [semi[m].to_numpy().astype(np.float64) for m in self.MEASURES]
        del semi
        self.slots = routing_slots()

    def __call__(self, lo: int, hi: int, n_minutes: int) -> np.ndarray:
        a, b = np.searchsorted(self.keys, [lo << NODE_SHIFT, hi << NODE_SHIFT])
        key = self.keys[a:b]
        rows = slice(a, b)
        n = (hi - lo) * n_minutes
        pos = ((key >> NODE_SHIFT) - lo) * n_minutes + ((key >> CLS_BITS) & ((1 << MINUTE_BITS) - 1))
        cls = key & ((1 << CLS_BITS) - 1)
        r = len(pos)
        width = sum(len(x) for x in self.slots)
        idx = np.empty(width * r, dtype=np.int64)
        weights = np.empty(width * r, dtype=np.float64)
        j = 0
        for slots, val in zip(self.slots, self.vals):
            v = val[rows]
            for table in slots:
                np.add(np.take(table, cls) * n, pos, out=idx[j:j + r])
                weights[j:j + r] = v
                j += r
        out = np.bincount(idx, weights=weights, minlength=(len(FEATURES) + 1) * n)
        return out[:len(FEATURES) * n].reshape(len(FEATURES), n)
