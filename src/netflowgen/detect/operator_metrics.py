"""Operator metrics (SPEC 14) from minute-by-minute scores on labelled data: what an operator sees.

For each attack (truth: target_ip, onset, end; or an alert list: start as the onset) whose onset
lies in the scored range:
- *detection delay* = the first alarmed minute of its node in [onset - `early`, end], minus the
  onset, in minutes (a detection up to `early` minutes before the onset counts as delay 0: the
  truth onset is itself an estimate); the share of attacks detected within 1, 2, 5 and 10 minutes.
Over *attack-free time* (a node's reported minutes farther than `margin` minutes from every attack
of that node):
- *false alarms per node-day* = alerts (`detect.alerts`) opened in attack-free time per 1,440
  attack-free node-minutes;
- *alarmed share* = alarmed attack-free minutes / attack-free minutes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import polars as pl

from netflowgen.rejects import InputError

WITHIN_MINUTES: tuple[int, ...] = (1, 2, 5, 10)


@dataclass
class OperatorMetrics:
    attacks: int
    detected_within: dict[int, float]  # minutes -> share of attacks
    median_delay_min: float | None
    false_alarms_per_node_day: float
    alarmed_share_attack_free: float
    attack_free_node_days: float
    delays: list[int] = field(default_factory=list)  # per detected attack, minutes

    def summary(self) -> dict[str, float | int | None]:
        return {"attacks": self.attacks,
                **{f"detected_within_{k}min_pct": 100 * v for k, v in self.detected_within.items()},
                "median_delay_min": self.median_delay_min,
                "false_alarms_per_node_day": self.false_alarms_per_node_day,
                "alarmed_attack_free_pct": 100 * self.alarmed_share_attack_free,
                "attack_free_node_days": self.attack_free_node_days}


def attacks_table(truth: pl.DataFrame) -> pl.DataFrame:
    """target_ip, onset, end (UTC datetimes) of the attacks of a truth.csv (the simulator's: kind
    "attack", target; or target_ip, onset, end) or of an alert list (start as the onset)."""
    df = truth
    if "kind" in df.columns:
        df = df.filter(pl.col("kind") == "attack")
    if "target_ip" not in df.columns and "target" in df.columns:  # the simulator's truth.csv
        df = df.rename({"target": "target_ip"})
    onset = "onset" if "onset" in df.columns else "start" if "start" in df.columns else None
    if onset is None or "target_ip" not in df.columns or "end" not in df.columns:
        raise InputError(f"labels need target_ip (or target), onset (or start) and end columns; found {df.columns}")

    def utc(c: str) -> pl.Expr:
        col = pl.col(c)
        return (col.str.to_datetime(time_zone="UTC") if df.schema[c] == pl.String else col) \
            .cast(pl.Datetime("ms", "UTC"))
    return df.select(pl.col("target_ip").cast(pl.String), utc(onset).alias("onset"), utc("end").alias("end"))


def attack_minutes(nodes: list[str], minutes_ms: np.ndarray, attacks: pl.DataFrame, margin: int = 0,
                   after: int | None = None) -> np.ndarray:
    """(n_nodes, T) True at the minutes of `minutes_ms` (UTC ms of each minute's start) that lie within
    `margin` minutes of an attack of the node ([onset - margin, end + after], `after` = `margin`
    unless given); `attacks` as `attacks_table` returns (or any truth / alert list it reads)."""
    after = margin if after is None else after
    att = attacks_table(attacks)
    row = {v: i for i, v in enumerate(nodes)}
    t0, T = int(minutes_ms[0]) // 60_000, len(minutes_ms)
    out = np.zeros((len(nodes), T), dtype=bool)
    for ip, on, en in att.iter_rows():
        if ip in row:
            a = int(on.timestamp() // 60) - t0
            b = int(en.timestamp() // 60) - t0
            out[row[ip], max(0, a - margin):max(0, min(T, b + after + 1))] = True
    return out


def operator_metrics(scores: pl.DataFrame, alerts: pl.DataFrame, truth: pl.DataFrame, early: int = 5,
                     margin: int = 30) -> OperatorMetrics:
    """Metrics of `Detector.score` output `scores`, its `alerts` (`alerts_from_scores`), against
    `truth` (see `attacks_table`). Times are minutes of the scores' grid."""
    att = attacks_table(truth)
    s = scores.sort(["node", "minute"])
    nodes = s.get_column("node").unique(maintain_order=True).to_list()
    minutes = s.filter(pl.col("node") == nodes[0]).get_column("minute").dt.epoch("ms").to_numpy() // 60_000
    n, T = len(nodes), len(minutes)
    if s.height != n * T:
        raise InputError("scores must hold every node at every minute (the output of Detector.score)")
    alarm = s.get_column("alarm").to_numpy().reshape(n, T)
    missing = s.get_column("missing").to_numpy().reshape(n, T)
    row = {v: i for i, v in enumerate(nodes)}
    t0 = int(minutes[0])
    near = attack_minutes(nodes, minutes * 60_000, att, margin)  # within `margin` of an attack of the node
    delays: list[int] = []
    counted = 0
    for ip, on, en in att.iter_rows():
        if ip not in row:
            continue
        r = row[ip]
        a = int(on.timestamp() // 60) - t0
        b = int(en.timestamp() // 60) - t0
        if not 0 <= a < T:
            continue
        counted += 1
        hits = np.flatnonzero(alarm[r, max(0, a - early):min(T, b + 1)])
        if hits.size:
            delays.append(max(0, int(hits[0]) + max(0, a - early) - a))
    free = ~near & ~missing
    free_minutes = int(free.sum())
    opened = alerts.with_columns((pl.col("opened_at").dt.epoch("ms") // 60_000 - t0).alias("_t"))
    fa = 0
    for ip, t in opened.select("node", "_t").iter_rows():
        if ip in row and 0 <= t < T and free[row[ip], t]:
            fa += 1
    d = np.asarray(delays)
    return OperatorMetrics(
        attacks=counted,
        detected_within={k: float((d <= k).sum()) / counted if counted else float("nan") for k in WITHIN_MINUTES},
        median_delay_min=float(np.median(d)) if d.size else None,
        false_alarms_per_node_day=fa / (free_minutes / 1440) if free_minutes else float("nan"),
        alarmed_share_attack_free=float(alarm[free].mean()) if free_minutes else float("nan"),
        attack_free_node_days=free_minutes / 1440, delays=d.astype(int).tolist())
