"""nfcapd reader: real nfdump 1.6/1.7 files, directories, truncated/foreign files, early stop."""

from __future__ import annotations

import shutil
from itertools import islice
from pathlib import Path

import psutil
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from netflowgen.rejects import InputError, RejectCounter
from netflowgen.schema import FLOW_SCHEMA
from netflowgen.sources import SourceOptions, open_source

pytestmark = pytest.mark.skipif(shutil.which("nfdump") is None, reason="nfdump not installed")
UNSAMPLED = SourceOptions(default_sampling_rate=1)


def read(paths, options=UNSAMPLED, rejects=None) -> pa.Table:
    return pa.Table.from_batches(list(open_source(paths, "nfcapd", options, rejects)), FLOW_SCHEMA)


@pytest.mark.real
def test_nfdump_16_file_matches_nfdump_statistics(real_data: Path) -> None:
    # SOURCE.md and `nfdump -I`: 4,593 flows, 4,652 packets, 241,025 bytes, a scan of 147.32.82.62.
    rj = RejectCounter()
    t = read([real_data / "argus-slips" / "test1-malicious.nfdump"], rejects=rj)
    assert t.schema == FLOW_SCHEMA
    assert (t.num_rows, pc.sum(t["packets"]).as_py(), pc.sum(t["bytes"]).as_py()) == (4593, 4652, 241025)
    assert rj.rejected == 0 and rj.accepted == 4593
    first = t.slice(0, 1).to_pylist()[0]
    assert (first["src_ip"], first["dst_ip"], first["src_port"], first["dst_port"]) == \
        ("147.32.80.119", "147.32.82.62", 52324, 902)
    assert (first["proto"], first["tcp_flags"], first["exporter"]) == (6, 2, "147.32.82.62")
    assert first["ts_start"].timestamp() == pytest.approx(1515771450.942)


@pytest.mark.real
def test_directory_is_read_recursively_and_icmp_type_code_kept(real_data: Path) -> None:
    t = read([real_data / "stopddos" / "nfcapd"])
    assert t.num_rows == 28189
    icmp = t.filter(pc.equal(t["proto"], 1))
    # nfdump prints ICMP dst port as "type.code"; canonical keeps type*256+code (3.3 -> 771).
    assert icmp.num_rows > 0 and 771 in set(icmp["dst_port"].to_pylist())
    assert set(icmp["src_port"].to_pylist()) == {0}


@pytest.mark.real
def test_early_stop_kills_nfdump(real_data: Path) -> None:
    me = psutil.Process()
    batches = open_source([real_data / "stopddos" / "nfcapd"], "nfcapd",
                          SourceOptions(default_sampling_rate=1, batch_size=100))
    got = list(islice(batches, 2))
    assert [b.num_rows for b in got] == [100, 100]
    batches.close()
    assert not [c for c in me.children(recursive=True) if "nfdump" in c.name()]


@pytest.mark.real
def test_sampling_resolution_for_nfcapd(real_data: Path) -> None:
    f = real_data / "argus-slips" / "test1-malicious.nfdump"
    with pytest.raises(InputError, match="no sampling rate"):
        read([f], SourceOptions())
    t = read([f], SourceOptions(default_sampling_rate=10, exporter_sampling={"147.32.82.62": 100}))
    assert set(t["sampling_rate"].to_pylist()) == {100}


@pytest.mark.real
def test_truncated_and_foreign_files_are_input_errors(real_data: Path, tmp_path: Path) -> None:
    src = real_data / "stopddos" / "nfcapd" / "amp.UDP.isakmp" / "nfcapd.202106141945"
    cut = tmp_path / "nfcapd.201801010000"
    cut.write_bytes(src.read_bytes()[:300_000])
    with pytest.raises(InputError, match=r"nfcapd\.201801010000.*nfdump cannot read"):
        read([cut])
    junk = tmp_path / "junk.nfcapd"
    junk.write_text("this is not an nfcapd file\n")
    with pytest.raises(InputError, match="junk.nfcapd"):
        read([junk])
    with pytest.raises(InputError, match="no such file"):
        read([tmp_path / "missing"])
