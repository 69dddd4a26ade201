"""The method cores behind `Detector`: each maps windows of a node's minutes to per-minute
intensities (`detect.anchored`) and knows what it needs per node (its calibration).

- `OperatorCore`: Static-EWMA, Static-percentile, Seasonal-band, CUSUM on packets, bytes and flows per minute;
- `LstmCore`: the multi-timescale LSTM on per-node standardized features;
- `TransformerCore`: a TrafficGPT backbone and a SAFE head on its standardized hidden states
  (`detect.surprisal_input.SurprisalInputCore`: the head also reads the model's surprisal);
- `SurprisalCore`: the pre-trained model's upward surprisal per feature group, per node calibrated.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from netflowgen.detect.baselines import (
    VOLUME_FEATURES,
    CusumDetector,
    SeasonalBand,
    StaticEwma,
    StaticPercentile,
    keep_or_all,
)
from netflowgen.detect.cube import NodeMinuteCube, cube_to_table
from netflowgen.detect.models import MultiScaleLSTMNet
from netflowgen.detect.safe import SurvivalHead
from netflowgen.rejects import InputError

SURPRISAL_INPUT_METHODS = ("NetFlowGen+surprisal",)  # frozen NetFlowGen, head on hidden states + surprisal
TRANSFORMER_METHODS = ("NetFlowGen", *SURPRISAL_INPUT_METHODS, "NetFlowGen-unfrozen", "TF")
OPERATOR_METHODS = ("Static-EWMA", "Static-percentile", "Seasonal-band", "CUSUM")
ZERO_LABEL_METHODS = ("Surprisal",)  # from what the pre-trained model knows; no label trains it
ALL_METHODS = (*TRANSFORMER_METHODS, "MS-LSTM", *OPERATOR_METHODS, *ZERO_LABEL_METHODS)
NO_TAIL = float(np.finfo(np.float32).max)  # a top-bin edge no value exceeds (a series with no cut-off)
NEW_NODE_BINS = "new_node_bins.json"  # cut-offs fitted on new nodes' reference ranges (own bins)


@dataclass
class ScoringData:
    """What detectors read: the dense node-minute cube and, for transformer methods, its tokens
    (built with the backbone's binner and the detector's node map)."""

    cube: NodeMinuteCube
    tokens: Any = None  # netflowgen.tokens.TokenData over the cube's nodes and minutes
    time_zone: str = "UTC"
    # (n_nodes, T) minutes per-node calibration leaves out (known attacks of a reference range)
    excluded: np.ndarray | None = None
    _hours: np.ndarray | None = field(default=None, repr=False)  # `hours()`, derived once

    def kept(self, rows: np.ndarray, lo: int, hi: int) -> np.ndarray | None:
        """(len(rows), hi - lo) the minutes [lo, hi) of `rows` calibration may use (None = all)."""
        if self.excluded is None:
            return None
        return ~np.asarray(self.excluded, dtype=bool)[np.asarray(rows)][:, lo:hi]

    @property
    def minute0_ms(self) -> int:
        return int(self.cube.minutes[0])

    def hours(self) -> np.ndarray:
        """(T,) hour of day of every minute in the data's time zone (computed once)."""
        if self._hours is None:
            from netflowgen.tokens.data import time_index
            self._hours = time_index(self.cube.minutes.astype("datetime64[ms]"), self.time_zone)[:, 1]
        return self._hours


def local_hours(data: ScoringData, starts: np.ndarray, length: int) -> np.ndarray:
    """(B,) window starts -> (B, length) hour of day of each minute in the data's time zone."""
    n = len(data.cube.minutes)
    idx = np.minimum(np.asarray(starts)[:, None] + np.arange(length)[None, :], n - 1)
    return data.hours()[idx]


