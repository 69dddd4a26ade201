"""Each operator baseline detects an obvious attack and ignores flat traffic."""

from __future__ import annotations

import numpy as np
import pytest

from netflowgen.detect.baselines import CusumDetector, SeasonalBand, StaticEwma, stat_to_curve
from netflowgen.detect.metrics import detect


def traffic(rng: np.random.Generator, n: int, t: int) -> np.ndarray:
    """(n, t, 3) packets, bytes, flows with a daily cycle and Poisson noise."""
    day = 1 + 0.5 * np.sin(np.arange(t) / 1440 * 2 * np.pi)
    pk = rng.poisson(200 * day, (n, t)).astype(float)
    return np.stack([pk, pk * 800, pk / 10], axis=2)


@pytest.mark.parametrize("make", [StaticEwma, SeasonalBand, CusumDetector])
def test_baseline_detects_attack_and_ignores_flat(make) -> None:
    rng = np.random.default_rng(0)
    train = traffic(rng, 2, 3 * 1440)
    hour_train = (np.arange(3 * 1440) // 60) % 24
    det = make()
    det.fit(train, hour_train) if isinstance(det, SeasonalBand) else det.fit(train)
    L = 240
    win = traffic(rng, 2, L)
    win[0, 150:] *= 40  # obvious flood on node 0 from minute 150
    hour = np.tile((np.arange(L) // 60) % 24, (2, 1))
    curves = stat_to_curve(det.statistic(win, np.array([0, 1]), hour))
    assert (np.diff(curves, axis=1) <= 0).all()
    # a threshold at a moderate statistic level: ratio 3 / z 6 / cusum 10
    level = {StaticEwma: 3.0, SeasonalBand: 6.0, CusumDetector: 10.0}[make]
    t_det = detect(curves, float(np.exp(-level)), warmup=40)
    assert 150 <= t_det[0] <= 155
    assert t_det[1] == -1
