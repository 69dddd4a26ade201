"""Send canonical flow records to a NetFlow v9 / IPFIX collector over UDP, paced like an exporter.

Pacing: with `speed=X` a datagram leaves when X times the flow time elapsed since the first flow
has passed on the wall clock (flows start-ordered within their datagram; input that is not sorted
by `ts_start` is sent as soon as its turn comes, never earlier). With `speed=None` datagrams go out
as fast as possible but at most `max_pps` per second: UDP has no back-pressure, so a sender that
outruns the collector's socket buffer loses data silently (the receiver's kernel drops it), even
on loopback.
"""

from __future__ import annotations

import socket
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Iterable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from netflowgen.export.encoder import PROTOCOLS, Datagram, FlowEncoder
from netflowgen.rejects import RejectCounter


@dataclass
class ReplayStats:
    """What a replay sent. `flows`: flow records; `datagrams`: UDP packets incl. template packets;
    `payload_bytes`: UDP payload bytes; `seconds`: wall time; `domains`: observation domain (source
    id) -> sampling rate it announced; `rejected`: records that could not be encoded."""

    protocol: str
    flows: int = 0
    datagrams: int = 0
    template_datagrams: int = 0
    payload_bytes: int = 0
    rejected: int = 0
    refused: int = 0  # ICMP 'port unreachable' reports (nobody listening at `to`)
    seconds: float = 0.0
    first_flow_ms: int | None = None
    domains: dict[int, int] = field(default_factory=dict)
    rejects: dict[str, object] = field(default_factory=dict)

    @property
    def flows_per_second(self) -> float:
        return self.flows / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict[str, object]:
        d = asdict(self)
        d["flows_per_second"] = round(self.flows_per_second, 1)
        d["domains"] = {str(k): v for k, v in self.domains.items()}
        return d


def parse_host_port(text: str) -> tuple[str, int]:
    """'HOST:PORT' or '[V6ADDR]:PORT' -> (host, port); raises ValueError with the offending text."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"expected HOST:PORT (e.g. 127.0.0.1:2055), got {text!r}")
    return host.strip("[]"), int(port)


def time_slices(batch: pa.RecordBatch, slice_ms: int) -> Iterable[pa.RecordBatch]:
    """A batch sorted by ts_start in pieces of `slice_ms` of flow starts (unsorted: whole)."""
    if batch.num_rows == 0:
        return [batch]
    start = pc.cast(batch.column("ts_start"), pa.int64()).to_numpy(zero_copy_only=False)
    if (start[1:] < start[:-1]).any():
        return [batch]
    cuts = np.flatnonzero(np.diff(start // slice_ms)) + 1
    bounds = [0, *cuts.tolist(), batch.num_rows]
    return [batch.slice(lo, hi - lo) for lo, hi in zip(bounds[:-1], bounds[1:])]


def replay(batches: Iterable[pa.RecordBatch], to: tuple[str, int], protocol: str = "ipfix",
           speed: float | None = None, *, mtu: int = 1500, template_every: int = 20,
           template_interval_s: float = 10.0, max_pps: float = 20_000.0,
           rejects: RejectCounter | None = None,
           on_datagram: Callable[[Datagram], None] | None = None, slice_ms: int = 30_000) -> ReplayStats:
    """Encode `batches` (canonical FLOW_SCHEMA) as `protocol` and send them to `to` = (host, port).

    Parameters
    ----------
    speed : None = as fast as allowed by `max_pps`; X > 0 = X times real time following `ts_start`.
    mtu : largest IP packet (bytes, IP+UDP headers included).
    template_every : re-send templates after this many data datagrams of a domain ...
    template_interval_s : ... and after this many wall-clock seconds (slow real-time replays).
    max_pps : cap on datagrams per second in every mode (protects the collector's socket buffer).
    rejects : receives the counts of records that could not be encoded.
    on_datagram : called with every datagram after it is sent (tests, progress).
    slice_ms : time-ordered batches are encoded `slice_ms` of flow starts at a time: the encoder
        packs each (sampling rate, address family) group separately, so a whole batch would send one
        group's datagrams after the other's and a paced replay would deliver the later groups late
        (as an exporter's per-domain cache does, flushed every `slice_ms`).

    Returns
    -------
    ReplayStats with counts and wall time (s).
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
    if speed is not None and not speed > 0:
        raise ValueError(f"speed must be > 0 (or None for as fast as possible), got {speed}")
    if not max_pps > 0:
        raise ValueError("max_pps must be > 0")
    rejects = rejects if rejects is not None else RejectCounter()
    encoder = FlowEncoder(protocol, mtu=mtu, template_every=template_every, rejects=rejects)
    stats = ReplayStats(protocol=protocol)
    family = socket.AF_INET6 if ":" in to[0] else socket.AF_INET
    t0 = time.monotonic()
    gap = 1.0 / max_pps
    next_slot = t0  # earliest wall time the next datagram may leave (rate cap)
    last_templates = t0
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        sock.connect(to)  # connected UDP: ICMP 'port unreachable' surfaces as ConnectionRefusedError

        def send(dg: Datagram) -> None:
            nonlocal next_slot
            now = time.monotonic()
            if dg.first_ms is not None and stats.first_flow_ms is None:
                stats.first_flow_ms = dg.first_ms
            if dg.first_ms is not None and speed is not None and stats.first_flow_ms is not None:
                due = t0 + (dg.first_ms - stats.first_flow_ms) / 1000.0 / speed
                next_slot = max(next_slot, due)
            if next_slot > now:
                time.sleep(next_slot - now)
            try:
                sock.send(dg.payload)
            except ConnectionRefusedError:
                # the kernel reports an ICMP 'port unreachable' of an EARLIER datagram on this send,
                # which did not go out: count the refusal and send again (the error is cleared).
                # Exporters do not stop for a missing collector, neither do we.
                stats.refused += 1
                try:
                    sock.send(dg.payload)
                except ConnectionRefusedError:
                    stats.refused += 1
                    return
            next_slot = max(next_slot, time.monotonic() - 0.05) + gap  # small bursts, average capped
            stats.datagrams += 1
            stats.payload_bytes += len(dg.payload)
            stats.flows += dg.records
            stats.template_datagrams += dg.first_ms is None
            if on_datagram is not None:
                on_datagram(dg)

        for batch in batches:
            for piece in time_slices(batch, slice_ms):
                for dg in encoder.encode(piece):
                    if dg.first_ms is not None and time.monotonic() - last_templates > template_interval_s:
                        for tdg in encoder.templates(dg.domain):
                            send(tdg)
                        last_templates = time.monotonic()
                    send(dg)
    stats.seconds = time.monotonic() - t0
    stats.rejected = rejects.rejected
    stats.rejects = rejects.as_dict()
    stats.domains = encoder.domains
    return stats
