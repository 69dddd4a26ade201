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

from netflowgen.detect.baselines import VOLUME_FEATURES, CusumDetector, SeasonalBand, StaticEwma, stat_to_curve
from netflowgen.detect.cube import NodeMinuteCube
from netflowgen.detect.earlydetect import split_bounds
from netflowgen.detect.finetune import FinetuneConfig, select_labels, survival_curves, train_survival
from netflowgen.detect.metrics import EvalSet, MetricConfig, choose_threshold, detect, evaluate
from netflowgen.detect.models import (BackboneSurvival, FrozenBackboneSurvival, MultiScaleLSTM,
                                      backbone_hidden_states)
from netflowgen.progress import progress_bar

LEARNED = ("NetFlowGen", "NetFlowGen-unfrozen", "TF", "MS-LSTM")
OPERATOR = ("Static-EWMA", "Seasonal-band", "CUSUM")
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
    pretrained: Any = None  # netflowgen.api.NetFlowGen or None
    tokens: Any = None  # netflowgen.tokens.TokenData over the cube's nodes and minutes
    _cache: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def build(cls, cube: NodeMinuteCube, examples: pl.DataFrame, window: int, length: int | None = None,
              pretrained: Any = None, split: list[float] | None = None, features: pl.DataFrame | None = None
              ) -> "DetectionContext":
        """length None: the full window, capped at the pre-trained model's context."""
        if length is None:
            length = window
            if pretrained is not None:
                length = min(length, int(pretrained.model.cfg.context))
        ex = crop_examples(examples, window, length).drop("id").with_row_index("id")
        tokens = None
        if pretrained is not None:
            from netflowgen.tokens import TokenData
            tokens = TokenData.build(features, pretrained.binner, None)
            if list(tokens.nodes) != list(cube.nodes):
                raise ValueError("token data and cube disagree on the node order")
        return cls(cube, ex, length, split or [0.72, 0.08], pretrained, tokens)

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

    def make_inputs(self, ids: np.ndarray) -> Any:
        return self.tokens.inputs(self.col("node_row")[ids], self.col("start")[ids], self.length)

    def hidden(self) -> torch.Tensor:
        """(N, L, d) hidden states of the frozen pre-trained backbone for every example (cached)."""
        if "hidden" not in self._cache:
            with progress_bar("backbone hidden states", self.n) as adv:
                self._cache["hidden"] = backbone_hidden_states(self.pretrained.model, self.make_inputs,
                                                               self.n, progress=adv)
        return self._cache["hidden"]

    def lstm_features(self) -> torch.Tensor:
        """(N, L, F) log1p features standardized per (node, feature) on the training range."""
        if "lstm" not in self._cache:
            lo, hi = self.train_range()
            x = np.log1p(np.clip(self.cube.values[:, lo:hi], 0, None))
            mu, sd = x.mean(axis=1), np.maximum(x.std(axis=1), 0.1)  # (n_nodes, F)
            rows = self.col("node_row")
            w = np.log1p(np.clip(self.cube.windows(rows, self.col("start"), self.length), 0, None))
            self._cache["lstm"] = torch.from_numpy(((w - mu[rows, None]) / sd[rows, None]).astype(np.float32))
        return self._cache["lstm"]

    def operator_curves(self, method: str) -> np.ndarray:
        """(N, L) curves of an operator baseline for every example (cached; no labels involved)."""
        key = f"op:{method}"
        if key not in self._cache:
            lo, hi = self.train_range()
            train = self.cube.windows(np.arange(len(self.cube.nodes)), np.zeros(len(self.cube.nodes), np.int64),
                                      hi - lo, VOLUME_FEATURES)
            det: Any
            if method == "Static-EWMA":
                det = StaticEwma().fit(train)
            elif method == "Seasonal-band":
                det = SeasonalBand().fit(train, self.cube.hours(np.array([lo]), hi - lo)[0])
            else:
                det = CusumDetector().fit()
            rows, starts = self.col("node_row"), self.col("start")
            win = self.cube.windows(rows, starts, self.length, VOLUME_FEATURES)
            self._cache[key] = stat_to_curve(det.statistic(win, rows, self.cube.hours(starts, self.length)))
        return self._cache[key]


@dataclass
class CurveSet:
    """A trained (or fitted) method's curves on its tuning and test examples."""

    method: str
    labels: str
    attack_type: str
    seed: int
    regime: str
    counts: dict[str, int]
    tune_ids: np.ndarray
    tune_curves: np.ndarray  # (n_tune, L)
    test_ids: np.ndarray
    test_curves: np.ndarray  # (n_test, L)
    seconds: float
    history: dict[str, Any] | None = None
    model: Any = None  # the trained survival model (learned methods), for saving


