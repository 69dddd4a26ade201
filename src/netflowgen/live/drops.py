"""Where a live collector loses flows, and how we count each place.

1. The kernel: when nfcapd does not read its UDP socket fast enough, the receive buffer fills and
   the kernel drops whole datagrams. Linux counts them per socket in the `drops` column of
   /proc/net/udp (and udp6); `rx_queue` is what waits in the buffer right now.
2. The network / exporter: NetFlow v9 and IPFIX headers carry sequence numbers; nfcapd counts every
   gap as a "sequence failure" per file (shown by `nfdump -I FILE`).
3. nfcapd itself: datagrams it cannot decode ("Bad Packets" in its per-rotation log line).
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass
class UdpSocketCounters:
    """Kernel counters of one UDP socket: datagrams dropped since it opened, bytes queued now."""

    drops: int
    rx_queue_bytes: int


def socket_inodes(pid: int) -> set[int]:
    """Inodes of the sockets process `pid` holds open (empty when it is gone or not ours)."""
    inodes: set[int] = set()
    fd_dir = Path(f"/proc/{pid}/fd")
    try:
        for fd in fd_dir.iterdir():
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            m = re.fullmatch(r"socket:\[(\d+)\]", target)
            if m:
                inodes.add(int(m.group(1)))
    except OSError:
        pass
    return inodes


def udp_counters(port: int, inodes: set[int] | None = None) -> UdpSocketCounters | None:
    """Sum of the kernel counters of the UDP sockets bound to local `port` (restricted to `inodes`
    when given, so another program on the same port is not counted). None when no such socket."""
    found = False
    drops = queued = 0
    for table in ("/proc/net/udp", "/proc/net/udp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            # sl local rem st tx:rx tr:when retrnsmt uid timeout inode ref pointer drops
            if len(cols) < 13:
                continue
            local_port = int(cols[1].rsplit(":", 1)[1], 16)
            if local_port != port or (inodes and int(cols[9]) not in inodes):
                continue
            found = True
            queued += int(cols[4].split(":")[1], 16)
            drops += int(cols[12])
    return UdpSocketCounters(drops, queued) if found else None


_NFCAPD_LINE = re.compile(r"Ident: '(?P<ident>[^']*)' Flows: (?P<flows>\d+), Packets: (?P<packets>\d+), "
                          r"Bytes: (?P<bytes>\d+), Sequence Errors: (?P<seq>\d+), "
                          r"Bad Packets: (?P<bad>\d+)")


def parse_nfcapd_log(text: str) -> list[dict[str, int]]:
    """nfcapd's per-rotation summary lines, in order: flows, packets, bytes, sequence_errors,
    bad_packets of each file it closed."""
    out = []
    for m in _NFCAPD_LINE.finditer(text):
        out.append({"flows": int(m["flows"]), "packets": int(m["packets"]), "bytes": int(m["bytes"]),
                    "sequence_errors": int(m["seq"]), "bad_packets": int(m["bad"])})
    return out


def nfdump_file_info(path: str | Path) -> dict[str, int]:
    """`nfdump -I FILE` as a dict of its integer fields (Flows, Packets, Bytes, Sequence failures,
    First, Last, ...), keys lower-cased with underscores. Empty dict when nfdump cannot read it."""
    try:
        res = subprocess.run(["nfdump", "-I", "-r", str(path)], capture_output=True, text=True,
                             timeout=60, env=dict(os.environ, TZ="UTC", LC_ALL="C"))
    except (OSError, subprocess.TimeoutExpired):
        return {}
    info: dict[str, int] = {}
    for line in res.stdout.splitlines():
        key, sep, value = line.partition(":")
        value = value.strip()
        if sep and value.lstrip("-").isdigit():
            info[key.strip().lower().replace(" ", "_")] = int(value)
    return info