def nearest_training_nodes(binner: Any, cube: NodeMinuteCube, rows: np.ndarray, lo: int, hi: int,
                           data_excluded: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(embed_row, distance), each (len(rows),): nodes the binner knows are themselves (distance 0);
    others map to the training node nearest by signature (SPEC 6) on their minutes [lo, hi)
    (reported ones, less `data_excluded` (n_cube_nodes, T) where given)."""
    from netflowgen.tokens.binner import node_signature
    embed = np.zeros(len(rows), dtype=np.int64)
    dist = np.zeros(len(rows))
    cols = [cube.features.index(f) for f in binner.feature_names]
    for j, r in enumerate(np.asarray(rows)):
        node = cube.nodes[r]
        if node in binner.node_index:
            embed[j] = binner.node_index[node]
            continue
        keep = ~cube.missing[r, lo:hi]
        if data_excluded is not None:
            keep = keep & ~data_excluded[r, lo:hi]
        vals = cube.values[r, lo:hi][keep][:, cols].astype(np.float64)
        d = np.abs(binner.signatures - node_signature(vals)).sum(axis=1)
        embed[j], dist[j] = int(d.argmin()), float(d.min())
    return embed, dist


def token_node_map(core: Any, data: ScoringData, rows: np.ndarray, lo: int, hi: int) -> dict[str, np.ndarray]:
    """The node map of a core that reads tokens (`binner`, `own_bins`, `extra_binner`), for cube rows
    `rows` calibrated on minutes [lo, hi): embed_row (the training node whose embedding each uses),
    distance (its signature distance) and bin_row (the row of `core.token_binner()` whose cut-offs
    bin it: the same node, or with `own_bins` a row fitted on the node's own minutes, appended to
    `core.extra_binner`). A node with no reported minute there keeps the mapped node's cut-offs."""
    rows = np.asarray(rows, dtype=np.int64)
    embed, dist = nearest_training_nodes(core.binner, data.cube, rows, lo, hi, data.excluded)
    bin_row = embed.copy()
    new = [j for j, r in enumerate(rows) if data.cube.nodes[r] not in core.binner.node_index]
    if core.own_bins and new:
        from netflowgen.tokens import Binner
        c = data.cube
        sub = c.part(rows[new], lo, hi)
        fitted = Binner.fit(cube_to_table(sub), core.binner.n_bins, core.binner.feature_names)
        offset = len(core.binner.nodes) + (len(core.extra_binner.nodes) if core.extra_binner is not None else 0)
        core.extra_binner = fitted if core.extra_binner is None else core.extra_binner.extended(fitted)
        for j in new:
            k = fitted.node_index.get(c.nodes[rows[j]])
            if k is not None:
                bin_row[j] = offset + k
    return {"embed_row": embed, "distance": dist, "bin_row": bin_row}


class OperatorCore:
    """Static-EWMA, Static-percentile, Seasonal-band or CUSUM on packets, bytes and flows per minute; per-node levels
    fitted on a range of each node's own minutes. Intensity = the baseline's statistic ("max")."""

    kind = "max"
    needs_tokens = False

    def __init__(self, method: str, context: int, stride: int) -> None:
        self.method, self.context, self.stride = method, int(context), int(stride)
        self.stat: Any = {"Static-EWMA": StaticEwma, "Static-percentile": StaticPercentile,
                          "Seasonal-band": SeasonalBand, "CUSUM": CusumDetector}[method]()
        self.calib: dict[str, np.ndarray] = {}

    def fit_nodes(self, data: ScoringData, rows: np.ndarray, lo: int, hi: int) -> dict[str, np.ndarray]:
        """Per-node statistics of cube rows `rows` from their minutes [lo, hi)."""
        train = data.cube.values[np.asarray(rows)][:, lo:hi][..., [data.cube.features.index(c) for c in VOLUME_FEATURES]]
        keep = data.kept(rows, lo, hi)
        if self.method in ("Static-EWMA", "Static-percentile"):  # one level per node and measure
            return {"ref": type(self.stat)(**_stat_args(self.stat)).fit(train, keep).ref_}
        if self.method == "Seasonal-band":
            sb = SeasonalBand(**_stat_args(self.stat)).fit(train, local_hours(data, np.array([lo]), hi - lo)[0], keep)
            return {"mean": sb.mean_, "std": sb.std_}
        return {"none": np.zeros((len(rows), 1))}

    drivers = VOLUME_FEATURES  # what `window_fn(per_driver=True)` returns one statistic for

    def bind_calibration(self) -> None:
        """Point the statistic at the per-node levels of `calib` (it grows as nodes are calibrated)."""
        if self.method in ("Static-EWMA", "Static-percentile"):
            self.stat.ref_ = self.calib["ref"]
        elif self.method == "Seasonal-band":
            self.stat.mean_, self.stat.std_ = self.calib["mean"], self.calib["std"]

    def window_fn(self, data: ScoringData, calib_rows: np.ndarray, per_driver: bool = False) -> Callable:
        """fn(rows, starts, length) -> (B, length) statistic, or (B, length, 3) per volume measure."""
        self.bind_calibration()

        def fn(rows: np.ndarray, starts: np.ndarray, length: int) -> np.ndarray:
            win = data.cube.windows(rows, starts, length, list(VOLUME_FEATURES))
            m = self.stat.measures(win, calib_rows[rows], local_hours(data, starts, length))  # (B, length, 3)
            return m if per_driver else m.max(axis=2)
        return fn

    def settings(self) -> dict[str, Any]:
        return {"statistic": _stat_args(self.stat)}

    def tensors(self) -> dict[str, torch.Tensor]:
        return {}

    def load(self, settings: dict[str, Any], tensors: dict[str, torch.Tensor], folder: Path) -> None:
        for k, v in settings.get("statistic", {}).items():
            setattr(self.stat, k, v)


def _stat_args(stat: Any) -> dict[str, Any]:
    return {k: v for k, v in stat.__dict__.items() if not k.endswith("_") and k != "name"}


class LstmCore:
    """The multi-timescale LSTM on log1p features standardized per node (mean and sd of each node's
    own calibration range). Intensity = hazard ("sum")."""

    kind = "sum"
    needs_tokens = False

    def __init__(self, net: MultiScaleLSTMNet, context: int, stride: int) -> None:
        self.net, self.context, self.stride = net.eval(), int(context), int(stride)
        self.calib: dict[str, np.ndarray] = {}

    def fit_nodes(self, data: ScoringData, rows: np.ndarray, lo: int, hi: int) -> dict[str, np.ndarray]:
        x = np.log1p(np.clip(data.cube.values[np.asarray(rows), lo:hi], 0, None))
        keep = data.kept(rows, lo, hi)
        if keep is not None:  # known attacks out
            x = np.where(keep_or_all(keep)[:, :, None], x, np.nan)
        return {"mean": np.nanmean(x, axis=1), "std": np.maximum(np.nanstd(x, axis=1), 0.1)}  # (n, F)

    def inputs(self, data: ScoringData, calib_rows: np.ndarray, rows: np.ndarray, starts: np.ndarray,
               length: int) -> torch.Tensor:
        """(B, length, F) standardized float32 inputs of windows."""
        w = np.log1p(np.clip(data.cube.windows(rows, starts, length), 0, None))
        c = calib_rows[rows]
        return torch.from_numpy(((w - self.calib["mean"][c, None]) / self.calib["std"][c, None]).astype(np.float32))

    def window_fn(self, data: ScoringData, calib_rows: np.ndarray) -> Callable:
        @torch.no_grad()
        def fn(rows: np.ndarray, starts: np.ndarray, length: int) -> np.ndarray:
            return self.net.eval()(self.inputs(data, calib_rows, rows, starts, length)).double().numpy()
        return fn

    def settings(self) -> dict[str, Any]:
        return self.net.settings()

    def tensors(self) -> dict[str, torch.Tensor]:
        return {f"net.{k}": v for k, v in self.net.state_dict().items()}

    def load(self, settings: dict[str, Any], tensors: dict[str, torch.Tensor], folder: Path) -> None:
        self.net = MultiScaleLSTMNet(**settings)
        self.net.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("net.")})
        self.net.eval()


