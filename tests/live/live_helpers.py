"""Helpers of the live-path tests: skip when a program is missing, softflowd runs that cannot
hang, and a tiny pcap written byte by byte."""

from __future__ import annotations

import re
import shutil
import socket
import struct
import subprocess
from pathlib import Path

import pytest


def need(*programs: str) -> None:
    missing = [p for p in programs if shutil.which(p) is None]
    if missing:
        pytest.skip(f"needs {', '.join(missing)} (apt-get install nfdump softflowd)")


def run_softflowd(pcap: Path, port: int, version: str) -> dict[str, int]:
    """Export `pcap` with softflowd to 127.0.0.1:port; returns its own counts (flows, records,
    packets processed). Flags per TOOLS-NOTES: -c none (else it hangs), -a (pcap timestamps),
    -A milli with IPFIX (else end < start)."""
    need("softflowd")
    cmd = ["softflowd", "-d", "-r", str(pcap), "-n", f"127.0.0.1:{port}", "-c", "none", "-a",
           "-v", version]
    if version == "10":
        cmd += ["-A", "milli"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    exported = re.search(r"Flows exported: (\d+) \((\d+) records\)", res.stdout)
    processed = re.search(r"Packets processed: (\d+)", res.stdout)
    assert exported and processed, res.stdout
    return {"flows": int(exported[1]), "records": int(exported[2]), "packets": int(processed[1])}


# --- a tiny pcap, written with struct -----------------------------------------------------------
def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _ipv4(src: str, dst: str, proto: int, payload: bytes, ident: int) -> bytes:
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), ident, 0, 64, proto, 0,
                         socket.inet_aton(src), socket.inet_aton(dst))
    header = header[:10] + struct.pack("!H", _checksum(header)) + header[12:]
    return header + payload


def _tcp(sport: int, dport: int, flags: int, data: bytes = b"") -> bytes:
    return struct.pack("!HHIIBBHHH", sport, dport, 1000, 0, 5 << 4, flags, 65535, 0, 0) + data


def _udp(sport: int, dport: int, data: bytes) -> bytes:
    return struct.pack("!HHHH", sport, dport, 8 + len(data), 0) + data


# (seconds after the start, src, dst, proto, sport, dport, tcp flags, payload bytes)
TINY_PACKETS = [
    (0.000, "10.0.0.1", "10.0.0.2", 6, 40000, 80, 0x02, 0),  # SYN
    (0.010, "10.0.0.2", "10.0.0.1", 6, 80, 40000, 0x12, 0),  # SYN-ACK
    (0.020, "10.0.0.1", "10.0.0.2", 6, 40000, 80, 0x10, 0),  # ACK
    (0.030, "10.0.0.1", "10.0.0.2", 6, 40000, 80, 0x18, 100),  # PSH-ACK with data
    (0.250, "10.0.0.1", "10.0.0.2", 6, 40000, 80, 0x11, 0),  # FIN-ACK
    (0.500, "10.0.0.3", "10.0.0.53", 17, 5353, 53, 0, 40),  # DNS query
    (0.520, "10.0.0.53", "10.0.0.3", 17, 53, 5353, 0, 120),  # DNS answer
    (1.000, "10.0.0.4", "10.0.0.123", 17, 123, 123, 0, 48),  # NTP
    (1.700, "10.0.0.4", "10.0.0.123", 17, 123, 123, 0, 48),
]
TINY_START = 1_600_000_000  # 2020-09-13 12:26:40 UTC


def write_tiny_pcap(path: Path) -> dict[str, object]:
    """Write TINY_PACKETS as an Ethernet pcap; returns what a correct exporter must report:
    packets, bytes (IP length), protocols and the time range in ms."""
    out = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)]  # pcap header, LINKTYPE_ETHERNET
    total_bytes = 0
    for i, (dt, src, dst, proto, sp, dp, flags, size) in enumerate(TINY_PACKETS):
        l4 = _tcp(sp, dp, flags, b"x" * size) if proto == 6 else _udp(sp, dp, b"y" * size)
        ip = _ipv4(src, dst, proto, l4, i + 1)
        frame = b"\x02\0\0\0\0\x02" + b"\x02\0\0\0\0\x01" + b"\x08\x00" + ip
        usec = int(round(dt * 1e6))
        sec, usec = TINY_START + usec // 1_000_000, usec % 1_000_000
        out.append(struct.pack("<IIII", sec, usec, len(frame), len(frame)) + frame)
        total_bytes += len(ip)
    path.write_bytes(b"".join(out))
    return {"packets": len(TINY_PACKETS), "bytes": total_bytes, "protos": {6, 17},
            "first_ms": TINY_START * 1000,
            "last_ms": TINY_START * 1000 + int(TINY_PACKETS[-1][0] * 1000)}
