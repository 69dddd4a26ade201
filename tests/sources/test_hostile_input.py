"""Hostile input gets a clear error or counted rejects, never a traceback or a silent loss: one
regression test per reproducer of the hostile-input issue (the readers' part)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import polars as pl
import pytest

from netflowgen.rejects import InputError, RejectCounter
from netflowgen.sources import SourceOptions

from .test_golden_bidirectional import ARGUS_HEADER, ARGUS_ROWS, ZEEK_ROWS, read, write_zeek
from .test_tables import NFDUMP_HEADER, nfdump_line


def test_a_non_utf8_byte_rejects_that_line_only(tmp_path: Path) -> None:
    z = write_zeek(tmp_path / "conn.log", ZEEK_ROWS)
    raw = z.read_bytes().replace(b"C2 ", b"C2\xff ", 1).replace(b"\tC2\t", b"\tC2\xff\t", 1)
    z.write_bytes(raw)
    rj = RejectCounter()
    got = read(z, "zeek", rejects=rj)
    assert rj.counts["garbage line"] == 1 and "not UTF-8" in rj.samples["garbage line"][0]
    assert len(got) == len(read(write_zeek(tmp_path / "ok.log", ZEEK_ROWS), "zeek")) - 1  # only C2's record went
    a = tmp_path / "a.csv"
    a.write_bytes(("\n".join([ARGUS_HEADER, *ARGUS_ROWS]) + "\n").encode().replace(b"tcp", b"t\xe9p", 1))
    rj = RejectCounter()
    read(a, "argus", rejects=rj)
    assert rj.counts["garbage line"] == 1


@pytest.mark.parametrize("header, message", [("#separator", "bad #separator ''"),
                                              ("#separator \\x", "bad #separator '\\\\x'")])
def test_a_broken_zeek_separator_is_one_clear_error(tmp_path: Path, header: str, message: str) -> None:
    z = write_zeek(tmp_path / "conn.log", ZEEK_ROWS)
    z.write_text(z.read_text().replace("#separator \\x09", header, 1))
    with pytest.raises(InputError, match=r"conn.log:1: " + message.replace("\\", "\\\\").replace("'", "'")):
        read(z, "zeek")


def test_a_zeek_data_line_starting_with_hash_is_counted(tmp_path: Path) -> None:
    z = write_zeek(tmp_path / "conn.log", ZEEK_ROWS + ["#1655071302.0 C9 not a record"])
    rj = RejectCounter()
    read(z, "zeek", rejects=rj)
    assert rj.rejected == 1 and rj.counts["garbage line"] == 1


def test_duplicated_nfdump_csv_column_is_one_clear_error(tmp_path: Path) -> None:
    f = tmp_path / "n.csv"
    f.write_text(NFDUMP_HEADER + ",ipkt\n" + nfdump_line("2018-12-01 12:04:49", "1.0", "TCP", "......S.", "2") + ",2\n")
    with pytest.raises(InputError, match=r"n.csv:1: column\(s\) \['ipkt'\] appear twice"):
        read(f, "nfdump-csv")


def test_concatenated_nfdump_csv_outputs_are_read_whole(tmp_path: Path) -> None:
    def output(n: int, second: int) -> list[str]:
        rows = [nfdump_line(f"2018-12-01 12:04:{second + i:02d}", "0.000", "UDP", "........", "1") for i in range(n)]
        return [NFDUMP_HEADER, *rows, "Summary", "flows,bytes,packets,avg_bps,avg_pps,avg_bpp", f"{n},0,0,0,0,0"]
    f = tmp_path / "both.csv"
    f.write_text("\n".join(output(3, 0) + output(4, 10)) + "\n")
    rj = RejectCounter()
    assert len(read(f, "nfdump-csv", SourceOptions(default_sampling_rate=1), rj)) == 7 and rj.rejected == 0


def test_an_unknown_time_zone_is_one_clear_error(tmp_path: Path) -> None:
    f = tmp_path / "n.csv"
    f.write_text(NFDUMP_HEADER + "\n" + nfdump_line("2018-12-01 12:04:49", "1.0", "TCP", "......S.", "2") + "\n")
    with pytest.raises(InputError, match="unknown time zone 'Mars/Olympus'"):
        read(f, "nfdump-csv", SourceOptions(input_timezone="Mars/Olympus"))


def test_ips_with_other_scripts_digits_and_implausible_times_are_rejected(tmp_path: Path) -> None:
    now = dt.datetime.now(dt.timezone.utc)
    rows = [("10.0.0.1", 1_700_000_000), ("10.0.0.\u0661", 1_700_000_000),  # Arabic-Indic one
            ("10.0.0.2", int(dt.datetime(2100, 1, 1).timestamp())), ("10.0.0.3", 100),
            ("10.0.0.4", int((now + dt.timedelta(days=3)).timestamp()))]
    f = tmp_path / "t.csv"
    pl.DataFrame({"src_ip": [r[0] for r in rows], "dst_ip": ["192.0.2.1"] * 5, "ts_start": [r[1] for r in rows],
                  "proto": [6] * 5, "packets": [1] * 5, "bytes": [60] * 5}).write_csv(f)
    rj = RejectCounter()
    got = read(f, "csv", SourceOptions(default_sampling_rate=1), rj)
    assert [r["src_ip"] for r in got] == ["10.0.0.1"]
    assert rj.counts["bad IP address"] == 1
    from netflowgen.sources.normalize import IMPLAUSIBLE_TIME
    assert rj.counts[IMPLAUSIBLE_TIME] == 3
    # the window is a setting: with an earlier start, the 1970 record is kept
    rj = RejectCounter()
    got = read(f, "csv", SourceOptions(default_sampling_rate=1, earliest_time="1960-01-01"), rj)
    assert sorted(r["src_ip"] for r in got) == ["10.0.0.1", "10.0.0.3"] and rj.counts[IMPLAUSIBLE_TIME] == 2


def test_a_customer_table_that_is_not_utf8_is_one_clear_error(tmp_path: Path) -> None:
    from netflowgen.nodes import CustomerTable
    c = tmp_path / "customers.csv"
    c.write_bytes(b"customer_id,prefix\nk\xf6ln,10.0.0.0/8\n")
    with pytest.raises(InputError, match="customers.csv: not UTF-8"):
        CustomerTable.from_csv(c)


def test_a_corrupt_parquet_page_is_one_clear_error(tmp_path: Path) -> None:
    from netflowgen.schema import FLOW_SCHEMA
    rows = {"src_ip": ["10.0.0.1"] * 5000, "dst_ip": ["192.0.2.1"] * 5000, "ts_start": [1_700_000_000_000 + i for i in range(5000)],
            "proto": [6] * 5000, "packets": list(range(5000)), "bytes": list(range(5000))}
    f = tmp_path / "t.parquet"
    pl.DataFrame(rows).with_columns(pl.col("ts_start").cast(pl.Datetime("ms", "UTC"))).write_parquet(
        f, compression="zstd", row_group_size=1000)
    import pyarrow.parquet as pq
    chunk = pq.ParquetFile(f).metadata.row_group(2).column(4)  # a page of the third row group
    raw = bytearray(f.read_bytes())
    raw[chunk.data_page_offset:chunk.data_page_offset + chunk.total_compressed_size] = \
        b"\x07" * chunk.total_compressed_size
    f.write_bytes(bytes(raw))
    with pytest.raises(InputError, match=r"t.parquet: unreadable Parquet data after record [0-9,]+ \(Couldn.t deserialize"):
        read(f, "parquet", SourceOptions(default_sampling_rate=1))
    assert FLOW_SCHEMA  # the canonical schema is what the reader writes


def test_a_flow_years_away_does_not_stretch_the_features_table(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from netflowgen.features.build import build_features
    from netflowgen.features.settings import FeatureConfig
    from netflowgen.schema import FLOW_SCHEMA
    t0 = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)
    n = 3
    table = pa.table({"ts_start": [t0, t0 + dt.timedelta(minutes=1), dt.datetime(2029, 1, 1, tzinfo=dt.timezone.utc)],
                      "ts_end": [t0] * n, "src_ip": ["10.0.0.1"] * n, "dst_ip": ["192.0.2.1"] * n,
                      "src_port": [1] * n, "dst_port": [80] * n, "proto": [6] * n, "tcp_flags": [2] * n,
                      "packets": [1] * n, "bytes": [60] * n, "sampling_rate": [1] * n, "exporter": [None] * n,
                      "in_if": [None] * n, "out_if": [None] * n}).cast(FLOW_SCHEMA)
    pq.write_table(table, tmp_path / "f.parquet")
    with pytest.raises(InputError, match=r"span 1,827 days \(2024-01-01 00:00 \.\. 2029-01-01 00:00 UTC\)"):
        build_features([tmp_path / "f.parquet"], tmp_path / "x.parquet", FeatureConfig(min_flows=1))


def test_an_output_folder_whose_parent_is_a_file_is_one_line(tmp_path: Path) -> None:
    import subprocess
    import sys
    (tmp_path / "file").write_text("x")
    r = subprocess.run([sys.executable, "-m", "netflowgen.cli.main", "simulate", "--days", "0.01", "--nodes", "4",
                        "--customers", "2", "--out", str(tmp_path / "file" / "sim")], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines()[-1] == f"error: {tmp_path / 'file' / 'sim'}: Not a directory"


def _with_bytes_inserted(src: Path, dst: Path) -> Path:
    data = src.read_bytes()
    mid = len(data) // 2
    dst.write_bytes(data[:mid] + b"\x01\x02\x03\x04" + data[mid:])
    return dst


@pytest.mark.real
def test_a_damaged_nfcapd_file_stops_nfdump_within_seconds(real_data: Path, tmp_path: Path) -> None:
    # 4 bytes inserted mid-file made nfdump 1.7.1 loop forever while its stderr filled the disk
    import time
    src = real_data / "stopddos" / "nfcapd" / "amp.UDP.isakmp" / "nfcapd.202106141945"
    bad = _with_bytes_inserted(src, tmp_path / "nfcapd.damaged")
    t0 = time.monotonic()
    with pytest.raises(InputError, match=r"nfcapd.damaged: nfdump stopped: more than 1024 KiB of errors"):
        read(bad, "nfcapd", SourceOptions(default_sampling_rate=1))
    assert time.monotonic() - t0 < 30


@pytest.mark.real
def test_a_damaged_pcap_counts_what_nfpcapd_could_not_read(real_data: Path, tmp_path: Path) -> None:
    # nfpcapd prints a read error and exits 0: the flows before the damage are kept, the loss counted
    src = real_data / "stopddos" / "pcap" / "amp.UDP.isakmp.pcap"
    bad = _with_bytes_inserted(src, tmp_path / "damaged.pcap")
    rj = RejectCounter()
    got = read(bad, "pcap", rejects=rj)
    whole = read(src, "pcap")
    assert 0 < len(got) < len(whole)
    assert rj.counts["capture unreadable from here on (nfpcapd read error)"] == 1
    assert "after packet" in rj.samples["capture unreadable from here on (nfpcapd read error)"][0]


def test_csv_epoch_units_are_read_per_value_and_a_bad_time_rejects_only_its_row(tmp_path: Path) -> None:
    base = 1_700_000_000  # 2023-11-14, seconds
    times = [str(base + i) for i in range(29)] + [str((base + 29) * 1_000_000)]  # one row in microseconds
    times[3] = "yesterday"  # one unparsable time among the first 20
    f = tmp_path / "t.csv"
    pl.DataFrame({"src_ip": ["10.0.0.1"] * 30, "dst_ip": ["192.0.2.1"] * 30, "ts_start": times,
                  "proto": [6] * 30, "packets": [1] * 30, "bytes": [60] * 30}).write_csv(f)
    rj = RejectCounter()
    got = read(f, "csv", SourceOptions(default_sampling_rate=1), rj)
    assert len(got) == 29 and dict(rj.counts) == {"unparsable timestamp": 1}
    seconds = sorted(int(r["ts_start"].timestamp()) for r in got)
    assert seconds == [base + i for i in range(30) if i != 3]  # the microsecond row is 2023 too


def test_one_bad_file_stops_ingest_or_is_skipped_and_listed(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from netflowgen.cli.main import app
    d = tmp_path / "logs"
    d.mkdir()
    write_zeek(d / "conn.1.log", ZEEK_ROWS)
    write_zeek(d / "conn.2.log", ZEEK_ROWS)
    (d / "conn.3.log").write_text("this is not a zeek log\n")
    args = ["ingest", str(d), "--format", "zeek", "--default-sampling", "1"]
    r = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "stop.parquet")])
    assert r.exit_code != 0 and not (tmp_path / "stop.parquet").exists()  # nothing written
    assert "conn.3.log" in r.output
    r = CliRunner().invoke(app, [*args, "--skip-bad-files", "--out", str(tmp_path / "go.parquet")])
    assert r.exit_code == 0, r.output
    one = len(read(d / "conn.1.log", "zeek"))
    assert pl.read_parquet(tmp_path / "go.parquet").height == 2 * one
    import json
    report = json.loads((tmp_path / "go.parquet.rejects.json").read_text())
    assert len(report["bad_files"]) == 1 and "conn.3.log" in report["bad_files"][0]


@pytest.mark.real
def test_a_partly_readable_nfcapd_file_counts_what_was_lost(real_data: Path, tmp_path: Path) -> None:
    src = real_data / "stopddos" / "nfcapd" / "amp.UDP.isakmp" / "nfcapd.202106141945"
    data = bytearray(src.read_bytes())
    mid = len(data) // 2
    data[mid:mid + 64] = b"\xff" * 64  # one damaged block: nfdump prints the records before it
    bad = tmp_path / "nfcapd.partly"
    bad.write_bytes(bytes(data))
    whole = len(read(src, "nfcapd", SourceOptions(default_sampling_rate=1)))
    rj = RejectCounter()
    got = read(bad, "nfcapd", SourceOptions(default_sampling_rate=1), rj)
    lost = rj.counts["unreadable nfcapd data (nfdump stopped at a damaged block)"]
    assert 0 < len(got) < whole and len(got) + lost == whole  # every record read or counted


def test_features_of_hand_made_flows_with_other_scripts_digits_count_them(tmp_path: Path) -> None:
    # ingest rejects such an IP; a hand-made canonical Parquet must not crash `features` either
    import pyarrow as pa
    import pyarrow.parquet as pq

    from netflowgen.features.build import build_features
    from netflowgen.features.settings import FeatureConfig
    from netflowgen.schema import FLOW_SCHEMA
    t0 = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)
    dst = ["192.0.2.1", "192.0.2.\u0661", "192.0.2.1"]
    table = pa.table({"ts_start": [t0] * 3, "ts_end": [t0] * 3, "src_ip": ["10.0.0.1"] * 3, "dst_ip": dst,
                      "src_port": [1] * 3, "dst_port": [80] * 3, "proto": [6] * 3, "tcp_flags": [2] * 3,
                      "packets": [1] * 3, "bytes": [60] * 3, "sampling_rate": [1] * 3, "exporter": [None] * 3,
                      "in_if": [None] * 3, "out_if": [None] * 3}).cast(FLOW_SCHEMA)
    pq.write_table(table, tmp_path / "f.parquet")
    (tmp_path / "c.csv").write_text("customer_id,prefix\nc,192.0.2.0/24\n")
    build_features([tmp_path / "f.parquet"], tmp_path / "x.parquet", FeatureConfig(customers=str(tmp_path / "c.csv")))
    assert pl.read_parquet(tmp_path / "x.parquet").get_column("node").unique().to_list() == ["192.0.2.1"]


def test_model_folders_with_nan_weights_or_a_huge_config_are_refused_before_use(tmp_path: Path) -> None:
    import json

    from safetensors.torch import load_file, save_file

    from netflowgen.api import NetFlowGen
    from netflowgen.model import TrafficGPT, model_config
    from netflowgen.model.io import load_model
    from netflowgen.tokens import Binner
    from tests.model.fixtures import node_minute_table
    b = Binner.fit(node_minute_table(n_nodes=2, n_minutes=60).filter(pl.col("missing").not_()))
    cfg = model_config("paper", n_layers=1, n_heads=2, d_model=8, d_ff=16, context=16, dropout=0.0)
    d = NetFlowGen(TrafficGPT(cfg, len(b.nodes), len(b.customers)), b).save_pretrained(tmp_path / "m")
    w = load_file(str(d / "model.safetensors"))
    key = next(iter(w))
    w[key] = w[key].clone().fill_(float("nan"))
    save_file(w, str(d / "model.safetensors"))
    with pytest.raises(InputError, match="non-finite values"):
        load_model(d)
    c = json.loads((d / "config.json").read_text())
    c["model"]["d_model"] = 1_000_000  # would allocate > 4 GiB if built before the check
    (d / "config.json").write_text(json.dumps(c))
    with pytest.raises(InputError, match="do not match config.json|bad model arguments"):
        load_model(d)


def test_a_binner_whose_lists_disagree_is_refused(tmp_path: Path) -> None:
    # found by `make fuzz`: feature_names one shorter than the cut-offs raised a raw IndexError
    import json

    from netflowgen.api import NetFlowGen
    from netflowgen.model import TrafficGPT, model_config
    from netflowgen.model.io import load_model
    from netflowgen.tokens import Binner
    from tests.model.fixtures import node_minute_table
    b = Binner.fit(node_minute_table(n_nodes=2, n_minutes=60).filter(pl.col("missing").not_()))
    cfg = model_config("paper", n_layers=1, n_heads=2, d_model=8, d_ff=16, context=16, dropout=0.0)
    d = NetFlowGen(TrafficGPT(cfg, len(b.nodes), len(b.customers)), b).save_pretrained(tmp_path / "m")
    j = json.loads((d / "binner.json").read_text())
    j["feature_names"] = j["feature_names"][:-2]
    (d / "binner.json").write_text(json.dumps(j))
    with pytest.raises(InputError, match="binner.json: unreadable binner"):
        load_model(d)
