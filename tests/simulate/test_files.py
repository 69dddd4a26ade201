"""File formats, determinism and the CLI of `netflowgen simulate`."""

from __future__ import annotations

import hashlib
import ipaddress
import tomllib
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
from conftest import Sim, small_config
from typer.testing import CliRunner

from netflowgen.cli.main import app
from netflowgen.schema import FLOW_SCHEMA
from netflowgen.simulate import simulate

FILES = ("flows.parquet", "customers.csv", "nodes.csv", "alerts.csv", "truth.csv")


def test_flow_file_is_canonical(sim: Sim) -> None:
    assert pq.read_schema(sim.dir / "flows.parquet").remove_metadata() == FLOW_SCHEMA.remove_metadata()
    f = sim.flows
    assert f.height > 50_000
    assert f["ts_start"].is_sorted()  # a collector's order: replay can pace on it
    assert (f["ts_end"] >= f["ts_start"]).all()
    assert (f["packets"] >= 1).all() and (f["bytes"] >= f["packets"]).all()
    assert f.null_count().select(pl.exclude("exporter", "in_if", "out_if")).sum_horizontal().item() == 0
    # port-less protocols never carry a source port
    assert f.filter(pl.col("proto") == 1)["src_port"].max() == 0


def test_customers_nodes_alerts_truth_shapes(sim: Sim) -> None:
    assert sim.customers.columns == ["customer_id", "prefix"]
    assert sim.alerts.columns == ["target_ip", "start", "end", "attack_type", "false_positive",
                                  "reported_pkts", "reported_bytes"]
    assert {"onset", "peak_start", "peak_end", "end", "kind", "type", "target"} <= set(sim.truth.columns)
    # every node lies in its customer's prefix, and customers own several nodes of several kinds
    prefix = dict(zip(sim.customers["customer_id"], sim.customers["prefix"]))
    for ip, cust in zip(sim.nodes["ip"], sim.nodes["customer_id"]):
        assert ipaddress.ip_address(ip) in ipaddress.ip_network(prefix[cust])
    kinds = sim.nodes.group_by("customer_id").agg(pl.col("archetype").n_unique().alias("k"), pl.len())
    assert kinds["len"].max() >= 3 and kinds["k"].max() >= 2
    # every alert targets a node; every flow has a node on one side
    nodes = set(sim.nodes["ip"])
    assert set(sim.alerts["target_ip"]) <= nodes
    touches = sim.flows.select(pl.col("src_ip").is_in(nodes) | pl.col("dst_ip").is_in(nodes)).to_series()
    assert touches.all()


def _digest(d: Path) -> dict[str, str]:
    return {n: hashlib.sha256((d / n).read_bytes()).hexdigest() for n in FILES}


def test_same_seed_same_bytes_other_seed_differs(tmp_path: Path) -> None:
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    simulate(small_config(seed=5, days=0.3), a)
    simulate(small_config(seed=5, days=0.3), b)
    simulate(small_config(seed=6, days=0.3), c)
    assert _digest(a) == _digest(b)
    da, dc = _digest(a), _digest(c)
    assert da["flows.parquet"] != dc["flows.parquet"] and da["truth.csv"] != dc["truth.csv"]


def test_chunking_does_not_change_the_plan(tmp_path: Path) -> None:
    # events and alerts are planned before any flow, so chunk length cannot move them
    cfg = small_config(seed=5, days=0.3)
    simulate(cfg, tmp_path / "a")
    cfg.time.chunk_minutes = 37
    simulate(cfg, tmp_path / "b")
    assert (tmp_path / "a" / "truth.csv").read_bytes() == (tmp_path / "b" / "truth.csv").read_bytes()
    rows = [pq.read_metadata(tmp_path / x / "flows.parquet").num_row_groups for x in "ab"]
    assert rows[1] > rows[0]


def test_cli_dump_config_and_run(tmp_path: Path) -> None:
    runner = CliRunner()
    res = runner.invoke(app, ["simulate", "--days", "0.1", "--nodes", "12", "--customers", "3", "--dump"])
    assert res.exit_code == 0, res.output
    cfg = tomllib.loads(res.output)
    assert cfg["time"]["days"] == 0.1 and cfg["topology"]["nodes"] == 12
    (tmp_path / "c.toml").write_text("[events]\ndifficulty = 0.9\n[output]\ncsv = true\n")
    out = tmp_path / "out"
    res = runner.invoke(app, ["simulate", "--days", "0.05", "--nodes", "12", "--customers", "3",
                              "--config", str(tmp_path / "c.toml"), "--out", str(out)])
    assert res.exit_code == 0, res.output
    saved = tomllib.loads((out / "config.toml").read_text())
    assert saved["events"]["difficulty"] == 0.9 and saved["time"]["days"] == 0.05
    header = (out / "flows.csv").open().readline().strip().split(",")
    assert header[:9] == ["ts", "te", "td", "sa", "da", "sp", "dp", "pr", "flg"] and len(header) == 48
    # the CSV reads back through netflowgen.sources as the same flows (times at 1 s, as nfdump's)
    from netflowgen.sources import SourceOptions, open_source
    got = pl.from_arrow(pa.Table.from_batches(list(open_source([out / "flows.csv"], "auto",
                                                               SourceOptions(default_sampling_rate=1)))))
    want = pl.read_parquet(out / "flows.parquet").with_columns(pl.col("ts_start").dt.truncate("1s"))
    cols = ["ts_start", "src_ip", "dst_ip", "src_port", "dst_port", "proto", "tcp_flags", "packets",
            "bytes", "exporter", "in_if", "out_if"]
    assert got.height == want.height
    assert got.select(cols).sort(cols).equals(want.select(cols).sort(cols))
    res = runner.invoke(app, ["simulate", "--days", "0.05"])
    assert res.exit_code != 0  # neither --out nor --export


def test_ipv6_customers_talk_ipv6(sim: Sim) -> None:
    v6_nodes = set(sim.nodes.filter(pl.col("ip").str.contains(":"))["ip"])
    assert v6_nodes and len(v6_nodes) < sim.nodes.height  # both families by default
    f = sim.flows.with_columns(pl.col("src_ip").is_in(v6_nodes).alias("s6"), pl.col("dst_ip").is_in(v6_nodes).alias("d6"))
    v6 = f.filter(pl.col("s6") | pl.col("d6"))
    assert v6.height > 0
    assert v6["src_ip"].str.contains(":").all() and v6["dst_ip"].str.contains(":").all()  # no mixed families
    assert not f.filter(~(pl.col("s6") | pl.col("d6")))["src_ip"].str.contains(":").any()
    protos = set(v6["proto"].unique())
    assert 1 not in protos and (58 in protos or sim.cfg.topology.ipv6_customers == 0)
    # echo request / reply carry type*256 in the destination port: 128 and 129 for ICMPv6
    assert set(v6.filter(pl.col("proto") == 58)["dst_port"].unique()) <= {128 * 256, 129 * 256}
