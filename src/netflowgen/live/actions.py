"""What `netflowgen serve` does with an alert: log it, tell people, and (only when enabled) route.

The scorer hands every alert event to `Actions` (`alert_opened` / `alert_updated` / `alert_closed`).
Each event gets one JSON line in `alert_log` with `action_taken` saying what was done or skipped and
why. An opened alert is a *ban*: the FastNetMon-compatible notify script is run (`ban`, then
`attack_details` with the details on stdin), the event is POSTed to a webhook, and ExaBGP
process-API lines announce an RTBH /32 (/128) and/or a FlowSpec rule. A closed alert is the
matching *unban*, only for bans that were acted on, withdrawing exactly what was announced.

Design:
- The caller is the scoring loop and must never wait on the outside world. Scripts and webhooks
  therefore run in one background worker thread each, fed by a FIFO queue: the order of events per
  node is kept, a hung script or a dead webhook target (retried with capped exponential back-off)
  costs the scorer nothing, and a failure is counted, never raised.
- Routing is the dangerous part (a false positive blackholes a customer), so it is dry-run by
  default: the exact lines are written to `dry_run_log` prefixed "DRY-RUN " until `enable_routing`
  is set. `never_act` prefixes and the `max_active` cap are checked before anything acts.
- `state()` / `restore()` carry active bans (with the lines to withdraw) and undelivered webhooks
  across a restart, so a node is neither banned twice nor left banned forever.
"""

from __future__ import annotations

import contextlib
import http.client
import ipaddress
import json
import os
import queue
import re
import subprocess
import sys
import threading
import urllib.request
from dataclasses import dataclass, field
from typing import IO, Any, Callable

_PROTO_NAMES = {6: "tcp", 17: "udp", 1: "icmp"}


