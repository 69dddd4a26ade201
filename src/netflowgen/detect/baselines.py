"""What operators run today (SPEC 12), as detectors with the same interface as the learned models:
each turns windows of volume features into a non-increasing curve c_t = exp(-max_{tau<=t} stat_tau),
so "c_t < theta" is "the statistic has exceeded -log(theta)" and the threshold is chosen on the same
validation data by `metrics.choose_threshold`.

- StaticEwma (FastNetMon-style per-host thresholds): EWMA-smoothed incoming packets, bytes and flows
  per minute, divided by the node's own high quantile of the same smoothed series over the training
  range; statistic = the largest of the three ratios. The tuned threshold is one multiplier for all
  nodes (per-host limits = multiplier x the node's quantile).
- SeasonalBand (ntopng-style): per node and hour of day, the mean and standard deviation of
  log1p(volume) over the training range (hours with too few reference minutes: the node's pooled
  band over all of them); statistic = EWMA of the z-score of each minute against its hour's band,
  the largest over packets, bytes and flows.
- Cusum: the online upward CUSUM of `cusum.cusum_statistic` on log1p(volume), restarted after each
  alarm (decision level `h`), largest of the three.

All statistics are causal: minute t uses minutes <= t of the window only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from netflowgen.detect.cusum import cusum_statistic

VOLUME_FEATURES: tuple[str, ...] = ("in_all_pkt", "in_all_byt", "in_all_flow")


def ewma(x: np.ndarray, alpha: float) -> np.ndarray:
    """EWMA over time of (N, T, ...) -> (N, T, ...), started at the first minute's value."""
    out = np.empty_like(x, dtype=np.float64)
    acc = x[:, 0].astype(np.float64)
    for t in range(x.shape[1]):
        acc = alpha * x[:, t] + (1 - alpha) * acc
        out[:, t] = acc
    return out


def keep_or_all(keep: np.ndarray) -> np.ndarray:
    """(n, T) minutes a per-node statistic may use -> the same, a node with none kept using all of its
    minutes (a node whose whole range is masked still gets a statistic)."""
    keep = np.asarray(keep, dtype=bool)
    return keep | ~keep.any(axis=1, keepdims=True)


def kept_quantile(x: np.ndarray, keep: np.ndarray | None, q: float) -> np.ndarray:
    """(n, T, c) values, (n, T) minutes to use (None = all) -> (n, c) q-quantile over kept minutes
    (`keep_or_all`)."""
    if keep is None:
        return np.quantile(x, q, axis=1)
    return np.nanquantile(np.where(keep_or_all(keep)[:, :, None], x, np.nan), q, axis=1)


def stat_to_curve(stat: np.ndarray) -> np.ndarray:
    """(N, T) statistic -> (N, T) non-increasing curve exp(-running max of the statistic)."""
    return np.exp(-np.maximum.accumulate(np.maximum(stat, 0.0), axis=1))


@dataclass
class StaticEwma:
    alpha: float = 0.3  # EWMA weight of the newest minute
    quantile: float = 0.99  # per-node reference level on the training range
    name: str = "Static-EWMA"

    def fit(self, train: np.ndarray, keep: np.ndarray | None = None) -> "StaticEwma":
        """train : (n_nodes, T_train, 3) packets, bytes, flows per minute of the training range; keep
        (n_nodes, T_train): the minutes the level is taken over (default all; e.g. known attacks out).
        The EWMA runs over every minute, its values are kept where `keep`."""
        self.ref_ = np.maximum(kept_quantile(ewma(train, self.alpha), keep, self.quantile), 1.0)  # (n_nodes, 3)
        return self

    def measures(self, windows: np.ndarray, node: np.ndarray, hour: np.ndarray | None = None) -> np.ndarray:
        """windows (N, L, 3), node (N,) node rows -> (N, L, 3) smoothed/reference ratio per measure."""
        return ewma(windows, self.alpha) / self.ref_[node][:, None, :]

    def statistic(self, windows: np.ndarray, node: np.ndarray, hour: np.ndarray | None = None) -> np.ndarray:
        """(N, L) the largest ratio over packets, bytes, flows."""
        return self.measures(windows, node, hour).max(axis=2)


@dataclass
class StaticPercentile:
    """The per-host rule operators write by hand: alarm when a minute's incoming packets, bytes or
    flows exceed the node's own `quantile` of its reference (training) range; statistic = the
    largest ratio of the minute to that level (so the tuned threshold is one multiplier, 1 = the
    percentile itself). No smoothing: a one-minute burst counts."""

    quantile: float = 0.999
    name: str = "Static-percentile"

    def fit(self, train: np.ndarray, keep: np.ndarray | None = None) -> "StaticPercentile":
        """train : (n_nodes, T_train, 3) packets, bytes, flows per minute of the reference range; keep
        (n_nodes, T_train): the minutes the percentile is taken over (default all)."""
        self.ref_ = np.maximum(kept_quantile(train, keep, self.quantile), 1.0)  # (n_nodes, 3)
        return self

    def measures(self, windows: np.ndarray, node: np.ndarray, hour: np.ndarray | None = None) -> np.ndarray:
        """windows (N, L, 3), node (N,) -> (N, L, 3) ratio of each minute to the node's level."""
        return np.asarray(windows, dtype=np.float64) / self.ref_[node][:, None, :]

    def statistic(self, windows: np.ndarray, node: np.ndarray, hour: np.ndarray | None = None) -> np.ndarray:
        return self.measures(windows, node, hour).max(axis=2)


