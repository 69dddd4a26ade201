"""EarlyDetect (SPEC 9, paper 4.3): labelled attack windows and matched non-attack windows per split.

From the node-minute cube and an alert table (`target_ip, start, end, attack_type`, optional
`false_positive`, `reported_pkts`, `reported_bytes`):

1. Alert filters, each counted: flagged false positives; alerts whose reported packets or bytes are
   below `match_ratio` (95 %) of what the flows show for the target over [start, end]; targets that
   are not nodes; windows that would leave the data range.
2. Attack example: the `window`-minute window of the target whose last minute is `horizon` minutes
   after the alert's start minute; its split is the split holding the alert start. Label minute
   T = the alert minute inside the window.
3. Onset: the one-sided upward CUSUM of `cusum.cusum_onset` on log1p of the traffic that matches the
   attack type (dns/ntp -> in_udp_byt, udp -> in_udp_pkt, syn -> in_tcp_flow, else in_all_byt).
4. Non-attack example, one per attack example: a window of the same node whose last minute lies in
   the same split, overlapping no alert of that node widened by `margin` minutes on both sides, drawn
   at random with a fixed seed. Label minute T = the window's last minute.

Splits are contiguous time ranges (SPEC 5): fractions `split` of the minutes for train / validation,
the rest test.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import polars as pl

from netflowgen.detect.cube import NodeMinuteCube
from netflowgen.detect.cusum import CusumConfig, cusum_onset
from netflowgen.schema import DEFAULT_SPLIT, time_splits

SPLITS: tuple[str, ...] = ("train", "val", "test")

# Attack type (normalized) -> the feature whose rise marks its onset.
ONSET_FEATURE: dict[str, str] = {"dns": "in_udp_byt", "ntp": "in_udp_byt", "udp": "in_udp_pkt",
                                 "syn": "in_tcp_flow"}
DEFAULT_ONSET_FEATURE = "in_all_byt"


@dataclass
class EarlyDetectConfig:
    window: int = 512  # minutes per example
    horizon: int = 30  # the window ends this many minutes after the alert start
    margin: int = 60  # minutes kept clear around every alert for non-attack windows
    match_ratio: float = 0.95  # drop alerts reporting less than this share of the observed volume
    split: list[float] = field(default_factory=lambda: list(DEFAULT_SPLIT))  # train, val fractions
    seed: int = 0
    max_tries: int = 500  # random draws per non-attack window before giving up (counted)
    cusum: CusumConfig = field(default_factory=CusumConfig)

    def validate(self) -> None:
        if self.window < 2 or not 0 <= self.horizon < self.window or self.margin < 0:
            raise ValueError(f"window ({self.window}) >= 2, 0 <= horizon ({self.horizon}) < window, margin >= 0")
        if len(self.split) != 2 or not (0 < self.split[0] < 1 and 0 <= self.split[1] < 1
                                        and self.split[0] + self.split[1] < 1):
            raise ValueError(f"split = {self.split}: [train, validation] fractions, summing below 1")
        if not 0 <= self.match_ratio <= 1 or self.max_tries < 1:
            raise ValueError(f"match_ratio ({self.match_ratio}) in [0, 1], max_tries ({self.max_tries}) >= 1")


def normalize_attack_type(name: str) -> str:
    """Free-text attack type -> 'dns' | 'ntp' | 'udp' | 'syn' | lower-case original."""
    s = str(name).lower()
    for key in ("dns", "ntp", "syn"):
        if key in s:
            return key
    if "udp" in s:
        return "udp"
    return s


def split_bounds(n_minutes: int, fractions: list[float]) -> dict[str, tuple[int, int]]:
    """Minute index ranges [lo, hi) of train / val / test (`tokens.time_splits`)."""
    return time_splits(n_minutes, float(fractions[0]), float(fractions[1]))


def _to_ms(col: pl.Series) -> np.ndarray:
    if col.dtype == pl.Utf8:
        col = col.str.to_datetime(time_zone="UTC")
    return col.cast(pl.Datetime("ms")).dt.epoch("ms").to_numpy().astype(np.int64)


@dataclass
class EarlyDetectResult:
    examples: pl.DataFrame
    dropped: dict[str, int]
    bounds: dict[str, tuple[int, int]]


def build_earlydetect(cube: NodeMinuteCube, alerts: pl.DataFrame, cfg: EarlyDetectConfig = EarlyDetectConfig(),
                      truth: pl.DataFrame | None = None) -> EarlyDetectResult:
    """Build the EarlyDetect examples.

    Returns one row per example: id, pair (attack and its non-attack share it), split, node, node_row,
    customer, label (1 attack / 0 not), attack_type, start (window start minute index), start_ms,
    label_t, onset_t, end_t (minute indexes inside the window; -1 for non-attacks), true_onset_t
    (from the simulator's truth table when given, else -1).
    """
    T = len(cube.minutes)
    step = int(np.median(np.diff(cube.minutes))) if T > 1 else 60_000
    bounds = split_bounds(T, cfg.split)
    node_row = {n: i for i, n in enumerate(cube.nodes)}
    dropped = {"false_positive": 0, "volume_mismatch": 0, "not_a_node": 0, "outside_data": 0,
               "no_clean_non_attack_window": 0}

    a_start = _to_ms(alerts.get_column("start"))
    a_end = _to_ms(alerts.get_column("end"))
    t0 = int(cube.minutes[0])
    s_idx = (a_start - t0) // step
    e_idx = (a_end - t0) // step
    targets = alerts.get_column("target_ip").cast(pl.Utf8).to_list()
    types = [normalize_attack_type(x) for x in alerts.get_column("attack_type").to_list()]
    fp = (alerts.get_column("false_positive").fill_null(False).cast(pl.Boolean).to_numpy()
          if "false_positive" in alerts.columns else np.zeros(alerts.height, bool))
    rep = {c: alerts.get_column(c).cast(pl.Float64).to_numpy() for c in ("reported_pkts", "reported_bytes")
           if c in alerts.columns}
    observed_col = {"reported_pkts": cube.column("in_all_pkt"), "reported_bytes": cube.column("in_all_byt")}

    # Alert intervals per node (all alerts, filtered or not: a flagged alert is still not "clean").
    busy: dict[int, list[tuple[int, int]]] = {}
    for tgt, s, e in zip(targets, s_idx, e_idx):
        if tgt in node_row:
            busy.setdefault(node_row[tgt], []).append((int(s) - cfg.margin, int(e) + cfg.margin))

    true_onset = _truth_onset_lookup(truth, t0, step)
    rng = np.random.default_rng(cfg.seed)
    rows: list[dict[str, Any]] = []
    for i, (tgt, s, e, typ) in enumerate(zip(targets, s_idx, e_idx, types)):
        if fp[i]:
            dropped["false_positive"] += 1
            continue
        if tgt not in node_row:
            dropped["not_a_node"] += 1
            continue
        r = node_row[tgt]
        last = int(s) + cfg.horizon
        start = last - cfg.window + 1
        if start < 0 or last >= T or s < 0:
            dropped["outside_data"] += 1
            continue
        mismatch = False
        for c, vals in rep.items():
            if np.isfinite(vals[i]):
                seen = float(observed_col[c][r, max(int(s), 0):min(int(e), T - 1) + 1].sum())
                mismatch |= vals[i] < cfg.match_ratio * seen
        if mismatch:
            dropped["volume_mismatch"] += 1
            continue
        split = next(k for k, (lo, hi) in bounds.items() if lo <= s < hi)
        label_t = int(s) - start
        series = cube.column(ONSET_FEATURE.get(typ, DEFAULT_ONSET_FEATURE))[r, start:last + 1]
        onset_t = cusum_onset(series, label_t, cfg.cusum)
        true_on = true_onset(tgt, int(s))
        true_onset_t = int(true_on - start) if true_on is not None and start <= true_on <= last else -1
        pair = len(rows) // 2
        base = {"pair": pair, "split": split, "node": tgt, "node_row": r, "customer": cube.customers[r],
                "attack_type": typ}
        nonattack = _draw_clean_window(rng, busy.get(r, []), bounds[split], cfg)
        if nonattack is None:
            dropped["no_clean_non_attack_window"] += 1
            continue
        rows.append({**base, "label": 1, "start": start, "label_t": label_t, "onset_t": onset_t,
                     "end_t": min(int(e), last) - start, "true_onset_t": true_onset_t})
        rows.append({**base, "label": 0, "start": nonattack, "label_t": cfg.window - 1, "onset_t": -1,
                     "end_t": -1, "true_onset_t": -1})
    schema = {"pair": pl.Int64, "split": pl.Utf8, "node": pl.Utf8, "node_row": pl.Int64, "customer": pl.Utf8,
              "attack_type": pl.Utf8, "label": pl.Int8, "start": pl.Int64, "label_t": pl.Int64,
              "onset_t": pl.Int64, "end_t": pl.Int64, "true_onset_t": pl.Int64}
    ex = pl.DataFrame(rows, schema=schema) if rows else pl.DataFrame(schema=schema)
    ex = ex.with_columns(pl.Series("start_ms", cube.minutes[ex.get_column("start").to_numpy()]
                                   if ex.height else np.zeros(0, np.int64)))
    ex = ex.with_row_index("id")
    return EarlyDetectResult(ex, dropped, bounds)


def _draw_clean_window(rng: np.random.Generator, busy: list[tuple[int, int]], bound: tuple[int, int],
                       cfg: EarlyDetectConfig) -> int | None:
    """A window start whose last minute lies in [lo, hi) and that overlaps no busy interval."""
    lo, hi = bound
    lo_last = max(lo, cfg.window - 1)
    if hi <= lo_last:
        return None
    for _ in range(cfg.max_tries):
        last = int(rng.integers(lo_last, hi))
        start = last - cfg.window + 1
        if all(last < b0 or start > b1 for b0, b1 in busy):
            return start
    return None


def _truth_onset_lookup(truth: pl.DataFrame | None, t0: int, step: int) -> Callable[[str, int], int | None]:
    """(target, alert start minute) -> true onset minute index of the simulated attack whose span
    holds the alert start (5 minutes of slack), the latest such onset; None when there is none.
    Reads the simulator's truth.csv: columns target (or target_ip, node), onset, end, and kind when present
    (only rows whose kind contains 'attack' are attacks)."""
    spans: dict[str, list[tuple[int, int]]] = {}
    if truth is not None and truth.height:
        t = truth
        if "kind" in t.columns:
            t = t.filter(pl.col("kind").cast(pl.Utf8).str.contains("attack"))
        tgt_col = next(c for c in ("target_ip", "target", "node") if c in t.columns)
        on = (_to_ms(t.get_column("onset")) - t0) // step
        en = (_to_ms(t.get_column("end")) - t0) // step
        for tg, a, b in zip(t.get_column(tgt_col).cast(pl.Utf8).to_list(), on, en):
            spans.setdefault(tg, []).append((int(a), int(b)))

    def lookup(target: str, s: int) -> int | None:
        hits = [a for a, b in spans.get(target, []) if a <= s + 5 and s <= b + 5]
        return max(hits) if hits else None

    return lookup


def example_window(examples: pl.DataFrame) -> int:
    """Minutes per example of an examples table: a non-attack example's label time is its window's
    last minute (`label_t` = window - 1). Raises InputError when the table has no non-attack example
    or its non-attack examples disagree."""
    from netflowgen.rejects import InputError
    t = examples.filter(pl.col("label") == 0).get_column("label_t").unique().to_list()
    if len(t) != 1 or int(t[0]) < 0:
        raise InputError(f"examples: cannot tell the examples' window from their non-attack examples' label_t "
                         f"({sorted(t)[:5]}); give `window` in the settings")
    return int(t[0]) + 1


def table2(examples: pl.DataFrame) -> pl.DataFrame:
    """The paper's Table 2 layout: per split, nodes, examples, attacks, attacks per type."""
    types = sorted(examples.filter(pl.col("label") == 1).get_column("attack_type").unique().to_list())
    rows = []
    for sp in SPLITS:
        d = examples.filter(pl.col("split") == sp)
        att = d.filter(pl.col("label") == 1)
        row: dict[str, Any] = {"split": sp, "nodes": d.get_column("node").n_unique(), "examples": d.height,
                               "attack": att.height}
        for ty in types:
            row[ty] = att.filter(pl.col("attack_type") == ty).height
        rows.append(row)
    return pl.DataFrame(rows)
