"""Causal per-minute intensities on strided, clock-anchored windows: the computation behind every
detector's minute-by-minute scores (and the example curves it is evaluated on).

Every detector turns minute tau of a node into an *intensity* x_tau (a hazard for the survival
models, a statistic for the operator baselines) computed from the minutes [a(tau), tau] of that
node only, where

    a(tau) = the first anchor >= tau - C + 1,   anchors every K minutes on the UTC epoch-minute grid,

clipped to the first minute of the data. So x_tau sees between C - K + 1 and C minutes (fewer only at
the very start of the data), never a later minute, and the same minute gets the same intensity
whatever table it is scored in (anchors depend on the clock, not on where a table starts).

Equality with the naive computation (one window per minute). The naive scorer runs, for every minute
tau, the method on the window [a(tau), tau] alone and keeps the output at its last position. The
strided scorer runs the method once per anchor a on [a, a + C) and keeps the outputs at positions
tau - a for every tau with a(tau) = a. Both give the same value because every method here is causal
(the output at position p depends on positions 0..p of its window only: masked attention with
positions counted from the window start, LSTMs, EWMAs and CUSUMs run forward): the window [a, tau]
is a prefix of [a, a + C). `naive_intensities` is that reference; the tests compare the two for
every method at every minute. Cost: C/K window positions per scored minute (2 with K = C/2) instead
of up to C for a full window per minute.

A node's score at minute m aggregates the intensities of the last L minutes (L = the detector's
`length`): survival exp(-sum x) for hazards, exp(-max(0, max x)) for statistics. An example window
[s, s + L) gets the curve of partial aggregates from s, so its value at the last minute is the score
of that minute.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from netflowgen.schema import MS_PER_MINUTE

# fn(node_rows (B,), starts (B,), length) -> (B, length, ...) outputs of a causal method on windows
WindowFn = Callable[[np.ndarray, np.ndarray, int], np.ndarray]


def window_anchor(epoch_minute: np.ndarray, context: int, stride: int) -> np.ndarray:
    """Epoch minute of the window start a(tau) for minutes tau (epoch minutes, int64 array)."""
    if not 1 <= stride <= context:
        raise ValueError(f"stride must be in 1..context ({context}), got {stride}")
    first = np.asarray(epoch_minute, dtype=np.int64) - context + 1
    return -((-first) // stride) * stride  # ceil to a multiple of the stride


@dataclass
class WindowPlan:
    """Which windows to run to get the intensity of the requested (node row, minute) pairs.

    node_row, start, length : (W,) the windows (start = index into the data's minutes).
    window, position : (N, L) the window holding each requested minute and its position in it.
    """

    node_row: np.ndarray
    start: np.ndarray
    length: np.ndarray
    window: np.ndarray
    position: np.ndarray

    @property
    def n_windows(self) -> int:
        return int(self.node_row.shape[0])

    def positions(self) -> int:
        """Window positions the plan computes (its cost)."""
        return int(self.length.sum())


def plan_windows(node_rows: np.ndarray, minutes: np.ndarray, minute0_ms: int, context: int,
                 stride: int) -> WindowPlan:
    """The anchored windows behind the intensities of `minutes` (N, L) (indexes into the data's
    minutes, whose first starts at UTC `minute0_ms`) of nodes `node_rows` (N,)."""
    rows = np.asarray(node_rows, dtype=np.int64)
    tau = np.asarray(minutes, dtype=np.int64)
    if tau.ndim == 1:
        tau = tau[:, None]
    e0 = int(minute0_ms) // MS_PER_MINUTE
    a = np.maximum(window_anchor(tau + e0, context, stride) - e0, 0)  # (N, L) data index of the window start
    key = np.broadcast_to(rows[:, None], tau.shape).astype(np.int64) * (1 << 32) + a
    uniq, inv = np.unique(key.ravel(), return_inverse=True)
    pos = (tau - a).ravel()
    length = np.zeros(uniq.size, dtype=np.int64)
    np.maximum.at(length, inv, pos + 1)
    return WindowPlan(node_row=(uniq >> 32).astype(np.int64), start=(uniq & 0xFFFFFFFF).astype(np.int64),
                      length=length, window=inv.reshape(tau.shape), position=pos.reshape(tau.shape))


def run_plan(plan: WindowPlan, fn: WindowFn, batch_windows: int = 64) -> np.ndarray:
    """Outputs (N, L, ...) of `fn` at every requested minute, computed once per planned window.

    Windows of the same length are batched together (at most `batch_windows` per call)."""
    out: np.ndarray | None = None
    order = np.argsort(plan.window.ravel(), kind="stable")
    w_sorted = plan.window.ravel()[order]
    bounds = np.searchsorted(w_sorted, np.arange(plan.n_windows + 1))
    for length in np.unique(plan.length):
        ws = np.flatnonzero(plan.length == length)
        for lo in range(0, ws.size, batch_windows):
            b = ws[lo:lo + batch_windows]
            y = np.asarray(fn(plan.node_row[b], plan.start[b], int(length)))  # (B, length, ...)
            if out is None:
                out = np.zeros((plan.window.size, *y.shape[2:]), dtype=y.dtype)
            for j, w in enumerate(b):
                req = order[bounds[w]:bounds[w + 1]]
                out[req] = y[j, plan.position.ravel()[req]]
    if out is None:
        return np.zeros((*plan.window.shape, 0))
    return out.reshape(*plan.window.shape, *out.shape[1:])


def naive_intensities(node_rows: np.ndarray, minutes: np.ndarray, minute0_ms: int, context: int,
                      stride: int, fn: WindowFn) -> np.ndarray:
    """The reference: one window [a(tau), tau] per requested minute, its last output. (N, L, ...)."""
    tau = np.asarray(minutes, dtype=np.int64)
    if tau.ndim == 1:
        tau = tau[:, None]
    e0 = int(minute0_ms) // MS_PER_MINUTE
    a = np.maximum(window_anchor(tau + e0, context, stride) - e0, 0)
    rows = np.broadcast_to(np.asarray(node_rows, dtype=np.int64)[:, None], tau.shape)
    vals = [np.asarray(fn(np.array([r]), np.array([s]), int(t - s + 1)))[0, -1]
            for r, s, t in zip(rows.ravel(), a.ravel(), tau.ravel())]
    return np.stack(vals).reshape(*tau.shape, *np.shape(vals[0]))


def aggregate_curve(x: np.ndarray, kind: str) -> np.ndarray:
    """(N, L) intensities -> (N, L) non-increasing curve of partial aggregates from the first minute:
    exp(-cumsum x) ("sum", survival) or exp(-running max of max(x, 0)) ("max", statistics)."""
    x = np.asarray(x, dtype=np.float64)
    if kind == "sum":
        return np.exp(-np.cumsum(x, axis=1))
    if kind == "max":
        return np.exp(-np.maximum.accumulate(np.maximum(x, 0.0), axis=1))
    raise ValueError(f"unknown aggregation {kind!r}")


def sliding_score(x: np.ndarray, length: int, kind: str) -> np.ndarray:
    """(n, T) intensities of consecutive minutes -> (n, T) score of every minute over its last
    `length` minutes (fewer at the start): the last value of `aggregate_curve` of that window."""
    x = np.asarray(x, dtype=np.float64)
    n, T = x.shape
    if kind == "sum":
        c = np.concatenate([np.zeros((n, 1)), np.cumsum(x, axis=1)], axis=1)  # (n, T+1)
        hi = np.arange(1, T + 1)
        lo = np.maximum(hi - length, 0)
        return np.exp(-(c[:, hi] - c[:, lo]))
    if kind == "max":
        from numpy.lib.stride_tricks import sliding_window_view
        pad = np.concatenate([np.zeros((n, length - 1)), np.maximum(x, 0.0)], axis=1)
        return np.exp(-sliding_window_view(pad, length, axis=1).max(axis=2))
    raise ValueError(f"unknown aggregation {kind!r}")