@dataclass
class SeasonalBand:
    """Per node, hour of day and measure, the band mean/sd of log1p(volume) over the reference range.

    Fallback for hours the reference range does not cover: an hour with fewer than `min_minutes`
    reference minutes of a node (counted per node and measure; non-finite values do not count) gets
    the node's pooled band instead, the mean and standard deviation over all of its reference minutes
    (so the sd includes the node's diurnal swing: an unseen hour is judged against the whole range
    of levels the node was seen at, not against mean 0). sd is floored at `sigma_floor` in both
    cases; a node with no reference minute at all keeps mean 0 and sd `sigma_floor`. Without the
    fallback a short reference range (e.g. 12 hours) left the other hours at mean 0, sd 0.25, and
    nearly every minute of them alarmed. Missing minutes are not special here (their zeros count).
    """

    alpha: float = 0.3
    sigma_floor: float = 0.25  # log1p units
    min_minutes: int = 10  # an hour needs this many reference minutes for its own band
    name: str = "Seasonal-band"

    def fit(self, train: np.ndarray, train_hour: np.ndarray, keep: np.ndarray | None = None) -> "SeasonalBand":
        """train (n_nodes, T_train, 3); train_hour (T_train,) hour of day 0..23 of each minute; keep
        (n_nodes, T_train): the minutes the bands are taken over (default all)."""
        x = np.log1p(np.clip(np.asarray(train, dtype=np.float64), 0, None))
        ok = np.isfinite(x) if keep is None else np.isfinite(x) & np.asarray(keep, dtype=bool)[:, :, None]
        x0 = np.where(ok, x, 0.0)
        n, _, c = x.shape
        cnt_all = ok.sum(axis=1)  # (n, c)
        pooled_mean = x0.sum(axis=1) / np.maximum(cnt_all, 1)
        pooled_sd = np.sqrt((ok * (x0 - pooled_mean[:, None]) ** 2).sum(axis=1) / np.maximum(cnt_all, 1))
        self.mean_ = np.zeros((n, 24, c))
        self.std_ = np.full((n, 24, c), self.sigma_floor)
        hour = np.asarray(train_hour)
        for h in range(24):
            sel = hour == h
            cnt = ok[:, sel].sum(axis=1)  # (n, c)
            m = x0[:, sel].sum(axis=1) / np.maximum(cnt, 1)
            sd = np.sqrt((ok[:, sel] * (x0[:, sel] - m[:, None]) ** 2).sum(axis=1) / np.maximum(cnt, 1))
            own = cnt >= self.min_minutes
            self.mean_[:, h] = np.where(own, m, np.where(cnt_all > 0, pooled_mean, 0.0))
            self.std_[:, h] = np.maximum(np.where(own, sd, np.where(cnt_all > 0, pooled_sd, 0.0)), self.sigma_floor)
        return self

    def measures(self, windows: np.ndarray, node: np.ndarray, hour: np.ndarray | None = None) -> np.ndarray:
        """windows (N, L, 3), node (N,), hour (N, L) hour of day -> (N, L, 3) smoothed z-scores."""
        assert hour is not None, "the seasonal band needs the hour of day of every minute"
        x = np.log1p(np.clip(windows, 0, None))
        mu = self.mean_[node[:, None], hour]  # (N, L, 3)
        sd = self.std_[node[:, None], hour]
        return ewma((x - mu) / sd, self.alpha)

    def statistic(self, windows: np.ndarray, node: np.ndarray, hour: np.ndarray | None = None) -> np.ndarray:
        """(N, L) the largest smoothed z-score over packets, bytes, flows."""
        return self.measures(windows, node, hour).max(axis=2)


@dataclass
class CusumDetector:
    """The online upward CUSUM of `cusum.cusum_statistic` on log1p(volume) with restart: when the
    statistic reaches the decision level `h` (accumulated sigmas above the allowance `k`; 5 = e.g.
    a one-minute jump of 5.5 sigmas or eleven minutes at 1 sigma), that minute reports it, then the
    accumulator restarts from 0 and the baseline re-learns from the current level, so a sustained
    new level alarms once instead of latching on (a burst that ends restores the pre-alarm baseline).
    A 10x burst (log 10 = 9 sigmas at the 0.25 floor) reaches h at its first minute."""

    k: float = 0.5
    alpha: float = 0.02
    sigma_floor: float = 0.25
    warmup: int = 30
    h: float = 5.0  # decision level of the restart, in the statistic's units (sigmas)
    name: str = "CUSUM"

    def fit(self, *args: object) -> "CusumDetector":
        return self  # online: learns its baseline inside each window

    def measures(self, windows: np.ndarray, node: np.ndarray, hour: np.ndarray | None = None) -> np.ndarray:
        """windows (N, L, 3) -> (N, L, 3) CUSUM statistic per measure."""
        s = cusum_statistic(np.moveaxis(windows, 2, 1), self.k, self.alpha, self.sigma_floor, self.warmup,
                            h=self.h)
        return np.moveaxis(s, 1, 2)

    def statistic(self, windows: np.ndarray, node: np.ndarray, hour: np.ndarray | None = None) -> np.ndarray:
        """(N, L) the largest CUSUM statistic over packets, bytes, flows."""
        return self.measures(windows, node, hour).max(axis=2)
