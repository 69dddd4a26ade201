"""The paper's ablations (section 7) as opt-in parts of `experiment paper`, each on backbones it
pre-trains itself on a step budget (`experiments.backbones`):

    table8   unseen nodes: a backbone pre-trained without a share of the nodes (their train and
             validation examples are also left out of the fine-tuning labels), NetFlowGen fine-tuned
             as usual; the confusion matrix (TP / FP / FN / TN) and F1 on the test examples of the
             seen and the held-out nodes, and the training node each held-out node was mapped to
    table9   NetFlowGen (86 input features) against NetFlowGen_Light (the 6 volume features),
             same size and budget; the Table 5 metrics
    table10  model sizes: parameters, lr, dropout, the best validation loss / accuracy /
             perplexity of pre-training, and the F1 of NetFlowGen fine-tuned on each

NetFlowGen is the frozen backbone + SAFE head on the headline label regime, scored like Table 5.
Every number is mean ± sd over pre-training seeds x fine-tuning seeds; per-run numbers are kept.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from netflowgen.detect.pipeline import DetectionContext, MethodResult, fit_curves, load_pretrained, score
from netflowgen.experiments.backbones import Backbone, BackboneSpec, pretrained_backbone
from netflowgen.experiments.paper import PaperRun, aggregate, mean_std

CONFUSION = ("tp", "fp", "fn", "tn")


def _backbone(run: PaperRun, spec: BackboneSpec) -> Backbone:
    """The run's backbone of `spec` (pre-trained once per run; the folder cache serves later runs)."""
    memo = run.backbones
    if spec not in memo:
        if run.work_dir is None:
            raise ValueError("the ablation parts need a folder for their backbones (PaperRun(work_dir=...))")
        abl = run.cfg.ablations
        cache = Path(abl.cache) if abl.cache else Path(run.work_dir) / "backbones"
        memo[spec] = pretrained_backbone(spec, run.cfg.features, cache, abl, run.ctx.split, run.log)
    return memo[spec]


def _context(run: PaperRun, backbone: Backbone, examples: pl.DataFrame | None = None) -> tuple[DetectionContext, Any]:
    """A detection context of the run's cube and examples (default all) on `backbone`."""
    pre = load_pretrained(backbone.path)
    ex = run.examples if examples is None else examples
    ctx = DetectionContext.build(run.ctx.cube, ex, run.cfg.earlydetect.window, run.ctx.length, pre, run.ctx.split,
                                 run.features)
    return ctx, pre


def _finetuned(run: PaperRun, ctx: DetectionContext, tag: str) -> list[MethodResult]:
    """NetFlowGen fine-tuned on the headline labels of `ctx`, one result per fine-tuning seed."""
    import time
    out = []
    for s in run.cfg.seeds[:run.cfg.ablations.seeds]:
        t0 = time.time()
        cs = fit_curves(ctx, "NetFlowGen", run.cfg.headline_labels, s, "all", run.cfg.finetune)
        out.append(score(ctx, cs, run.cfg.metrics))
        run.log(f"  NetFlowGen on {tag} seed={s}: F1 {out[-1].test['f1']:.3f} ({time.time() - t0:.1f} s)")
    return out


def _seeds(run: PaperRun) -> list[int]:
    return list(run.cfg.seeds[:run.cfg.ablations.pretrain_seeds])


def heldout_nodes(run: PaperRun) -> list[str]:
    """Table 8's held-out nodes: the configured list, else a random share (seeded by the run's
    first seed) of the cube's nodes; at least one node is held out and one is kept."""
    nodes = list(run.ctx.cube.nodes)
    abl = run.cfg.ablations
    if abl.holdout_nodes:
        unknown = sorted(set(abl.holdout_nodes) - set(nodes))
        if unknown:
            raise ValueError(f"ablations.holdout_nodes: not in the features table: {unknown[:5]}")
        return sorted(abl.holdout_nodes)
    k = min(len(nodes) - 1, max(1, round(abl.holdout_share * len(nodes))))
    rng = np.random.default_rng(run.cfg.seeds[0])
    return sorted(str(n) for n in rng.choice(sorted(nodes), size=k, replace=False))


