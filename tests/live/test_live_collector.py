"""The live collector against a real exporter: softflowd reads a pcap and exports NetFlow v5, v9 or
IPFIX to our nfcapd-backed collector on loopback; the canonical Parquet must hold those flows."""

from __future__ import annotations

import json
import select
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from live_helpers import TINY_START, need, run_softflowd

from netflowgen.live import Collector, CollectorConfig, CollectorError
from netflowgen.schema import FLOW_SCHEMA

# softflowd's NetFlow v9 header carries the export time in whole seconds while sysUptime keeps the
# milliseconds, so its v9 flow times come out early by the sub-second part of the export time.
V9_CLOCK_SLACK_MS = 1000


def _read(collector: Collector) -> pa.Table:
    tables = [pq.read_table(r.parquet) for r in collector.rotations if r.parquet]
    assert tables, [r.summary() for r in collector.rotations]
    table = pa.concat_tables(tables)
    assert table.schema.equals(FLOW_SCHEMA, check_metadata=False)
    return table


def _pcap_time_range_ms(path: Path) -> tuple[int, int, int]:
    """(first, last packet time in ms, packets) of a classic little-endian µs pcap."""
    data = path.read_bytes()
    assert data[:4] == b"\xd4\xc3\xb2\xa1", "test expects a classic little-endian pcap"
    pos, times = 24, []
    while pos + 16 <= len(data):
        sec, usec, incl, _ = struct.unpack_from("<IIII", data, pos)
        times.append(sec * 1000 + usec // 1000)
        pos += 16 + incl
    return min(times), max(times), len(times)


@pytest.mark.parametrize("version", ["5", "9", "10"])
def test_softflowd_tiny_pcap_every_version(collector: Collector, tiny_pcap, version: str) -> None:
    pcap, truth = tiny_pcap
    sent = run_softflowd(pcap, collector.port, version)
    rotations = collector.stop()
    # one file, or two when the run crossed nfcapd's 60 s rotation boundary (the stop closes the last)
    assert 1 <= len(rotations) <= 2 and all(r.error is None for r in rotations)
    table = _read(collector)
    # every record softflowd exported arrived, nothing lost on the way
    assert table.num_rows == sent["records"] == sum(r.nfcapd_flows for r in rotations)
    assert sum(r.kernel_drops for r in rotations) == 0 and sum(r.bad_packets for r in rotations) == 0
    assert pc.sum(table["packets"]).as_py() == truth["packets"] == sent["packets"]
    assert pc.sum(table["bytes"]).as_py() == truth["bytes"]
    assert set(table["proto"].to_pylist()) == truth["protos"]
    assert set(table["sampling_rate"].to_pylist()) == {1}
    rows = {(r["src_ip"], r["dst_ip"], r["src_port"], r["dst_port"], r["proto"], r["tcp_flags"],
             r["packets"], r["bytes"]) for r in table.to_pylist()}
    assert rows == {("10.0.0.1", "10.0.0.2", 40000, 80, 6, 27, 4, 260),  # SYN, ACK, PSH-ACK, FIN-ACK
                    ("10.0.0.2", "10.0.0.1", 80, 40000, 6, 18, 1, 40),  # SYN-ACK
                    ("10.0.0.3", "10.0.0.53", 5353, 53, 17, 0, 1, 68),
                    ("10.0.0.53", "10.0.0.3", 53, 5353, 17, 0, 1, 148),
                    ("10.0.0.4", "10.0.0.123", 123, 123, 17, 0, 2, 152)}
    starts = table["ts_start"].cast(pa.int64()).to_pylist()
    ends = table["ts_end"].cast(pa.int64()).to_pylist()
    slack = V9_CLOCK_SLACK_MS if version == "9" else 0
    assert all(truth["first_ms"] - slack <= s <= e <= truth["last_ms"] for s, e in zip(starts, ends))
    if version != "9":  # exact to the ms: the TCP flow starts at the first packet
        assert min(starts) == TINY_START * 1000
    written = 0
    for r in (r for r in rotations if r.parquet):
        stats = json.loads(Path(r.parquet).with_name(Path(r.parquet).name.replace(".parquet", ".stats.json")).read_text())
        assert stats["sequence_failures"] is not None
        written += stats["flows_written"]
    assert written == table.num_rows


@pytest.mark.real
@pytest.mark.parametrize("version", ["5", "9", "10"])
def test_softflowd_real_pcap(collector: Collector, real_data: Path, version: str) -> None:
    pcap = real_data / "stopddos" / "pcap" / "amp.UDP.isakmp.pcap"  # 3,984 UDP packets, 1 MB
    if not pcap.exists():
        pytest.skip(f"{pcap} not present")
    first_ms, last_ms, n_packets = _pcap_time_range_ms(pcap)
    sent = run_softflowd(pcap, collector.port, version)
    rotations = collector.stop()
    table = _read(collector)
    rejected = sum(r.rejected for r in rotations)
    # what arrived is exactly what softflowd sent; records nfcapd stored with an unknown start
    # (v5/v9 flows at the exporter's boot instant) are counted as rejects, not dropped silently
    assert table.num_rows + rejected == sent["records"] == sum(r.nfcapd_flows for r in rotations)
    assert sum(r.kernel_drops or 0 for r in rotations) == 0
    if rejected == 0:
        assert pc.sum(table["packets"]).as_py() == n_packets == sent["packets"]
    else:
        assert version in ("5", "9")
        assert pc.sum(table["packets"]).as_py() < n_packets
    slack = V9_CLOCK_SLACK_MS if version == "9" else 0
    assert pc.min(table["ts_start"].cast(pa.int64())).as_py() >= first_ms - slack
    assert pc.max(table["ts_end"].cast(pa.int64())).as_py() <= last_ms
    assert set(table["proto"].to_pylist()) == {17}


def test_stop_flushes_the_open_file_and_empty_rotation(tmp_path: Path, free_port: int) -> None:
    """Short rotations: a quiet period gives an empty (not missing) Parquet file; stop() closes
    and converts the file nfcapd was writing."""
    need("nfcapd", "nfdump")
    from netflowgen.export import replay
    c = Collector(CollectorConfig(listen=f"127.0.0.1:{free_port}", out=str(tmp_path), rotate=2,
                                  poll=0.1))
    with c:
        deadline = time.monotonic() + 8
        while not c.rotations and time.monotonic() < deadline:  # at least one quiet rotation
            time.sleep(0.1)
        batch = pa.table({"ts_start": pa.array([1_700_000_000_000], pa.timestamp("ms", tz="UTC")),
                          "ts_end": pa.array([1_700_000_000_500], pa.timestamp("ms", tz="UTC")),
                          "src_ip": ["10.9.0.1"], "dst_ip": ["10.9.0.2"], "src_port": [1],
                          "dst_port": [2], "proto": [17], "tcp_flags": [0], "packets": [3],
                          "bytes": [300]})
        replay([batch], ("127.0.0.1", free_port), "ipfix")
    assert c.rotations and c.rotations[0].flows_written == 0 and c.rotations[0].error is None
    assert pq.read_table(c.rotations[0].parquet).num_rows == 0
    assert sum(r.flows_written for r in c.rotations) == 1  # the last, still open file was flushed
    summary = json.loads((tmp_path / "collector-summary.json").read_text())
    assert summary["flows_written"] == 1 and summary["files"] == len(c.rotations)
    assert not c.running


def test_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    need("nfcapd")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        c = Collector(CollectorConfig(listen=f"127.0.0.1:{port}", out=str(tmp_path)))
        with pytest.raises(CollectorError, match="Address already in use"):
            c.start(timeout=3)
    assert not c.running


def test_bad_settings_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="HOST:PORT"):
        Collector(CollectorConfig(listen="localhost", out=str(tmp_path)))
    with pytest.raises(ValueError, match="rotate"):
        Collector(CollectorConfig(listen="127.0.0.1:2055", out=str(tmp_path), rotate=1))


