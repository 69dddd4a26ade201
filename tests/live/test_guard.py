"""The UDP guard before nfcapd: structural checks of v5 / v9 / IPFIX datagrams (the datagrams that
broke nfcapd 1.7.1 among them), caps on exporters and domains, and forwarding through real loopback
sockets with each exporter kept distinct."""

from __future__ import annotations

import collections
import socket
import struct
import threading
import time
from typing import Iterator

import numpy as np
import pyarrow as pa
import pytest

from netflowgen.export.encoder import FlowEncoder
from netflowgen.live.guard import DatagramGuard, GuardStats, TemplateBook, check_datagram
from netflowgen.schema import FLOW_SCHEMA

POISON = bytes.fromhex("000a00206b0f2558000000010000000100020010012d000200080000000c0000")
EXP = "192.0.2.1"


def flows(n: int, start_ms: int = 1_700_000_000_000, v6_every: int = 0) -> pa.Table:
    idx = np.arange(n)
    src = [f"2001:db8::{i + 1:x}" if v6_every and i % v6_every == 0 else f"10.0.{i // 256 % 256}.{i % 256}"
           for i in idx]
    dst = [f"2001:db8:1::{i + 1:x}" if v6_every and i % v6_every == 0 else f"192.0.2.{i % 200}" for i in idx]
    ts = pa.array(start_ms + idx * 10, pa.timestamp("ms", tz="UTC"))
    return pa.table({
        "ts_start": ts, "ts_end": pa.array(start_ms + idx * 10 + 250, pa.timestamp("ms", tz="UTC")),
        "src_ip": src, "dst_ip": dst,
        "src_port": pa.array(1000 + idx % 60000, pa.uint16()), "dst_port": pa.array(idx % 1024, pa.uint16()),
        "proto": pa.array(np.full(n, 6), pa.uint8()), "tcp_flags": pa.array(idx % 256, pa.uint8()),
        "packets": pa.array(idx + 1, pa.int64()), "bytes": pa.array((idx + 1) * 100, pa.int64()),
        "sampling_rate": pa.array(np.full(n, 1), pa.uint32()), "exporter": pa.array([None] * n, pa.string()),
        "in_if": pa.array(idx, pa.uint32()), "out_if": pa.array([None] * n, pa.uint32()),
    }, schema=FLOW_SCHEMA)


def encoded(protocol: str, n: int = 300, domain_id: int = 1) -> list[bytes]:
    """Template datagram first, then data datagrams (IPv4 and IPv6 templates both used)."""
    return [d.payload for d in FlowEncoder(protocol, domain_id=domain_id).encode(flows(n, v6_every=7))]


def ipfix(sets: list[tuple[int, bytes]], domain: int = 1) -> bytes:
    body = b"".join(struct.pack("!HH", sid, 4 + len(c)) + c for sid, c in sets)
    return struct.pack("!HHIII", 10, 16 + len(body), 1_700_000_000, 0, domain) + body


def v9(sets: list[tuple[int, bytes]], source: int = 1, count: int = 1) -> bytes:
    body = b"".join(struct.pack("!HH", sid, 4 + len(c)) + c for sid, c in sets)
    return struct.pack("!HHIIII", 9, count, 1000, 1_700_000_000, 0, source) + body


def v5(count: int) -> bytes:
    return struct.pack("!HHIIIIBBH", 5, count, 1000, 1_700_000_000, 0, 0, 0, 0, 0) + bytes(48 * count)


# --- check_datagram ---------------------------------------------------------------------------------
def test_poisoned_template_then_its_data_are_rejected() -> None:
    book = TemplateBook()
    assert check_datagram(POISON, EXP, book) == "zero-length field"
    data = ipfix([(301, bytes(16))])
    assert check_datagram(data, EXP, book) == "unknown template"
    assert book.exporters == 0 and book.table(EXP, 10, 1) is None  # nothing of it was kept


@pytest.mark.parametrize("protocol", ["netflow-v9", "ipfix"])
def test_encoder_datagrams_pass_after_their_template(protocol: str) -> None:
    datagrams = encoded(protocol)
    assert len(datagrams) > 3
    assert check_datagram(datagrams[1], EXP, TemplateBook()) == "unknown template"  # data before template
    book = TemplateBook()
    assert [check_datagram(d, EXP, book) for d in datagrams] == [None] * len(datagrams)
    version = 9 if protocol == "netflow-v9" else 10
    table = book.table(EXP, version, 1)
    assert table is not None and set(table) == {256, 257, 258}
    assert book.table("192.0.2.99", version, 1) is None  # templates belong to their exporter


