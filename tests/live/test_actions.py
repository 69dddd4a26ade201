"""Alert actions (netflowgen.live.actions): JSON-lines log, FastNetMon-style notify script, webhook
with retries, ExaBGP RTBH/FlowSpec lines (dry-run by default), never_act, max_active, restart state.
Loopback only; every Actions is closed and every thread checked stopped."""

from __future__ import annotations

import json
import os
import socket
import stat
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from netflowgen.live.actions import ActionConfig, Actions

NODE = "203.0.113.7"
UDP53 = {"proto": 17, "src_port": 53, "share": 0.93}


def alert(event: str = "open", node: str = NODE, alert_id: str = "a1", attack: dict | None = UDP53,
          pps: float = 12345.6) -> dict[str, Any]:
    return {"event": event, "node": node, "customer": "c1", "method": "Static-EWMA",
            "opened_at": "2024-05-01T10:00:00Z", "closed_at": "2024-05-01T10:05:00Z" if event == "close" else None,
            "minute": "2024-05-01T10:00:00Z", "score": 7.5, "peak_score": 9.25, "driver": "pps",
            "pps": pps, "attack": attack, "alert_id": alert_id}


def wait_for(cond: Callable[[], bool], timeout: float = 5.0) -> None:
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, "condition not met in time"
        time.sleep(0.01)


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def make(tmp_path: Path) -> Iterator[Callable[..., Actions]]:
    """Build Actions writing under tmp_path; all closed, and their threads gone, at the end."""
    made: list[Actions] = []

    def build(counters: Callable[[str, str, int], None] | None = None, **kw: Any) -> Actions:
        kw.setdefault("alert_log", str(tmp_path / "alerts.jsonl"))
        kw.setdefault("dry_run_log", str(tmp_path / "dry.log"))
        a = Actions(ActionConfig(**kw), counters)
        made.append(a)
        return a

    yield build
    for a in made:
        a.close(timeout=5)
    assert not [t.name for t in threading.enumerate() if t.name.startswith("netflowgen-actions")]


class Hook:
    """A loopback HTTP server recording POST bodies; answers 500 to the first `fail` requests."""

    def __init__(self, fail: int = 0) -> None:
        self.bodies: list[dict] = []
        self.headers: list[str] = []
        self.fail = fail
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if hook.fail > 0:
                    hook.fail -= 1
                    self.send_response(500)
                else:
                    hook.bodies.append(json.loads(body))
                    hook.headers.append(self.headers["Content-Type"])
                    self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05})
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@pytest.fixture
def hook_factory() -> Iterator[Callable[[int], Hook]]:
    hooks: list[Hook] = []

    def start(fail: int = 0) -> Hook:
        hooks.append(Hook(fail))
        return hooks[-1]

    yield start
    for h in hooks:
        h.stop()


def dead_url() -> str:
    with socket.socket() as s:  # bound then closed: nothing listens there
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}/hook"


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


# --- webhook ---------------------------------------------------------------------------------------
def test_webhook_posts_each_event(make: Callable[..., Actions], hook_factory: Callable[[int], Hook]) -> None:
    hook = hook_factory(0)
    a = make(webhook_url=hook.url)
    a.alert_opened(alert())
    a.alert_updated(alert("update"))  # update: log only
    a.alert_closed(alert("close"))
    wait_for(lambda: a.counts.get("sent.webhook") == 2)
    assert [b["event"] for b in hook.bodies] == ["open", "close"]
    assert hook.bodies[0] == alert() and hook.bodies[1] == alert("close")
    assert hook.headers == ["application/json"] * 2
    assert a.pending() == []


def test_webhook_target_down_never_blocks(make: Callable[..., Actions]) -> None:
    seen: list[tuple[str, str, int]] = []
    a = make(lambda k, act, n: seen.append((k, act, n)), webhook_url=dead_url(), webhook_retries=3,
             webhook_backoff=0.01, webhook_timeout=1)
    t0 = time.monotonic()
    a.alert_opened(alert())
    assert time.monotonic() - t0 < 0.2
    wait_for(lambda: a.counts.get("failed.webhook") == 1)
    assert a.counts["retried.webhook"] == 3 and "sent.webhook" not in a.counts
    assert seen.count(("retried", "webhook", 1)) == 3 and ("failed", "webhook", 1) in seen
    assert a.pending() == []


