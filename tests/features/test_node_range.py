"""`node_range = "own"`: each node's minutes outside its own observed range (first to last minute
with a flow of the node, either end, edges inclusive) are missing, not zero; "union" is unchanged."""

from __future__ import annotations

import subprocess
import sys
import tomllib

import polars as pl
import pytest
from typer.testing import CliRunner

from netflowgen.cli.main import app
from netflowgen.config import ConfigError
from netflowgen.features import FeatureConfig, FeatureSummary, build_features

from .golden_flows import flow, write_flows

H1, H2 = "10.0.0.1", "10.0.0.2"  # two hosts, each seen by its own capture
EXT = "192.0.2.9"
CUSTOMERS = "customer_id,prefix\nx,10.0.0.0/24\n"
# The own ranges (minute offsets from the first, inclusive) and the table's 10 minutes 0..9.
OWN = {H1: (0, 4), H2: (6, 9)}
N_MIN = 10


def two_capture_flows() -> list[dict]:
    """H1's capture: minutes 0-4 (quiet in minute 2; its last flow, in minute 4, is outbound).
    H2's capture: minutes 6-9 (quiet in 7 and 8). No record at all in minutes 2, 5, 7, 8."""
    rows = [flow(m, EXT, 1234, H1, 443, 6, 24, 2, 200) for m in (0, 1, 3)]
    rows.append(flow(4, H1, 443, EXT, 1234, 6, 24, 3, 300))
    rows += [flow(m, EXT, 999, H2, 53, 17, 0, 1, 80) for m in (6, 9)]
    rows.append(flow(9, H2, 53, EXT, 999, 17, 0, 1, 120))
    return rows


def table(path) -> pl.DataFrame:
    return pl.read_parquet(path).with_columns(
        m=(pl.col("minute") - pl.col("minute").min()).dt.total_minutes())


def outside_own(df: pl.DataFrame) -> pl.Series:
    lo = pl.col("node").replace_strict({n: a for n, (a, _) in OWN.items()})
    hi = pl.col("node").replace_strict({n: b for n, (_, b) in OWN.items()})
    return df.select((pl.col("m") < lo) | (pl.col("m") > hi)).to_series()


def build(tmp_path, name: str, **settings) -> tuple[pl.DataFrame, FeatureSummary]:
    flows = write_flows(tmp_path / "flows.parquet", two_capture_flows())
    (tmp_path / "c.csv").write_text(CUSTOMERS)
    cfg = FeatureConfig(customers=str(tmp_path / "c.csv"), **settings)
    out = tmp_path / f"{name}.parquet"
    summary = build_features([flows], out, cfg)
    return table(out), summary


@pytest.mark.parametrize("dense_max_gb", [3.0, 0.0])  # both Polars aggregation paths
@pytest.mark.parametrize("chunk_rows", [262_144, 1])  # all nodes in one block, one node a block
def test_own_marks_outside_and_keeps_inside(tmp_path, dense_max_gb, chunk_rows):
    kw = dict(missing_by="none", dense_max_gb=dense_max_gb, chunk_rows=chunk_rows)
    union, su = build(tmp_path, "union", **kw)
    own, so = build(tmp_path, "own", node_range="own", **kw)
    assert union.height == own.height == 2 * N_MIN and not union["missing"].any()
    # Identical features everywhere (outside its range a node has no flow: zeros either way) ...
    assert own.drop("missing").equals(union.drop("missing"))
    # ... and missing exactly outside each node's own range, edges inclusive.
    assert own["missing"].to_list() == outside_own(own).to_list()
    got = {n: sorted(g.filter("missing")["m"].to_list())
           for (n,), g in own.group_by("node", maintain_order=True)}
    assert got == {H1: [5, 6, 7, 8, 9], H2: [0, 1, 2, 3, 4, 5]}
    # Inside its range a quiet minute stays a zero row that is not missing (H1 minute 2).
    h1_2 = own.filter((pl.col("node") == H1) & (pl.col("m") == 2))
    assert h1_2["missing"].to_list() == [False] and h1_2["in_all_flow"].to_list() == [0.0]
    inside = own.filter(~outside_own(own))
    assert inside.equals(union.filter(~outside_own(union)))
    assert (so.node_range, so.outside_node_range, so.missing_node_minutes) == ("own", 11, 11)
    assert (su.node_range, su.outside_node_range, su.missing_node_minutes) == ("union", 0, 0)
    assert "node_range own: 11 outside the nodes' own ranges" in "\n".join(so.lines())
    assert not any("node_range" in line for line in su.lines())