class TransformerCore:
    """A TrafficGPT backbone and a SAFE head on its (standardized) hidden states. Intensity =
    hazard ("sum"). Per node: the training node whose embedding (and, unless own bins, cut-offs)
    it uses."""

    kind = "sum"
    needs_tokens = True

    def __init__(self, backbone: Any, binner: Any, head: SurvivalHead, mean: torch.Tensor, std: torch.Tensor,
                 backbone_config: dict[str, Any] | None = None) -> None:
        self.backbone, self.binner, self.head = backbone.eval(), binner, head.eval()
        self.mean, self.std = mean.float(), std.float().clamp_min(1e-6)
        self.backbone_config = dict(backbone_config or {})
        self.context = int(backbone.cfg.context)
        self.stride = max(1, self.context // 2)
        self.calib: dict[str, np.ndarray] = {}
        self.own_bins = False  # new nodes: cut-offs fitted on their own reference range (embedding borrowed)
        self.extra_binner: Any = None  # those cut-offs, rows after the backbone binner's

    def fit_nodes(self, data: ScoringData, rows: np.ndarray, lo: int, hi: int) -> dict[str, np.ndarray]:
        """embed_row: the training node whose embedding each node uses; bin_row: the binner row whose
        cut-offs bin it (the same node, or with `own_bins` a row fitted on its own minutes [lo, hi))."""
        return token_node_map(self, data, rows, lo, hi)

    def token_binner(self) -> Any:
        """The backbone's binner, with the rows fitted for new nodes (own bins) appended."""
        return self.binner if self.extra_binner is None else self.binner.extended(self.extra_binner)

    def hazards(self, hidden: torch.Tensor) -> torch.Tensor:
        """(B, T, d) hidden states -> (B, T) hazards."""
        return self.head((hidden.float() - self.mean) / self.std)

    def window_fn(self, data: ScoringData, calib_rows: np.ndarray) -> Callable:
        @torch.no_grad()
        def fn(rows: np.ndarray, starts: np.ndarray, length: int) -> np.ndarray:
            x = data.tokens.inputs(rows, starts, length)
            return self.hazards(self.backbone.eval().hidden_states(x)).double().numpy()
        return fn

    def settings(self) -> dict[str, Any]:
        first, drop = self.head.net[0], self.head.net[2]
        assert isinstance(first, torch.nn.Linear) and isinstance(drop, torch.nn.Dropout)
        return {"head_in": first.in_features, "head_hidden": first.out_features, "head_dropout": drop.p,
                "own_bins": self.own_bins}

    def tensors(self) -> dict[str, torch.Tensor]:
        return {**{f"head.{k}": v for k, v in self.head.state_dict().items()},
                "hidden_mean": self.mean, "hidden_std": self.std}

    def save_backbone(self, folder: Path) -> str:
        from netflowgen.model.io import content_hash, save_model
        save_model(folder / "backbone", self.backbone, self.binner, self.backbone_config)
        if self.extra_binner is not None:
            self.extra_binner.save(folder / NEW_NODE_BINS)
        return content_hash(folder / "backbone")


def surprisal_groups(predicted: tuple[str, ...] | list[str]) -> dict[str, list[int]]:
    """Feature groups of SPEC 14 over the model's predicted features (positions): incoming volume,
    incoming per protocol, incoming per port class, and the outgoing TCP-flag counts."""
    from netflowgen.schema import PORT_CLASSES, PROTOCOL_CLASSES
    groups: dict[str, list[int]] = {"volume": [], "protocol": [], "port": [], "flags": []}
    for i, name in enumerate(predicted):
        d, rest = name.split("_", 1)
        what = rest.rsplit("_", 1)[0]
        if d == "in" and what == "all":
            groups["volume"].append(i)
        elif d == "in" and what in PROTOCOL_CLASSES:
            groups["protocol"].append(i)
        elif d == "in" and what in {c for c, _, _ in PORT_CLASSES}:
            groups["port"].append(i)
        elif d == "out" and what.startswith("flag"):
            groups["flags"].append(i)
    return {g: idx for g, idx in groups.items() if idx}


def group_membership(groups: dict[str, list[int]], n_predicted: int) -> torch.Tensor:
    """(P, G) float32 0/1 matrix: predicted feature p belongs to group g (`surprisal_groups`)."""
    member = np.zeros((n_predicted, len(groups)), dtype=np.float32)
    for j, idx in enumerate(groups.values()):
        member[idx, j] = 1.0
    return torch.from_numpy(member)


def upward_feature_surprisal(backbone: Any, x: Any, logits: torch.Tensor) -> torch.Tensor:
    """(B, T, P) float32 upward surprisal per predicted feature (nats) of windows `x` (ModelInputs, T
    minutes) from the backbone's logits (B, T, P, N) on them: at minute t, -log p(observed bin |
    minutes < t), counted where the observed bin is above the predicted mean bin and minute t is
    reported, else 0. Minute 0 of a window has no prediction and counts 0."""
    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)  # (B, T-1, P, N): position t predicts t + 1
    target = x.tokens[:, 1:].index_select(2, backbone.target_index)  # (B, T-1, P)
    valid = x.valid[:, 1:]  # (B, T-1): minute t + 1 reported
    n_bins = logp.shape[-1]
    tgt = target.clamp(max=n_bins - 1)
    nll = -logp.gather(-1, tgt.unsqueeze(-1)).squeeze(-1)  # (B, T-1, P)
    mean_bin = (logp.exp() * torch.arange(n_bins, dtype=torch.float32)).sum(-1)
    up = (target.float() > mean_bin) & valid[..., None] & (target < n_bins)
    s = nll * up
    return torch.cat([s.new_zeros((s.shape[0], 1, s.shape[2])), s], dim=1)  # (B, T, P)


