"""NetFlow v9 / IPFIX encoder, checked by a small independent decoder written here from the RFCs
(3954, 7011): headers, sequence numbers, template refresh, MTU, times, sampling, rejects."""

from __future__ import annotations

import socket
import struct
import time

import numpy as np
import pyarrow as pa
import pytest

from netflowgen.export import FlowEncoder, replay
from netflowgen.rejects import RejectCounter
from netflowgen.schema import FLOW_SCHEMA

DAY_MS = 86_400_000


def flows(n: int, start_ms: int = 1_700_000_000_000, step_ms: int = 1000, rate: int = 1,
          v6_every: int = 0) -> pa.Table:
    idx = np.arange(n)
    src = [f"2001:db8::{i + 1:x}" if v6_every and i % v6_every == 0 else f"10.{i // 256 % 256}.{i % 256}.1"
           for i in idx]
    dst = [f"2001:db8:1::{i + 1:x}" if v6_every and i % v6_every == 0 else f"192.0.2.{i % 200}"
           for i in idx]
    return pa.table({
        "ts_start": pa.array(start_ms + idx * step_ms, pa.timestamp("ms", tz="UTC")),
        "ts_end": pa.array(start_ms + idx * step_ms + 250, pa.timestamp("ms", tz="UTC")),
        "src_ip": src, "dst_ip": dst,
        "src_port": pa.array(1000 + idx % 60000, pa.uint16()), "dst_port": pa.array(idx % 1024, pa.uint16()),
        "proto": pa.array(np.full(n, 6), pa.uint8()), "tcp_flags": pa.array(idx % 256, pa.uint8()),
        "packets": pa.array(idx + 1, pa.int64()), "bytes": pa.array((idx + 1) * 100, pa.int64()),
        "sampling_rate": pa.array(np.full(n, rate), pa.uint32()),
        "exporter": pa.array([None] * n, pa.string()),
        "in_if": pa.array(idx, pa.uint32()), "out_if": pa.array([None] * n, pa.uint32()),
    }, schema=FLOW_SCHEMA)


# --- an independent decoder ---------------------------------------------------------------------
def decode(payload: bytes, templates: dict) -> dict:
    """Header fields, and records as dicts {ie: bytes} using (and filling) `templates`."""
    version = struct.unpack_from("!H", payload)[0]
    if version == 9:
        _, count, uptime, secs, seq, dom = struct.unpack_from("!HHIIII", payload)
        head, pos, tset, oset = dict(count=count, uptime=uptime, secs=secs, seq=seq, domain=dom), 20, 0, 1
    else:
        _, length, secs, seq, dom = struct.unpack_from("!HHIII", payload)
        assert length == len(payload)
        head, pos, tset, oset = dict(secs=secs, seq=seq, domain=dom), 16, 2, 3
    head.update(version=version, records=[], options=[], n_templates=0)
    while pos < len(payload):
        sid, slen = struct.unpack_from("!HH", payload, pos)
        assert slen >= 4 and pos + slen <= len(payload) and slen % 4 == 0
        body, p = payload[pos + 4:pos + slen], 0
        if sid == tset:
            while p + 4 <= len(body):
                tid, nf = struct.unpack_from("!HH", body, p)
                fields = [struct.unpack_from("!HH", body, p + 4 + 4 * i) for i in range(nf)]
                templates[(dom, tid)] = ("data", fields)
                head["n_templates"] += 1
                p += 4 + 4 * nf
        elif sid == oset:
            if version == 9:
                tid, scope_len, opt_len = struct.unpack_from("!HHH", body)
                nf = (scope_len + opt_len) // 4
            else:
                tid, nf, _scope = struct.unpack_from("!HHH", body)
            fields = [struct.unpack_from("!HH", body, 6 + 4 * i) for i in range(nf)]
            templates[(dom, tid)] = ("options", fields)
        else:
            kind, fields = templates[(dom, sid)]  # KeyError: data before its template
            size = sum(ln for _, ln in fields)
            while p + size <= len(body):
                rec, q = {}, p
                for ie, ln in fields:
                    rec[ie] = body[q:q + ln]
                    q += ln
                head["options" if kind == "options" else "records"].append(rec)
                p += size
            assert len(body) - p < 4  # only padding is left
        pos += slen
    return head


