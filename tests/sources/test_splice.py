"""`netflowgen splice`: attack capture flows replayed onto a host's flows, with truth.csv."""

from __future__ import annotations

import datetime as dt
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import typer
from typer.testing import CliRunner

from netflowgen.cli.splice import register
from netflowgen.detect.operator_metrics import attacks_table
from netflowgen.rejects import InputError
from netflowgen.schema import FLOW_SCHEMA
from netflowgen.sources.splice import detect_victim, parse_time, splice, splice_files

app = typer.Typer()


@app.callback()
def _root() -> None:  # keeps `splice` a sub-command, as in the real CLI
    pass


register(app)
runner = CliRunner()
UTC = dt.timezone.utc
HOST = "192.0.2.7"
CAP_VICTIM = "10.10.10.10"
T0 = dt.datetime(2024, 1, 1, 9, 0, tzinfo=UTC)
CAP_T0 = dt.datetime(2021, 6, 14, 19, 45, tzinfo=UTC)


def flows(rows: list[dict[str, object]]) -> pa.Table:
    full = [{"tcp_flags": 0, "sampling_rate": 1, "exporter": None, "in_if": None, "out_if": None, **r}
            for r in rows]
    return pa.Table.from_pylist(full, schema=FLOW_SCHEMA)


def benign(minutes: int = 120) -> pa.Table:
    """Two hours of one host: a web flow in and a DNS query out every 20 seconds."""
    rows = []
    for k in range(minutes * 3):
        t = T0 + dt.timedelta(seconds=20 * k)
        rows.append({"ts_start": t, "ts_end": t + dt.timedelta(seconds=2), "src_ip": f"198.51.100.{k % 50 + 1}",
                     "dst_ip": HOST, "src_port": 40000 + k % 1000, "dst_port": 443, "proto": 6, "tcp_flags": 27,
                     "packets": 12, "bytes": 6000, "exporter": "203.0.113.1", "sampling_rate": 1})
        rows.append({"ts_start": t, "ts_end": t, "src_ip": HOST, "dst_ip": "9.9.9.9", "src_port": 50000 + k % 1000,
                     "dst_port": 53, "proto": 17, "packets": 1, "bytes": 70, "exporter": "203.0.113.1"})
    return flows(rows)


def capture(minutes: int = 6, per_minute: int = 200) -> pa.Table:
    """A DNS amplification capture: many UDP flows from source port 53 to one victim, a few from it
    (responses: ICMP port unreachable), and some unrelated noise."""
    rng = np.random.default_rng(1)
    rows = []
    for m in range(minutes):
        for j in range(per_minute):
            t = CAP_T0 + dt.timedelta(minutes=m, milliseconds=int(rng.integers(0, 60_000)))
            rows.append({"ts_start": t, "ts_end": t + dt.timedelta(milliseconds=5),
                         "src_ip": f"172.16.{j % 200}.{m + 1}", "dst_ip": CAP_VICTIM, "src_port": 53,
                         "dst_port": int(rng.integers(1024, 65535)), "proto": 17, "packets": 2, "bytes": 3000})
        t = CAP_T0 + dt.timedelta(minutes=m, seconds=30)
        rows.append({"ts_start": t, "ts_end": t, "src_ip": CAP_VICTIM, "dst_ip": "172.16.0.1",
                     "src_port": 0, "dst_port": 771, "proto": 1, "packets": 1, "bytes": 56})
        rows.append({"ts_start": t, "ts_end": t, "src_ip": "10.0.0.5", "dst_ip": "10.0.0.6",
                     "src_port": 1234, "dst_port": 80, "proto": 6, "packets": 3, "bytes": 180})
    rows[0]["ts_start"] = CAP_T0  # the capture's first flow starts exactly at CAP_T0
    return flows(rows)


def attack_part(res_flows: pa.Table) -> pl.DataFrame:
    df = pl.from_arrow(res_flows)
    assert isinstance(df, pl.DataFrame)
    return df.filter(((pl.col("dst_ip") == HOST) & (pl.col("src_port") == 53)) |
                     ((pl.col("src_ip") == HOST) & (pl.col("proto") == 1)))