def table8(run: PaperRun) -> dict[str, Any]:
    """Unseen nodes: see the module docstring. Returns the held-out nodes, the node each maps to,
    per group (seen / held-out) the confusion counts and metrics (mean, sd), and the runs."""
    from netflowgen.detect.cores import nearest_training_nodes
    from netflowgen.detect.metrics import evaluate

    held = heldout_nodes(run)
    # their examples: test only (never a fine-tuning label, never a tuning example)
    ex = run.examples.filter(~(pl.col("node").is_in(held) & (pl.col("split") != "test")))
    cube, m = run.ctx.cube, run.cfg.metrics
    rows = np.array([cube.nodes.index(n) for n in held], dtype=np.int64)
    out: dict[str, Any] = {"heldout_nodes": held, "backbones": [], "heldout_in_binner": [], "mapped_to": {}, "runs": []}
    per_group: dict[str, dict[str, list[float]]] = {"seen": {}, "held-out": {}}
    for p in _seeds(run):
        bb = _backbone(run, BackboneSpec("paper", run.cfg.ablations.size, p, tuple(held)))
        ctx, pre = _context(run, bb, ex)
        out["backbones"].append(bb.path.name)
        out["heldout_in_binner"].append(sorted(set(held) & set(pre.binner.node_index)))
        lo, hi = ctx.train_range()
        embed, dist = nearest_training_nodes(pre.binner, cube, rows, lo, hi)
        out["mapped_to"][bb.path.name] = {n: {"training_node": pre.binner.nodes[int(e)], "distance": float(d)}
                                          for n, e, d in zip(held, embed, dist)}
        for r in _finetuned(run, ctx, f"{bb.spec.name}"):
            ids = np.asarray(r.test_ids, dtype=np.int64)
            det = np.asarray(r.test_detection, dtype=np.int64)
            is_held = np.isin(ctx.col("node")[ids], held)
            run_row: dict[str, Any] = {"backbone": bb.path.name, "seed": r.seed, "theta": r.theta, "all": r.test}
            for group, mask in (("seen", ~is_held), ("held-out", is_held)):
                g = evaluate(det[mask], ctx.eval_set(ids[mask], m), m)
                vals = {"examples": int(mask.sum()), "attacks": g.tp + g.fn, **{k: getattr(g, k) for k in CONFUSION},
                        **g.summary()}
                run_row[group] = vals
                for k, v in vals.items():
                    per_group[group].setdefault(k, []).append(float(v))
            out["runs"].append(run_row)
        del ctx, pre
    out["groups"] = {g: {k: mean_std(v) for k, v in d.items()} for g, d in per_group.items()}
    return out


def table9(run: PaperRun) -> dict[str, Any]:
    """NetFlowGen (86 features) vs NetFlowGen_Light (6): the Table 5 metrics of each, keyed
    "name|number of input features", with each backbone's pre-training summary."""
    out: dict[str, Any] = {}
    for model, name in (("paper", "NetFlowGen"), ("light", "NetFlowGen_Light")):
        results: list[MethodResult] = []
        pretrain, n_features = [], 0
        for p in _seeds(run):
            bb = _backbone(run, BackboneSpec(model, run.cfg.ablations.size, p))
            ctx, pre = _context(run, bb)
            n_features = len(pre.model.cfg.input_features)
            results += _finetuned(run, ctx, bb.spec.name)
            pretrain.append({"backbone": bb.path.name, **bb.best_val, "steps": bb.summary["steps"]})
            del ctx, pre
        out[f"{name}|{n_features}"] = {"aggregate": aggregate(results), "features": n_features, "pretrain": pretrain,
                                       "runs": [r.to_json() for r in results]}
    return out


def table10(run: PaperRun) -> dict[str, Any]:
    """Model sizes: per size (layers-heads-hidden-intermediate) the parameter count, lr, dropout,
    pre-training's best validation loss / accuracy / perplexity and the fine-tuned F1 on the
    tuning examples ("val") and on test, each (mean, sd)."""
    out: dict[str, Any] = {}
    for size in run.cfg.ablations.sizes:
        results: list[MethodResult] = []
        bbs: list[Backbone] = []
        params, dropout = 0, 0.0
        for p in _seeds(run):
            bb = _backbone(run, BackboneSpec("paper", size, p))
            ctx, pre = _context(run, bb)
            params = pre.model.num_parameters()
            dropout = float(pre.model.cfg.dropout)
            results += _finetuned(run, ctx, bb.spec.name)
            bbs.append(bb)
            del ctx, pre
        out[size] = {"parameters": params, "lr": bbs[0].settings["lr"], "dropout": dropout,
                     "steps": [b.summary["steps"] for b in bbs], "backbones": [b.path.name for b in bbs],
                     **{k: mean_std([b.best_val.get(k, float("nan")) for b in bbs])
                        for k in ("val_loss", "val_accuracy", "val_perplexity")},
                     "val_f1": mean_std([r.validation["f1"] for r in results]),
                     "test_f1": mean_std([r.test["f1"] for r in results]), "seeds": [r.seed for r in results]}
    return out
