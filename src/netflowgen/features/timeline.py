"""The time axis of the node-minute table: range, attribution of flows to minutes, missing minutes.

Minutes are integers: minutes since the Unix epoch (UTC), `floor(ms / 60000)`. A flow covers the
minutes from that of `ts_start` to that of `ts_end` inclusive (an end before the start counts as the
start minute). By default it is attributed to its first minute only; with `spread_over_minutes`
each covered minute gets an equal share (1/k of packets, bytes and the flow count).

A minute is *missing* when no flow record at all - from any exporter, for nodes or not - is
attributed to it (spread: covers it): the source reported nothing, which is not the same as zero
traffic for one node while others are active.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from netflowgen.rejects import InputError

MS_PER_MINUTE = 60_000


@dataclass
class Survey:
    """What the first pass over the flows found (any engine).

    `events`: DataFrame (minute: Int64, delta: Int64): +n at the first minute of n flows and -n at
    the minute after their last, so a running sum > 0 marks the minutes some flow covers.
    `starts`: DataFrame (minute: Int64, n: Int64) of flow records per ts_start minute.
    `ips`: the distinct IP texts (customer rule) or DataFrame (dst_ip, n) of flow records per
    destination (default rule).
    """

    n_flows: int
    first_minute: int | None  # earliest attributed minute, None without flows
    last_minute: int | None  # latest attributed minute
    events: pl.DataFrame
    starts: pl.DataFrame
    ips: pl.DataFrame

    def starting_outside(self, rng: "TimeRange") -> int:
        """Flow records whose ts_start minute lies outside `rng` (cut by --start/--end)."""
        m = pl.col("minute")
        return int(self.starts.filter((m < rng.first) | (m >= rng.first + rng.n))["n"].sum())


def survey_from_counts(starts: pl.DataFrame, events: pl.DataFrame | None, ips: pl.DataFrame) -> Survey:
    """Survey from per-minute start counts (minute, n) and, for spread attribution, coverage
    events (minute, delta); without events every flow covers only its start minute."""
    n = int(starts["n"].sum()) if starts.height else 0
    if events is None:
        events = pl.concat([starts.select("minute", delta="n"),
                            starts.select(pl.col("minute") + 1, delta=-pl.col("n"))])
    if n == 0:
        return Survey(0, None, None, events, starts, ips)
    # Every flow puts its -1 at (last minute + 1) and last >= first, so the largest event minute
    # is the latest covered minute + 1.
    return Survey(n, int(starts["minute"].min()), int(events["minute"].max()) - 1, events,  # type: ignore[arg-type]
                  starts, ips)


@dataclass(frozen=True)
class TimeRange:
    """Minutes `first .. first + n - 1` (minutes since the epoch) and which of them are missing."""

    first: int
    n: int
    missing: np.ndarray  # (n,) bool

    @property
    def n_missing(self) -> int:
        return int(self.missing.sum())


def resolve_range(survey: Survey, start: int | None, end: int | None, what: str) -> TimeRange:
    """Time range from the settings (`start` inclusive, `end` exclusive, minutes since the epoch)
    or, where unset, from the survey; InputError when the input has no flow at all."""
    if survey.first_minute is None and (start is None or end is None):
        raise InputError(f"{what}: no flow records, so no time range (give --start and --end)")
    first = start if start is not None else int(survey.first_minute)  # type: ignore[arg-type]
    stop = end if end is not None else int(survey.last_minute) + 1  # type: ignore[arg-type]
    if stop <= first:
        raise InputError(f"{what}: time range is empty: flows end before --start or start after "
                         f"--end (flows cover minutes {survey.first_minute}..{survey.last_minute})")
    n = stop - first
    diff = np.zeros(n + 1, dtype=np.int64)
    ev = survey.events.filter(pl.col("delta") != 0)
    m = ev["minute"].to_numpy().astype(np.int64) - first
    d = ev["delta"].to_numpy().astype(np.int64)
    before = m < 0  # flows that started before the range and may still cover its first minutes
    diff[0] += d[before].sum()
    keep = (~before) & (m <= n)
    np.add.at(diff, m[keep], d[keep])
    covered = np.cumsum(diff[:n]) > 0
    return TimeRange(first, n, ~covered)
