"""`netflowgen collect`: receive NetFlow v5/v9/IPFIX on a UDP port (Debian's nfcapd) and write one
canonical flow Parquet file per rotation, with the drops of each rotation counted.

Writes OUT/flows-YYYYmmddHHMM.parquet, OUT/flows-....stats.json per rotation, OUT/nfcapd/ (nfcapd's
own files, readable with nfdump), OUT/nfcapd.log, OUT/collector-summary.json and OUT/config.toml.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from netflowgen import config


def collect(
    listen: Optional[str] = typer.Option(None, "--listen", "-l", help="UDP HOST:PORT to receive on "
                                         "(v5, v9 and IPFIX share it). [127.0.0.1:2055]"),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Output directory. [flows]"),
    rotate: Optional[int] = typer.Option(None, "--rotate", min=2, help="Seconds per output file. [60]"),
    sampling: Optional[int] = typer.Option(None, "--sampling", min=1, help=(
        "Sampling rate N (1 in N) for exporters that do not announce one in an option template "
        "(nfcapd -s). Counts are stored multiplied by the rate. [none: unsampled]")),
    socket_buffer: Optional[int] = typer.Option(None, "--socket-buffer", min=65536, help=(
        "Receive buffer in bytes; the kernel caps it at net.core.rmem_max. [8388608]")),
    keep_nfcapd: Optional[bool] = typer.Option(None, "--keep-nfcapd/--no-keep-nfcapd", help=(
        "Keep nfcapd's own files under OUT/nfcapd after conversion. [keep]")),
    guard: Optional[bool] = typer.Option(None, "--guard/--no-guard", help=(
        "Validate every datagram before nfcapd sees it (counts what it refuses). [guard]")),
    duration: Optional[float] = typer.Option(None, "--duration", min=0.1, help=(
        "Stop after this many seconds (default: run until Ctrl-C / SIGTERM).")),
    config_file: Optional[Path] = typer.Option(None, "--config", help="TOML file with these settings "
                                               "(a [collect] table or top-level keys)."),
    dump: bool = typer.Option(False, "--dump", help="Print the resolved settings as TOML and exit."),
) -> None:
    """Collect NetFlow v5/v9/IPFIX from exporters into rotated canonical flow Parquet files.

    Point exporters at HOST:PORT (e.g. softflowd -n 127.0.0.1:2055 -v 10). Each rotation prints
    one line: flows written, sequence failures (datagrams lost upstream), bad packets (undecodable),
    kernel drops (socket buffer full) and rejected records. Stop with Ctrl-C or SIGTERM: the file
    being written is closed and converted.

    Every datagram first passes the guard (malformed, truncated, zero-length template fields, more
    than 64 observation domains per exporter: counted by reason, never given to nfcapd); a stuck or
    dead nfcapd is restarted and the restart counted.

    Example: netflowgen collect --listen 127.0.0.1:2055 --out /data/flows --rotate 60
    (routers elsewhere: --listen 0.0.0.0:2055, or [::]:2055 for IPv6)
    """
    from netflowgen.live import Collector, CollectorConfig, CollectorError

    overrides = {"listen": listen, "out": str(out) if out else None, "rotate": rotate,
                 "sampling": sampling, "socket_buffer": socket_buffer, "keep_nfcapd": keep_nfcapd,
                 "guard": guard}
    section = config.section_if_present(config_file, "collect")
    cfg = config.load(CollectorConfig, config_file, overrides, section=section)
    if dump:
        typer.echo(config.to_toml(cfg), nl=False)
        raise typer.Exit()
    try:
        collector = Collector(cfg, on_rotation=lambda s: typer.echo(s.summary()))
    except ValueError as e:
        raise typer.BadParameter(str(e)) from e
    from netflowgen.cli.options import start_receiver, stop_on_signals
    stop = stop_on_signals()  # flush and convert the open file, then exit 0
    start_receiver(collector.start)
    config.save_beside(Path(cfg.out), cfg)
    typer.echo(f"listening on {cfg.listen} (UDP; NetFlow v5/v9/IPFIX), writing {cfg.out}/, "
               f"a file every {cfg.rotate} s; Ctrl-C to stop", err=False)
    import time
    deadline = None if duration is None else time.monotonic() + duration
    died = False
    try:
        while not stop.wait(0.2):
            # a dead nfcapd, or one that stopped rotating or writes without bound (a poisoned
            # template spins it at ~0.5 GB/s), is restarted; its unfinished file is lost and counted
            problem = collector.health(max(20.0, 3 * cfg.rotate + 10), 256 << 20)
            if problem is not None:
                try:
                    collector.restart(problem)
                except CollectorError as e:
                    typer.secho(f"error: nfcapd could not be restarted: {e}", fg=typer.colors.RED, err=True)
                    died = True
                    break
                typer.secho(f"receiver restarted ({problem}); {collector.discarded_bytes:,} bytes of its "
                            "unfinished files discarded so far", fg=typer.colors.YELLOW, err=True)
            if deadline is not None and time.monotonic() >= deadline:
                break
    finally:
        rotations = collector.stop()
    flows = sum(r.flows_written for r in rotations)
    refused = ""
    if collector.guard is not None:
        g = collector.guard.stats()
        refused = f", {sum(g.rejected.values()):,} datagram(s) refused by the guard {dict(g.rejected) or ''}"
    restarts = f", receiver restarts {collector.restarts}" if collector.restarts else ""
    typer.echo(f"stopped: {len(rotations)} file(s), {flows:,} flows{refused}{restarts}; "
               f"summary in {Path(cfg.out) / 'collector-summary.json'}")
    if died:
        typer.secho(f"error: nfcapd exited unexpectedly; see {Path(cfg.out) / 'nfcapd.log'}",
                    fg=typer.colors.RED, err=True)
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add the `collect` command to the netflowgen CLI."""
    app.command("collect")(collect)
