"""The earlydetect and finetune commands on a tiny synthetic ISP, and the Detector they save."""

from __future__ import annotations

import json

import polars as pl
import pytest
import torch
import typer
from typer.testing import CliRunner

from .synthetic import make_dataset

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    from netflowgen.api import NetFlowGen
    from netflowgen.model import TrafficGPT, model_config
    from netflowgen.tokens import Binner

    d = tmp_path_factory.mktemp("det")
    feats, alerts, truth = make_dataset(n_nodes=4, n_minutes=2400, attacks_per_node=6)
    feats.write_parquet(d / "features.parquet")
    alerts.write_csv(d / "alerts.csv")
    truth.write_csv(d / "truth.csv")
    torch.manual_seed(0)
    binner = Binner.fit(feats.filter(pl.col("minute") < feats.get_column("minute").min() + pl.duration(minutes=1440)))
    cfg = model_config("paper", n_layers=1, n_heads=2, d_model=16, d_ff=32, context=64, dropout=0.0)
    NetFlowGen(TrafficGPT(cfg, len(binner.node_customer), len(binner.customers)), binner).save_pretrained(d / "model")
    return d


def app() -> typer.Typer:
    from netflowgen.cli import earlydetect, finetune
    a = typer.Typer()
    earlydetect.register(a)
    finetune.register(a)
    return a


def test_earlydetect_and_finetune_commands_then_api_detect(workdir) -> None:
    d = workdir
    r = CliRunner().invoke(app(), ["earlydetect", "-f", str(d / "features.parquet"), "-a", str(d / "alerts.csv"),
                                   "--truth", str(d / "truth.csv"), "-o", str(d / "ed"), "--window", "64",
                                   "--horizon", "10", "--margin", "30"])
    assert r.exit_code == 0, r.output
    assert "Table 2" in r.output and (d / "ed" / "config.toml").exists()
    summary = json.loads((d / "ed" / "summary.json").read_text())
    assert summary["examples"] == pl.read_parquet(d / "ed" / "examples.parquet").height > 0

    (d / "ft.toml").write_text("window = 64\nlength = 64\nsplit = [0.6, 0.2]\n[finetune]\nepochs = 3\nmin_epochs = 1\n"
                               "head_hidden = 16\n[metrics]\nwarmup = 8\n")
    r = CliRunner().invoke(app(), ["finetune", "-e", str(d / "ed" / "examples.parquet"), "-f", str(d / "features.parquet"),
                                   "-m", str(d / "model"), "-o", str(d / "ft"), "--labels", "val", "-c", str(d / "ft.toml")])
    assert r.exit_code == 0, r.output
    res = json.loads((d / "ft" / "result.json").read_text())
    assert res["regime"] == "val" and res["metric_config"]["overhead_bound"] == 0.8
    assert "p=80%" in r.output  # every report prints its constants

    from netflowgen import Detector
    det = Detector.load(d / "ft")
    table = pl.read_parquet(d / "features.parquet")
    scores = det.score(table)
    assert scores.height == 4 * 2400
    for _, g in scores.group_by("node"):
        s = g.sort("minute").get_column("score").to_numpy()
        assert (s > 0).all() and s.max() <= 1.0
    det.theta = 0.0
    assert not det.score(table).get_column("alarm").any()
    det.theta = 1.5  # every score is below 1.5: every minute after the warm-up alarms
    alarm = det.score(table).sort(["node", "minute"]).get_column("alarm").to_numpy().reshape(4, 2400)
    assert alarm[:, det.warmup:].all() and not alarm[:, :det.warmup].any()


def test_dump_prints_settings() -> None:
    r = CliRunner().invoke(app(), ["finetune", "-e", "x", "-f", "y", "-o", "z", "--dump"])
    assert r.exit_code == 0 and "overhead_bound = 0.8" in r.output and "[finetune]" in r.output


def test_finetune_takes_the_examples_own_window_and_refuses_another(workdir) -> None:
    """`earlydetect --window 64` then `finetune` without a window: the examples are cropped at their own
    minutes (the old default of 512 shifted every example 448 minutes late, silently for most methods)."""
    from netflowgen.detect.stages import FinetuneRun, fit_detector, run_finetune
    from netflowgen.rejects import InputError

    d = workdir
    r = CliRunner().invoke(app(), ["earlydetect", "-f", str(d / "features.parquet"), "-a", str(d / "alerts.csv"),
                                   "-o", str(d / "ed64"), "--window", "64", "--horizon", "10", "--margin", "30"])
    assert r.exit_code == 0, r.output
    (d / "ft64.toml").write_text("length = 32\nsplit = [0.6, 0.2]\n[metrics]\nwarmup = 8\n")
    r = CliRunner().invoke(app(), ["finetune", "-e", str(d / "ed64" / "examples.parquet"), "-f", str(d / "features.parquet"),
                                   "-o", str(d / "ft64"), "--method", "Static-percentile", "--labels", "val",
                                   "-c", str(d / "ft64.toml")])
    assert r.exit_code == 0, r.output
    assert "window = 64" in (d / "ft64" / "config.toml").read_text()  # the resolved window is what was run
    cli = json.loads((d / "ft64" / "result.json").read_text())["test"]
    api = fit_detector("Static-percentile", d / "features.parquet", d / "ed64" / "examples.parquet", labels="val",
                       window=64, length=32, split=[0.6, 0.2], metrics={"warmup": 8}).info["test"]
    assert cli == pytest.approx(api)

    ex, feats = d / "ed64" / "examples.parquet", d / "features.parquet"
    with pytest.raises(InputError, match="examples are 64-minute windows"):
        run_finetune(FinetuneRun(method="Static-percentile", window=128, length=32), ex, feats, d / "x")
    short = pl.read_parquet(feats)
    short.filter(pl.col("minute") < short.get_column("minute").min() + pl.duration(minutes=1200)).write_parquet(d / "short.parquet")
    with pytest.raises(InputError, match="built from another table"):
        run_finetune(FinetuneRun(method="Static-percentile", length=32), ex, d / "short.parquet", d / "x")
