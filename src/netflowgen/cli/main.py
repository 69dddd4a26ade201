"""Entry point of the `netflowgen` command.

Each command lives in its own module under `netflowgen.cli` and exposes `register(app)`. Heavy
imports (torch, pyspark) stay inside the command functions so `netflowgen --help` is instant.
"""

from __future__ import annotations

import importlib
import sys

import typer

from netflowgen import __version__
from netflowgen.config import ConfigError
from netflowgen.rejects import InputError

app = typer.Typer(
    name="netflowgen",
    help="Per-IP traffic models from NetFlow/IPFIX: ingest flows, build per-minute features, "
    "pre-train a traffic model and detect DDoS attacks early.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# Pipeline order: sources -> flows -> features -> tokens -> model -> pre-train / fine-tune -> evaluate.
COMMAND_MODULES: tuple[str, ...] = (
    "simulate",
    "ingest",
    "splice",
    "collect",
    "replay",
    "features",
    "pretrain",
    "evaluate_pretrain",
    "earlydetect",
    "finetune",
    "detect",
    "serve",
    "evaluate_detect",
    "experiment",
    "demo",
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"netflowgen {__version__}")
        raise typer.Exit()


_DEBUG = {"on": False}


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version and exit."),
          debug: bool = typer.Option(False, "--debug", help="Show the full traceback of an error "
                                     "(otherwise one line and exit code 2).")) -> None:
    _DEBUG["on"] = debug


for _name in COMMAND_MODULES:
    importlib.import_module(f"netflowgen.cli.{_name}").register(app)


# What a user can cause and fix: bad input, bad settings, paths that cannot be read or written.
USER_ERRORS = (InputError, ConfigError, FileNotFoundError, FileExistsError, NotADirectoryError,
               IsADirectoryError, PermissionError)


def main() -> None:
    """Run the CLI; user errors (bad input, bad settings, unusable paths) print one clear line and
    exit 2 (`netflowgen --debug ...` shows the traceback)."""
    try:
        app()
    except USER_ERRORS as e:
        if _DEBUG["on"]:
            raise
        typer.secho(f"error: {_one_line(e)}", fg=typer.colors.RED, err=True)
        sys.exit(2)


def _one_line(e: BaseException) -> str:
    if isinstance(e, OSError) and e.filename is not None and not isinstance(e, FileNotFoundError):
        return f"{e.filename}: {e.strerror or e}"  # e.g. an output folder whose parent is a file
    return " ".join(str(e).split())


if __name__ == "__main__":
    main()
