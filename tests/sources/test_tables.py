"""CSV/Parquet tables (column maps, presets), nfdump CSV text, and the sampling resolution order."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from netflowgen.rejects import InputError, RejectCounter
from netflowgen.schema import FLOW_SCHEMA
from netflowgen.sources import SourceOptions, open_source, write_flows

UTC = dt.timezone.utc


def read(path: Path, fmt: str, options: SourceOptions | None = None, rejects=None) -> list[dict]:
    t = pa.Table.from_batches(list(open_source([path], fmt, options, rejects)), FLOW_SCHEMA)
    return t.to_pylist()


# --- sampling resolution: record -> per-exporter override -> default -> reject ----------------
SAMPLED = """ts_start,src_ip,dst_ip,proto,packets,bytes,sampling_rate,exporter
1700000000,10.0.0.1,10.0.0.2,6,1,40,512,192.0.2.1
1700000001,10.0.0.1,10.0.0.2,6,1,40,0,192.0.2.1
1700000002,10.0.0.1,10.0.0.2,6,1,40,,192.0.2.2
1700000003,10.0.0.1,10.0.0.2,6,1,40,,
"""


@pytest.mark.parametrize("override,default,expected,rejected", [
    ({}, None, [512], 3),  # only the record's own rate: the others are rejected
    ({"192.0.2.1": 100}, None, [512, 100], 2),  # 0 in the record = not given -> override
    ({"192.0.2.1": 100}, 10, [512, 100, 10, 10], 0),  # then the default
    ({}, 10, [512, 10, 10, 10], 0),
])
def test_sampling_resolution_order(tmp_path: Path, override, default, expected, rejected) -> None:
    f = tmp_path / "s.csv"
    f.write_text(SAMPLED)
    rj = RejectCounter()
    got = read(f, "csv", SourceOptions(default_sampling_rate=default, exporter_sampling=override), rj)
    assert [r["sampling_rate"] for r in got] == expected
    assert rj.counts["no sampling rate"] == rejected
    if rejected:
        assert rj.samples["no sampling rate"][-1] == f"{f}:5 exporter=(none)"


def test_stamped_exporter_takes_its_override(tmp_path: Path) -> None:
    f = tmp_path / "s.csv"
    f.write_text(SAMPLED.replace(",192.0.2.1\n", ",\n").replace(",192.0.2.2\n", ",\n"))
    got = read(f, "csv", SourceOptions(exporter="edge1", exporter_sampling={"edge1": 7}))
    assert [r["sampling_rate"] for r in got] == [512, 7, 7, 7]
    assert {r["exporter"] for r in got} == {"edge1"}


def test_only_bad_records_is_an_error(tmp_path: Path) -> None:
    f = tmp_path / "s.csv"
    f.write_text(SAMPLED.replace(",1,40,", ",-1,40,"))
    with pytest.raises(InputError, match=r"s.csv: all 4 records were rejected as csv "
                                         r"\(negative count: 4\), e.g. .*s.csv:2 packets=-1"):
        read(f, "csv", SourceOptions(default_sampling_rate=1))
    empty = tmp_path / "e.csv"
    empty.write_text(SAMPLED.splitlines()[0] + "\n")
    with pytest.raises(InputError, match="no flow record found"):
        read(empty, "csv")


# --- generic tables -----------------------------------------------------------------------------
def test_generic_csv_map_and_bad_values(tmp_path: Path) -> None:
    f = tmp_path / "t.csv"
    f.write_text("when,a,b,sp,dp,p,pk,by,end\n"
                 "2024-01-01 10:00:00.250,10.0.0.1,2001:DB8:0:0::1,1234,443,tcp,3,180,2024-01-01 10:00:01\n"
                 "2024-01-01 10:00:00,10.0.0.1,10.0.0.2,1234,99999,6,3,180,\n"
                 "2024-01-01 10:00:00,10.0.0.1,10.0.0.2,1234,80,6,-3,180,\n"
                 "2024-01-01 10:00:05,10.0.0.1,10.0.0.2,1234,80,6,3,180,2024-01-01 10:00:04\n"
                 "2024-01-01 10:00:00,10.0.0.1,10.0.0.2,1234,80,6,three,180,\n"
                 "2024-01-01 10:00:00,10.0.0.1,10.0.0.2\n"
                 "1970-01-01 00:00:00,10.0.0.1,10.0.0.2,1234,80,6,3,180,\n")
    cmap = {"ts_start": "when", "src_ip": "a", "dst_ip": "b", "src_port": "sp", "dst_port": "dp",
            "proto": "p", "packets": "pk", "bytes": "by", "ts_end": "end"}
    rj = RejectCounter()
    got = read(f, "csv", SourceOptions(column_map=cmap, default_sampling_rate=1), rj)
    assert got == [{
        "ts_start": dt.datetime(2024, 1, 1, 10, 0, 0, 250000, UTC),
        "ts_end": dt.datetime(2024, 1, 1, 10, 0, 1, tzinfo=UTC), "src_ip": "10.0.0.1",
        "dst_ip": "2001:db8::1", "src_port": 1234, "dst_port": 443, "proto": 6, "tcp_flags": 0,
        "packets": 3, "bytes": 180, "sampling_rate": 1, "exporter": None, "in_if": None,
        "out_if": None}]
    assert dict(rj.counts) == {"port > 65535": 1, "negative count": 1, "end before start": 1,
                               "unparsable field": 1, "garbage line": 1, "unknown start time (0)": 1}
    assert rj.samples["unparsable field"] == [f"{f}:6 packets=three"]
    assert rj.samples["garbage line"][0].startswith(f"{f}:7 3 fields, expected 9")
    # line numbers stay exact after a skipped line
    assert rj.samples["unknown start time (0)"] == [f"{f}:8 ts_start=1970-01-01 00:00:00"]
    with pytest.raises(InputError, match=r"mapped column\(s\) \['nope'\] not in the table"):
        read(f, "csv", SourceOptions(column_map={**cmap, "src_ip": "nope"}))
    with pytest.raises(InputError, match=r"missing column\(s\) for \{'src_ip'"):
        read(f, "csv", SourceOptions(column_map={k: v for k, v in cmap.items() if k != "src_ip"}))


def test_canonical_parquet_round_trip(tmp_path: Path) -> None:
    rows = [{"ts_start": dt.datetime(2024, 1, 1, 10, tzinfo=UTC), "ts_end": dt.datetime(2024, 1, 1, 10, 1, tzinfo=UTC),
             "src_ip": "10.0.0.1", "dst_ip": "fe80::1", "src_port": 0, "dst_port": 2048, "proto": 1,
             "tcp_flags": 0, "packets": 5, "bytes": 420, "sampling_rate": 1000, "exporter": "r1",
             "in_if": 3, "out_if": None}]
    src = tmp_path / "in.parquet"
    pq.write_table(pa.Table.from_pylist(rows, FLOW_SCHEMA), src)
    out = tmp_path / "out.parquet"
    n = write_flows(open_source([src], "parquet"), out)
    assert n == 1 and pq.read_table(out).to_pylist() == rows  # ICMP 8/0 kept in dst_port
    assert pq.read_schema(out) == FLOW_SCHEMA


# --- presets --------------------------------------------------------------------------------------
NF_V3 = ("IPV4_SRC_ADDR,L4_SRC_PORT,IPV4_DST_ADDR,L4_DST_PORT,PROTOCOL,TCP_FLAGS,CLIENT_TCP_FLAGS,"
         "SERVER_TCP_FLAGS,IN_PKTS,IN_BYTES,OUT_PKTS,OUT_BYTES,FLOW_DURATION_MILLISECONDS,"
         "FLOW_START_MILLISECONDS,FLOW_END_MILLISECONDS,Label\n"
         "192.168.1.5,51000,10.0.0.9,80,6,27,27,26,5,400,4,3000,1500,1700000000123,1700000001623,0\n"
         "192.168.1.5,53000,10.0.0.53,53,17,0,0,0,1,70,0,0,0,1700000002000,1700000002000,0\n")


def test_nf_v3_preset(tmp_path: Path) -> None:
    f = tmp_path / "nf.csv"
    f.write_text(NF_V3)
    got = read(f, "csv", SourceOptions(preset="nf"))
    t0 = dt.datetime.fromtimestamp(1700000000.123, UTC)
    assert [(r["src_ip"], r["dst_ip"], r["src_port"], r["dst_port"], r["tcp_flags"], r["packets"],
             r["bytes"], r["ts_start"], r["sampling_rate"]) for r in got] == [
        ("192.168.1.5", "10.0.0.9", 51000, 80, 27, 5, 400, t0, 1),
        ("192.168.1.5", "10.0.0.53", 53000, 53, 0, 1, 70, dt.datetime.fromtimestamp(1700000002, UTC), 1),
        ("10.0.0.9", "192.168.1.5", 80, 51000, 26, 4, 3000, t0, 1),  # OUT_* = reverse direction
    ]
    assert got[0]["ts_end"] - got[0]["ts_start"] == dt.timedelta(milliseconds=1500)


def test_nf_v2_needs_start(tmp_path: Path) -> None:
    f = tmp_path / "nf2.parquet"
    lines = [ln.split(",")[:13] for ln in NF_V3.splitlines()]
    cols = {name: [v for v in col] for name, *col in zip(*lines)}
    pq.write_table(pa.table({k: pa.array([int(x) if x.isdigit() else x for x in v])
                             for k, v in cols.items()}), f)
    with pytest.raises(InputError, match="no time column: pass --start"):
        read(f, "parquet", SourceOptions(preset="nf"))
    got = read(f, "parquet", SourceOptions(preset="nf", start="2024-03-01T12:00:00",
                                           input_timezone="Europe/Berlin"))
    assert {r["ts_start"] for r in got} == {dt.datetime(2024, 3, 1, 11, tzinfo=UTC)}
    assert got[0]["ts_end"] - got[0]["ts_start"] == dt.timedelta(milliseconds=1500)


def test_cicflowmeter_preset_with_spaced_headers(tmp_path: Path) -> None:
    # CIC-DDoS2019 style: leading spaces in names, long names, local times, microsecond durations
    header = ("Flow ID, Source IP, Source Port, Destination IP, Destination Port, Protocol, Timestamp,"
              " Flow Duration, Total Fwd Packets, Total Backward Packets,Total Length of Fwd Packets,"
              " Total Length of Bwd Packets,FIN Flag Count, SYN Flag Count, RST Flag Count,"
              " PSH Flag Count, ACK Flag Count, URG Flag Count, CWE Flag Count, ECE Flag Count, Label")
    row = ("x,172.16.0.5,60000,192.168.50.1,80,6,2018-12-01 11:17:11.183810,2500000,3,2,120,1500,"
           "1,1,0,1,1,0,0,0,DrDoS_DNS")
    f = tmp_path / "cic.csv"
    f.write_text(header + "\n" + row + "\n")
    got = read(f, "csv", SourceOptions(preset="cicflowmeter", input_timezone="America/Halifax"))
    start = dt.datetime(2018, 12, 1, 15, 17, 11, 183000, UTC)  # AST = UTC-4 in December
    assert [(r["src_ip"], r["dst_ip"], r["packets"], r["bytes"], r["tcp_flags"], r["ts_start"])
            for r in got] == [("172.16.0.5", "192.168.50.1", 3, 120, 0x1B, start),
                              ("192.168.50.1", "172.16.0.5", 2, 1500, 0x1B, start)]
    assert got[0]["ts_end"] == start + dt.timedelta(seconds=2.5)


def test_unknown_preset(tmp_path: Path) -> None:
    f = tmp_path / "x.csv"
    f.write_text(NF_V3)
    with pytest.raises(InputError, match="unknown preset 'nfv9'"):
        read(f, "csv", SourceOptions(preset="nfv9"))


# --- nfdump CSV text ------------------------------------------------------------------------------
NFDUMP_HEADER = ("ts,te,td,sa,da,sp,dp,pr,flg,fwd,stos,ipkt,ibyt,opkt,obyt,in,out,sas,das,smk,dmk,"
                 "dtos,dir,nh,nhb,svln,dvln,ismc,odmc,idmc,osmc,mpls1,mpls2,mpls3,mpls4,mpls5,mpls6,"
                 "mpls7,mpls8,mpls9,mpls10,cl,sl,al,ra,eng,exid,tr")
TAIL = (",0,0,0,0,0,0,0.0.0.0,0.0.0.0,0,0,00:00:00:00:00:00,00:00:00:00:00:00,00:00:00:00:00:00,"
        "00:00:00:00:00:00,0-0-0,0-0-0,0-0-0,0-0-0,0-0-0,0-0-0,0-0-0,0-0-0,0-0-0,0-0-0,    0.000,"
        "    0.000,    0.000,192.0.2.9,17/1,0,2026-11-27 01:32:17.975")


def nfdump_line(ts: str, td: str, pr: str, flg: str, ipkt: str, dp: str = "80") -> str:
    return f"{ts},{ts},{td},10.1.1.1,10.2.2.2,5000,{dp},{pr},{flg},0,0,{ipkt},1000,0,0,1,2" + TAIL


def test_nfdump_csv_local_time_flags_footer(tmp_path: Path) -> None:
    f = tmp_path / "n.csv"
    f.write_text("\n".join([
        NFDUMP_HEADER,
        nfdump_line("2018-12-01 12:04:49", "4.518", "TCP", "...AP.SF", "8"),
        nfdump_line("2018-12-01 12:04:50", "0.000", "ICMP", "........", "1", dp="771"),
        nfdump_line("2018-12-01 12:04:50", "0.000", "TCP", "..XAP.SF", "1"),  # bad flag letters
        nfdump_line("2018-12-01 12:04:50", "-1.000", "TCP", "......S.", "1"),
        "Summary", "flows,bytes,packets,avg_bps,avg_pps,avg_bpp", "4,4000,11,0,0,0",
    ]) + "\n")
    rj = RejectCounter()
    got = read(f, "nfdump-csv", SourceOptions(input_timezone="Europe/Prague",
                                              exporter_sampling={"192.0.2.9": 64}), rj)
    assert [(r["ts_start"], r["ts_end"], r["proto"], r["tcp_flags"], r["dst_port"],
             r["sampling_rate"], r["exporter"], r["in_if"], r["out_if"]) for r in got] == [
        (dt.datetime(2018, 12, 1, 11, 4, 49, tzinfo=UTC),
         dt.datetime(2018, 12, 1, 11, 4, 53, 518000, UTC), 6, 27, 80, 64, "192.0.2.9", 1, 2),
        (dt.datetime(2018, 12, 1, 11, 4, 50, tzinfo=UTC),
         dt.datetime(2018, 12, 1, 11, 4, 50, tzinfo=UTC), 1, 0, 771, 64, "192.0.2.9", 1, 2)]
    assert dict(rj.counts) == {"unparsable field": 1, "end before start": 1}
    assert rj.samples["unparsable field"] == [f"{f}:4 tcp_flags=..XAP.SF"]


def test_nfdump_csv_wrong_columns(tmp_path: Path) -> None:
    f = tmp_path / "n.csv"
    f.write_text("ts,te,sa,da,sp,dp,pr,flg,ipkt\n")
    with pytest.raises(InputError, match=r"n.csv: missing column\(s\) \['td', 'ibyt'\]"):
        read(f, "nfdump-csv")
