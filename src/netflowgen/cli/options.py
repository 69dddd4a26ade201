"""Parsers shared by several commands' options."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Callable

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


# `--adapted-backbone` of the commands that onboard a detector (`detect`, `evaluate-detect`; see `onboarding`)
ADAPTED_BACKBONE = typer.Option(None, "--adapted-backbone", help="A continued pre-training of the detector's "
                                "backbone on this network (`netflowgen pretrain --init DETECTOR/backbone`): its nodes "
                                "get their own embeddings and cut-offs; needs a new theta (--fa-budget).")


def onboarding(det: Any, length: int | None, known_attacks: Path | None, fa_budget: float | None,
               theta: float | None = None, theta_flag: bool = False, adapted: Path | None = None) -> Any:
    """The onboarding options of `detect` and `evaluate-detect` on a loaded Detector: `--adapted-backbone
    MODEL` (`Detector.adopt_backbone`) and `--length N` (the old theta does not carry over either way,
    so they need `--fa-budget`, or `--theta` where the command has one: `theta_flag`) and
    `--known-attacks FILE` (masks the budget's reference range, so it needs `--fa-budget`). Applies
    them; returns the known attacks' table (None without the flag)."""
    from netflowgen.detect.io import read_table
    from netflowgen.rejects import InputError
    if known_attacks is not None and fa_budget is None:
        raise InputError("--known-attacks masks the reference range of --fa-budget; give --fa-budget too")

    def needs_new_theta(why: str, tail: str = "") -> None:
        if fa_budget is None and theta is None:
            raise InputError(f"{why}; give --fa-budget" + (" (or --theta)" + tail if theta_flag else ""))
    if adapted is not None:
        needs_new_theta(f"--adapted-backbone {adapted}: theta was chosen on the old backbone")
        det.adopt_backbone(adapted)
    if length is not None and length != det.length:
        needs_new_theta(f"--length {length}: theta was chosen for {det.length}-minute scores",
                        " to choose one for the new length")
        det.set_length(length)
    return read_table(known_attacks) if known_attacks is not None else None
