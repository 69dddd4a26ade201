"""A UDP guard in front of nfcapd: check every datagram's structure, count what fails, forward the rest.

    exporters --UDP--> DatagramGuard (public listen address; one Python thread)
                          |  valid datagrams, unchanged, each exporter from its own 127.77.X.Y
                          v
                       nfcapd (internal loopback port)

Why: nfcapd 1.7.1 trusts its input, and measured here that costs more than a lost datagram:
- an IPFIX template whose fields have length 0, then a data set for it, put nfcapd into a busy loop:
  it stopped rotating, grew its current file at 0.5 GB/s and ignored SIGTERM;
- 20,000 template messages from new observation domains made every later rotation unreadable;
- datagrams with a valid version and garbage after it, and truncated ones, were counted nowhere
  (nfcapd's "Bad Packets" stayed 0).
So nfcapd never sees a datagram that is not structurally sound: headers and lengths, the chain of
sets ending exactly at the datagram's end, templates (ids, field counts, no zero-length field), data
sets only for a template their exporter + domain announced and at least one record long. The whole
datagram is dropped when any part fails, counted by reason (GuardStats.rejected). Exporters, domains
per exporter and templates per domain are capped, so a flood cannot grow nfcapd's (or our) state.

Exporters stay distinct: nfcapd tells exporters apart by the datagram's source address (+ domain),
so each real exporter is forwarded from its own socket bound to 127.77.X.Y (Linux routes all of
127.0.0.0/8 to lo, no setup), and exporter_map() gives the converter loopback -> real address to
rewrite the `exporter` column.

What it costs: one more hop and one more socket buffer. Per datagram a recvfrom, check_datagram
(~0.5 us: a few struct.unpack_from per set, never a loop over data records) and a sendto, in one
Python thread: 95-145 k IPFIX datagrams/s (2.2-3.5 M flows/s) on loopback on a shared 2-core host,
at most 0.6-0.75 of a bare Python recv loop, which one sender could not saturate (benchmarks/guard.py
prints both: the sendto to nfcapd costs about as much as the recvfrom; the checks ~5 %). The
guard's socket is where the kernel now drops when the guard falls behind: kernel_drops() reads it.
nfcapd sees 127.77.X.Y as exporters; when nfcapd restarts, call reset_templates() (it forgot them).
"""

from __future__ import annotations

import os
import resource
import socket
import struct
import threading
from dataclasses import dataclass, field
from typing import Any, Callable

from netflowgen.live.drops import udp_counters

_H, _HH, _HHH, _I = struct.Struct("!H"), struct.Struct("!HH"), struct.Struct("!HHH"), struct.Struct("!I")
LOOPBACK_NET = "127.77"  # forwarded exporters appear to nfcapd as 127.77.X.Y
VARIABLE_LENGTH = 65535  # IPFIX field length meaning 'variable' (RFC 7011 7.)
TemplateTable = dict[int, int | None]  # template id -> record length (None: variable-length fields)


@dataclass
class GuardStats:
    """Datagrams received, forwarded to nfcapd, rejected by reason; distinct exporters forwarded."""

    received: int = 0
    forwarded: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    exporters: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {"received": self.received, "forwarded": self.forwarded,
                "rejected_total": sum(self.rejected.values()), "rejected": dict(sorted(self.rejected.items())),
                "exporters": self.exporters}


