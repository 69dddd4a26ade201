"""Training recipe: learning-rate schedule (warm-up, cosine, floor), weight-decay groups, the schedule
across a resume, and the per-validation history and loss curve a run writes."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest
import torch

from netflowgen.config import to_toml
from netflowgen.model import TrafficGPT, model_config
from netflowgen.train.pretrain import PRESETS, PretrainConfig, learning_rate, param_groups, pretrain, warmup_length

from .fixtures import node_minute_table

torch.set_num_threads(1)
TINY = dataclasses.replace(PretrainConfig(**PRESETS["tiny"]), threads=1, log_every=1)


@pytest.fixture(scope="module")
def features(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("feats") / "features.parquet"
    node_minute_table(n_nodes=2, n_minutes=900).write_parquet(p)
    return p


def test_lr_warms_up_linearly_then_decays_by_cosine_to_the_floor():
    cfg = PretrainConfig(lr=1e-3, warmup_steps=10, min_lr_ratio=0.1, schedule="cosine")
    lr = [learning_rate(cfg, s, 100) for s in range(100)]
    assert lr[0] == pytest.approx(1e-4)  # step 0: lr / warmup_steps
    assert lr[4] == pytest.approx(5e-4)
    assert lr[9] == pytest.approx(1e-3)  # warm-up end: the peak
    assert lr[54] == pytest.approx(1e-4 + 0.5 * 9e-4)  # half-way through the decay
    assert lr[99] == pytest.approx(1e-4)  # the last step: min_lr_ratio x lr
    assert all(a > b for a, b in zip(lr[9:], lr[10:]))  # strictly decreasing after the peak
    assert learning_rate(cfg, 130, 100) == pytest.approx(1e-4)  # steps past the run: the floor
    assert learning_rate(dataclasses.replace(cfg, min_lr_ratio=0.0), 99, 100) == 0.0
    const = dataclasses.replace(cfg, schedule="constant")  # the flat lr of earlier versions
    assert {learning_rate(const, s, 100) for s in (0, 9, 50, 99)} == {1e-3}


def test_default_warmup_is_five_percent_of_the_run_at_least_one_step():
    assert PretrainConfig().schedule == "constant"  # the default: it beat the cosine in the short run measured
    cfg = PretrainConfig(schedule="cosine")
    assert (warmup_length(cfg, 1000), warmup_length(cfg, 450), warmup_length(cfg, 10)) == (50, 22, 1)
    assert warmup_length(dataclasses.replace(cfg, warmup_steps=30), 20) == 20  # never longer than the run
    assert learning_rate(cfg, 0, 10) == cfg.lr and math.isclose(learning_rate(cfg, 9, 10), 0.1 * cfg.lr)
    text = to_toml(cfg)  # the settings are in --dump / config.toml
    assert 'schedule = "cosine"' in text and "warmup_steps = 0" in text and "min_lr_ratio = 0.1" in text
    from netflowgen.config import ConfigError
    for bad in ({"schedule": "linear"}, {"warmup_steps": -1}, {"min_lr_ratio": 1.5}):
        with pytest.raises(ConfigError):
            PretrainConfig(**bad)


def test_weight_decay_only_on_matrices_and_embeddings():
    model = TrafficGPT(model_config("paper", n_layers=2, d_model=16, d_ff=32, n_heads=2), 3, 2)
    decay, no_decay = param_groups(model, 0.1)
    assert (decay["weight_decay"], no_decay["weight_decay"]) == (0.1, 0.0)
    names = {id(p): n for n, p in model.named_parameters()}
    got_decay = {names[id(p)] for p in decay["params"]}
    got_no = {names[id(p)] for p in no_decay["params"]}
    assert got_decay | got_no == set(names.values()) and not got_decay & got_no
    assert {"wte.weight", "node_emb.weight", "customer_emb.weight", "pos_emb.weight", "head.weight"} <= got_decay
    linear = {f"{n}.weight" for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    embed = {f"{n}.weight" for n, m in model.named_modules() if isinstance(m, torch.nn.Embedding)}
    assert got_decay == linear | embed  # every Linear weight and embedding table, nothing else
    norms = {f"{n}.{k}" for n, m in model.named_modules() if isinstance(m, torch.nn.LayerNorm)
             for k in ("weight", "bias")}
    biases = {n for n in names.values() if n.endswith(".bias")}
    assert got_no == norms | biases and "ln_f.weight" in got_no and "head.bias" in got_no


def _interrupt_at(message: str):
    def log(s: str) -> None:  # Ctrl-C during that validation: the previous checkpoint is the resume point
        if s.startswith(message):
            raise KeyboardInterrupt
    return log


def _lr_by_step(out: Path) -> dict[int, float]:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["lr"] for r in rows if "lr" in r}  # a resumed run's rows come last and win


def test_resume_continues_the_schedule_at_the_right_step(features, tmp_path):
    cfg = dataclasses.replace(TINY, max_steps=8, eval_every=4, warmup_steps=3, weight_decay=0.1, schedule="cosine")
    full = pretrain(features, tmp_path / "full", cfg, log=lambda s: None)
    first = pretrain(features, tmp_path / "cut", cfg, log=_interrupt_at("step 8:"))
    assert first["stop"] == "interrupted"  # the last checkpoint is at step 4
    logged: list[str] = []
    resumed = pretrain(features, tmp_path / "cut", cfg, resume=True, log=logged.append)
    assert any("at step 4" in s for s in logged) and resumed["steps"] == 8
    a = torch.load(tmp_path / "full" / "checkpoint.pt", weights_only=True)
    b = torch.load(tmp_path / "cut" / "checkpoint.pt", weights_only=True)
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    lr_full, lr_cut = _lr_by_step(tmp_path / "full"), _lr_by_step(tmp_path / "cut")
    assert lr_cut == lr_full and lr_full == {s: pytest.approx(learning_rate(cfg, s - 1, 8)) for s in range(1, 9)}
    assert lr_full[3] == pytest.approx(cfg.lr) and lr_full[8] == pytest.approx(cfg.min_lr_ratio * cfg.lr)
    groups = a["optimizer"]["param_groups"]  # the two AdamW groups of the run
    assert [g["weight_decay"] for g in groups] == [0.1, 0.0] and all(g["lr"] == lr_full[8] for g in groups)
    # history.json: one row per validation, the same in the resumed run (up to wall seconds)
    hist_full = json.loads((tmp_path / "full" / "history.json").read_text())
    hist_cut = json.loads((tmp_path / "cut" / "history.json").read_text())
    assert [r["step"] for r in hist_full] == [4, 8] and set(hist_full[0]) == {"step", "wall_s", "lr", "train_loss",
                                                                           "val_loss"}
    strip = lambda rows: [{k: v for k, v in r.items() if k != "wall_s"} for r in rows]  # noqa: E731
    assert strip(hist_cut) == strip(hist_full)
    assert hist_full[1]["val_loss"] == full["best_val_loss"] or hist_full[0]["val_loss"] == full["best_val_loss"]
    assert (tmp_path / "full" / "loss_curve.png").read_bytes()[:4] == b"\x89PNG"
    # going on longer after the run: the schedule stays the run's, the added steps use the floor
    logged.clear()
    longer = pretrain(features, tmp_path / "cut", dataclasses.replace(cfg, max_steps=10), resume=True,
                      log=logged.append)
    assert longer["steps"] == 10 and any("schedule over 8 steps" in s for s in logged)
    lr_longer = _lr_by_step(tmp_path / "cut")
    assert lr_longer[9] == lr_longer[10] == pytest.approx(cfg.min_lr_ratio * cfg.lr)
