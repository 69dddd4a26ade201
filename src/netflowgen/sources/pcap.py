"""pcap / pcapng captures -> flows with Debian's `nfpcapd`, then the nfcapd reader.

`nfpcapd -r FILE -w DIR -e 60,15` writes nfcapd files (5-minute rotation) into a temporary
directory, removed afterwards. Pitfalls (TOOLS-NOTES): `-w` must be an absolute path (a relative
one exits silently with status 1). `-e 60,15` (active 60 s, inactive 15 s timeouts) cuts long
connections every minute, which suits per-minute features; it is also how the shared real-data
nfcapd folders were made. A capture holds every packet, so records carry sampling rate 1.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Iterator, Sequence

import pyarrow as pa

from netflowgen.rejects import InputError, RejectCounter
from netflowgen.sources.nfcapd import MAX_TOOL_STDERR, TOOL_TIMEOUT_S, ToolWatchdog, list_nfcapd_files, read_nfcapd_file
from netflowgen.sources.options import SourceOptions
from netflowgen.sources.text import expand_paths

PCAP_PATTERNS = ("*.pcap", "*.pcapng", "*.cap")
FLOW_TIMEOUTS = "60,15"  # active, inactive seconds


def pcap_to_nfcapd(pcap: Path, out_dir: Path, rejects: RejectCounter | None = None) -> list[Path]:
    """Run nfpcapd on one capture; returns the nfcapd files it wrote into `out_dir` (absolute).

    nfpcapd exits 0 when it stops at damaged data ("pcap_next_ex() read error") and when it skips
    packets; both are counted in `rejects` (the flows of the packets before the damage are kept)."""
    exe = shutil.which("nfpcapd")
    if exe is None:
        raise InputError("the `nfpcapd` program is needed to read pcap files: apt-get install nfdump")
    out_dir = out_dir.resolve()
    with tempfile.TemporaryFile() as log:  # nfpcapd's messages, bounded by the watchdog
        proc = subprocess.Popen([exe, "-r", str(pcap.resolve()), "-w", str(out_dir), "-e", FLOW_TIMEOUTS],
                                stdout=log, stderr=subprocess.STDOUT)
        watchdog = ToolWatchdog(proc, log, TOOL_TIMEOUT_S, MAX_TOOL_STDERR)
        proc.wait()
        watchdog.stop()
        log.seek(0)
        output = log.read(MAX_TOOL_STDERR).decode("utf-8", "replace")
    if watchdog.reason:
        raise InputError(f"{pcap}: nfpcapd stopped: {watchdog.reason}; the capture is damaged")
    if proc.returncode != 0:
        lines = [ln for ln in output.splitlines() if ln.strip()]
        detail = " / ".join(lines[-2:]) or f"exit status {proc.returncode}"
        raise InputError(f"{pcap}: nfpcapd cannot read this capture ({detail})")
    if rejects is not None:
        count_nfpcapd_losses(str(pcap), output, rejects)
    try:
        return list_nfcapd_files([out_dir])
    except InputError:
        return []


def count_nfpcapd_losses(pcap: str, output: str, rejects: RejectCounter) -> None:
    """Count what nfpcapd's messages say it could not read: a read error that ended the capture
    early (one reject, with the packet number and nfpcapd's words) and skipped packets (one each)."""
    import re
    processed = re.findall(r"Processed: (\d+), skipped: (\d+)", output)
    read_error = re.search(r"read error: (.*)", output)
    if read_error:
        after = processed[-1][0] if processed else "?"
        rejects.reject("capture unreadable from here on (nfpcapd read error)",
                       f"{pcap}: after packet {after}: {read_error.group(1).strip()[:120]}")
    if processed and int(processed[-1][1]):
        rejects.reject("packet skipped by nfpcapd", f"{pcap}", n=int(processed[-1][1]))


def read_pcap(paths: Sequence[str | Path], options: SourceOptions, rejects: RejectCounter,
              ) -> Iterator[pa.RecordBatch]:
    """Canonical batches from pcap/pcapng files (directories: *.pcap, *.pcapng, *.cap under them)."""
    for pcap in expand_paths(paths, PCAP_PATTERNS):
        with tempfile.TemporaryDirectory(prefix="netflowgen-nfpcapd-") as tmp:
            for f in pcap_to_nfcapd(pcap, Path(tmp), rejects):
                yield from read_nfcapd_file(f, options, rejects, own_rate=1)
