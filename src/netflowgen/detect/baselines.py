"""What operators run today (SPEC 12), as detectors with the same interface as the learned models:
each turns windows of volume features into a non-increasing curve c_t = exp(-max_{tau<=t} stat_tau),
so "c_t < theta" is "the statistic has exceeded -log(theta)" and the threshold is chosen on the same
validation data by `metrics.choose_threshold`.

- StaticEwma (FastNetMon-style per-host thresholds): EWMA-smoothed incoming packets, bytes and flows
  per minute, divided by the node's own high quantile of the same smoothed series over the training
  range; statistic = the largest of the three ratios. The tuned threshold is one multiplier for all
  nodes (per-host limits = multiplier x the node's quantile).
- SeasonalBand (ntopng-style): per node and hour of day, the mean and standard deviation of
  log1p(volume) over the training range; statistic = EWMA of the z-score of each minute against its
  hour's band, the largest over packets, bytes and flows.
- Cusum: the online upward CUSUM of `cusum.cusum_statistic` on log1p(volume), largest of the three.

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


def stat_to_curve(stat: np.ndarray) -> np.ndarray:
    """(N, T) statistic -> (N, T) non-increasing curve exp(-running max of the statistic)."""
    return np.exp(-np.maximum.accumulate(np.maximum(stat, 0.0), axis=1))


@dataclass
class StaticEwma:
    alpha: float = 0.3  # EWMA weight of the newest minute
    quantile: float = 0.99  # per-node reference level on the training range
    name: str = "Static-EWMA"

    def fit(self, train: np.ndarray) -> "StaticEwma":
        """train : (n_nodes, T_train, 3) packets, bytes, flows per minute of the training range."""
        self.ref_ = np.maximum(np.quantile(ewma(train, self.alpha), self.quantile, axis=1), 1.0)  # (n_nodes, 3)
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

    def fit(self, train: np.ndarray) -> "StaticPercentile":
        """train : (n_nodes, T_train, 3) packets, bytes, flows per minute of the reference range."""
        self.ref_ = np.maximum(np.quantile(train, self.quantile, axis=1), 1.0)  # (n_nodes, 3)
        return self

    def measures(self, windows: np.ndarray, node: np.ndarray, hour: np.ndarray | None = None) -> np.ndarray:
        """windows (N, L, 3), node (N,) -> (N, L, 3) ratio of each minute to the node's level."""
        return np.asarray(windows, dtype=np.float64) / self.ref_[node][:, None, :]

    def statistic(self, windows: np.ndarray, node: np.ndarray, hour: np.ndarray | None = None) -> np.ndarray:
        return self.measures(windows, node, hour).max(axis=2)


@dataclass
class SeasonalBand:
    alpha: float = 0.3
    sigma_floor: float = 0.25  # log1p units
    name: str = "Seasonal-band"

    def fit(self, train: np.ndarray, train_hour: np.ndarray) -> "SeasonalBand":
        """train (n_nodes, T_train, 3); train_hour (T_train,) hour of day 0..23 of each minute."""
        x = np.log1p(np.clip(train, 0, None))
        n, _, c = x.shape
        self.mean_ = np.zeros((n, 24, c))
        self.std_ = np.full((n, 24, c), self.sigma_floor)
        for h in range(24):
            sel = train_hour == h
            if sel.any():
                self.mean_[:, h] = x[:, sel].mean(axis=1)
                self.std_[:, h] = np.maximum(x[:, sel].std(axis=1), self.sigma_floor)
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
    k: float = 0.5
    alpha: float = 0.02
    sigma_floor: float = 0.25
    warmup: int = 30
    name: str = "CUSUM"

    def fit(self, *args: object) -> "CusumDetector":
        return self  # online: learns its baseline inside each window

    def measures(self, windows: np.ndarray, node: np.ndarray, hour: np.ndarray | None = None) -> np.ndarray:
        """windows (N, L, 3) -> (N, L, 3) CUSUM statistic per measure."""
        s = cusum_statistic(np.moveaxis(windows, 2, 1), self.k, self.alpha, self.sigma_floor, self.warmup)
        return np.moveaxis(s, 1, 2)

    def statistic(self, windows: np.ndarray, node: np.ndarray, hour: np.ndarray | None = None) -> np.ndarray:
        """(N, L) the largest CUSUM statistic over packets, bytes, flows."""
        return self.measures(windows, node, hour).max(axis=2)
