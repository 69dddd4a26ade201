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
