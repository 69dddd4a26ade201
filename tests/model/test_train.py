"""Pre-training loop: exact resume, DDP gradients equal single-process gradients, CLI under torchrun."""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from netflowgen.tokens import Binner, TokenData
from netflowgen.train.pretrain import PRESETS, Dist, PretrainConfig, build_model, loss_and_backward, pretrain

from .fixtures import node_minute_table

torch.set_num_threads(1)
TINY = dataclasses.replace(PretrainConfig(**PRESETS["tiny"]), threads=1, log_every=1)


@pytest.fixture(scope="module")
def features(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("feats") / "features.parquet"
    node_minute_table(n_nodes=3, n_minutes=1200, missing=(700, 880)).write_parquet(p)
    return p


def _weights(out: Path) -> dict[str, torch.Tensor]:
    return torch.load(out / "checkpoint.pt", weights_only=True)["model"]


def test_resume_after_interruption_continues_identically(features, tmp_path):
    cfg = dataclasses.replace(TINY, dropout=0.2, max_steps=6, eval_every=3)  # dropout: the RNG must resume too
    full = pretrain(features, tmp_path / "full", cfg, log=lambda s: None)
    assert full["steps"] == 6
    def ctrl_c_at_step_6(s: str) -> None:  # interrupted in the last validation: resumes from step 3
        if s.startswith("step 6:"):
            raise KeyboardInterrupt
    first = pretrain(features, tmp_path / "cut", cfg, log=ctrl_c_at_step_6)  # same settings: same lr schedule
    assert first["stop"] == "interrupted"
    resumed = pretrain(features, tmp_path / "cut", cfg, resume=True, log=lambda s: None)
    assert resumed["steps"] == 6
    a, b = _weights(tmp_path / "full"), _weights(tmp_path / "cut")
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert resumed["best_val_loss"] == full["best_val_loss"]
    # metrics were logged for every step, and training learned: the validation loss went down
    # (deterministic here; an optimizer that does not step, or steps uphill, fails it)
    rows = [json.loads(line) for line in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    assert sum("train_loss" in r for r in rows) == 6
    val = [r["val_loss"] for r in rows if "val_loss" in r]
    assert len(val) == 2 and val[1] < val[0] - 1e-3


def test_resume_refuses_changed_settings_by_name(features, tmp_path):
    from netflowgen.config import ConfigError
    cfg = dataclasses.replace(TINY, max_steps=3, eval_every=3)
    pretrain(features, tmp_path / "r", cfg, log=lambda s: None)
    before = (tmp_path / "r" / "config.toml").read_text()
    with pytest.raises(ConfigError, match=r"lr: 0\.\d+ -> 0\.5.*seed: 0 -> 7"):
        pretrain(features, tmp_path / "r", dataclasses.replace(cfg, lr=0.5, seed=7, max_steps=6), resume=True,
                 log=lambda s: None)
    assert (tmp_path / "r" / "config.toml").read_text() == before  # the run's settings are not overwritten
    res = pretrain(features, tmp_path / "r", dataclasses.replace(cfg, max_steps=6), resume=True, log=lambda s: None)
    assert res["steps"] == 6  # going on longer is allowed
    blob = torch.load(tmp_path / "r" / "checkpoint.pt", weights_only=True)
    assert '"d_model"' in blob["model_args"] and '"lr"' in blob["config"]  # the checkpoint carries its config


def test_early_stopping_stops_on_validation_loss(features, tmp_path):
    cfg = dataclasses.replace(TINY, lr=0.0, max_steps=50, eval_every=2, patience=2)  # lr 0: never improves
    res = pretrain(features, tmp_path / "es", cfg, log=lambda s: None)
    assert res["stop"] == "early_stopping" and res["steps"] == 6  # best at 2, no gain at 4 and 6


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _batch(data: TokenData) -> tuple[np.ndarray, np.ndarray]:
    # windows 1 and 3 hold missing minutes: the two ranks see different numbers of targets
    return np.array([0, 1, 2, 0, 1, 2]), np.array([650, 10, 860, 300, 500, 100])


def _grads_worker(rank: int, world: int, port: int, tokdir: str, binner: str, out: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    import torch.distributed as dist

    from netflowgen.train.pretrain import init_distributed

    d = init_distributed(torch.device("cpu"))
    data, b = TokenData.load(tokdir), Binner.load(binner)
    torch.manual_seed(0)
    raw = build_model(TINY, b)
    model = torch.nn.parallel.DistributedDataParallel(raw)
    nodes, starts = _batch(data)
    per = len(nodes) // world
    x = data.inputs(nodes[rank * per:(rank + 1) * per], starts[rank * per:(rank + 1) * per], TINY.context)
    loss = loss_and_backward(model, raw, x, d, lambda: torch.autocast("cpu", enabled=False))
    if rank == 0:
        torch.save({"loss": torch.tensor(loss), **{k: p.grad for k, p in raw.named_parameters()}}, out)
    dist.barrier()
    dist.destroy_process_group()


def test_ddp_two_processes_match_single_process_gradients(features, tmp_path):
    import polars as pl

    df = pl.read_parquet(features)
    binner = Binner.fit(df)
    binner.save(tmp_path / "binner.json")
    data = TokenData.build(df, binner, tmp_path / "tokens")
    torch.manual_seed(0)
    raw = build_model(TINY, binner)
    nodes, starts = _batch(data)
    ref_loss = loss_and_backward(raw, raw, data.inputs(nodes, starts, TINY.context), Dist(),
                                 lambda: torch.autocast("cpu", enabled=False))
    out = tmp_path / "ddp_grads.pt"
    mp.spawn(_grads_worker, args=(2, _free_port(), str(tmp_path / "tokens"), str(tmp_path / "binner.json"), str(out)),
             nprocs=2, join=True)
    got = torch.load(out, weights_only=True)
    assert abs(got.pop("loss").item() - ref_loss) < 1e-6
    for k, p in raw.named_parameters():
        torch.testing.assert_close(got[k], p.grad, rtol=1e-5, atol=1e-7, msg=k)


@pytest.mark.slow
def test_cli_under_torchrun_two_processes(features, tmp_path):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
           str(_free_port()), "-m", "netflowgen.cli.pretrain", "--features", str(features), "--out",
           str(tmp_path / "ddp"), "--preset", "tiny", "--max-steps", "2", "--eval-every", "2", "--threads", "1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    single = pretrain(features, tmp_path / "single", dataclasses.replace(TINY, max_steps=2, eval_every=2),
                      log=lambda s: None)
    a, b = _weights(tmp_path / "ddp"), _weights(tmp_path / "single")
    for k in a:  # Adam's first steps are ~lr * sign(grad): equal up to float noise in the gradients
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-5, msg=k)
    assert '"world_size": 2' in r.stdout and single["world_size"] == 1


def test_settings_are_validated():
    from netflowgen.config import ConfigError

    for bad in ({"precision": "fp8"}, {"model": "4-4-64-64"}, {"predicted": "in_all_pkt,nope"}, {"context": 1}):
        with pytest.raises(ConfigError):
            PretrainConfig(**bad)
    assert PretrainConfig(predicted="out_all_byt,in_all_pkt").predicted  # names in any order are fine


@pytest.mark.parametrize("case, message", [
    ("short", "shorter than one window of context = 64"),
    ("all_missing", "every node-minute is missing"),
    ("empty", "no rows"),
    ("no_column", r"missing column\(s\) \['in_all_pkt'\]"),
    ("not_parquet", "not a readable Parquet"),
])
def test_degenerate_inputs_are_one_clear_error(tmp_path, case, message):
    import polars as pl

    from netflowgen.rejects import InputError
    df = node_minute_table(n_nodes=2, n_minutes=200 if case != "short" else 60)
    p = tmp_path / "f.parquet"
    if case == "all_missing":
        df = df.with_columns(pl.lit(True).alias("missing"))
    elif case == "empty":
        df = df.head(0)
    elif case == "no_column":
        df = df.drop("in_all_pkt")
    df.write_parquet(p)
    if case == "not_parquet":
        p.write_text("node,minute\n1,2\n")
    with pytest.raises(InputError, match=message):
        pretrain(p, tmp_path / "out", TINY, log=lambda s: None)
