"""Detection metrics with bounded overhead (SPEC 11; Xatu's metrics, reconstructed) and the choice
of the detection threshold on validation data.

Every detector in this package (NetFlowGen, the baselines) produces, per example, a non-increasing
curve c_t (a survival probability, or exp(-statistic) for the operator baselines); it detects at the
first minute t >= warmup with c_t < theta. For an attack example with onset t_on, end t_end (both
minutes inside the window) and detection minute t_det:

- effectiveness = V[max(t_det, t_on) .. t_end] / V[t_on .. t_end] (1 when t_det <= t_on, 0 when
  missed), where V is the anomalous volume per minute: the chosen volume measure minus the median of
  the minutes before the onset, clipped at 0 (raw volume when that is all zero);
- extraneous volume = normal volume scrubbed by the mitigation [t_det, t_det + D) (to the window end
  when D is None), outside [t_on, t_end];
- overhead of a customer = its extraneous volume / its normal volume, summed over its examples;
  the reported overhead is the p-th percentile over customers;
- TPR, FPR, FNR, F1 at the example level (a detection anywhere in the scanned window is a positive);
- mitigation time = t_det - t_on in minutes for detected attacks.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class MetricConfig:
    """Every constant of the metrics; printed in every report."""

    overhead_bound: float = 0.80  # p: share of customers whose overhead must stay <= budget
    overhead_budget: float = 0.10  # B: fraction of a customer's normal volume that may be scrubbed
    mitigation_minutes: int | None = 60  # D: scrubbing lasts D minutes (None: to the window end)
    volume: str = "in_all_byt"  # the volume measure (feature name) for effectiveness and overhead
    warmup: int = 32  # detection is scanned from this minute of the window (EWMA / context warm-up)
    anomalous_excess: bool = True  # anomalous volume = excess over the pre-onset median
    effectiveness_tolerance: float = 0.01  # threshold choice: effectiveness this close to the best ties

    def validate(self) -> None:
        if not 0 < self.overhead_bound <= 1:
            raise ValueError(f"overhead_bound = {self.overhead_bound}: a share of customers in (0, 1]")
        if self.overhead_budget < 0 or self.warmup < 0 or self.effectiveness_tolerance < 0:
            raise ValueError("overhead_budget, warmup and effectiveness_tolerance must be >= 0")
        if self.mitigation_minutes is not None and self.mitigation_minutes < 1:
            raise ValueError(f"mitigation_minutes = {self.mitigation_minutes}: at least 1 (or unset: to the window end)")
        from netflowgen.schema import FEATURE_NAMES
        if self.volume not in FEATURE_NAMES:
            raise ValueError(f"volume = {self.volume!r} is not a feature (e.g. in_all_byt)")


@dataclass
class EvalSet:
    """What the metrics need about a set of examples (N examples, windows of L minutes).

    volume : (N, L) float, the volume measure per minute (e.g. bytes).
    is_attack : (N,) bool; onset, end : (N,) int minute indexes in the window (ignored for
    non-attacks); customer : (N,) str or int labels.
    """

    volume: np.ndarray
    is_attack: np.ndarray
    onset: np.ndarray
    end: np.ndarray
    customer: np.ndarray

    def __post_init__(self) -> None:
        self.volume = np.asarray(self.volume, dtype=np.float64)
        self.is_attack = np.asarray(self.is_attack, dtype=bool)
        self.onset = np.asarray(self.onset, dtype=np.int64)
        self.end = np.asarray(self.end, dtype=np.int64)
        self.customer = np.asarray(self.customer)
        n, length = self.volume.shape
        t = np.arange(length)[None, :]
        in_attack = self.is_attack[:, None] & (t >= self.onset[:, None]) & (t <= self.end[:, None])
        self.attack_mask = in_attack  # (N, L)
        self.normal_volume = np.where(in_attack, 0.0, self.volume)  # (N, L)


@dataclass
class Metrics:
    effectiveness: float  # mean over attack examples, in [0, 1]
    overhead: float  # p-th percentile over customers
    tpr: float
    fpr: float
    fnr: float
    f1: float
    tp: int
    fp: int
    tn: int
    fn: int
    mitigation_time: list[int] = field(default_factory=list)  # t_det - t_on per detected attack
    effectiveness_per_attack: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, float]:
        mt = np.abs(np.asarray(self.mitigation_time, dtype=float))
        return {"effectiveness_pct": 100 * self.effectiveness, "overhead": self.overhead,
                "tpr_pct": 100 * self.tpr, "fpr_pct": 100 * self.fpr, "fnr_pct": 100 * self.fnr,
                "f1": self.f1, "mitigation_abs_median_min": float(np.median(mt)) if mt.size else float("nan")}


def detect(curves: np.ndarray, theta: float, warmup: int = 0) -> np.ndarray:
    """(N, L) curves -> (N,) first minute >= warmup with curve < theta, -1 where none."""
    below = np.asarray(curves)[:, warmup:] < theta
    hit = below.any(axis=1)
    return np.where(hit, below.argmax(axis=1) + warmup, -1).astype(np.int64)


def _anomalous_volume(es: EvalSet, cfg: MetricConfig) -> np.ndarray:
    """(N, L) anomalous volume inside [onset, end] of attack examples, 0 elsewhere (cached per set:
    the threshold search evaluates the same examples hundreds of times)."""
    key = ("anomalous", cfg.anomalous_excess)
    cache = es.__dict__.setdefault("_cache", {})
    if key in cache:
        return cache[key]
    out = np.zeros_like(es.volume)
    for i in np.flatnonzero(es.is_attack):
        on, en = es.onset[i], es.end[i]
        seg = es.volume[i, on:en + 1]
        if cfg.anomalous_excess and on > 0:
            excess = np.clip(seg - np.median(es.volume[i, :on]), 0.0, None)
            seg = excess if excess.sum() > 0 else seg
        out[i, on:en + 1] = seg
    cache[key] = out
    return out


def evaluate(t_det: np.ndarray, es: EvalSet, cfg: MetricConfig) -> Metrics:
    """Metrics of detection minutes t_det (N,), -1 = no detection, on the examples `es`."""
    t_det = np.asarray(t_det, dtype=np.int64)
    n, length = es.volume.shape
    detected = t_det >= 0
    tp = int((detected & es.is_attack).sum())
    fn = int((~detected & es.is_attack).sum())
    fp = int((detected & ~es.is_attack).sum())
    tn = int((~detected & ~es.is_attack).sum())

    anom = _anomalous_volume(es, cfg)
    t = np.arange(length)[None, :]
    att = np.flatnonzero(es.is_attack)
    total = anom[att].sum(axis=1)
    td = t_det[att]
    kept = (anom[att] * (t >= td[:, None])).sum(axis=1)
    eff_arr = np.where(td < 0, 0.0,
                       np.where((td <= es.onset[att]) | (total <= 0), 1.0, kept / np.where(total > 0, total, 1.0)))
    eff = eff_arr.tolist()
    mit = (td[td >= 0] - es.onset[att][td >= 0]).astype(int).tolist()

    # Scrubbed minutes: [t_det, t_det + D) clipped to the window.
    stop = np.full(n, length) if cfg.mitigation_minutes is None else t_det + cfg.mitigation_minutes
    scrub = detected[:, None] & (t >= t_det[:, None]) & (t < stop[:, None])
    extraneous = (es.normal_volume * scrub).sum(axis=1)  # (N,)
    normal = es.normal_volume.sum(axis=1)
    cache = es.__dict__.setdefault("_cache", {})
    cust_codes = cache.get("cust")
    if cust_codes is None:
        cust_codes = np.unique(es.customer, return_inverse=True)[1].reshape(-1)
        cache["cust"] = cust_codes
    ext_c = np.bincount(cust_codes, weights=extraneous)
    norm_c = np.bincount(cust_codes, weights=normal)
    per_customer = np.where(norm_c > 0, ext_c / np.where(norm_c > 0, norm_c, 1.0), (ext_c > 0).astype(float))
    overhead = float(np.quantile(per_customer, cfg.overhead_bound)) if per_customer.size else 0.0

    pos, neg = tp + fn, fp + tn
    return Metrics(
        effectiveness=float(np.mean(eff)) if eff else 0.0,
        overhead=overhead,
        tpr=tp / pos if pos else 0.0, fpr=fp / neg if neg else 0.0, fnr=fn / pos if pos else 0.0,
        f1=2 * tp / (2 * tp + fp + fn) if (tp + fp + fn) else 0.0,
        tp=tp, fp=fp, tn=tn, fn=fn, mitigation_time=mit, effectiveness_per_attack=eff)


@dataclass
class ThresholdChoice:
    theta: float
    validation: Metrics
    n_candidates: int


def candidate_thresholds(curves: np.ndarray, warmup: int = 0, max_candidates: int = 256) -> np.ndarray:
    """Candidate thresholds, ascending: 0 (never detect), just above each example's minimum over the
    scanned minutes (where a detection appears), and a grid of quantiles of all scanned curve values
    in log scale (where detections move earlier); thinned to about `max_candidates`."""
    c = np.asarray(curves, dtype=np.float64)[:, warmup:]
    mins = np.nextafter(np.unique(c.min(axis=1)), np.inf)
    logs = np.log(np.clip(c, 1e-300, None)).ravel()
    grid = np.exp(np.quantile(logs, np.linspace(0, 1, max_candidates)))
    cands = np.unique(np.concatenate([mins, grid]))
    if cands.size > 2 * max_candidates:
        cands = np.unique(np.quantile(cands, np.linspace(0, 1, 2 * max_candidates), method="nearest"))
    return np.concatenate([[0.0], cands])


def choose_threshold(curves: np.ndarray, es: EvalSet, cfg: MetricConfig,
                     max_candidates: int = 256) -> ThresholdChoice:
    """Pick theta on validation curves (N, L).

    Among thetas whose p-th percentile customer overhead is <= the budget, take those within
    `effectiveness_tolerance` of the best mean effectiveness, then those with the best F1, then the
    lowest overhead; theta = 0 (no detection, overhead 0) is always feasible. Of the thetas still tied
    the middle one (by rank in the log-spaced candidates) is chosen: the edge of a tied interval sits
    on one validation curve and would overfit it.
    """
    cands = candidate_thresholds(curves, cfg.warmup, max_candidates)
    results = [evaluate(detect(curves, float(t), cfg.warmup), es, cfg) for t in cands]
    feasible = [i for i, m in enumerate(results) if m.overhead <= cfg.overhead_budget + 1e-12]
    best_eff = max(results[i].effectiveness for i in feasible)
    pool = [i for i in feasible if results[i].effectiveness >= best_eff - cfg.effectiveness_tolerance - 1e-12]
    best_f1 = max(round(results[i].f1, 9) for i in pool)
    pool = [i for i in pool if round(results[i].f1, 9) == best_f1]
    best_ov = min(round(results[i].overhead, 12) for i in pool)
    pool = [i for i in pool if round(results[i].overhead, 12) == best_ov]
    pick = pool[len(pool) // 2]
    return ThresholdChoice(theta=float(cands[pick]), validation=results[pick], n_candidates=len(cands))
