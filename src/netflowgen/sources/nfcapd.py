"""nfcapd files (nfdump's binary format, 1.6 and 1.7) read through the `nfdump` binary.

We never parse the binary format ourselves: `nfdump -r FILE` prints one line per record with a fixed
`fmt:` line, which we stream from its stdout in chunks of `batch_size` lines. Why this line
(TOOLS-NOTES): `fmt:` is ~10x faster than `-o csv`; `%tsr` gives epoch seconds with ms (UTC, no local
time pitfall); `%ter` prints wrong milliseconds in 1.7.1 so the end is start + `%td` (seconds, ms);
`-N` prints numbers (protocol 6, not TCP); `-6` prints IPv6 addresses in full instead of cut with
"..". nfdump exits 0 even on a truncated or foreign file and says so only on stderr, so stderr is
read after every file: a complaint with no record read makes the file an InputError; a complaint
after some records (a damaged block) counts the records the file's stat record (`nfdump -I`) says
are missing as rejects; nfdump is killed past `MAX_TOOL_STDERR` bytes of errors or
`TOOL_TIMEOUT_S` (a damaged file made it loop forever).

Sampling: nfcapd already multiplied packets/bytes by any rate it knew (announced by the exporter or
its `-s`), and `fmt:` cannot print whether it did, so records carry no rate of their own here: the
per-exporter override (exporter = `%ra`, the exporting router) or the configured default applies
(e.g. `--default-sampling 1` for data nfcapd already scaled), else the record is rejected.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import IO, Iterator, Sequence

import pyarrow as pa

from netflowgen.rejects import InputError, RejectCounter
from netflowgen.sources.normalize import TimeLayout, normalize
from netflowgen.sources.options import SourceOptions
from netflowgen.sources.text import expand_paths, text_frames

NFDUMP_FORMAT = "fmt:%tsr,%td,%sa,%da,%sp,%dp,%pr,%flg,%pkt,%byt,%ra,%in,%out"
FIELDS: tuple[str, ...] = ("ts_start", "duration", "src_ip", "dst_ip", "src_port", "dst_port",
                           "proto", "tcp_flags", "packets", "bytes", "exporter", "in_if", "out_if")
FILE_PATTERNS: tuple[str, ...] = ("nfcapd.*", "*.nfcapd", "*.nfdump", "nfpcapd.*")
LAYOUT = TimeLayout(time_format="epoch_s", timezone="UTC", duration_unit="s")
# Lines nfdump writes on stdout that are not records, even with -q.
_NOT_RECORDS = (b"No matching flows",)


def nfdump_binary() -> str:
    """Path of `nfdump`; InputError with an install hint when it is missing."""
    exe = shutil.which("nfdump")
    if exe is None:
        raise InputError("the `nfdump` program is needed to read nfcapd files: apt-get install nfdump")
    return exe


def list_nfcapd_files(paths: Sequence[str | Path]) -> list[Path]:
    """Files given plus the nfcapd files under each directory (nfcapd.*, sorted, recursive);
    nfcapd's in-progress file `nfcapd.current.*` is skipped."""
    files = expand_paths(paths, FILE_PATTERNS)
    return [f for f in files if not f.name.startswith("nfcapd.current")]


def read_nfcapd(paths: Sequence[str | Path], options: SourceOptions, rejects: RejectCounter,
                ) -> Iterator[pa.RecordBatch]:
    """Canonical batches (FLOW_SCHEMA) from nfcapd files/directories, file by file in name order."""
    for path in list_nfcapd_files(paths):
        yield from read_nfcapd_file(path, options, rejects)


TOOL_TIMEOUT_S = 600.0  # nfdump / nfpcapd on one file: longer is a hang (a damaged file makes nfdump loop)
MAX_TOOL_STDERR = 1 << 20  # bytes of warnings; a damaged file made nfdump write 456 MiB in 20 s


