"""`experiment paper` parts added for issue 11 on a tiny synthetic ISP with tiny backbones (a few
pre-training steps): the label-efficiency curve with its zero-label point, and the ablations of
Tables 8 (unseen nodes), 9 (86 vs 6 features) and 10 (model sizes)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from netflowgen.detect.earlydetect import EarlyDetectConfig
from netflowgen.detect.finetune import FinetuneConfig
from netflowgen.detect.metrics import MetricConfig
from netflowgen.experiments.backbones import AblationConfig, BackboneSpec, pretrained_backbone
from netflowgen.experiments.paper import PaperConfig, PaperRun
from netflowgen.experiments.report import label_positions, write_report
from netflowgen.model.io import load_pretrained

from .synthetic import make_dataset

torch.set_num_threads(1)

SIZES = ["1-2-16-32", "1-2-32-64"]


def _config(d: Path, **kw) -> PaperConfig:
    return PaperConfig(features=str(d / "f.parquet"), alerts=str(d / "a.csv"), length=64, seeds=[0, 1],
                       headline_labels="16", earlydetect=EarlyDetectConfig(window=64, horizon=10, margin=30,
                                                                             split=[0.6, 0.2]),
                       finetune=FinetuneConfig(epochs=3, min_epochs=1, patience=2, head_hidden=16, batch_size=8),
                       metrics=MetricConfig(warmup=8),
                       ablations=AblationConfig(steps=4, preset="tiny", seeds=2, size=SIZES[0], sizes=SIZES,
                                                holdout_share=0.4), **kw)


@pytest.fixture(scope="module")
def ablated(tmp_path_factory):
    d = tmp_path_factory.mktemp("ablations")
    feats, alerts, _ = make_dataset(n_nodes=5, n_minutes=2400, attacks_per_node=8)
    feats.write_parquet(d / "f.parquet")
    alerts.write_csv(d / "a.csv")
    cfg = _config(d, methods=["CUSUM"])
    cfg.validate()
    logs: list[str] = []
    run = PaperRun(cfg, log=logs.append, work_dir=d / "out")
    run.prepare()
    res = run.run(("table8", "table9", "table10"))
    return d, run, res, logs


def test_table8_holds_nodes_out_of_pretraining_but_scores_them(ablated) -> None:
    d, run, res, _ = ablated
    t8 = res["table8"]
    held = t8["heldout_nodes"]
    assert len(held) == 2 and t8["heldout_in_binner"] == [[]]
    pre = load_pretrained(d / "out" / "backbones" / t8["backbones"][0])
    assert not set(held) & set(pre.binner.node_index) and len(pre.binner.nodes) == 3
    # every held-out node borrows a training node (nearest by signature)
    assert set(t8["mapped_to"][t8["backbones"][0]]) == set(held)
    assert {v["training_node"] for v in t8["mapped_to"][t8["backbones"][0]].values()} <= set(pre.binner.nodes)
    ex = run.ctx.examples
    n_test = {g: int(((ex["split"] == "test") & (ex["node"].is_in(held) == (g == "held-out"))).sum())
              for g in ("seen", "held-out")}
    for r in t8["runs"]:  # both groups scored, the confusion matrix covers every test example
        for g in ("seen", "held-out"):
            c = r[g]
            assert c["examples"] == n_test[g] > 0 and c["tp"] + c["fp"] + c["fn"] + c["tn"] == n_test[g]
            assert c["attacks"] == c["tp"] + c["fn"] > 0
    assert len(t8["runs"]) == 2 and t8["groups"]["held-out"]["examples"][0] == n_test["held-out"]


def test_table9_light_backbone_embeds_six_features(ablated) -> None:
    d, _, res, _ = ablated
    t9 = res["table9"]
    assert set(t9) == {"NetFlowGen|86", "NetFlowGen_Light|6"}
    light = load_pretrained(d / "out" / "backbones" / t9["NetFlowGen_Light|6"]["pretrain"][0]["backbone"])
    full = load_pretrained(d / "out" / "backbones" / t9["NetFlowGen|86"]["pretrain"][0]["backbone"])
    assert len(light.model.cfg.input_features) == 6 and len(full.model.cfg.input_features) == 86
    assert light.model.cfg.d_model == full.model.cfg.d_model == 16  # same size, only the features differ
    agg = t9["NetFlowGen|86"]["aggregate"]
    assert agg["seeds"] == [0, 1]
    f1s = [r["test"]["f1"] for r in t9["NetFlowGen|86"]["runs"]]
    assert agg["f1"][0] == pytest.approx(np.mean(f1s))


def test_table10_sizes_differ_and_share_the_cached_backbone(ablated) -> None:
    d, run, res, logs = ablated
    t10 = res["table10"]
    assert list(t10) == SIZES
    small, big = (t10[s] for s in SIZES)
    assert big["parameters"] > small["parameters"] > 0 and small["steps"] == [4]
    assert np.isfinite(small["val_loss"][0]) and 0 <= small["val_accuracy"][0] <= 1
    assert small["val_perplexity"][0] == pytest.approx(np.exp(small["val_loss"][0]), rel=1e-4)
    # Table 9's full backbone is Table 10's first size: pre-trained once (4 backbones in all)
    assert small["backbones"] == [res["table9"]["NetFlowGen|86"]["pretrain"][0]["backbone"]]
    assert sum("pre-training backbone" in s for s in logs) == 4
    # a later run with the same settings reuses the folder; other settings pre-train a new one
    spec = BackboneSpec("paper", SIZES[1], 0)
    cache = d / "out" / "backbones"
    again: list[str] = []
    bb = pretrained_backbone(spec, run.cfg.features, cache, run.cfg.ablations, run.ctx.split, again.append)
    assert "cached" in again[0] and bb.path.name == big["backbones"][0]
    report = write_report(res, d / "rep", run)
    text = report.read_text()
    assert "## Table 8" in text and "## Table 9" in text and "## Table 10" in text and "1-2-32-64" in text
    assert json.loads((d / "rep" / "results.json").read_text())["table10"][SIZES[0]]["parameters"] == small["parameters"]


def test_label_curve_has_counts_all_and_a_zero_label_point(ablated) -> None:
    d, _, res, _ = ablated
    model = d / "out" / "backbones" / res["table10"][SIZES[0]]["backbones"][0]
    cfg = _config(d, model=str(model), methods=["NetFlowGen", "CUSUM"], label_curve=["8", "16", "all"],
                  label_curve_seeds=2)
    run = PaperRun(cfg, log=lambda s: None)
    run.prepare()
    lc = run.run(("labels",))["label_curve"]
    assert set(lc) == {"Surprisal|0", "Surprisal|8", "Surprisal|16"} | {
        f"{m}|{n}" for m in ("NetFlowGen", "CUSUM") for n in ("8", "16", "all")}
    # at a count the zero-label detector is untrained: the labels set its theta only, seed by seed
    for n in ("8", "16"):
        s = lc[f"Surprisal|{n}"]
        assert s["n"] == int(n) and s["threshold"] == "labels" and s["aggregate"]["seeds"] == [0, 1]
    assert lc["NetFlowGen|8"]["n"] == 8 and lc["NetFlowGen|16"]["n"] == 16
    assert lc["NetFlowGen|all"]["n"] > 16 and lc["CUSUM|8"]["aggregate"]["seeds"] == [0, 1]
    zero = lc["Surprisal|0"]
    r = zero["runs"][0]
    # no label: nothing fitted or tuned, theta from the false-alarm budget; same test split as the others
    assert r["counts"] == {"fit": 0, "stop": 0, "tune": 0, "test": lc["NetFlowGen|8"]["aggregate"]["counts"]["test"]}
    assert zero["threshold"] == "fa-budget[1/node-day]" and 0 < r["theta"] <= 1
    det = run.curves[("Surprisal", "all", "all", 0)].detector
    assert det.theta == r["theta"] and det.info["fa_budget"]["budget_per_node_day"] == 1.0
    assert np.array_equal(np.asarray(r["test_detection"]) >= 0,
                          (run.curves[("Surprisal", "all", "all", 0)].test_curves[:, 8:] < r["theta"]).any(axis=1))
    report = write_report({"config": res["config"] | {"fa_budget": 1.0}, "label_curve": lc}, d / "lrep").read_text()
    assert "label_efficiency.png" in report and "Surprisal at 0 labels" in report
    assert (d / "lrep" / "label_efficiency.png").stat().st_size > 0


def test_label_positions_put_zero_first_and_all_last() -> None:
    entries = {f"m|{k}": {"labels": k} for k in ("0", "10", "360", "all")}
    pos = label_positions(entries)
    assert pos["0"] < pos["10"] < pos["360"] < pos["all"]
    with pytest.raises(ValueError, match="label counts"):
        PaperConfig(label_curve=["10", "ten"]).validate()