def upward_surprisal(backbone: Any, x: Any, logits: torch.Tensor, member: torch.Tensor) -> torch.Tensor:
    """(B, T, G) float32 upward surprisal per group (nats): the sum over each group's features
    (membership (P, G)) of `upward_feature_surprisal`."""
    return upward_feature_surprisal(backbone, x, logits) @ member


GROUP_REDUCTIONS = ("sum", "max")


def reduce_groups(per_feature: np.ndarray, groups: dict[str, list[int]], how: str) -> np.ndarray:
    """(B, T, P) per-feature scores -> (B, T, G) per group (`surprisal_groups` order): the sum over the
    group's features, or the largest of them ("max": a change in many correlated features of one
    group counts as much as its most surprising one)."""
    if how == "sum":
        return np.stack([per_feature[..., idx].sum(-1) for idx in groups.values()], axis=-1)
    if how == "max":
        return np.stack([per_feature[..., idx].max(-1) for idx in groups.values()], axis=-1)
    raise ValueError(f"group reduction {how!r}: use one of {GROUP_REDUCTIONS}")


def top_bin_edges(binner: Any, bin_rows: np.ndarray, predicted: tuple[str, ...] | list[str]) -> np.ndarray:
    """(n, P) lower edge of the top used bin of each predicted feature under the cut-offs of binner rows
    `bin_rows` (n,): every value above it lands in that bin. A series with a single cut-off has only
    bin 1, so its edge is that cut-off (the training maximum); with none, NO_TAIL (no value exceeds it;
    finite, as every saved statistic must be)."""
    r = np.asarray(bin_rows, dtype=np.int64)
    cols = [list(binner.feature_names).index(f) for f in predicted]
    cuts = np.asarray(binner.cuts, dtype=np.float64)[r][:, cols]  # (n, P, N-1)
    used = np.asarray(binner.n_used, dtype=np.int64)[r][:, cols]  # (n, P)
    at = np.clip(np.where(used >= 2, used - 2, 0), 0, cuts.shape[-1] - 1)
    edge = np.take_along_axis(cuts, at[..., None], axis=-1)[..., 0]
    return np.where((used >= 1) & np.isfinite(edge) & (edge > 0), np.minimum(edge, NO_TAIL), NO_TAIL)


