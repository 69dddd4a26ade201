"""`netflowgen serve`: live detection. Receive NetFlow v5/v9/IPFIX, close each minute, score every
node with a saved Detector, raise alerts and act on them, expose metrics and a status page.

Writes under --state: collector/ (the receiver's flow files), rows/ (every closed minute's node rows),
alerts.csv (`netflowgen detect`'s columns), alerts.jsonl (the action log), exabgp-dry-run.log,
snapshot/ (what a restart resumes from), detector/ (the detector with the nodes onboarded live).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer

from netflowgen import config


def serve(
    detector: Optional[Path] = typer.Option(None, "--detector", "-d", help="Detector folder (`netflowgen finetune --out`)."),
    customers: Optional[Path] = typer.Option(None, "--customers", help="customers.csv (customer_id,prefix): which IPs are nodes."),
    listen: Optional[str] = typer.Option(None, "--listen", "-l", help="UDP HOST:PORT for v5/v9/IPFIX. [127.0.0.1:2055]"),
    state: Optional[Path] = typer.Option(None, "--state", help="State folder (survives restarts). [serve-state]"),
    metrics_listen: Optional[str] = typer.Option(None, "--metrics", help="HOST:PORT of /metrics and the status page "
                                                 "('' = off). [127.0.0.1:9464]"),
    lateness: Optional[float] = typer.Option(None, "--lateness", help="Seconds a minute waits for late flows after its end. [60]"),
    clear_after: Optional[int] = typer.Option(None, "--clear-after", help="Quiet minutes that close an alert. [15]"),
    onboard_minutes: Optional[int] = typer.Option(None, "--onboard-minutes", help="Minutes of a node the detector never "
                                                  "saw before it is calibrated and scored. [1440]"),
    alert_log: Optional[str] = typer.Option(None, "--alert-log", help="JSON-lines alert log (in --state unless absolute). [alerts.jsonl]"),
    notify_script: Optional[str] = typer.Option(None, "--notify-script", help="Script called FastNetMon-style: "
                                                "SCRIPT IP incoming PPS ban|unban|attack_details (details on stdin)."),
    webhook: Optional[str] = typer.Option(None, "--webhook", help="URL that receives every alert event as a JSON POST (retried)."),
    exabgp_out: Optional[str] = typer.Option(None, "--exabgp-out", help="File or FIFO ExaBGP's process API reads ('-' = stdout)."),
    rtbh: Optional[bool] = typer.Option(None, "--rtbh/--no-rtbh", help="Announce the /32 (/128) with 65535:666 on an alert."),
    flowspec: Optional[bool] = typer.Option(None, "--flowspec/--no-flowspec",
                                            help="Announce a FlowSpec rule for the dominant attack class."),
    enable_routing: Optional[bool] = typer.Option(None, "--enable-routing/--dry-run", help="Send routing lines to --exabgp-out "
                                                  "(default: dry-run, written to exabgp-dry-run.log only)."),
    never_act: Optional[list[str]] = typer.Option(None, "--never-act", help="Prefix never acted on (repeatable)."),
    max_active: Optional[int] = typer.Option(None, "--max-active", help="Cap on simultaneous bans. [100]"),
    duration: Optional[float] = typer.Option(None, "--duration", min=0.1,
                                             help="Stop after this many seconds (default: until Ctrl-C / SIGTERM)."),
    config_file: Optional[Path] = typer.Option(None, "--config", help="TOML with [serve] and [actions] tables."),
    dump: bool = typer.Option(False, "--dump", help="Print the resolved settings as TOML and exit."),
) -> None:
    """Detect attacks live: exporters -> minutes -> scores -> alerts, actions and metrics.

    Point exporters at --listen. Every closed minute is scored by the saved detector exactly as
    `netflowgen detect` scores a table; alerts open and close with the detector's lifecycle; every
    routing action is a dry-run until --enable-routing. Metrics and the status page: http://--metrics/.
    Stop with Ctrl-C or SIGTERM (the open minutes that have flows are closed, the state saved);
    start again with the same --state to resume.

    Example: netflowgen serve --detector det/ --customers customers.csv --listen 127.0.0.1:2055 --state /var/lib/netflowgen
    """
    from netflowgen.live.actions import ActionConfig
    from netflowgen.serve.server import ServeConfig, Server

    overrides = {"detector": str(detector) if detector else None, "customers": str(customers) if customers else None,
                 "listen": listen, "state": str(state) if state else None, "metrics_listen": metrics_listen,
                 "lateness": lateness, "clear_after": clear_after, "onboard_minutes": onboard_minutes}
    if dump and not (detector or config_file):  # --dump alone shows the defaults
        overrides.update(detector="DIR", customers="customers.csv")
    cfg = config.load(ServeConfig, config_file, overrides, section="serve" if config_file else None)
    acts = {"alert_log": alert_log, "notify_script": notify_script, "webhook_url": webhook, "exabgp_out": exabgp_out,
            "rtbh": rtbh, "flowspec": flowspec, "enable_routing": enable_routing, "never_act": never_act or None,
            "max_active": max_active}
    acfg = config.load(ActionConfig, config_file, acts, section="actions" if config_file else None)
    if dump:
        typer.echo("[serve]\n" + config.to_toml(cfg) + "\n[actions]\n" + config.to_toml(acfg), nl=False)
        raise typer.Exit()
    from netflowgen.cli.options import start_receiver, stop_on_signals
    server = Server(cfg, acfg)
    stop = stop_on_signals()
    start_receiver(server.start)
    status = server.status.url if server.status is not None else "off"
    typer.echo(f"serving {server.detector.method} ({len(server.detector.nodes)} nodes) on UDP {cfg.listen}; "
               f"state {cfg.state}/; metrics and status {status}; Ctrl-C to stop", err=False)
    deadline = None if duration is None else time.monotonic() + duration
    try:
        while not stop.wait(cfg.poll):
            closed = server.step()
            if closed:
                nxt = server.assembler.next_minute
                typer.echo(f"closed {closed} minute(s) up to {time.strftime('%Y-%m-%d %H:%M', time.gmtime((nxt or 0) * 60 - 60))} UTC; "
                           f"open alerts {int(server.metrics.alerts_open._value.get())}")
            if deadline is not None and time.monotonic() >= deadline:
                break
    finally:
        server.stop()
    alerts = server.alerts_table()
    typer.echo(f"stopped: {server.metrics.minutes_closed._value.get():.0f} minute(s) closed, {alerts.height} alert(s); "
               f"state in {Path(cfg.state)}/")


def register(app: typer.Typer) -> None:
    """Add the `serve` command to the netflowgen CLI."""
    app.command("serve")(serve)
