"""`netflowgen ingest`: any supported flow source -> one canonical flow Parquet file (SPEC 1).

Writes OUT, OUT.rejects.json (counts and samples per reject reason) and OUT.config.toml (the
resolved settings), and prints the reject report.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import typer

from netflowgen import config
from netflowgen.cli.options import parse_exporter_sampling, parse_pairs
from netflowgen.rejects import InputError, RejectCounter
from netflowgen.sources.options import SourceOptions


@dataclass
class IngestConfig:
    """Settings of `netflowgen ingest` (TOML: `format = ...` and a `[source]` table)."""

    format: str = "auto"
    source: SourceOptions = field(default_factory=SourceOptions)


def ingest(
    sources: list[Path] = typer.Argument(None, help="Input files or directories (all of one format)."),
    out: Path = typer.Option(Path("flows.parquet"), "--out", "-o", help="Canonical flow Parquet to write."),
    fmt: Optional[str] = typer.Option(None, "--format", "-f", help="nfcapd, nfdump-csv, zeek, argus, "
                                      "pcap, csv, parquet, or auto (guess from the first input). [auto]"),
    default_sampling: Optional[int] = typer.Option(None, "--default-sampling", min=1, help=(
        "Sampling rate N (1 in N) for records that carry none and whose exporter has no override. "
        "Without it such records are rejected as 'no sampling rate'.")),
    exporter_sampling: Optional[list[str]] = typer.Option(None, "--exporter-sampling", help=(
        "Per-exporter sampling rate EXPORTER_IP=N (repeatable); used before --default-sampling.")),
    column_map: Optional[list[str]] = typer.Option(None, "--map", help=(
        "Column map for csv/parquet tables: canonical=source (repeatable), e.g. --map src_ip=SrcAddr.")),
    preset: Optional[str] = typer.Option(None, "--preset", help="Column preset for tables: nf, "
                                         "cicflowmeter, nfdump-csv."),
    timezone: Optional[str] = typer.Option(None, "--timezone", help="Time zone of sources that print "
                                           "local times (nfdump CSV, Argus, CICFlowMeter). [UTC]"),
    exporter: Optional[str] = typer.Option(None, "--exporter", help="Exporter name for records that "
                                           "carry none."),
    time_format: Optional[str] = typer.Option(None, "--time-format", help="strptime format of a "
                                              "table's time column, e.g. '%d/%m/%Y %H:%M:%S'."),
    start: Optional[str] = typer.Option(None, "--start", help="Start time (ISO 8601) for tables with "
                                        "no time column (NF-* v1/v2)."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", min=1, help="Records per batch."),
    skip_bad_files: Optional[bool] = typer.Option(None, "--skip-bad-files/--stop-at-bad-file", help=(
        "With several files: list an unreadable file in the rejects report and go on, or stop before "
        "writing anything, naming it. [stop]")),
    config_file: Optional[Path] = typer.Option(None, "--config", help="TOML file with these settings."),
    dump: bool = typer.Option(False, "--dump", help="Print the resolved settings as TOML and exit."),
) -> None:
    """Read flow records of any supported format into one canonical flow Parquet file.

    Bad records are counted by reason (report printed, and saved as OUT.rejects.json); the resolved settings are saved as OUT.config.toml.

    Example: netflowgen ingest /var/cache/nfdump -f nfcapd --default-sampling 1 -o flows.parquet
    """
    src: dict[str, object] = {
        "default_sampling_rate": default_sampling, "preset": preset, "input_timezone": timezone,
        "exporter": exporter, "time_format": time_format, "start": start, "batch_size": batch_size,
        "skip_bad_files": skip_bad_files,
    }
    if exporter_sampling:
        src["exporter_sampling"] = parse_exporter_sampling(exporter_sampling)
    if column_map:
        src["column_map"] = parse_pairs(column_map, "--map")
    overrides = {"format": fmt, "source": {k: v for k, v in src.items() if v is not None}}
    try:
        cfg = config.load(IngestConfig, config_file, overrides)
    except config.ConfigError as e:
        typer.secho(f"error: {e}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from e
    if dump:
        typer.echo(config.to_toml(cfg), nl=False)
        raise typer.Exit()
    if not sources:
        raise typer.BadParameter("give at least one SOURCE file or directory")
    try:
        n, rejects = _run(sources, out, cfg)
    except InputError as e:
        typer.secho(f"error: {e}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from e
    typer.echo(f"wrote {n:,} flow records to {out}")
    typer.echo(rejects.report())


def _run(sources: list[Path], out: Path, cfg: IngestConfig) -> tuple[int, RejectCounter]:
    from netflowgen.progress import progress_bar
    from netflowgen.sources import guess_format, open_source, write_flows

    fmt = guess_format(sources[0]) if cfg.format == "auto" else cfg.format
    rejects = RejectCounter(max_samples=5)
    with progress_bar(f"ingest {fmt}", total=None) as advance:
        def counted():
            for batch in open_source(sources, fmt, cfg.source, rejects):
                advance(batch.num_rows)
                yield batch
        n = write_flows(counted(), out, rejects)
    report = {"format": fmt, "sources": [str(s) for s in sources], "written": n, **rejects.as_dict()}
    out.with_name(out.name + ".rejects.json").write_text(json.dumps(report, indent=2) + "\n")
    config.save_beside(out, IngestConfig(format=fmt, source=cfg.source))
    return n, rejects


def register(app: typer.Typer) -> None:
    """Add the `ingest` command to the netflowgen CLI."""
    app.command("ingest")(ingest)