def tail_excess(values: np.ndarray, edge: np.ndarray) -> np.ndarray:
    """(B, T, P) log(x / edge) where a value x (B, T, P) lies above its top bin's lower edge (B, P),
    else 0: how many e-folds beyond the bins a minute is, which the bins themselves cannot say."""
    e = np.asarray(edge, dtype=np.float64)[:, None, :]
    x = np.asarray(values, dtype=np.float64)
    above = (e < NO_TAIL) & (x > e)
    return np.where(above, np.log(np.where(above, x, 1.0) / np.where(above, e, 1.0)), 0.0)


def tail_scales(excess: np.ndarray, keep: np.ndarray, prior: float = 1.0, floor: float = 0.25) -> np.ndarray:
    """(n, P) mean excess of each node's calibration minutes beyond their top bins' edges
    (`tail_excess` (n, T, P), over the minutes `keep` (n, T) marks): the scale of an exponential tail,
    shrunk toward `prior` e-folds by one pseudo-observation, at least `floor`."""
    k = np.asarray(keep, dtype=bool)[:, :, None] & (excess > 0)
    total = np.where(k, excess, 0.0).sum(axis=1)
    return np.maximum((total + prior) / (k.sum(axis=1) + 1.0), floor)


def top_bin_tail(values: np.ndarray, cols: list[int], edge: np.ndarray, scale: np.ndarray) -> Callable:
    """fn(rows, starts, length, params) -> (B, length, P) tail surprisal (nats): `tail_excess` of the
    feature values (n, T, F), columns `cols` = the predicted features, over `tail_scales` (the negative
    log density of an exponential tail beyond the top bin, less its constant). `params` (B,) are the
    rows of `edge` / `scale` (n_calibrated, P) of each window's node."""
    def fn(rows: np.ndarray, starts: np.ndarray, length: int, params: np.ndarray) -> np.ndarray:
        span = np.asarray(starts, dtype=np.int64)[:, None] + np.arange(length)
        v = values[np.asarray(rows, dtype=np.int64)[:, None], span][..., cols]  # (B, T, P)
        return tail_excess(v, edge[params]) / scale[params][:, None, :]
    return fn


