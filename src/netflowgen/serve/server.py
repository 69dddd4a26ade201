"""`Server`: exporters -> minutes -> scores -> alerts -> actions and metrics, for months.

    exporters --UDP--> DatagramGuard (live.guard: every undecodable datagram counted, never passed)
                  --> nfcapd (live.collector, supervised: a stuck or dead receiver is restarted)
                  --> canonical flow Parquet per rotation (STATE/collector/)
    main loop, every `poll` s:
       new rotation files -> MinuteAssembler.add (late flows counted)
       watermark -> closed minutes -> dense rows (batch feature code) -> STATE/rows/
       -> StreamingScorer.step_rows (Detector, per-node state) -> NodeAlertState per node
       -> Actions (log, script, webhook, ExaBGP; dry-run until enabled) and ServeMetrics
       -> snapshot of everything a restart needs (STATE/snapshot/)

A restart (crash, kill -9, upgrade) resumes from the snapshot: the rows, scorer buffers, alert
states, buffered flows and the list of consumed rotation files were written together (one rename),
so a rotation consumed after the snapshot is consumed again and one before it never twice; the
actions' own state (who is banned) is saved after every dispatch, so an open alert is neither
raised again nor forgotten.
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import shutil
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from netflowgen.detect.alerts import NodeAlertState, alert_table
from netflowgen.detect.detector import Detector
from netflowgen.detect.streaming import StreamingScorer
from netflowgen.live.actions import ActionConfig, Actions
from netflowgen.live.collector import Collector, CollectorConfig, RotationStats, parse_listen
from netflowgen.live.metrics import ServeMetrics
from netflowgen.live.status import StatusServer
from netflowgen.rejects import InputError
from netflowgen.schema import MS_PER_MINUTE
from netflowgen.serve.minutes import MinuteAssembler

STATE_FORMAT = "netflowgen.serve-state/1"
PLOT_MINUTES = 180  # minutes of score and traffic per node kept for the status page


@dataclass
class ServeConfig:
    """Settings of `netflowgen serve` (TOML section `[serve]`; actions in `[actions]`)."""

    detector: str = ""  # the Detector folder (`netflowgen finetune --out`)
    customers: str = ""  # customers.csv (customer_id,prefix): which IPs are nodes
    listen: str = "127.0.0.1:2055"  # UDP HOST:PORT for v5 / v9 / IPFIX
    state: str = "serve-state"  # folder for everything serve keeps (collector spool, rows, alerts, snapshot)
    metrics_listen: str = "127.0.0.1:9464"  # HOST:PORT of /metrics, the status page and /status.json ("" = off)
    lateness: float = 60.0  # seconds after its end that a minute waits for late flows before it closes
    rotate: int = 5  # seconds per receiver file (nfcapd -t; >= 2)
    clear_after: int = 15  # quiet minutes that close an alert
    onboard_minutes: int = 1440  # minutes of a node the detector never saw before it is calibrated and scored
    missing_by: str = "global"  # "global" (no record covered the minute) or "none" (a quiet minute is zero traffic)
    stuck_after: float = 20.0  # seconds without a closed receiver file before the receiver is restarted
    max_current_mb: float = 256.0  # a receiver file growing past this is a stuck receiver (restarted)
    max_spool_mb: float = 2048.0  # consumed flow files beyond this (oldest first) are deleted
    socket_buffer: int = 8 << 20  # receive buffer bytes (capped by net.core.rmem_max)
    poll: float = 0.5  # seconds between loop iterations
    snapshot_every: int = 5  # closed minutes between state snapshots (a restart re-closes at most these from the flow files)

    def validate(self) -> None:
        if not self.detector:
            raise InputError("serve needs --detector DIR")
        if not self.customers:
            raise InputError("serve needs --customers customers.csv (which IPs are nodes)")
        if self.lateness < 0:
            raise InputError(f"serve.lateness must be >= 0 s, got {self.lateness}")
        for name in ("stuck_after", "max_current_mb", "max_spool_mb", "poll"):
            if getattr(self, name) <= 0:
                raise InputError(f"serve.{name} must be > 0, got {getattr(self, name)}")
        try:
            parse_listen(self.listen)
            if self.metrics_listen:
                parse_listen(self.metrics_listen, allow_any_port=True, flag="--metrics")
        except ValueError as e:
            raise InputError(str(e)) from None
        if self.rotate < 2:
            raise InputError(f"serve.rotate must be >= 2 s (nfcapd's smallest interval), got {self.rotate}")
        if self.clear_after < 1 or self.onboard_minutes < 1 or self.snapshot_every < 1:
            raise InputError("serve.clear_after, serve.onboard_minutes and serve.snapshot_every must be >= 1")


def folder_hash(folder: Path) -> str:
    """Content hash of a detector folder's JSON and weights (what a saved state belongs to)."""
    h = hashlib.sha256()
    for name in ("detector.json", "detector.safetensors"):
        p = folder / name
        if p.exists():
            h.update(p.read_bytes())
    return h.hexdigest()[:16]