def test_webhook_fails_twice_then_delivers(make: Callable[..., Actions], hook_factory: Callable[[int], Hook]) -> None:
    hook = hook_factory(2)
    a = make(webhook_url=hook.url, webhook_backoff=0.01)
    a.alert_opened(alert())
    wait_for(lambda: a.counts.get("sent.webhook") == 1)
    assert len(hook.bodies) == 1 and a.counts["retried.webhook"] == 2 and "failed.webhook" not in a.counts


def test_pending_webhook_survives_restart(make: Callable[..., Actions], hook_factory: Callable[[int], Hook]) -> None:
    a = make(webhook_url=dead_url(), webhook_backoff=30)  # first attempt fails, then waits long
    a.alert_opened(alert())
    wait_for(lambda: a.counts.get("retried.webhook") == 1)
    t0 = time.monotonic()
    a.close()
    assert time.monotonic() - t0 < 1  # the back-off wait is interrupted
    state = json.loads(json.dumps(a.state()))
    assert a.pending() == [alert()] and state["pending"] == [alert()]
    hook = hook_factory(0)
    b = make(webhook_url=hook.url)
    b.restore(state)
    wait_for(lambda: b.counts.get("sent.webhook") == 1)
    assert hook.bodies == [alert()] and b.pending() == []


# --- notify script ---------------------------------------------------------------------------------
def script(tmp_path: Path, body: str) -> str:
    path = tmp_path / "notify.sh"
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


def test_script_fastnetmon_convention(tmp_path: Path, make: Callable[..., Actions]) -> None:
    out = tmp_path / "calls.txt"
    a = make(notify_script=script(tmp_path, f'{{ echo "ARGS $*"; cat; echo "END"; }} >> {out}'))
    a.alert_opened(alert())
    a.alert_closed(alert("close"))
    wait_for(lambda: a.counts.get("sent.script") == 3)
    calls = out.read_text().split("END\n")
    assert len(calls) == 4 and calls[0].startswith(f"ARGS {NODE} incoming 12346 ban\n")
    assert calls[1].startswith(f"ARGS {NODE} incoming 12346 attack_details\n")
    assert calls[2] == f"ARGS {NODE} incoming 12346 unban\n" and calls[3] == ""
    details = calls[1]
    for want in (f"IP: {NODE}", "Attack protocol: udp", "Attack source port: 53", "Incoming traffic: 12346 pps",
                 "Peak score: 9.25", "Detection method: Static-EWMA", "Driver: pps"):
        assert want in details
    assert "IP:" in calls[0]  # ban gets the details on stdin too


def test_script_failures_counted(tmp_path: Path, make: Callable[..., Actions]) -> None:
    a = make(notify_script=script(tmp_path, "exit 3"))
    t0 = time.monotonic()
    a.alert_opened(alert())
    assert time.monotonic() - t0 < 0.2
    wait_for(lambda: a.counts.get("failed.script") == 2)
    b = make(notify_script=str(tmp_path / "missing.sh"))
    b.alert_opened(alert())
    wait_for(lambda: b.counts.get("failed.script") == 2)
    (tmp_path / "slow").mkdir()
    c = make(notify_script=script(tmp_path / "slow", "exec sleep 5"), script_timeout=0.2)
    c.alert_closed(alert("close"))  # not acted on: no script
    c.alert_opened(alert())
    wait_for(lambda: c.counts.get("failed.script") == 2)
    assert "sent.script" not in a.counts | b.counts | c.counts


# --- ExaBGP lines ----------------------------------------------------------------------------------
RTBH4 = f"route {NODE}/32 next-hop 192.0.2.1 community [65535:666]"
FLOW4 = f"flow route {{ match {{ destination {NODE}/32; protocol udp; source-port =53; }} then {{ discard; }} }}"


