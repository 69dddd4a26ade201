"""pcapng captures read through nfpcapd give the same flows as the classic pcap they came from.

The shared real data holds only classic pcap files, so the test rewrites one as pcapng (Section
Header, Interface Description and Enhanced Packet blocks, written here with struct) and compares.
"""

from __future__ import annotations

import shutil
import struct
from pathlib import Path

import pyarrow as pa
import pytest

from netflowgen.sources import open_source


def _block(block_type: int, body: bytes) -> bytes:
    body += b"\0" * (-len(body) % 4)  # 32-bit alignment
    length = 12 + len(body)
    return struct.pack("<II", block_type, length) + body + struct.pack("<I", length)


def pcap_to_pcapng(pcap: Path, out: Path) -> int:
    """Rewrite a little-endian microsecond pcap as pcapng; returns the number of packets."""
    data = pcap.read_bytes()
    magic, _, _, _, _, snaplen, linktype = struct.unpack("<IHHiIII", data[:24])
    assert magic == 0xA1B2C3D4, f"{pcap}: not a little-endian microsecond pcap"
    blocks = [_block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1)),
              _block(0x00000001, struct.pack("<HHI", linktype, 0, snaplen))]
    pos, n = 24, 0
    while pos + 16 <= len(data):
        sec, usec, incl, orig = struct.unpack("<IIII", data[pos:pos + 16])
        ts = sec * 1_000_000 + usec  # default if_tsresol: microseconds
        packet = data[pos + 16:pos + 16 + incl]
        blocks.append(_block(0x00000006, struct.pack("<IIIII", 0, ts >> 32, ts & 0xFFFFFFFF, incl, orig)
                             + packet))
        pos += 16 + incl
        n += 1
    out.write_bytes(b"".join(blocks))
    return n


def test_pcapng_reads_like_its_pcap(real_data: Path, tmp_path: Path) -> None:
    if shutil.which("nfpcapd") is None:
        pytest.skip("needs nfpcapd (apt-get install nfdump)")
    pcap = real_data / "stopddos" / "pcap" / "amp.UDP.isakmp.pcap"
    if not pcap.exists():
        pytest.skip(f"{pcap} is absent")
    pcapng = tmp_path / "capture.pcapng"
    assert pcap_to_pcapng(pcap, pcapng) > 1000
    assert pcapng.read_bytes()[:4] == b"\x0a\x0d\x0d\x0a"
    classic = pa.Table.from_batches(list(open_source([pcap], "pcap")))
    ng = pa.Table.from_batches(list(open_source([pcapng], "pcap")))
    assert ng.num_rows == classic.num_rows > 0
    key = [("ts_start", "ascending"), ("src_ip", "ascending"), ("dst_ip", "ascending"),
           ("src_port", "ascending"), ("dst_port", "ascending")]
    cols = ["ts_start", "ts_end", "src_ip", "dst_ip", "src_port", "dst_port", "proto", "tcp_flags",
            "packets", "bytes", "sampling_rate"]
    assert ng.select(cols).sort_by(key).equals(classic.select(cols).sort_by(key))
    # a directory holding the pcapng is found by its extension
    assert pa.Table.from_batches(list(open_source([tmp_path], "pcap"))).num_rows == classic.num_rows
