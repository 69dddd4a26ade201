"""Two operator-baseline defects measured on real hosts: the seasonal band alarmed on hours its
reference range did not cover, and the streaming CUSUM latched on after a level shift."""

from __future__ import annotations

import numpy as np

from netflowgen.detect.baselines import CusumDetector, SeasonalBand

H = 5.0  # the CUSUM's default decision level


def traffic(rng: np.random.Generator, n: int, t: int, level: float = 200.0) -> np.ndarray:
    """(n, t, 3) packets, bytes, flows: Poisson packets with a little multiplicative noise."""
    pk = rng.poisson(level * np.exp(rng.normal(0.0, 0.05, (n, t)))).astype(float)
    return np.stack([pk, pk * 800, pk / 10], axis=2)


def hours_of(t: int) -> np.ndarray:
    return (np.arange(t) // 60) % 24


def half_day_band(rng: np.random.Generator) -> SeasonalBand:
    """A band fitted on three days of which only hours 0-11 are in the reference range."""
    h = hours_of(3 * 1440)
    return SeasonalBand().fit(traffic(rng, 2, 3 * 1440)[:, h < 12], h[h < 12])


def test_seasonal_band_unseen_hours_use_the_pooled_band() -> None:
    rng = np.random.default_rng(0)
    band = half_day_band(rng)
    win = traffic(rng, 2, 1440)  # one day at the reference level
    hour = np.tile(hours_of(1440), (2, 1))
    stat = band.statistic(win, np.array([0, 1]), hour)
    unseen = hour >= 12
    # the old code (mean 0, sd 0.25 for unseen hours) gave z ~ 48 at every unseen minute
    assert (stat[unseen] < 2).all()
    assert np.abs(stat[~unseen]).max() < 2
    # a 10x burst at an unseen hour still stands out
    win[0, 900:905] *= 10  # 15:00
    burst = band.statistic(win, np.array([0, 1]), hour)
    assert burst[0, 900:905].max() > 5
    assert burst[1, 900:905].max() < 2


def test_seasonal_band_fallback_is_per_node_and_needs_enough_minutes() -> None:
    rng = np.random.default_rng(1)
    t = 2 * 1440
    hour = hours_of(t)
    train = traffic(rng, 2, t)
    train[0, hour >= 12] *= 4  # node 0: a real afternoon level of its own, seen in its range
    train[1, hour >= 12] = np.nan  # node 1: its range does not cover the afternoon
    few = np.flatnonzero(hour == 5)
    train[0, few[5:]] = np.nan  # node 0: only 5 reference minutes at 05:00
    band = SeasonalBand().fit(train, hour)
    x = np.log1p(train[..., 0])
    # node 0 keeps its own afternoon band
    np.testing.assert_allclose(band.mean_[0, 15, 0], np.nanmean(x[0, hour == 15]))
    # node 1's afternoon and node 0's sparse 05:00 fall back on the node's pooled band
    for node, h in ((1, 15), (1, 23), (0, 5)):
        np.testing.assert_allclose(band.mean_[node, h, 0], np.nanmean(x[node]))
        np.testing.assert_allclose(band.std_[node, h, 0], max(np.nanstd(x[node]), band.sigma_floor))
    # and node 1 at its usual level in the afternoon is quiet
    win = traffic(rng, 2, 720)
    stat = band.statistic(win, np.array([0, 1]), np.tile(12 + hours_of(720), (2, 1)))
    assert np.abs(stat[1]).max() < 2


def test_cusum_alarms_once_on_a_level_shift() -> None:
    rng = np.random.default_rng(2)
    det = CusumDetector()
    x = traffic(rng, 2, 600)
    x[0, 200:500] *= 5  # sustained new level on node 0
    s = det.statistic(x, np.array([0, 1]))
    alarms = np.flatnonzero(s[0] >= H)
    assert alarms.size and 200 <= alarms[0] <= 203
    assert s[0, :200].max() < H and s[1].max() < H
    # restart: the alarm minute reports >= h, the next minute starts again from 0
    assert s[0, alarms[0] + 1] < 1.0
    # the old code stayed >= h for all 300 minutes of the new level
    assert (s[0, 200:500] >= H).mean() < 0.2
    assert det.h == H


def test_cusum_short_burst_reaches_h_and_the_baseline_comes_back() -> None:
    rng = np.random.default_rng(3)
    det = CusumDetector()
    x = traffic(rng, 1, 400)
    x[0, 150:155] *= 10  # a 5-minute 10x burst
    x[0, 175:180] *= 3  # a 3x one 20 minutes later
    x[0, 250:255] *= 10  # and another 10x one 100 minutes later
    s = det.statistic(x, np.array([0]))[0]
    assert s[150:152].max() >= H
    # the first burst did not leave the baseline at its level (the pre-alarm baseline came back)
    assert s[175:177].max() >= H and s[250:252].max() >= H
    # no latching after the bursts (the old statistic stayed above h for ~80 minutes)
    assert s[152:175].max() < H and s[177:250].max() < H and s[252:].max() < H


def test_cusum_with_restart_is_causal_and_row_independent() -> None:
    rng = np.random.default_rng(4)
    x = traffic(rng, 3, 500)
    x[0, 100:400] *= 5
    x[1, 120:126] *= 10
    x[1, 130:300] *= 3
    x[2, 200:] *= np.linspace(1, 30, 300)[:, None]  # ramp: several alarms and restarts
    det = CusumDetector()
    nodes = np.arange(3)
    full = det.measures(x, nodes)  # (3, 500, 3)
    fired = full >= H
    assert fired.any(axis=(1, 2)).all()
    after = np.roll(fired, 1, axis=1)  # the minute after an alarm starts again from 0
    assert full[after].max() < 1.0
    for p in (31, 101, 127, 250, 401):
        np.testing.assert_allclose(det.measures(x[:, :p], nodes), full[:, :p], rtol=1e-9, atol=1e-9)
    for r in range(3):
        np.testing.assert_allclose(det.measures(x[r:r + 1], nodes[r:r + 1]), full[r:r + 1], rtol=1e-9, atol=1e-9)
