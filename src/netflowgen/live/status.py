"""The HTTP endpoint of `netflowgen serve`: Prometheus metrics and a localhost status page.

Routes (GET and HEAD; anything else is 404, other methods 501):

- `/metrics`      the Prometheus text exposition of a `ServeMetrics`
- `/`             a self-contained HTML status page (no script, no external CSS or fonts: it works
                  offline), refreshed by the browser every 10 s (meta refresh)
- `/status.json`  the snapshot the page is drawn from, as JSON
- `/healthz`      "ok"

The page is drawn from a snapshot dict the server asks for on every request (`snapshot()`; the
serve loop produces it, see docs/live.md). Its keys: started_at, listen, now, detector {method,
theta, nodes, folder}, collector {receiver_up, restarts, last_rotation, flows_written, late,
kernel_drops, undecodable, missing_minutes, lost_seconds}, last_closed_minute, watermark_lag_s,
open_alerts [{alert_id, node, customer, method, opened_at, peak_score, driver, alarmed_minutes,
attack {proto, src_port, share} | null}], recent_alerts (the same keys + closed_at, newest
first), nodes [{node, customer, alarm, minutes [epoch ms], score, in_pkt, theta}]. Missing keys
render as a dash; every string from the snapshot is HTML-escaped. The plots are inline SVG drawn
by `node_plot_svg` (no plotting library).

The server binds 127.0.0.1 unless told otherwise: the page shows customers' addresses and has no
authentication, so exposing it is the operator's explicit choice.
"""

from __future__ import annotations

import html
import json
import logging
import math
import socket
import threading
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Mapping, Sequence
from urllib.parse import urlsplit

from prometheus_client import CONTENT_TYPE_LATEST

from netflowgen.live.metrics import ServeMetrics

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
REFRESH_S = 10
MAX_RECENT_ALERTS = 50

# a page with no script at all: only inline styles (and inline SVG, which is part of the document)
CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

PROTO_NAMES = {1: "icmp", 6: "tcp", 17: "udp", 47: "gre", 50: "esp", 58: "icmpv6", 132: "sctp"}

DASH = "\u2013"


# ---------------------------------------------------------------------------------------------
# formatting helpers


def _esc(value: object) -> str:
    """HTML-escaped text of a snapshot value (a dash for None)."""
    return DASH if value is None else html.escape(str(value), quote=True)


