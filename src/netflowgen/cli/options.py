"""Parsers shared by several commands' options."""

from __future__ import annotations

import threading
from typing import Callable

import typer


def parse_pairs(items: list[str] | None, flag: str, form: str = "KEY=VALUE") -> dict[str, str]:
    """`KEY=VALUE` items -> {KEY: VALUE}; BadParameter naming the flag and `form` for anything else."""
    out: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise typer.BadParameter(f"{flag} expects {form}, got {item!r}")
        out[key.strip()] = value.strip()
    return out


def parse_exporter_sampling(items: list[str] | None) -> dict[str, int]:
    """`--exporter-sampling EXPORTER_IP=N` items -> {EXPORTER_IP: N}, N an integer >= 1."""
    out: dict[str, int] = {}
    form = "KEY=VALUE items EXPORTER_IP=N with N >= 1"
    for key, value in parse_pairs(items, "--exporter-sampling", form).items():
        try:
            rate = int(value)
        except ValueError:
            rate = 0
        if rate < 1:
            raise typer.BadParameter(f"--exporter-sampling expects {form}, got {key}={value!r}")
        out[key] = rate
    return out


def stop_on_signals() -> threading.Event:
    """An event that SIGINT (Ctrl-C) and SIGTERM set: long-running commands (collect, serve) stop
    cleanly on either, closing and converting what they hold."""
    import signal

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    return stop


def start_receiver(start: Callable[[], None]) -> None:
    """Run a receiver's `start`; a CollectorError (nfcapd missing, port in use) is one red line, exit 2."""
    from netflowgen.live.collector import CollectorError

    try:
        start()
    except CollectorError as e:
        typer.secho(f"error: {e}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from e
