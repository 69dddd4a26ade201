"""`Detector`: one early-detection method, trained or fitted once, carried as a folder, and scored
on any later node-minute table minute by minute with exactly the behaviour it was evaluated with.

Every method (NetFlowGen frozen and unfrozen, TF, MS-LSTM, Static-EWMA, Seasonal-band, CUSUM) is a
*core* that maps windows of a node's minutes to per-minute intensities (`detect.anchored`), plus
what the core needs per node (its calibration: standardization, reference levels, the training
node whose embedding an unseen node borrows). The Detector adds the threshold and the metric
constants it was chosen under, length and warm-up, the hand-off facts (feature-set hash, time zone,
split fractions, backbone content hash) and the node table.

Folder (`save` / `load`; JSON and safetensors, no pickle):
    detector.json         method, settings, theta + metric constants, hashes, time zone, split,
                          nodes and how each was calibrated (training range / reference range)
    detector.safetensors  the core's weights and every per-node statistic
    backbone/             the transformer methods' model folder (weights, config, binner)
    README.md             the model card: training data, label regime, test metrics
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import polars as pl
import torch

from netflowgen.detect.anchored import MS_PER_MINUTE, aggregate_curve, plan_windows, run_plan, sliding_score
from netflowgen.detect.baselines import VOLUME_FEATURES, CusumDetector, SeasonalBand, StaticEwma
from netflowgen.detect.cube import NodeMinuteCube
from netflowgen.detect.models import MultiScaleLSTMNet
from netflowgen.detect.safe import SurvivalHead
from netflowgen.rejects import InputError
from netflowgen.schema import DEFAULT_SPLIT, FEATURE_SET_HASH

DETECTOR_FORMAT = "netflowgen.detector/1"
TRANSFORMER_METHODS = ("NetFlowGen", "NetFlowGen-unfrozen", "TF")
OPERATOR_METHODS = ("Static-EWMA", "Seasonal-band", "CUSUM")
ALL_METHODS = (*TRANSFORMER_METHODS, "MS-LSTM", *OPERATOR_METHODS)
NEW_NODE_BINS = "new_node_bins.json"  # cut-offs fitted on new nodes' reference ranges (own bins)
DEFAULT_REFERENCE = 0.6  # share of a node's first minutes that calibrates a node the detector never saw


@dataclass
class ScoringData:
    """What detectors read: the dense node-minute cube and, for transformer methods, its tokens
    (built with the backbone's binner and the detector's node map)."""

    cube: NodeMinuteCube
    tokens: Any = None  # netflowgen.tokens.TokenData over the cube's nodes and minutes
    time_zone: str = "UTC"

    @property
    def minute0_ms(self) -> int:
        return int(self.cube.minutes[0])

    def hours(self) -> np.ndarray:
        """(T,) hour of day of every minute in the data's time zone (computed once)."""
        if getattr(self, "_hours", None) is None:
            from netflowgen.tokens.data import time_index
            self._hours = time_index(self.cube.minutes.astype("datetime64[ms]"), self.time_zone)[:, 1]
        return self._hours


def local_hours(data: ScoringData, starts: np.ndarray, length: int) -> np.ndarray:
    """(B,) window starts -> (B, length) hour of day of each minute in the data's time zone."""
    n = len(data.cube.minutes)
    idx = np.minimum(np.asarray(starts)[:, None] + np.arange(length)[None, :], n - 1)
    return data.hours()[idx]


def nearest_training_nodes(binner: Any, cube: NodeMinuteCube, rows: np.ndarray, lo: int, hi: int
                           ) -> tuple[np.ndarray, np.ndarray]:
    """(embed_row, distance), each (len(rows),): nodes the binner knows are themselves (distance 0);
    others map to the training node nearest by signature (SPEC 6) on their minutes [lo, hi)."""
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
        vals = cube.values[r, lo:hi][keep][:, cols].astype(np.float64)
        d = np.abs(binner.signatures - node_signature(vals)).sum(axis=1)
        embed[j], dist[j] = int(d.argmin()), float(d.min())
    return embed, dist


