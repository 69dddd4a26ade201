"""Flows as they arrive -> closed minutes -> dense node-minute rows, from the batch feature code.

The watermark. Time is the exporters' clock as the flows show it: the newest flow start seen (the
*event high mark*), advanced by the wall clock while nothing arrives (so an exporter that goes
silent does not stop time). A minute [m, m + 60 s) *closes* once the watermark passes m + 60 s +
`lateness`. A flow that arrives after its start minute closed is *late*: counted, never added to a
closed minute (the rows of a closed minute are final; they have been scored).

Rows. The minutes being closed are computed by `features.build.build_features` (the code of
`netflowgen features`) on the buffered flows, restricted to those minutes (`start`/`end`). With the
features' default attribution a flow counts in, and covers, its start minute only, so a closed
minute needs nothing that arrives later except late flows (the *missing* rule is the batch one).
Nodes are every IP inside a customer prefix seen so far; a node with no traffic in a closed minute
gets a zero row, as the dense batch table holds it. Rules that need the whole range (missing by
exporter: "the exporter that reported most of a node's records") cannot be decided minute by minute,
so live missing is "global" (no record covered the minute) or "none".
"""

from __future__ import annotations

import datetime as dt
import tempfile
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from netflowgen.features.build import build_features
from netflowgen.features.settings import FeatureConfig
from netflowgen.schema import FEATURE_NAMES, MS_PER_MINUTE, NODE_MINUTE_SCHEMA

LIVE_MISSING_RULES = ("global", "none")


def _start_minutes(flows: pa.Table) -> pa.Array:
    """Epoch minute of each flow's start (the minute the features attribute it to)."""
    return pc.divide(pc.cast(flows.column("ts_start"), pa.int64()), MS_PER_MINUTE)


