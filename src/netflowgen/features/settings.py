"""Settings of the `features` stage (SPEC 2-3), read from `[features]` of a TOML config."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from netflowgen.config import ConfigError

ENGINES: tuple[str, ...] = ("polars", "spark")
MISSING_BY: tuple[str, ...] = ("exporter", "global", "none")  # none: no outage inference (quiet = zero traffic)
NODE_RANGES: tuple[str, ...] = ("union", "own")  # own: outside a node's own flows = missing


@dataclass
class FeatureConfig:
    """How flows become the dense node-minute table.

    `start`/`end` are ISO-8601 UTC times (e.g. "2024-01-01T00:00"); `start` is inclusive, `end`
    exclusive, both rounded down to the minute. Unset, the range is the first to the last minute
    that any flow is attributed to.
    """

    engine: str = "polars"  # "polars" (embedded, streaming) or "spark" (any master URL)
    customers: str | None = None  # CSV `customer_id,prefix`; unset: the default node rule
    min_flows: int = 10  # default rule: a destination IP with >= min_flows flow records is a node
    spread_over_minutes: bool = False  # False: a flow counts in the minute of ts_start
    start: str | None = None
    end: str | None = None
    spark_master: str = "local[2]"
    spark_driver_memory: str = "4g"
    spark_shuffle_partitions: int = 8
    chunk_rows: int = 262_144  # dense rows per written row group (bounds memory of densifying)
    compression: str = "lz4"  # Parquet codec of the output; "zstd": ~2x smaller, ~1.7x the encoding CPU
    # Polars, default attribution: add flows straight into the whole dense table when it takes at
    # most this many GB (87 x nodes x minutes x 8 bytes); else (and with spreading) go through the
    # semi table, whose memory grows with the distinct (node, minute, class) combinations.
    dense_max_gb: float = 3.0
    max_span_days: float = 400.0  # a longer time range is refused (one flow with a broken clock would stretch it)
    # Missing minutes: "exporter" = a node-minute is missing when the exporter that reported most of
    # the node's flow records sent nothing in that minute (nodes whose records carry no exporter, and
    # inputs without one, fall back to "global"); "global" = missing when no record at all arrived.
    missing_by: str = "exporter"
    # Time range of each node: "union" = every node spans the whole range (zero-filled); "own" = a
    # node-minute before the node's first or after its last minute with a flow of its own (either
    # end, as counted in the table) is also missing (several captures, one per host: not captured,
    # not quiet). A node without any flow in the range is missing in every minute.
    node_range: str = "union"
    # Sampling rate of records that carry none (formats like nfcapd, nfdump-csv; SPEC 1 order:
    # record -> exporter_sampling -> default_sampling -> reject). Unused for canonical Parquet.
    default_sampling: int | None = None
    exporter_sampling: dict[str, int] = field(default_factory=dict)  # exporter IP -> N

    def validate(self) -> None:
        if self.engine not in ENGINES:
            raise ConfigError(f"features.engine: {self.engine!r} is not one of {list(ENGINES)}")
        if self.min_flows < 1:
            raise ConfigError(f"features.min_flows must be >= 1, got {self.min_flows}")
        if self.chunk_rows < 1:
            raise ConfigError(f"features.chunk_rows must be >= 1, got {self.chunk_rows}")
        if self.compression not in ("zstd", "lz4", "snappy", "gzip", "brotli", "none"):
            raise ConfigError(f"features.compression: {self.compression!r} is not a Parquet codec")
        if self.max_span_days <= 0:
            raise ConfigError(f"features.max_span_days must be > 0, got {self.max_span_days}")
        if self.dense_max_gb < 0:
            raise ConfigError(f"features.dense_max_gb must be >= 0, got {self.dense_max_gb}")
        if self.missing_by not in MISSING_BY:
            raise ConfigError(f"features.missing_by: {self.missing_by!r} is not one of {list(MISSING_BY)}")
        if self.node_range not in NODE_RANGES:
            raise ConfigError(f"features.node_range: {self.node_range!r} is not one of {list(NODE_RANGES)}")
        if self.default_sampling is not None and self.default_sampling < 1:
            raise ConfigError(f"features.default_sampling must be >= 1, got {self.default_sampling}")
        bad = {k: v for k, v in self.exporter_sampling.items() if not isinstance(v, int) or v < 1}
        if bad:
            raise ConfigError(f"features.exporter_sampling: rates must be integers >= 1, got {bad}")
        s, e = self.start_minute(), self.end_minute()
        if s is not None and e is not None and e <= s:
            raise ConfigError(f"features.end ({self.end}) must be after features.start ({self.start})")

    def start_minute(self) -> int | None:
        """`start` as minutes since the Unix epoch (UTC), or None."""
        return _to_minute(self.start, "start")

    def end_minute(self) -> int | None:
        """`end` (exclusive) as minutes since the Unix epoch, rounded up so that a partial minute
        before `end` is kept; None when unset."""
        m = _to_minute(self.end, "end", ceil=True)
        return m


def _to_minute(text: str | None, key: str, ceil: bool = False) -> int | None:
    if text is None:
        return None
    try:
        t = dt.datetime.fromisoformat(text)
    except ValueError as e:
        raise ConfigError(f"features.{key}: {text!r} is not an ISO-8601 time") from e
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.timezone.utc)  # the project's times are UTC
    ms = int(t.timestamp() * 1000)
    return -(-ms // 60_000) if ceil else ms // 60_000
