"""The golden flow set: hand-written flows that exercise every rule of the 86 features (SPEC 3)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from netflowgen.schema import FLOW_SCHEMA

T0 = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)
N1, N2, N6 = "10.0.0.1", "10.0.0.2", "2001:db8::1"  # the three nodes of the golden set
EXT, EXT6, OTHER = "192.0.2.9", "2001:db9::5", "198.51.100.1"  # not nodes (with customers.csv)


def at(minute: int, second: float) -> dt.datetime:
    return T0 + dt.timedelta(minutes=minute, seconds=second)


def flow(minute, src, sport, dst, dport, proto, flags, pk, by, rate=1, end=None):
    """One canonical flow record starting `minute`:10 s after T0, lasting 2 s unless `end`."""
    start = at(minute, 10)
    return {"ts_start": start, "ts_end": end or start + dt.timedelta(seconds=2), "src_ip": src,
            "dst_ip": dst, "src_port": sport, "dst_port": dport, "proto": proto, "tcp_flags": flags,
            "packets": pk, "bytes": by, "sampling_rate": rate, "exporter": "r1",
            "in_if": None, "out_if": None}


# Minute 0: protocols and sampling. Minute 1: every port class both ways, every flag value.
# Minute 2: nothing at all (missing). Minute 3: only N2 sends, a flow that ends in minute 4.
GOLDEN_FLOWS = [
    flow(0, EXT, 5353, N1, 53, 17, 0, 2, 100, rate=10),  # F1 in udp port53, x10
    flow(0, N1, 80, EXT, 40000, 6, 24, 3, 300),  # F2 out tcp port80 flag24
    flow(0, N1, 123, N2, 123, 17, 0, 1, 76),  # F3 node to node: N1 out + N2 in
    flow(0, EXT, 0, N1, 2048, 1, 0, 4, 336, rate=2),  # F4 ICMP echo (type in dport) -> port0
    flow(0, N6, 0, EXT6, 32768, 58, 0, 1, 64),  # F5 ICMPv6 out of the IPv6 node
    flow(0, EXT, 1234, N2, 443, 47, 2, 5, 5000),  # F6 GRE: ports and flags ignored
    flow(1, N1, 0, EXT, 40001, 6, 0, 1, 40),  # G1 out tcp port0 flag0
    flow(1, N1, 22, EXT, 40002, 6, 16, 2, 80),  # G2 portwk flag16
    flow(1, N1, 8080, EXT, 40003, 6, 2, 1, 60),  # G3 portreg flag2
    flow(1, N1, 50000, EXT, 40004, 6, 17, 1, 52),  # G4 portpriv flag17
    flow(1, N1, 1023, EXT, 40005, 6, 4, 1, 40),  # G5 portwk flag4
    flow(1, N1, 1024, EXT, 40006, 6, 25, 3, 200),  # G6 portreg flag25
    flow(1, N1, 49152, EXT, 40007, 6, 27, 10, 1000),  # G7 portpriv, flags 27 not a feature
    flow(1, N1, 443, EXT, 40008, 6, 18, 1, 60),  # G8 port443 flag18
    flow(1, N1, 53, EXT, 5353, 17, 0, 2, 300, rate=100),  # G9 out udp port53, x100
    flow(1, EXT, 40009, N1, 443, 6, 2, 1, 60),  # H1 in tcp port443
    flow(1, EXT, 40010, N1, 0, 17, 0, 1, 30),  # H2 in udp port0
    flow(1, EXT, 40011, N1, 22, 6, 24, 4, 400),  # H3 in tcp portwk
    flow(1, EXT, 40012, N1, 8080, 6, 27, 5, 500),  # H4 in tcp portreg
    flow(1, EXT, 40013, N1, 60000, 17, 0, 2, 200),  # H5 in udp portpriv
    flow(1, EXT, 40014, N1, 80, 6, 16, 3, 3000, rate=4),  # H6 in tcp port80, x4
    flow(1, EXT, 40015, OTHER, 80, 6, 16, 1, 40),  # X neither end is a node
    flow(3, N2, 50001, EXT, 443, 6, 24, 6, 600, end=at(4, 29.5)),  # F9 spans minutes 3-4
]

CUSTOMERS_CSV = """customer_id,prefix
A,10.0.0.0/24
B,10.0.0.2/32
C,2001:db8::/32
D,2001:db8::/64
"""


def write_flows(path: Path, rows: list[dict]) -> Path:
    pq.write_table(pa.Table.from_pylist(rows, schema=FLOW_SCHEMA), path)
    return path