def test_dry_run_lines(tmp_path: Path, make: Callable[..., Actions]) -> None:
    a = make(rtbh=True, flowspec=True, exabgp_out=str(tmp_path / "exabgp.pipe"))
    a.alert_opened(alert())
    a.alert_opened(alert(node="2001:db8::7", alert_id="a2",
                         attack={"proto": 6, "src_port": None, "share": 0.5}))
    a.alert_opened(alert(node="198.51.100.1", alert_id="a3", attack={"proto": 1, "src_port": 0, "share": 1.0}))
    a.alert_opened(alert(node="198.51.100.2", alert_id="a4", attack=None))
    a.alert_closed(alert("close"))
    assert lines(tmp_path / "dry.log") == [
        f"DRY-RUN announce {RTBH4}",
        f"DRY-RUN announce {FLOW4}",
        "DRY-RUN announce route 2001:db8::7/128 next-hop 100::1 community [65535:666]",
        "DRY-RUN announce flow route { match { destination 2001:db8::7/128; next-header tcp; } then { discard; } }",
        "DRY-RUN announce route 198.51.100.1/32 next-hop 192.0.2.1 community [65535:666]",
        "DRY-RUN announce flow route { match { destination 198.51.100.1/32; protocol icmp; } then { discard; } }",
        "DRY-RUN announce route 198.51.100.2/32 next-hop 192.0.2.1 community [65535:666]",
        f"DRY-RUN withdraw {RTBH4}",
        f"DRY-RUN withdraw {FLOW4}",
    ]
    assert not (tmp_path / "exabgp.pipe").exists()
    assert a.counts["skipped.rtbh"] == 5 and a.counts["skipped.flowspec"] == 4 and "sent.rtbh" not in a.counts
    log = [json.loads(x) for x in lines(tmp_path / "alerts.jsonl")]
    assert [r["event"] for r in log] == ["open"] * 4 + ["close"]
    assert "flowspec: no attack class" in log[3]["action_taken"]
    assert "rtbh announce: dry-run" in log[0]["action_taken"] and log[0]["exabgp"][0] == f"DRY-RUN announce {RTBH4}"
    assert log[0]["score"] == 7.5 and log[0]["alert_id"] == "a1"


def test_enable_routing_writes_exabgp_out(tmp_path: Path, make: Callable[..., Actions]) -> None:
    out = tmp_path / "exabgp.cmd"
    a = make(rtbh=True, flowspec=True, enable_routing=True, exabgp_out=str(out), community="65000:666 65535:666")
    a.alert_opened(alert())
    a.alert_closed(alert("close"))
    rtbh = f"route {NODE}/32 next-hop 192.0.2.1 community [65000:666 65535:666]"
    assert lines(out) == [f"announce {rtbh}", f"announce {FLOW4}", f"withdraw {rtbh}", f"withdraw {FLOW4}"]
    assert not (tmp_path / "dry.log").exists()
    assert a.counts["sent.rtbh"] == 2 and a.counts["sent.flowspec"] == 2


def test_fifo_without_reader_does_not_block(tmp_path: Path, make: Callable[..., Actions]) -> None:
    fifo = tmp_path / "exabgp.fifo"
    os.mkfifo(fifo)
    a = make(rtbh=True, enable_routing=True, exabgp_out=str(fifo))
    t0 = time.monotonic()
    a.alert_opened(alert())
    assert time.monotonic() - t0 < 0.2 and a.counts["failed.rtbh"] == 1
    fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # a reader comes: the next line goes through
    try:
        a.alert_closed(alert("close"))
        assert os.read(fd, 4096).decode() == f"withdraw {RTBH4}\n" and a.counts["sent.rtbh"] == 1
    finally:
        os.close(fd)


# --- never_act, max_active, restart ----------------------------------------------------------------
def test_never_act(tmp_path: Path, make: Callable[..., Actions], hook_factory: Callable[[int], Hook]) -> None:
    hook = hook_factory(0)
    out = tmp_path / "calls.txt"
    a = make(rtbh=True, flowspec=True, webhook_url=hook.url, never_act=["203.0.113.0/24", "2001:db8::/32"],
             notify_script=script(tmp_path, f"echo x >> {out}"))
    a.alert_opened(alert())
    a.alert_opened(alert(node="2001:db8::1", alert_id="a2"))
    a.alert_closed(alert("close"))
    a.alert_opened(alert(node="198.51.100.1", alert_id="a3"))  # outside: acted on
    wait_for(lambda: a.counts.get("sent.script") == 2 and a.counts.get("sent.webhook") == 1)
    a.close()
    assert list(a.active()) == ["198.51.100.1"] and [b["node"] for b in hook.bodies] == ["198.51.100.1"]
    assert lines(out) == ["x", "x"]
    assert a.counts["skipped.script"] == a.counts["skipped.webhook"] == 2
    assert a.counts["skipped.rtbh"] == a.counts["skipped.flowspec"] == 2 + 1  # + the dry-run announces of 198.51.100.1
    log = [json.loads(x) for x in lines(tmp_path / "alerts.jsonl")]
    assert log[0]["action_taken"] == ["never_act"] and log[2]["action_taken"] == ["not acted on"]
    assert all(NODE not in x for x in lines(tmp_path / "dry.log"))