def test_cli_collect_stops_cleanly_on_sigint(tmp_path: Path, free_port: int, tiny_pcap) -> None:
    """`netflowgen collect` in a subprocess: flows in, SIGINT, last file flushed, config saved."""
    need("nfcapd", "nfdump", "softflowd")
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "netflowgen.cli.main", "collect", "--listen",
                             f"127.0.0.1:{free_port}", "--out", str(out), "--rotate", "60"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 20)  # bounded wait for the first line
        first = proc.stdout.readline() if ready else ""
        assert first.startswith("listening on"), first
        run_softflowd(tiny_pcap[0], free_port, "9")
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, output
    files = list(out.glob("flows-*.parquet"))
    assert len(files) == 1 and pq.read_table(files[0]).num_rows == 5, output
    assert (out / "config.toml").exists() and "5 flows" in output


def test_kernel_drops_and_sequence_gaps_are_counted(tmp_path: Path, free_port: int) -> None:
    """Freeze nfcapd (SIGSTOP) while an exporter sends 1 MB into a 64 KiB socket buffer: the
    kernel drops datagrams; the collector must report them, and nfcapd the sequence gaps (seen
    in the datagrams that arrive after nfcapd thaws, two thirds of the way through)."""
    need("nfcapd", "nfdump")
    import os

    from test_live_roundtrip import synthetic_flows

    from netflowgen.export import replay
    c = Collector(CollectorConfig(listen=f"127.0.0.1:{free_port}", out=str(tmp_path),
                                  socket_buffer=65536, poll=0.2))
    with c:
        os.kill(c.pid, signal.SIGSTOP)
        frozen = [True]
        pid = c.pid
        assert pid is not None

        def thaw(dg: object) -> None:
            counted[0] += 1
            if frozen[0] and counted[0] >= 600:  # ~2/3 of the datagrams: the rest shows the gaps
                os.kill(pid, signal.SIGCONT)
                frozen[0] = False
                time.sleep(0.2)
        counted = [0]
        try:
            sent = replay(synthetic_flows(20_000).to_batches(), ("127.0.0.1", free_port),
                          "netflow-v9", max_pps=1e9, on_datagram=thaw)
        finally:
            if frozen[0]:
                os.kill(c.pid, signal.SIGCONT)
    written = sum(r.flows_written for r in c.rotations)
    drops = sum(r.kernel_drops or 0 for r in c.rotations)
    assert drops > 0 and 0 < written < sent.flows
    assert sum(r.sequence_failures or 0 for r in c.rotations) > 0
    assert drops < sent.datagrams  # counted per datagram, and nfcapd did read some
    summary = json.loads((tmp_path / "collector-summary.json").read_text())
    assert summary["kernel_drops"] == drops
