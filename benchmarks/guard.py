"""Throughput of the UDP guard before nfcapd (netflowgen.live.guard.DatagramGuard) on loopback, next
to a plain Python recv loop measured in the same run on the same stream.

    python benchmarks/guard.py [--seconds 5] [--flows 100000]

A sender process replays IPFIX datagrams made by FlowEncoder from a synthetic canonical flow table
(templates re-sent every 20 data datagrams, as the encoder does) as fast as it can, for `seconds`,
first to a bare recvfrom loop, then to a DatagramGuard that validates and forwards to a sink socket
nobody reads (the forwarded copies are then dropped by the kernel: the guard's sendto costs the same).
Both receivers run in one thread of this process; each is counted over the same window after a short
warm-up. flows/s = datagrams/s x the mean flow records per datagram of the stream. When the sender
is slower than a receiver the figure is the sender's rate: `offered` and the receiver's kernel drops
show it (no drops: the receiver kept up, so its figure is a lower bound); try --senders 2.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import socket
import threading
import time
from typing import Any, Callable

import numpy as np
import pyarrow as pa

from netflowgen.export.encoder import FlowEncoder
from netflowgen.live.drops import udp_counters
from netflowgen.live.guard import DatagramGuard
from netflowgen.schema import FLOW_SCHEMA


def flow_table(n: int, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    start = 1_700_000_000_000 + np.sort(rng.integers(0, 60_000, n))
    ip = rng.integers(0, 1 << 24, (2, n))
    return pa.table({
        "ts_start": pa.array(start, pa.timestamp("ms", tz="UTC")),
        "ts_end": pa.array(start + rng.integers(0, 5_000, n), pa.timestamp("ms", tz="UTC")),
        "src_ip": [f"10.{a >> 16}.{(a >> 8) & 255}.{a & 255}" for a in ip[0]],
        "dst_ip": [f"172.16.{(a >> 8) & 255}.{a & 255}" for a in ip[1]],
        "src_port": pa.array(rng.integers(1024, 65536, n), pa.uint16()),
        "dst_port": pa.array(rng.choice([53, 80, 443, 123, 22], n), pa.uint16()),
        "proto": pa.array(rng.choice([6, 17], n), pa.uint8()),
        "tcp_flags": pa.array(rng.integers(0, 256, n), pa.uint8()),
        "packets": pa.array(rng.integers(1, 100, n), pa.int64()),
        "bytes": pa.array(rng.integers(40, 150_000, n), pa.int64()),
        "sampling_rate": pa.array(np.ones(n, dtype=np.uint32), pa.uint32()),
        "exporter": pa.array([None] * n, pa.string()),
        "in_if": pa.array(rng.integers(0, 8, n), pa.uint32()),
        "out_if": pa.array(rng.integers(0, 8, n), pa.uint32()),
    }, schema=FLOW_SCHEMA)


def send(payloads: list[bytes], port: int, seconds: float, sent: Any) -> None:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.2", 0))
    target, n, deadline = ("127.0.0.1", port), 0, time.monotonic() + seconds
    while time.monotonic() < deadline:
        for p in payloads[:1000]:  # check the clock every 1000 datagrams
            s.sendto(p, target)
        n += 1000
        payloads = payloads[1000:] + payloads[:1000]
    sent.value = n
    s.close()


def window(count: Callable[[], int], port: int, payloads: list[bytes], seconds: float,
           senders: int) -> tuple[float, float]:
    """Received datagrams/s (warm-up 0.5 s excluded) and offered datagrams/s by the senders."""
    sent = [mp.Value("q", 0) for _ in range(senders)]
    procs = [mp.get_context("fork").Process(target=send, args=(payloads, port, seconds + 0.5, v)) for v in sent]
    for proc in procs:
        proc.start()
    time.sleep(0.5)
    c0, t0 = count(), time.monotonic()
    time.sleep(seconds)
    c1, t1 = count(), time.monotonic()
    for proc in procs:
        proc.join()
    return (c1 - c0) / (t1 - t0), sum(v.value for v in sent) / (seconds + 0.5)


def plain(payloads: list[bytes], seconds: float, senders: int) -> tuple[float, float, int | None]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    sock.bind(("127.0.0.1", 0))
    counter = [0]

    def loop() -> None:
        recv = sock.recvfrom
        while True:
            data, _ = recv(65535)
            if not data:
                return
            counter[0] += 1

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    port = sock.getsockname()[1]
    rate, offered = window(lambda: counter[0], port, payloads, seconds, senders)
    counters = udp_counters(port, {os.fstat(sock.fileno()).st_ino})
    try:
        sock.shutdown(socket.SHUT_RD)
    except OSError:
        pass
    thread.join(5)
    sock.close()
    return rate, offered, counters.drops if counters is not None else None


def guarded(payloads: list[bytes], seconds: float, senders: int) -> tuple[float, float, dict[str, object]]:
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", 0))
    guard = DatagramGuard(("127.0.0.1", 0), sink.getsockname())
    guard.start()
    rate, offered = window(lambda: guard.stats().forwarded, guard.listen_port, payloads, seconds, senders)
    drops = guard.kernel_drops()
    stats = guard.stop().as_dict()
    sink.close()
    return rate, offered, dict(stats, kernel_drops=drops)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--flows", type=int, default=100_000)
    ap.add_argument("--senders", type=int, default=1, help="sender processes (one may not saturate the plain loop)")
    args = ap.parse_args()
    datagrams = list(FlowEncoder("ipfix").encode(flow_table(args.flows)))
    payloads = [d.payload for d in datagrams]
    per = sum(d.records for d in datagrams) / len(datagrams)
    print(f"stream: {len(payloads):,} IPFIX datagrams, {per:.1f} flows per datagram (templates included), "
          f"{np.mean([len(p) for p in payloads]):.0f} bytes on average")
    p_rate, p_offered, p_drops = plain(payloads, args.seconds, args.senders)
    g_rate, g_offered, stats = guarded(payloads, args.seconds, args.senders)
    bound = " (no kernel drops: sender-bound, a lower bound)" if p_drops == 0 else f" (kernel drops {p_drops:,})"
    print(f"plain recv loop : {p_rate:10,.0f} datagrams/s {p_rate * per:12,.0f} flows/s   (offered {p_offered:,.0f}/s){bound}")
    print(f"guard           : {g_rate:10,.0f} datagrams/s {g_rate * per:12,.0f} flows/s   (offered {g_offered:,.0f}/s)")
    print(f"guard / plain   : {g_rate / p_rate:.2f}")
    print(f"guard stats: {stats}")


if __name__ == "__main__":
    main()
