"""Progress bars for long work (rich), silent when output is not a terminal or NETFLOWGEN_QUIET=1."""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from typing import Iterator

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


def enabled() -> bool:
    return sys.stderr.isatty() and os.environ.get("NETFLOWGEN_QUIET", "") != "1"


@contextmanager
def progress_bar(description: str, total: float | None = None) -> Iterator["Advance"]:
    """Context manager yielding `advance(n)`; draws a bar on a terminal, nothing otherwise."""
    if not enabled():
        yield Advance(None, None)
        return
    with Progress(SpinnerColumn(), TextColumn("[bold]{task.description}"), BarColumn(),
                  MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn(),
                  transient=False) as prog:
        task = prog.add_task(description, total=total)
        yield Advance(prog, task)


class Advance:
    def __init__(self, prog: Progress | None, task: object) -> None:
        self._prog, self._task = prog, task

    def __call__(self, n: float = 1, description: str | None = None) -> None:
        if self._prog is not None:
            kwargs = {"description": description} if description else {}
            self._prog.update(self._task, advance=n, **kwargs)  # type: ignore[arg-type]