# --- method cores -------------------------------------------------------------------------------------
class OperatorCore:
    """Static-EWMA, Seasonal-band or CUSUM on packets, bytes and flows per minute; per-node levels
    fitted on a range of each node's own minutes. Intensity = the baseline's statistic ("max")."""

    kind = "max"
    needs_tokens = False

    def __init__(self, method: str, context: int, stride: int) -> None:
        self.method, self.context, self.stride = method, int(context), int(stride)
        self.stat: Any = {"Static-EWMA": StaticEwma, "Seasonal-band": SeasonalBand,
                          "CUSUM": CusumDetector}[method]()
        self.calib: dict[str, np.ndarray] = {}

    def fit_nodes(self, data: ScoringData, rows: np.ndarray, lo: int, hi: int) -> dict[str, np.ndarray]:
        """Per-node statistics of cube rows `rows` from their minutes [lo, hi)."""
        train = data.cube.values[np.asarray(rows)][:, lo:hi][..., [data.cube.features.index(c) for c in VOLUME_FEATURES]]
        if self.method == "Static-EWMA":
            return {"ref": StaticEwma(**_stat_args(self.stat)).fit(train).ref_}
        if self.method == "Seasonal-band":
            sb = SeasonalBand(**_stat_args(self.stat)).fit(train, local_hours(data, np.array([lo]), hi - lo)[0])
            return {"mean": sb.mean_, "std": sb.std_}
        return {"none": np.zeros((len(rows), 1))}

    drivers = VOLUME_FEATURES  # what `window_fn(per_driver=True)` returns one statistic for

    def window_fn(self, data: ScoringData, calib_rows: np.ndarray, per_driver: bool = False) -> Callable:
        """fn(rows, starts, length) -> (B, length) statistic, or (B, length, 3) per volume measure."""
        if self.method == "Static-EWMA":
            self.stat.ref_ = self.calib["ref"]
        elif self.method == "Seasonal-band":
            self.stat.mean_, self.stat.std_ = self.calib["mean"], self.calib["std"]

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
        return {"mean": x.mean(axis=1), "std": np.maximum(x.std(axis=1), 0.1)}  # (n, F)

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
        embed, dist = nearest_training_nodes(self.binner, data.cube, rows, lo, hi)
        bin_row = embed.copy()
        new = [j for j, r in enumerate(rows) if data.cube.nodes[r] not in self.binner.node_index]
        if self.own_bins and new:
            from netflowgen.tokens import Binner
            c = data.cube
            sub = NodeMinuteCube([c.nodes[rows[j]] for j in new], [c.customers[rows[j]] for j in new],
                                 c.minutes[lo:hi], c.values[rows[new], lo:hi], c.missing[rows[new], lo:hi], c.features)
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
        return {"head_in": int(self.head.net[0].in_features), "head_hidden": int(self.head.net[0].out_features),
                "head_dropout": float(self.head.net[2].p), "own_bins": self.own_bins}

    def tensors(self) -> dict[str, torch.Tensor]:
        return {**{f"head.{k}": v for k, v in self.head.state_dict().items()},
                "hidden_mean": self.mean, "hidden_std": self.std}

    def save_backbone(self, folder: Path) -> str:
        from netflowgen.model.io import content_hash, save_model
        save_model(folder / "backbone", self.backbone, self.binner, self.backbone_config)
        if self.extra_binner is not None:
            self.extra_binner.save(folder / NEW_NODE_BINS)
        return content_hash(folder / "backbone")