def fit_top_bin_tail(binner: Any, bin_rows: np.ndarray, predicted: tuple[str, ...] | list[str],
                     sub: NodeMinuteCube, kept: np.ndarray | None) -> dict[str, np.ndarray]:
    """`tail_edge` / `tail_scale` (n, P) of the nodes of `sub` (their calibration range), binned with
    the rows `bin_rows` of `binner`, over their reported minutes (and `kept` (n, T) where given)."""
    cols = [sub.features.index(f) for f in predicted]
    edge = top_bin_edges(binner, bin_rows, predicted)
    keep = ~sub.missing if kept is None else ~sub.missing & kept
    return {"tail_edge": edge, "tail_scale": tail_scales(tail_excess(sub.values[..., cols], edge), keep)}


def cube_tail(cube: NodeMinuteCube, predicted: tuple[str, ...] | list[str], calib: dict[str, np.ndarray],
              node_rows: np.ndarray | None = None) -> Callable:
    """`top_bin_tail` of a cube's values with the tail statistics of `calib` (rows: calibration rows);
    `node_rows` reorders the cube's rows (row r of the callers = row node_rows[r] of the cube)."""
    values = cube.values if node_rows is None else cube.values[np.asarray(node_rows)]
    return top_bin_tail(values, [cube.features.index(f) for f in predicted], calib["tail_edge"], calib["tail_scale"])


def feature_tail(tail: Callable, rows: np.ndarray, starts: np.ndarray, length: int, params: np.ndarray,
                 valid: np.ndarray) -> np.ndarray:
    """(B, length, P) tail surprisal `tail(rows, starts, length, params)` at the reported minutes
    `valid` (B, length) after each window's first (0 there, as the surprisal of the bins)."""
    t = tail(rows, starts, length, params) * np.asarray(valid, dtype=bool)[..., None]
    t[:, 0] = 0.0
    return t


def group_tail(tail: Callable, rows: np.ndarray, starts: np.ndarray, length: int, params: np.ndarray,
               valid: np.ndarray, member: np.ndarray) -> np.ndarray:
    """(B, length, G) group sums (membership (P, G)) of `feature_tail`."""
    return feature_tail(tail, rows, starts, length, params, valid) @ member


