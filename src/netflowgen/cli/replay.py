"""`netflowgen replay`: send a canonical flow Parquet file to a collector as NetFlow v9 or IPFIX.

Prints what was sent; with `--stats FILE.json` also writes it there, and the resolved settings as
FILE.json.config.toml.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import typer

from netflowgen import config


@dataclass
class ReplayConfig:
    """Settings of `netflowgen replay` (TOML section `[replay]` or top-level keys)."""

    to: str = "127.0.0.1:2055"  # collector HOST:PORT
    protocol: str = "ipfix"  # ipfix or netflow-v9
    speed: float | None = None  # None: as fast as max_pps allows; X: X times real time
    mtu: int = 1500  # largest IP packet in bytes
    template_every: int = 20  # re-send templates after this many data datagrams
    max_pps: float = 20_000.0  # datagrams per second, at most
    batch_size: int = 65_536  # records read from the Parquet file at a time


def replay_cmd(
    flows: Path = typer.Argument(..., help="Canonical flow Parquet file (as written by ingest, "
                                 "collect or simulate)."),
    to: Optional[str] = typer.Option(None, "--to", help="Collector HOST:PORT. [127.0.0.1:2055]"),
    protocol: Optional[str] = typer.Option(None, "--protocol", "-p", help="ipfix or netflow-v9. "
                                           "[ipfix]"),
    speed: Optional[float] = typer.Option(None, "--speed", min=0.0, help=(
        "Replay at X times real time following ts_start (1 = real time, 60 = an hour per minute). "
        "Default: as fast as --max-pps allows.")),
    mtu: Optional[int] = typer.Option(None, "--mtu", min=300, help="Largest IP packet, bytes. [1500]"),
    template_every: Optional[int] = typer.Option(None, "--template-every", min=1, help=(
        "Re-send templates after this many data datagrams. [20]")),
    max_pps: Optional[float] = typer.Option(None, "--max-pps", min=1.0, help=(
        "At most this many datagrams per second (a collector's socket buffer is finite). [20000]")),
    stats: Optional[Path] = typer.Option(None, "--stats", help="Write the send statistics as JSON."),
    config_file: Optional[Path] = typer.Option(None, "--config", help="TOML file with these settings."),
    dump: bool = typer.Option(False, "--dump", help="Print the resolved settings as TOML and exit."),
) -> None:
    """Replay canonical flow records to a NetFlow v9 / IPFIX collector over UDP.

    Each sampling rate present in the file is announced by its own observation domain in an
    options template (samplingInterval), which nfcapd applies to packets and bytes.

    Example: netflowgen replay flows.parquet --to 127.0.0.1:2055 --protocol ipfix --speed 60
    """
    import pyarrow.parquet as pq

    from netflowgen.export import PROTOCOLS, replay
    from netflowgen.export.replay import parse_host_port
    from netflowgen.rejects import InputError, RejectCounter

    overrides = {"to": to, "protocol": protocol, "speed": speed, "mtu": mtu,
                 "template_every": template_every, "max_pps": max_pps}
    cfg = config.load(ReplayConfig, config_file, overrides, section=config.section_if_present(config_file, "replay"))
    if dump:
        typer.echo(config.to_toml(cfg), nl=False)
        raise typer.Exit()
    if cfg.protocol not in PROTOCOLS:
        raise typer.BadParameter(f"--protocol must be one of {', '.join(PROTOCOLS)}, got {cfg.protocol!r}")
    if cfg.speed is not None and cfg.speed <= 0:
        raise typer.BadParameter("--speed must be > 0")
    try:
        target = parse_host_port(cfg.to)
    except ValueError as e:
        raise typer.BadParameter(str(e)) from e
    try:
        parquet = pq.ParquetFile(flows)
    except (OSError, ValueError) as e:  # pyarrow raises ArrowInvalid (a ValueError) on non-Parquet
        raise InputError(f"{flows}: cannot read as Parquet ({e})") from e
    rejects = RejectCounter()
    try:
        result = replay(parquet.iter_batches(batch_size=cfg.batch_size), target, cfg.protocol,
                        cfg.speed, mtu=cfg.mtu, template_every=cfg.template_every,
                        max_pps=cfg.max_pps, rejects=rejects)
    except ValueError as e:  # a file without the canonical columns
        raise InputError(f"{flows}: {e}") from e
    typer.echo(f"sent {result.flows:,} flows in {result.datagrams:,} datagrams "
               f"({result.template_datagrams} with templates) to {cfg.to} as {cfg.protocol} "
               f"in {result.seconds:.2f} s ({result.flows_per_second:,.0f} flows/s)")
    if rejects.rejected:
        typer.echo(rejects.report())
    if stats is not None:
        stats.write_text(json.dumps(result.as_dict(), indent=2) + "\n")
        config.save_beside(stats, cfg)


def register(app: typer.Typer) -> None:
    """Add the `replay` command to the netflowgen CLI."""
    app.command("replay")(replay_cmd)
