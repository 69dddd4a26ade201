"""`netflowgen features`: flows -> the dense node-minute table of the 86 traffic features.

Writes OUT (Parquet, schema NODE_MINUTE_SCHEMA) and OUT.config.toml (the resolved settings).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

from netflowgen import config
from netflowgen.cli.options import parse_exporter_sampling


def features(
    flows: list[Path] = typer.Argument(..., help="Flow files: canonical flow Parquet (from "
                                       "`netflowgen ingest`), or any source format with --format."),
    out: Path = typer.Option(Path("features.parquet"), "--out", "-o",
                             help="Node-minute Parquet to write."),
    customers: Optional[Path] = typer.Option(None, "--customers", "-c", help=(
        "CSV `customer_id,prefix` (IPv4/IPv6 CIDRs; longest prefix wins). Without it every "
        "destination IP with >= --min-flows flow records is a node of customer 'default'.")),
    engine: Optional[str] = typer.Option(None, "--engine", "-e", help=(
        "polars (embedded, streaming; the default) or spark (cluster or local[N]). [polars]")),
    spark_master: Optional[str] = typer.Option(None, "--spark-master", help=(
        "Spark master URL for --engine spark, e.g. local[4], spark://host:7077. [local[2]]")),
    fmt: str = typer.Option("parquet", "--format", "-f", help=(
        "Input format; other than parquet the files are converted through netflowgen.sources "
        "first (nfcapd, nfdump-csv, zeek, argus, pcap, csv).")),
    min_flows: Optional[int] = typer.Option(None, "--min-flows", min=1, help=(
        "Default node rule (no --customers): flow records a destination needs. [10]")),
    start: Optional[str] = typer.Option(None, "--start", help=(
        "First minute, ISO-8601 UTC (e.g. 2024-01-01T00:00), inclusive. [first flow]")),
    end: Optional[str] = typer.Option(None, "--end", help=(
        "End of the range, ISO-8601 UTC, exclusive. [after the last flow]")),
    spread: Optional[bool] = typer.Option(None, "--spread-over-minutes/--start-minute", help=(
        "Spread a flow evenly over the minutes it covers, or count it in its start minute. "
        "[start minute]")),
    default_sampling: Optional[int] = typer.Option(None, "--default-sampling", min=1, help=(
        "--format other than parquet: sampling rate N (1 in N) of records that carry none and whose "
        "exporter has no --exporter-sampling; without it they are rejected. 1 = unsampled.")),
    exporter_sampling: Optional[list[str]] = typer.Option(None, "--exporter-sampling", help=(
        "Per-exporter sampling rate EXPORTER_IP=N (repeatable); used before --default-sampling.")),
    missing_by: Optional[str] = typer.Option(None, "--missing-by", help=(
        "exporter: a node-minute is missing when the node's exporter (the one reporting most of its "
        "records) sent nothing that minute; global: when no record at all arrived; none: never (one "
        "source watching its own hosts, where a quiet minute is zero traffic). [exporter]")),
    node_range: Optional[str] = typer.Option(None, "--node-range", help=(
        "union: every node spans the whole time range; own: a node's minutes before its first or "
        "after its last flow are missing (several captures, one per host). [union]")),
    config_file: Optional[Path] = typer.Option(None, "--config", help="TOML file with these "
                                               "settings (a [features] table or top-level keys)."),
    dump: bool = typer.Option(False, "--dump", help="Print the resolved settings as TOML and exit."),
) -> None:
    """Build per-node per-minute traffic features (86 columns, SPEC 3) from flow records.

    Every node gets a row for every minute of the range, zero-filled; a node-minute is marked missing
    when the node's exporter (or, with --missing-by global or no exporter column, the whole source)
    reported nothing in it. Counts are estimated totals (recorded x sampling rate).

    Example: netflowgen features flows/*.parquet --customers customers.csv --out features.parquet
    """
    from netflowgen.features import FeatureConfig, build_features

    overrides: dict[str, Any] = {"customers": str(customers) if customers else None, "engine": engine,
                 "spark_master": spark_master, "min_flows": min_flows, "start": start, "end": end,
                 "spread_over_minutes": spread, "default_sampling": default_sampling,
                 "missing_by": missing_by, "node_range": node_range}
    if exporter_sampling:
        overrides["exporter_sampling"] = parse_exporter_sampling(exporter_sampling)
    cfg = config.load(FeatureConfig, config_file, overrides, section=config.section_if_present(config_file, "features"))
    cfg.validate()
    if dump:
        typer.echo(config.to_toml(cfg), nl=False)
        raise typer.Exit()
    summary = build_features(flows, out, cfg, fmt=fmt)
    written = config.save_beside(out, cfg, extra={"inputs": {
        "flows": [str(p) for p in flows], "format": fmt, "out": str(out)}})
    for line in summary.lines():
        typer.echo(line)
    rejected = summary.rejects.get("rejected", 0)
    if rejected:
        typer.echo(f"rejected: {summary.rejects.get('by_reason')}")
    typer.echo(f"settings saved to {written}")



def register(app: typer.Typer) -> None:
    """Add the `features` command to the netflowgen CLI."""
    app.command("features")(features)