def num(b: bytes) -> int:
    return int.from_bytes(b, "big")


def start_end_ms(head: dict, rec: dict) -> tuple[int, int]:
    if head["version"] == 9:
        boot = head["secs"] * 1000 - head["uptime"]
        return boot + num(rec[22]), boot + num(rec[21])
    return num(rec[152]), num(rec[153])


@pytest.mark.parametrize("protocol", ["netflow-v9", "ipfix"])
def test_fields_sequence_mtu_and_template_refresh(protocol: str) -> None:
    table = flows(3000, v6_every=7)
    enc = FlowEncoder(protocol, mtu=1400, template_every=5)
    grams = [g for b in table.to_batches(max_chunksize=700) for g in enc.encode(b)]
    templates: dict = {}
    heads = [decode(g.payload, templates) for g in grams]
    assert all(len(g.payload) <= 1400 - 28 for g in grams)
    # sequence: v9 counts datagrams, IPFIX counts flow records sent before this message
    if protocol == "netflow-v9":
        assert [h["seq"] for h in heads] == list(range(len(heads)))
        assert all(h["count"] == len(h["records"]) + h["n_templates"] + len(h["options"]) + (
            1 if h["options"] else 0) for h in heads)
    else:
        sent = np.cumsum([0] + [len(h["records"]) for h in heads])[:-1]
        assert [h["seq"] for h in heads] == list(sent)
    # templates first and then again after every 5 data datagrams
    kinds = ["T" if h["n_templates"] else "D" for h in heads]
    assert kinds[0] == "T" and "DDDDDD" not in "".join(kinds) and kinds.count("T") >= len(kinds) // 6
    def addr(r: dict, v4: int, v6: int) -> str:
        return socket.inet_ntop(socket.AF_INET6, r[v6]) if v6 in r else socket.inet_ntop(
            socket.AF_INET, r[v4])

    got = [(start_end_ms(h, r), addr(r, 8, 27), addr(r, 12, 28), num(r[7]), num(r[11]), num(r[4]),
            num(r[6]), num(r[2]), num(r[1]), num(r[10]), num(r[14]))
           for h in heads for r in h["records"]]
    rows = table.to_pylist()
    ms = {c: table[c].cast(pa.int64()).to_pylist() for c in ("ts_start", "ts_end")}
    want = [((ms["ts_start"][i], ms["ts_end"][i]), r["src_ip"], r["dst_ip"], r["src_port"],
             r["dst_port"], r["proto"], r["tcp_flags"], r["packets"], r["bytes"], r["in_if"], 0)
            for i, r in enumerate(rows)]
    assert sorted(got) == sorted(want)  # every field of every row, times to the ms


def test_v9_boot_time_follows_data_spanning_months() -> None:
    """sysUptime is 32-bit ms (49.7 days): the exporter 'reboots' when data outruns it, and every
    flow time still decodes exactly."""
    table = flows(40, step_ms=5 * DAY_MS)  # 200 days
    enc = FlowEncoder("netflow-v9")
    templates: dict = {}
    heads = [decode(g.payload, templates) for b in table.to_batches(max_chunksize=3)
             for g in enc.encode(b)]
    got = sorted(start_end_ms(h, r)[0] for h in heads for r in h["records"])
    assert got == table["ts_start"].cast(pa.int64()).to_pylist()
    assert len({h["secs"] * 1000 - h["uptime"] for h in heads if h["records"]}) > 1  # rebooted
    assert all(num(r[22]) > 0 for h in heads for r in h["records"])  # 0 would read as 'unknown'


