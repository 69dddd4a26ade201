"""The simulated ISP's noise floor (`netflowgen experiment noise-floor`): replicates redraw exactly
the per-minute randomness, the entropy estimates are right on known distributions, and the floor
lies below what the bigrams reach on the same targets."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from typer.testing import CliRunner

from netflowgen import config as C
from netflowgen.cli.main import app
from netflowgen.experiments.noise_floor import (
    NoiseFloorConfig,
    feature_config_beside,
    floor_estimate,
    noise_floor,
    replicate_tokens,
)
from netflowgen.features import FeatureConfig, build_features
from netflowgen.model import ModelConfig, TrafficGPT
from netflowgen.model.io import save_model
from netflowgen.schema import FEATURE_NAMES, time_splits
from netflowgen.simulate import SimConfig, simulate
from netflowgen.simulate.run import Simulation
from netflowgen.tokens import Binner, TokenData

SPLIT = (0.72, 0.08)


@pytest.fixture(scope="module")
def isp(tmp_path_factory) -> tuple[Path, Path, Binner]:
    """A 10-node, 1-day simulated ISP, its features and cut-offs fitted on the training range."""
    d = tmp_path_factory.mktemp("floor")
    cfg = SimConfig(seed=3)
    cfg.topology.customers, cfg.topology.nodes = 3, 10
    cfg.time.days = 1.0
    cfg.events.outages_per_exporter_day = 8.0  # some inside the validation range
    simulate(cfg, d / "sim")
    build_features([d / "sim" / "flows.parquet"], d / "feats.parquet",
                   FeatureConfig(customers=str(d / "sim" / "customers.csv")))
    C.save_beside(d / "feats.parquet", FeatureConfig(customers="elsewhere/customers.csv"))
    df = pl.read_parquet(d / "feats.parquet")
    train_end = time_splits(df["minute"].n_unique(), *SPLIT)["train"][1]
    binner = Binner.fit(df.filter(pl.col("minute") < df["minute"].min() + pl.duration(minutes=train_end)))
    return d / "sim", d / "feats.parquet", binner


def test_replicates_redraw_the_minutes_and_none_is_the_simulation_itself(isp, tmp_path):
    sim_dir, feats, binner = isp
    sim = Simulation(C.load(SimConfig, sim_dir / "config.toml"))
    fcfg = feature_config_beside(feats, sim_dir)
    assert fcfg.customers == str(sim_dir / "customers.csv")  # the recorded path is not the one used
    data = TokenData.build(pl.read_parquet(feats), binner, None)
    lo, hi = time_splits(data.n_minutes, *SPLIT)["val"]
    own = replicate_tokens(sim, lo, hi, None, fcfg, binner, data.nodes, "UTC", tmp_path)
    assert np.array_equal(own, np.asarray(data.tokens[:, lo:hi]))  # the same records, the same tokens
    first = replicate_tokens(sim, lo, hi, 0, fcfg, binner, data.nodes, "UTC", tmp_path)
    again = replicate_tokens(sim, lo, hi, 0, fcfg, binner, data.nodes, "UTC", tmp_path)
    other = replicate_tokens(sim, lo, hi, 1, fcfg, binner, data.nodes, "UTC", tmp_path)
    assert np.array_equal(first, again)  # a replicate is a fixed stream
    assert 0.1 < (first != own).mean() < 0.9 and (first != other).mean() > 0.1  # new draws, same regime
    # outages are part of the plan: their minutes are missing in every replicate
    out = sim.plan.outages
    node_ips = sim.topo.addresses.slice(0, sim.topo.n_nodes).to_pylist()
    node_exporter = {n: sim.topo.node_exporter[i] for i, n in enumerate(node_ips)}
    down = [(data.nodes.index(n), m - lo) for n in data.nodes for x, a, b in zip(out.exporter, out.start, out.end)
            if node_exporter[n] == x for m in range(max(a, lo), min(b, hi))]
    assert down, "the fixture's validation range should hold an outage"
    for tok in (own, first, other):
        assert all((tok[r, m] == binner.missing_token).all() for r, m in down)


def test_entropy_estimates_on_known_distributions():
    N = 4
    counts = np.zeros((1, 2, 1, N), dtype=np.uint16)
    counts[0, 0, 0, 2] = 64  # always bin 2: entropy 0
    counts[0, 1, 0, [0, 1]] = 32  # a fair coin over bins 0 and 1: log 2
    observed = np.array([[[2], [1]]], dtype=np.uint8)
    e = floor_estimate(counts, observed, N, 1.0, ("f",))
    assert e.count[0] == 2
    assert e.plug_in[0] == pytest.approx(math.log(2))
    assert e.miller_madow[0] == pytest.approx(math.log(2) + 1 / 128)
    held = -math.log((64 + 0.25) / 65) - math.log((32 + 0.25) / 65)
    assert e.held_out[0] == pytest.approx(held)
    observed[0, 0, 0] = N  # a missing observed minute is not a target
    assert floor_estimate(counts, observed, N, 1.0, ("f",)).count[0] == 1


def test_cli_reports_the_floor_below_the_bigrams(isp, tmp_path):
    sim_dir, feats, binner = isp
    cfg = ModelConfig(n_layers=1, n_heads=2, d_model=16, d_ff=32, context=64)
    torch.manual_seed(0)
    model = TrafficGPT(cfg, len(binner.nodes), len(binner.customers))
    save_model(tmp_path / "model", model, binner, {"time_zone": "UTC", "train_fraction": SPLIT[0],
                                                   "val_fraction": SPLIT[1]})
    r = CliRunner().invoke(app, ["experiment", "noise-floor", "--sim", str(sim_dir), "--features", str(feats),
                                 "-m", str(tmp_path / "model"), "-k", "8", "-o", str(tmp_path / "out")])
    assert r.exit_code == 0, r.output
    res = json.loads((tmp_path / "out" / "noise_floor.json").read_text())
    assert res["replicates"] == 8 and res["dropped"] == 0 and res["targets"] > 50_000
    for g in ("all", "volume", "protocol", "port", "flags"):
        row = res[g]
        assert row["plug_in"] <= row["miller_madow"] <= row["held_out"]
        assert row["at_half"]["plug_in"] <= row["plug_in"]  # more replicates, less downward bias
    a = res["all"]
    assert a["plug_in"] < min(a["bigram_pooled"], a["bigram_per_node"])
    assert a["model"] > a["plug_in"]  # an untrained model is far from the floor
    assert (tmp_path / "out" / "noise_floor.md").read_text().count("| volume |") == 1
    same = noise_floor(sim_dir, feats, binner, FEATURE_NAMES, SPLIT, "UTC", NoiseFloorConfig(replicates=8))
    assert same["all"]["plug_in"] == pytest.approx(a["plug_in"])  # replicates are reproducible
    assert same["all"]["bigram_per_node"] == pytest.approx(a["bigram_per_node"])
