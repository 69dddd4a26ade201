"""How hard is the simulated data? F1 of per-node static thresholds on incoming bytes and packets
(the operator baseline of SPEC 12, FastNetMon-style, optionally EWMA-smoothed), tuned on the
validation range and scored on the test range, at the level of SPEC 9 EarlyDetect windows.

Reusable pieces: `inbound_matrix` (flows -> per node-minute incoming packets/bytes, sampling-scaled)
and `earlydetect_windows` (alerts -> attack / non-attack 512-minute windows with their split).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

if TYPE_CHECKING:
    from netflowgen.simulate.config import SimConfig

from netflowgen.schema import DEFAULT_SPLIT  # noqa: E402

SPLITS = (DEFAULT_SPLIT[0], DEFAULT_SPLIT[0] + DEFAULT_SPLIT[1])  # train | validation | test boundaries


def inbound_matrix(flows: str | Path | pl.LazyFrame, nodes: list[str], start: dt.datetime,
                   minutes: int) -> np.ndarray:
    """(2, V, T) estimated incoming packets and bytes per node-minute (recorded x sampling_rate),
    minute of ts_start; nodes ordered as `nodes`, minute 0 = `start` (aware UTC)."""
    lf = pl.scan_parquet(flows) if not isinstance(flows, pl.LazyFrame) else flows
    start_ms = int(start.timestamp() * 1000)
    idx = pl.DataFrame({"dst_ip": nodes, "v": np.arange(len(nodes), dtype=np.int64)})
    agg = (lf.join(idx.lazy(), on="dst_ip", how="inner")
           .with_columns(((pl.col("ts_start").dt.epoch("ms") - start_ms) // 60_000).alias("t"))
           .filter((pl.col("t") >= 0) & (pl.col("t") < minutes))
           .group_by("v", "t")
           .agg((pl.col("packets") * pl.col("sampling_rate")).sum().alias("p"),
                (pl.col("bytes") * pl.col("sampling_rate")).sum().alias("b"))
           .collect())
    out = np.zeros((2, len(nodes), minutes))
    v, t = agg["v"].to_numpy(), agg["t"].to_numpy()
    out[0, v, t] = agg["p"].to_numpy()
    out[1, v, t] = agg["b"].to_numpy()
    return out


def _minutes(col: pl.Series, start: dt.datetime) -> np.ndarray:
    ts = col.str.to_datetime(time_zone="UTC") if col.dtype == pl.String else col
    return ((ts.dt.epoch("ms").to_numpy() - int(start.timestamp() * 1000)) // 60_000).astype(np.int64)


def earlydetect_windows(alerts: pl.DataFrame, nodes: list[str], start: dt.datetime, minutes: int,
                        inbound: np.ndarray | None = None, window: int = 512, horizon: int = 30,
                        margin: int = 60, seed: int = 0, splits: tuple[float, float] = SPLITS
                        ) -> pl.DataFrame:
    """SPEC 9 windows: columns node (index into `nodes`), end (exclusive minute), label (1 attack,
    0 non-attack), split (train/val/test by the window's last minute), alert_start (minute; attack
    rows), attack_type.

    Alerts flagged false positive are dropped, and so are alerts whose reported packets or bytes are
    below 95 % of what `inbound` (see inbound_matrix) shows inside the alert, when given. For every
    attack window, one window of the same node, same split, overlapping no alert (+- margin) is drawn.
    """
    node_of = {ip: i for i, ip in enumerate(nodes)}
    a = alerts.filter(pl.col("target_ip").is_in(nodes))
    node = np.array([node_of[x] for x in a["target_ip"]], np.int64)
    s, e = _minutes(a["start"], start), _minutes(a["end"], start)
    keep = ~a["false_positive"].to_numpy().astype(bool)
    if inbound is not None and "reported_bytes" in a.columns:
        cum = np.concatenate([np.zeros((2, inbound.shape[1], 1)), inbound.cumsum(axis=2)], axis=2)
        lo, hi = np.clip(s, 0, minutes), np.clip(e, 0, minutes)
        seen = cum[:, node, hi] - cum[:, node, lo]
        rep = np.stack([a["reported_pkts"].to_numpy(), a["reported_bytes"].to_numpy()])
        keep &= ((rep >= 0.95 * seen) | np.isnan(rep.astype(float))).all(axis=0)  # null: not reported
    # Minutes covered by any alert (with margin), per node: non-attack windows must avoid them.
    covered = np.zeros((len(nodes), minutes + 1), np.int64)
    np.add.at(covered, (node, np.clip(s - margin, 0, minutes)), 1)
    np.add.at(covered, (node, np.clip(e + margin, 0, minutes)), -1)
    busy_cum = np.concatenate([np.zeros((len(nodes), 1)), (covered.cumsum(axis=1) > 0).cumsum(axis=1)], axis=1)
    b1, b2 = int(splits[0] * minutes), int(splits[1] * minutes)

    def split_of(end: np.ndarray) -> np.ndarray:
        last = end - 1
        return np.where(last < b1, "train", np.where(last < b2, "val", "test"))

    end = s + horizon
    ok = keep & (end - window >= 0) & (end <= minutes)
    att = pl.DataFrame({"node": node[ok], "end": end[ok], "label": np.ones(ok.sum(), np.int64),
                        "split": split_of(end[ok]), "alert_start": s[ok],
                        "attack_type": a["attack_type"].to_numpy()[ok]})
    rng = np.random.default_rng(seed)
    bounds = {"train": (window, b1), "val": (b1 + 1, b2), "test": (b2 + 1, minutes)}
    rows: list[tuple[int, int, str]] = []
    for v, sp in zip(att["node"].to_numpy(), att["split"].to_numpy()):
        lo, hi = bounds[sp]
        lo = max(lo, window)
        if hi <= lo:
            continue
        cand = np.arange(lo, hi + 1)
        free = busy_cum[v, cand] - busy_cum[v, cand - window] == 0
        cand = cand[free]
        if cand.size:
            rows.append((int(v), int(rng.choice(cand)), str(sp)))
    non = pl.DataFrame({"node": [r[0] for r in rows], "end": [r[1] for r in rows],
                        "label": [0] * len(rows), "split": [r[2] for r in rows],
                        "alert_start": [None] * len(rows), "attack_type": [None] * len(rows)},
                       schema=att.schema)
    return pl.concat([att, non]).sort("split", "node", "end")


def _ewma(x: np.ndarray, alpha: float) -> np.ndarray:
    """EWMA along the last axis (alpha = weight of the newest minute); alpha 1 = no smoothing."""
    if alpha >= 1.0:
        return x
    out = np.empty_like(x)
    acc = x[..., 0]
    for t in range(x.shape[-1]):  # one step per minute over all nodes at once (10^4 steps a week)
        acc = alpha * x[..., t] + (1 - alpha) * acc
        out[..., t] = acc
    return out


def _f1(pred: np.ndarray, label: np.ndarray) -> float:
    tp = float((pred & (label == 1)).sum())
    fp = float((pred & (label == 0)).sum())
    fn = float((~pred & (label == 1)).sum())
    return 2 * tp / (2 * tp + fp + fn) if tp > 0 else 0.0


@dataclass
class DifficultyReport:
    """Static-threshold F1 on the test windows (the variant chosen on validation) and per variant."""

    test_f1: float
    val_f1: float
    variant: str
    windows: dict[str, int]
    variants: dict[str, dict[str, float]] = field(default_factory=dict)


def static_threshold_f1(inbound: np.ndarray, windows: pl.DataFrame, minutes: int,
                        splits: tuple[float, float] = SPLITS, window: int = 512,
                        alphas: tuple[float, ...] = (1.0, 0.3)) -> DifficultyReport:
    """Per-node static thresholds theta_v = k x (median of the node's training-range minutes), on
    incoming packets and bytes (a window is flagged if any of its minutes exceeds either), with
    (k_pkts, k_bytes) chosen on the validation windows to maximize F1, scored on the test windows.
    Each EWMA alpha is a variant; the one best on validation is reported."""
    if windows.filter(pl.col("split") == "val").height == 0 or windows.filter(pl.col("split") == "test").height == 0:
        raise ValueError("no validation or test windows: simulate more days or more attacks")
    b1 = int(splits[0] * minutes)
    ks = np.concatenate([np.geomspace(1.5, 1e5, 60), [np.inf]])
    node, end = windows["node"].to_numpy(), windows["end"].to_numpy()
    label, split = windows["label"].to_numpy(), windows["split"].to_numpy()
    variants: dict[str, dict[str, float]] = {}
    best: tuple[float, str, float] = (-1.0, "", 0.0)
    for alpha in alphas:
        x = _ewma(inbound, alpha)  # (2, V, T)
        base = np.maximum(np.median(x[:, :, :b1], axis=2), 1.0)  # (2, V)
        ratio = x / base[:, :, None]
        # running max over each window, via a per-window slice (windows are few thousand)
        wmax = np.stack([ratio[:, v, e - window:e].max(axis=1) for v, e in zip(node, end)], axis=1)
        val, test = split == "val", split == "test"
        grid = (wmax[0][:, None, None] > ks[None, :, None]) | (wmax[1][:, None, None] > ks[None, None, :])
        f1_val = np.array([[_f1(grid[val, i, j], label[val]) for j in range(len(ks))] for i in range(len(ks))])
        i, j = np.unravel_index(np.argmax(f1_val), f1_val.shape)
        f1_test = _f1(grid[test, i, j], label[test])
        name = f"ewma{alpha:g}" if alpha < 1 else "raw"
        variants[name] = {"val_f1": float(f1_val[i, j]), "test_f1": f1_test,
                          "k_pkts": float(ks[i]), "k_bytes": float(ks[j])}
        if f1_val[i, j] > best[0]:
            best = (float(f1_val[i, j]), name, f1_test)
    counts = {f"{sp}_{'attack' if lab else 'normal'}": int(((split == sp) & (label == lab)).sum())
              for sp in ("train", "val", "test") for lab in (1, 0)}
    return DifficultyReport(best[2], best[0], best[1], counts, variants)


def measure(sim_dir: str | Path, seed: int = 0) -> DifficultyReport:
    """Static-threshold difficulty of a simulator output directory (flows.parquet, nodes.csv,
    alerts.csv, config.toml or the default start time)."""
    import tomllib

    from netflowgen.simulate.run import parse_start

    d = Path(sim_dir)
    cfg = tomllib.loads((d / "config.toml").read_text()) if (d / "config.toml").exists() else {}
    start = parse_start(cfg.get("time", {}).get("start", "2024-01-01T00:00:00Z"))
    minutes = int(round(cfg.get("time", {}).get("days", 7.0) * 1440))
    nodes = pl.read_csv(d / "nodes.csv")["ip"].to_list()
    alerts = pl.read_csv(d / "alerts.csv")
    inbound = inbound_matrix(d / "flows.parquet", nodes, start, minutes)
    win = earlydetect_windows(alerts, nodes, start, minutes, inbound, seed=seed)
    return static_threshold_f1(inbound, win, minutes)


def measure_config(cfg: "SimConfig", seed: int = 0) -> DifficultyReport:
    """Static-threshold difficulty of a configuration without writing any file: the per node-minute
    inbound totals come straight from the generator (the same numbers `inbound_matrix` computes from
    flows.parquet), the alerts from the plan."""
    from netflowgen.simulate.output import alerts_frame
    from netflowgen.simulate.run import Simulation

    sim = Simulation(cfg)
    inbound = np.zeros((2, sim.topo.n_nodes, sim.minutes))
    for _, inb, t0, t1 in sim.chunks():
        inbound[:, :, t0:t1] = inb
    al = sim.plan.alerts
    cum = np.concatenate([np.zeros((2, inbound.shape[1], 1)), inbound.cumsum(axis=2)], axis=2)
    observed = cum[:, al.node, al.end] - cum[:, al.node, al.start]
    alerts = alerts_frame(sim.topo, sim.plan, sim.start, observed)
    win = earlydetect_windows(alerts, sim.topo.node_ip, sim.start, sim.minutes, inbound, seed=seed)
    return static_threshold_f1(inbound, win, sim.minutes)