@pytest.mark.parametrize("protocol", ["netflow-v9", "ipfix"])
def test_each_sampling_rate_gets_its_own_domain(protocol: str) -> None:
    table = pa.concat_tables([flows(10, rate=1), flows(10, rate=100)])
    enc = FlowEncoder(protocol)
    templates: dict = {}
    heads = [decode(g.payload, templates) for g in enc.encode(table)]
    announced = {h["domain"]: num(o[34]) for h in heads for o in h["options"]}
    assert sorted(announced.values()) == [1, 100] and enc.domains == announced
    per_domain = {d: sum(len(h["records"]) for h in heads if h["domain"] == d) for d in announced}
    assert sorted(per_domain.values()) == [10, 10]


def test_bad_rows_are_counted_not_sent() -> None:
    good = flows(4).to_pylist()
    bad = [dict(good[0], src_ip="not-an-ip"), dict(good[1], src_ip="10.0.0.1", dst_ip="2001:db8::1"),
           dict(good[0], dst_ip="256.0.0.1"), dict(good[1], dst_ip="10.0.0.01"),
           dict(good[2], ts_end=good[2]["ts_start"].replace(year=2000)),
           dict(good[3], packets=-1)]
    table = pa.Table.from_pylist(good + bad, schema=FLOW_SCHEMA)
    rejects = RejectCounter()
    grams = list(FlowEncoder("ipfix", rejects=rejects).encode(table))
    assert sum(g.records for g in grams) == 4
    assert rejects.accepted == 4 and rejects.rejected == 6
    assert rejects.counts == {"bad ip address": 4, "end before start": 1, "negative count": 1}


def test_settings_are_validated() -> None:
    with pytest.raises(ValueError, match="protocol"):
        FlowEncoder("netflow-v5")
    with pytest.raises(ValueError, match="mtu"):
        FlowEncoder("ipfix", mtu=100)
    with pytest.raises(ValueError, match="canonical"):
        list(FlowEncoder("ipfix").encode(pa.table({"src_ip": ["10.0.0.1"]})))
    with pytest.raises(ValueError, match="speed"):
        replay([], ("127.0.0.1", 9), "ipfix", speed=0)


def test_replay_paces_by_flow_time() -> None:
    """speed=10: flows 1 s apart leave 0.1 s apart; speed None: no waiting on flow time."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sink:
        sink.bind(("127.0.0.1", 0))
        sink.settimeout(2)
        to = sink.getsockname()
        table = flows(4, step_ms=1000)
        sent_at: list[float] = []
        t_before = time.monotonic()
        stats = replay(table.to_batches(max_chunksize=1), to, "ipfix", speed=10.0,
                       on_datagram=lambda g: sent_at.append(time.monotonic()) if g.records else None)
        assert stats.flows == 4 and len(sent_at) == 4
        # flow i (i s after the first) may not leave before i / 10 s; sleeps never end early, and
        # the upper bound is loose because the test machine is shared
        earliest = t_before + np.arange(4) * 0.1
        assert np.all(np.array(sent_at) >= earliest) and stats.seconds < 3, np.array(sent_at) - t_before
        fast = replay(table.to_batches(max_chunksize=1), to, "netflow-v9")
        assert fast.seconds < stats.seconds / 2 and fast.flows == 4
        received = 0
        while received < stats.datagrams + fast.datagrams:  # bounded by the 2 s timeout
            sink.recv(65535)
            received += 1


def test_replay_to_a_closed_port_counts_refusals() -> None:
    """Nobody listening: ICMP 'port unreachable' comes back; replay counts it and carries on."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again when the block ends
    stats = replay(flows(500).to_batches(max_chunksize=50), ("127.0.0.1", port), "ipfix",
                   max_pps=2000)
    assert stats.refused > 0
    assert stats.flows == 500  # every datagram still went out after the refusals
