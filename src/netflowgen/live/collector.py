"""Live NetFlow v5 / v9 / IPFIX collection: Debian's nfcapd receives, we convert and count.

    exporters --UDP--> nfcapd (C, one socket, rotates a file every `rotate_s`)
                          |  DIR/nfcapd/nfcapd.YYYYmmddHHMM[SS]  (closed files appear by rename)
                          v
                 watcher thread: nfcapd file -> canonical Parquet (netflowgen.sources, "nfcapd")
                          |  DIR/flows-YYYYmmddHHMM[SS].parquet + .stats.json (drops, rejects)

Why nfcapd and not a Python receiver (docs/live.md): the receiver must only receive (a full socket
buffer loses datagrams silently); nfcapd took 600 k flows/s on loopback without loss here, the
`netflow` package lost 9 % at 120 k flows/s and dies on some datagrams. nfcapd also learns sampling
rates from option templates and applies them, and keeps per-file sequence-failure counts.

The watcher polls the spool directory instead of using nfcapd's `-x` hook: a closed file appears
atomically under its final name, polling needs no helper script, and the last file written at
shutdown is picked up the same way.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import pyarrow as pa
import pyarrow.compute as pc

from netflowgen.live.drops import nfdump_file_info, parse_nfcapd_log, socket_inodes, udp_counters
from netflowgen.rejects import InputError, RejectCounter


class CollectorError(RuntimeError):
    """The collector cannot run (nfcapd missing, port in use, output not writable)."""


@dataclass
class CollectorConfig:
    """Settings of `netflowgen collect` (TOML section `[collect]`)."""

    listen: str = "127.0.0.1:2055"  # HOST:PORT for the UDP socket (v5, v9 and IPFIX share it)
    out: str = "flows"  # output directory
    rotate: int = 60  # seconds per file; one Parquet file per rotation
    sampling: int | None = None  # rate for exporters that do not announce one (nfcapd -s)
    socket_buffer: int = 8 << 20  # bytes asked for the receive buffer (capped by net.core.rmem_max)
    keep_nfcapd: bool = True  # keep nfcapd's own files in OUT/nfcapd (readable with nfdump)
    poll: float = 0.5  # seconds between looks for closed files
    guard: bool = True  # validate datagrams before nfcapd sees them (live.guard); nfcapd then binds an internal port


@dataclass
class RotationStats:
    """What one rotation brought: flows written, and every loss counter we can see."""

    nfcapd_file: str
    parquet: str | None
    flows_written: int
    nfcapd_flows: int | None  # as nfcapd stored them (nfdump -I)
    sequence_failures: int | None  # gaps in exporters' sequence numbers (lost upstream)
    bad_packets: int | None  # datagrams nfcapd could not decode
    kernel_drops: int | None  # datagrams the kernel dropped (full socket buffer) in this period
    kernel_drops_total: int | None
    rejected: int  # records the canonical conversion refused (by reason in `rejects`)
    rejects: dict[str, Any]
    first: str | None  # earliest flow start / latest flow end seen (UTC ISO)
    last: str | None
    error: str | None = None

    def summary(self) -> str:
        parts = [f"{Path(self.nfcapd_file).name}: {self.flows_written:,} flows"]
        for name in ("sequence_failures", "bad_packets", "kernel_drops", "rejected"):
            value = getattr(self, name)
            parts.append(f"{name.replace('_', ' ')} {value if value is not None else '?'}")
        if self.error:
            parts.append(f"ERROR {self.error}")
        return ", ".join(parts)


def parse_listen(text: str, allow_any_port: bool = False, flag: str = "--listen") -> tuple[str, int]:
    """'HOST:PORT' or '[V6]:PORT' -> (host, port); ValueError naming `flag` and the bad text.
    `allow_any_port`: port 0 is accepted (the system picks a free one)."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not (0 if allow_any_port else 1) <= int(port) < 65536:
        raise ValueError(f"{flag} expects HOST:PORT (e.g. 127.0.0.1:2055), got {text!r}")
    return host.strip("[]"), int(port)


