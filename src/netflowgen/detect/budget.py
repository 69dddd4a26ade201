"""False-alarm budgets (SPEC 14): thresholds chosen so that a detector, scoring a reference range
that is attack-free by assumption, opens at most `budget` alerts per node-day there.

An operator onboarding a network has no labels but can say "at most one false alarm per host per
day"; the threshold then follows from the detector's own scores on the host's reference minutes.
A reference range that holds known attacks (an operator's past alert list) can have them masked
(SPEC 14): their minutes count neither as alarms nor as reference time. The count is the alert
lifecycle's (`detect.alerts`): an alarm opens an alert unless it continues one (fewer than
`clear_after` reported quiet minutes since the last alarm) or reopens it (within `clear_after`
minutes of the close); missing minutes are not quiet.

- global: one theta for every node (total openings / total reported node-days <= budget);
- per node: each node's own theta (its openings / its reported days <= budget), for networks whose
  hosts differ too much for one threshold.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import polars as pl

QUANTILES = np.concatenate([[0.0], np.geomspace(1e-6, 0.5, 120)])  # candidate thetas: score quantiles


def alert_openings(alarm: np.ndarray, missing: np.ndarray, clear_after: int) -> np.ndarray:
    """(n,) alerts opened per node by the lifecycle of `detect.alerts` over (n, T) alarms."""
    out = np.zeros(alarm.shape[0], dtype=np.int64)
    reported = np.cumsum(~missing, axis=1)  # (n, T) reported minutes up to and including t
    for i in range(alarm.shape[0]):
        hits = np.flatnonzero(alarm[i])
        if hits.size == 0:
            continue
        opened, last = 1, hits[0]
        for m in hits[1:]:
            quiet = reported[i, m - 1] - reported[i, last]  # reported minutes strictly between
            if quiet >= clear_after:
                # the close was decided at the clear_after-th quiet minute after `last`
                decided = last + 1 + int(np.searchsorted(reported[i, last + 1:m] - reported[i, last], clear_after))
                if m - decided > clear_after:
                    opened += 1
            last = m
        out[i] = opened
    return out


def known_attack_masks(nodes: list[str], minutes_ms: np.ndarray, known: "pl.DataFrame", margin: int,
                       length: int) -> tuple[np.ndarray, np.ndarray]:
    """(calibration, budget) masks, each (n_nodes, T), of the `known` attacks (a truth or alert list)
    over minutes `minutes_ms` (UTC ms): calibration leaves out [onset - margin, end + margin]; the
    budget leaves out until end + margin + `length`, since a score aggregates its last `length`
    minutes and so shows an attack that long after it ends."""
    from netflowgen.detect.operator_metrics import attack_minutes, attacks_table
    att = attacks_table(known)
    return (attack_minutes(nodes, minutes_ms, att, margin),
            attack_minutes(nodes, minutes_ms, att, margin, margin + length))


def budget_thresholds(scores: np.ndarray, missing: np.ndarray, warmup: int, clear_after: int,
                      budget: float, per_node: bool = False, masked: np.ndarray | None = None) -> np.ndarray:
    """The largest theta (alarm = score < theta) whose openings stay within `budget` per reported
    node-day: shape () for a global theta, (n,) per node. scores, missing: (n, T) of the reference range;
    masked (n, T): its known attacks (with their margin), counted neither as alarms nor as days and
    treated as missing (an alert running into one is not closed by it)."""
    if budget < 0:
        raise ValueError(f"the false-alarm budget must be >= 0 alerts per node-day, got {budget}")
    scores = np.asarray(scores, dtype=np.float64)
    valid = np.ones_like(scores, dtype=bool)
    valid[:, :min(warmup, scores.shape[1])] = False
    if masked is not None:
        masked = np.asarray(masked, dtype=bool)
        valid &= ~masked
        missing = np.asarray(missing, dtype=bool) | masked
    cand = np.unique(np.quantile(scores[valid], QUANTILES)) if valid.any() else np.array([0.0])
    days = np.maximum((~missing).sum(axis=1) / 1440.0, 1e-9)  # (n,)

    def openings(theta: np.ndarray | float) -> np.ndarray:
        th = np.asarray(theta, dtype=np.float64)
        alarm = (scores < (th[:, None] if th.ndim else th)) & valid
        return alert_openings(alarm, missing, clear_after)

    if not per_node:
        best = 0.0
        for th in cand:  # openings grow with theta: the last one within budget
            if openings(th).sum() / days.sum() <= budget:
                best = float(th)
            else:
                break
        return np.asarray(best)
    best_n = np.zeros(scores.shape[0])
    ok = np.ones(scores.shape[0], dtype=bool)
    for th in cand:
        within = openings(np.full(scores.shape[0], th)) / days <= budget
        ok &= within  # a node stops at the first theta beyond its budget
        best_n[ok] = th
        if not ok.any():
            break
    return best_n