def calibrate_group_surprisal(core: Any, data: ScoringData, rows: np.ndarray, lo: int, hi: int,
                              node_map: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """The per-node statistics of a surprisal core (`SurprisalCore`, `SurprisalInputCore`) for cube
    rows `rows` over minutes [lo, hi), tokenized with their `node_map` (embed_row, bin_row) as scoring
    tokenizes them: the top-bin tail's (tail_edge, tail_scale (n, P); empty without `core.tail`) and
    the group surprisal's median and scale (n, G) (`surprisal_calibration`, tail included)."""
    from netflowgen.tokens import TokenData
    sub = data.cube.part(rows, lo, hi)
    bins = {n: (int(b), int(e)) for n, b, e in zip(sub.nodes, node_map["bin_row"], node_map["embed_row"])}
    tok = TokenData.build(cube_to_table(sub), core.token_binner(), None, data.time_zone, bins, core.binner.customers)
    order = np.array([tok.nodes.index(n) for n in sub.nodes])  # row of tok of each row of sub
    kept = data.kept(rows, lo, hi)
    stats: dict[str, np.ndarray] = {}
    tail, sub_row = None, np.argsort(order)  # tok row -> row of sub (and of its tail statistics)
    if core.tail:
        stats = fit_top_bin_tail(core.token_binner(), node_map["bin_row"], core.predicted, sub, kept)
        tail = cube_tail(sub, core.predicted, stats, sub_row)
    med, scale = surprisal_calibration(
        lambda r, s0, ln: core.group_surprisal(tok, r, s0, ln, tail, sub_row[r]), order, hi - lo,
        core.context, len(core.groups), core.scale_floor, kept)
    return stats, med, scale


def surprisal_calibration(surprisal: Callable[[np.ndarray, np.ndarray, int], np.ndarray], rows: np.ndarray,
                          n_minutes: int, context: int, n_groups: int, scale_floor: float,
                          keep: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per-node robust location and scale, each (n, G), of the group surprisal over minutes
    [0, n_minutes) of `rows`: median and max(1.4826 x MAD, scale_floor) over windows of `context`
    minutes tiling the range (each window's first minute, which has no prediction, left out), over
    the minutes `keep` (n, n_minutes) marks where given (a node with none kept uses all).
    `surprisal(rows, starts, length)` -> (n, length, G) of that token data."""
    parts, where = [], []
    for s0 in range(0, n_minutes, context):
        ln = min(context, n_minutes - s0)
        if ln >= 2:
            parts.append(surprisal(rows, np.full(len(rows), s0), ln)[:, 1:])
            where.append(np.arange(s0 + 1, s0 + ln))
    S = np.concatenate(parts, axis=1) if parts else np.zeros((len(rows), 1, n_groups))
    if keep is not None and parts:
        k = np.asarray(keep, dtype=bool)[:, np.concatenate(where)]
        S = np.where(keep_or_all(k)[:, :, None], S, np.nan)
    med = np.nanmedian(S, axis=1)  # (n, G)
    mad = np.nanmedian(np.abs(S - med[:, None]), axis=1)
    return med, np.maximum(1.4826 * mad, scale_floor)


class SurprisalCore:
    """Zero-label detection from the pre-trained model (SPEC 14): at minute t, per feature group g,
    S_g(t) = sum (or, with `reduce` = "max", the largest) over the group's features of
    -log p(observed bin | minutes < t), counted only where
    the observed bin is above the predicted mean bin (traffic higher than expected; a quiet minute
    is not an attack). Per node, robust z-score against its reference range (median and 1.4826 x
    MAD of S_g there), smoothed by an EWMA (weight `alpha`) inside the window. Intensity = the
    largest smoothed z over the groups ("max"); `drivers` = the groups, so alerts say which group
    drove them. Position 0 of a window has no prediction and counts 0.

    With `tail` (new detectors), S_g also counts how far beyond the bins a minute lies. The bins are
    equal-frequency, so the top one holds about a ninth of a node's non-zero minutes, and a flood a
    thousand times a host's busiest minute costs no more nats than an ordinary busy minute. Each
    feature above its top bin's lower edge adds log(x / edge) / scale, the scale being its node's
    mean excess there on the calibration range (`tail_scales`): the negative log density of an
    exponential tail beyond the bins (less its constant)."""

    kind = "max"
    needs_tokens = True

    def __init__(self, backbone: Any, binner: Any, backbone_config: dict[str, Any] | None = None,
                 context: int | None = None, stride: int | None = None, alpha: float = 0.6,
                 scale_floor: float = 10.0, tail: bool = True, reduce: str = "sum") -> None:
        self.backbone, self.binner = backbone.eval(), binner
        self.tail = bool(tail)
        if reduce not in GROUP_REDUCTIONS:
            raise ValueError(f"group reduction {reduce!r}: use one of {GROUP_REDUCTIONS}")
        self.reduce = reduce
        self.backbone_config = dict(backbone_config or {})
        self.context = int(context or backbone.cfg.context)
        self.stride = int(stride or max(1, self.context // 2))
        self.alpha, self.scale_floor = float(alpha), float(scale_floor)
        self.groups = surprisal_groups(list(backbone.cfg.predicted_features))
        self.drivers = tuple(self.groups)
        self._member = group_membership(self.groups, len(backbone.cfg.predicted_features))  # (P, G)
        self.calib: dict[str, np.ndarray] = {}
        self.own_bins = False  # new nodes: cut-offs fitted on their own reference range (as TransformerCore)
        self.extra_binner: Any = None

    def token_binner(self) -> Any:
        """The backbone's binner, with the rows fitted for new nodes (own bins) appended."""
        return self.binner if self.extra_binner is None else self.binner.extended(self.extra_binner)

    @torch.no_grad()
    def group_surprisal(self, tokens: Any, rows: np.ndarray, starts: np.ndarray, length: int,
                        tail: Callable | None = None, params: np.ndarray | None = None) -> np.ndarray:
        """(B, length, G) upward surprisal of windows [start, start + length) (nats) per feature, plus
        `tail(rows, starts, length, params)` (`top_bin_tail`) at reported minutes after the window's
        first where given, reduced over each group's features (`reduce`: sum or max)."""
        x = tokens.inputs(rows, starts, length)
        per_feature = upward_feature_surprisal(self.backbone.eval(), x, self.backbone(x)).double().numpy()
        if tail is not None:
            per_feature = per_feature + feature_tail(tail, rows, starts, length, np.asarray(params), x.valid.numpy())
        return reduce_groups(per_feature, self.groups, self.reduce)

    @property
    def predicted(self) -> tuple[str, ...]:
        return tuple(self.backbone.cfg.predicted_features)

    def fit_nodes(self, data: ScoringData, rows: np.ndarray, lo: int, hi: int) -> dict[str, np.ndarray]:
        """Node map (as the transformer methods) and the median / scale of each group's surprisal over
        the nodes' minutes [lo, hi), from windows of `context` minutes tiling the range."""
        rows = np.asarray(rows, dtype=np.int64)
        out = token_node_map(self, data, rows, lo, hi)
        tail_stats, med, scale = calibrate_group_surprisal(self, data, rows, lo, hi, out)
        return {**out, **tail_stats, "median": med, "scale": scale}

    def window_fn(self, data: ScoringData, calib_rows: np.ndarray, per_driver: bool = False) -> Callable:
        """fn(rows, starts, length) -> (B, length) largest smoothed group z, or (B, length, G)."""
        from netflowgen.detect.baselines import ewma
        tail = cube_tail(data.cube, self.predicted, self.calib) if self.tail else None

        def fn(rows: np.ndarray, starts: np.ndarray, length: int) -> np.ndarray:
            c = calib_rows[rows]
            S = self.group_surprisal(data.tokens, rows, starts, length, tail, c)
            z = ewma((S - self.calib["median"][c][:, None]) / self.calib["scale"][c][:, None], self.alpha)
            return z if per_driver else z.max(axis=2)
        return fn

    def settings(self) -> dict[str, Any]:
        return {"alpha": self.alpha, "scale_floor": self.scale_floor, "own_bins": self.own_bins, "tail": self.tail,
                "reduce": self.reduce}

    def tensors(self) -> dict[str, torch.Tensor]:
        return {}

    def save_backbone(self, folder: Path) -> str:
        from netflowgen.model.io import content_hash, save_model
        save_model(folder / "backbone", self.backbone, self.binner, self.backbone_config)
        if self.extra_binner is not None:
            self.extra_binner.save(folder / NEW_NODE_BINS)
        return content_hash(folder / "backbone")


def load_own_bins(core: Any, settings: dict[str, Any], folder: Path) -> None:
    """A token core's `own_bins` setting and the cut-offs it fitted for new nodes (NEW_NODE_BINS)."""
    core.own_bins = bool(settings.get("own_bins", False))
    if (folder / NEW_NODE_BINS).exists():
        from netflowgen.tokens import Binner
        core.extra_binner = Binner.load(folder / NEW_NODE_BINS)


def load_core(meta: dict[str, Any], tensors: dict[str, torch.Tensor], folder: Path, backbone: str | Path | None) -> Any:
    method = meta["method"]
    if method in OPERATOR_METHODS:
        core: Any = OperatorCore(method, meta["context"], meta["stride"])
        core.load(meta["core"], tensors, folder)
        return core
    if method == "MS-LSTM":
        core = LstmCore(MultiScaleLSTMNet(**meta["core"]), meta["context"], meta["stride"])
        core.load(meta["core"], tensors, folder)
        return core
    if method in ZERO_LABEL_METHODS:
        from netflowgen.model.io import load_model
        model, binner, extra = load_model(Path(backbone) if backbone is not None else folder / "backbone")
        s = meta["core"]
        core = SurprisalCore(model, binner, extra, int(meta["context"]), int(meta["stride"]), float(s["alpha"]),
                             float(s["scale_floor"]), bool(s.get("tail", False)),  # saved before the tail: none
                             str(s.get("reduce", "sum")))
        load_own_bins(core, s, folder)
        return core
    if method in TRANSFORMER_METHODS:
        from netflowgen.model.io import load_model
        model, binner, extra = load_model(Path(backbone) if backbone is not None else folder / "backbone")
        s = meta["core"]
        if method in SURPRISAL_INPUT_METHODS:
            from netflowgen.detect.surprisal_input import load_surprisal_input_core
            core = load_surprisal_input_core(meta, tensors, model, binner, extra)
        else:
            head = SurvivalHead(s["head_in"], s["head_hidden"], s["head_dropout"])
            head.load_state_dict({k[5:]: v for k, v in tensors.items() if k.startswith("head.")})
            core = TransformerCore(model, binner, head, tensors["hidden_mean"], tensors["hidden_std"], extra)
        core.context, core.stride = int(meta["context"]), int(meta["stride"])
        load_own_bins(core, s, folder)
        return core
    raise InputError(f"unknown detector method {method!r}; known: {', '.join(ALL_METHODS)}")