class TemplateBook:
    """Templates per (exporter, version, observation domain / source id), with caps on exporters,
    domains per exporter and templates per domain. An exporter or domain is admitted by its first
    valid datagram; beyond a cap its datagrams are rejected."""

    def __init__(self, max_exporters: int = 4096, max_domains: int = 64, max_templates: int = 1024) -> None:
        self.max_exporters, self.max_domains, self.max_templates = max_exporters, max_domains, max_templates
        self._tables: dict[tuple[str, int, int], TemplateTable] = {}
        self._domains: dict[str, int] = {}  # exporter -> domains admitted

    @property
    def exporters(self) -> int:
        return len(self._domains)

    def domains(self, exporter: str) -> int:
        return self._domains.get(exporter, 0)

    def table(self, exporter: str, version: int, domain: int) -> TemplateTable | None:
        """Template id -> record length of one domain (None when never admitted); do not modify."""
        return self._tables.get((exporter, version, domain))

    def clear(self) -> None:
        """Forget every template (the receiver restarted); admitted exporters and domains stay."""
        self._tables = {key: {} for key in self._tables}

    def commit(self, key: tuple[str, int, int], table: TemplateTable | None) -> str | None:
        """Store the templates of a valid datagram (None: unchanged); admit its exporter and domain."""
        if key in self._tables:
            if table is not None:
                self._tables[key] = table
            return None
        count = self._domains.get(key[0])
        if count is None:
            if len(self._domains) >= self.max_exporters:
                return "too many exporters"
            count = 0
        if count >= self.max_domains:
            return "too many observation domains"
        self._domains[key[0]] = count + 1
        self._tables[key] = table if table is not None else {}
        return None


def _padding(data: bytes, off: int, end: int) -> bool:
    """Only zero bytes from `off` to `end` (set padding, where a template record id 0 would start)."""
    return data.count(0, off, end) == end - off


def _ipfix_templates(data: bytes, off: int, end: int, table: TemplateTable, options: bool) -> str | None:
    """Template records of an IPFIX set 2 (options=False) or 3, from `off` to `end`, into `table`."""
    while end - off >= 4:
        tid, count = _HH.unpack_from(data, off)
        if tid == 0 and _padding(data, off, end):
            break
        off += 4
        if count == 0:  # withdrawal: one template, or all (id = set id; kinds are not told apart)
            if tid >= 256:
                table.pop(tid, None)
            elif tid == (3 if options else 2):
                table.clear()
            else:
                return "bad template id"
            continue
        if tid < 256:
            return "bad template id"
        if options:
            if end - off < 2:
                return "truncated template"
            scope = _H.unpack_from(data, off)[0]
            off += 2
            if scope == 0 or scope > count:
                return "bad scope count"
        length: int | None = 0
        for _ in range(count):
            if end - off < 4:
                return "truncated template"
            ie, size = _HH.unpack_from(data, off)
            off += 8 if ie & 0x8000 else 4  # enterprise bit: a 4-byte enterprise number follows
            if off > end:
                return "truncated template"
            if size == 0:
                return "zero-length field"
            length = None if size == VARIABLE_LENGTH or length is None else length + size
        table[tid] = length
    return None


def _v9_templates(data: bytes, off: int, end: int, table: TemplateTable, options: bool) -> str | None:
    """Template records of a NetFlow v9 FlowSet 0, or options templates of FlowSet 1 (options=True:
    scope and option lengths in bytes), from `off` to `end`, into `table`."""
    head = 6 if options else 4
    while end - off >= 4:
        if _H.unpack_from(data, off)[0] == 0 and _padding(data, off, end):
            break
        if end - off < head:
            return "truncated template"
        if options:
            tid, scope, option = _HHH.unpack_from(data, off)
            if scope % 4 or option % 4 or scope + option == 0:
                return "bad options template"
            size = scope + option
        else:
            tid, count = _HH.unpack_from(data, off)
            if count == 0:
                return "empty template"
            size = 4 * count
        off += head
        if tid < 256:
            return "bad template id"
        if end - off < size:
            return "truncated template"
        sizes = struct.unpack_from(f"!{size // 2}H", data, off)[1::2]  # (type, length) pairs
        off += size
        if 0 in sizes:
            return "zero-length field"
        table[tid] = sum(sizes)
    return None


_SetParser = Callable[[bytes, int, int, TemplateTable], "str | None"]
_V9_SETS: dict[int, _SetParser] = {0: lambda d, o, e, t: _v9_templates(d, o, e, t, False),
                                   1: lambda d, o, e, t: _v9_templates(d, o, e, t, True)}
