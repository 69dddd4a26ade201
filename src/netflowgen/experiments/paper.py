"""`netflowgen experiment paper`: the paper's detection tables and figure on the simulated ISP, plus
what the paper lacks (label-efficiency curve, survival curves over traffic, ground-truth onsets),
and on request the ablations of Tables 8-10, which pre-train their own backbones (`experiments.ablations`).

Every learned method is trained once per (label regime, attack type, seed) and its curves are kept,
so re-scoring at other overhead bounds (Fig. 5) costs no training. Results are reported as mean and
standard deviation over seeds; the raw per-seed numbers go to results.json.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import polars as pl

from netflowgen.detect.earlydetect import EarlyDetectConfig
from netflowgen.detect.finetune import FinetuneConfig
from netflowgen.detect.metrics import MetricConfig
from netflowgen.detect.pipeline import (
    METHODS,
    OPERATOR,
    ZERO_LABEL,
    CurveSet,
    DetectionContext,
    MethodResult,
    fit_curves,
    score,
)
from netflowgen.experiments.backbones import AblationConfig

DEFAULT_PARTS = ("table5", "fig5", "table6", "labels", "truth", "operator")
ABLATION_PARTS = ("table8", "table9", "table10")  # opt-in: each pre-trains its own backbones
PARTS = DEFAULT_PARTS + ABLATION_PARTS
REPORT_KEYS = ("effectiveness_pct", "overhead", "fpr_pct", "fnr_pct", "f1", "mitigation_abs_median_min")


@dataclass
class PaperConfig:
    features: str = ""  # node-minute Parquet
    alerts: str = ""  # alerts.csv
    truth: str = ""  # the simulator's truth.csv ("" = no ground-truth comparison)
    model: str = ""  # pre-trained NetFlowGen folder ("" = only the methods that need none)
    length: int = 128  # minutes of each example the detectors see (the last ones; paper: 512)
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    methods: list[str] = field(default_factory=lambda: ["NetFlowGen", "NetFlowGen+surprisal", "TF", "MS-LSTM", "Static-EWMA",
                                                        "Static-percentile", "Seasonal-band", "CUSUM"])
    headline_labels: str = "360"  # Table 5 / Fig. 5 regime ("val" = the validation split, or a count)
    more_labels: str = "all"  # the "MoreData" regime of Table 5
    more_data_seeds: int = 3  # seeds for the MoreData regime (0 = skip it)
    more_data_methods: list[str] = field(default_factory=lambda: list(METHODS))  # methods run on MoreData
    table6_methods: list[str] = field(default_factory=lambda: list(METHODS))
    tf_seeds: int = 3  # seeds of the end-to-end Transformer (costly on a CPU), every part
    table6_seeds: int = 3  # seeds per attack type
    bounds: list[float] = field(default_factory=lambda: [0.7, 0.8, 0.9])  # Fig. 5 overhead bounds
    attack_types: list[str] = field(default_factory=lambda: ["dns", "udp", "ntp"])  # Table 6
    # label-efficiency curve: label counts (examples of the train split) and "all" (the whole train split)
    label_curve: list[str] = field(default_factory=lambda: ["10", "25", "50", "100", "200", "360", "all"])
    label_curve_methods: list[str] = field(default_factory=lambda: list(METHODS))  # those also in `methods`
    label_curve_seeds: int = 3
    # zero-label detectors drawn at 0 labels: theta from `fa_budget` alerts per node-day on the
    # detector's reference range (needs a pre-trained model)
    label_curve_zero_label: list[str] = field(default_factory=lambda: list(ZERO_LABEL))
    fa_budget: float = 1.0
    survival_examples: int = 4  # attacks whose survival curves are drawn over their traffic
    earlydetect: EarlyDetectConfig = field(default_factory=EarlyDetectConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    # The end-to-end Transformer trains the whole decoder on a CPU: fewer epochs, a smaller lr.
    tf_finetune: FinetuneConfig = field(default_factory=lambda: FinetuneConfig(epochs=12, patience=3, min_epochs=4,
                                                                               lr=5e-4))
    metrics: MetricConfig = field(default_factory=MetricConfig)
    ablations: AblationConfig = field(default_factory=AblationConfig)  # parts table8, table9, table10

    def validate(self) -> None:
        self.ablations.validate()
        bad = [n for n in self.label_curve if n != "all" and not (n.isdigit() and int(n) > 0)]
        if bad:
            raise ValueError(f"label_curve = {self.label_curve}: label counts (> 0) or 'all', not {bad}")


def mean_std(values: list[float]) -> tuple[float, float]:
    a = np.asarray([v for v in values if v == v], dtype=float)  # drop NaN
    if a.size == 0:
        return float("nan"), float("nan")
    return float(a.mean()), float(a.std(ddof=1)) if a.size > 1 else 0.0


def aggregate(results: list[MethodResult]) -> dict[str, Any]:
    """Mean and standard deviation over seeds of the test metrics of one method and regime."""
    out: dict[str, Any] = {"seeds": [r.seed for r in results], "counts": results[0].counts,
                           "regime": results[0].regime}
    for k in REPORT_KEYS:
        out[k] = mean_std([r.test[k] for r in results])
    return out


class PaperRun:
    """Holds the context and the trained curves; `run()` fills `self.results`."""

    def __init__(self, cfg: PaperConfig, log: Callable[[str], None] = print, work_dir: str | Path | None = None) -> None:
        self.cfg, self.log = cfg, log
        self.work_dir = work_dir  # the ablation parts cache their backbones under it
        self.backbones: dict[Any, Any] = {}  # BackboneSpec -> Backbone pre-trained (or found) in this run
        self.curves: dict[tuple[str, str, str, int], CurveSet] = {}
        self.results: dict[str, Any] = {}

    # --- building ------------------------------------------------------------------------------------
    def prepare(self, examples: pl.DataFrame | None = None) -> DetectionContext:
        from netflowgen.detect.cube import NodeMinuteCube
        from netflowgen.detect.earlydetect import build_earlydetect, table2
        from netflowgen.detect.io import read_table
        from netflowgen.detect.pipeline import load_pretrained

        cfg = self.cfg
        t0 = time.time()
        feats = pl.read_parquet(cfg.features)
        cube = NodeMinuteCube.from_table(feats)
        self.truth = read_table(cfg.truth) if cfg.truth else None
        if examples is None:
            res = build_earlydetect(cube, read_table(cfg.alerts), cfg.earlydetect, self.truth)
            examples, self.results["dropped_alerts"] = res.examples, res.dropped
        self.results["table2"] = table2(examples).to_dicts()
        self.features, self.examples = feats, examples  # what the ablations build their own contexts from
        pre = load_pretrained(cfg.model) if cfg.model else None
        if pre is None:
            cfg.methods = [m for m in cfg.methods if m in OPERATOR or m == "MS-LSTM"]
        self.ctx = DetectionContext.build(cube, examples, cfg.earlydetect.window, cfg.length, pre,
                                          cfg.earlydetect.split, feats)
        self.log(f"EarlyDetect: {examples.height} examples, evaluated on the last {self.ctx.length} minutes "
                 f"({time.time() - t0:.0f} s)")
        return self.ctx

    def curveset(self, method: str, labels: str, attack_type: str, seed: int) -> CurveSet:
        key = (method, str(labels), attack_type, seed)
        if key not in self.curves:
            ft = self.cfg.tf_finetune if method == "TF" else self.cfg.finetune
            t0 = time.time()
            self.curves[key] = fit_curves(self.ctx, method, labels, seed, attack_type, ft)
            self.log(f"  {method:14s} labels={labels:>4s} type={attack_type:4s} seed={seed}: "
                     f"{time.time() - t0:6.1f} s")
        return self.curves[key]

    def scored(self, method: str, labels: str, attack_type: str, seeds: list[int],
               metric_cfg: MetricConfig | None = None) -> list[MethodResult]:
        m = metric_cfg or self.cfg.metrics
        if method == "TF":
            seeds = seeds[:self.cfg.tf_seeds]
        out = []
        for s in seeds:
            try:
                out.append(score(self.ctx, self.curveset(method, labels, attack_type, s), m))
            except ValueError as e:  # e.g. no examples of that attack type in a split
                self.log(f"  skipped {method} {labels} {attack_type}: {e}")
        return out

    # --- the experiments -----------------------------------------------------------------------------
    def run(self, parts: tuple[str, ...] = DEFAULT_PARTS) -> dict[str, Any]:
        unknown = [p for p in parts if p not in PARTS]
        if unknown:
            raise ValueError(f"unknown part(s) {unknown}; known: {', '.join(PARTS)}")
        cfg = self.cfg
        seeds = list(cfg.seeds)
        R = self.results
        R["config"] = _plain(cfg)
        if "table5" in parts:
            self.log("Table 5: all attacks, headline and MoreData label regimes")
            t5: dict[str, Any] = {}
            for method in cfg.methods:
                more = seeds[:cfg.more_data_seeds] if method in cfg.more_data_methods else []
                for labels, sd in ((cfg.headline_labels, seeds), (cfg.more_labels, more)):
                    rs = self.scored(method, labels, "all", sd)
                    if rs:
                        t5[f"{method}|{labels}"] = {"aggregate": aggregate(rs), "runs": [r.to_json() for r in rs]}
            R["table5"] = t5
        if "fig5" in parts:
            self.log("Fig. 5: three overhead bounds (thresholds re-chosen, models reused)")
            f5: dict[str, Any] = {}
            for bound in cfg.bounds:
                mc = MetricConfig(**{**cfg.metrics.__dict__, "overhead_bound": bound})
                for method in cfg.methods:
                    rs = self.scored(method, cfg.headline_labels, "all", seeds, mc)
                    f5[f"{method}|{bound}"] = {"effectiveness": sum((r.test_effectiveness for r in rs), []),
                                               "mitigation": sum((r.test_mitigation for r in rs), []),
                                               "aggregate": aggregate(rs) if rs else None}
            R["fig5"] = f5
        if "table6" in parts:
            self.log("Table 6: per attack type")
            t6: dict[str, Any] = {}
            for ty in cfg.attack_types:
                for method in [m for m in cfg.methods if m in cfg.table6_methods]:
                    rs = self.scored(method, cfg.headline_labels, ty, seeds[:cfg.table6_seeds])
                    if rs:
                        t6[f"{method}|{ty}"] = {"aggregate": aggregate(rs)}
            R["table6"] = t6
        if "labels" in parts:
            R["label_curve"] = self.label_curve(seeds[:cfg.label_curve_seeds])
        if "truth" in parts and self.truth is not None:
            R["truth"] = self.truth_comparison(seeds)
        if "operator" in parts and self.truth is not None:
            self.log("Operator metrics: every method scored minute by minute on the test range")
            R["operator"] = self.operator_table(seeds[0])
        if "truth" in parts and self.truth is not None:
            R["fpr_audit"] = self.fpr_audit(seeds[0])
            R["f1_ceiling"] = self.f1_ceiling(seeds[0])
        if any(p in parts for p in ABLATION_PARTS):
            from netflowgen.experiments import ablations
            for part, title in (("table8", "Table 8: nodes unseen in pre-training"),
                                ("table9", "Table 9: 86 vs 6 input features"), ("table10", "Table 10: model sizes")):
                if part in parts:
                    self.log(title)
                    R[part] = getattr(ablations, part)(self)
        return R

    def label_curve(self, seeds: list[int]) -> dict[str, Any]:
        """Test metrics of every method at every label count of `label_curve` ("all" = the whole
        train split), and of each zero-label detector at 0 labels (theta from the false-alarm
        budget) and at every count (theta from the labels), keyed "method|labels"; `n` = labels the
        regime used (fit + early stopping)."""
        cfg = self.cfg
        self.log("Label efficiency: F1 vs number of labels")
        lc: dict[str, Any] = {}
        for method in [m for m in cfg.label_curve_zero_label if m in ZERO_LABEL]:
            if self.ctx.pretrained is None:
                self.log(f"  skipped {method} at 0 labels: no pre-trained model (--model)")
                continue
            r = self.zero_label(method, seeds[0])
            lc[f"{method}|0"] = {"labels": "0", "n": 0, "method": method, "threshold": r.regime,
                                 "aggregate": aggregate([r]), "runs": [r.to_json()]}
        # the zero-label detectors also at every count: nothing trains them, the labels set theta only
        zero = [m for m in cfg.label_curve_zero_label if m in ZERO_LABEL and m not in cfg.label_curve_methods
                and self.ctx.pretrained is not None]
        for labels in cfg.label_curve:
            # (not at "all": that regime's curves are the 0-label point's, whose detector keeps its budget theta)
            for method in [m for m in cfg.label_curve_methods if m in cfg.methods] + (zero if labels != "all" else []):
                rs = self.scored(method, str(labels), "all", seeds)
                if rs:
                    c = rs[0].counts
                    lc[f"{method}|{labels}"] = {"labels": str(labels), "n": c["fit"] + c["stop"], "method": method,
                                                "threshold": "labels", "aggregate": aggregate(rs)}
        return lc

    def zero_label(self, method: str, seed: int) -> MethodResult:
        """A zero-label detector with no label at all: theta from `fa_budget` alerts per node-day
        on its reference range (`Detector.set_fa_budget`, the first share of the cube's minutes,
        attack-free by assumption), scored on the test split with the same metrics as the others.
        Deterministic: no seed changes it."""
        cs = self.curveset(method, "all", "all", seed)  # the test ids (and curves) of every regime
        det = cs.detector
        det.warmup = int(self.cfg.metrics.warmup)  # the budget counts alerts as the metrics detect them
        theta = float(det.set_fa_budget(self.ctx.cube, self.cfg.fa_budget))
        r = score(self.ctx, cs, self.cfg.metrics, theta=theta)
        r.labels, r.regime = "0", f"fa-budget[{self.cfg.fa_budget:g}/node-day]"
        r.counts = {"fit": 0, "stop": 0, "tune": 0, "test": r.counts["test"]}
        self.log(f"  {method:14s} labels=   0 (fa budget {self.cfg.fa_budget:g}/node-day): theta {theta:.4g}, "
                 f"F1 {r.test['f1']:.3f}")
        return r

    def _truth_events(self) -> dict[str, list[tuple[str, int, int]]]:
        """node -> [(kind, onset ms, end ms)] of the simulator's truth."""
        assert self.truth is not None
        t = self.truth
        if "target_ip" not in t.columns and "target" in t.columns:
            t = t.rename({"target": "target_ip"})

        def ms(c: str) -> pl.Expr:
            return pl.col(c).str.to_datetime(time_zone="UTC").dt.epoch("ms") if t.schema[c] == pl.String else \
                pl.col(c).dt.epoch("ms")
        events = t.select(pl.col("target_ip").cast(pl.String), pl.col("kind").cast(pl.String), ms("onset").alias("on"),
                          ms("end").alias("off"))
        by_node: dict[str, list[tuple[str, int, int]]] = {}
        for node, kind, on, off in events.iter_rows():
            by_node.setdefault(node, []).append((kind, int(on), int(off)))
        return by_node

    def _holds_attack(self, row: dict[str, Any], by_node: dict[str, list[tuple[str, int, int]]]) -> bool:
        """Whether the evaluated window of example `row` overlaps a true attack on its node."""
        minutes = self.ctx.cube.minutes
        lo = int(minutes[row["start"]])
        hi = int(minutes[min(len(minutes) - 1, row["start"] + self.ctx.length - 1)])
        return any(k == "attack" and on <= hi and off >= lo for k, on, off in by_node.get(row["node"], []))

    def f1_ceiling(self, seed: int) -> dict[str, Any]:
        """What the alert labels allow on the test split: a detector that flags exactly the examples
        whose window holds a true attack scores TP = alerted ones with one, FN = alerted ones without
        (false alerts), FP = non-alerted ones with one (attacks the alerts missed); its F1 against the
        alerts, 2 TP / (2 TP + FP + FN), is what a detector perfect against the truth shows; a method
        scores above it only by leaving out true attacks the alerts missed too, or by flagging false
        alerts (which no traffic can tell apart)."""
        rs = next((self.scored(m, self.cfg.headline_labels, "all", [seed]) for m in self.cfg.methods), [])
        if not rs:
            return {}
        by_node = self._truth_events()
        ex = self.ctx.examples
        tp = fn = fp = tn = 0
        for i in rs[0].test_ids:
            row = ex.row(int(i), named=True)
            attack = self._holds_attack(row, by_node)
            if row["label"] == 1:
                tp += attack
                fn += not attack
            else:
                fp += attack
                tn += not attack
        return {"positives": tp + fn, "positives_with_true_attack": tp, "negatives": fp + tn,
                "negatives_with_true_attack": fp,
                "f1_ceiling_vs_alerts": 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else float("nan")}

    def fpr_audit(self, seed: int) -> list[dict[str, Any]]:
        """Every test false positive (a non-attack example detected: the alert list saw no attack)
        of each headline detector, classified by the simulator's truth at the detection minute on the
        example's node: an attack the alerts missed ("unalerted attack"), a benign surge, an outage,
        or nothing ("other"); FPR against the alerts beside FPR against the truth (negatives whose
        window holds no true attack, and false positives that are not true attacks)."""
        ex = self.ctx.examples
        minutes = self.ctx.cube.minutes
        by_node = self._truth_events()
        margin = 5 * 60_000
        rows = []
        for method in self.cfg.methods:
            rs = self.scored(method, self.cfg.headline_labels, "all", [seed])
            if not rs:
                continue
            r = rs[0]
            counts = {"unalerted attack": 0, "benign surge": 0, "outage": 0, "other": 0}
            negatives = clean_negatives = fp_clean = 0
            for i, det in zip(r.test_ids, r.test_detection):
                row = ex.row(int(i), named=True)
                if row["label"] == 1:
                    continue
                negatives += 1
                has_attack = self._holds_attack(row, by_node)
                clean_negatives += not has_attack
                if det < 0:
                    continue
                at = int(minutes[min(len(minutes) - 1, row["start"] + det)])
                near = [k for k, on, off in by_node.get(row["node"], []) if on - margin <= at <= off + margin]
                kind = ("unalerted attack" if "attack" in near else "benign surge" if "surge" in near
                        else "outage" if "outage" in near else "other")
                counts[kind] += 1
                fp_clean += kind != "unalerted attack" and not has_attack
            fp = sum(counts.values())
            rows.append({"method": method, "false_positives": fp, **counts,
                         "fpr_vs_alerts_pct": 100 * fp / negatives if negatives else float("nan"),
                         "fpr_vs_truth_pct": 100 * fp_clean / clean_negatives if clean_negatives else float("nan")})
        return rows

    def operator_table(self, seed: int, clear_after: int = 15) -> list[dict[str, Any]]:
        """SPEC 14 operator metrics of each method's headline detector (seed `seed`, its tuned theta),
        scored minute by minute over the test range (the `length` minutes before it as history)
        against the simulator's truth: what an operator running it would have seen; and, from its
        operator curve (`detect.operator_curve`), the share within 2 minutes at <= 0.5 / 1 / 2 false
        alarms per node-day (the best threshold on the test range: a comparison at the same rate)."""
        from netflowgen.detect.alerts import AlertConfig, alerts_from_scores
        from netflowgen.detect.earlydetect import split_bounds
        from netflowgen.detect.operator_curve import operator_curve, same_rate_shares
        from netflowgen.detect.operator_metrics import operator_metrics

        cube = self.ctx.cube
        assert self.truth is not None
        lo, _ = split_bounds(len(cube.minutes), self.ctx.split)["test"]
        start = max(0, lo - self.ctx.length)
        sub = cube.part(None, start)
        first = pl.lit(int(cube.minutes[lo])).cast(pl.Datetime("ms")).dt.replace_time_zone("UTC")
        rows = []
        for method in self.cfg.methods:
            if not self.scored(method, self.cfg.headline_labels, "all", [seed]):  # sets the detector's theta
                continue
            det = self.curveset(method, self.cfg.headline_labels, "all", seed).detector
            t0 = time.time()
            scores = det.score(sub).filter(pl.col("minute") >= first)
            alerts = alerts_from_scores(scores, method, AlertConfig(clear_after))
            m = operator_metrics(scores, alerts, self.truth)
            curve = operator_curve(scores, self.truth, method, clear_after, also=[det.theta])
            rows.append({"method": method, **m.summary(), **same_rate_shares(curve),
                         "scoring_s": round(time.time() - t0, 1)})
        return rows

    def truth_comparison(self, seeds: list[int]) -> dict[str, Any]:
        """CUSUM onset vs the simulator's true onset, and each method's detection minute relative to
        the true onset on test attacks (headline regime, bound of the metrics config)."""
        ex = self.ctx.examples
        att = ex.filter((pl.col("label") == 1) & (pl.col("true_onset_t") >= 0))
        d = (att.get_column("onset_t") - att.get_column("true_onset_t")).to_numpy()
        out: dict[str, Any] = {"cusum_onset_minus_true": {
            "n": int(d.size), "median": float(np.median(d)) if d.size else None,
            "p10": float(np.quantile(d, 0.1)) if d.size else None, "p90": float(np.quantile(d, 0.9)) if d.size else None,
            "share_within_2min": float(np.mean(np.abs(d) <= 2)) if d.size else None}}
        true_on = ex.get_column("true_onset_t").to_numpy()
        for method in self.cfg.methods:
            rel: list[int] = []
            for r in self.scored(method, self.cfg.headline_labels, "all", seeds):
                for i, t in zip(r.test_ids, r.test_detection):
                    if t >= 0 and true_on[i] >= 0:
                        rel.append(int(t - true_on[i]))
            a = np.asarray(rel)
            out[method] = {"n": int(a.size), "median_det_minus_true": float(np.median(a)) if a.size else None,
                           "p25": float(np.quantile(a, 0.25)) if a.size else None,
                           "p75": float(np.quantile(a, 0.75)) if a.size else None,
                           "share_before_true_onset": float(np.mean(a < 0)) if a.size else None}
        return out


def _plain(cfg: Any) -> Any:
    from netflowgen.config import to_dict
    return to_dict(cfg)