def test_max_active(tmp_path: Path, make: Callable[..., Actions]) -> None:
    a = make(rtbh=True, max_active=1)
    a.alert_opened(alert())
    a.alert_opened(alert(node="198.51.100.1", alert_id="a2"))
    assert list(a.active()) == [NODE] and a.counts["capped.rtbh"] == 1
    a.alert_closed(alert("close", node="198.51.100.1", alert_id="a2"))
    assert lines(tmp_path / "dry.log") == [f"DRY-RUN announce {RTBH4}"]
    log = [json.loads(x) for x in lines(tmp_path / "alerts.jsonl")]
    assert log[1]["action_taken"] == ["capped"] and log[2]["action_taken"] == ["not acted on"]
    a.alert_closed(alert("close"))
    a.alert_opened(alert(node="198.51.100.1", alert_id="a3"))  # a slot is free again
    assert list(a.active()) == ["198.51.100.1"]


def test_second_open_is_update(tmp_path: Path, make: Callable[..., Actions]) -> None:
    a = make(rtbh=True)
    a.alert_opened(alert())
    a.alert_opened(alert(alert_id="a2"))  # same node, another alert: no second ban
    a.alert_closed(alert("close"))
    assert list(a.active()) == [NODE]  # a2 still open
    a.alert_closed(alert("close", alert_id="a2"))
    assert a.active() == {}
    assert lines(tmp_path / "dry.log") == [f"DRY-RUN announce {RTBH4}", f"DRY-RUN withdraw {RTBH4}"]
    assert [json.loads(x)["event"] for x in lines(tmp_path / "alerts.jsonl")] == ["open", "update", "close", "close"]


def test_restore_keeps_ban_and_unbans_once(tmp_path: Path, make: Callable[..., Actions]) -> None:
    a = make(rtbh=True, flowspec=True)
    a.alert_opened(alert())
    state = json.loads(json.dumps(a.state()))
    a.close()
    b = make(rtbh=True, flowspec=True)
    b.restore(state)
    assert b.active() == {NODE: alert()} and b.counts["skipped.rtbh"] == 1
    b.alert_opened(alert())  # the scorer re-opens after its own restart: no re-ban
    b.alert_closed(alert("close"))
    b.alert_closed(alert("close"))
    assert lines(tmp_path / "dry.log") == [f"DRY-RUN announce {RTBH4}", f"DRY-RUN announce {FLOW4}",
                                           f"DRY-RUN withdraw {RTBH4}", f"DRY-RUN withdraw {FLOW4}"]
    assert b.active() == {}


def test_restore_adopts_new_alert_id(tmp_path: Path, make: Callable[..., Actions]) -> None:
    a = make(rtbh=True)
    a.alert_opened(alert())
    state = a.state()
    b = make(rtbh=True)
    b.restore(state)
    b.alert_opened(alert(alert_id="after-restart"))  # the scorer lost its ids: its new alert owns the ban
    b.alert_closed(alert("close", alert_id="after-restart"))
    assert b.active() == {}
    assert lines(tmp_path / "dry.log") == [f"DRY-RUN announce {RTBH4}", f"DRY-RUN withdraw {RTBH4}"]


def test_log_off_and_counts(tmp_path: Path, make: Callable[..., Actions]) -> None:
    seen: list[tuple[str, str, int]] = []
    a = make(lambda k, act, n: seen.append((k, act, n)), alert_log=None, rtbh=True)
    a.alert_opened(alert())
    assert not (tmp_path / "alerts.jsonl").exists()
    assert seen == [("skipped", "rtbh", 1)] and a.counts == {"skipped.rtbh": 1}
    b = make(alert_log=str(tmp_path / "no-such-dir" / "a.jsonl"))
    b.alert_opened(alert())  # an unwritable log is counted, never raised
    assert b.counts == {"failed.log": 1}


@pytest.mark.parametrize("field,value", [
    ("never_act", ["10.0.0.0/33"]), ("never_act", ["bogus"]), ("never_act", "10.0.0.0/8"), ("script_timeout", 0), ("webhook_timeout", -1),
    ("webhook_retries", -1), ("webhook_backoff", -0.5), ("max_active", -1), ("community", "65535"),
    ("community", "70000:1"), ("next_hop_v4", "100::1"), ("next_hop_v6", "192.0.2.1"), ("webhook_url", "ftp://x"),
])
def test_validate_names_field(field: str, value: Any) -> None:
    with pytest.raises(ValueError, match=field):
        ActionConfig(**{field: value}).validate()
    with pytest.raises(ValueError, match="exabgp_out"):
        ActionConfig(rtbh=True, enable_routing=True).validate()
    ActionConfig().validate()
