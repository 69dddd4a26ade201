"""`Detector`: one early-detection method, trained or fitted once, carried as a folder, and scored
on any later node-minute table minute by minute with exactly the behaviour it was evaluated with.

Every method (NetFlowGen frozen and unfrozen, TF, MS-LSTM, Static-EWMA, Static-percentile,
Seasonal-band, CUSUM) is a *core* that maps windows of a node's minutes to per-minute intensities (`detect.anchored`), plus
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

from netflowgen.artifacts import read_artifact_json
from netflowgen.detect.anchored import aggregate_curve, plan_windows, run_plan, sliding_score
from netflowgen.detect.cores import ALL_METHODS, ScoringData, SurprisalCore, TransformerCore, load_core
from netflowgen.detect.cube import NodeMinuteCube, cube_to_table, key_columns
from netflowgen.rejects import InputError
from netflowgen.schema import DEFAULT_SPLIT, FEATURE_SET_HASH

DETECTOR_FORMAT = "netflowgen.detector/1"
DEFAULT_REFERENCE = 0.6  # share of a node's first minutes that calibrates a node the detector never saw


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
        from netflowgen.detect.stages import fit_detector
        return fit_detector(method, features, examples, model=model, labels=labels, **settings)

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
        if "theta" in self.core.calib:  # per-node thresholds: new nodes start at the global one
            self.core.calib["theta"] = np.concatenate([self.core.calib["theta"], np.full(len(rows), self.theta)])
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
        tok = TokenData.build(df, self.core.token_binner(), None, self.time_zone, node_map, self.core.binner.customers)
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
        alarm = scores < self.thresholds(calib)[:, None]
        alarm[:, :min(self.warmup, T)] = False
        out = pl.DataFrame({**key_columns(cube), "score": scores.reshape(-1), "alarm": alarm.reshape(-1)})
        if driver is not None:
            out = out.with_columns(pl.Series("driver", np.asarray(drivers, dtype=object)[driver.reshape(-1)].tolist()))
        return out

    def adopt_backbone(self, model: str | Path) -> None:
        """Swap in a continued pre-training of this detector's backbone on a new network's unlabelled
        minutes (`netflowgen pretrain --init <this detector>/backbone`): its own embeddings and cut-offs
        for that network's nodes; the head and its standardization stay. Every node's statistics and
        thresholds are dropped (nodes are onboarded again on their reference ranges), and the old theta
        no longer holds: set a new one (`set_fa_budget`). The architecture must be the same."""
        from netflowgen.model.io import content_hash, load_model
        if not isinstance(self.core, (TransformerCore, SurprisalCore)):
            raise InputError(f"{self.method} has no pre-trained backbone to adapt")
        new, binner, extra = load_model(Path(model))
        old = self.core.backbone.cfg
        for what in ("d_model", "n_layers", "context", "predicted_features"):
            if getattr(new.cfg, what) != getattr(old, what):
                raise InputError(f"{model}: {what} {getattr(new.cfg, what)!r} differs from the detector's backbone "
                                 f"({getattr(old, what)!r}): continue its pre-training with --init instead")
        self.core.backbone, self.core.binner, self.core.backbone_config = new.eval(), binner, extra
        self.core.extra_binner = None
        self.core.calib = {}
        self.nodes, self.node_source = [], []
        self.info["adapted_backbone"] = {"from": self.backbone_hash, "model": str(model)}
        self.backbone_hash = content_hash(Path(model))

    def set_length(self, length: int) -> None:
        """Aggregate the last `length` minutes in minute-by-minute scores instead of the evaluated
        length (onboarding, SPEC 14: a survival score summing 128 minutes of hazards, or a maximum
        over them, keeps a host alarmed for two hours after a burst and must sit below every busy
        hour's accumulated hazard; a short window follows the attack). The thresholds chosen for the
        old length do not carry over: choose new ones after (`set_fa_budget`, or a theta)."""
        if int(length) < 1:
            raise InputError(f"the scoring length must be >= 1 minute, got {length}")
        if int(length) != self.length:
            evaluated = self.info.get("length_changed", {}).get("evaluated_length", self.length)
            self.info["length_changed"] = {"evaluated_length": evaluated, "length": int(length)}
            self.length = int(length)
            self.core.calib.pop("theta", None)  # per-node thresholds of the old length

    def thresholds(self, calib_rows: np.ndarray) -> np.ndarray:
        """(N,) the threshold of each calibration row: its own (a per-node false-alarm budget) or theta."""
        own = self.core.calib.get("theta")
        if own is None:
            return np.full(len(calib_rows), float(self.theta))
        return np.asarray(own, dtype=np.float64)[np.asarray(calib_rows, dtype=np.int64)]

    def set_fa_budget(self, table: pl.DataFrame | NodeMinuteCube, budget: float = 1.0, per_node: bool = False,
                      clear_after: int = 15, reference: float | None = None, known: pl.DataFrame | None = None,
                      margin: int = 30) -> np.ndarray:
        """Choose the threshold(s) so that scoring the first `reference` share of the table's minutes
        (default the detector's reference share; attack-free by assumption, or with the `known`
        attacks masked: a truth or alert list, each attack from `margin` minutes before its onset to
        `margin` + `length` after its end, the minutes whose score aggregates it) opens at
        most `budget` alerts per node-day (`detect.budget`). New nodes are calibrated on that range
        (less the known attacks). Global: sets `theta`; per node: each node of the table gets its own
        (others keep `theta`). Returns the chosen threshold(s)."""
        from netflowgen.detect.budget import budget_thresholds, known_attack_masks
        cube = table if isinstance(table, NodeMinuteCube) else NodeMinuteCube.from_table(_as_polars(table))
        excluded, masked = (None, None) if known is None else \
            known_attack_masks(list(cube.nodes), cube.minutes, known, margin, self.length)
        self.calib_rows(ScoringData(cube, None, self.time_zone, excluded))  # new nodes: the table's reference range
        share = self.reference if reference is None else float(reference)
        hi = max(2, int(round(share * len(cube.minutes))))
        ref = cube.part(None, 0, hi)
        sc = self.score(ref)
        n, T = len(ref.nodes), len(ref.minutes)
        score = sc.get_column("score").to_numpy().reshape(n, T)
        miss = sc.get_column("missing").to_numpy().reshape(n, T)
        th = budget_thresholds(score, miss, self.warmup, clear_after, budget, per_node,
                               None if masked is None else masked[:, :hi])
        if per_node:
            rows = self.calib_rows(ScoringData(ref, None, self.time_zone))
            own = np.asarray(self.core.calib.get("theta", np.full(len(self.nodes), float(self.theta))), dtype=np.float64)
            own[rows] = th
            self.core.calib["theta"] = own
        else:
            self.theta = float(th)
            self.core.calib.pop("theta", None)
        self.info["fa_budget"] = {"budget_per_node_day": budget, "per_node": per_node, "clear_after": clear_after,
                                  "reference_minutes": hi, "known_attacks_masked": 0 if masked is None
                                  else int(masked[:, :hi].sum())}
        return th

    def score_file(self, path: str | Path, node_batch: int = 512,
                   progress: Callable[[int], None] | None = None) -> Iterator[pl.DataFrame]:
        """`score` of a node-minute Parquet file, `node_batch` nodes at a time: yields one score frame
        per batch, so memory is bounded by the batch (the file is never loaded whole)."""
        from netflowgen.detect.io import parquet_columns
        if "node" not in parquet_columns(path):
            raise InputError(f"{path}: not a node-minute table (no node column; a table from `netflowgen features`?)")
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
        if isinstance(self.core, (TransformerCore, SurprisalCore)):
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
        meta = read_artifact_json(p, DETECTOR_FORMAT, "detector", "write one with `netflowgen finetune`")
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
        try:
            method = str(meta["method"])
            core = load_core(meta, tensors, d, backbone)
            core.calib = {k[6:]: v.numpy() for k, v in tensors.items() if k.startswith("calib.")}
            det = cls(method, core, int(meta["length"]), int(meta["warmup"]), float(meta["theta"]),
                      dict(meta.get("metric_config", {})), str(meta.get("time_zone", "UTC")),
                      [float(x) for x in meta.get("split", DEFAULT_SPLIT)], [str(n) for n in meta["nodes"]],
                      [str(s) for s in meta["node_source"]], meta.get("backbone_hash"), meta.get("base_backbone_hash"),
                      dict(meta.get("info", {})), float(meta.get("reference", DEFAULT_REFERENCE)))
        except InputError:
            raise
        except (KeyError, TypeError, ValueError, RuntimeError, AttributeError, IndexError) as e:
            raise InputError(f"{p}: a detector field is missing or does not match its weights "
                             f"({type(e).__name__}: {' '.join(str(e).split())[:160]})") from None
        n_calib = {len(v) for v in core.calib.values()}
        if n_calib and n_calib != {len(det.nodes)} or len(det.node_source) != len(det.nodes):
            raise InputError(f"{p}: {len(det.nodes)} nodes but per-node statistics for {sorted(n_calib)}")
        bad = [k for k, v in tensors.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
        if bad:
            raise InputError(f"{d / 'detector.safetensors'}: non-finite values in {bad[:3]}")
        if not (0 < det.length and 0 <= det.warmup and 1 <= core.stride <= core.context):
            raise InputError(f"{p}: length {det.length}, warm-up {det.warmup}, context {core.context} and stride "
                             f"{core.stride} are out of range")
        if isinstance(core, (TransformerCore, SurprisalCore)):
            from netflowgen.model.io import content_hash
            got = content_hash(Path(backbone) if backbone is not None else d / "backbone")
            check_handoff(str(p), "backbone", meta.get("backbone_hash"), got)
        return det


def check_handoff(where: str, what: str, recorded: Any, given: Any) -> None:
    """Refuse a hand-off whose `what` differs: one line naming both values."""
    if recorded != given:
        raise InputError(f"{where}: {what} mismatch: built with {recorded!r}, given {given!r}")


def _as_polars(table: Any) -> pl.DataFrame:
    return table if isinstance(table, pl.DataFrame) else pl.from_pandas(table)


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


__all__ = ["Detector", "ScoringData", "ALL_METHODS", "check_handoff"]