# --- the detector ----------------------------------------------------------------------------------------
@dataclass
class Detector:
    """One detection method with everything scoring needs. See the module docstring.

    Scores are non-increasing-in-risk values in (0, 1]: a node alarms at minute m when its score is
    below `theta` (survival that no attack has started in the last `length` minutes, or
    exp(-largest statistic) for the operator baselines).
    """

    method: str
    core: Any
    length: int
    warmup: int
    theta: float = 0.0
    metric_config: dict[str, Any] = field(default_factory=dict)
    time_zone: str = "UTC"
    split: list[float] = field(default_factory=lambda: list(DEFAULT_SPLIT))
    nodes: list[str] = field(default_factory=list)  # calibrated nodes, aligned with core.calib rows
    node_source: list[str] = field(default_factory=list)  # "training" or "reference" per node
    backbone_hash: str | None = None  # content hash of the backbone the detector belongs to
    base_backbone_hash: str | None = None  # the pre-trained model it was fine-tuned from
    info: dict[str, Any] = field(default_factory=dict)  # training data, label regime, metrics (model card)
    reference: float = DEFAULT_REFERENCE

    @property
    def kind(self) -> str:
        return self.core.kind

    @classmethod
    def fit(cls, method: str, features: Any, examples: Any, model: str | Path | None = None,
            labels: str | int = "360", **settings: Any) -> "Detector":
        """Train (baselines: fit) `method` on EarlyDetect examples of a node-minute table, choose theta
        on the label regime, evaluate on the test split (`netflowgen.notebook.fit`; test metrics in
        `info["test"]`)."""
        from netflowgen.notebook import fit
        return fit(method, features, examples, model=model, labels=labels, **settings)

    # --- per-node calibration ------------------------------------------------------------------------
    def calibrate(self, data: ScoringData, lo: int, hi: int, source: str, rows: np.ndarray | None = None) -> None:
        """Calibrate cube rows `rows` (default all) on minutes [lo, hi) and add them to the node table."""
        rows = np.arange(len(data.cube.nodes)) if rows is None else np.asarray(rows, dtype=np.int64)
        if rows.size == 0:
            return
        if hi - lo < 1:
            raise InputError(f"{self.method}: an empty calibration range for {len(rows)} node(s)")
        new = self.core.fit_nodes(data, rows, lo, hi)
        for k, v in new.items():
            self.core.calib[k] = v if k not in self.core.calib else np.concatenate([self.core.calib[k], v])
        self.nodes += [data.cube.nodes[r] for r in rows]
        self.node_source += [source] * len(rows)

    def calib_rows(self, data: ScoringData) -> np.ndarray:
        """(n_data_nodes,) calibration row of every node of `data`; nodes never seen are calibrated on
        their reference range (the first `reference` share of the table's minutes) and kept."""
        index = {n: i for i, n in enumerate(self.nodes)}
        unseen = np.array([r for r, n in enumerate(data.cube.nodes) if n not in index], dtype=np.int64)
        if unseen.size:
            hi = max(1, int(round(self.reference * len(data.cube.minutes))))
            self.calibrate(data, 0, hi, "reference", unseen)
            index = {n: i for i, n in enumerate(self.nodes)}
        return np.array([index[n] for n in data.cube.nodes], dtype=np.int64)

    def node_mapping(self) -> pl.DataFrame:
        """node, source (training / reference), and for transformer methods the training node whose
        embedding it uses and the signature distance (0 for training nodes)."""
        df = pl.DataFrame({"node": self.nodes, "source": self.node_source})
        if "embed_row" in self.core.calib:
            names = self.core.binner.nodes
            df = df.with_columns(pl.Series("training_node", [names[i] for i in self.core.calib["embed_row"]]),
                                 pl.Series("distance", self.core.calib["distance"].astype(np.float64)))
        return df

    # --- inputs -------------------------------------------------------------------------------------------
    def prepare(self, table: pl.DataFrame | NodeMinuteCube) -> tuple[ScoringData, np.ndarray]:
        """Scoring data of a dense node-minute table (tokens with this detector's node map) and the
        calibration row of each of its nodes."""
        cube = table if isinstance(table, NodeMinuteCube) else NodeMinuteCube.from_table(_as_polars(table))
        data = ScoringData(cube, None, self.time_zone)
        rows = self.calib_rows(data)
        if self.core.needs_tokens:
            data.tokens = self.tokens_for(data, rows, table if isinstance(table, pl.DataFrame) else None)
        return data, rows

    def tokens_for(self, data: ScoringData, calib_rows: np.ndarray, table: pl.DataFrame | None = None) -> Any:
        from netflowgen.tokens import TokenData
        embed = self.core.calib["embed_row"][calib_rows]
        bins = self.core.calib.get("bin_row", self.core.calib["embed_row"])[calib_rows]
        node_map = {n: (int(b), int(e)) for n, b, e in zip(data.cube.nodes, bins, embed)}
        df = table if table is not None else cube_to_table(data.cube)
        tok = TokenData.build(df, self.core.token_binner(), None, self.time_zone, node_map)
        if list(tok.nodes) != list(data.cube.nodes):
            raise InputError("token data and cube disagree on the node order")
        return tok

    # --- scoring ---------------------------------------------------------------------------------------------
    def intensities(self, data: ScoringData, calib_rows: np.ndarray, node_rows: np.ndarray,
                    minutes: np.ndarray, batch_windows: int = 64, per_driver: bool = False) -> np.ndarray:
        """(N, L) per-minute intensities of cube rows `node_rows` (N,) at minute indexes (N, L);
        with `per_driver` (methods that have `drivers`) (N, L, n_drivers), whose max is the intensity."""
        plan = plan_windows(node_rows, minutes, data.minute0_ms, self.core.context, self.core.stride)
        fn = self.core.window_fn(data, calib_rows, per_driver=True) if per_driver else self.core.window_fn(data, calib_rows)
        return run_plan(plan, fn, batch_windows)

    def example_curves(self, data: ScoringData, calib_rows: np.ndarray, node_rows: np.ndarray,
                       starts: np.ndarray) -> np.ndarray:
        """(N, length) curves of example windows [start, start + length): the evaluated quantity."""
        minutes = np.asarray(starts)[:, None] + np.arange(self.length)[None, :]
        return aggregate_curve(self.intensities(data, calib_rows, node_rows, minutes), self.kind)

    def score(self, table: pl.DataFrame | NodeMinuteCube, node_batch: int = 256,
              progress: Callable[[int], None] | None = None) -> pl.DataFrame:
        """Every node's score at every minute of a dense node-minute table, from that minute's causal
        history only (what a live scorer knew at the end of the minute).

        Returns
        -------
        pl.DataFrame
            node, customer, minute (UTC), missing, score (in (0, 1]), alarm (score < theta at or after
            the warm-up), and for methods that can say so `driver` (the measure with the largest
            statistic in the minute). Nodes are scored `node_batch` at a time (memory bounded by the batch).
        """
        data, calib = self.prepare(table)
        cube = data.cube
        n, T = len(cube.nodes), len(cube.minutes)
        scores = np.empty((n, T), dtype=np.float64)
        drivers = getattr(self.core, "drivers", None)
        driver = np.zeros((n, T), dtype=np.int64) if drivers else None
        for lo in range(0, n, node_batch):
            rows = np.arange(lo, min(n, lo + node_batch))
            x = self.intensities(data, calib, rows, np.broadcast_to(np.arange(T), (len(rows), T)),
                                 per_driver=bool(drivers))
            if driver is not None:
                driver[rows] = x.argmax(axis=2)
                x = x.max(axis=2)
            scores[rows] = sliding_score(x, self.length, self.kind)
            if progress is not None:
                progress(len(rows))
        alarm = scores < self.theta
        alarm[:, :min(self.warmup, T)] = False
        utc = pl.Datetime("ms", "UTC")
        out = pl.DataFrame({
            "node": np.repeat(np.asarray(cube.nodes, dtype=object), T).tolist(),
            "customer": np.repeat(np.asarray(cube.customers, dtype=object), T).tolist(),
            "minute": pl.Series(np.tile(cube.minutes, n), dtype=pl.Int64).cast(pl.Datetime("ms")).cast(utc),
            "missing": cube.missing.reshape(-1), "score": scores.reshape(-1), "alarm": alarm.reshape(-1)})
        if driver is not None:
            out = out.with_columns(pl.Series("driver", np.asarray(drivers, dtype=object)[driver.reshape(-1)].tolist()))
        return out

    def score_file(self, path: str | Path, node_batch: int = 512,
                   progress: Callable[[int], None] | None = None) -> Iterator[pl.DataFrame]:
        """`score` of a node-minute Parquet file, `node_batch` nodes at a time: yields one score frame
        per batch, so memory is bounded by the batch (the file is never loaded whole)."""
        lf = pl.scan_parquet(path)
        nodes = lf.select(pl.col("node").unique()).collect().get_column("node").sort().to_list()
        for lo in range(0, len(nodes), node_batch):
            part = lf.filter(pl.col("node").is_in(nodes[lo:lo + node_batch])).collect()
            yield self.score(part, node_batch=node_batch)
            if progress is not None:
                progress(min(node_batch, len(nodes) - lo))

    def detect_examples(self, data: ScoringData, calib_rows: np.ndarray, node_rows: np.ndarray,
                        starts: np.ndarray) -> np.ndarray:
        """(N,) detection minute of each example window (first minute >= warmup with curve < theta), -1 = none."""
        from netflowgen.detect.metrics import detect
        return detect(self.example_curves(data, calib_rows, node_rows, starts), self.theta, self.warmup)

    # --- persistence -------------------------------------------------------------------------------------------
    def save(self, directory: str | Path) -> Path:
        """Write the detector folder (see the module docstring); returns it."""
        from safetensors.torch import save_file

        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        if isinstance(self.core, TransformerCore):
            self.backbone_hash = self.core.save_backbone(d)
        tensors = {k: v.detach().cpu().contiguous() for k, v in self.core.tensors().items()}
        tensors.update({f"calib.{k}": torch.from_numpy(np.ascontiguousarray(v)) for k, v in self.core.calib.items()})
        save_file(tensors, str(d / "detector.safetensors"), metadata={"format": DETECTOR_FORMAT})
        meta = {"format": DETECTOR_FORMAT, "method": self.method, "kind": self.kind, "theta": self.theta,
                "metric_config": self.metric_config, "length": self.length, "warmup": self.warmup,
                "context": self.core.context, "stride": self.core.stride, "feature_set_hash": FEATURE_SET_HASH,
                "time_zone": self.time_zone, "split": list(self.split), "backbone_hash": self.backbone_hash,
                "base_backbone_hash": self.base_backbone_hash, "reference": self.reference,
                "core": self.core.settings(), "nodes": self.nodes, "node_source": self.node_source,
                "info": self.info}
        (d / "detector.json").write_text(json.dumps(meta, indent=1, default=str))
        (d / "README.md").write_text(model_card(self))
        return d

    @classmethod
    def load(cls, directory: str | Path, time_zone: str | None = None, split: list[float] | None = None,
             backbone: str | Path | None = None) -> "Detector":
        """Read a detector folder. `time_zone`, `split` and `backbone` (a model folder), when given,
        must match what the detector was built with: a mismatch is refused naming both values."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        d = Path(directory)
        p = d / "detector.json"
        if not p.exists():
            raise InputError(f"{d}: not a detector folder (no detector.json; write one with `netflowgen finetune`)")
        try:
            meta = json.loads(p.read_text())
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise InputError(f"{p}: not valid JSON ({e})") from None
        if meta.get("format") != DETECTOR_FORMAT:
            raise InputError(f"{p}: not a netflowgen detector (format {meta.get('format')!r})")
        check_handoff(str(p), "feature-set hash", meta.get("feature_set_hash"), FEATURE_SET_HASH)
        if time_zone is not None:
            check_handoff(str(p), "time zone", meta.get("time_zone"), time_zone)
        if split is not None:
            check_handoff(str(p), "split fractions", [float(x) for x in meta.get("split", [])],
                          [float(x) for x in split])
        try:
            tensors = load_file(str(d / "detector.safetensors"))
        except (SafetensorError, OSError, ValueError) as e:
            raise InputError(f"{d / 'detector.safetensors'}: unreadable ({e})") from None
        method = meta["method"]
        core = _load_core(meta, tensors, d, backbone)
        core.calib = {k[6:]: v.numpy() for k, v in tensors.items() if k.startswith("calib.")}
        det = cls(method, core, int(meta["length"]), int(meta["warmup"]), float(meta["theta"]),
                  meta.get("metric_config", {}), meta.get("time_zone", "UTC"), list(meta.get("split", DEFAULT_SPLIT)),
                  list(meta["nodes"]), list(meta["node_source"]), meta.get("backbone_hash"),
                  meta.get("base_backbone_hash"), meta.get("info", {}), float(meta.get("reference", DEFAULT_REFERENCE)))
        if isinstance(core, TransformerCore):
            from netflowgen.model.io import content_hash
            got = content_hash(Path(backbone) if backbone is not None else d / "backbone")
            check_handoff(str(p), "backbone", meta.get("backbone_hash"), got)
        return det


def check_handoff(where: str, what: str, recorded: Any, given: Any) -> None:
    """Refuse a hand-off whose `what` differs: one line naming both values."""
    if recorded != given:
        raise InputError(f"{where}: {what} mismatch: built with {recorded!r}, given {given!r}")


def _load_core(meta: dict[str, Any], tensors: dict[str, torch.Tensor], folder: Path, backbone: str | Path | None) -> Any:
    method = meta["method"]
    if method in OPERATOR_METHODS:
        core: Any = OperatorCore(method, meta["context"], meta["stride"])
        core.load(meta["core"], tensors, folder)
        return core
    if method == "MS-LSTM":
        core = LstmCore(MultiScaleLSTMNet(**meta["core"]), meta["context"], meta["stride"])
        core.load(meta["core"], tensors, folder)
        return core
    if method in TRANSFORMER_METHODS:
        from netflowgen.model.io import load_model
        model, binner, extra = load_model(Path(backbone) if backbone is not None else folder / "backbone")
        s = meta["core"]
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


def _as_polars(table: Any) -> pl.DataFrame:
    return table if isinstance(table, pl.DataFrame) else pl.from_pandas(table)


def cube_to_table(cube: NodeMinuteCube) -> pl.DataFrame:
    """The dense node-minute table of a cube (node, customer, minute, missing, features)."""
    n, T = len(cube.nodes), len(cube.minutes)
    utc = pl.Datetime("ms", "UTC")
    cols: dict[str, Any] = {
        "node": np.repeat(np.asarray(cube.nodes, dtype=object), T).tolist(),
        "customer": np.repeat(np.asarray(cube.customers, dtype=object), T).tolist(),
        "minute": pl.Series(np.tile(cube.minutes, n), dtype=pl.Int64).cast(pl.Datetime("ms")).cast(utc),
        "missing": cube.missing.reshape(-1)}
    vals = cube.values.reshape(n * T, -1)
    cols.update({f: vals[:, i].astype(np.float64) for i, f in enumerate(cube.features)})
    return pl.DataFrame(cols)


def model_card(det: Detector) -> str:
    """README.md of a detector folder: what it is, what it was trained on, how it scored."""
    i = det.info
    lines = [f"# {det.method} detector", "",
             f"- method: {det.method} (scores aggregate per-minute {'hazards (survival)' if det.kind == 'sum' else 'statistics'}"
             f" over the last {det.length} minutes; context {det.core.context}, stride {det.core.stride} minutes)",
             f"- threshold theta = {det.theta:.6g}, warm-up {det.warmup} minutes, chosen under: "
             + ", ".join(f"{k}={v}" for k, v in det.metric_config.items()),
             f"- time zone {det.time_zone}; split fractions {det.split}; feature set {FEATURE_SET_HASH}",
             f"- backbone {det.backbone_hash or '(none)'}" + (f", fine-tuned from {det.base_backbone_hash}"
                                                             if det.base_backbone_hash else ""),
             f"- nodes calibrated: {sum(s == 'training' for s in det.node_source)} on the training range, "
             f"{sum(s == 'reference' for s in det.node_source)} on their reference range (first "
             f"{det.reference:.0%} of their minutes)"]
    if i:
        lines += ["", "## Training", ""]
        lines += [f"- {k}: {v}" for k, v in i.items() if k != "test"]
        if "test" in i:
            lines += ["", "## Test metrics", ""] + [f"- {k}: {v:.4g}" if isinstance(v, float) else f"- {k}: {v}"
                                                    for k, v in i["test"].items()]
    lines += ["", "Load with `netflowgen.Detector.load(folder)`; score with `netflowgen detect --detector folder`."]
    return "\n".join(lines) + "\n"


def minutes_ms(data: ScoringData) -> np.ndarray:
    return data.cube.minutes.astype(np.int64)


__all__ = ["Detector", "ScoringData", "OperatorCore", "LstmCore", "TransformerCore", "ALL_METHODS",
           "MS_PER_MINUTE", "cube_to_table", "check_handoff"]