_IPFIX_SETS: dict[int, _SetParser] = {2: lambda d, o, e, t: _ipfix_templates(d, o, e, t, False),
                                      3: lambda d, o, e, t: _ipfix_templates(d, o, e, t, True)}


def check_datagram(data: bytes, exporter: str, templates: TemplateBook) -> str | None:
    """None when `data` (one UDP payload from `exporter`) is a sound NetFlow v5 / v9 / IPFIX message,
    else why not. Templates of a valid datagram are stored in `templates`; a rejected one changes
    nothing. Data sets are checked against the templates known before them (this or earlier datagrams)."""
    n = len(data)
    if n < 4:
        return "too short"
    version = _H.unpack_from(data)[0]
    if version == 5:
        if n < 24:
            return "too short"
        count = _H.unpack_from(data, 2)[0]
        if not 1 <= count <= 30 or n != 24 + 48 * count:
            return "v5 bad length"
        return templates.commit((exporter, 5, 0), None)
    if version == 9:
        if n < 20:
            return "too short"
        if n == 20:  # no FlowSet: cut after the header, or says nothing at all
            return "truncated" if _H.unpack_from(data, 2)[0] else "no flowsets"
        key, off, parsers = (exporter, 9, _I.unpack_from(data, 16)[0]), 20, _V9_SETS
    elif version == 10:
        if n < 16:
            return "too short"
        length = _H.unpack_from(data, 2)[0]
        if length != n:
            return "truncated" if length > n else "length mismatch"
        key, off, parsers = (exporter, 10, _I.unpack_from(data, 12)[0]), 16, _IPFIX_SETS
    else:
        return "unknown version"
    committed = templates._tables.get(key)
    table: TemplateTable = committed if committed is not None else {}
    changed = False
    while off < n:
        if n - off < 4:
            return "truncated"
        set_id, set_len = _HH.unpack_from(data, off)
        end = off + set_len
        if set_len < 4:
            return "bad set length"
        if end > n:
            return "truncated"
        if set_id >= 256:
            if set_id not in table:
                return "unknown template"
            record = table[set_id]
            if record is not None and set_len - 4 < record:
                return "data set too short"
        else:
            parse = parsers.get(set_id)
            if parse is None:
                return "reserved set id"
            if not changed:  # copy on write: a rejected datagram leaves the book as it was
                table, changed = dict(table), True
            reason = parse(data, off + 4, end, table)
            if reason is not None:
                return reason
            if len(table) > templates.max_templates:
                return "too many templates"
        off = end
    return templates.commit(key, table if changed else None)