def test_netflow_v5() -> None:
    book = TemplateBook()
    assert check_datagram(v5(1), EXP, book) is None
    assert check_datagram(v5(30), EXP, book) is None
    assert check_datagram(v5(0), EXP, book) == "v5 bad length"
    assert check_datagram(v5(31), EXP, book) == "v5 bad length"
    assert check_datagram(v5(3) + b"\0", EXP, book) == "v5 bad length"
    assert check_datagram(v5(3)[:-1], EXP, book) == "v5 bad length"
    assert check_datagram(v5(3)[:20], EXP, book) == "too short"


def test_every_truncation_is_rejected() -> None:
    book = TemplateBook()
    v9_all, ipfix_all = encoded("netflow-v9"), encoded("ipfix")
    for d in v9_all[:1] + ipfix_all[:1]:
        assert check_datagram(d, EXP, book) is None
    for full in (ipfix_all[0], ipfix_all[1], v9_all[1], v5(5)):
        bad = [n for n in range(len(full)) if check_datagram(full[:n], EXP, book) is None]
        assert bad == [], f"{len(bad)} truncations of a {len(full)}-byte datagram passed"
    # v9 has no length in its header: a multi-set datagram cut exactly between two sets is sound
    template = v9_all[0]
    boundaries, off = set(), 20
    while off < len(template):
        off += struct.unpack_from("!H", template, off + 2)[0]
        boundaries.add(off)
    passed = {n for n in range(len(template)) if check_datagram(template[:n], EXP, book) is None}
    assert passed == boundaries - {len(template)}


def test_reasons() -> None:
    book = TemplateBook()
    fields = struct.pack("!HHHHHH", 8, 4, 12, 4, 2, 4)  # 3 fields, 12-byte records
    cases = [
        (b"\x00\x0a", "too short"),
        (b"\x00\x07" + bytes(30), "unknown version"),
        (ipfix([]) + b"\0\0\0\0", "length mismatch"),
        (ipfix([(2, struct.pack("!HH", 300, 3) + fields)])[:-2], "truncated"),
        (ipfix([(2, struct.pack("!HH", 300, 3) + fields)])[:18] + struct.pack("!H", 2) +
         ipfix([(2, struct.pack("!HH", 300, 3) + fields)])[20:], "bad set length"),
        (ipfix([(4, bytes(8))]), "reserved set id"),
        (ipfix([(2, struct.pack("!HH", 255, 3) + fields)]), "bad template id"),
        (ipfix([(2, struct.pack("!HH", 300, 4) + fields)]), "truncated template"),
        (ipfix([(3, struct.pack("!HHH", 300, 3, 0) + fields)]), "bad scope count"),
        (v9([(0, struct.pack("!HH", 300, 0))]), "empty template"),
        (v9([(0, struct.pack("!HH", 300, 3) + fields[:-1] + b"\0")]), "zero-length field"),
        (v9([(1, struct.pack("!HHH", 300, 4, 0) + struct.pack("!HH", 1, 0) + bytes(2))]), "zero-length field"),
        (v9([(1, struct.pack("!HHH", 300, 3, 4) + bytes(8))]), "bad options template"),
        (v9([(7, bytes(8))]), "reserved set id"),
        (v9([]), "truncated"),
        (v9([], count=0), "no flowsets"),
        (v9([(300, bytes(12))]), "unknown template"),
    ]
    for data, reason in cases:
        assert check_datagram(data, EXP, book) == reason, data.hex()
    assert book.exporters == 0
    # templates and data in one datagram; a data set shorter than one record
    assert check_datagram(ipfix([(2, struct.pack("!HH", 300, 3) + fields), (300, bytes(24))]), EXP, book) is None
    assert check_datagram(ipfix([(300, bytes(11))]), EXP, book) == "data set too short"
    assert check_datagram(v9([(0, struct.pack("!HH", 300, 3) + fields), (300, bytes(12))]), EXP, book) is None
    assert check_datagram(v9([(300, bytes(8))]), EXP, book) == "data set too short"
    # enterprise fields and a variable-length field (record length unknown: no length check)
    enterprise = struct.pack("!HHHHHHI", 301, 2, 8, 4, 0x8000 | 100, 65535, 9)
    assert check_datagram(ipfix([(2, enterprise), (301, bytes(5))]), EXP, book) is None
    # withdrawal: later data for the template are unknown
    assert check_datagram(ipfix([(2, struct.pack("!HH", 300, 0))]), EXP, book) is None
    assert check_datagram(ipfix([(300, bytes(12))]), EXP, book) == "unknown template"
    # clear(): the receiver restarted; data are unknown until the exporter re-sends templates
    assert check_datagram(ipfix([(301, bytes(12))]), EXP, book) is None
    book.clear()
    assert check_datagram(ipfix([(301, bytes(12))]), EXP, book) == "unknown template"
    assert book.exporters == 1


