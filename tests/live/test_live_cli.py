"""`netflowgen replay` from the command line, into the collector: settings, outputs, errors."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pyarrow.parquet as pq
from live_helpers import need
from test_live_roundtrip import synthetic_flows
from typer.testing import CliRunner

from netflowgen.cli.main import app
from netflowgen.live import Collector

runner = CliRunner()


def test_replay_cli_into_collector(collector: Collector, tmp_path: Path) -> None:
    flows = tmp_path / "flows.parquet"
    pq.write_table(synthetic_flows(300), flows)
    stats = tmp_path / "sent.json"
    res = runner.invoke(app, ["replay", str(flows), "--to", f"127.0.0.1:{collector.port}",
                              "--protocol", "netflow-v9", "--stats", str(stats)])
    assert res.exit_code == 0, res.output
    assert "sent 300 flows" in res.output
    sent = json.loads(stats.read_text())
    assert sent["flows"] == 300 and sent["protocol"] == "netflow-v9" and sent["rejected"] == 0
    saved = tomllib.loads((tmp_path / "sent.json.config.toml").read_text())
    assert saved["protocol"] == "netflow-v9" and saved["to"].endswith(str(collector.port))
    rotations = collector.stop()
    assert sum(r.flows_written for r in rotations) == 300


def test_replay_cli_settings_and_errors(tmp_path: Path) -> None:
    cfg = tmp_path / "replay.toml"
    cfg.write_text('[replay]\nprotocol = "netflow-v9"\nspeed = 30\n')
    res = runner.invoke(app, ["replay", "x.parquet", "--config", str(cfg), "--mtu", "9000", "--dump"])
    assert res.exit_code == 0, res.output
    dumped = tomllib.loads(res.output)
    assert dumped["protocol"] == "netflow-v9" and dumped["speed"] == 30.0 and dumped["mtu"] == 9000
    bad = runner.invoke(app, ["replay", "x.parquet", "--protocol", "netflow-v5"])
    assert bad.exit_code == 2 and "netflow-v5" in bad.output
    bad_to = runner.invoke(app, ["replay", "x.parquet", "--to", "localhost"])
    assert bad_to.exit_code == 2 and "HOST:PORT" in bad_to.output


def test_collect_cli_dump_reads_config_table(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('[collect]\nrotate = 300\nsampling = 100\n')
    res = runner.invoke(app, ["collect", "--config", str(cfg), "--listen", "0.0.0.0:9995", "--dump"])
    assert res.exit_code == 0, res.output
    dumped = tomllib.loads(res.output)
    assert dumped == {**dumped, "rotate": 300, "sampling": 100, "listen": "0.0.0.0:9995"}
    bad = runner.invoke(app, ["collect", "--rotate", "1"])
    assert bad.exit_code == 2


def test_collect_cli_restarts_a_dead_nfcapd(tmp_path: Path, free_port: int) -> None:
    """If nfcapd dies under it, `collect` restarts it (and says so) instead of hanging or going
    on deaf; the restart is in the summary."""
    import json
    import os
    import select
    import signal
    import subprocess
    import sys
    import time

    need("nfcapd", "nfdump")
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "netflowgen.cli.main", "collect", "--listen",
                             f"127.0.0.1:{free_port}", "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 20)  # bounded wait: socket bound
        first = proc.stdout.readline() if ready else ""
        assert first.startswith("listening on"), first
        old = int((out / "nfcapd.pid").read_text())
        os.kill(old, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and int((out / "nfcapd.pid").read_text()) == old:
            time.sleep(0.1)
        new = int((out / "nfcapd.pid").read_text())
        assert new != old and os.path.exists(f"/proc/{new}")
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0 and "receiver restarted (exited)" in output, output
    assert json.loads((out / "collector-summary.json").read_text())["receiver_restarts"] == {"exited": 1}
