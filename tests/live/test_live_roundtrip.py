"""Round trip through Debian's nfcapd: what our exporter sends is exactly what nfcapd stores.

~2000 synthetic flows (IPv4 and IPv6, TCP/UDP/ICMP, two sampling rates, spread over two hours)
-> replay() as NetFlow v9 or IPFIX -> nfcapd on loopback -> nfcapd file -> netflowgen.sources
nfcapd reader. Every field we encode must come back: times to the ms, addresses, ports, protocol,
flags, interfaces, and packets/bytes multiplied by the sampling rate nfcapd learned from our
options template.
"""

from __future__ import annotations

import ipaddress
import subprocess
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from live_helpers import need
from nfcapd_roundtrip import stored_vs_sent

from netflowgen.export import replay
from netflowgen.schema import FLOW_SCHEMA


def synthetic_flows(n: int, seed: int = 7) -> pa.Table:
    rng = np.random.default_rng(seed)
    start = 1_750_000_000_000 + np.sort(rng.integers(0, 2 * 3_600_000, n))  # two hours, ms
    end = start + rng.integers(0, 120_000, n)
    proto = rng.choice([6, 17, 1], n, p=[0.6, 0.3, 0.1])
    v6 = rng.random(n) < 0.05
    proto = np.where(v6 & (proto == 1), 58, proto)  # ICMP over IPv6 is ICMPv6
    src = [str(ipaddress.IPv6Address((0x20010DB8 << 96) + int(x))) if six
           else str(ipaddress.IPv4Address(int(x))) for x, six in
           zip(rng.integers(0x01000000, 0xDF000000, n), v6)]
    dst = [str(ipaddress.IPv6Address((0x20010DB8_0001 << 80) + int(x))) if six
           else str(ipaddress.IPv4Address(int(x))) for x, six in
           zip(rng.integers(0x01000000, 0xDF000000, n), v6)]
    src_port = np.where(np.isin(proto, (1, 58)), 0, rng.integers(1, 65536, n))
    # ICMP type/code travel in the destination port (type * 256 + code): echo request / reply
    dst_port = np.where(np.isin(proto, (1, 58)), rng.choice([0x0800, 0x0000, 0x0303], n), rng.integers(0, 65536, n))
    flags = np.where(proto == 6, rng.integers(0, 256, n), 0)
    packets = rng.integers(1, 1_000_000, n)
    nbytes = packets * rng.integers(40, 1500, n)
    rate = np.where(rng.random(n) < 0.3, 100, 1)
    return pa.table({
        "ts_start": pa.array(start, pa.timestamp("ms", tz="UTC")),
        "ts_end": pa.array(end, pa.timestamp("ms", tz="UTC")),
        "src_ip": src, "dst_ip": dst,
        "src_port": pa.array(src_port, pa.uint16()), "dst_port": pa.array(dst_port, pa.uint16()),
        "proto": pa.array(proto, pa.uint8()), "tcp_flags": pa.array(flags, pa.uint8()),
        "packets": pa.array(packets, pa.int64()), "bytes": pa.array(nbytes, pa.int64()),
        "sampling_rate": pa.array(rate, pa.uint32()),
        "exporter": pa.array([None] * n, pa.string()),
        "in_if": pa.array(rng.integers(0, 2**32, n), pa.uint32()),
        "out_if": pa.array(rng.integers(0, 2**32, n), pa.uint32()),
    }, schema=FLOW_SCHEMA)


KEY = ["ts_start", "src_ip", "dst_ip", "src_port", "dst_port", "proto"]
COMPARED = ["ts_start", "ts_end", "src_ip", "dst_ip", "src_port", "dst_port", "proto", "tcp_flags",
            "packets", "bytes", "in_if", "out_if"]


@pytest.mark.parametrize("protocol", ["netflow-v9", "ipfix"])
def test_nfcapd_stores_exactly_what_we_send(tmp_path: Path, free_port: int, protocol: str) -> None:
    need("nfcapd", "nfdump")
    sent = synthetic_flows(2000)
    spool = tmp_path / "nfcapd"
    spool.mkdir()
    proc = subprocess.Popen(["nfcapd", "-b", "127.0.0.1", "-p", str(free_port), "-w", str(spool),
                             "-t", "60"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        time.sleep(0.3)  # bind
        stats = replay(sent.to_batches(max_chunksize=500), ("127.0.0.1", free_port), protocol,
                       template_every=10)
        time.sleep(0.3)  # let nfcapd read its socket before asking it to stop
    finally:
        proc.terminate()
        log = proc.communicate(timeout=20)[0].decode()
    assert stats.flows == 2000 and stats.rejected == 0 and len(stats.domains) == 2
    assert "Sequence Errors: 0" in log, log
    diffs = stored_vs_sent(spool, sent, COMPARED, KEY)
    assert not diffs, (len(diffs), diffs[:5])