def _iso(epoch_minute: int) -> str:
    return dt.datetime.fromtimestamp(epoch_minute * 60, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M")


class MinuteAssembler:
    """Buffer flows, close minutes by the watermark, and build their dense node-minute rows.

    >>> a = MinuteAssembler("customers.csv", lateness_s=60)
    >>> late = a.add(flows_table, wall=time.time())
    >>> for rows in a.close_ready(time.time()): ...   # one DataFrame per closed minute
    """

    def __init__(self, customers: str, lateness_s: float = 60.0, missing_by: str = "global") -> None:
        if missing_by not in LIVE_MISSING_RULES:
            raise ValueError(f"live missing rule must be one of {LIVE_MISSING_RULES}, got {missing_by!r}")
        if lateness_s < 0:
            raise ValueError(f"lateness must be >= 0 s, got {lateness_s}")
        self.customers = str(customers)
        self.lateness_ms = int(round(lateness_s * 1000))
        self.missing_by = missing_by
        self.pending: list[pa.Table] = []  # flows that may still count in an open minute
        self.next_minute: int | None = None  # epoch minute of the first open minute
        self.event_high_ms: int | None = None
        self.wall_at_high = 0.0
        self.nodes: dict[str, str] = {}  # node -> customer, every node seen so far
        self.late = 0  # flows that arrived after their minute closed
        self.forced_missing: set[int] = set()  # epoch minutes the receiver was down (a loss, not quiet)
        self.closed_flows: pa.Table | None = None  # the flows that started in the minutes `close` just closed

    # --- input ---------------------------------------------------------------------------------------
    def add(self, flows: pa.Table, wall: float) -> int:
        """Buffer canonical flows received at wall time `wall` (s); returns how many were late."""
        if flows.num_rows == 0:
            return 0
        start_min = _start_minutes(flows)
        if self.next_minute is None:
            self.next_minute = int(pc.min(start_min).as_py())
        on_time = pc.greater_equal(start_min, self.next_minute)
        late = flows.num_rows - int(pc.sum(pc.cast(on_time, pa.int64())).as_py() or 0)
        self.late += late
        kept = flows.filter(on_time) if late else flows
        if kept.num_rows:
            self.pending.append(kept)
            high = int(pc.max(pc.cast(kept.column("ts_start"), pa.int64())).as_py())
            if self.event_high_ms is None or high > self.event_high_ms:
                self.event_high_ms, self.wall_at_high = high, wall
        return late

    def mark_lost(self, first_ms: int, last_ms: int) -> None:
        """The receiver was down or stuck over [first_ms, last_ms] (event time): those minutes are
        missing for every node whatever arrives (what was lost is unknown, not zero)."""
        self.forced_missing.update(range(first_ms // MS_PER_MINUTE, last_ms // MS_PER_MINUTE + 1))

    def watermark_ms(self, wall: float) -> int | None:
        """The event time (UTC ms) the stream is known to have reached at wall time `wall`."""
        if self.event_high_ms is None:
            return None
        return self.event_high_ms + int(max(0.0, wall - self.wall_at_high) * 1000)

    def ready(self, wall: float) -> int:
        """How many open minutes the watermark has closed."""
        w = self.watermark_ms(wall)
        if w is None or self.next_minute is None:
            return 0
        last_closed = (w - self.lateness_ms) // MS_PER_MINUTE - 1  # minute m closes at (m + 1) min + lateness
        return max(0, int(last_closed) - self.next_minute + 1)

    def flush_count(self) -> int:
        """Minutes up to the newest flow start seen (what a final flush closes)."""
        if self.event_high_ms is None or self.next_minute is None:
            return 0
        return max(0, self.event_high_ms // MS_PER_MINUTE - self.next_minute + 1)

    # --- closing ----------------------------------------------------------------------------------------
    def close(self, n: int) -> list[pl.DataFrame]:
        """Close the next `n` open minutes: their dense rows (NODE_MINUTE_SCHEMA), one frame per
        minute, nodes sorted; the flows that can no longer count are dropped from the buffer."""
        if n <= 0 or self.next_minute is None:
            return []
        first, stop = self.next_minute, self.next_minute + n
        flows = pa.concat_tables(self.pending) if self.pending else None
        built = self._build(flows, first, stop) if flows is not None and flows.num_rows else None
        if built is not None:
            for node, customer in built.select("node", "customer").unique().iter_rows():
                self.nodes.setdefault(node, customer)
        start_min = _start_minutes(flows) if flows is not None else None
        covered = self._covered(start_min, first, n)
        frames = [self._dense(built, first + i, bool(~covered[i])) for i in range(n)]
        self.next_minute = stop
        self.closed_flows = None
        if flows is not None and start_min is not None:  # keep the flows that start in an open minute
            self.closed_flows = flows.filter(pc.less(start_min, stop))
            kept = flows.filter(pc.greater_equal(start_min, stop))
            self.pending = [kept] if kept.num_rows else []
        self.forced_missing = {m for m in self.forced_missing if m >= stop}
        return frames

    def _build(self, flows: pa.Table, first: int, stop: int) -> pl.DataFrame:
        cfg = FeatureConfig(customers=self.customers, missing_by="none" if self.missing_by == "none" else "global",
                            start=_iso(first), end=_iso(stop))
        with tempfile.TemporaryDirectory(prefix="netflowgen-serve-") as tmp:
            src = Path(tmp) / "flows.parquet"
            pq.write_table(flows, src)
            build_features([src], Path(tmp) / "rows.parquet", cfg)  # no customer's node in them: no rows
            return pl.read_parquet(Path(tmp) / "rows.parquet")

    def _covered(self, start_min: pa.Array | None, first: int, n: int) -> np.ndarray:
        """(n,) bool: minutes some buffered flow covers (the "global" missing rule's complement); with
        the features' default attribution a flow counts in, and covers, its start minute only."""
        if self.missing_by == "none":
            covered = np.ones(n, dtype=bool)
        else:
            covered = np.zeros(n, dtype=bool)
            if start_min is not None:
                s = start_min.to_numpy() - first
                covered[s[(s >= 0) & (s < n)]] = True
        forced = np.array([first + i in self.forced_missing for i in range(n)], dtype=bool)
        return covered & ~forced

    def _dense(self, built: pl.DataFrame | None, minute: int, missing: bool) -> pl.DataFrame:
        """Rows of every known node at `minute`: the built ones, zero rows for the others."""
        ts = pl.lit(minute * MS_PER_MINUTE).cast(pl.Datetime("ms")).dt.replace_time_zone("UTC")
        have = pl.DataFrame(schema=pl.Schema(NODE_MINUTE_SCHEMA)) if built is None else \
            built.filter(pl.col("minute").dt.epoch("ms") == minute * MS_PER_MINUTE)
        absent = sorted(set(self.nodes) - set(have.get_column("node").to_list()))
        zeros = pl.DataFrame({"node": absent, "customer": [self.nodes[n] for n in absent]},
                             schema={"node": pl.String, "customer": pl.String}).with_columns(
            ts.alias("minute"), pl.lit(False).alias("missing"), *[pl.lit(0.0).alias(f) for f in FEATURE_NAMES])
        out = pl.concat([have.cast(zeros.schema), zeros]).with_columns(pl.lit(missing).alias("missing"))  # type: ignore[arg-type]
        return out.sort("node")

    # --- state ----------------------------------------------------------------------------------------
    def meta(self) -> dict:
        return {"next_minute": self.next_minute, "event_high_ms": self.event_high_ms, "nodes": self.nodes,
                "late": self.late, "forced_missing": sorted(self.forced_missing), "lateness_ms": self.lateness_ms,
                "missing_by": self.missing_by}

    def pending_table(self) -> pa.Table | None:
        return pa.concat_tables(self.pending) if self.pending else None

    def restore(self, meta: dict, pending: pa.Table | None, wall: float) -> None:
        self.next_minute, self.event_high_ms = meta["next_minute"], meta["event_high_ms"]
        self.wall_at_high = wall
        self.nodes = dict(meta["nodes"])
        self.late = int(meta["late"])
        self.forced_missing = set(meta["forced_missing"])
        self.pending = [pending] if pending is not None and pending.num_rows else []