def random_datagrams(rng: np.random.Generator, n: int) -> Iterator[bytes]:
    """Valid v9 / IPFIX version (IPFIX with its length right half of the time) and random bytes,
    some with a plausible set header (template, options, data set ids 256-258) in front."""
    for i in range(n):
        size = int(rng.integers(4, 1400))
        body = rng.integers(0, 256, size, dtype=np.uint8).tobytes()
        if i % 3 == 0:
            set_id = int(rng.choice([0, 1, 2, 3, 256, 257, 258]))
            body = struct.pack("!HH", set_id, int(rng.integers(4, size + 8))) + body[4:]
        if i % 2:
            yield struct.pack("!HHIIII", 9, int(rng.integers(0, 30)), 0, 0, 0, 1) + body
        else:
            length = 16 + size if i % 4 == 0 else int(rng.integers(0, 65536))
            yield struct.pack("!HHIII", 10, length, 0, 0, 1) + body


def test_random_bytes_after_a_valid_version() -> None:
    book = TemplateBook()
    for d in encoded("netflow-v9")[:1] + encoded("ipfix")[:1]:  # known templates: data ids can hit
        assert check_datagram(d, EXP, book) is None
    outcome = collections.Counter(check_datagram(d, EXP, book) for d in random_datagrams(np.random.default_rng(7), 500))
    assert sum(outcome.values()) == 500
    assert outcome[None] <= 5, outcome  # valid by chance: only a few, and then sound for nfcapd
    assert {"truncated", "length mismatch"} <= set(outcome), outcome


def test_domain_flood_is_capped() -> None:
    book = TemplateBook()
    template = encoded("ipfix")[0]
    outcome = collections.Counter()
    for domain in range(1, 20_001):
        d = template[:12] + struct.pack("!I", domain) + template[16:]
        outcome[check_datagram(d, EXP, book)] += 1
    assert outcome == {None: 64, "too many observation domains": 20_000 - 64}
    assert book.domains(EXP) == 64 and book.exporters == 1
    assert check_datagram(encoded("ipfix", domain_id=64)[1], EXP, book) is None  # admitted: still works
    assert check_datagram(template, "192.0.2.2", book) is None  # another exporter has its own 64
    small = TemplateBook(max_exporters=2)
    assert [check_datagram(v5(1), f"10.0.0.{i}", small) for i in range(3)] == [None, None, "too many exporters"]


# --- through sockets -------------------------------------------------------------------------------
def udp(host: str = "127.0.0.1", family: int = socket.AF_INET) -> socket.socket:
    s = socket.socket(family, socket.SOCK_DGRAM)
    s.bind((host, 0))
    return s


def wait_received(guard: DatagramGuard, n: int, timeout: float = 5.0) -> GuardStats:
    deadline = time.monotonic() + timeout
    while (stats := guard.stats()).received < n and time.monotonic() < deadline:
        time.sleep(0.01)
    return stats


def drain(sink: socket.socket) -> list[tuple[bytes, str]]:
    sink.settimeout(0.2)
    got = []
    try:
        while True:
            data, addr = sink.recvfrom(65535)
            got.append((data, addr[0]))
    except (TimeoutError, socket.timeout):
        return got


