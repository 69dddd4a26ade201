"""`netflowgen simulate --export`: the simulated flows, sent as NetFlow v9 / IPFIX datagrams to
Debian's nfcapd on loopback, come back from nfcapd's files exactly (counts scaled by the sampling
rate nfcapd learned from the exporter's options template)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

import pyarrow as pa
import pytest
from conftest import small_config
from nfcapd_roundtrip import stored_vs_sent
from typer.testing import CliRunner

from netflowgen.simulate import Simulation

KEY = ["ts_start", "src_ip", "dst_ip", "src_port", "dst_port", "proto", "packets"]
COMPARED = ["ts_start", "ts_end", "src_ip", "dst_ip", "src_port", "dst_port", "proto", "tcp_flags",
            "packets", "bytes"]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tiny_config():
    cfg = small_config(seed=11, days=1 / 24)  # one hour of 36 nodes, a few thousand records
    cfg.topology.scale_max = 10.0
    return cfg


@pytest.mark.parametrize("protocol", ["netflow-v9", "ipfix"])
def test_replay_round_trips_through_nfcapd(tmp_path: Path, protocol: str) -> None:
    if shutil.which("nfcapd") is None or shutil.which("nfdump") is None:
        pytest.skip("needs nfcapd and nfdump (apt-get install nfdump)")
    from netflowgen.cli.main import app
    cfg = _tiny_config()
    sent = pa.Table.from_batches(list(Simulation(cfg).batches()))
    assert 500 < sent.num_rows < 50_000
    (tmp_path / "c.toml").write_text(
        f"seed = 11\n[topology]\nnodes = 36\ncustomers = 8\nscale_max = 10.0\n"
        f"[time]\ndays = {1 / 24}\n[events]\nattacks_per_day = 60.0\nsurges_per_day = 40.0\n"
        f"outages_per_exporter_day = 2.0\n")
    port = _free_port()
    spool = tmp_path / "spool"
    spool.mkdir()
    proc = subprocess.Popen(["nfcapd", "-b", "127.0.0.1", "-p", str(port), "-w", str(spool), "-t", "60",
                             "-B", "4194304"],  # a big socket buffer: the test machine is busy
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        time.sleep(0.5)  # let nfcapd bind
        res = CliRunner().invoke(app, ["simulate", "--config", str(tmp_path / "c.toml"),
                                       "--export", protocol, "--to", f"127.0.0.1:{port}",
                                       "--max-pps", "1000"])  # gentle: 2 busy cores
        time.sleep(0.3)  # let nfcapd drain its socket
    finally:
        proc.terminate()
        log = proc.communicate(timeout=20)[0].decode()
    assert res.exit_code == 0, res.output
    assert f"sent {sent.num_rows:,} flows" in res.output
    diffs = stored_vs_sent(spool, sent, COMPARED, KEY)
    assert not diffs, (len(diffs), diffs[:5], log[-2000:])
