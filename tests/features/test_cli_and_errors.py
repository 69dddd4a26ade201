"""The `features` command and bad input: clear errors naming file and column."""

from __future__ import annotations

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from netflowgen.cli.main import app
from netflowgen.config import ConfigError
from netflowgen.features import FeatureConfig, build_features
from netflowgen.rejects import InputError


def test_cli_writes_table_summary_and_config(golden, tmp_path):
    flows, customers = golden
    out = tmp_path / "out" / "features.parquet"
    res = CliRunner().invoke(app, ["features", str(flows), "--customers", str(customers),
                                   "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "nodes 3 (3 customers), minutes 4" in res.output
    assert "missing minutes 1" in res.output and f"rows 12 -> {out}" in res.output
    assert pl.read_parquet(out).height == 12
    saved = (out.parent / "features.parquet.config.toml").read_text()
    assert f'customers = "{customers}"' in saved and "[inputs]" in saved


def test_cli_dump_and_config_file(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text("[features]\nmin_flows = 7\nspread_over_minutes = true\n")
    res = CliRunner().invoke(app, ["features", "x.parquet", "--config", str(cfg), "--dump",
                                   "--engine", "spark"])
    assert res.exit_code == 0, res.output
    assert "min_flows = 7" in res.output and 'engine = "spark"' in res.output
    assert "spread_over_minutes = true" in res.output


def test_flow_file_lacking_columns(tmp_path):
    p = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"ts_start": [1], "src_ip": ["1.2.3.4"]}), p)
    with pytest.raises(InputError, match=r"bad.parquet: flow Parquet lacks column\(s\) \['ts_end'"):
        build_features([p], tmp_path / "o.parquet")


def test_not_parquet_and_missing(tmp_path):
    p = tmp_path / "flows.csv"
    p.write_text("a,b\n1,2\n")
    with pytest.raises(InputError, match="flows.csv: not a Parquet file"):
        build_features([p], tmp_path / "o.parquet")
    with pytest.raises(InputError, match="nothere.parquet: flow file not found"):
        build_features([tmp_path / "nothere.parquet"], tmp_path / "o.parquet")


def test_bad_settings():
    with pytest.raises(ConfigError, match="engine"):
        FeatureConfig(engine="duckdb").validate()
    with pytest.raises(ConfigError, match="not an ISO-8601"):
        FeatureConfig(start="yesterday").validate()
    with pytest.raises(ConfigError, match="must be after"):
        FeatureConfig(start="2024-01-02", end="2024-01-01").validate()


NFDUMP_HEADER = ("ts,te,td,sa,da,sp,dp,pr,flg,fwd,stos,ipkt,ibyt,opkt,obyt,in,out,sas,das,smk,dmk,"
                 "dtos,dir,nh,nhb,svln,dvln,ismc,odmc,idmc,osmc,mpls1,mpls2,mpls3,mpls4,mpls5,mpls6,"
                 "mpls7,mpls8,mpls9,mpls10,cl,sl,al,ra,eng,exid,tr")


def nfdump_line(ts: str, src: str, dst: str, pkts: int, byts: int, exporter: str) -> str:
    """One `nfdump -o csv` record (48 columns; `ra` = exporter); records carry no sampling rate."""
    mid = ",".join(["0"] * 6 + ["0.0.0.0", "0.0.0.0", "0", "0"] + ["00:00:00:00:00:00"] * 4
                   + ["0-0-0"] * 10 + ["0.000"] * 3)
    return (f"{ts},{ts},1.000,{src},{dst},40000,443,TCP,...AP.SF,0,0,{pkts},{byts},0,0,1,2,{mid},"
            f"{exporter},0/0,0,{ts}")


def test_nfdump_csv_input_needs_and_uses_sampling(tmp_path):
    """nfdump CSV carries no rate: rejected without one; --exporter-sampling beats
    --default-sampling (SPEC 1: record -> per-exporter -> default)."""
    f = tmp_path / "flows.csv"
    f.write_text("\n".join([NFDUMP_HEADER,
                            nfdump_line("2024-01-01 00:00:05", "192.0.2.9", "10.0.0.1", 2, 100, "192.0.2.200"),
                            nfdump_line("2024-01-01 00:00:07", "192.0.2.9", "10.0.0.1", 3, 300, "192.0.2.201"),
                            nfdump_line("2024-01-01 00:01:05", "10.0.0.1", "192.0.2.9", 1, 50, "192.0.2.200"),
                            ]) + "\n")
    (tmp_path / "c.csv").write_text("customer_id,prefix\nA,10.0.0.0/24\n")
    out = tmp_path / "o.parquet"
    with pytest.raises(InputError, match="no sampling rate"):
        build_features([f], out, FeatureConfig(customers=str(tmp_path / "c.csv")), fmt="nfdump-csv")
    res = CliRunner().invoke(app, ["features", str(f), "--format", "nfdump-csv", "-c",
                                   str(tmp_path / "c.csv"), "-o", str(out), "--default-sampling",
                                   "1", "--exporter-sampling", "192.0.2.200=10"])
    assert res.exit_code == 0, res.output
    df = pl.read_parquet(out).sort("minute")
    assert df["in_all_pkt"].to_list() == [2 * 10 + 3, 0] and df["in_all_flow"].to_list() == [11, 0]
    assert df["out_all_byt"].to_list() == [0, 500]
    saved = (tmp_path / "o.parquet.config.toml").read_text()
    assert "default_sampling = 1" in saved and '"192.0.2.200" = 10' in saved
    res = CliRunner().invoke(app, ["features", str(f), "--format", "nfdump-csv", "-o", str(out),
                                   "--exporter-sampling", "192.0.2.200"])
    assert res.exit_code != 0 and "EXPORTER_IP=N" in res.output