def test_victim_detected_and_rewritten_time_shifted() -> None:
    host, cap = benign(), capture()
    assert detect_victim(cap) == CAP_VICTIM
    at = T0 + dt.timedelta(minutes=30)
    res = splice(host, cap, HOST, [at], duration_min=5, ramp_min=0, source_name="dns.parquet")
    assert res.flows.schema == FLOW_SCHEMA and res.attacker_victim == CAP_VICTIM
    assert res.flows.num_rows == host.num_rows + res.inserted[0]
    ts = res.flows["ts_start"].to_numpy()
    assert (np.diff(ts.astype(np.int64)) >= 0).all()  # sorted by ts_start
    att = attack_part(res.flows)
    assert att.height == res.inserted[0] == 5 * 200 + 5  # 5 minutes toward the victim + 5 responses
    assert att.get_column("ts_start").min() == at  # the capture's first flow lands at T
    assert att.get_column("ts_start").max() < at + dt.timedelta(minutes=5)
    df = pl.from_arrow(res.flows)
    assert isinstance(df, pl.DataFrame)
    assert CAP_VICTIM not in df.get_column("dst_ip").to_list() + df.get_column("src_ip").to_list()
    assert "10.0.0.5" not in df.get_column("src_ip").to_list()  # flows not of the victim are left out
    responses = att.filter(pl.col("proto") == 1)
    assert responses.get_column("src_ip").unique().to_list() == [HOST]
    assert responses.get_column("dst_ip").unique().to_list() == ["172.16.0.1"]
    assert set(att.get_column("exporter").unique().to_list()) == {"203.0.113.1"}  # the host's exporter
    assert res.warnings == []


def test_ramp_per_minute_flows_increase() -> None:
    at = T0 + dt.timedelta(minutes=20)
    res = splice(benign(), capture(minutes=8, per_minute=400), HOST, [at], duration_min=8, ramp_min=4, seed=3)
    att = attack_part(res.flows).filter(pl.col("proto") == 17)
    per_min = (att.with_columns(((pl.col("ts_start") - at).dt.total_seconds() // 60).alias("m"))
               .group_by("m").len().sort("m").get_column("len").to_list())
    assert len(per_min) == 8
    assert per_min[0] < per_min[1] < per_min[2] < per_min[3]  # 1/4, 2/4, 3/4, 4/4 of 400
    assert abs(per_min[0] - 100) < 40 and per_min[3] == 400 and per_min[4:] == [400] * 4
    again = splice(benign(), capture(minutes=8, per_minute=400), HOST, [at], duration_min=8, ramp_min=4, seed=3)
    assert again.inserted == res.inserted  # seeded


def test_duration_cut_and_loop_and_scale() -> None:
    host, cap = benign(), capture(minutes=3, per_minute=100)
    at = T0 + dt.timedelta(minutes=10)
    cut = splice(host, cap, HOST, [at], duration_min=2, ramp_min=0)
    assert attack_part(cut.flows).filter(pl.col("proto") == 17).height == 200
    loop = splice(host, cap, HOST, [at], duration_min=7, ramp_min=0, scale=2.5)
    att = attack_part(loop.flows).filter(pl.col("proto") == 17)
    assert att.height == 700  # 3 minutes, 3 minutes again, then 1 of the third copy
    assert att.get_column("ts_start").max() < at + dt.timedelta(minutes=7)
    assert att.get_column("ts_end").max() <= at + dt.timedelta(minutes=7)
    assert att.get_column("packets").unique().to_list() == [5]
    assert att.get_column("bytes").unique().to_list() == [7500]
    # a capture of a few seconds is replayed once a minute
    short = flows([{"ts_start": CAP_T0 + dt.timedelta(milliseconds=10 * j), "ts_end": CAP_T0 + dt.timedelta(milliseconds=10 * j),
                    "src_ip": f"172.16.0.{j + 1}", "dst_ip": CAP_VICTIM, "src_port": 53, "dst_port": 999,
                    "proto": 17, "packets": 1, "bytes": 1500} for j in range(50)])
    res = splice(host, short, HOST, [at], duration_min=4, ramp_min=0)
    assert res.inserted == [200]


def test_truth_csv_read_by_attacks_table(tmp_path: Path) -> None:
    host_path, cap_path = tmp_path / "host.parquet", tmp_path / "dns.parquet"
    pq.write_table(benign(), host_path)
    pq.write_table(capture(), cap_path)
    at = [T0 + dt.timedelta(minutes=15), T0 + dt.timedelta(minutes=70)]
    res = splice_files(host_path, [cap_path], HOST, at, tmp_path / "out.parquet", tmp_path / "truth.csv",
                       attack_format="parquet", duration_min=10, ramp_min=3)
    assert len(res.inserted) == 2 and all(n > 0 for n in res.inserted)
    truth = pl.read_csv(tmp_path / "truth.csv")
    assert truth.get_column("kind").to_list() == ["attack", "attack"]
    assert truth.get_column("attack_source").to_list() == ["dns.parquet"] * 2
    att = attacks_table(truth)
    assert att.get_column("target_ip").to_list() == [HOST, HOST]
    assert att.get_column("onset").to_list() == at
    assert att.get_column("end").to_list() == [t + dt.timedelta(minutes=10) for t in at]
    out = pq.read_table(tmp_path / "out.parquet")
    assert out.schema == FLOW_SCHEMA and out.num_rows == benign().num_rows + sum(res.inserted)


def test_errors_and_warnings() -> None:
    host, cap = benign(), capture()
    with pytest.raises(InputError, match="--victim 'host1': not an IP"):
        splice(host, cap, "host1", [T0])
    with pytest.raises(InputError, match="--attacker-victim '1.2.3': not an IP"):
        splice(host, cap, HOST, [T0], attacker_victim="1.2.3")
    with pytest.raises(InputError, match="no flow toward the attack's victim 10.9.9.9"):
        splice(host, cap, HOST, [T0], attacker_victim="10.9.9.9", source_name="cap.parquet")
    with pytest.raises(InputError, match="empty.parquet: the attack capture holds no flow"):
        splice(host, cap.slice(0, 0), HOST, [T0], source_name="empty.parquet")
    with pytest.raises(InputError, match="--duration"):
        splice(host, cap, HOST, [T0], duration_min=0)
    with pytest.raises(InputError, match="--at 'noon'"):
        parse_time("noon")
    assert parse_time("2024-01-01T10:00") == dt.datetime(2024, 1, 1, 10, tzinfo=UTC)
    res = splice(host, cap, HOST, [T0 - dt.timedelta(days=1)], duration_min=2)
    assert len(res.warnings) == 1 and "outside the host traffic's time range" in res.warnings[0]
    assert res.inserted[0] > 0


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "netflowgen.cli.main", *args], capture_output=True, text=True,
                          timeout=120)