def _finite(value: object) -> float | None:
    """`value` as a finite float, or None (None, NaN, inf, strings and other types)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    f = float(value)
    return f if math.isfinite(f) else None


def _num(value: object, fmt: str = "{:,.0f}") -> str:
    f = _finite(value)
    return DASH if f is None else html.escape(fmt.format(f))


def _compact(v: float) -> str:
    """1234 -> 1.2k, 3.4e6 -> 3.4M; small numbers with up to three significant digits."""
    a = abs(v)
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if a >= scale:
            return f"{v / scale:.3g}{suffix}"
    return f"{v:.3g}"


def _parse_time(value: object) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        t = datetime.fromisoformat(value)
    except ValueError:
        return None
    return t.replace(tzinfo=timezone.utc) if t.tzinfo is None else t.astimezone(timezone.utc)


def _ago(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s ago"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min ago"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h ago"
    return f"{seconds / 86400:.1f} d ago"


def _when(value: object, now: datetime | None) -> str:
    """An ISO time as `<time>` "YYYY-mm-dd HH:MM:SS UTC (N min ago)", without the date when it is
    the day of `now`; a dash for None; escaped text for what does not parse."""
    t = _parse_time(value)
    if t is None:
        return _esc(value)
    text = t.strftime("%H:%M:%S UTC" if now is not None and t.date() == now.date() else "%Y-%m-%d %H:%M:%S UTC")
    if now is not None and now >= t:
        text += f" ({_ago((now - t).total_seconds())})"
    return f'<time datetime="{_esc(value)}" title="{t.strftime("%Y-%m-%d %H:%M:%S UTC")}">{html.escape(text)}</time>'


def attack_class(attack: object) -> str:
    """{"proto": 17, "src_port": 53, "share": 0.9} -> "udp/53 (90 %)" (plain text, not escaped);
    a dash for None or an empty dict."""
    if not isinstance(attack, Mapping) or not attack:
        return DASH
    proto = attack.get("proto")
    name = PROTO_NAMES.get(proto, str(proto)) if isinstance(proto, int) else (str(proto) if proto is not None else "?")
    port = attack.get("src_port")
    text = name if port is None else f"{name}/{port}"
    share = _finite(attack.get("share"))
    if share is not None:
        text += f" ({share * 100:.0f} %)"
    return text


# ---------------------------------------------------------------------------------------------
# SVG plots

PLOT_W, PLOT_H = 600, 250
_LEFT, _RIGHT = 58, 12
_SCORE_TOP, _SCORE_BOTTOM = 22, 112
_PKT_TOP, _PKT_BOTTOM = 142, 222
_GAP_MS = 90_000  # a longer step between two minutes is a hole in the data: the line breaks there


def _segments(xs: Sequence[object], ys: Sequence[object]) -> list[list[tuple[float, float]]]:
    """Runs of consecutive finite (x, y) points; a non-finite value or a gap in x breaks a run."""
    runs: list[list[tuple[float, float]]] = []
    run: list[tuple[float, float]] = []
    last_x: float | None = None
    for xv, yv in zip(xs, ys):
        x, y = _finite(xv), _finite(yv)
        if x is None or y is None or (last_x is not None and x - last_x > _GAP_MS):
            if run:
                runs.append(run)
            run = []
        if x is not None and y is not None:
            run.append((x, y))
        last_x = x if x is not None else last_x
    if run:
        runs.append(run)
    return runs


def _axis_range(values: Sequence[float], extra: Sequence[float] = (), zero: bool = True) -> tuple[float, float]:
    pool = list(values) + list(extra) + ([0.0] if zero else [])
    if not pool:
        return 0.0, 1.0
    lo, hi = min(pool), max(pool)
    if hi - lo <= 0:
        hi = lo + (abs(lo) or 1.0)
    pad = (hi - lo) * 0.05
    return (lo if zero and lo == 0 else lo - pad), hi + pad


def _panel(runs: list[list[tuple[float, float]]], x0: float, x1: float, top: float, bottom: float,
           lo: float, hi: float, css: str) -> tuple[list[str], Callable[[float], float]]:
    """Polylines of `runs` scaled into the panel; also the y scale (value -> pixel)."""
    span_x = (x1 - x0) or 1.0

    def px(x: float) -> float:
        return _LEFT + (x - x0) / span_x * (PLOT_W - _LEFT - _RIGHT)

    def py(y: float) -> float:
        return bottom - (y - lo) / (hi - lo) * (bottom - top)

    parts = [f'<rect class="frame" x="{_LEFT}" y="{top}" width="{PLOT_W - _LEFT - _RIGHT}" height="{bottom - top}"/>']
    for v in (lo, hi):
        parts.append(f'<text class="tick" x="{_LEFT - 4}" y="{py(v) + 4:.1f}" text-anchor="end">{html.escape(_compact(v))}</text>')
    for run in runs:
        if len(run) == 1:
            x, y = run[0]
            parts.append(f'<circle class="{css}" cx="{px(x):.1f}" cy="{py(y):.1f}" r="1.5"/>')
        else:
            pts = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in run)
            parts.append(f'<polyline class="{css}" points="{pts}"/>')
    return parts, py


def node_plot_svg(node: Mapping[str, Any], default_theta: float | None = None) -> str:
    """One inline SVG for a node: its score over the last minutes with the theta line (top), and
    its incoming packets per minute (bottom), on a shared time axis. Alerting nodes draw in red."""
    minutes = list(node.get("minutes") or [])
    score = list(node.get("score") or [])
    in_pkt = list(node.get("in_pkt") or [])
    theta = _finite(node.get("theta"))
    if theta is None:
        theta = _finite(default_theta)
    alarm = bool(node.get("alarm"))
    name = _esc(node.get("node"))
    xs = [x for x in (_finite(m) for m in minutes) if x is not None]
    cls = "node-plot alarm" if alarm else "node-plot"
    head = (f'<svg class="{cls}" data-node="{name}" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {PLOT_W} {PLOT_H}" '
            f'width="{PLOT_W}" height="{PLOT_H}" role="img" aria-label="score and incoming packets of {name}">')
    if not xs:
        return head + f'<text class="nodata" x="{PLOT_W / 2}" y="{PLOT_H / 2}" text-anchor="middle">no data yet</text></svg>'
    x0, x1 = min(xs), max(xs)
    parts = [head]
    score_runs = _segments(minutes, score)
    svals = [y for run in score_runs for _, y in run]
    lo, hi = _axis_range(svals, [theta] if theta is not None else [])
    lines, py = _panel(score_runs, x0, x1, _SCORE_TOP, _SCORE_BOTTOM, lo, hi, "score-line")
    parts.append(f'<text class="title" x="{_LEFT}" y="{_SCORE_TOP - 7}">score</text>')
    parts.extend(lines)
    if theta is not None:
        y = py(theta)
        parts.append(f'<line class="theta-line" x1="{_LEFT}" x2="{PLOT_W - _RIGHT}" y1="{y:.1f}" y2="{y:.1f}"/>')
        parts.append(f'<text class="theta-label" x="{PLOT_W - _RIGHT - 2}" y="{y - 3:.1f}" text-anchor="end">'
                     f'\u03b8 = {html.escape(f"{theta:.4g}")}</text>')
    pkt_runs = _segments(minutes, in_pkt)
    pvals = [y for run in pkt_runs for _, y in run]
    lo, hi = _axis_range(pvals)
    lines, _ = _panel(pkt_runs, x0, x1, _PKT_TOP, _PKT_BOTTOM, lo, hi, "pkt-line")
    parts.append(f'<text class="title" x="{_LEFT}" y="{_PKT_TOP - 7}">incoming packets / min</text>')
    parts.extend(lines)
    for x, anchor in ((x0, "start"), (x1, "end")):
        label = datetime.fromtimestamp(x / 1000, timezone.utc).strftime("%H:%M UTC")
        xpos = _LEFT if anchor == "start" else PLOT_W - _RIGHT
        parts.append(f'<text class="tick" x="{xpos}" y="{_PKT_BOTTOM + 16}" text-anchor="{anchor}">{label}</text>')
    parts.append("</svg>")
    return "".join(parts)


# ---------------------------------------------------------------------------------------------
# the page

_CSS = """
:root { --ok: #1a7f37; --bad: #cf222e; --warn: #9a6700; --muted: #57606a; --line: #d0d7de; }
* { box-sizing: border-box; }
body { font: 14px/1.4 system-ui, -apple-system, "Segoe UI", "DejaVu Sans", sans-serif; margin: 0; color: #1f2328; background: #f6f8fa; }
header { background: #24292f; color: #fff; padding: 12px 20px; }
header h1 { font-size: 20px; margin: 0 0 4px; }
header p { margin: 0; color: #d0d7de; }
main { padding: 12px 20px 24px; }
h2 { font-size: 16px; margin: 20px 0 8px; }
.tiles { display: flex; flex-wrap: wrap; gap: 8px; }
.tile { background: #fff; border: 1px solid var(--line); border-radius: 6px; padding: 6px 12px; min-width: 120px; }
.tile .label { display: block; color: var(--muted); font-size: 12px; }
.tile .value { font-size: 18px; font-weight: 600; }
.tile.warn .value { color: var(--warn); }
.up { color: var(--ok); } .down { color: var(--bad); }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; background: #fff; border: 1px solid var(--line); width: 100%; }
th, td { text-align: left; padding: 4px 8px; border-bottom: 1px solid var(--line); white-space: nowrap; }
th { background: #eaeef2; font-weight: 600; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.empty td { color: var(--muted); font-style: italic; }
#open-alerts tbody tr:not(.empty) { background: #ffebe9; }
.nodes { display: flex; flex-wrap: wrap; gap: 10px; }
figure.node { margin: 0; background: #fff; border: 1px solid var(--line); border-radius: 6px; padding: 6px; }
figure.node.alarm { border: 2px solid var(--bad); background: #fff8f8; }
figcaption { font-weight: 600; margin: 0 0 2px 4px; }
figcaption .badge { color: #fff; background: var(--bad); border-radius: 4px; padding: 0 6px; font-size: 12px; margin-left: 6px; }
svg.node-plot { display: block; max-width: 100%; height: auto; }
svg .frame { fill: #fbfcfd; stroke: var(--line); }
svg text { font-size: 11px; fill: var(--muted); }
svg .title { fill: #1f2328; font-weight: 600; }
svg polyline { fill: none; stroke-width: 1.5; }
svg .score-line { stroke: #0969da; } svg .pkt-line { stroke: #8250df; }
svg.alarm .score-line { stroke: var(--bad); } svg circle { fill: #0969da; }
svg .theta-line { stroke: var(--warn); stroke-width: 1; stroke-dasharray: 5 3; }
svg .theta-label { fill: var(--warn); }
footer { color: var(--muted); padding: 0 20px 20px; font-size: 12px; }
footer a { color: inherit; }
"""


def _tile(tile_id: str, label: str, value: str, warn: bool = False) -> str:
    cls = "tile warn" if warn else "tile"
    return f'<div class="{cls}" id="{tile_id}"><span class="label">{label}</span><span class="value">{value}</span></div>'


def _positive(value: object) -> bool:
    f = _finite(value)
    return f is not None and f > 0


def _collector_html(snap: Mapping[str, Any], now: datetime | None) -> str:
    c = snap.get("collector") or {}
    up = c.get("receiver_up")
    if up is None:
        status = '<span id="receiver-status" class="unknown">receiver state unknown</span>'
    elif up:
        status = '<span id="receiver-status" class="up">receiver up</span>'
    else:
        status = '<span id="receiver-status" class="down">receiver DOWN</span>'
    lag = _finite(snap.get("watermark_lag_s"))
    tiles = [
        _tile("health-receiver", "receiver", status),
        _tile("health-restarts", "restarts", _num(c.get("restarts")), _positive(c.get("restarts"))),
        _tile("health-flows-written", "flows written", _num(c.get("flows_written"))),
        _tile("health-kernel-drops", "kernel drops (datagrams)", _num(c.get("kernel_drops")), _positive(c.get("kernel_drops"))),
        _tile("health-undecodable", "undecodable datagrams", _num(c.get("undecodable")), _positive(c.get("undecodable"))),
        _tile("health-late", "late flows", _num(c.get("late")), _positive(c.get("late"))),
        _tile("health-missing", "missing minutes", _num(c.get("missing_minutes")), _positive(c.get("missing_minutes"))),
        _tile("health-lost", "receiver lost", _num(c.get("lost_seconds"), "{:,.1f} s"), _positive(c.get("lost_seconds"))),
        _tile("health-watermark-lag", "watermark lag", _num(lag, "{:,.1f} s"), lag is not None and lag > 120),
        _tile("health-last-minute", "last closed minute", _when(snap.get("last_closed_minute"), now)),
        _tile("health-last-rotation", "last rotation", _when(c.get("last_rotation"), now)),
    ]
    return f'<section id="collector"><h2>Collector</h2><div class="tiles" id="collector-health">{"".join(tiles)}</div></section>'


_ALERT_COLUMNS = ("node", "customer", "method", "since", "alarmed minutes", "peak score", "driver", "attack")


def _alert_cells(a: Mapping[str, Any], now: datetime | None) -> list[str]:
    return [
        f'<td class="node">{_esc(a.get("node"))}</td>',
        f'<td class="customer">{_esc(a.get("customer"))}</td>',
        f'<td class="method">{_esc(a.get("method"))}</td>',
        f'<td class="since">{_when(a.get("opened_at"), now)}</td>',
        f'<td class="num alarmed">{_num(a.get("alarmed_minutes"))}</td>',
        f'<td class="num peak">{_num(a.get("peak_score"), "{:.4g}")}</td>',
        f'<td class="driver">{_esc(a.get("driver"))}</td>',
        f'<td class="attack">{html.escape(attack_class(a.get("attack")))}</td>',
    ]


def _alerts_table(table_id: str, alerts: Sequence[Mapping[str, Any]], now: datetime | None, closed: bool, empty: str) -> str:
    cols = list(_ALERT_COLUMNS) + (["closed"] if closed else [])
    head = "".join(f"<th>{c}</th>" for c in cols)
    rows = []
    for a in alerts:
        if not isinstance(a, Mapping):
            continue
        cells = _alert_cells(a, now)
        if closed:
            closed_at = a.get("closed_at")
            cells.append(f'<td class="closed">{"still open" if closed_at is None else _when(closed_at, now)}</td>')
        rows.append(f'<tr class="alert" data-alert-id="{_esc(a.get("alert_id"))}" data-node="{_esc(a.get("node"))}">{"".join(cells)}</tr>')
    if not rows:
        rows.append(f'<tr class="empty"><td colspan="{len(cols)}">{empty}</td></tr>')
    return (f'<div class="scroll"><table id="{table_id}"><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table></div>')


def _nodes_html(snap: Mapping[str, Any]) -> str:
    det = snap.get("detector") or {}
    figures = []
    for n in snap.get("nodes") or []:
        if not isinstance(n, Mapping):
            continue
        alarm = bool(n.get("alarm"))
        badge = '<span class="badge">ALARM</span>' if alarm else ""
        customer = f" \u00b7 {_esc(n.get('customer'))}" if n.get("customer") is not None else ""
        figures.append(f'<figure class="node{" alarm" if alarm else ""}" data-node="{_esc(n.get("node"))}">'
                       f'<figcaption>{_esc(n.get("node"))}{customer}{badge}</figcaption>'
                       f'{node_plot_svg(n, det.get("theta"))}</figure>')
    body = "".join(figures) or '<p class="empty">No node to plot yet.</p>'
    return f'<section id="nodes"><h2>Nodes</h2><div class="nodes">{body}</div></section>'


def render_status_page(snap: Mapping[str, Any]) -> str:
    """The whole HTML status page for one snapshot (see the module docstring for its keys)."""
    now = _parse_time(snap.get("now"))
    det = snap.get("detector") or {}
    open_alerts = [a for a in snap.get("open_alerts") or [] if isinstance(a, Mapping)]
    recent = [a for a in snap.get("recent_alerts") or [] if isinstance(a, Mapping)][:MAX_RECENT_ALERTS]
    title = f"netflowgen serve \u2013 {len(open_alerts)} open alert{'' if len(open_alerts) == 1 else 's'}"
    detector = (f'<span class="method">{_esc(det.get("method"))}</span> \u00b7 \u03b8 = {_esc(det.get("theta"))} \u00b7 '
                f'{_num(det.get("nodes"))} nodes \u00b7 folder <code>{_esc(det.get("folder"))}</code>')
    return "".join([
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">",
        f'<meta http-equiv="refresh" content="{REFRESH_S}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>",
        '<header><h1>netflowgen serve</h1>',
        f'<p id="detector">{detector}</p>',
        f'<p id="listen">listening on <code>{_esc(snap.get("listen"))}</code> \u00b7 started {_when(snap.get("started_at"), now)}</p>',
        "</header><main>",
        _collector_html(snap, now),
        f'<section><h2>Open alerts ({len(open_alerts)})</h2>',
        _alerts_table("open-alerts", open_alerts, now, closed=False, empty="No open alerts."),
        "</section>",
        f'<section><h2>Recent alerts ({len(recent)})</h2>',
        _alerts_table("recent-alerts", recent, now, closed=True, empty="No alert yet."),
        "</section>",
        _nodes_html(snap),
        "</main>",
        f'<footer id="footer">snapshot at {_when(snap.get("now"), None)} \u00b7 this page reloads every {REFRESH_S} s \u00b7 '
        '<a href="/metrics">/metrics</a> \u00b7 <a href="/status.json">/status.json</a> \u00b7 <a href="/healthz">/healthz</a></footer>',
        "</body></html>\n",
    ])


def _json_safe(value: Any) -> Any:
    """The snapshot with NaN and infinities as null (JSON has neither)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


# ---------------------------------------------------------------------------------------------
# the server


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    status: StatusServer


class _Server6(_Server):
    address_family = socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "netflowgen-status"

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("status %s: " + format, self.client_address[0], *args)

    def _reply(self, code: int, ctype: str, body: bytes, extra: Mapping[str, str] | None = None) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _route(self) -> None:
        path = urlsplit(self.path).path
        status = self.server.status
        try:
            if path == "/metrics":
                self._reply(200, CONTENT_TYPE_LATEST, status.metrics.exposition())
            elif path == "/":
                page = render_status_page(status.snapshot())
                self._reply(200, "text/html; charset=utf-8", page.encode(), {"Content-Security-Policy": CSP})
            elif path == "/status.json":
                body = json.dumps(_json_safe(status.snapshot()), default=str, allow_nan=False)
                self._reply(200, "application/json", body.encode())
            elif path == "/healthz":
                self._reply(200, "text/plain; charset=utf-8", b"ok\n")
            else:
                self._reply(404, "text/plain; charset=utf-8", b"not found\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client went away
        except Exception as e:  # a broken snapshot must not take the endpoint down
            log.exception("status page: %s failed", path)
            self._reply(500, "text/plain; charset=utf-8", f"internal error: {type(e).__name__}\n".encode())

    def do_GET(self) -> None:
        self._route()

    def do_HEAD(self) -> None:
        self._route()


class StatusServer:
    """/metrics, the status page, /status.json and /healthz on host:port, served by a
    ThreadingHTTPServer in a daemon thread. Port 0 picks a free port (read `port` after start)."""

    port: int
    url: str

    def __init__(self, host: str, port: int, metrics: ServeMetrics, snapshot: Callable[[], dict[str, Any]]) -> None:
        self.host = host or DEFAULT_HOST
        self.port = port
        self.metrics = metrics
        self.snapshot = snapshot
        self.url = self._url()
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    def _url(self) -> str:
        host = self.host
        if host in ("0.0.0.0", ""):
            host = "127.0.0.1"
        elif host == "::":
            host = "::1"
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}/"

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Bind and serve in a daemon thread; OSError (with the address) when the port is taken."""
        if self._httpd is not None:
            raise RuntimeError("the status server is already started")
        cls = _Server6 if ":" in self.host else _Server
        try:
            httpd = cls((self.host, self.port), _Handler)
        except OSError as e:
            raise OSError(e.errno, f"status page: cannot listen on {self.host}:{self.port}: {e.strerror}") from e
        httpd.status = self
        self._httpd = httpd
        self.port = int(httpd.server_address[1])
        self.url = self._url()
        self._thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="netflowgen-status", daemon=True)
        self._thread.start()
        log.info("status page on %s (metrics at %smetrics)", self.url, self.url)

    def stop(self) -> None:
        """Stop serving and close the socket; a no-op when not started (or already stopped)."""
        httpd, thread = self._httpd, self._thread
        self._httpd, self._thread = None, None
        if httpd is None:
            return
        httpd.shutdown()
        httpd.server_close()
        if thread is not None:
            thread.join(timeout=5)

    def __enter__(self) -> StatusServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
