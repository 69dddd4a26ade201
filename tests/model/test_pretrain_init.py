"""`pretrain --init`: continued pre-training of an old model on a new network (2 known + 2 new nodes)."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from netflowgen.model.io import content_hash, load_pretrained
from netflowgen.rejects import InputError
from netflowgen.tokens import Binner, TokenData, time_splits
from netflowgen.train.init_from import extend_binner, init_from_model
from netflowgen.train.pretrain import PRESETS, Dist, PretrainConfig, pretrain, read_features_for_training, validate

from .fixtures import node_minute_table

torch.set_num_threads(1)
# a 1-layer d=16 model, 64-minute windows
OLD = dataclasses.replace(PretrainConfig(**PRESETS["tiny"]), d_model=16, d_ff=32, n_heads=2, threads=1,
                          max_steps=20, eval_every=10, log_every=1)
# the continued run's schedule; its architecture settings (preset tiny's d 32) come from the old model
CONT = dataclasses.replace(PretrainConfig(**PRESETS["tiny"]), threads=1, max_steps=30, eval_every=10, lr=2e-3,
                           log_every=1)
OLD_NODES = ["10.0.0.1", "10.0.0.2"]


@pytest.fixture(scope="module")
def tables(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("init")
    full = node_minute_table(n_nodes=4, n_minutes=1000, missing=(600,))
    full = full.with_columns(pl.when(pl.col("node") == "10.0.0.4").then(pl.lit("cust9"))  # a new customer
                             .otherwise(pl.col("customer")).alias("customer"))
    full.filter(pl.col("node").is_in(OLD_NODES)).write_parquet(d / "old.parquet")
    full.write_parquet(d / "new.parquet")
    pretrain(d / "old.parquet", d / "old", OLD, log=lambda s: None)
    return {"old_features": d / "old.parquet", "new_features": d / "new.parquet", "old": d / "old"}


def _initial(tables: dict[str, Path], cfg: PretrainConfig):
    """(old model, extended binner, initial grown model, new table, training end) as the run builds them."""
    old = load_pretrained(tables["old"])
    df, train_end_ms = read_features_for_training(tables["new_features"], cfg)
    binner = extend_binner(old.binner, df.filter(pl.col("minute").dt.epoch("ms") < train_end_ms))
    return old, binner, init_from_model(old.model, old.binner, binner), df, train_end_ms


def test_init_grows_embeddings_from_nearest_node_and_keeps_old_cutoffs(tables):
    from netflowgen.detect.cores import nearest_training_nodes
    from netflowgen.detect.cube import NodeMinuteCube

    cfg = dataclasses.replace(CONT, context=64)
    old, binner, grown, df, train_end_ms = _initial(tables, cfg)
    assert binner.nodes == [*OLD_NODES, "10.0.0.3", "10.0.0.4"] and grown.node_emb.weight.shape == (4, 16)
    for key in ("cuts", "n_used", "reps", "signatures"):  # known nodes' token meaning is unchanged
        assert np.array_equal(getattr(binner, key)[:2], getattr(old.binner, key)), key
    # new nodes get cut-offs fitted on their own training minutes
    own = Binner.fit(df.filter((pl.col("minute").dt.epoch("ms") < train_end_ms) & (pl.col("node") == "10.0.0.3")))
    assert np.array_equal(binner.cuts[2], own.cuts[0])
    w_old, w_new = old.model.node_emb.weight, grown.node_emb.weight
    assert torch.equal(w_new[:2], w_old)
    cube = NodeMinuteCube.from_table(df)
    rows = np.array([cube.nodes.index(n) for n in ("10.0.0.3", "10.0.0.4")])
    train_end = (train_end_ms - int(cube.minutes[0])) // 60_000
    nearest, _ = nearest_training_nodes(old.binner, cube, rows, 0, int(train_end))
    assert torch.equal(w_new[2:], w_old[torch.from_numpy(nearest)])
    # customers: cust0, cust1 copied by name, the new cust9 at the mean row
    assert binner.customers == ["cust0", "cust1", "cust9"]
    assert torch.equal(grown.customer_emb.weight[:2], old.model.customer_emb.weight)
    torch.testing.assert_close(grown.customer_emb.weight[2], old.model.customer_emb.weight.mean(0))
    old_state = old.model.state_dict()
    for k, v in grown.state_dict().items():  # every other weight is the old model's
        if k not in ("node_emb.weight", "customer_emb.weight"):
            assert torch.equal(v, old_state[k]), k


def test_continued_training_lowers_the_new_networks_validation_loss(tables, tmp_path):
    out = tmp_path / "new"
    res = pretrain(tables["new_features"], out, CONT, log=lambda s: None, init=tables["old"])
    new = load_pretrained(out)
    assert new.config["init_from"] == content_hash(tables["old"])
    assert new.model.cfg == load_pretrained(tables["old"]).model.cfg  # d 16, not the preset's 32
    assert new.model.node_emb.weight.shape == (4, 16) and len(new.binner.nodes) == 4
    # the initial (copied) model scored on the same validation targets as the run's validations
    _, binner, grown, _, _ = _initial(tables, CONT)
    data = TokenData.load(out / "tokens", CONT.time_zone)
    va = time_splits(data.n_minutes, CONT.train_fraction, CONT.val_fraction)["val"]
    before = validate(grown.eval(), data, va[0], va[1], dataclasses.replace(CONT, context=64), Dist(), nullcontext)
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    train = [r["train_loss"] for r in rows if "train_loss" in r]
    print(f"val loss before {before['loss']:.4f} after {res['best_val_loss']:.4f}; "
          f"train loss first 5 {np.mean(train[:5]):.4f} last 5 {np.mean(train[-5:]):.4f}")
    assert res["steps"] == 30 and res["best_val_loss"] < before["loss"] - 0.01
    assert np.mean(train[-5:]) < np.mean(train[:5]) - 0.01
    assert not torch.equal(new.model.node_emb.weight[2:], grown.node_emb.weight[2:])  # new rows were learned


def test_init_refuses_contradicting_architecture_and_non_models(tables, tmp_path):
    cfg = dataclasses.replace(CONT, d_model=32)
    with pytest.raises(InputError, match=r"d_model = 32 contradicts the model's d_model = 16"):
        pretrain(tables["new_features"], tmp_path / "x", cfg, log=lambda s: None, init=tables["old"],
                 given={"d_model"})
    with pytest.raises(InputError, match="no such model folder"):
        pretrain(tables["new_features"], tmp_path / "x", CONT, log=lambda s: None, init=tmp_path / "nope")
    with pytest.raises(InputError, match="not a netflowgen model folder"):
        pretrain(tables["new_features"], tmp_path / "x", CONT, log=lambda s: None, init=tmp_path)
    assert not (tmp_path / "x").exists()  # refused before anything is written


def test_cli_init_end_to_end_and_refusal(tables, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    base = [sys.executable, "-m", "netflowgen.cli.main", "pretrain", "--features", str(tables["new_features"]),
            "--init", str(tables["old"]), "--preset", "tiny", "--threads", "1"]
    bad = subprocess.run([*base, "--out", str(tmp_path / "bad"), "--context", "128"], capture_output=True,
                         text=True, timeout=120, env=env)
    assert bad.returncode == 2, bad.stderr[-2000:]
    err = bad.stderr.strip().splitlines()
    assert len(err) == 1 and "context = 128 contradicts the model's context = 64" in err[0]
    r = subprocess.run([*base, "--out", str(tmp_path / "cli"), "--max-steps", "4", "--eval-every", "2"],
                       capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads(r.stdout)["steps"] == 4
    from netflowgen.api import NetFlowGen
    gen = NetFlowGen.from_pretrained(tmp_path / "cli")
    assert gen.config["init_from"] == content_hash(tables["old"]) and gen.model.node_emb.weight.shape == (4, 16)
    assert "d_model = 16" in (tmp_path / "cli" / "config.toml").read_text()  # resolved settings recorded
