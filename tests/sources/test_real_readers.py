"""Every reader on the real public traces in ../shared/data/real (skipped when absent).

Figures come from each folder's SOURCE.md and from nfdump's own statistics, so they check the
readers against an independent count, not against themselves.
"""

from __future__ import annotations

import shutil
from itertools import islice
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from netflowgen.rejects import InputError, RejectCounter
from netflowgen.schema import FLOW_SCHEMA
from netflowgen.sources import SourceOptions, guess_format, open_source

pytestmark = [pytest.mark.real,
              pytest.mark.skipif(shutil.which("nfdump") is None, reason="nfdump not installed")]
UNSAMPLED = SourceOptions(default_sampling_rate=1)


def table(paths, fmt, options=UNSAMPLED, rejects=None) -> pa.Table:
    return pa.Table.from_batches(list(open_source(paths, fmt, options, rejects)), FLOW_SCHEMA)


def totals(t: pa.Table) -> tuple[int, int, int]:
    return t.num_rows, pc.sum(t["packets"]).as_py(), pc.sum(t["bytes"]).as_py()


@pytest.mark.parametrize("capture", ["stopddos/nfcapd/amp.UDP.isakmp",
                                     "stopddos/nfcapd/amp.TCP.syn.optionallyACK.optionallysamePort",
                                     "cicddos2019-excerpts/nfcapd/CIC-DDoS-2019-WebDDoS",
                                     "cicddos2019-excerpts/nfcapd/CIC-DDoS-2019-SynFlood"])
def test_nfdump_csv_agrees_with_nfcapd(real_data: Path, capture: str) -> None:
    binary = table([real_data / capture], "nfcapd")
    text = table([real_data / f"{capture}.flows.csv"], "nfdump-csv")
    assert totals(text) == totals(binary)
    # the CSV has 1 s start times (written in UTC here): same flows per (second, src, dst, sport)
    def keys(t: pa.Table) -> list:
        sec = pc.divide(pc.cast(pc.cast(t["ts_start"], pa.int64()), pa.int64()), 1000)
        return sorted(zip(sec.to_pylist(), t["src_ip"].to_pylist(), t["dst_ip"].to_pylist(),
                          t["src_port"].to_pylist(), t["dst_port"].to_pylist(),
                          t["tcp_flags"].to_pylist(), t["packets"].to_pylist()))
    assert keys(text) == keys(binary)


@pytest.mark.parametrize("pcap,flows,packets", [
    ("cicddos2019-excerpts/pcap/CIC-DDoS-2019-WebDDoS.pcap", 309, 3104),  # SOURCE.md: 3,104 pkts
    ("stopddos/pcap/amp.UDP.isakmp.pcap", 3978, 3984),  # SOURCE.md: 3,984 pkts
])
def test_pcap_through_nfpcapd_matches_shared_nfcapd(real_data: Path, pcap: str, flows: int,
                                                    packets: int) -> None:
    # the shared nfcapd folders were made with the same `nfpcapd -e 60,15` from these pcaps
    got = table([real_data / pcap], "pcap", SourceOptions())  # a capture is unsampled: no default
    ref_dir = pcap.replace("/pcap/", "/nfcapd/").removesuffix(".pcap")
    ref = table([real_data / ref_dir], "nfcapd")
    assert totals(got) == totals(ref) == (flows, packets, pc.sum(ref["bytes"]).as_py())
    assert set(got["sampling_rate"].to_pylist()) == {1}


def test_pcap_errors(tmp_path: Path) -> None:
    junk = tmp_path / "junk.pcap"
    junk.write_text("not a capture\n")
    with pytest.raises(InputError, match="junk.pcap: nfpcapd cannot read"):
        table([junk], "pcap")


@pytest.mark.parametrize("name,records", [
    ("zeek-ctu-normal/008/conn.log.labeled", 5663),
    ("zeek-iot23-34-1/conn.log.labeled", 23145),
])
def test_zeek_real(real_data: Path, name: str, records: int) -> None:
    rj = RejectCounter()
    t = table([real_data / name], "zeek", SourceOptions(), rj)
    assert rj.rejected == 0
    # one forward record per connection (SOURCE.md counts) plus the answered reverses
    forward = t.num_rows - _answered(real_data / name)
    assert forward == records
    assert set(t["sampling_rate"].to_pylist()) == {1}


def _answered(path: Path) -> int:
    """Connections with resp_pkts > 0, counted straight from the text."""
    n = 0
    with open(path) as f:
        for line in f:
            if line.startswith("#"):
                continue
            fields = line.replace("   ", "\t").rstrip("\n").split("\t")
            n += fields[18] not in ("0", "-")
    return n


def test_zeek_iot23_ddos_burst(real_data: Path) -> None:
    # SOURCE.md: 14,260 DDoS flows to 123.59.209.185:80, 2018-12-22 08:22:38 -> 10:50:28 UTC
    t = table([real_data / "zeek-iot23-34-1/conn.log.labeled"], "zeek", SourceOptions())
    ddos = t.filter(pc.and_(pc.equal(t["dst_ip"], "123.59.209.185"), pc.equal(t["dst_port"], 80)))
    assert ddos.num_rows >= 14260
    assert pc.min(ddos["ts_start"]).as_py().isoformat() <= "2018-12-22T08:22:38.999+00:00"


@pytest.mark.parametrize("name,rows,split", [
    ("2013-10-21_capture-1.binetflow", 2398, False),
    ("CTU-Normal-7-2013-13-07.binetflow", 9797, False),
    ("test2-malicious.binetflow", 6751, True),
])
def test_argus_real(real_data: Path, name: str, rows: int, split: bool) -> None:
    rj = RejectCounter()
    t = table([real_data / "argus-slips" / name], "argus", SourceOptions(), rj)
    if split:  # SrcPkts present: total packets are preserved by the split
        with open(real_data / "argus-slips" / name) as f:
            next(f)
            tot = sum(int(line.split(",")[11]) for line in f)
        assert pc.sum(t["packets"]).as_py() == tot and t.num_rows > rows
    else:  # no SrcPkts: one record per line, except ARP lines which are rejected by reason
        assert t.num_rows + rj.counts["non-IP protocol"] == rows
        assert set(rj.counts) <= {"non-IP protocol"}


def test_auto_format_and_head_limited_read(real_data: Path) -> None:
    assert guess_format(real_data / "argus-slips/test2-malicious.binetflow") == "argus"
    assert guess_format(real_data / "zeek-iot23-34-1/conn.log.labeled") == "zeek"
    assert guess_format(real_data / "stopddos/nfcapd") == "nfcapd"
    assert guess_format(real_data / "stopddos/nfcapd/amp.UDP.isakmp.flows.csv") == "nfdump-csv"
    assert guess_format(real_data / "stopddos/pcap/amp.UDP.isakmp.pcap") == "pcap"
    src = open_source([real_data / "zeek-ctu-normal"], "auto", SourceOptions(batch_size=500))
    first = list(islice(src, 3))
    src.close()
    # 500 lines per chunk; a bidirectional chunk holds up to twice as many records
    assert len(first) == 3 and all(500 <= b.num_rows <= 1000 for b in first)