class DatagramGuard:
    """Receive on `listen`, check, forward valid datagrams to `forward_to` (an IPv4 loopback address),
    each exporter from its own 127.77.X.Y socket. start() ... stop() -> GuardStats."""

    def __init__(self, listen: tuple[str, int], forward_to: tuple[str, int], socket_buffer: int = 8 << 20,
                 max_exporters: int = 4096, max_domains: int = 64) -> None:
        if ":" in forward_to[0] or not forward_to[0].startswith("127."):
            raise ValueError(f"forward_to must be an IPv4 loopback address, got {forward_to[0]!r}")
        if not 1 <= max_exporters <= 65535 or max_domains < 1:
            raise ValueError("max_exporters must be in 1..65535 and max_domains >= 1")
        self.listen, self.forward_to, self.socket_buffer = listen, forward_to, socket_buffer
        self.listen_port = 0
        self._book = TemplateBook(max_exporters, max_domains)
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._senders: dict[str, socket.socket] = {}  # real exporter -> its sending socket
        self._loopback: dict[str, str] = {}  # loopback address -> real exporter (kept after stop)
        self._address: dict[str, str] = {}  # real exporter -> loopback address
        self._stats = GuardStats()
        self._stopping = False
        self._reset = False

    def start(self) -> None:
        host, port = self.listen
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
        for option in (getattr(socket, "SO_RCVBUFFORCE", 33), socket.SO_RCVBUF):  # FORCE needs root
            try:
                sock.setsockopt(socket.SOL_SOCKET, option, self.socket_buffer)
                break
            except OSError:
                continue
        try:  # no SO_REUSEADDR: on Linux it would let two UDP receivers share the port silently
            sock.bind((host, port))
        except OSError as e:
            sock.close()
            raise OSError(e.errno, f"cannot listen on {host}:{port}: {e.strerror} "
                                   "(another collector on this port?)") from e
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)  # one socket per exporter
        want = self._book.max_exporters + 256
        if soft != resource.RLIM_INFINITY and soft < want:
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (want if hard == resource.RLIM_INFINITY
                                                            else min(want, hard), hard))
            except (OSError, ValueError):
                pass  # then sockets beyond the limit fail: counted as "forward failed"
        self._sock, self.listen_port, self._stopping = sock, sock.getsockname()[1], False
        self._thread = threading.Thread(target=self._run, name="udp-guard", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> GuardStats:
        """Handle what is queued on the socket, then stop the thread and close every socket."""
        self._stopping = True
        if self._sock is not None:
            try:  # wakes the blocked recvfrom once the queue is empty (Linux, also when unconnected)
                self._sock.shutdown(socket.SHUT_RD)
            except OSError:
                pass  # ENOTCONN is expected: the wake-up still happens
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        if self._sock is not None:
            self._sock.close()
        with self._lock:
            for s in self._senders.values():
                s.close()
            self._senders.clear()  # a later start() binds them again, to the same addresses
        return self.stats()

    def __enter__(self) -> "DatagramGuard":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stats(self) -> GuardStats:
        with self._lock:
            s = self._stats
            return GuardStats(s.received, s.forwarded, dict(s.rejected), len(self._loopback))

    def reset_templates(self) -> None:
        """The receiver restarted and forgot every template: so do we (before the next datagram)."""
        self._reset = True

    def kernel_drops(self) -> int | None:
        """Datagrams the kernel dropped on the public socket (full buffer); None when not listening."""
        if self._sock is None or self._sock.fileno() < 0:
            return None
        counters = udp_counters(self.listen_port, {os.fstat(self._sock.fileno()).st_ino})
        return counters.drops if counters is not None else None

    def exporter_map(self) -> dict[str, str]:
        """Loopback source address nfcapd sees -> real exporter address."""
        with self._lock:
            return dict(self._loopback)

    def real_exporter(self, loopback_ip: str) -> str | None:
        with self._lock:
            return self._loopback.get(loopback_ip)

    def _sender(self, exporter: str) -> socket.socket:
        index = len(self._loopback) + 1
        address = self._address.get(exporter) or f"{LOOPBACK_NET}.{index >> 8}.{index & 255}"
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            s.bind((address, 0))
        except OSError:
            s.close()
            raise
        with self._lock:
            self._senders[exporter], self._loopback[address], self._address[exporter] = s, exporter, address
        return s

    def _run(self) -> None:
        assert self._sock is not None
        recv, book, senders, target = self._sock.recvfrom, self._book, self._senders, self.forward_to
        stats, lock = self._stats, self._lock
        rejected = stats.rejected
        while True:
            try:
                data, addr = recv(65535)
            except OSError:
                if self._stopping:
                    break
                continue
            if addr is None:  # shutdown() wake-up: the queue is empty (a real datagram has a source)
                break
            if self._reset:
                book.clear()
                self._reset = False
            exporter = addr[0]
            if exporter.startswith("::ffff:") and "." in exporter:  # IPv4 on a dual-stack socket
                exporter = exporter[7:]
            try:
                reason = check_datagram(data, exporter, book)
            except Exception:  # noqa: BLE001 - a bug here must cost one datagram, not the guard
                reason = "guard error"
            if reason is None:
                try:
                    sender = senders.get(exporter) or self._sender(exporter)
                    sender.sendto(data, target)
                except OSError:
                    reason = "forward failed"
            with lock:
                stats.received += 1
                if reason is None:
                    stats.forwarded += 1
                else:
                    rejected[reason] = rejected.get(reason, 0) + 1