@dataclass
class MethodResult:
    method: str
    labels: str
    attack_type: str
    seed: int
    regime: str
    counts: dict[str, int]
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
    return its survival curves on the regime's tuning ids and on the test split."""
    t0 = time.time()
    ft = FinetuneConfig(**{**ft_cfg.__dict__, "seed": seed})
    sets = select_labels(ctx.examples, labels, seed, ft.holdout, attack_type)
    for role in ("fit", "tune", "test"):
        if len(getattr(sets, role)) == 0:
            raise ValueError(f"{method}, labels={labels}, attack type {attack_type}: no {role} examples "
                             f"(regime {sets.regime}); the splits are too short for the alerts")
    torch.manual_seed(seed)
    history, model = None, None
    if method in OPERATOR:
        curves_all = ctx.operator_curves(method)
        tune, test = curves_all[sets.tune], curves_all[sets.test]
    else:
        model, groups = _learned_model(ctx, method, ft)
        history = train_survival(model, ctx.col("label_t"), ctx.col("label") == 1, sets, ft, groups)
        tune, test = survival_curves(model, sets.tune), survival_curves(model, sets.test)
    counts = {"fit": len(sets.fit), "stop": len(sets.stop), "tune": len(sets.tune), "test": len(sets.test)}
    return CurveSet(method, str(labels), attack_type, seed, sets.regime, counts, sets.tune, tune, sets.test, test,
                    time.time() - t0, history, model)


def score(ctx: DetectionContext, cs: CurveSet, metric_cfg: MetricConfig = MetricConfig()) -> MethodResult:
    """Choose theta on the tuning curves for `metric_cfg`'s bound and budget; evaluate on test."""
    choice = choose_threshold(cs.tune_curves, ctx.eval_set(cs.tune_ids, metric_cfg), metric_cfg)
    t_det = detect(cs.test_curves, choice.theta, metric_cfg.warmup)
    m = evaluate(t_det, ctx.eval_set(cs.test_ids, metric_cfg), metric_cfg)
    return MethodResult(cs.method, cs.labels, cs.attack_type, cs.seed, cs.regime, cs.counts, choice.theta,
                        dict(metric_cfg.__dict__), choice.validation.summary(), m.summary(), cs.test_ids.tolist(),
                        t_det.tolist(), m.effectiveness_per_attack, m.mitigation_time, cs.seconds, cs.history)


def run_method(ctx: DetectionContext, method: str, labels: str | int = "val", seed: int = 0,
               attack_type: str = "all", metric_cfg: MetricConfig = MetricConfig(),
               ft_cfg: FinetuneConfig = FinetuneConfig(), keep_curves: bool = False
               ) -> tuple[MethodResult, np.ndarray | None]:
    """fit_curves + score; returns the result and, when keep_curves, the (n_test, L) test curves."""
    cs = fit_curves(ctx, method, labels, seed, attack_type, ft_cfg)
    return score(ctx, cs, metric_cfg), (cs.test_curves if keep_curves else None)


def _learned_model(ctx: DetectionContext, method: str, ft: FinetuneConfig) -> tuple[torch.nn.Module, list | None]:
    if method == "MS-LSTM":
        return MultiScaleLSTM(ctx.lstm_features(), head_hidden=ft.head_hidden, dropout=ft.head_dropout), None
    if ctx.pretrained is None:
        raise ValueError(f"{method} needs a pre-trained model (and its binner for the tokens)")
    if method == "NetFlowGen" and not ft.unfreeze:
        h = ctx.hidden()
        train = h[torch.as_tensor(np.flatnonzero(ctx.col("split") == "train"))].reshape(-1, h.shape[-1])
        if train.shape[0] == 0:
            train = h.reshape(-1, h.shape[-1])
        return FrozenBackboneSurvival(h, ft.head_hidden, ft.head_dropout, train.mean(0), train.std(0)), None
    from netflowgen.model import TrafficGPT
    src = ctx.pretrained.model
    if method == "TF":  # same architecture, random initialization, trained end to end
        backbone = TrafficGPT(src.cfg, src.n_nodes, src.n_customers)
        model = BackboneSurvival(backbone, ctx.make_inputs, src.cfg.d_model, ft.head_hidden, ft.head_dropout)
        return model, None
    import copy
    model = BackboneSurvival(copy.deepcopy(src), ctx.make_inputs, src.cfg.d_model, ft.head_hidden, ft.head_dropout)
    groups = [{"params": list(model.head.parameters())},
              {"params": list(model.backbone.parameters()), "lr": ft.backbone_lr}]
    return model, groups


def load_pretrained(model_dir: str | Path) -> Any:
    """The pre-trained NetFlowGen (netflowgen.api) from a directory written by `netflowgen pretrain`."""
    from netflowgen.api import NetFlowGen
    return NetFlowGen.from_pretrained(model_dir)
