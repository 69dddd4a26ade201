"""`netflowgen simulate`: write the built-in simulated ISP (flows, customers, alerts, truth) and/or
replay its flows as NetFlow v9 / IPFIX datagrams to a collector."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import typer

if TYPE_CHECKING:
    from netflowgen.simulate import SimConfig


def register(app: typer.Typer) -> None:
    app.command("simulate", no_args_is_help=False)(simulate_cmd)


def simulate_cmd(
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Output directory (flows.parquet, "
                                       "customers.csv, nodes.csv, alerts.csv, truth.csv, config.toml)."),
    customers: Optional[int] = typer.Option(None, help="Number of customers (default 20)."),
    nodes: Optional[int] = typer.Option(None, help="Number of monitored IPs over all customers (default 120)."),
    days: Optional[float] = typer.Option(None, help="Days of traffic (default 7)."),
    seed: Optional[int] = typer.Option(None, help="Random seed; the same seed gives byte-identical files (default 0)."),
    difficulty: Optional[float] = typer.Option(None, help="0 (easy) .. 1 (hard): weaker attacks, stronger "
                                               "benign surges (default 0.5)."),
    attacks_per_day: Optional[float] = typer.Option(None, help="Attack campaigns per day over all nodes (default 140)."),
    csv: Optional[bool] = typer.Option(None, "--csv/--no-csv", help="Also write nfdump-style flows.csv."),
    export: Optional[str] = typer.Option(None, "--export", help="Replay the flows as 'netflow-v9' or 'ipfix' datagrams."),
    to: Optional[str] = typer.Option(None, "--to", help="Collector HOST:PORT for --export (e.g. 127.0.0.1:2055)."),
    speed: Optional[float] = typer.Option(None, "--speed", help="Replay at X times real time; default as fast as "
                                          "the rate cap allows."),
    max_pps: Optional[float] = typer.Option(None, "--max-pps", help="Cap on datagrams per second sent "
                                            "(protects a slow collector; default: the exporter's)."),
    config: Optional[Path] = typer.Option(None, "--config", help="TOML file with any setting (topology, time, "
                                          "events, output tables; see --dump)."),
    dump: bool = typer.Option(False, "--dump", help="Print the resolved configuration as TOML and exit."),
) -> None:
    """Simulate an ISP: per-node normal traffic, attacks with ramp-ups, benign surges, sampled
    exporters with outages, commercial-defense alerts and the ground truth.

    Example: netflowgen simulate --days 1 --customers 5 --nodes 20 --out data/sim
    """
    from netflowgen import config as cfgmod
    from netflowgen.simulate import SimConfig

    overrides = {
        "seed": seed,
        "topology": {k: v for k, v in {"customers": customers, "nodes": nodes}.items() if v is not None},
        "time": {"days": days} if days is not None else {},
        "events": {k: v for k, v in {"difficulty": difficulty, "attacks_per_day": attacks_per_day}.items()
                   if v is not None},
        "output": {"csv": csv} if csv is not None else {},
    }
    cfg = cfgmod.load(SimConfig, config, overrides)
    if dump:
        typer.echo(cfgmod.to_toml(cfg), nl=False)
        raise typer.Exit()
    if out is None and export is None:
        raise typer.BadParameter("give --out DIR, or --export PROTOCOL --to HOST:PORT (or both)")
    if export is not None and to is None:
        raise typer.BadParameter("--export needs --to HOST:PORT")
    try:
        if out is not None:
            _write(cfg, out)
        if export is not None:
            assert to is not None
            _replay(cfg, export, to, speed, max_pps)
    except ValueError as e:  # settings that cannot work (e.g. more customers than nodes)
        raise typer.BadParameter(str(e)) from e


def _write(cfg: "SimConfig", out: Path) -> None:
    from netflowgen.progress import progress_bar
    from netflowgen.simulate import simulate

    minutes = int(round(cfg.time.days * 1440))
    with progress_bar("simulating minutes", total=minutes) as advance:
        res = simulate(cfg, out, progress=advance)  # also saves config.toml beside the files
    typer.echo(f"wrote {res.records:,} flow records ({res.nodes} nodes, {res.minutes:,} minutes), "
               f"{res.attacks} attack rows, {res.surges} benign surges, {res.alerts} alerts to {out}"
               + (f"; {res.dropped_events} events found no free slot" if res.dropped_events else ""))


def _replay(cfg: "SimConfig", protocol: str, to: str, speed: float | None, max_pps: float | None) -> None:
    # imported lazily: the encoder belongs to netflowgen.export (the live path)
    from netflowgen.export import replay
    from netflowgen.export.replay import parse_host_port
    from netflowgen.simulate import Simulation

    try:
        target = parse_host_port(to)
    except ValueError as e:
        raise typer.BadParameter(str(e)) from e
    kwargs: dict[str, Any] = {"max_pps": max_pps} if max_pps is not None else {}
    stats = replay(Simulation(cfg).batches(), target, protocol, speed, **kwargs)
    typer.echo(f"sent {stats.flows:,} flows in {stats.datagrams:,} {protocol} datagrams to {to} "
               f"in {stats.seconds:.1f} s")