def test_guard_forwards_valid_datagrams_from_distinct_loopback_sources() -> None:
    with udp() as sink, udp("127.0.0.2") as a, udp("127.0.0.3") as b:
        guard = DatagramGuard(("127.0.0.1", 0), sink.getsockname())
        guard.start()
        try:
            target = ("127.0.0.1", guard.listen_port)
            with pytest.raises(OSError, match="cannot listen on 127.0.0.1"):
                DatagramGuard(target, sink.getsockname()).start()  # port taken: a clear error
            valid_a, valid_b = encoded("ipfix", 100), encoded("netflow-v9", 100)
            invalid = [POISON, ipfix([(301, bytes(16))]), valid_a[1][:-3], b"\x00\x07junk", b""]
            invalid += list(random_datagrams(np.random.default_rng(1), 200))
            for d in valid_a + invalid:
                a.sendto(d, target)
            for d in valid_b + invalid[:3]:
                b.sendto(d, target)
            sent = len(valid_a) + len(valid_b) + len(invalid) + 3
            stats = wait_received(guard, sent)
            assert stats.received == sent
            assert stats.received == stats.forwarded + sum(stats.rejected.values())
            got = drain(sink)
            assert len(got) == stats.forwarded
            assert stats.rejected["zero-length field"] >= 2 and stats.rejected["unknown template"] >= 2
            by_source = collections.defaultdict(list)
            for data, source in got:
                by_source[source].append(data)
            mapping = guard.exporter_map()
            assert len(by_source) == 2 and all(s.startswith("127.77.") for s in by_source)
            assert {mapping[s] for s in by_source} == {"127.0.0.2", "127.0.0.3"} and stats.exporters == 2
            src_a, src_b = sorted(by_source, key=lambda s: mapping[s])
            assert guard.real_exporter(src_a) == "127.0.0.2" and guard.real_exporter("127.77.99.99") is None
            assert by_source[src_a][:len(valid_a)] == valid_a  # unchanged and in order
            assert by_source[src_b] == valid_b
            assert guard.kernel_drops() == 0
            # nfcapd restarted: data are unknown until templates come again
            unknown = stats.rejected["unknown template"]
            guard.reset_templates()
            a.sendto(valid_a[2], target)
            a.sendto(valid_a[0], target)
            a.sendto(valid_a[2], target)
            stats = wait_received(guard, sent + 3)
            assert stats.rejected["unknown template"] == unknown + 1
            assert [d for d, _ in drain(sink)] == [valid_a[0], valid_a[2]]
        finally:
            final = guard.stop()
        assert final.received == sent + 3 and final.forwarded == stats.forwarded
        assert guard.kernel_drops() is None


def test_guard_ipv6_listen_and_stop_drains() -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    try:
        exporter = udp("::1", socket.AF_INET6)
    except OSError:
        pytest.skip("no IPv6 loopback")
    with exporter, udp() as sink:
        guard = DatagramGuard(("::1", 0), sink.getsockname())
        guard.start()
        datagrams = encoded("ipfix", 200)
        for d in datagrams:
            exporter.sendto(d, ("::1", guard.listen_port))
        stats = guard.stop()  # whatever is still queued is handled before the thread ends
        assert stats.received == stats.forwarded == len(datagrams)
        assert list(guard.exporter_map().values()) == ["::1"]
        assert [d for d, _ in drain(sink)] == datagrams


def test_guard_restart_keeps_each_exporter_on_its_address() -> None:
    with pytest.raises(ValueError, match="IPv4 loopback"):
        DatagramGuard(("127.0.0.1", 0), ("::1", 9995))
    with udp() as sink, udp("127.0.0.4") as a, udp("127.0.0.5") as b:
        guard = DatagramGuard(("127.0.0.1", 0), sink.getsockname())
        seen = []
        for order in ((a, b), (b, a)):  # the second run meets the exporters in the other order
            guard.start()
            for s in order:
                s.sendto(v5(1), ("127.0.0.1", guard.listen_port))
            guard.stop()
            seen.append({real: loop for loop, real in guard.exporter_map().items()})
            assert [d for d, _ in drain(sink)] == [v5(1)] * 2
        assert seen[0] == seen[1] and len(seen[0]) == 2
        assert guard.stats().as_dict() == {"received": 4, "forwarded": 4, "rejected_total": 0, "rejected": {},
                                           "exporters": 2}
    assert not [t for t in threading.enumerate() if t.name == "udp-guard"]