def test_cli_subprocess(tmp_path: Path) -> None:
    host_path, cap_path = tmp_path / "host.parquet", tmp_path / "dns.parquet"
    pq.write_table(benign(), host_path)
    pq.write_table(capture(), cap_path)
    out, truth = tmp_path / "spliced.parquet", tmp_path / "truth.csv"
    r = _cli("splice", "--host-flows", str(host_path), "--attack", str(cap_path), "--attack-format", "parquet",
             "--victim", HOST, "--at", "2024-01-01T09:30", "--at", "2024-01-01T12:00", "--ramp", "2",
             "--duration", "4", "--scale", "1.5", "--out", str(out), "--truth", str(truth))
    assert r.returncode == 0, r.stderr
    assert "attack victim in the capture: 10.10.10.10" in r.stdout
    assert "insertion 0 at 2024-01-01T09:30:00Z .. 2024-01-01T09:34:00Z:" in r.stdout
    assert "flows inserted" in r.stdout
    assert "outside the host traffic's time range" in r.stderr  # 12:00 is past the two hours
    assert pq.read_table(out).schema == FLOW_SCHEMA
    assert attacks_table(pl.read_csv(truth)).height == 2


def test_cli_errors_one_line(tmp_path: Path) -> None:
    host_path, cap_path = tmp_path / "host.parquet", tmp_path / "dns.parquet"
    pq.write_table(benign(10), host_path)
    pq.write_table(capture(1), cap_path)
    base = ["splice", "--host-flows", str(host_path), "--at", "2024-01-01T09:03", "--out", str(tmp_path / "x.parquet")]
    res = runner.invoke(app, base + ["--attack", str(cap_path), "--victim", "nope"])
    assert res.exit_code == 2
    assert [ln for ln in res.output.splitlines() if ln.strip()] == ["error: --victim 'nope': not an IP address"]
    res = runner.invoke(app, base + ["--attack", str(tmp_path / "none.pcap"), "--victim", HOST])
    assert res.exit_code == 2 and "none.pcap" in res.output
    res = runner.invoke(app, base + ["--attack", str(cap_path), "--victim", HOST, "--at", "noon"])
    assert res.exit_code == 2 and "--at 'noon'" in res.output
    assert not (tmp_path / "x.parquet").exists()


@pytest.mark.real
@pytest.mark.skipif(shutil.which("nfdump") is None, reason="nfdump not installed (reads nfcapd files)")
def test_real_capture_spliced(real_data: Path, tmp_path: Path) -> None:
    cap = real_data / "stopddos/nfcapd/amp.UDP.isakmp"  # SOURCE.md: 3,984 pkts, 0.4 s, victim 10.10.10.x
    if not cap.is_dir():
        pytest.skip(f"{cap} not found among the real traces")
    host_path = tmp_path / "host.parquet"
    pq.write_table(benign(30), host_path)
    at = T0 + dt.timedelta(minutes=10)
    res = splice_files(host_path, [cap], HOST, [at], tmp_path / "out.parquet", tmp_path / "truth.csv",
                       attack_format="nfcapd", duration_min=3, ramp_min=0)
    assert res.attacker_victim.startswith("10.10.10.")
    assert res.inserted[0] > 1000
    df = pl.read_parquet(tmp_path / "out.parquet")
    assert df.height == benign(30).num_rows + res.inserted[0]
    assert res.attacker_victim not in set(df.get_column("dst_ip").to_list()) | set(df.get_column("src_ip").to_list())
    toward = df.filter((pl.col("dst_ip") == HOST) & (pl.col("ts_start") >= at) & (pl.col("proto") == 17))
    assert toward.height >= res.inserted[0] * 0.9