class ToolWatchdog:
    """Kills a reader subprocess that runs past `timeout_s` or writes more than `max_stderr` bytes of
    errors (stderr goes to the file `err`); `reason` says which, None while neither happened."""

    def __init__(self, proc: subprocess.Popen, err: IO[bytes], timeout_s: float, max_stderr: int) -> None:
        import threading
        self.proc, self.err = proc, err
        self.reason: str | None = None
        self._done = threading.Event()
        self._deadline = time.monotonic() + timeout_s
        self._max = max_stderr
        self._thread = threading.Thread(target=self._watch, name="netflowgen-tool-watchdog", daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        while not self._done.wait(0.1):
            if self.proc.poll() is not None:
                return
            if os.fstat(self.err.fileno()).st_size > self._max:
                self.reason = f"more than {self._max // 1024} KiB of errors"
            elif time.monotonic() > self._deadline:
                self.reason = "it ran past its time limit"
            if self.reason:
                self.proc.kill()
                return

    def stop(self) -> None:
        self._done.set()
        self._thread.join()


def read_nfcapd_file(path: str | Path, options: SourceOptions, rejects: RejectCounter,
                     own_rate: int | None = None) -> Iterator[pa.RecordBatch]:
    """Stream one nfcapd file through `nfdump -r`; at most `options.batch_size` records in memory.

    own_rate: the rate records carry by construction (1 for files nfpcapd made from a capture).
    Record numbers in reject samples are positions in nfdump's output (1-based). The nfdump process
    is killed when the consumer stops early (generator closed).
    """
    path = Path(path)
    name = str(path)
    seen_before = rejects.accepted + rejects.rejected
    cmd = [nfdump_binary(), "-r", str(path), "-q", "-N", "-6", "-o", NFDUMP_FORMAT]
    env = dict(os.environ, TZ="UTC", LC_ALL="C")
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, env=env)
        assert proc.stdout is not None
        watchdog = ToolWatchdog(proc, err, TOOL_TIMEOUT_S, MAX_TOOL_STDERR)
        finished = False
        try:
            for df in text_frames(proc.stdout, FIELDS, ",", options.batch_size, name, rejects,
                                  keep=lambda ln: bool(ln) and not ln.startswith(_NOT_RECORDS)):
                batch = normalize(df, name, LAYOUT, rejects, own_rate=own_rate,
                                  exporter_sampling=options.exporter_sampling,
                                  default_rate=options.default_sampling_rate,
                                  exporter=options.exporter, time_window=options.time_window_ms())
                if batch.num_rows:
                    yield batch
            proc.wait()
            finished = True
        finally:
            if not finished:  # consumer stopped early, or an error: never leave nfdump running
                proc.kill()
                proc.wait()
            proc.stdout.close()
        watchdog.stop()
        err.seek(0)
        message = err.read(4096).decode("utf-8", "replace").strip()
    if watchdog.reason:
        first = " / ".join(message.splitlines()[:2])
        raise InputError(f"{name}: nfdump stopped: {watchdog.reason} ({first}); the file is damaged")
    if proc.returncode != 0 or message:
        detail = " / ".join(message.splitlines()[:3]) or f"exit status {proc.returncode}"
        seen = rejects.accepted + rejects.rejected - seen_before
        total = stat_record_flows(path) if seen else None
        if total is not None and total >= seen:
            # partly readable: nfdump printed `seen` of the `total` records its stat record counts
            # and complained about the rest; the rest is counted, the file is not thrown away
            rejects.reject("unreadable nfcapd data (nfdump stopped at a damaged block)",
                           f"{name}: {seen:,} of {total:,} records read; nfdump: {detail[:120]}", n=total - seen)
            return
        raise InputError(f"{name}: nfdump cannot read this file as nfcapd data ({detail})")


def stat_record_flows(path: Path) -> int | None:
    """The number of flows the file's stat record says it holds (`nfdump -I`), None when unknown."""
    import re
    try:
        out = subprocess.run([nfdump_binary(), "-I", "-r", str(path)], capture_output=True, text=True,
                             errors="replace", timeout=30, env=dict(os.environ, LC_ALL="C"))
    except (subprocess.TimeoutExpired, OSError):
        return None
    m = re.search(r"^Flows: (\d+)$", out.stdout, re.M)
    return int(m.group(1)) if m else None
