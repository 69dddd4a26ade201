"""`netflowgen ingest`: outputs, reject report, saved config, --dump, --config, clear errors."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pyarrow.parquet as pq
import typer
from typer.testing import CliRunner

from netflowgen.cli.ingest import register
from netflowgen.schema import FLOW_SCHEMA

app = typer.Typer()


@app.callback()
def _root() -> None:  # keeps `ingest` a sub-command, as in the real CLI
    pass


register(app)
runner = CliRunner()

CSV = """ts_start,src_ip,dst_ip,proto,packets,bytes,exporter
1700000000,10.0.0.1,10.0.0.2,6,1,40,192.0.2.1
1700000001,10.0.0.1,10.0.0.999,6,1,40,192.0.2.1
1700000002,10.0.0.1,10.0.0.2,17,2,80,192.0.2.2
"""


def test_ingest_writes_flows_rejects_and_config(tmp_path: Path) -> None:
    src = tmp_path / "in.csv"
    src.write_text(CSV)
    out = tmp_path / "out" / "flows.parquet"
    res = runner.invoke(app, ["ingest", str(src), "--format", "csv", "--out", str(out),
                              "--exporter-sampling", "192.0.2.2=100", "--default-sampling", "1"])
    assert res.exit_code == 0, res.output
    assert "wrote 2 flow records" in res.output and "bad IP address: 1" in res.output
    t = pq.read_table(out)
    assert t.schema == FLOW_SCHEMA and t["sampling_rate"].to_pylist() == [1, 100]
    report = json.loads((tmp_path / "out" / "flows.parquet.rejects.json").read_text())
    assert report["by_reason"] == {"bad IP address": 1} and report["written"] == 2
    assert report["samples"]["bad IP address"] == [f"{src}:3 dst_ip=10.0.0.999"]
    cfg = tomllib.loads((tmp_path / "out" / "flows.parquet.config.toml").read_text())
    assert cfg["format"] == "csv"
    assert cfg["source"]["exporter_sampling"] == {"192.0.2.2": 100}
    assert cfg["source"]["default_sampling_rate"] == 1

    # the saved config reproduces the run
    again = tmp_path / "again.parquet"
    res = runner.invoke(app, ["ingest", str(src), "--config", str(out) + ".config.toml",
                              "--out", str(again)])
    assert res.exit_code == 0, res.output
    assert pq.read_table(again).equals(t)


def test_dump_prints_resolved_settings(tmp_path: Path) -> None:
    conf = tmp_path / "c.toml"
    conf.write_text('format = "argus"\n[source]\ninput_timezone = "Europe/Prague"\n')
    res = runner.invoke(app, ["ingest", "--config", str(conf), "--map", "src_ip=SrcAddr",
                              "--preset", "nf", "--dump"])
    assert res.exit_code == 0, res.output
    data = tomllib.loads(res.output)
    assert data["format"] == "argus"
    assert data["source"]["input_timezone"] == "Europe/Prague"
    assert data["source"]["column_map"] == {"src_ip": "SrcAddr"}
    assert data["source"]["preset"] == "nf" and data["source"]["batch_size"] == 65536


def test_errors_exit_2_with_one_line(tmp_path: Path) -> None:
    src = tmp_path / "in.csv"
    src.write_text(CSV)
    out = tmp_path / "flows.parquet"
    res = runner.invoke(app, ["ingest", str(src), "--format", "csv", "--out", str(out)])
    assert res.exit_code == 2
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and "no sampling rate" in lines[0] and "in.csv" in lines[0]
    assert not out.exists() and not list(tmp_path.glob("*.partial"))
    res = runner.invoke(app, ["ingest", str(tmp_path / "nope.csv"), "-f", "csv"])
    assert res.exit_code == 2 and "no such file" in res.output
    res = runner.invoke(app, ["ingest", str(src), "-f", "csv", "--exporter-sampling", "x"])
    assert res.exit_code != 0 and "KEY=VALUE" in res.output
