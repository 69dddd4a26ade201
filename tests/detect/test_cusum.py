"""CUSUM finds a known step, ignores noise, and its online statistic rises only after the step."""

from __future__ import annotations

import numpy as np

from netflowgen.detect.cusum import CusumConfig, cusum_onset, cusum_path, cusum_statistic


def test_cusum_path_recursion() -> None:
    np.testing.assert_allclose(cusum_path(np.array([1.0, 2.0, -5.0, 0.7]), k=0.5), [0.5, 2.0, 0.0, 0.2])


def test_onset_finds_known_step() -> None:
    rng = np.random.default_rng(1)
    x = rng.poisson(1000, 300).astype(float)
    x[200:] *= 20  # step at 200, alert raised at 215
    assert abs(cusum_onset(x, 215) - 200) <= 1


def test_onset_finds_ramp_start() -> None:
    rng = np.random.default_rng(2)
    x = rng.poisson(500, 300).astype(float)
    x[180:230] *= np.linspace(1, 50, 50)
    x[230:] *= 50
    on = cusum_onset(x, 235)
    assert 178 <= on <= 195


def test_no_change_returns_alert_minute() -> None:
    x = np.full(200, 1000.0)
    assert cusum_onset(x, 150, CusumConfig()) == 150


def test_online_statistic() -> None:
    rng = np.random.default_rng(3)
    x = rng.poisson(800, (2, 240)).astype(float)
    x[0, 150:] *= 30
    s = cusum_statistic(x, warmup=30)
    assert s[0, :150].max() < 8 and s[0, 160] > 20
    assert s[1].max() < 8
