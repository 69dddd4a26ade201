"""The status endpoint of `netflowgen serve`: /metrics, /status.json, /healthz and 404 over plain
HTTP; the HTML page escapes what it shows; and headless Chromium renders the page (a screenshot
and the DOM after rendering: alert tables, receiver state, one SVG plot per node)."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import urllib.error
import urllib.request
from datetime import datetime, timedelta, timezone
from html.parser import HTMLParser
from pathlib import Path
from random import Random
from typing import Any, Callable, Iterator

import pytest
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families

from netflowgen.live.metrics import ServeMetrics
from netflowgen.live.status import StatusServer, attack_class, node_plot_svg, render_status_page

REPO_ROOT = Path(__file__).resolve().parents[2]
BROWSER_TIMEOUT_S = 60
NOW = datetime(2026, 12, 2, 13, 0, 30, tzinfo=timezone.utc)


def _iso(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def _series(rng: Random, n: int, base: float, attack_from: int | None) -> tuple[list[float], list[float]]:
    """A day-shaped packet rate with noise, and a score that rises when an attack starts."""
    pkts, score = [], []
    for i in range(n):
        p = base * (1 + 0.3 * math.sin(i / 40)) * rng.uniform(0.9, 1.1)
        s = rng.uniform(0.01, 0.08)
        if attack_from is not None and i >= attack_from:
            p *= 25
            s = rng.uniform(0.3, 0.6)
        pkts.append(p)
        score.append(s)
    return pkts, score


def fake_snapshot(hours: int = 3) -> dict[str, Any]:
    """A snapshot like the serve loop's: 40 nodes monitored, one alert open, three nodes plotted."""
    rng = Random(7)
    n = hours * 60
    last = NOW.replace(second=0) - timedelta(minutes=1)
    minutes = [int((last - timedelta(minutes=n - 1 - i)).timestamp() * 1000) for i in range(n)]
    nodes = []
    for node, customer, base, attack in (("203.0.113.7", "c1", 4000.0, n - 6), ("198.51.100.20", "c2", 25000.0, None),
                                         ("192.0.2.33", "c1", 900.0, None)):
        pkts, score = _series(rng, n, base, attack)
        nodes.append({"node": node, "customer": customer, "alarm": attack is not None, "minutes": minutes,
                      "score": score, "in_pkt": pkts, "theta": 0.2})
    nodes[2]["score"][50] = float("nan")  # a minute the model could not score: the line breaks
    opened = last - timedelta(minutes=5)
    open_alert = {"alert_id": "a-20261202-0007", "node": "203.0.113.7", "customer": "c1", "method": "Static-EWMA",
                  "opened_at": _iso(opened), "peak_score": 0.5812, "driver": "in_all_pkt", "alarmed_minutes": 6,
                  "attack": {"proto": 17, "src_port": 53, "share": 0.9}}
    recent = [dict(open_alert, closed_at=None),
              {"alert_id": "a-20261202-0006", "node": "198.51.100.20", "customer": "c2", "method": "Static-EWMA",
               "opened_at": _iso(last - timedelta(minutes=95)), "peak_score": 0.31, "driver": None, "alarmed_minutes": 4,
               "attack": {"proto": 6, "src_port": 443, "share": 0.62}, "closed_at": _iso(last - timedelta(minutes=80))},
              {"alert_id": "a-20261202-0005", "node": "192.0.2.33", "customer": "c1", "method": "Static-EWMA",
               "opened_at": _iso(last - timedelta(minutes=150)), "peak_score": 0.22, "driver": "in_udp_pkt",
               "alarmed_minutes": 2, "attack": None, "closed_at": _iso(last - timedelta(minutes=146))}]
    return {
        "started_at": _iso(NOW - timedelta(hours=3, minutes=1)), "listen": "127.0.0.1:2055", "now": _iso(NOW),
        "detector": {"method": "Static-EWMA", "theta": 0.2, "nodes": 40, "folder": "/srv/netflowgen/detector"},
        "collector": {"receiver_up": True, "restarts": 1, "last_rotation": _iso(last + timedelta(seconds=60)),
                      "flows_written": 1_234_567, "late": 12, "kernel_drops": 0, "undecodable": 0, "missing_minutes": 0,
                      "lost_seconds": 4.5},
        "last_closed_minute": _iso(last), "watermark_lag_s": 3.2,
        "open_alerts": [open_alert], "recent_alerts": recent, "nodes": nodes,
    }


