"""Turn the results of `PaperRun` into report.md, report.html, PNG plots and results.json."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

import numpy as np

from netflowgen.detect.io import markdown_table

PAPER_TABLE5 = {"NetFlowGen|360": (100.00, 0.06, 3.45, 5.42, 0.96), "TF|360": (81.36, 0.03, 6.40, 15.76, 0.88),
                "TF|all": (100.0, 0.09, 6.40, 3.45, 0.95), "MS-LSTM|360": (99.27, 0.07, 12.81, 0.00, 0.94),
                "MS-LSTM|all": (100.00, 0.08, 8.87, 0.49, 0.96)}


def _pm(v: tuple[float, float], digits: int = 2) -> str:
    m, s = v
    if m != m:
        return "n/a"
    return f"{m:.{digits}f} ± {s:.{digits}f}"


def metric_rows(entries: dict[str, Any], key_name: str) -> list[dict[str, Any]]:
    rows = []
    for key, e in entries.items():
        a = e["aggregate"]
        if a is None:
            continue
        name, what = key.split("|")
        rows.append({"method": name, key_name: what, "seeds": len(a["seeds"]), "fit/tune/test": "/".join(
            str(a["counts"][k]) for k in ("fit", "tune", "test")), "effectiveness %": _pm(a["effectiveness_pct"]),
            "overhead": _pm(a["overhead"], 3), "FPR %": _pm(a["fpr_pct"]), "FNR %": _pm(a["fnr_pct"]),
            "F1": _pm(a["f1"], 3), "|mitigation| median min": _pm(a["mitigation_abs_median_min"], 1)})
    return rows


def constants_block(cfg: dict[str, Any]) -> str:
    m = cfg["metrics"]
    return (f"Constants: overhead bound p = {m['overhead_bound']:.0%}, overhead budget B = {m['overhead_budget']} "
            f"(share of a customer's normal volume), mitigation duration D = {m.get('mitigation_minutes', 'window end')} "
            f"minutes, volume measure `{m['volume']}`, detection scanned from minute {m['warmup']} of the "
            f"{cfg['length']}-minute window, anomalous volume = "
            f"{'excess over the pre-onset median' if m['anomalous_excess'] else 'raw volume'}, "
            f"effectiveness tie tolerance {m['effectiveness_tolerance']}.\n")


def plots(results: dict[str, Any], run: Any, out: Path) -> dict[str, str]:
    """Draw the PNGs; returns name -> file name."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files: dict[str, str] = {}
    cfg = results["config"]
    f5 = results.get("fig5")
    if f5:
        methods = [m for m in cfg["methods"]]
        fig, axes = plt.subplots(2, len(cfg["bounds"]), figsize=(5 * len(cfg["bounds"]), 7), squeeze=False)
        for j, b in enumerate(cfg["bounds"]):
            for row, (key, label) in enumerate((("effectiveness", "effectiveness %"), ("mitigation", "|mitigation time| (min)"))):
                data, names = [], []
                for m in methods:
                    e = f5.get(f"{m}|{b}")
                    if e and e[key]:
                        v = np.asarray(e[key], float)
                        data.append(100 * v if key == "effectiveness" else np.abs(v))
                        names.append(m)
                ax = axes[row, j]
                if data:
                    ax.violinplot(data, showmedians=True)
                    ax.set_xticks(range(1, len(names) + 1), names, rotation=30, fontsize=8)
                ax.set_title(f"overhead bound {b:.0%}")
                ax.set_ylabel(label)
        fig.tight_layout()
        fig.savefig(out / "fig5_violins.png", dpi=110)
        plt.close(fig)
        files["fig5"] = "fig5_violins.png"
    lc = results.get("label_curve")
    if lc:
        _label_plot(lc, out / "label_efficiency.png", plt)
        files["labels"] = "label_efficiency.png"
    if run is not None and "NetFlowGen" in cfg["methods"]:
        files.update(_survival_plot(results, run, out, plt))
    return files


def label_positions(entries: dict[str, Any]) -> dict[str, float]:
    """x position (log axis) of every label regime of the curve: a count at itself, "all" one step
    past the largest count, 0 (the zero-label point) one step before the smallest (a log axis has no 0)."""
    counts = sorted({int(e["labels"]) for e in entries.values() if e["labels"] not in ("all", "0")}) or [10]
    pos: dict[str, float] = {str(n): float(n) for n in counts}
    pos["all"], pos["0"] = 2.5 * counts[-1], counts[0] / 2.5
    return pos