def test_own_adds_to_missing_by(tmp_path):
    """With missing_by global the rule only adds; the count is of the node-minutes it added."""
    union, su = build(tmp_path, "union", missing_by="global")
    own, so = build(tmp_path, "own", missing_by="global", node_range="own")
    assert su.missing_minutes == 4 and su.missing_node_minutes == 8  # minutes 2, 5, 7, 8
    assert own["missing"].to_list() == (union["missing"] | outside_own(union)).to_list()
    assert own.drop("missing").equals(union.drop("missing"))
    # H1 outside 5-9 of which 6, 9 were not missing; H2 outside 0-5 of which 0, 1, 3, 4.
    assert so.outside_node_range == 6 and so.missing_node_minutes == 8 + 6
    assert so.missing_node_minutes == int(own["missing"].sum())


def test_node_without_flow_in_range_is_missing_everywhere(tmp_path):
    own, s = build(tmp_path, "own", missing_by="none", node_range="own",
                   start="2024-01-01T00:05", end="2024-01-01T00:10")
    got = {n: g["missing"].to_list() for (n,), g in own.group_by("node", maintain_order=True)}
    assert got == {H1: [True] * 5, H2: [True, False, False, False, False]}
    assert s.outside_node_range == 6


def test_union_is_the_default_and_unchanged(tmp_path):
    assert FeatureConfig().node_range == "union"
    default, _ = build(tmp_path, "default", missing_by="none")
    union, _ = build(tmp_path, "union", missing_by="none", node_range="union")
    assert default.equals(union) and not union["missing"].any()
    assert (tmp_path / "default.parquet").read_bytes() == (tmp_path / "union.parquet").read_bytes()


@pytest.mark.spark
def test_spark_own_equals_polars(spark, tmp_path):
    polars_t, sp = build(tmp_path, "polars", missing_by="none", node_range="own", chunk_rows=1)
    flows = tmp_path / "flows.parquet"
    cfg = FeatureConfig(customers=str(tmp_path / "c.csv"), missing_by="none", node_range="own",
                        engine="spark", chunk_rows=1)
    ss = build_features([flows], tmp_path / "spark.parquet", cfg, spark=spark)
    assert table(tmp_path / "spark.parquet").equals(polars_t)
    assert (ss.outside_node_range, ss.missing_node_minutes) == (sp.outside_node_range, 11)


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "netflowgen.cli.main", "features", *args],
                          capture_output=True, text=True, timeout=120)


def test_cli_node_range_own(tmp_path):
    flows = write_flows(tmp_path / "flows.parquet", two_capture_flows())
    (tmp_path / "c.csv").write_text(CUSTOMERS)
    out = tmp_path / "f.parquet"
    r = run_cli(str(flows), "-c", str(tmp_path / "c.csv"), "--missing-by", "none",
                "--node-range", "own", "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert "missing node-minutes 11 (" in r.stdout and "node_range own: 11 outside" in r.stdout
    df = table(out)
    assert df["missing"].to_list() == outside_own(df).to_list()
    saved = tomllib.loads((tmp_path / "f.parquet.config.toml").read_text())
    assert saved["node_range"] == "own"


def test_toml_setting_and_bad_value(tmp_path):
    conf = tmp_path / "c.toml"
    conf.write_text('[features]\nnode_range = "own"\n')
    res = CliRunner().invoke(app, ["features", "x.parquet", "--config", str(conf), "--dump"])
    assert res.exit_code == 0 and 'node_range = "own"' in res.output, res.output
    r = run_cli("x.parquet", "--node-range", "hosts")
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.strip().splitlines() == [
        "error: config: features.node_range: 'hosts' is not one of ['union', 'own']"]
    with pytest.raises(ConfigError, match="node_range"):
        FeatureConfig(node_range="Own").validate()