@dataclass
class ActionConfig:
    """TOML section [serve.actions]."""

    alert_log: str | None = "alerts.jsonl"  # JSON-lines alert log, one line per event (None = off); relative = as given
    notify_script: str | None = None  # FastNetMon-compatible script: `script IP incoming PPS ban|unban|attack_details`
    script_timeout: float = 30.0  # seconds before a script run is killed and counted failed
    webhook_url: str | None = None  # http(s) URL receiving an HTTP POST of each open/close event as JSON
    webhook_timeout: float = 5.0  # seconds per webhook attempt
    webhook_retries: int = 5  # attempts after the first before a delivery is counted failed
    webhook_backoff: float = 1.0  # seconds before the first retry, doubled each time, capped at 60
    exabgp_out: str | None = None  # file or FIFO read by ExaBGP's process API ("-" = stdout); used with enable_routing
    rtbh: bool = False  # announce/withdraw the node's /32 (/128) with `community`
    flowspec: bool = False  # announce/withdraw a FlowSpec discard rule for the dominant attack class
    enable_routing: bool = False  # False: routing lines go only to `dry_run_log`, marked "DRY-RUN "
    dry_run_log: str = "exabgp-dry-run.log"  # where dry-run routing lines are appended
    community: str = "65535:666"  # RTBH community (RFC 7999 BLACKHOLE); several separated by spaces
    next_hop_v4: str = "192.0.2.1"  # RTBH next hop of IPv4 routes (discarded by the routers)
    next_hop_v6: str = "100::1"  # RTBH next hop of IPv6 routes (RFC 6666 discard prefix)
    never_act: list[str] = field(default_factory=list)  # CIDR prefixes never banned/announced (still logged)
    max_active: int = 100  # cap on simultaneous bans; beyond it an alert is logged, counted "capped", not acted on

    def validate(self) -> None:
        """Raise ValueError naming the offending field."""

        def bad(name: str, why: str) -> ValueError:
            return ValueError(f"serve.actions.{name}: {why} (got {getattr(self, name)!r})")

        for name in ("script_timeout", "webhook_timeout"):
            if not isinstance(getattr(self, name), (int, float)) or getattr(self, name) <= 0:
                raise bad(name, "must be a positive number of seconds")
        if not isinstance(self.webhook_backoff, (int, float)) or self.webhook_backoff < 0:
            raise bad("webhook_backoff", "must be >= 0")
        for name in ("webhook_retries", "max_active"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 0:
                raise bad(name, "must be an integer >= 0")
        if self.webhook_url is not None and not re.match(r"https?://[^/]", self.webhook_url):
            raise bad("webhook_url", "must be an http:// or https:// URL")
        for name, version in (("next_hop_v4", 4), ("next_hop_v6", 6)):
            try:
                ok = ipaddress.ip_address(getattr(self, name)).version == version
            except ValueError:
                ok = False
            if not ok:
                raise bad(name, f"must be an IPv{version} address")
        parts = self.community.split()
        if not parts or not all(re.fullmatch(r"\d+:\d+", p) and max(map(int, p.split(":"))) < 65536 for p in parts):
            raise bad("community", "must be ASN:VALUE (each 0..65535), several separated by spaces")
        if not isinstance(self.never_act, list):
            raise bad("never_act", "must be a list of CIDR prefixes")
        for prefix in self.never_act:
            try:
                ipaddress.ip_network(prefix, strict=False)
            except (TypeError, ValueError):
                raise ValueError(f"serve.actions.never_act: {prefix!r} is not a CIDR prefix") from None
        if not self.dry_run_log:
            raise bad("dry_run_log", "must be a path")
        if self.enable_routing and (self.rtbh or self.flowspec) and not self.exabgp_out:
            raise bad("exabgp_out", "is required when enable_routing is set with rtbh or flowspec")


def attack_details(alert: dict) -> str:
    """The human-readable text a notify script gets on stdin, in FastNetMon's style."""
    attack, pps = alert.get("attack") or {}, round(alert.get("pps") or 0)
    proto = attack.get("proto")
    name = "unknown" if proto is None else _PROTO_NAMES.get(proto, str(proto))
    share = f"{attack['share'] * 100:.1f}%" if attack.get("share") is not None else "unknown"
    rows = [("IP", alert.get("node")), ("Attack type", name if proto is None else f"{name} flood"),
            ("Attack direction", "incoming"), ("Attack protocol", name), ("Attack source port", attack.get("src_port", "unknown")),
            ("Attack share of traffic", share), ("Incoming traffic", f"{pps} pps"), ("Score", alert.get("score")),
            ("Peak score", alert.get("peak_score")), ("Detection method", alert.get("method")), ("Driver", alert.get("driver")),
            ("Customer", alert.get("customer")), ("Alert id", alert.get("alert_id")), ("Opened at", alert.get("opened_at"))]
    return "".join(f"{key}: {value}\n" for key, value in rows)


class Actions:
    """Acts on alert events as configured; see the module docstring."""

    def __init__(self, cfg: ActionConfig, counters: Callable[[str, str, int], None] | None = None) -> None:
        cfg.validate()
        self.cfg = cfg
        self.counts: dict[str, int] = {}
        self._counters = counters
        self._nets = [ipaddress.ip_network(p, strict=False) for p in cfg.never_act]
        self._lock = threading.RLock()
        self._bans: dict[str, dict[str, Any]] = {}  # node -> {"alert", "ids": [alert_id...], "routes": [...]}
        self._pending: dict[int, dict] = {}  # webhook deliveries not yet done, in order
        self._seq = 0
        self._files: dict[str, IO[str]] = {}
        self._exabgp: IO[str] | None = None
        self._stop = threading.Event()
        self._opener = urllib.request.build_opener()
        self._script_q: queue.Queue[tuple[list[str], str] | None] = queue.Queue()
        self._webhook_q: queue.Queue[int | None] = queue.Queue()
        self._threads: list[threading.Thread] = []
        for enabled, target, name in ((cfg.notify_script, self._script_worker, "script"),
                                      (cfg.webhook_url, self._webhook_worker, "webhook")):
            if enabled:
                t = threading.Thread(target=target, name=f"netflowgen-actions-{name}", daemon=True)
                t.start()
                self._threads.append(t)

    # --- public API ------------------------------------------------------------------------------
    def alert_opened(self, alert: dict) -> None:
        with self._lock:
            node = str(alert["node"])
            if node in self._bans:
                return self._update(alert, ["already active: treated as update"])
            wanted = self._wanted()
            why = self._refusal(node)
            if why:
                for action in wanted:
                    self._count("capped" if why == "capped" else "skipped", action)
                return self._log(alert, "open", [why])
            taken: list[str] = []
            ban: dict[str, Any] = {"alert": dict(alert), "ids": [alert["alert_id"]], "routes": []}
            self._bans[node] = ban
            self._script(alert, "ban", taken)
            self._script(alert, "attack_details", taken)
            self._webhook(alert, taken)
            lines = self._announce(node, alert, ban, taken)
            self._log(alert, "open", taken, lines)

    def alert_updated(self, alert: dict) -> None:
        with self._lock:
            self._update(alert, [])

    def alert_closed(self, alert: dict) -> None:
        with self._lock:
            node, ban = str(alert["node"]), self._bans.get(str(alert["node"]))
            if ban is None or alert["alert_id"] not in ban["ids"]:
                return self._log(alert, "close", ["not acted on"])
            ban["ids"].remove(alert["alert_id"])
            if ban["ids"]:
                return self._log(alert, "close", ["other alerts on this node still active: ban kept"])
            del self._bans[node]
            taken: list[str] = []
            self._script(alert, "unban", taken)
            self._webhook(alert, taken)
            lines = []
            for route in ban["routes"]:
                lines.append(self._route(route["withdraw"], route["kind"], route["dry_run"], taken))
            self._log(alert, "close", taken, lines)

    def active(self) -> dict[str, dict]:
        with self._lock:
            return {node: dict(ban["alert"]) for node, ban in self._bans.items()}

    def pending(self) -> list[dict]:
        with self._lock:
            return [dict(body) for body in self._pending.values()]

    def state(self) -> dict:
        with self._lock:
            return json.loads(json.dumps({"version": 1, "active": self._bans, "pending": self.pending(),
                                          "counts": self.counts}, default=str))

    def restore(self, state: dict) -> None:
        with self._lock:
            for node, ban in (state.get("active") or {}).items():
                self._bans.setdefault(node, {"alert": ban["alert"], "ids": list(ban["ids"]), "routes": list(ban["routes"]),
                                             "restored": True})
            for key, n in (state.get("counts") or {}).items():
                self.counts[key] = self.counts.get(key, 0) + int(n)
            for body in state.get("pending") or []:
                if self.cfg.webhook_url:
                    self._enqueue(body)

    def close(self, timeout: float = 5.0) -> None:
        """Stop the workers: queued scripts still run (within `timeout`), webhooks stop at once and
        whatever was not delivered stays in pending()."""
        self._stop.set()
        self._script_q.put(None)
        self._webhook_q.put(None)
        for t in self._threads:
            t.join(timeout)
        with self._lock:
            for fh in [*self._files.values(), self._exabgp]:
                if fh is not None and fh is not sys.stdout:
                    fh.close()
            self._files.clear()
            self._exabgp = None

    # --- decisions -------------------------------------------------------------------------------
    def _wanted(self) -> list[str]:
        pairs = (("script", self.cfg.notify_script), ("webhook", self.cfg.webhook_url),
                 ("rtbh", self.cfg.rtbh), ("flowspec", self.cfg.flowspec))
        return [name for name, on in pairs if on]

    def _refusal(self, node: str) -> str | None:
        try:
            addr = ipaddress.ip_address(node)
        except ValueError:
            return "not an IP address"
        if any(addr in net for net in self._nets):
            return "never_act"
        if len(self._bans) >= self.cfg.max_active:
            return "capped"
        return None

    def _update(self, alert: dict, taken: list[str]) -> None:
        ban = self._bans.get(str(alert["node"]))
        if ban is not None:
            restored = ban.pop("restored", False)
            if alert["alert_id"] not in ban["ids"] and restored:
                ban["ids"] = [alert["alert_id"]]  # the scorer restarted with new ids: its alert now owns the ban
            elif alert["alert_id"] not in ban["ids"]:
                ban["ids"].append(alert["alert_id"])  # unban when the last of them closes
            if alert["alert_id"] == ban["ids"][0]:
                ban["alert"] = dict(alert)
        self._log(alert, "update", taken)

    # --- log ---------------------------------------------------------------------------------------
    def _log(self, alert: dict, event: str, taken: list[str], lines: list[str] | None = None) -> None:
        if not self.cfg.alert_log:
            return
        record = {**alert, "event": event, "action_taken": taken}
        if lines:
            record["exabgp"] = lines
        self._count("sent" if self._append(self.cfg.alert_log, json.dumps(record, default=str)) else "failed", "log")

    def _append(self, path: str, line: str) -> bool:
        try:
            fh = self._files.get(path)
            if fh is None:
                fh = self._files[path] = open(path, "a", encoding="utf-8")
            fh.write(line + "\n")
            fh.flush()
            return True
        except OSError:
            return False

    def _count(self, kind: str, action: str, n: int = 1) -> None:
        with self._lock:
            self.counts[f"{kind}.{action}"] = self.counts.get(f"{kind}.{action}", 0) + n
        if self._counters is not None:
            with contextlib.suppress(Exception):  # a metrics problem must not stop the actions
                self._counters(kind, action, n)

    # --- notify script -----------------------------------------------------------------------------
    def _script(self, alert: dict, action: str, taken: list[str]) -> None:
        if not self.cfg.notify_script:
            return
        argv = [self.cfg.notify_script, str(alert["node"]), "incoming", str(round(alert.get("pps") or 0)), action]
        self._script_q.put((argv, "" if action == "unban" else attack_details(alert)))
        taken.append(f"script {action}")

    def _script_worker(self) -> None:
        while (job := self._script_q.get()) is not None:
            argv, stdin = job
            try:
                res = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=self.cfg.script_timeout)
                ok = res.returncode == 0
            except (OSError, subprocess.SubprocessError):
                ok = False
            self._count("sent" if ok else "failed", "script")

    # --- webhook -----------------------------------------------------------------------------------
    def _webhook(self, alert: dict, taken: list[str]) -> None:
        if self.cfg.webhook_url:
            self._enqueue(dict(alert))
            taken.append("webhook")

    def _enqueue(self, body: dict) -> None:
        with self._lock:
            self._seq += 1
            self._pending[self._seq] = body
        self._webhook_q.put(self._seq)

    def _post(self, body: dict) -> bool:
        req = urllib.request.Request(str(self.cfg.webhook_url), data=json.dumps(body, default=str).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
        try:
            with self._opener.open(req, timeout=self.cfg.webhook_timeout) as resp:
                return int(resp.status) < 400
        except (OSError, http.client.HTTPException, ValueError):  # HTTPError (>= 400) is an OSError
            return False

    def _webhook_worker(self) -> None:
        while (seq := self._webhook_q.get()) is not None:
            with self._lock:
                body = self._pending.get(seq)
            attempt, done = 0, body is None
            while not done and not self._stop.is_set():
                if self._post(body or {}):
                    self._count("sent", "webhook")
                    done = True
                elif attempt >= self.cfg.webhook_retries:
                    self._count("failed", "webhook")
                    done = True
                else:
                    self._count("retried", "webhook")
                    self._stop.wait(min(self.cfg.webhook_backoff * 2**attempt, 60.0))
                    attempt += 1
            if not done:
                return  # stopped: the delivery stays in pending() for state()
            with self._lock:
                self._pending.pop(seq, None)

    # --- ExaBGP ------------------------------------------------------------------------------------
    def _announce(self, node: str, alert: dict, ban: dict[str, Any], taken: list[str]) -> list[str]:
        addr = ipaddress.ip_address(node)
        prefix = f"{addr}/{addr.max_prefixlen}"
        rules: list[tuple[str, str]] = []
        if self.cfg.rtbh:
            hop = self.cfg.next_hop_v4 if addr.version == 4 else self.cfg.next_hop_v6
            rules.append(("rtbh", f"route {prefix} next-hop {hop} community [{self.cfg.community}]"))
        attack = alert.get("attack") or {}
        if self.cfg.flowspec and attack.get("proto") is None:
            taken.append("flowspec: no attack class")
        elif self.cfg.flowspec:
            proto = int(attack["proto"])
            match = [f"destination {prefix};", f"{'protocol' if addr.version == 4 else 'next-header'} {_PROTO_NAMES.get(proto, proto)};"]
            if proto in (6, 17) and attack.get("src_port") is not None:
                match.append(f"source-port ={int(attack['src_port'])};")
            rules.append(("flowspec", f"flow route {{ match {{ {' '.join(match)} }} then {{ discard; }} }}"))
        dry = not self.cfg.enable_routing
        lines = []
        for kind, rule in rules:
            lines.append(self._route(f"announce {rule}", kind, dry, taken))
            ban["routes"].append({"kind": kind, "withdraw": f"withdraw {rule}", "dry_run": dry})
        return lines

    def _route(self, line: str, kind: str, dry_run: bool, taken: list[str]) -> str:
        """Write one process-API line: to dry_run_log when `dry_run` (as it was when announced)."""
        verb = line.split()[0]
        if dry_run:
            ok = self._append(self.cfg.dry_run_log, "DRY-RUN " + line)
            self._count("skipped" if ok else "failed", kind)
            taken.append(f"{kind} {verb}: dry-run")
            return "DRY-RUN " + line
        ok = self._write_exabgp(line)
        self._count("sent" if ok else "failed", kind)
        taken.append(f"{kind} {verb}" + ("" if ok else ": write failed"))
        return line

    def _write_exabgp(self, line: str) -> bool:
        try:
            if self._exabgp is None:
                path = str(self.cfg.exabgp_out)
                if path == "-":
                    self._exabgp = sys.stdout
                else:  # O_NONBLOCK: a FIFO without a reader fails now (ENXIO) instead of blocking the scorer
                    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NONBLOCK, 0o644)
                    self._exabgp = os.fdopen(fd, "w", encoding="utf-8")
            self._exabgp.write(line + "\n")  # a line < PIPE_BUF is written whole or not at all
            self._exabgp.flush()
            return True
        except OSError:
            if self._exabgp is not None and self._exabgp is not sys.stdout:
                with contextlib.suppress(OSError):
                    self._exabgp.close()
            self._exabgp = None  # reopen on the next line (ExaBGP restarted, reader came back)
            return False
