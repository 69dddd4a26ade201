"""`netflowgen serve` end to end on loopback: a simulated ISP replayed as IPFIX into a running serve
that is killed with SIGKILL half way and started again (its nfcapd killed too). The minute rows must
equal batch `features` on the same flows, the alerts `netflowgen detect` on those rows, the webhook
and the dry-run ExaBGP log must get one ban per alert, and a scrape must show the counts."""

from __future__ import annotations

import http.server
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import polars as pl
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "live"))
from live_helpers import need  # noqa: E402

from netflowgen.detect.cores import OperatorCore, ScoringData  # noqa: E402
from netflowgen.detect.cube import NodeMinuteCube  # noqa: E402
from netflowgen.detect.detector import Detector  # noqa: E402

CLI = [sys.executable, "-m", "netflowgen.cli.main"]
SIM = ["--days", "0.125", "--customers", "3", "--nodes", "12", "--attacks-per-day", "100", "--seed", "3"]


def free_port(kind: int = socket.SOCK_DGRAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Hook(http.server.BaseHTTPRequestHandler):
    received: list[dict] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        body = self.rfile.read(int(self.headers["Content-Length"]))
        Hook.received.append(json.loads(body))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def start_serve(d: Path, port: int, mport: int, hook: str) -> subprocess.Popen:
    cmd = CLI + ["serve", "--detector", str(d / "det"), "--customers", str(d / "sim" / "customers.csv"),
                 "--listen", f"127.0.0.1:{port}", "--metrics", f"127.0.0.1:{mport}", "--state", str(d / "state"),
                 "--lateness", "30", "--clear-after", "5", "--webhook", hook, "--rtbh", "--flowspec",
                 "--config", str(d / "serve.toml")]
    log = open(d / "serve.log", "a")
    p = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if "serving" in (d / "serve.log").read_text():
            return p
        if p.poll() is not None:
            raise AssertionError((d / "serve.log").read_text()[-2000:])
        time.sleep(0.1)
    p.kill()
    raise AssertionError("serve did not start: " + (d / "serve.log").read_text()[-2000:])


def nfcapd_pid(state: Path) -> int:
    return int((state / "collector" / "nfcapd.pid").read_text())


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    need("nfcapd", "nfdump")
    d = tmp_path_factory.mktemp("serve")
    subprocess.run(CLI + ["simulate", *SIM, "--out", str(d / "sim")], check=True, capture_output=True, timeout=120)
    subprocess.run(CLI + ["features", str(d / "sim" / "flows.parquet"), "--customers", str(d / "sim" / "customers.csv"),
                          "--missing-by", "global", "--out", str(d / "sim-features.parquet")],
                   check=True, capture_output=True, timeout=120)
    cube = NodeMinuteCube.read(d / "sim-features.parquet")
    L = 16
    det = Detector("Static-EWMA", OperatorCore("Static-EWMA", 2 * L, L // 2), L, 4, theta=0.05)
    det.calibrate(ScoringData(cube), 0, 100, "training")
    det.save(d / "det")
    (d / "serve.toml").write_text("[serve]\nrotate = 2\npoll = 0.2\n")
    Hook.received = []
    hook = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    port, mport = free_port(), free_port(socket.SOCK_STREAM)
    url = f"http://127.0.0.1:{hook.server_address[1]}/"
    serve = start_serve(d, port, mport, url)
    replay = subprocess.Popen(CLI + ["simulate", *SIM, "--export", "ipfix", "--to", f"127.0.0.1:{port}", "--speed", "600"],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    restarted = {}
    try:
        time.sleep(6)  # a third of the replay
        os.kill(nfcapd_pid(d / "state"), signal.SIGKILL)  # the receiver dies: serve restarts it
        time.sleep(4)
        restarted["nfcapd"] = nfcapd_pid(d / "state")
        os.killpg(serve.pid, signal.SIGKILL)  # serve itself dies (its nfcapd is orphaned)
        serve.wait(10)
        serve = start_serve(d, port, mport, url)  # same state folder: resumes
        replay.wait(120)
        time.sleep(3)
        scrape = urllib.request.urlopen(f"http://127.0.0.1:{mport}/metrics", timeout=10).read().decode()
        status = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{mport}/status.json", timeout=10).read())
    finally:
        if replay.poll() is None:
            replay.kill()
        serve.send_signal(signal.SIGTERM)
        try:
            serve.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(serve.pid, signal.SIGKILL)
        hook.shutdown()
    assert serve.returncode == 0, (d / "serve.log").read_text()[-3000:]
    return {"dir": d, "scrape": scrape, "status": status, "replay": replay.stdout.read() if replay.stdout else "",
            "restarted": restarted}


def _metric(scrape: str, name: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in scrape.splitlines()
               if line.startswith(name) and not line.startswith("#"))


def test_minute_rows_equal_batch_features_on_the_same_flows(served) -> None:
    d = served["dir"]
    files = sorted((d / "state" / "collector").glob("flows-*.parquet"))
    subprocess.run(CLI + ["features", *map(str, files), "--customers", str(d / "sim" / "customers.csv"),
                          "--missing-by", "global", "--out", str(d / "batch.parquet")], check=True, capture_output=True, timeout=120)
    batch = pl.read_parquet(d / "batch.parquet")
    live = pl.concat([pl.read_parquet(p) for p in sorted((d / "state" / "rows").glob("rows-*.parquet"))])
    assert live.select("node", "minute").is_duplicated().sum() == 0, "a minute was closed twice across the restart"
    joined = batch.join(live, on=["node", "minute"], how="full", suffix="_live", coalesce=True)
    only_batch = joined.filter(pl.col("missing_live").is_null())
    # rows serve never wrote are the minutes before a node's first flow: zero traffic in batch too
    assert only_batch.select(pl.sum_horizontal(pl.col("in_all_pkt", "out_all_pkt"))).to_series().sum() == 0
    assert joined.filter(pl.col("missing").is_null()).height == 0, "serve wrote rows batch does not have"
    both = joined.filter(pl.col("missing_live").is_not_null())
    assert both.height > 1500
    for col in [c for c in batch.columns if c not in ("node", "minute", "missing")]:
        assert (both[col] == both[f"{col}_live"]).all(), col
    # missing: the batch rule, except the minutes serve knows its receiver was down (a loss)
    lost = [e for e in _events(d) if e["event"] == "receiver restarted" and "lost_from" in e]
    in_gap = pl.lit(False)
    for e in lost:
        lo, hi = (pl.lit(e[k]).str.to_datetime(time_zone="UTC").dt.cast_time_unit("ms") for k in ("lost_from", "lost_to"))
        in_gap = in_gap | pl.col("minute").is_between(lo, hi)
    gap = both.filter(in_gap)
    assert gap["missing_live"].all()
    rest = both.filter(~in_gap)
    assert (rest["missing"] == rest["missing_live"]).all()


def _events(d: Path) -> list[dict]:
    return [json.loads(x) for x in (d / "state" / "events.jsonl").read_text().splitlines()]


def test_alerts_equal_detect_on_the_rows(served) -> None:
    d = served["dir"]
    # batch features on serve's flow files (the rows test shows serve's rows equal them)
    files = sorted((d / "state" / "collector").glob("flows-*.parquet"))
    subprocess.run(CLI + ["features", *map(str, files), "--customers", str(d / "sim" / "customers.csv"),
                          "--missing-by", "global", "--out", str(d / "batch2.parquet")], check=True, capture_output=True, timeout=120)
    r = subprocess.run(CLI + ["detect", "--detector", str(d / "det"), str(d / "batch2.parquet"), "--out", str(d / "detect.csv"),
                              "--clear-after", "5"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    want = pl.read_csv(d / "detect.csv").select("node", "opened_at", "closed_at", "alarmed_minutes", "reopened")
    got = pl.read_csv(d / "state" / "alerts.csv").select("node", "opened_at", "closed_at", "alarmed_minutes", "reopened")
    assert want.height >= 2, "the replay raised too few alerts to compare"
    assert got.sort(["opened_at", "node"]).rows() == want.sort(["opened_at", "node"]).rows()


def test_actions_got_one_ban_per_alert_across_the_restart(served) -> None:
    d = served["dir"]
    alerts = pl.read_csv(d / "state" / "alerts.csv")
    opens = [e for e in Hook.received if e["event"] == "open"]
    ids = [e["alert_id"] for e in opens]
    assert len(ids) == len(set(ids)) == alerts.height, (ids, alerts.height)
    closes = [e["alert_id"] for e in Hook.received if e["event"] == "close"]
    assert len(closes) == len(set(closes)) == alerts.filter(pl.col("closed_at").is_not_null()).height
    assert set(closes) <= set(ids)
    dry = (d / "state" / "exabgp-dry-run.log").read_text().splitlines()
    rtbh = [x for x in dry if "announce route" in x]
    assert len(rtbh) == alerts.height and all("community [65535:666]" in x and x.startswith("DRY-RUN") for x in rtbh)
    assert sum("withdraw route" in x for x in dry) == alerts.filter(pl.col("closed_at").is_not_null()).height
    log = [json.loads(x) for x in (d / "state" / "alerts.jsonl").read_text().splitlines()]
    assert sum(e["event"] == "open" for e in log) == alerts.height


def test_scrape_and_status_show_the_counts(served) -> None:
    s = served["scrape"]
    assert _metric(s, "netflowgen_minutes_closed_total") > 0
    assert _metric(s, "netflowgen_flows_written_total") > 0
    assert _metric(s, "netflowgen_datagrams_received_total") > 0
    assert _metric(s, "netflowgen_nodes_scored") == 12
    assert _metric(s, "netflowgen_flows_late_total") == 0
    st = served["status"]
    assert st["detector"]["method"] == "Static-EWMA" and st["collector"]["receiver_up"]
    assert st["nodes"] and all(len(n["score"]) == len(n["minutes"]) > 0 for n in st["nodes"])


def test_a_killed_receiver_was_restarted_and_its_gap_recorded(served) -> None:
    d = served["dir"]
    restarts = [e for e in _events(d) if e["event"] == "receiver restarted"]
    assert restarts and restarts[0]["reason"] == "exited" and restarts[0]["lost_seconds"] >= 0
    assert served["restarted"]["nfcapd"] != 0