@pytest.fixture
def serve() -> Iterator[Callable[[dict[str, Any]], StatusServer]]:
    """Start StatusServers on free loopback ports for snapshots; all stopped at the end."""
    started: list[StatusServer] = []

    def start(snap: dict[str, Any]) -> StatusServer:
        m = ServeMetrics()
        m.minutes_closed.inc(180)
        m.receiver_up.set(1)
        m.count("sent", "blackhole")
        s = StatusServer("127.0.0.1", 0, m, lambda: snap)
        s.start()
        started.append(s)
        return s

    yield start
    for s in started:
        s.stop()


def _get(url: str) -> tuple[int, str, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.headers.get("Content-Type", ""), r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type", ""), e.read()


# ---------------------------------------------------------------------------------------------
# plain HTTP


def test_metrics_json_health_and_404(serve: Callable[[dict[str, Any]], StatusServer]) -> None:
    snap = fake_snapshot()
    s = serve(snap)
    assert s.port > 0 and s.url == f"http://127.0.0.1:{s.port}/"

    code, ctype, body = _get(s.url + "metrics")
    assert code == 200 and ctype == CONTENT_TYPE_LATEST
    fams = {f.name: f for f in text_string_to_metric_families(body.decode())}
    assert "netflowgen_minutes_closed" in fams  # the parser drops the _total suffix of counters
    assert "netflowgen_minutes_closed_total 180.0" in body.decode()

    code, ctype, body = _get(s.url + "status.json")
    assert code == 200 and ctype.startswith("application/json")
    got = json.loads(body)
    assert got["nodes"][2]["score"][50] is None  # NaN travels as null (JSON has no NaN)
    snap["nodes"][2]["score"][50] = None
    assert got == snap

    assert _get(s.url + "healthz")[0:3:2] == (200, b"ok\n")
    for path in ("nope", "metrics/x", "index.html", "../etc/passwd"):
        assert _get(s.url + path)[0] == 404, path

    code, ctype, body = _get(s.url)
    assert code == 200 and ctype == "text/html; charset=utf-8"
    page = body.decode()
    assert '<meta http-equiv="refresh" content="10">' in page
    assert "<script" not in page and "http://" not in page.replace(s.url, "").split("<body>")[0]  # nothing external
    s.stop()
    s.stop()  # idempotent


def test_page_escapes_snapshot_strings(serve: Callable[[dict[str, Any]], StatusServer]) -> None:
    evil = '<script>alert("x")</script>'
    snap = fake_snapshot(hours=1)
    snap["nodes"][0]["node"] = evil
    snap["nodes"][0]["customer"] = evil
    snap["open_alerts"][0].update(node=evil, driver=evil, alert_id='"><img src=x onerror=alert(1)>')
    snap["recent_alerts"][0]["node"] = evil
    snap["listen"] = evil
    snap["detector"]["folder"] = evil
    s = serve(snap)
    _, _, body = _get(s.url)
    page = body.decode()
    assert "<script" not in page and "<img" not in page
    assert page.count("&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;") >= 6
    assert 'data-node="&lt;script&gt;' in page


def test_page_rendering_without_a_browser() -> None:
    snap = fake_snapshot(hours=1)
    snap["collector"].update(receiver_up=False, kernel_drops=7)
    snap["open_alerts"] = []
    page = render_status_page(snap)
    assert '<span id="receiver-status" class="down">receiver DOWN</span>' in page
    assert '<div class="tile warn" id="health-kernel-drops">' in page
    assert "No open alerts." in page
    # an empty or partial snapshot still renders
    assert "receiver state unknown" in render_status_page({})
    assert attack_class({"proto": 17, "src_port": 53, "share": 0.9}) == "udp/53 (90 %)"
    assert attack_class({"proto": 1, "src_port": None, "share": 0.5}) == "icmp (50 %)"
    assert attack_class(None) == "\u2013"
    assert "no data yet" in node_plot_svg({"node": "x", "minutes": [], "score": [], "in_pkt": []})
    one = node_plot_svg({"node": "x", "minutes": [0, 60_000, 240_000, 300_000], "score": [0.1, 0.2, 0.3, float("inf")],
                         "in_pkt": [1, 2, 3, 4], "theta": 0.25})
    assert one.count("<polyline") == 3  # score: a line, then a gap, a lone point; packets: two lines
    assert one.count("<circle") == 1 and 'class="theta-line"' in one


# ---------------------------------------------------------------------------------------------
# headless Chromium


class _Element:
    def __init__(self, tag: str, attrs: dict[str, str], parent: _Element | None) -> None:
        self.tag, self.attrs, self.parent = tag, attrs, parent
        self.children: list[_Element] = []
        self.texts: list[str] = []

    @property
    def classes(self) -> set[str]:
        return set(self.attrs.get("class", "").split())

    def iter(self) -> Iterator[_Element]:
        yield self
        for c in self.children:
            yield from c.iter()

    def find_all(self, tag: str | None = None, cls: str | None = None) -> list[_Element]:
        return [e for e in self.iter() if (tag is None or e.tag == tag) and (cls is None or cls in e.classes)]

    def by_id(self, id_: str) -> _Element:
        found = [e for e in self.iter() if e.attrs.get("id") == id_]
        assert len(found) == 1, f"expected one element with id={id_!r}, found {len(found)}"
        return found[0]

    def text(self) -> str:
        return " ".join(t for e in self.iter() for t in e.texts).strip()


class _Dom(HTMLParser):
    """The rendered DOM as a small element tree (stdlib only)."""

    VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.root = _Element("#document", {}, None)
        self._cur = self.root
        self.feed(text)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        e = _Element(tag, {k: v or "" for k, v in attrs}, self._cur)
        self._cur.children.append(e)
        if tag not in self.VOID:
            self._cur = e

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._cur.children.append(_Element(tag, {k: v or "" for k, v in attrs}, self._cur))

    def handle_endtag(self, tag: str) -> None:
        e: _Element | None = self._cur
        while e is not None and e.tag != tag:
            e = e.parent
        if e is not None and e.parent is not None:
            self._cur = e.parent

    def handle_data(self, data: str) -> None:
        if data.strip():
            self._cur.texts.append(data.strip())


def _chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("chromium")
    if exe is None:
        pytest.skip("chromium not found on PATH: run `make browser` (installs Debian's chromium) to render the status page")
    cmd = [exe, "--headless=new", "--no-sandbox", "--disable-gpu", f"--user-data-dir={tmp_path / 'chromium-profile'}",
           "--no-first-run", "--no-default-browser-check", "--disable-extensions", "--disable-dev-shm-usage", *args]
    # its own session, so a hung browser is killed with all its children (by this process group only)
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = p.communicate(timeout=BROWSER_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        p.communicate()
        pytest.fail(f"chromium did not finish within {BROWSER_TIMEOUT_S} s: {' '.join(cmd)}")
    assert p.returncode == 0, f"chromium failed ({p.returncode}): {err[-2000:]}"
    return subprocess.CompletedProcess(cmd, p.returncode, out, err)


def test_chromium_screenshot(serve: Callable[[dict[str, Any]], StatusServer], tmp_path: Path) -> None:
    s = serve(fake_snapshot())
    png = tmp_path / "status-page.png"
    _chromium(tmp_path, f"--screenshot={png}", "--window-size=1280,1600", "--hide-scrollbars", s.url)
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) > 10_000, f"a near-empty screenshot ({len(data)} bytes)"
    if os.environ.get("NETFLOWGEN_SAVE_SCREENSHOT") == "1":
        dest = REPO_ROOT / "docs" / "img" / "status-page.png"
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(png, dest)


def test_chromium_dom(serve: Callable[[dict[str, Any]], StatusServer], tmp_path: Path) -> None:
    snap = fake_snapshot()
    s = serve(snap)
    dom = _Dom(_chromium(tmp_path, "--dump-dom", s.url).stdout).root

    open_table = dom.by_id("open-alerts")
    assert open_table.tag == "table"
    rows = open_table.find_all("tr", "alert")
    assert len(rows) == 1
    assert "203.0.113.7" in [td.text() for td in rows[0].find_all("td", "node")]
    assert rows[0].find_all("td", "attack")[0].text() == "udp/53 (90 %)"
    assert len(dom.by_id("recent-alerts").find_all("tr", "alert")) == len(snap["recent_alerts"])

    status = dom.by_id("receiver-status")
    assert status.text() == "receiver up" and "up" in status.classes
    assert "Static-EWMA" in dom.by_id("detector").text()
    assert "127.0.0.1:2055" in dom.by_id("listen").text()

    plots = dom.find_all("svg", "node-plot")
    assert [p.attrs["data-node"] for p in plots] == [n["node"] for n in snap["nodes"]]
    for plot, node in zip(plots, snap["nodes"]):
        lines = plot.find_all("polyline")
        assert lines and all(len(pl.attrs["points"].split()) >= 2 for pl in lines)
        assert len(plot.find_all("line", "theta-line")) == 1
        assert ("alarm" in plot.classes) == node["alarm"]
    assert len(plots[2].find_all("polyline", "score-line")) == 2  # the NaN minute breaks the line
    alarmed = [f.attrs["data-node"] for f in dom.find_all("figure", "alarm")]
    assert alarmed == ["203.0.113.7"]
