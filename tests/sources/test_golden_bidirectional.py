"""Golden tests: small hand-written Zeek and Argus inputs -> exact canonical rows (flags included).

Expected values are worked out by hand from docs/sources.md, not produced by the code under test.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pyarrow as pa
import pytest

from netflowgen.rejects import InputError, RejectCounter
from netflowgen.schema import FLOW_SCHEMA
from netflowgen.sources import SourceOptions, open_source

UTC = dt.timezone.utc
ZEEK_FIELDS = ["ts", "uid", "id.orig_h", "id.orig_p", "id.resp_h", "id.resp_p", "proto", "service",
               "duration", "orig_bytes", "resp_bytes", "conn_state", "local_orig", "local_resp",
               "missed_bytes", "history", "orig_pkts", "orig_ip_bytes", "resp_pkts", "resp_ip_bytes",
               "tunnel_parents", "label", "detailed-label"]
ZEEK_ROWS = [
    # complete TCP session: S A D F by the originator, h a d f by the responder
    "1655071198.444458 C1 147.32.81.167 62771 40.74.108.123 443 tcp ssl 1.135424 1596 4039 SF - - 0 "
    "ShADdaFf 14 1016 16 1226 - Benign -",
    # unanswered SYN: no reverse record
    "1655071231.749548 C2 193.201.9.232 46563 147.32.81.167 3933 tcp - - 0 0 S0 - - 0 S 2 80 0 0 "
    "- Malicious -",
    # UDP: no flags; duration 0.5 s
    "1655071300.000000 C3 147.32.81.167 5353 224.0.0.251 5353 udp dns 0.500000 100 0 S0 - - 0 Dd 1 128 1 90 "
    "- Benign -",
    # ICMP echo 8/0: ports become 0 / 8*256+0, the reply 0/0
    "1655071301.000999 C4 147.32.81.167 8 8.8.8.8 0 icmp - 0.010000 56 56 OTH - - 0 - 1 84 1 84 "
    "- Benign -",
    # history unset: flags from conn_state REJ (orig SYN, resp RST+ACK); IPv6 kept as text
    "1655071302.100000 C5 2001:db8::1 40000 2001:db8::2 22 tcp - 0.001000 0 0 REJ - - 0 - 1 80 1 60 "
    "- Benign -",
]


def ms(seconds: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(round(seconds * 1000) / 1000, UTC)


def row(start: float, end: float, src: str, dst: str, sp: int, dp: int, proto: int, flags: int,
        pkts: int, byts: int) -> dict:
    return {"ts_start": ms(start), "ts_end": ms(end), "src_ip": src, "dst_ip": dst, "src_port": sp,
            "dst_port": dp, "proto": proto, "tcp_flags": flags, "packets": pkts, "bytes": byts,
            "sampling_rate": 1, "exporter": None, "in_if": None, "out_if": None}


ZEEK_EXPECTED = sorted([
    row(1655071198.444, 1655071199.579, "147.32.81.167", "40.74.108.123", 62771, 443, 6, 27, 14, 1016),
    row(1655071198.444, 1655071199.579, "40.74.108.123", "147.32.81.167", 443, 62771, 6, 27, 16, 1226),
    row(1655071231.749, 1655071231.749, "193.201.9.232", "147.32.81.167", 46563, 3933, 6, 2, 2, 80),
    row(1655071300.0, 1655071300.5, "147.32.81.167", "224.0.0.251", 5353, 5353, 17, 0, 1, 128),
    row(1655071300.0, 1655071300.5, "224.0.0.251", "147.32.81.167", 5353, 5353, 17, 0, 1, 90),
    row(1655071301.0, 1655071301.01, "147.32.81.167", "8.8.8.8", 0, 2048, 1, 0, 1, 84),
    row(1655071301.0, 1655071301.01, "8.8.8.8", "147.32.81.167", 0, 0, 1, 0, 1, 84),
    row(1655071302.1, 1655071302.101, "2001:db8::1", "2001:db8::2", 40000, 22, 6, 2, 1, 80),
    row(1655071302.1, 1655071302.101, "2001:db8::2", "2001:db8::1", 22, 40000, 6, 20, 1, 60),
], key=lambda r: (r["ts_start"], r["src_ip"]))


def write_zeek(path: Path, rows: list[str], iot23: bool = False) -> Path:
    def join(fields: list[str]) -> str:
        if iot23:  # IoT-23 quirk: the last three columns are separated by three spaces
            return "\t".join(fields[:-3]) + "\t" + "   ".join(fields[-3:])
        return "\t".join(fields)

    lines = ["#separator \\x09", "#set_separator\t,", "#empty_field\t(empty)", "#unset_field\t-",
             "#path\tconn", "#fields\t" + join(ZEEK_FIELDS), "#types\t" + "\t".join(["string"] * len(ZEEK_FIELDS))]
    lines += [join(r.split(" ")) for r in rows]
    path.write_text("\n".join(lines) + "\n#close\t2022-06-17-00-00-07\n")
    return path


def read(path: Path, fmt: str, options: SourceOptions | None = None, rejects=None) -> list[dict]:
    t = pa.Table.from_batches(list(open_source([path], fmt, options, rejects)), FLOW_SCHEMA)
    return sorted(t.to_pylist(), key=lambda r: (r["ts_start"], r["src_ip"]))


@pytest.mark.parametrize("iot23", [False, True])
def test_zeek_golden(tmp_path: Path, iot23: bool) -> None:
    rj = RejectCounter()
    got = read(write_zeek(tmp_path / "conn.log", ZEEK_ROWS, iot23), "zeek", rejects=rj)
    assert got == ZEEK_EXPECTED
    assert rj.rejected == 0  # the skipped reverse of the unanswered SYN is not a rejection


def test_zeek_bad_lines_and_columns(tmp_path: Path) -> None:
    bad = ZEEK_ROWS[:1] + [
        "garbage",  # wrong number of fields
        ZEEK_ROWS[1].replace(" 2 80 0 0", " -2 80 0 0"),  # negative packet count
        ZEEK_ROWS[1].replace("46563", "70000"),  # port > 65535
        ZEEK_ROWS[1].replace("193.201.9.232", "193.201.9.300"),  # bad IP
        ZEEK_ROWS[2].replace("0.500000", "-0.5"),  # negative duration: end before start
        ZEEK_ROWS[2].replace("1655071300.000000", "yesterday"),
    ]
    rj = RejectCounter()
    got = read(write_zeek(tmp_path / "conn.log", bad), "zeek", rejects=rj)
    assert len(got) == 2
    assert dict(rj.counts) == {"garbage line": 1, "negative count": 1, "port > 65535": 1,
                               "bad IP address": 1, "end before start": 2,
                               "unparsable timestamp": 2}
    assert rj.samples["garbage line"][0].startswith(f"{tmp_path / 'conn.log'}:9 ")
    assert rj.samples["port > 65535"][0].endswith("conn.log:11 src_port=70000")
    wrong = tmp_path / "wrong.log"
    wrong.write_text("#separator \\x09\n#fields\tts\tid.orig_h\n#types\ttime\taddr\n1\t1.2.3.4\n")
    with pytest.raises(InputError, match=r"wrong.log: missing column\(s\) \['id.orig_p'"):
        read(wrong, "zeek")


ARGUS_HEADER = "StartTime,Dur,Proto,SrcAddr,Sport,Dir,DstAddr,Dport,State,sTos,dTos,TotPkts,TotBytes,SrcBytes,SrcPkts,Label"
ARGUS_ROWS = [
    "2019/04/04 16:23:00.325010,0.027947,udp,10.8.0.69,48427,  <->,8.8.8.8,53,CON,0,0,2,142,63,1,",
    "2019/04/04 16:23:01.000000,2.5,tcp,10.8.0.69,50000,   ->,1.1.1.1,443,FSPA_FSPA,0,0,10,1000,400,6,",
    "2019/04/04 16:23:02.000000,0.001,tcp,10.8.0.70,50001,   ->,1.1.1.2,23,S_RA,0,0,2,114,60,1,",
    "2019/04/04 16:23:03.000000,0,tcp,10.8.0.70,50002,   ->,1.1.1.3,80,S_,0,0,1,60,60,1,",
    "2019/04/04 16:23:04.000000,0,icmp,10.8.0.70,0x0303,   ->,1.1.1.4,0x12d6,URP,0,,1,353,353,1,",
    "2019/04/04 16:23:05.000000,10,arp,10.8.0.70,,  who,10.8.0.1,,CON,,,2,120,60,1,",
    "2019/04/04 16:23:06.000000,0,tcp,10.8.0.71,50003,   ->,1.1.1.5,80,REQ,0,0,1,60,60,1,",
]
T0 = dt.datetime(2019, 4, 4, 14, 23, tzinfo=UTC).timestamp()  # 16:23 in Prague (CEST, UTC+2)
ARGUS_EXPECTED = sorted([
    row(T0 + 0.325, T0 + 0.352, "10.8.0.69", "8.8.8.8", 48427, 53, 17, 0, 1, 63),
    row(T0 + 0.325, T0 + 0.352, "8.8.8.8", "10.8.0.69", 53, 48427, 17, 0, 1, 79),
    row(T0 + 1, T0 + 3.5, "10.8.0.69", "1.1.1.1", 50000, 443, 6, 27, 6, 400),
    row(T0 + 1, T0 + 3.5, "1.1.1.1", "10.8.0.69", 443, 50000, 6, 27, 4, 600),
    row(T0 + 2, T0 + 2.001, "10.8.0.70", "1.1.1.2", 50001, 23, 6, 2, 1, 60),
    row(T0 + 2, T0 + 2.001, "1.1.1.2", "10.8.0.70", 23, 50001, 6, 20, 1, 54),
    row(T0 + 3, T0 + 3, "10.8.0.70", "1.1.1.3", 50002, 80, 6, 2, 1, 60),
    row(T0 + 4, T0 + 4, "10.8.0.70", "1.1.1.4", 0, 771, 1, 0, 1, 353),
    row(T0 + 6, T0 + 6, "10.8.0.71", "1.1.1.5", 50003, 80, 6, 2, 1, 60),
], key=lambda r: (r["ts_start"], r["src_ip"]))


def test_argus_golden(tmp_path: Path) -> None:
    f = tmp_path / "x.binetflow"
    f.write_text("\n".join([ARGUS_HEADER, *ARGUS_ROWS]) + "\n")
    rj = RejectCounter()
    got = read(f, "argus", SourceOptions(input_timezone="Europe/Prague"), rj)
    assert got == ARGUS_EXPECTED
    # counts are per unidirectional record: the ARP line is two records (2 packets, 1 from Src)
    assert dict(rj.counts) == {"non-IP protocol": 2}
    assert rj.samples["non-IP protocol"] == [f"{f}:7 proto=arp"] * 2


def test_argus_without_source_counters_keeps_one_record(tmp_path: Path) -> None:
    f = tmp_path / "y.binetflow"
    f.write_text("StartTime,Dur,Proto,SrcAddr,Sport,Dir,DstAddr,Dport,State,sTos,dTos,TotPkts,TotBytes\n"
                 "2013/10/21 13:23:21.041618,1.5,tcp,147.32.83.53,46672,  <?>,195.113.231.211,22,"
                 "SA_FR,16,0,108,10584\n")
    got = read(f, "argus")
    # one record with the totals; flags are the OR of both sides: S|A | F|R = 0x17
    assert got == [row(1382361801.041, 1382361802.541, "147.32.83.53", "195.113.231.211", 46672, 22,
                       6, 0x17, 108, 10584)]


def test_argus_bad_values(tmp_path: Path) -> None:
    f = tmp_path / "z.binetflow"
    f.write_text("\n".join([
        ARGUS_HEADER, ARGUS_ROWS[1],
        ARGUS_ROWS[1].replace(",10,1000,400,6,", ",10,1000,400,16,"),  # SrcPkts > TotPkts
        ARGUS_ROWS[1].replace("50000", "65536"),
        ARGUS_ROWS[1].replace(",2.5,", ",-2.5,"),
        ARGUS_ROWS[1].replace("1.1.1.1", "not-an-ip"),
        ARGUS_ROWS[1] + ",extra",
    ]) + "\n")
    rj = RejectCounter()
    got = read(f, "argus", rejects=rj)
    assert len(got) == 3 and sorted(r["packets"] for r in got) == [4, 6, 16]
    # the bad rows' forward and reverse records are both rejected, except SrcPkts > TotPkts
    # whose forward record (16 packets) is valid and whose reverse (-6 packets) is not
    assert dict(rj.counts) == {"negative count": 1, "port > 65535": 2, "end before start": 2,
                               "bad IP address": 2, "garbage line": 1}
    missing = tmp_path / "m.binetflow"
    missing.write_text("StartTime,Dur,Proto,SrcAddr\n2019/04/04 16:23:00,1,tcp,1.2.3.4\n")
    with pytest.raises(InputError, match=r"m.binetflow: missing column\(s\) \['Sport'"):
        read(missing, "argus")