class Server:
    """`netflowgen serve` as an object: `start()`, `step()` (one loop iteration), `stop()`."""

    def __init__(self, cfg: ServeConfig, actions: ActionConfig | None = None) -> None:
        cfg.validate()
        self.cfg = cfg
        self.state_dir = Path(cfg.state)
        self.actions_cfg = actions or ActionConfig()
        self.metrics = ServeMetrics()
        self.rotations: "queue.Queue[RotationStats]" = queue.Queue()
        self.consumed: list[str] = []  # rotation Parquet files whose flows are in the assembler
        self.alert_states: dict[str, NodeAlertState] = {}
        self.alerts: dict[str, dict] = {}  # alert_id -> the alert record (ALERT_COLUMNS, times in ms)
        self.onboarding: dict[str, list[pl.DataFrame]] = {}  # node never seen by the detector -> its rows so far
        self.plot: dict[str, deque] = {}
        self.rows_buffer: list[pl.DataFrame] = []
        self.started_at = time.time()
        self._guard_seen: dict[str, int] = {}
        self._drops_seen = 0
        self.lost_seconds = 0.0
        self.collector: Collector | None = None
        self.status: StatusServer | None = None
        self._receiver_lock = threading.Lock()
        self._unsaved = 0  # minutes closed since the last snapshot
        self._watch_stop = threading.Event()
        self._watchdog: threading.Thread | None = None
        self._losses: "queue.Queue[tuple[str, float, str | None]]" = queue.Queue()
        self._load()

    # --- set-up and state -------------------------------------------------------------------------
    def _load(self) -> None:
        base = Path(self.cfg.detector)
        if not (base / "detector.json").exists():
            raise InputError(f"{base}: not a detector folder (no detector.json; `netflowgen finetune --out DIR` writes one)")
        if not Path(self.cfg.customers).is_file():
            raise InputError(f"{self.cfg.customers}: customers file not found")
        from netflowgen.nodes import CustomerTable
        CustomerTable.from_csv(self.cfg.customers)  # a bad file is refused now, not at the first closed minute
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.base_hash = folder_hash(base)
        onboarded = self.state_dir / "detector"  # the detector with the nodes serve calibrated since
        snap = self.state_dir / "snapshot"
        if not snap.exists() and (self.state_dir / "snapshot.old").exists():
            snap = self.state_dir / "snapshot.old"  # killed between the two renames of a snapshot
        meta = json.loads((snap / "serve.json").read_text()) if (snap / "serve.json").exists() else None
        if meta is not None and meta.get("detector_hash") != self.base_hash:
            raise InputError(f"{self.state_dir}: the saved state belongs to another detector "
                             f"(hash {meta.get('detector_hash')}, {base} has {self.base_hash}); use a new --state")
        self.detector = Detector.load(onboarded if meta is not None and onboarded.exists() else base)
        self.assembler = MinuteAssembler(self.cfg.customers, self.cfg.lateness, self.cfg.missing_by)
        self.scorer: StreamingScorer | None = None
        if meta is None:
            return
        arrays = dict(np.load(snap / "scorer.npz")) if (snap / "scorer.npz").exists() else None
        if meta.get("scorer") is not None and arrays is not None:
            self.scorer = StreamingScorer.restore(self.detector, meta["scorer"], arrays)
        pending = pq.read_table(snap / "pending.parquet") if (snap / "pending.parquet").exists() else None
        self.assembler.restore(meta["assembler"], pending, time.time())
        self.consumed = list(meta["consumed"])
        for node, st in meta["alert_states"].items():
            self.alert_states[node] = NodeAlertState(self.cfg.clear_after)
            self.alert_states[node].restore(st)
        self.alerts = meta["alerts"]
        self.lost_seconds = float(meta.get("lost_seconds", 0.0))
        if (snap / "onboarding.parquet").exists():
            ob = pl.read_parquet(snap / "onboarding.parquet")
            self.onboarding = {n: [g] for (n,), g in ob.group_by("node")}

    def snapshot(self) -> None:
        """Write everything a restart needs into STATE/snapshot (a new folder renamed into place)."""
        self._unsaved = 0
        self._flush_rows()
        tmp = self.state_dir / "snapshot.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        meta = {"format": STATE_FORMAT, "detector": str(self.cfg.detector), "detector_hash": self.base_hash,
                "assembler": self.assembler.meta(), "consumed": self.consumed,
                "scorer": self.scorer.meta() if self.scorer is not None else None,
                "alert_states": {n: s.state() for n, s in self.alert_states.items()},
                "alerts": self.alerts, "lost_seconds": self.lost_seconds, "saved_at": time.time()}
        if self.scorer is not None:
            np.savez(tmp / "scorer.npz", **self.scorer.state())  # type: ignore[arg-type]
        pending = self.assembler.pending_table()
        if pending is not None:
            pq.write_table(pending, tmp / "pending.parquet")
        if self.onboarding:
            pl.concat([f for frames in self.onboarding.values() for f in frames]).write_parquet(tmp / "onboarding.parquet")
        (tmp / "serve.json").write_text(json.dumps(meta))
        cur, old = self.state_dir / "snapshot", self.state_dir / "snapshot.old"
        shutil.rmtree(old, ignore_errors=True)
        if cur.exists():
            cur.rename(old)
        tmp.rename(cur)
        shutil.rmtree(old, ignore_errors=True)
        self._write_alerts()

    def _save_actions(self) -> None:
        path = self.state_dir / "actions.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.actions.state()))
        os.replace(tmp, path)

    # --- lifecycle ----------------------------------------------------------------------------------
    def start(self) -> None:
        """Start the actions, the receiver (guard + nfcapd) and the status endpoint."""
        acfg = self.actions_cfg
        for name in ("alert_log", "dry_run_log"):  # relative paths live in the state folder
            value = getattr(acfg, name)
            if value and not Path(value).is_absolute():
                setattr(acfg, name, str(self.state_dir / value))
        self.actions = Actions(acfg, counters=self.metrics.count)
        if (self.state_dir / "actions.json").exists():
            self.actions.restore(json.loads((self.state_dir / "actions.json").read_text()))
        out = self.state_dir / "collector"
        done = set(self.consumed)
        for p in sorted(out.glob("flows-*.parquet")) if out.exists() else []:  # written before a crash, not consumed
            if p.name not in done:
                self._consume_file(p)
        self.collector = Collector(CollectorConfig(listen=self.cfg.listen, out=str(out), rotate=self.cfg.rotate,
                                                   socket_buffer=self.cfg.socket_buffer, keep_nfcapd=False,
                                                   guard=True, poll=0.2), on_rotation=self.rotations.put)
        self.collector.start()
        self.metrics.receiver_up.set(1)
        self._watch_stop.clear()
        self._watchdog = threading.Thread(target=self._watch_receiver, name="receiver-watchdog", daemon=True)
        self._watchdog.start()
        self.event("started", listen=self.cfg.listen, detector=str(self.cfg.detector), method=self.detector.method)
        if self.cfg.metrics_listen:
            host, port = parse_listen(self.cfg.metrics_listen, allow_any_port=True, flag="--metrics")
            self.status = StatusServer(host, port, self.metrics, self.status_snapshot)
            self.status.start()

    @property
    def listen_port(self) -> int:
        assert self.collector is not None
        return self.collector.port

    def step(self, wall: float | None = None) -> int:
        """One loop iteration: consume new files, check the receiver, close and score ready minutes.
        Returns the number of minutes closed."""
        wall = time.time() if wall is None else wall
        self._consume_rotations()
        self._record_losses()
        self._count_guard()
        n = self.assembler.ready(wall)
        closed = self._close(n) if n else 0
        self._unsaved += closed
        if self._unsaved >= self.cfg.snapshot_every:
            self.snapshot()
        return closed

    def stop(self) -> None:
        """Stop receiving (the receiver's last file is converted), close every minute that has flows,
        save the state, stop the actions and the status endpoint."""
        self._watch_stop.set()
        if self._watchdog is not None:
            self._watchdog.join(5)
        if self.collector is not None:
            with self._receiver_lock:
                self.collector.stop()
        self.metrics.receiver_up.set(0)
        self._consume_rotations()
        self._record_losses()
        self._count_guard()  # the guard's last counts (it stopped with the collector)
        self.collector = None
        self._close(self.assembler.flush_count())
        self.event("stopped", minutes_closed=int(self.metrics.minutes_closed._value.get()))
        self.snapshot()
        self.actions.close()
        self._save_actions()
        if self.status is not None:
            self.status.stop()

    # --- receiving ----------------------------------------------------------------------------------
    def _consume_rotations(self) -> None:
        while True:
            try:
                st = self.rotations.get_nowait()
            except queue.Empty:
                return
            m = self.metrics
            m.flows_received.inc(st.nfcapd_flows or 0)
            m.sequence_failures.inc(st.sequence_failures or 0)
            if st.bad_packets:
                m.datagrams_undecodable.labels(reason="nfcapd bad packet").inc(st.bad_packets)
            for reason, k in dict(st.rejects.get("by_reason", {})).items():
                m.flows_rejected.labels(reason=reason).inc(int(k))
            if st.kernel_drops:
                m.kernel_drops.inc(st.kernel_drops)
            if st.parquet:
                self._consume_file(Path(st.parquet))
            self._prune_spool()

    def _consume_file(self, path: Path) -> None:
        if path.name in self.consumed:
            return
        flows = pq.read_table(path)
        self.metrics.flows_written.inc(flows.num_rows)
        late = self.assembler.add(flows, time.time())
        if late:
            self.metrics.flows_late.inc(late)
        self.consumed.append(path.name)

    def _prune_spool(self) -> None:
        """Delete the oldest consumed flow files beyond max_spool_mb (bounded disk use)."""
        out = self.state_dir / "collector"
        files = sorted(out.glob("flows-*.parquet"))
        sizes = [p.stat().st_size for p in files]
        total, limit = sum(sizes), self.cfg.max_spool_mb * 1e6
        done = set(self.consumed)
        for p, size in zip(files, sizes):
            if total <= limit:
                break
            if p.name in done:
                p.unlink()
                p.with_name(p.name.replace(".parquet", ".stats.json")).unlink(missing_ok=True)
                total -= size
        if len(self.consumed) > 10_000:
            present = {p.name for p in out.glob("flows-*.parquet")}
            self.consumed = [c for c in self.consumed if c in present]

    def _watch_receiver(self) -> None:
        """Watchdog thread: every 0.2 s, whatever the main loop is doing (closing a minute can take a
        second), check the receiver and restart it when stuck or dead: a spinning nfcapd writes ~0.5
        GB/s, so the check must not wait for the next loop iteration. The loss goes to the main loop."""
        while not self._watch_stop.wait(0.2):
            c = self.collector
            if c is None:
                continue
            with self._receiver_lock:
                problem = c.health(self.cfg.stuck_after, int(self.cfg.max_current_mb * 1e6))
                if problem is None:
                    continue
                self.metrics.receiver_up.set(0)
                since = c.last_rotation
                try:
                    c.restart(problem)
                except Exception as e:  # noqa: BLE001 - keep watching; the next look tries again
                    self._losses.put((problem, 0.0, f"restart failed: {e}"))
                    continue
                self._losses.put((problem, max(0.0, time.monotonic() - since), None))
                self.metrics.receiver_up.set(1)

    def _record_losses(self) -> None:
        """Account the receiver restarts the watchdog made: counters, missing minutes, events.jsonl."""
        while True:
            try:
                problem, gap, error = self._losses.get_nowait()
            except queue.Empty:
                return
            if error is not None:
                self.event("receiver restart failed", reason=problem, error=error)
                continue
            c = self.collector
            self.lost_seconds += gap
            self.metrics.receiver_restarts.labels(reason=problem).inc()
            self.metrics.receiver_lost_seconds.inc(gap)
            high = self.assembler.watermark_ms(time.time())
            lost: dict[str, Any] = {}
            if high is not None:  # the minutes the receiver could not see: missing, not quiet
                first = int(high - gap * 1000)
                self.assembler.mark_lost(first, int(high))
                lost = {"lost_from": _iso(first // MS_PER_MINUTE * MS_PER_MINUTE),
                        "lost_to": _iso(int(high) // MS_PER_MINUTE * MS_PER_MINUTE)}
            self.event("receiver restarted", reason=problem, lost_seconds=round(gap, 3),
                       discarded_bytes=c.discarded_bytes if c is not None else None,
                       restarts=sum(c.restarts.values()) if c is not None else None, **lost)

    def event(self, what: str, **details: Any) -> None:
        """Append one line to STATE/events.jsonl (receiver restarts, onboarded nodes, start, stop)."""
        line = json.dumps({"time": _iso(int(time.time() * 1000)), "event": what, **details})
        with open(self.state_dir / "events.jsonl", "a") as f:
            f.write(line + "\n")

    def _count_guard(self) -> None:
        c = self.collector
        if c is None or c.guard is None:
            return
        st = c.guard.stats()
        self.metrics.datagrams_received.inc(st.received - self._guard_seen.get("_received", 0))
        self._guard_seen["_received"] = st.received
        for reason, k in st.rejected.items():
            self.metrics.datagrams_undecodable.labels(reason=reason).inc(k - self._guard_seen.get(reason, 0))
            self._guard_seen[reason] = k
        drops = c.guard.kernel_drops()
        if drops is not None and drops > self._drops_seen:
            self.metrics.kernel_drops.inc(drops - self._drops_seen)
            self._drops_seen = drops

    # --- closing, scoring, alerting ----------------------------------------------------------------------
    def _close(self, n: int) -> int:
        frames = self.assembler.close(n)
        flows = self.assembler.closed_flows
        for rows in frames:
            self._score_minute(rows, flows)
        return len(frames)

    def _score_minute(self, rows: pl.DataFrame, flows: pa.Table | None) -> None:
        m = self.metrics
        t0 = time.perf_counter()
        self.rows_buffer.append(rows)
        minute_ms = int(rows.get_column("minute").dt.epoch("ms")[0]) if rows.height else None
        m.minutes_closed.inc()
        if rows.height and bool(rows.get_column("missing")[0]):
            m.minutes_missing.inc()
        if minute_ms is None:
            return
        self._admit_nodes(rows)
        if self.scorer is None or not self.scorer.nodes:
            return
        own = rows.filter(pl.col("node").is_in(self.scorer.nodes))
        out = self.scorer.step_rows(own)
        m.scoring_seconds.observe(time.perf_counter() - t0)
        m.nodes_scored.set(len(self.scorer.nodes))
        m.last_closed_minute_timestamp_seconds.set(minute_ms / 1000 + 60)
        w = self.assembler.watermark_ms(time.time())
        if w is not None:
            m.watermark_lag_seconds.set(max(0.0, (w - minute_ms - MS_PER_MINUTE) / 1000))
        pps = dict(zip(own.get_column("node").to_list(), (own.get_column("in_all_pkt") / 60.0).to_list()))
        self._plot(minute_ms, out.score, pps)
        nodes = self.scorer.nodes
        pos = {n: i for i, n in enumerate(nodes)}
        miss = dict(zip(own.get_column("node").to_list(), own.get_column("missing").to_list()))
        # only nodes that alarm now or have an open alert can change state this minute
        watch = set(np.flatnonzero(out.alarm).tolist()) | {pos[n] for n, s in self.alert_states.items()
                                                          if s.current is not None and n in pos}
        for i in sorted(watch):
            node = nodes[i]
            st = self.alert_states.setdefault(node, NodeAlertState(self.cfg.clear_after))
            event = st.update(minute_ms, float(out.score[i]), bool(out.alarm[i]), bool(miss[node]))
            if event is None:
                continue
            alert = st.current if st.current is not None else st.last_closed
            assert alert is not None
            aid = f"{node}@{alert['opened_at']}"
            rec = {"node": node, "customer": self.scorer.customers[i], "method": self.detector.method,
                   **{k: alert.get(k) for k in ("opened_at", "closed_at", "last_alarm_at", "peak_at", "peak_score",
                                                "alarmed_minutes", "reopened")},
                   "driver": self.alerts.get(aid, {}).get("driver"), "attack": self.alerts.get(aid, {}).get("attack")}
            if event in ("open", "reopen") or (out.driver is not None and alert.get("peak_at") == minute_ms):
                rec["driver"] = out.driver[i] if out.driver is not None else None
            self.alerts[aid] = rec
            body = {"event": "close" if event == "close" else ("open" if event in ("open", "reopen") else "update"),
                    "alert_id": aid, "node": node, "customer": rec["customer"], "method": rec["method"],
                    "opened_at": _iso(alert["opened_at"]), "closed_at": _iso(alert.get("closed_at")),
                    "minute": _iso(minute_ms), "score": float(out.score[i]), "peak_score": alert["peak_score"],
                    "driver": rec["driver"], "pps": float(pps.get(node, 0.0)),
                    "attack": dominant_class(flows, node, minute_ms) if event in ("open", "reopen") else rec["attack"]}
            rec["attack"] = body["attack"]
            if event in ("open", "reopen"):
                m.alerts_opened.inc()
                self.actions.alert_opened(body)
            elif event == "close":
                m.alerts_closed.inc()
                self.actions.alert_closed(body)
            else:
                self.actions.alert_updated(body)
        m.alerts_open.set(sum(1 for s in self.alert_states.values() if s.current is not None))
        self._save_actions()

    def _node_pos(self) -> set[str]:
        return set(self.scorer.nodes) if self.scorer is not None else set()

    def _admit_nodes(self, rows: pl.DataFrame) -> None:
        """Add the minute's new nodes to the scorer: nodes the detector knows at once; others after
        `onboard_minutes` of their own rows, calibrated on them (the Detector's reference rule)."""
        have = self._node_pos()
        new = [n for n in rows.get_column("node").to_list() if n not in have]
        if not new:
            return
        known = set(self.detector.nodes)
        ready = [n for n in new if n in known]
        for n in new:
            if n not in known:
                self.onboarding.setdefault(n, []).append(rows.filter(pl.col("node") == n))
        full = [n for n, fr in self.onboarding.items() if sum(f.height for f in fr) >= self.cfg.onboard_minutes]
        if full:
            from netflowgen.detect.cores import ScoringData
            from netflowgen.detect.cube import NodeMinuteCube
            for n in full:  # each on its own minutes (nodes appear at different times)
                cube = NodeMinuteCube.from_table(pl.concat(self.onboarding[n]))
                self.detector.calibrate(ScoringData(cube, None, self.detector.time_zone), 0, len(cube.minutes), "reference")
            self.detector.save(self.state_dir / "detector")
            self.event("nodes onboarded", nodes=full, minutes=self.cfg.onboard_minutes)
            for n in full:
                del self.onboarding[n]
            ready += full
        if not ready:
            return
        cust = dict(zip(rows.get_column("node").to_list(), rows.get_column("customer").to_list()))
        if self.scorer is None:
            self.scorer = StreamingScorer(self.detector, sorted(ready), [cust[n] for n in sorted(ready)])
        else:
            s = self.scorer
            hist = s.missing[0, :s.filled] if s.nodes else None
            s.add_nodes(sorted(ready), [cust[n] for n in sorted(ready)], history_missing=hist)

    def _plot(self, minute_ms: int, score: np.ndarray, pps: dict[str, float]) -> None:
        assert self.scorer is not None
        for node, sc in zip(self.scorer.nodes, score):
            d = self.plot.setdefault(node, deque(maxlen=PLOT_MINUTES))
            d.append((minute_ms, float(sc), pps.get(node, 0.0) * 60.0))

    # --- outputs -------------------------------------------------------------------------------------------
    def _flush_rows(self) -> None:
        """Append the closed minutes' rows to STATE/rows/ (one file per flush, named by its first minute)."""
        if not self.rows_buffer:
            return
        df = pl.concat(self.rows_buffer)
        first = int(df.get_column("minute").dt.epoch("ms").min()) // 1000  # type: ignore[arg-type]
        d = self.state_dir / "rows"
        d.mkdir(exist_ok=True)
        path = d / f"rows-{time.strftime('%Y%m%d%H%M', time.gmtime(first))}-{df.height}.parquet"
        tmp = path.with_suffix(".tmp")
        df.write_parquet(tmp)
        os.replace(tmp, path)
        self.rows_buffer = []

    def alerts_table(self) -> pl.DataFrame:
        """Every alert so far in `netflowgen detect`'s columns (ALERT_COLUMNS, UTC times)."""
        return alert_table(list(self.alerts.values()))

    def _write_alerts(self) -> None:
        path = self.state_dir / "alerts.csv"
        tmp = path.with_suffix(".tmp")
        self.alerts_table().write_csv(tmp)
        os.replace(tmp, path)

    def rows(self) -> pl.DataFrame:
        """Every closed minute's rows written so far (STATE/rows/)."""
        self._flush_rows()
        files = sorted((self.state_dir / "rows").glob("rows-*.parquet"))
        return pl.concat([pl.read_parquet(p) for p in files]) if files else pl.DataFrame()

    def status_snapshot(self) -> dict[str, Any]:
        """What the status page shows (live.status)."""
        c = self.collector
        open_alerts: list[dict[str, Any]] = []
        recent: list[dict[str, Any]] = []
        for aid, r in sorted(self.alerts.items(), key=lambda kv: -int(kv[1]["opened_at"])):
            item = {"alert_id": aid, **{k: r.get(k) for k in ("node", "customer", "method", "peak_score", "driver",
                                                              "alarmed_minutes")},
                    "opened_at": _iso(r["opened_at"]), "closed_at": _iso(r.get("closed_at")), "attack": r.get("attack")}
            (open_alerts if r.get("closed_at") is None else recent).append(item)
        alerting = [a["node"] for a in open_alerts]
        busiest = sorted(self.plot, key=lambda n: -sum(p[2] for p in self.plot[n]))
        shown = list(dict.fromkeys(alerting + busiest))[:8]
        theta = float(self.detector.theta)
        customer = dict(zip(self.scorer.nodes, self.scorer.customers)) if self.scorer is not None else {}
        nodes = [{"node": n, "customer": customer.get(n, ""), "alarm": n in alerting, "theta": theta,
                  "minutes": [p[0] for p in self.plot.get(n, ())], "score": [p[1] for p in self.plot.get(n, ())],
                  "in_pkt": [p[2] for p in self.plot.get(n, ())]} for n in shown]
        w = self.assembler.watermark_ms(time.time())
        nxt = self.assembler.next_minute
        return {"started_at": _iso(int(self.started_at * 1000)), "listen": self.cfg.listen, "now": _iso(int(time.time() * 1000)),
                "detector": {"method": self.detector.method, "theta": theta, "nodes": len(self.detector.nodes),
                             "folder": str(self.cfg.detector)},
                "collector": {"receiver_up": bool(c is not None and c.running),
                              "restarts": sum(c.restarts.values()) if c is not None else 0,
                              "last_rotation": _iso(int(c.last_rotation_wall * 1000)) if c is not None else None,
                              "flows_written": int(self.metrics.flows_written._value.get()),
                              "late": self.assembler.late, "kernel_drops": self._drops_seen,
                              "undecodable": sum(v for k, v in self._guard_seen.items() if k != "_received"),
                              "missing_minutes": int(self.metrics.minutes_missing._value.get()),
                              "lost_seconds": round(self.lost_seconds, 1)},
                "last_closed_minute": _iso((nxt - 1) * MS_PER_MINUTE) if nxt is not None else None,
                "watermark_lag_s": round((w - nxt * MS_PER_MINUTE) / 1000, 1) if w is not None and nxt is not None else None,
                "open_alerts": open_alerts, "recent_alerts": recent[:50], "nodes": nodes}


def dominant_class(flows: pa.Table | None, node: str, minute_ms: int) -> dict[str, Any] | None:
    """The (protocol, source port) carrying most incoming packets of `node` in the minute, with its
    share: what a FlowSpec rule matches. None without flows."""
    if flows is None or flows.num_rows == 0:
        return None
    start = pc.cast(flows.column("ts_start"), pa.int64())
    mask = pc.and_(pc.equal(flows.column("dst_ip"), node),
                   pc.equal(pc.multiply(pc.divide(start, MS_PER_MINUTE), MS_PER_MINUTE), minute_ms))
    sel = flows.filter(mask)
    if sel.num_rows == 0:
        return None
    df = pl.from_arrow(sel.select(["proto", "src_port", "packets", "sampling_rate"]))
    assert isinstance(df, pl.DataFrame)
    df = df.with_columns((pl.col("packets").cast(pl.Float64) * pl.col("sampling_rate")).alias("p"))
    total = float(df.get_column("p").sum())
    by_proto = df.group_by("proto").agg(pl.col("p").sum()).sort("p", descending=True).row(0, named=True)
    ports = df.filter(pl.col("proto") == by_proto["proto"]).group_by("src_port").agg(pl.col("p").sum())
    top_port = ports.sort("p", descending=True).row(0, named=True)
    # a source port only when one carries most of the class (reflection: udp/53, udp/123); a SYN
    # flood from random ports is matched by destination and protocol alone
    port = top_port["src_port"] if by_proto["p"] > 0 and top_port["p"] >= 0.5 * by_proto["p"] else None
    share = (top_port["p"] if port is not None else by_proto["p"]) / total if total > 0 else None
    return {"proto": int(by_proto["proto"]), "src_port": int(port) if port is not None else None,
            "share": round(float(share), 3) if share is not None else None}


def _iso(ms: int | None) -> str | None:
    if ms is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(int(ms) / 1000))


__all__ = ["Server", "ServeConfig", "dominant_class"]
