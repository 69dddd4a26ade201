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
