"""NetFlowGen API: save/load round trip, predict_proba, embed, generate, unseen nodes."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest
import torch

from netflowgen.api import NetFlowGen
from netflowgen.model import TrafficGPT, model_config
from netflowgen.tokens import Binner

from .fixtures import node_minute_table

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def table() -> pl.DataFrame:
    return node_minute_table(n_nodes=3, n_minutes=300, missing=(250,))


@pytest.fixture(scope="module")
def gen(table) -> NetFlowGen:
    binner = Binner.fit(table.filter(pl.col("minute") < table["minute"][200]))
    torch.manual_seed(1)
    cfg = model_config("paper", d_model=32, n_layers=1, d_ff=64, context=64, dropout=0.0)
    return NetFlowGen(TrafficGPT(cfg, len(binner.nodes), len(binner.customers)), binner,
                      {"time_zone": "Europe/Berlin"})


def test_save_load_round_trip_gives_identical_outputs(gen, table, tmp_path):
    d = gen.save_pretrained(tmp_path / "m")
    assert {p.name for p in d.iterdir()} == {"model.safetensors", "config.json", "binner.json"}
    assert json.loads((d / "config.json").read_text())["time_zone"] == "Europe/Berlin"
    loaded = NetFlowGen.from_pretrained(d)
    np.testing.assert_array_equal(loaded.predict_proba(table), gen.predict_proba(table))
    np.testing.assert_array_equal(loaded.embed(table), gen.embed(table))
    pd_table = table.to_pandas()
    np.testing.assert_array_equal(loaded.predict_proba(pd_table), gen.predict_proba(table))


def test_predict_proba_and_embed_are_the_models_outputs_on_each_nodes_last_window(gen, table):
    p = gen.predict_proba(table)
    assert p.shape == (3, 64, 86, 10)  # last context window of each node
    np.testing.assert_allclose(p.sum(-1), 1.0, rtol=1e-5)
    data = gen.tokenize(table)
    x = data.inputs(np.arange(3), np.full(3, data.n_minutes - 64), 64)
    with torch.no_grad():
        want = torch.softmax(gen.model(x).float(), dim=-1).numpy()
        want_h = gen.model.hidden_states(x).float().numpy()
    np.testing.assert_allclose(p, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(gen.embed(table), want_h, rtol=1e-5, atol=1e-5)
    # node batches do not change a node's output, and a node's output is its own window's
    one = gen.predict_proba(table.filter(pl.col("node") == data.nodes[1]))
    np.testing.assert_allclose(one[0], p[1], rtol=1e-5, atol=1e-6)
    assert not np.allclose(p[0], p[1])


def test_generate_samples_future_minutes_and_decodes_to_bin_values(gen, table):
    out = gen.generate(table, steps=5, seed=3)
    assert out.height == 15 and out["node"].n_unique() == 3
    last = table["minute"].max()
    minutes = sorted(set(out["minute"].to_list()))
    assert len(minutes) == 5 and (minutes[0] - last).total_seconds() == 60
    b = gen.binner
    for node, part in out.group_by("node"):
        reps = b.reps[b.node_index[node[0]]]  # (F, N)
        vals = part.select(b.feature_names).to_numpy()  # (steps, F)
        assert all(np.isin(vals[:, f], reps[f]).all() for f in range(len(b.feature_names)))
    assert out.equals(gen.generate(table, steps=5, seed=3))  # seeded
    assert not out.equals(gen.generate(table, steps=5, seed=4))


def test_unseen_node_uses_its_nearest_training_node(gen, table):
    new = table.filter(pl.col("node") == "10.0.0.2").with_columns(node=pl.lit("192.0.2.7"),
                                                                  customer=pl.lit("new-customer"))
    data = gen.tokenize(new)
    # an exact copy of a training node's traffic maps to that node's cut-offs and embedding
    assert gen.binner.nodes[data.node_embed_row[0]] == "10.0.0.2"
    assert data.customers[data.node_customer[0]] == "cust1"  # unknown customer: the neighbour's
    p = gen.predict_proba(new)
    assert p.shape[0] == 1 and np.isfinite(p).all()
