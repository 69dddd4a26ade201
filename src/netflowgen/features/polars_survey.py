"""First Polars pass over the flows (`survey`): flows per start minute (per exporter too),
coverage events (spread), and the candidate node IPs."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import polars as pl

from netflowgen.features import exporters
from netflowgen.features.polars_scan import ENGINE, attributed_minutes, scan
from netflowgen.features.timeline import Survey, survey_from_counts


def survey(paths: list[Path], customers: bool, spread: bool, by_exporter: bool = False,
           ip_text_prefixes: Sequence[str] | None = None) -> Survey:
    """First pass: flows per start minute (per exporter too with `by_exporter`), coverage events
    (spread) and the candidate node IPs (distinct IPs, or flow records per destination).
    `ip_text_prefixes` (with `customers`, see `CustomerTable.text_prefixes`): only IP texts that
    start with one of them are candidates; the others are not collected."""
    return _survey(paths, customers, spread, by_exporter, ip_text_prefixes, hash_exporters=True)


def _survey(paths: list[Path], customers: bool, spread: bool, by_exporter: bool,
            ip_text_prefixes: Sequence[str] | None, hash_exporters: bool) -> Survey:
    lf = scan(paths)
    start, end = attributed_minutes(spread)
    # Per exporter, grouped on a 64-bit hash of its text (0.2 CPU s less than on the text at 20 M
    # flows), named back from the distinct exporter texts; exactly, or again on the text when two
    # of their hashes collide.
    keys = [pl.col("exporter").hash().alias("exporter") if hash_exporters else "exporter"
            ] if by_exporter else []
    spans = lf.select(*keys, s=start, e=end)
    key_names = ["exporter"] if by_exporter else []
    queries = [spans.group_by(*key_names, pl.col("s").alias("minute")).agg(
        n=pl.len().cast(pl.Int64))]
    if by_exporter and hash_exporters:
        queries.append(lf.select("exporter").unique())
    # Distinct IP texts. (Grouping on a 64-bit hash of the text instead was at most ~15 % faster
    # here, within the noise of a shared machine, and two 64-bit hashes were slower: kept exact.)
    if customers:  # each end alone, then the union (a concat of two scans of one file buffers)
        keep = (pl.any_horizontal(pl.col("ip").str.starts_with(t) for t in ip_text_prefixes)
                if ip_text_prefixes else pl.lit(True))
        queries += [lf.select(ip=c).filter(keep).unique() for c in ("src_ip", "dst_ip")]
    else:
        queries.append(lf.group_by("dst_ip").agg(n=pl.len()))
    if spread:
        queries.append(pl.concat([spans.select(*key_names, minute="s", delta=pl.lit(1, pl.Int64)),
                                  spans.select(*key_names, minute=pl.col("e") + 1,
                                               delta=pl.lit(-1, pl.Int64))]
                                 ).group_by(*key_names, "minute").agg(pl.col("delta").sum()))
    # Together, but each with its own scan: with the shared scan (common subplan elimination) the
    # streaming engine buffers the faster branches (survey peak memory 0.74 GB at 20 M flows, 2.6 GB
    # at 100 M, measured; 0.77 / 1.53 GB without sharing, and the queries still run in parallel).
    starts, *rest = pl.collect_all(queries, engine=ENGINE,
                                   optimizations=pl.QueryOptFlags(comm_subplan_elim=False))
    if by_exporter and hash_exporters:
        names, *rest = rest
        if not exporters.hashes_distinct(names["exporter"].drop_nulls()):
            return _survey(paths, customers, spread, by_exporter, ip_text_prefixes, False)
        names = names.with_columns(h=pl.col("exporter").hash())
        lookup = names.select(exporter="h", name="exporter")

        def named(df: pl.DataFrame) -> pl.DataFrame:
            return df.join(lookup, on="exporter", how="left").drop("exporter").rename(
                {"name": "exporter"}).select(df.columns)

        starts = named(starts)
        if spread:
            rest[-1] = named(rest[-1])
    if customers:
        ips = pl.concat(rest[:2]).unique()
        events = rest[2:]
    else:
        ips, *events = rest
    return survey_from_counts(starts, events[0] if events else None, ips)


