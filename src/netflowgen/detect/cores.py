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
        rows = np.asarray(rows, dtype=np.int64)
        embed, dist = nearest_training_nodes(self.binner, data.cube, rows, lo, hi, data.excluded)
        bin_row = embed.copy()
        new = [j for j, r in enumerate(rows) if data.cube.nodes[r] not in self.binner.node_index]
        if self.own_bins and new:
            from netflowgen.tokens import Binner
            c = data.cube
            sub = c.part(rows[new], lo, hi)
            fitted = Binner.fit(cube_to_table(sub), self.binner.n_bins, self.binner.feature_names)
            offset = len(self.binner.nodes) + (len(self.extra_binner.nodes) if self.extra_binner is not None else 0)
            self.extra_binner = fitted if self.extra_binner is None else self.extra_binner.extended(fitted)
            for j in new:  # a node with no reported minute in its range keeps the mapped node's cut-offs
                k = fitted.node_index.get(c.nodes[rows[j]])
                if k is not None:
                    bin_row[j] = offset + k
        return {"embed_row": embed, "distance": dist, "bin_row": bin_row}

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


def upward_surprisal(backbone: Any, x: Any, logits: torch.Tensor, member: torch.Tensor) -> torch.Tensor:
    """(B, T, G) float32 upward surprisal per group (nats) of windows `x` (ModelInputs, T minutes)
    from the backbone's logits (B, T, P, N) on them: at minute t, the sum over the group's features
    of -log p(observed bin | minutes < t), counted where the observed bin is above the predicted
    mean bin and minute t is reported. Minute 0 of a window has no prediction and counts 0."""
    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)  # (B, T-1, P, N): position t predicts t + 1
    target = x.tokens[:, 1:].index_select(2, backbone.target_index)  # (B, T-1, P)
    valid = x.valid[:, 1:]  # (B, T-1): minute t + 1 reported
    n_bins = logp.shape[-1]
    tgt = target.clamp(max=n_bins - 1)
    nll = -logp.gather(-1, tgt.unsqueeze(-1)).squeeze(-1)  # (B, T-1, P)
    mean_bin = (logp.exp() * torch.arange(n_bins, dtype=torch.float32)).sum(-1)
    up = (target.float() > mean_bin) & valid[..., None] & (target < n_bins)
    s = (nll * up) @ member  # (B, T-1, G)
    return torch.cat([s.new_zeros((s.shape[0], 1, s.shape[2])), s], dim=1)  # (B, T, G)


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
    S_g(t) = sum over the group's features of -log p(observed bin | minutes < t), counted only where
    the observed bin is above the predicted mean bin (traffic higher than expected; a quiet minute
    is not an attack). Per node, robust z-score against its reference range (median and 1.4826 x
    MAD of S_g there), smoothed by an EWMA (weight `alpha`) inside the window. Intensity = the
    largest smoothed z over the groups ("max"); `drivers` = the groups, so alerts say which group
    drove them. Position 0 of a window has no prediction and counts 0."""

    kind = "max"
    needs_tokens = True

    def __init__(self, backbone: Any, binner: Any, backbone_config: dict[str, Any] | None = None,
                 context: int | None = None, stride: int | None = None, alpha: float = 0.3,
                 scale_floor: float = 0.5) -> None:
        self.backbone, self.binner = backbone.eval(), binner
        self.backbone_config = dict(backbone_config or {})
        self.context = int(context or backbone.cfg.context)
        self.stride = int(stride or max(1, self.context // 2))
        self.alpha, self.scale_floor = float(alpha), float(scale_floor)
        self.groups = surprisal_groups(list(backbone.cfg.predicted_features))
        self.drivers = tuple(self.groups)
        self._member = group_membership(self.groups, len(backbone.cfg.predicted_features))  # (P, G)
        self.calib: dict[str, np.ndarray] = {}

    def token_binner(self) -> Any:
        """New nodes are binned with their mapped training node's cut-offs (no own bins here)."""
        return self.binner

    @torch.no_grad()
    def group_surprisal(self, tokens: Any, rows: np.ndarray, starts: np.ndarray, length: int) -> np.ndarray:
        """(B, length, G) upward surprisal per group of windows [start, start + length) (nats)."""
        x = tokens.inputs(rows, starts, length)
        return upward_surprisal(self.backbone.eval(), x, self.backbone(x), self._member).double().numpy()

    def fit_nodes(self, data: ScoringData, rows: np.ndarray, lo: int, hi: int) -> dict[str, np.ndarray]:
        """Node map (as the transformer methods) and the median / scale of each group's surprisal over
        the nodes' minutes [lo, hi), from windows of `context` minutes tiling the range."""
        from netflowgen.tokens import TokenData
        rows = np.asarray(rows, dtype=np.int64)
        embed, dist = nearest_training_nodes(self.binner, data.cube, rows, lo, hi, data.excluded)
        sub = data.cube.part(rows, lo, hi)
        tok = TokenData.build(cube_to_table(sub), self.token_binner(), None, data.time_zone,
                              {n: (int(e), int(e)) for n, e in zip(sub.nodes, embed)})
        order = np.array([tok.nodes.index(n) for n in sub.nodes])
        med, scale = surprisal_calibration(lambda r, s0, ln: self.group_surprisal(tok, r, s0, ln), order, hi - lo,
                                           self.context, len(self.groups), self.scale_floor, data.kept(rows, lo, hi))
        return {"embed_row": embed, "distance": dist, "bin_row": embed.copy(), "median": med, "scale": scale}

    def window_fn(self, data: ScoringData, calib_rows: np.ndarray, per_driver: bool = False) -> Callable:
        """fn(rows, starts, length) -> (B, length) largest smoothed group z, or (B, length, G)."""
        from netflowgen.detect.baselines import ewma

        def fn(rows: np.ndarray, starts: np.ndarray, length: int) -> np.ndarray:
            S = self.group_surprisal(data.tokens, rows, starts, length)
            c = calib_rows[rows]
            z = ewma((S - self.calib["median"][c][:, None]) / self.calib["scale"][c][:, None], self.alpha)
            return z if per_driver else z.max(axis=2)
        return fn

    def settings(self) -> dict[str, Any]:
        return {"alpha": self.alpha, "scale_floor": self.scale_floor}

    def tensors(self) -> dict[str, torch.Tensor]:
        return {}

    def save_backbone(self, folder: Path) -> str:
        from netflowgen.model.io import content_hash, save_model
        save_model(folder / "backbone", self.backbone, self.binner, self.backbone_config)
        return content_hash(folder / "backbone")


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
        return SurprisalCore(model, binner, extra, int(meta["context"]), int(meta["stride"]), float(s["alpha"]),
                             float(s["scale_floor"]))
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
        core.own_bins = bool(s.get("own_bins", False))
        if (folder / NEW_NODE_BINS).exists():
            from netflowgen.tokens import Binner
            core.extra_binner = Binner.load(folder / NEW_NODE_BINS)
        return core
    raise InputError(f"unknown detector method {method!r}; known: {', '.join(ALL_METHODS)}")
