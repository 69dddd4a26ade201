"""Settings every reader understands (`SourceOptions`), kept apart so readers and the package
entry point import it without a cycle."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class SourceOptions:
    """How to read a flow source. Also the `[ingest]` TOML section of `netflowgen ingest`."""

    default_sampling_rate: int | None = None  # SPEC 1 step 3: configured default (1 = unsampled)
    exporter_sampling: dict[str, int] = field(default_factory=dict)  # step 2: exporter IP -> N
    column_map: dict[str, str] = field(default_factory=dict)  # canonical name -> source column
    preset: str | None = None  # "nfdump-csv", "nf" (NF-* datasets), "cicflowmeter"
    batch_size: int = 65_536  # records per Arrow batch
    input_timezone: str = "UTC"  # for sources that print local times (nfdump CSV, Argus)
    exporter: str | None = None  # exporter name stamped on records that carry none
    # Tables only (csv/parquet): strptime format of the time columns when not epoch numbers/ISO
    # (e.g. "%d/%m/%Y %I:%M:%S %p"), and the start time given to every record of a table that has
    # no time column at all (NF-* v1/v2 datasets), ISO 8601 in input_timezone.
    time_format: str | None = None
    start: str | None = None
    # With several input files: a file that cannot be read at all is listed in the rejects report
    # (bad_files) and skipped, instead of stopping before anything is written (the records it gave
    # before the error are kept).
    skip_bad_files: bool = False
    # Plausible record times: a start before `earliest_time` (ISO date, UTC) or more than
    # `max_days_ahead` days after now is rejected and counted ("implausible time").
    earliest_time: str = "1990-01-01"
    max_days_ahead: float = 1.0

    def time_window_ms(self) -> tuple[int, int]:
        """[earliest_time, now + max_days_ahead] in epoch ms."""
        import datetime as dt
        try:
            lo = dt.datetime.fromisoformat(self.earliest_time)
        except ValueError:
            raise ValueError(f"earliest_time = {self.earliest_time!r}: expected an ISO date such as 1990-01-01") from None
        lo = lo if lo.tzinfo else lo.replace(tzinfo=dt.timezone.utc)
        hi = dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=self.max_days_ahead)
        return int(lo.timestamp() * 1000), int(hi.timestamp() * 1000)
