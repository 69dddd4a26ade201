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
