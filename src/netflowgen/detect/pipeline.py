"""One detection method, trained and tuned on one label regime, evaluated on the test split.

`DetectionContext` holds what every method shares (the node-minute cube, the EarlyDetect examples
cropped to the evaluation window, the pre-trained model and its cached hidden states, per-node
statistics), so that running many methods and seeds costs one backbone pass.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch

from netflowgen.detect.anchored import WindowPlan, aggregate_curve, plan_windows, run_plan
from netflowgen.detect.cores import (
    SURPRISAL_INPUT_METHODS,
    LstmCore,
    OperatorCore,
    ScoringData,
    SurprisalCore,
    TransformerCore,
    group_tail,
    nearest_training_nodes,
)
from netflowgen.detect.cube import NodeMinuteCube, cube_to_table
from netflowgen.detect.detector import Detector, check_handoff
from netflowgen.detect.earlydetect import split_bounds
from netflowgen.detect.finetune import FinetuneConfig, select_labels, train_survival
from netflowgen.detect.metrics import EvalSet, MetricConfig, choose_threshold, detect, evaluate
from netflowgen.detect.models import AnchoredSurvival, FrozenBackboneSurvival, MultiScaleLSTMNet
from netflowgen.detect.safe import SurvivalHead
from netflowgen.model.io import split_of
from netflowgen.progress import progress_bar
from netflowgen.schema import DEFAULT_SPLIT

LEARNED = ("NetFlowGen", *SURPRISAL_INPUT_METHODS, "NetFlowGen-unfrozen", "TF", "MS-LSTM")
OPERATOR = ("Static-EWMA", "Static-percentile", "Seasonal-band", "CUSUM")
ZERO_LABEL = ("Surprisal",)  # no label trains them; theta from labels or a false-alarm budget
METHODS = LEARNED + OPERATOR


def crop_examples(examples: pl.DataFrame, window: int, length: int) -> pl.DataFrame:
    """Keep the last `length` minutes of every `window`-minute example; minute indexes shift."""
    shift = window - length
    if shift == 0:
        return examples
    assert shift > 0, "cannot crop to a longer window"
    neg = pl.lit(-1)
    return examples.with_columns(
        (pl.col("start") + shift).alias("start"),
        (pl.col("label_t") - shift).alias("label_t"),
        pl.when(pl.col("onset_t") >= 0).then((pl.col("onset_t") - shift).clip(0)).otherwise(neg).alias("onset_t"),
        pl.when(pl.col("end_t") >= 0).then(pl.col("end_t") - shift).otherwise(neg).alias("end_t"),
        pl.when(pl.col("true_onset_t") >= shift).then(pl.col("true_onset_t") - shift).otherwise(neg)
        .alias("true_onset_t"))


@dataclass
class DetectionContext:
    cube: NodeMinuteCube
    examples: pl.DataFrame  # cropped to `length`, ids 0..N-1 in row order
    length: int  # minutes per evaluated window
    split: list[float]
    pretrained: Any = None  # netflowgen.api.NetFlowGen (or an object with .model, .binner, .config)
    data: Any = None  # ScoringData: the cube (and its tokens) as every detector reads it
    window: int = 0  # minutes per example in the examples file (before cropping to `length`)
    _cache: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def build(cls, cube: NodeMinuteCube, examples: pl.DataFrame, window: int, length: int | None = None,
              pretrained: Any = None, split: list[float] | None = None, features: pl.DataFrame | None = None
              ) -> "DetectionContext":
        """length None: the full window, capped at the pre-trained model's context. split None: the
        pre-trained model's fractions (or the default); a split that differs from the model's is refused."""
        config = dict(getattr(pretrained, "config", {}) or {}) if pretrained is not None else {}
        model_split = split_of(config)
        if not split:
            split = model_split if pretrained is not None else list(DEFAULT_SPLIT)
        elif pretrained is not None and "train_fraction" in config:
            check_handoff("the pre-trained model", "split fractions", model_split, [float(x) for x in split])
        if length is None:
            length = window
            if pretrained is not None:
                length = min(length, int(pretrained.model.cfg.context))
        ex = crop_examples(examples, window, length).drop("id").with_row_index("id")
        tz = str(config.get("time_zone", "UTC"))
        data = ScoringData(cube, None, tz)
        if pretrained is not None:
            from netflowgen.tokens import TokenData
            lo, hi = split_bounds(len(cube.minutes), list(split))["train"]
            embed, _ = nearest_training_nodes(pretrained.binner, cube, np.arange(len(cube.nodes)), lo, hi)
            data.tokens = TokenData.build(features if features is not None else cube_to_table(cube),
                                          pretrained.binner, None, tz,
                                          {n: (int(e), int(e)) for n, e in zip(cube.nodes, embed)})
            if list(data.tokens.nodes) != list(cube.nodes):
                raise ValueError("token data and cube disagree on the node order")
        return cls(cube, ex, length, list(split), pretrained, data, int(window))

    # --- shared arrays ------------------------------------------------------------------------------
    def col(self, name: str) -> np.ndarray:
        return self.examples.get_column(name).to_numpy()

    @property
    def n(self) -> int:
        return self.examples.height

    def eval_set(self, ids: np.ndarray, cfg: MetricConfig) -> EvalSet:
        vol = self.cube.windows(self.col("node_row")[ids], self.col("start")[ids], self.length, [cfg.volume])[..., 0]
        return EvalSet(vol, self.col("label")[ids] == 1, self.col("onset_t")[ids], self.col("end_t")[ids],
                       self.col("customer")[ids])

    def train_range(self) -> tuple[int, int]:
        return split_bounds(len(self.cube.minutes), self.split)["train"]

    def example_minutes(self, ids: np.ndarray | None = None) -> np.ndarray:
        """(N, L) cube minute index of every minute of the examples `ids` (default all)."""
        starts = self.col("start") if ids is None else self.col("start")[ids]
        return starts[:, None] + np.arange(self.length)[None, :]

    def plan(self, context: int, stride: int) -> WindowPlan:
        """The anchored windows behind every example minute (cached per context and stride)."""
        key = f"plan:{context}:{stride}"
        if key not in self._cache:
            self._cache[key] = plan_windows(self.col("node_row"), self.example_minutes(), int(self.cube.minutes[0]),
                                            context, stride)
        return self._cache[key]

    def hidden(self, core: TransformerCore) -> torch.Tensor:
        """(N, L, d) hidden states of the frozen pre-trained backbone at every example minute (cached)."""
        if "hidden" not in self._cache:
            self._backbone_pass(core, with_surprisal=False)
        return self._cache["hidden"]

    def surprisal(self, core: Any, calib: np.ndarray | None = None) -> torch.Tensor:
        """(N, L, G) upward group surprisal (nats, `SurprisalInputCore.surprisal_of`) of the frozen
        pre-trained backbone at every example minute, from the same anchored windows as `hidden`
        (cached; the hidden states come from the same pass), plus the core's top-bin tail where it
        has one (`calib`: the calibration row of every cube row, needed then)."""
        if "surprisal" not in self._cache:
            self._backbone_pass(core, with_surprisal=True)
        if not getattr(core, "tail", False):
            return self._cache["surprisal"]
        if "surprisal_tail" not in self._cache:
            assert calib is not None, "the top-bin tail needs the calibration rows"
            tail, tokens, member = core.data_tail(self.data), self.data.tokens, core._member.double().numpy()

            def fn(rows: np.ndarray, starts: np.ndarray, length: int) -> np.ndarray:
                valid = tokens.tokens[rows[:, None], starts[:, None] + np.arange(length), 0] != tokens.missing_token
                return group_tail(tail, rows, starts, length, calib[rows], valid, member)
            self._cache["surprisal_tail"] = torch.from_numpy(run_plan(self.plan(core.context, core.stride), fn)).float()
        return self._cache["surprisal"] + self._cache["surprisal_tail"]

    def _backbone_pass(self, core: Any, with_surprisal: bool) -> None:
        """One backbone pass over the examples' anchored windows: hidden states, and with
        `with_surprisal` the group surprisal from the same pass's logits."""
        plan = self.plan(core.context, core.stride)
        tokens = self.data.tokens
        d = int(core.backbone.cfg.d_model)
        with progress_bar("backbone hidden states" + (" + surprisal" if with_surprisal else ""), plan.n_windows) as adv:
            @torch.no_grad()
            def fn(rows: np.ndarray, starts: np.ndarray, length: int) -> np.ndarray:
                adv(len(rows))
                x = tokens.inputs(rows, starts, length)
                if not with_surprisal:
                    return core.backbone.eval().hidden_states(x).float().numpy()
                h, logits = core.backbone.eval().hidden_and_logits(x)
                return torch.cat([h.float(), core.surprisal_of(x, logits)], -1).numpy()
            out = torch.from_numpy(run_plan(plan, fn))
        self._cache.setdefault("hidden", out[..., :d].contiguous())
        if with_surprisal:
            self._cache["surprisal"] = out[..., d:].contiguous()

    def new_detector(self, method: str, ft: FinetuneConfig, length: int | None = None) -> Detector:
        """An untrained (operator: fitted) detector of `method`, its nodes calibrated on the training range."""
        L = length or self.length
        cfg = dict(getattr(self.pretrained, "config", {}) or {}) if self.pretrained is not None else {}
        core: Any
        if method in OPERATOR:  # a long context: CUSUM and the EWMAs learn their level inside it
            core = OperatorCore(method, 2 * L, max(1, L // 2))
        elif method in ZERO_LABEL:
            if self.pretrained is None:
                raise ValueError(f"{method} needs a pre-trained model (its next-minute predictions)")
            core = SurprisalCore(self.pretrained.model, self.pretrained.binner, cfg)
        elif method == "MS-LSTM":
            core = LstmCore(MultiScaleLSTMNet(len(self.cube.features), head_hidden=ft.head_hidden,
                                              dropout=ft.head_dropout), L, max(1, L // 2))
        elif method in SURPRISAL_INPUT_METHODS:
            if self.pretrained is None:
                raise ValueError(f"{method} needs a pre-trained model (its hidden states and predictions)")
            if ft.unfreeze:
                raise ValueError(f"{method} keeps the backbone frozen (its surprisal calibration is a statistic "
                                 "of it); use NetFlowGen-unfrozen to train the backbone")
            from netflowgen.detect.surprisal_input import SurprisalInputCore
            src = self.pretrained.model
            d_in = SurprisalInputCore.head_inputs(src.cfg.d_model, src.cfg.predicted_features)
            core = SurprisalInputCore(src, self.pretrained.binner, SurvivalHead(d_in, ft.head_hidden, ft.head_dropout),
                                      torch.zeros(src.cfg.d_model), torch.ones(src.cfg.d_model), cfg)
        else:
            if self.pretrained is None:
                raise ValueError(f"{method} needs a pre-trained model (and its binner for the tokens)")
            import copy

            from netflowgen.model import TrafficGPT
            src = self.pretrained.model
            if method == "TF":  # same architecture, random initialization, trained end to end
                backbone = TrafficGPT(src.cfg, src.n_nodes, src.n_customers)
            elif method == "NetFlowGen" and not ft.unfreeze:  # frozen: the pre-trained model itself
                backbone = src
            else:
                backbone = copy.deepcopy(src)
                method = "NetFlowGen-unfrozen"
            d = src.cfg.d_model
            core = TransformerCore(backbone, self.pretrained.binner, SurvivalHead(d, ft.head_hidden, ft.head_dropout),
                                   torch.zeros(d), torch.ones(d), cfg)
        det = Detector(method, core, L, 0, time_zone=self.data.time_zone, split=list(self.split),
                       base_backbone_hash=cfg.get("content_hash"))
        lo, hi = self.train_range()
        key = f"calib:{method}:{L}"  # per-node statistics use neither labels nor seed: one fit per method
        if key not in self._cache:
            det.calibrate(self.data, lo, hi, "training")
            self._cache[key] = ({k: v.copy() for k, v in det.core.calib.items()}, list(det.nodes))
        else:
            calib, nodes = self._cache[key]
            det.core.calib = {k: v.copy() for k, v in calib.items()}
            det.nodes, det.node_source = list(nodes), ["training"] * len(nodes)
        return det


@dataclass
class RunKey:
    """Which run: a method on a label regime, attack type and seed, with its example counts."""

    method: str
    labels: str
    attack_type: str
    seed: int
    regime: str
    counts: dict[str, int]


@dataclass
class CurveSet(RunKey):
    """A trained (or fitted) method's curves on its tuning and test examples."""

    tune_ids: np.ndarray
    tune_curves: np.ndarray  # (n_tune, L)
    test_ids: np.ndarray
    test_curves: np.ndarray  # (n_test, L)
    seconds: float
    history: dict[str, Any] | None = None
    detector: Any = None  # the Detector that produced the curves (theta set by `score`)


@dataclass
class MethodResult(RunKey):
    """The scored run: theta chosen on its tuning examples, metrics on validation and test."""

    theta: float
    metric_config: dict[str, Any]
    validation: dict[str, float]
    test: dict[str, float]
    test_ids: list[int]
    test_detection: list[int]
    test_effectiveness: list[float]
    test_mitigation: list[int]
    seconds: float
    history: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def fit_curves(ctx: DetectionContext, method: str, labels: str | int = "val", seed: int = 0,
               attack_type: str = "all", ft_cfg: FinetuneConfig = FinetuneConfig()) -> CurveSet:
    """Train a learned method on the regime's labels (operator baselines: nothing to train) and
    return its Detector and its survival curves on the regime's tuning ids and on the test split."""
    t0 = time.time()
    ft = FinetuneConfig(**{**ft_cfg.__dict__, "seed": seed})
    sets = select_labels(ctx.examples, labels, seed, ft.holdout, attack_type)
    for role in ("fit", "tune", "test"):
        if len(getattr(sets, role)) == 0:
            raise ValueError(f"{method}, labels={labels}, attack type {attack_type}: no {role} examples "
                             f"(regime {sets.regime}); the splits are too short for the alerts")
    torch.manual_seed(seed)
    history = None
    if method in OPERATOR or method in ZERO_LABEL:
        key = f"op:{method}"
        if key not in ctx._cache:  # no labels involved: one fit and one set of curves per method
            det = ctx.new_detector(method, ft)
            ctx._cache[key] = (det, example_curves(ctx, det, np.arange(ctx.n)))
        det, curves_all = ctx._cache[key]
        import copy
        det = copy.deepcopy(det)
        tune, test = curves_all[sets.tune], curves_all[sets.test]
    else:
        det = ctx.new_detector(method, ft)
        model, groups = _trainable(ctx, det, method, ft)
        history = train_survival(model, ctx.col("label_t"), ctx.col("label") == 1, sets, ft, groups)
        for m in model.modules():
            m.eval()
        tune, test = example_curves(ctx, det, sets.tune), example_curves(ctx, det, sets.test)
    det.info = {"method": method, "window": ctx.window, "length": ctx.length, "labels": str(labels), "regime": sets.regime, "seed": seed,
                "attack_type": attack_type, "counts": {"fit": len(sets.fit), "stop": len(sets.stop),
                                                       "tune": len(sets.tune), "test": len(sets.test)}}
    counts = {"fit": len(sets.fit), "stop": len(sets.stop), "tune": len(sets.tune), "test": len(sets.test)}
    return CurveSet(method, str(labels), attack_type, seed, sets.regime, counts, sets.tune, tune, sets.test, test,
                    time.time() - t0, history, det)


def example_curves(ctx: DetectionContext, det: Detector, ids: np.ndarray) -> np.ndarray:
    """(len(ids), L) curves of examples: the detector's own computation (`Detector.example_curves`);
    the frozen NetFlowGen reuses the cached hidden states of the same anchored windows."""
    ids = np.asarray(ids, dtype=np.int64)
    if det.method == "NetFlowGen" and "hidden" in ctx._cache and det.core.backbone is ctx.pretrained.model:
        with torch.no_grad():
            x = det.core.hazards(ctx.hidden(det.core)[torch.as_tensor(ids)]).double().numpy()
        return aggregate_curve(x, det.kind)
    if det.method in SURPRISAL_INPUT_METHODS and "surprisal" in ctx._cache:
        calib = det.calib_rows(ctx.data)
        z = det.core.surprisal_z(ctx.surprisal(det.core, calib)[torch.as_tensor(ids)], calib[ctx.col("node_row")[ids]])
        with torch.no_grad():
            x = det.core.hazards(ctx.hidden(det.core)[torch.as_tensor(ids)], z).double().numpy()
        return aggregate_curve(x, det.kind)
    calib = det.calib_rows(ctx.data)
    return det.example_curves(ctx.data, calib, ctx.col("node_row")[ids], ctx.col("start")[ids])


def score(ctx: DetectionContext, cs: CurveSet, metric_cfg: MetricConfig = MetricConfig(),
          theta: float | None = None) -> MethodResult:
    """Choose theta on the tuning curves for `metric_cfg`'s bound and budget (or take the given
    `theta`, e.g. from a false-alarm budget: no label involved); evaluate on test. The CurveSet's
    detector carries the theta and the metric constants afterwards."""
    if theta is None:
        choice = choose_threshold(cs.tune_curves, ctx.eval_set(cs.tune_ids, metric_cfg), metric_cfg)
        theta, validation = float(choice.theta), choice.validation
    else:
        validation = evaluate(detect(cs.tune_curves, theta, metric_cfg.warmup), ctx.eval_set(cs.tune_ids, metric_cfg),
                              metric_cfg)
    t_det = detect(cs.test_curves, theta, metric_cfg.warmup)
    m = evaluate(t_det, ctx.eval_set(cs.test_ids, metric_cfg), metric_cfg)
    if cs.detector is not None:
        cs.detector.theta, cs.detector.warmup = float(theta), int(metric_cfg.warmup)
        cs.detector.metric_config = dict(metric_cfg.__dict__)
        cs.detector.info["test"] = m.summary()
    return MethodResult(cs.method, cs.labels, cs.attack_type, cs.seed, cs.regime, cs.counts, float(theta),
                        dict(metric_cfg.__dict__), validation.summary(), m.summary(), cs.test_ids.tolist(),
                        t_det.tolist(), m.effectiveness_per_attack, m.mitigation_time, cs.seconds, cs.history)


def run_method(ctx: DetectionContext, method: str, labels: str | int = "val", seed: int = 0,
               attack_type: str = "all", metric_cfg: MetricConfig = MetricConfig(),
               ft_cfg: FinetuneConfig = FinetuneConfig(), keep_curves: bool = False
               ) -> tuple[MethodResult, np.ndarray | None]:
    """fit_curves + score; returns the result and, when keep_curves, the (n_test, L) test curves."""
    cs = fit_curves(ctx, method, labels, seed, attack_type, ft_cfg)
    return score(ctx, cs, metric_cfg), (cs.test_curves if keep_curves else None)


def _trainable(ctx: DetectionContext, det: Detector, method: str, ft: FinetuneConfig
               ) -> tuple[torch.nn.Module, list | None]:
    """The module that maps example ids to hazards (B, L) for `train_survival`, sharing the
    detector's weights (training it trains the detector)."""
    core = det.core
    calib = det.calib_rows(ctx.data)
    if method == "MS-LSTM":
        plan = ctx.plan(core.context, core.stride)

        def lstm_hazards(rows: np.ndarray, starts: np.ndarray, length: int) -> torch.Tensor:
            return core.net(core.inputs(ctx.data, calib, rows, starts, length))
        return AnchoredSurvival(plan, lstm_hazards, net=core.net), None
    if (method == "NetFlowGen" and not ft.unfreeze) or method in SURPRISAL_INPUT_METHODS:
        h = ctx.hidden(core)
        train = h[torch.as_tensor(np.flatnonzero(ctx.col("split") == "train"))].reshape(-1, h.shape[-1])
        if train.shape[0] == 0:
            train = h.reshape(-1, h.shape[-1])
        core.mean, core.std = train.mean(0), train.std(0).clamp_min(1e-6)
        z = None  # NetFlowGen+surprisal: the per-node surprisal z (N, L, G) beside the hidden states
        if method in SURPRISAL_INPUT_METHODS:
            z = core.surprisal_z(ctx.surprisal(core, calib), calib[ctx.col("node_row")])
        return FrozenBackboneSurvival(h, core.head, core.mean, core.std, z), None
    plan = ctx.plan(core.context, core.stride)
    tokens = ctx.data.tokens

    def gpt_hazards(rows: np.ndarray, starts: np.ndarray, length: int) -> torch.Tensor:
        return core.head(core.backbone.hidden_states(tokens.inputs(rows, starts, length)))
    model = AnchoredSurvival(plan, gpt_hazards, head=core.head, backbone=core.backbone)
    if method == "TF":
        return model, None
    groups = [{"params": list(core.head.parameters())},
              {"params": list(core.backbone.parameters()), "lr": ft.backbone_lr}]
    return model, groups


def load_pretrained(model_dir: str | Path) -> Any:
    """The pre-trained model (model, binner, config) from a directory written by `netflowgen pretrain`,
    its content hash recorded in its config (so detectors can name the backbone they came from)."""
    from netflowgen.model.io import load_pretrained as load
    return load(model_dir)
