"""The time axis of the node-minute table: range, attribution of flows to minutes, missing minutes.

Minutes are integers: minutes since the Unix epoch (UTC), `floor(ms / 60000)`. A flow covers the
minutes from that of `ts_start` to that of `ts_end` inclusive (an end before the start counts as the
start minute). By default it is attributed to its first minute only; with `spread_over_minutes`
each covered minute gets an equal share (1/k of packets, bytes and the flow count).

A minute is *missing* when no flow record at all - from any exporter, for nodes or not - is
attributed to it (spread: covers it): the source reported nothing, which is not the same as zero
traffic for one node while others are active. With `missing_by = "exporter"` the same rule is
applied per exporter: a node is attributed to the exporter that reported most of its flow records
(either end; ties: the smallest exporter text), and its minute is missing when that exporter sent
no record in it. Nodes without an exporter (null in every record) keep the global rule.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from netflowgen.rejects import InputError


@dataclass
class Survey:
    """What the first pass over the flows found (any engine).

    `events`: DataFrame (minute: Int64, delta: Int64): +n at the first minute of n flows and -n at
    the minute after their last, so a running sum > 0 marks the minutes some flow covers.
    `starts`: DataFrame (minute: Int64, n: Int64) of flow records per ts_start minute.
    `ips`: the distinct IP texts (customer rule) or DataFrame (dst_ip, n) of flow records per
    destination (default rule).
    Per exporter (None unless `missing_by = "exporter"`): `exporter_events` (exporter, minute,
    delta) as `events` for each exporter's records.
    """

    n_flows: int
    first_minute: int | None  # earliest attributed minute, None without flows
    last_minute: int | None  # latest attributed minute
    events: pl.DataFrame
    starts: pl.DataFrame
    ips: pl.DataFrame
    exporter_events: pl.DataFrame | None = None

    def starting_outside(self, rng: "TimeRange") -> int:
        """Flow records whose ts_start minute lies outside `rng` (cut by --start/--end)."""
        m = pl.col("minute")
        return int(self.starts.filter((m < rng.first) | (m >= rng.first + rng.n))["n"].sum())


def survey_from_counts(starts: pl.DataFrame, events: pl.DataFrame | None, ips: pl.DataFrame) -> Survey:
    """Survey from per-minute start counts (minute, n) and, for spread attribution, coverage
    events (minute, delta); without events every flow covers only its start minute.

    Per-exporter mode: `starts` and `events` carry an `exporter` column as well (counts per
    exporter and minute); the global ones are their sums."""
    exporter_events = None
    if "exporter" in starts.columns:
        if events is None:
            events = pl.concat([starts.select("exporter", "minute", delta="n"),
                                starts.select("exporter", pl.col("minute") + 1, delta=-pl.col("n"))])
        exporter_events = events
        events = events.group_by("minute").agg(pl.col("delta").sum())
        starts = starts.group_by("minute").agg(pl.col("n").sum())
    n = int(starts["n"].sum()) if starts.height else 0
    if events is None:
        events = pl.concat([starts.select("minute", delta="n"),
                            starts.select(pl.col("minute") + 1, delta=-pl.col("n"))])
    if n == 0:
        return Survey(0, None, None, events, starts, ips, exporter_events)
    # Every flow puts its -1 at (last minute + 1) and last >= first, so the largest event minute
    # is the latest covered minute + 1.
    return Survey(n, int(starts["minute"].min()), int(events["minute"].max()) - 1, events,  # type: ignore[arg-type]
                  starts, ips, exporter_events)


@dataclass(frozen=True)
class TimeRange:
    """Minutes `first .. first + n - 1` (minutes since the epoch) and which of them are missing."""

    first: int
    n: int
    missing: np.ndarray  # (n,) bool
    # Per exporter (missing_by = "exporter"): exporter names and their (E, n) missing minutes.
    exporters: tuple[str, ...] = ()
    exporter_missing: np.ndarray | None = None

    @property
    def n_missing(self) -> int:
        return int(self.missing.sum())

    def node_missing(self, node_exporter: pl.Series | None) -> tuple[np.ndarray, np.ndarray]:
        """(matrix (1 + E, n) bool, row per node): row 0 is the global rule, row 1 + i that of
        exporter i; a node whose exporter is null (or unknown) gets row 0."""
        rows = [self.missing[None, :]]
        if self.exporter_missing is not None:
            rows.append(self.exporter_missing)
        matrix = np.concatenate(rows)
        if node_exporter is None or not self.exporters:
            return matrix, np.zeros(0 if node_exporter is None else len(node_exporter), np.int64)
        lookup = pl.DataFrame({"exporter": list(self.exporters),
                               "row": np.arange(1, len(self.exporters) + 1, dtype=np.int64)})
        idx = pl.DataFrame({"exporter": node_exporter.cast(pl.String)}).join(
            lookup, on="exporter", how="left", maintain_order="left")["row"].fill_null(0)
        return matrix, idx.to_numpy().astype(np.int64)


def resolve_range(survey: Survey, start: int | None, end: int | None, what: str,
                  max_span_days: float = 400.0) -> TimeRange:
    """Time range from the settings (`start` inclusive, `end` exclusive, minutes since the epoch)
    or, where unset, from the survey; InputError when the input has no flow at all, or when the
    range is longer than `max_span_days` (naming the first and last flow minutes that stretch it),
    before anything the size of the range is allocated."""
    if survey.first_minute is None and (start is None or end is None):
        raise InputError(f"{what}: no flow records, so no time range (give --start and --end)")
    first = start if start is not None else int(survey.first_minute)  # type: ignore[arg-type]
    stop = end if end is not None else int(survey.last_minute) + 1  # type: ignore[arg-type]
    if stop <= first:
        raise InputError(f"{what}: time range is empty: flows end before --start or start after "
                         f"--end (flows cover minutes {survey.first_minute}..{survey.last_minute})")
    n = stop - first
    if n > max_span_days * 1440:
        import datetime as dt

        def when(m: int | None) -> str:
            return "?" if m is None else dt.datetime.fromtimestamp(m * 60, dt.timezone.utc).strftime("%Y-%m-%d %H:%M")
        raise InputError(f"{what}: the flows span {n / 1440:,.0f} days ({when(first)} .. {when(stop - 1)} UTC), more "
                         f"than features.max_span_days = {max_span_days:g}: a record with a broken clock? Give "
                         "--start/--end, or raise the setting")
    missing = ~_covered(survey.events, first, n)
    if survey.exporter_events is None:
        return TimeRange(first, n, missing)
    ev = survey.exporter_events.filter(pl.col("exporter").is_not_null())
    names = tuple(sorted(ev["exporter"].unique().to_list()))
    per = ev.partition_by("exporter", as_dict=True)
    mat = np.stack([~_covered(per[(x,)], first, n) for x in names]) if names else \
        np.zeros((0, n), bool)
    return TimeRange(first, n, missing, names, mat)


def _covered(events: pl.DataFrame, first: int, n: int) -> np.ndarray:
    """(n,) bool: minutes first..first+n-1 that some flow of `events` (minute, delta) covers."""
    diff = np.zeros(n + 1, dtype=np.int64)
    ev = events.filter(pl.col("delta") != 0)
    m = ev["minute"].to_numpy().astype(np.int64) - first
    d = ev["delta"].to_numpy().astype(np.int64)
    before = m < 0  # flows that started before the range and may still cover its first minutes
    diff[0] += d[before].sum()
    keep = (~before) & (m <= n)
    np.add.at(diff, m[keep], d[keep])
    return np.cumsum(diff[:n]) > 0


@dataclass
class LongFlows:
    """Flow records that last longer than `minutes` minutes, and their share of the recorded packets.
    Under start-minute attribution all of such a record's traffic lands in one minute: sources that
    log a connection once, at its end (Zeek conn.log, Argus without status records), turn an hour-long
    call into one minute of a million packets, which a per-minute detector reads as a flood."""

    minutes: int
    flows: int
    packet_share: float  # of all recorded packets (0..1)

    def worth_spreading(self, share: float = 0.1) -> bool:
        return self.packet_share >= share


def long_flows(paths: Sequence[Path], minutes: int = 5) -> LongFlows:
    """`LongFlows` of canonical flow Parquet files: one lazy pass over ts_start, ts_end and packets."""
    dur_ms = pl.col("ts_end").dt.epoch("ms") - pl.col("ts_start").dt.epoch("ms")
    long = dur_ms > minutes * 60_000
    row = (pl.scan_parquet([str(p) for p in paths])
           .select(flows=long.sum(), long_packets=pl.col("packets").filter(long).sum(),
                   packets=pl.col("packets").sum())
           .collect().row(0, named=True))
    total = int(row["packets"] or 0)
    return LongFlows(minutes, int(row["flows"] or 0), int(row["long_packets"] or 0) / total if total else 0.0)


def attribute_exporters(nodes: pl.DataFrame, counts: pl.DataFrame | None) -> pl.DataFrame:
    """The node table with a column `exporter`: the exporter that reported most of the node's flow
    records (`counts`: node_idx, exporter, n = records with the node at either end; ties: the
    smallest exporter text; null exporters do not vote), null when none did or counts is None."""
    if counts is None:
        return nodes.with_columns(exporter=pl.lit(None, pl.String))
    best = counts.filter(pl.col("exporter").is_not_null()).group_by(
        pl.col("node_idx").cast(pl.Int32), pl.col("exporter").cast(pl.String)).agg(
        pl.col("n").sum()).sort(["node_idx", "n", "exporter"], descending=[False, True, False]
                                ).group_by("node_idx", maintain_order=True).first()
    return nodes.join(best.select("node_idx", "exporter"), on="node_idx", how="left",
                      maintain_order="left")