class Collector:
    """Run nfcapd on `config.listen` and turn each rotated file into canonical Parquet.

    >>> c = Collector(CollectorConfig(listen="127.0.0.1:9995", out="/tmp/flows", rotate=60))
    >>> c.start(); ...; c.stop()   # stop() flushes the current file and converts it

    `on_rotation` is called (in the watcher thread) with the RotationStats of each file.
    """

    def __init__(self, config: CollectorConfig,
                 on_rotation: Callable[[RotationStats], None] | None = None) -> None:
        if config.rotate < 2:
            raise ValueError("rotate must be >= 2 seconds (nfcapd's smallest interval)")
        if config.sampling is not None and config.sampling < 1:
            raise ValueError("sampling must be >= 1")
        self.config = config
        self.host, self.port = parse_listen(config.listen)
        self.out = Path(config.out)
        self.spool = self.out / "nfcapd"
        self.on_rotation = on_rotation
        self.rotations: list[RotationStats] = []
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_path = self.out / "nfcapd.log"
        self._done: set[str] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._inodes: set[int] = set()
        self._drops_seen = 0  # kernel drop counter of nfcapd's socket at the last look
        self._drops_unassigned = 0  # drops seen but not yet charged to a rotation
        self._lock = threading.Lock()
        self._log_offset = 0  # nfcapd.log bytes written before this run
        self._preexisting: set[str] = set()  # closed files of an earlier run, not in this log
        self._log_lines_used = 0
        self.guard: Any = None  # live.guard.DatagramGuard when config.guard
        self._nfcapd_port = self.port
        self.restarts: dict[str, int] = {}  # reason -> receiver restarts
        self.discarded_bytes = 0  # bytes of nfcapd current files thrown away at restarts (their flows are lost)
        self.last_rotation = time.monotonic()  # when the last closed file appeared
        self.last_rotation_wall = time.time()
        self._seen_files: set[str] = set()

    # --- lifecycle ------------------------------------------------------------------------------
    def start(self, timeout: float = 5.0) -> None:
        """Start nfcapd (behind the datagram guard when `config.guard`) and the watcher; returns once
        the UDP socket is bound. CollectorError when nfcapd is missing or exits (port in use, bad
        address): its message is in the error."""
        self.out.mkdir(parents=True, exist_ok=True)
        self.spool.mkdir(exist_ok=True)
        self._done = {p.name for p in self.spool.glob("nfcapd.[0-9]*")
                      if (self.out / _parquet_name(p.name)).exists()}
        self._preexisting = {p.name for p in self.spool.glob("nfcapd.[0-9]*")}
        self._log_offset = self._log_path.stat().st_size if self._log_path.exists() else 0
        if self.config.guard:
            import socket as _socket

            from netflowgen.live.guard import DatagramGuard
            with _socket.socket(_socket.AF_INET, _socket.SOCK_DGRAM) as probe:  # a free internal port
                probe.bind(("127.0.0.1", 0))
                self._nfcapd_port = probe.getsockname()[1]
            self._spawn(timeout, "127.0.0.1", self._nfcapd_port)
            self.guard = DatagramGuard((self.host, self.port), ("127.0.0.1", self._nfcapd_port),
                                       socket_buffer=self.config.socket_buffer)
            try:
                self.guard.start()
            except OSError as e:
                self._terminate()
                raise CollectorError(f"cannot receive on {self.config.listen}: {e}") from e
            self.port = self.guard.listen_port
        else:
            self._spawn(timeout, self.host, self.port)
        self.last_rotation = time.monotonic()
        self._thread = threading.Thread(target=self._watch, name="nfcapd-watcher", daemon=True)
        self._thread.start()

    def _spawn(self, timeout: float, host: str, port: int) -> None:
        """Start nfcapd on host:port and wait until its socket is bound (OUT/nfcapd.pid names it)."""
        self._stop_orphan()
        for stale in self.spool.glob("nfcapd.current.*"):  # from a killed run: nfcapd would not reuse
            self.discarded_bytes += stale.stat().st_size
            stale.unlink()
        cmd = ["nfcapd", "-b", host, "-p", str(port), "-w", str(self.spool.resolve()),
               "-t", str(self.config.rotate), "-B", str(self.config.socket_buffer)]
        if ":" in host:
            cmd.append("-6")
        if self.config.sampling is not None:
            cmd += ["-s", str(self.config.sampling)]
        if shutil.which("stdbuf"):  # line-buffered log: each rotation's counters appear at once
            cmd = ["stdbuf", "-oL", "-eL"] + cmd
        log = open(self._log_path, "ab")
        try:
            self._proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                          stdin=subprocess.DEVNULL, start_new_session=True,
                                          env=dict(os.environ, TZ="UTC"))
        except FileNotFoundError as e:
            raise CollectorError("nfcapd not found: apt-get install nfdump") from e
        finally:
            log.close()
        (self.out / "nfcapd.pid").write_text(f"{self._proc.pid}\n")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise CollectorError(f"nfcapd exited with status {self._proc.returncode}: "
                                     + self._log_tail())
            self._inodes = socket_inodes(self._proc.pid)
            if self._inodes and udp_counters(port, self._inodes) is not None:
                break
            time.sleep(0.05)
        else:
            self._terminate()
            raise CollectorError(f"nfcapd did not bind {host}:{port} within {timeout} s: "
                                 + self._log_tail())
        self._drops_seen = 0  # a new socket counts from zero

    def _stop_orphan(self) -> None:
        """An nfcapd left by a run of ours that was killed (it runs in its own session, so it
        outlives us): SIGTERM lets it close its file under the final name (converted next), SIGKILL
        after 3 s. Only a process whose command line is nfcapd writing to our spool is touched."""
        pid_file = self.out / "nfcapd.pid"
        try:
            pid = int(pid_file.read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError):
            return
        if self._proc is not None and pid == self._proc.pid:
            return
        if not any(c.endswith(b"nfcapd") for c in cmdline) or str(self.spool.resolve()).encode() not in cmdline:
            return
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 3.0
        while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        if Path(f"/proc/{pid}").exists():
            os.kill(pid, signal.SIGKILL)

    # --- health -----------------------------------------------------------------------------------
    def health(self, stuck_after: float, max_current_bytes: int) -> str | None:
        """None while the receiver works; else why not: it exited, its current file passed
        `max_current_bytes` (nfcapd spinning on a poisoned template grows it at ~0.5 GB/s), or no file
        closed for `stuck_after` seconds (nfcapd closes one every `rotate` s, even when quiet)."""
        if not self.running:
            return "exited"
        for cur in self.spool.glob("nfcapd.current.*"):
            try:
                size = cur.stat().st_size
            except OSError:
                continue
            if size > max_current_bytes:
                return "current file too large"
        if time.monotonic() - self.last_rotation > stuck_after:
            return "no rotation"
        return None

    def restart(self, reason: str, timeout: float = 5.0) -> None:
        """Kill nfcapd (SIGKILL: a spinning nfcapd ignores SIGTERM), throw its current file away
        (counted in `discarded_bytes`), start a new one on the same port, and tell the guard that the
        receiver forgot every template."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except OSError:
                proc.kill()
            proc.wait(timeout)
        self._sample_drops()
        self.restarts[reason] = self.restarts.get(reason, 0) + 1
        host = "127.0.0.1" if self.guard is not None else self.host
        self._spawn(timeout, host, self._nfcapd_port)
        if self.guard is not None:
            self.guard.reset_templates()
        self.last_rotation = time.monotonic()

    def stop(self, timeout: float = 30.0) -> list[RotationStats]:
        """SIGTERM nfcapd (it closes and renames the current file), convert what is left, stop the
        watcher, write OUT/collector-summary.json. Returns the stats of every rotation."""
        if self.guard is not None:  # the guard stops first: what it forwarded still reaches nfcapd
            self.guard.stop()
        self._drain()
        self._sample_drops()  # last look at the kernel counters while the socket exists
        self._terminate(timeout)
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self.convert_ready()  # anything the watcher had not reached
        self._write_summary()
        return self.rotations

    def __enter__(self) -> "Collector":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def pid(self) -> int | None:
        """Process id of nfcapd (None before start)."""
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    # --- work -----------------------------------------------------------------------------------
    def convert_ready(self) -> list[RotationStats]:
        """Convert every closed nfcapd file not yet converted, oldest first."""
        new = []
        with self._lock:
            files = sorted(p for p in self.spool.glob("nfcapd.[0-9]*") if p.name not in self._done)
            if files:
                self.last_rotation, self.last_rotation_wall = time.monotonic(), time.time()
            for path in files:
                stats = self._convert(path)
                self._done.add(path.name)
                self.rotations.append(stats)
                new.append(stats)
                if self.on_rotation is not None:
                    self.on_rotation(stats)
        return new

    def _convert(self, path: Path) -> RotationStats:
        from netflowgen.sources import SourceOptions, open_source, write_flows

        rejects = RejectCounter()
        target = self.out / _parquet_name(path.name)
        info = nfdump_file_info(path)
        per_file = None if path.name in self._preexisting else self._log_counters()
        self._sample_drops()
        drops, self._drops_unassigned = self._drops_unassigned, 0
        error = None
        written = 0
        span = _TimeSpan()
        try:
            # nfcapd already multiplied packets and bytes by every rate it knew (announced or -s),
            # so the stored counts are estimates of the true traffic: rate 1 from here on.
            options = SourceOptions(default_sampling_rate=1)
            if info.get("flows", 1) == 0:  # a quiet rotation: an empty file says 'collector was up'
                batches: Iterator[pa.RecordBatch] = iter(())
            else:  # records with start time 0 (unknown) are rejected and counted by the reader
                batches = span.track(self._real_exporters(open_source([path], "nfcapd", options, rejects)))
            written = write_flows(batches, target, rejects)  # written via a rename: never partial
        except (InputError, OSError, ValueError) as e:  # keep collecting; say what failed
            error = str(e)
        stats = RotationStats(
            nfcapd_file=str(path), parquet=str(target) if error is None else None,
            flows_written=written, nfcapd_flows=info.get("flows"),
            sequence_failures=info.get("sequence_failures"),
            bad_packets=per_file["bad_packets"] if per_file else None,
            kernel_drops=drops if self._inodes else None,
            kernel_drops_total=self._drops_seen if self._inodes else None,
            rejected=rejects.rejected, rejects=rejects.as_dict(), first=span.first, last=span.last,
            error=error)
        target.with_name(target.name.replace(".parquet", ".stats.json")).write_text(
            json.dumps(stats.__dict__, indent=2))
        if not self.config.keep_nfcapd and error is None:
            path.unlink()
        return stats

    def _real_exporters(self, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        """Behind the guard, nfcapd sees each exporter as the loopback address the guard sends it
        from: put the real exporter address back."""
        for batch in batches:
            if self.guard is not None and "exporter" in batch.schema.names:
                mapping = self.guard.exporter_map()
                i = batch.schema.get_field_index("exporter")
                col = batch.column(i)
                real = pa.array([mapping.get(v, v) if v is not None else None for v in col.to_pylist()], type=col.type)
                batch = pa.RecordBatch.from_arrays([real if j == i else batch.column(j) for j in range(batch.num_columns)],
                                                   schema=batch.schema)
            yield batch

    def _log_counters(self, wait: float = 1.0) -> dict[str, int] | None:
        """nfcapd's summary line of the next file of this run (it logs one per file it closes, in
        order, right around the rename: wait a little for it)."""
        deadline = time.monotonic() + wait
        while True:
            logged = parse_nfcapd_log(self._read_log()[self._log_offset:])
            if self._log_lines_used < len(logged):
                self._log_lines_used += 1
                return logged[self._log_lines_used - 1]
            if time.monotonic() > deadline:
                return None
            time.sleep(0.05)

    def _watch(self) -> None:
        while not self._stop.wait(self.config.poll):
            try:
                self.convert_ready()
            except Exception as e:  # noqa: BLE001 - the watcher must outlive one bad file
                with open(self._log_path, "a") as log:
                    log.write(f"netflowgen watcher error: {e!r}\n")

    def _drain(self, timeout: float = 2.0) -> None:
        """Wait (bounded) until nfcapd has read every datagram queued on its socket: on SIGTERM it
        exits without reading what still waits in the kernel buffer."""
        deadline = time.monotonic() + timeout
        while self.running and time.monotonic() < deadline:
            counters = udp_counters(self._nfcapd_port, self._inodes) if self._inodes else None
            if counters is None or counters.rx_queue_bytes == 0:
                return
            time.sleep(0.02)

    def _sample_drops(self) -> None:
        """Read the kernel drop counter of nfcapd's socket (no-op once the socket is closed, so
        stop() samples it just before nfcapd exits and the last file still gets its drops)."""
        counters = udp_counters(self._nfcapd_port, self._inodes) if self._inodes else None
        if counters is not None:
            self._drops_unassigned += counters.drops - self._drops_seen
            self._drops_seen = counters.drops

    def _terminate(self, timeout: float = 30.0) -> None:
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def _read_log(self) -> str:
        try:
            return self._log_path.read_text(errors="replace")
        except OSError:
            return ""

    def _log_tail(self) -> str:
        return " / ".join(self._read_log().strip().splitlines()[-3:])

    def _write_summary(self) -> None:
        total = {
            "listen": self.config.listen,
            "files": len(self.rotations),
            "flows_written": sum(r.flows_written for r in self.rotations),
            "sequence_failures": sum(r.sequence_failures or 0 for r in self.rotations),
            "bad_packets": sum(r.bad_packets or 0 for r in self.rotations),
            "kernel_drops": self._drops_seen,
            "rejected": sum(r.rejected for r in self.rotations),
            "errors": [r.error for r in self.rotations if r.error],
            "receiver_restarts": self.restarts,
            "discarded_bytes": self.discarded_bytes,
            "guard": self.guard.stats().as_dict() if self.guard is not None else None,
            "guard_kernel_drops": self.guard.kernel_drops() if self.guard is not None else None,
        }
        (self.out / "collector-summary.json").write_text(json.dumps(total, indent=2))


def _parquet_name(nfcapd_name: str) -> str:
    """nfcapd.202611270231 -> flows-202611270231.parquet (seconds kept for sub-minute rotation)."""
    return "flows-" + nfcapd_name.split(".", 1)[1] + ".parquet"


class _TimeSpan:
    """Earliest start and latest end of the batches that pass through (ISO, UTC, ms)."""

    def __init__(self) -> None:
        self._lo: int | None = None
        self._hi: int | None = None

    def track(self, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            if batch.num_rows:
                lo = pc.min(batch.column("ts_start").cast(pa.int64())).as_py()
                hi = pc.max(batch.column("ts_end").cast(pa.int64())).as_py()
                self._lo = lo if self._lo is None else min(self._lo, lo)
                self._hi = hi if self._hi is None else max(self._hi, hi)
            yield batch

    @staticmethod
    def _iso(ms: int | None) -> str | None:
        if ms is None:
            return None
        return dt.datetime.fromtimestamp(ms / 1000, dt.timezone.utc).isoformat(timespec="milliseconds")

    @property
    def first(self) -> str | None:
        return self._iso(self._lo)

    @property
    def last(self) -> str | None:
        return self._iso(self._hi)