def _label_plot(lc: dict[str, Any], path: Path, plt: Any) -> None:
    """Test F1 (mean ± sd over seeds) against the labels: one line per method, "all" at the right
    end, each zero-label detector as its own marker at 0."""
    pos = label_positions(lc)
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for m in sorted({e["method"] for e in lc.values()}):
        color = None
        for zero in (False, True):  # the counts as a line, the zero-label point as a star of the same colour
            pts = sorted((pos[e["labels"]], e["aggregate"]["f1"]) for e in lc.values()
                         if e["method"] == m and (e["labels"] == "0") == zero)
            if not pts:
                continue
            mu, sd = np.array([p[1][0] for p in pts]), np.array([p[1][1] for p in pts])
            drawn = ax.errorbar([p[0] for p in pts], mu, yerr=sd, marker="*" if zero else "o", ms=12 if zero else 5,
                                ls="none" if zero else "-", capsize=3, color=color,
                                label=f"{m} (0 labels, false-alarm budget)" if zero else m)
            color = drawn[0].get_color()
    shown = sorted({e["labels"] for e in lc.values()}, key=lambda k: pos[k])
    n_all = max((e["n"] for e in lc.values() if e["labels"] == "all"), default=0)
    ax.set_xscale("log")
    ax.set_xticks([pos[k] for k in shown], [f"all\n({n_all})" if k == "all" else k for k in shown])
    ax.minorticks_off()
    ax.set_xlabel("fine-tuning labels (examples of the train split)")
    ax.set_ylabel("test F1 (mean ± sd over seeds)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _survival_plot(results: dict[str, Any], run: Any, out: Path, plt: Any) -> dict[str, str]:
    """Survival curves of a few test attacks drawn over their traffic (headline regime, seed 0)."""
    cfg = results["config"]
    key = ("NetFlowGen", str(cfg["headline_labels"]), "all", cfg["seeds"][0])
    cs = run.curves.get(key)
    if cs is None:
        return {}
    ctx = run.ctx
    lab = ctx.col("label")[cs.test_ids] == 1
    picks = np.flatnonzero(lab)[: cfg["survival_examples"]]
    if picks.size == 0:
        return {}
    r5 = results.get("table5", {}).get(f"NetFlowGen|{cfg['headline_labels']}")
    theta = r5["runs"][0]["theta"] if r5 else None
    fig, axes = plt.subplots(len(picks), 1, figsize=(8, 2.3 * len(picks)), squeeze=False)
    for ax, i in zip(axes[:, 0], picks):
        ex_id = cs.test_ids[i]
        vol = ctx.cube.windows(ctx.col("node_row")[[ex_id]], ctx.col("start")[[ex_id]], ctx.length,
                               [cfg["metrics"]["volume"]])[0, :, 0]
        ax.fill_between(np.arange(ctx.length), vol, color="0.8", label="traffic (in bytes/min)")
        ax.set_yscale("symlog")
        ax2 = ax.twinx()
        ax2.plot(cs.test_curves[i], color="C0", label="survival s_t")
        if theta:
            ax2.axhline(theta, color="C0", ls=":", lw=1)
        ax2.set_ylim(0, 1.05)
        for name, col, c in (("CUSUM onset", "onset_t", "C3"), ("true onset", "true_onset_t", "C2"),
                             ("alert", "label_t", "k")):
            t = ctx.col(col)[ex_id]
            if t >= 0:
                ax.axvline(t, color=c, ls="--", lw=1, label=name)
        ax.set_title(f"{ctx.col('node')[ex_id]} ({ctx.col('attack_type')[ex_id]})", fontsize=9)
    axes[0, 0].legend(fontsize=7, loc="upper left")
    axes[-1, 0].set_xlabel("minute of the window")
    fig.tight_layout()
    fig.savefig(out / "survival_examples.png", dpi=110)
    plt.close(fig)
    return {"survival": "survival_examples.png"}


def write_report(results: dict[str, Any], out: Path, run: Any = None, title: str = "NetFlowGen detection report",
                 extra_md: str = "") -> Path:
    """Write results.json, the PNGs, report.md and report.html into `out`; returns report.md."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=1, default=json_default))
    files = plots(results, run, out)
    cfg = results["config"]
    md = [f"# {title}\n", extra_md, constants_block(cfg),
          f"\nSeeds {cfg['seeds']}; values are mean ± standard deviation over seeds. Labels: "
          f"`{cfg['headline_labels']}` is the headline regime (a count = that many examples drawn from the "
          f"train split, 20 % of their pairs held out for early stopping, the threshold chosen on all of them; "
          f"`val` = the validation split; `all` = the whole train split, validation for early stopping and "
          f"the threshold).\n"]
    if "table2" in results:
        md += ["\n## EarlyDetect examples (Table 2 layout)\n", markdown_table(results["table2"])]
        if results.get("dropped_alerts"):
            md.append(f"\nDropped alerts: {results['dropped_alerts']}\n")
    if "table5" in results:
        md += ["\n## Table 5: all attacks\n", markdown_table(metric_rows(results["table5"], "labels")),
               "\nPaper (real ISP, not comparable data): " + "; ".join(
                   f"{k}: eff {v[0]}, overhead {v[1]}, FPR {v[2]}, FNR {v[3]}, F1 {v[4]}" for k, v in PAPER_TABLE5.items()) + "\n"]
    if "fig5" in results:
        md += ["\n## Fig. 5: effectiveness and |mitigation time| at three overhead bounds\n",
               markdown_table(metric_rows(results["fig5"], "bound"))]
        if "fig5" in files:
            md.append(f"\n![Fig. 5]({files['fig5']})\n")
    if "table6" in results:
        md += ["\n## Table 6: per attack type\n", markdown_table(metric_rows(results["table6"], "type"))]
    if "label_curve" in results:
        zero = ", ".join(k.split("|")[0] for k, e in results["label_curve"].items() if e["labels"] == "0")
        md += ["\n## Label efficiency (not in the paper)\n",
               "Test F1 against the fine-tuning labels (a count = that many examples of the train split; `all` = the "
               "whole train split, validation for early stopping and the threshold), the same test split and metrics "
               "for every method. " + (f"{zero} at 0 labels: no label trains it or sets its threshold; theta from a "
                                       f"false-alarm budget of {cfg.get('fa_budget', 1.0):g} alert(s) per node-day on "
                                       "its reference range (first 60 % of the minutes), deterministic (one run); at a "
                                       "label count, nothing is trained and the labels choose its threshold only. "
                                       if zero else "") + "\n\n",
               markdown_table(metric_rows(results["label_curve"], "labels"))]
        if "labels" in files:
            md.append(f"\n![label efficiency]({files['labels']})\n")
    md += ablation_sections(results)
    if "survival" in files:
        md += ["\n## Survival curves of test attacks over their traffic\n", f"![survival]({files['survival']})\n"]
    if "truth" in results:
        tr = results["truth"]
        rows = [{"method": k, **v} for k, v in tr.items() if k != "cusum_onset_minus_true"]
        md += ["\n## Against the simulator's ground truth (not in the paper)\n",
               f"CUSUM onset minus true onset (attack examples): {tr['cusum_onset_minus_true']}\n\n",
               "Detection minute minus true onset, test attacks (negative = before the attack began):\n\n",
               markdown_table(rows)]
    if results.get("fpr_audit"):
        md += ["\n## False positives against the ground truth (not in the paper)\n",
               "Each test false positive of the headline detector (first seed; a non-attack example by the alert "
               "list that the detector flagged) classified by the simulator's truth at the detection minute on "
               "its node (5 minutes' slack): an attack the alerts missed, a benign surge, an outage, or other. "
               "FPR against the truth counts the negatives whose window holds no true attack.\n\n",
               markdown_table(_rounded(results["fpr_audit"]))]
    c = results.get("f1_ceiling")
    if c:
        md += [f"\nWhat the alert labels allow (test split, first seed): {c['negatives_with_true_attack']} of "
               f"{c['negatives']} negatives hold a true attack the alerts missed and {c['positives'] - c['positives_with_true_attack']} "
               f"of {c['positives']} positives hold none, so a detector that flags exactly the true attacks scores "
               f"F1 {c['f1_ceiling_vs_alerts']:.3f} against the alerts; a method scores above it only by leaving out "
               "true attacks the alerts missed too.\n"]
    if results.get("operator"):
        md += ["\n## Operator metrics: minute by minute on the test range (not in the paper)\n",
               "Each method's headline detector (first seed, its tuned theta) scores every node at every minute of "
               "the test range; alerts open and close with clear_after = 15 min; against the simulator's truth: "
               "share of attacks detected within 1/2/5/10 minutes of onset, false alarms per attack-free node-day, "
               "alarmed share of attack-free minutes (SPEC 14); `within_2min_at_x_fa_pct`: the share within 2 minutes "
               "at the best threshold with at most x false alarms per node-day on the test range (its operator curve, "
               "chosen with the truth: the methods compared at the same false-alarm rate, not a setting).\n\n",
               markdown_table(_rounded(results["operator"]))]
    for name in ("table4", "not_done"):
        if name in results:
            md.append(f"\n## {name}\n{results[name]}\n")
    text = "\n".join(md)
    (out / "report.md").write_text(text)
    (out / "report.html").write_text(md_to_html(text, title))
    return out / "report.md"


def _budget_line(cfg: dict[str, Any]) -> str:
    a = cfg.get("ablations", {})
    steps = a.get("steps") or "the preset's own number of"
    return (f"Backbones pre-trained for {steps} steps from preset `{a.get('preset')}` "
            f"(more settings: {a.get('pretrain') or 'none'}), {a.get('pretrain_seeds')} pre-training seed(s) x "
            f"{a.get('seeds')} fine-tuning seed(s) of NetFlowGen on `{cfg['headline_labels']}` labels; mean ± sd "
            "over those runs. A short budget: far from the paper's converged backbones.\n\n")


def ablation_sections(results: dict[str, Any]) -> list[str]:
    """report.md sections of the ablation parts (Tables 8, 9, 10) present in `results`."""
    cfg = results["config"]
    md: list[str] = []
    t8 = results.get("table8")
    if t8:
        rows = []
        for group, g in t8["groups"].items():
            rows.append({"nodes": group, "test examples": _pm(g["examples"], 1), "attacks": _pm(g["attacks"], 1),
                         **{k.upper(): _pm(g[k], 1) for k in ("tp", "fp", "fn", "tn")},
                         "FPR %": _pm(g["fpr_pct"]), "FNR %": _pm(g["fnr_pct"]), "F1": _pm(g["f1"], 3)})
        mapped: dict[str, Any] = next(iter(t8["mapped_to"].values()), {})
        md += ["\n## Table 8: nodes unseen in pre-training\n", _budget_line(cfg),
               f"{len(t8['heldout_nodes'])} node(s) held out of pre-training (absent from the backbone's binner) and "
               "of the fine-tuning labels (their train and validation examples dropped); each borrows the cut-offs "
               "and embedding of its nearest training node. Confusion matrix of the test examples (TP = attack "
               "detected, FP = non-attack detected):\n\n", markdown_table(rows),
               "\nHeld-out node -> training node it was mapped to (first backbone): " +
               ", ".join(f"{n} -> {v['training_node']}" for n, v in mapped.items()) + "\n"]
    t9 = results.get("table9")
    if t9:
        md += ["\n## Table 9: 86 vs 6 input features\n", _budget_line(cfg),
               markdown_table(metric_rows(t9, "features")),
               "\nPaper (real ISP, not comparable data): NetFlowGen 86: eff 100.00, overhead 0.06, FPR 3.45, FNR 5.42, "
               "F1 0.96; NetFlowGen_Light 6: eff 99.96, overhead 0.06, FPR 12.81, FNR 2.96, F1 0.92.\n"]
    t10 = results.get("table10")
    if t10:
        rows = [{"model config": size, "# params": f"{e['parameters']:,}", "LR": f"{e['lr']:g}", "dropout": f"{e['dropout']:g}",
                 "steps": "/".join(str(s) for s in e["steps"]), "best val loss": _pm(e["val_loss"], 3),
                 "best val acc": _pm(e["val_accuracy"], 3), "best val ppl": _pm(e["val_perplexity"], 3),
                 "val F1": _pm(e["val_f1"], 3), "test F1": _pm(e["test_f1"], 3)} for size, e in t10.items()]
        md += ["\n## Table 10: model sizes\n", _budget_line(cfg),
               "Model config = layers-heads-hidden-intermediate; validation loss, accuracy and perplexity of "
               "pre-training at its best validation; val F1 = on the tuning examples, test F1 on the test split.\n\n",
               markdown_table(rows)]
    return md


def _rounded(rows: list[dict[str, Any]], digits: int = 2) -> list[dict[str, Any]]:
    """Table rows with their floats rounded for the report."""
    return [{k: (round(v, digits) if isinstance(v, float) else v) for k, v in r.items()} for r in rows]


def json_default(o: Any) -> Any:
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def md_to_html(md: str, title: str) -> str:
    """The report's Markdown -> a standalone HTML page (CommonMark with tables, markdown-it-py)."""
    from markdown_it import MarkdownIt

    body = MarkdownIt("commonmark", {"html": False}).enable("table").render(md)
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            "<style>body{font-family:sans-serif;max-width:1100px;margin:auto}table{border-collapse:collapse}"
            "td,th{border:1px solid #ccc;padding:3px 6px;font-size:13px}img{max-width:100%}</style></head><body>\n"
            f"{body}</body></html>")
