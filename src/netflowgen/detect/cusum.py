"""One-sided upward CUSUM (Page 1954) on log1p traffic: the attack onset of EarlyDetect (SPEC 9) and
the operator's CUSUM detector (SPEC 12).

Variant (offline onset, `cusum_onset`): x_t = log1p(series). The search span is the `search` minutes
before the alert minute (plus the minutes after it, up to the window end, only if nothing fires
inside it); the reference is the `reference` minutes before the search span. Its median is mu and
the larger of 1.4826 x its MAD and its standard deviation is sigma (the
latter for sparse series whose MAD is 0), floored at `sigma_floor` so flat series do not divide by zero; a median is
robust to the tail of an earlier event inside the reference. Standardized z_t = (x_t - mu) / sigma;
S_t = max(0, S_{t-1} + z_t - k) from the start of the search span. The alarm is the first t with
S_t > h; the onset is one minute after the last minute before the alarm at which S was 0 (Page's
change-point estimate). No alarm: the onset is the alert minute. z is clipped to +-`z_clip` (2) so
that an alarm needs about h / (z_clip - k) = 6 consecutive elevated minutes ("sudden, sustained"):
without it one-minute bursts of a sparse series fired the alarm tens of minutes before the attack. A local reference matters: over a
whole 512-minute window, diurnal drift and earlier attacks of the same node pull a global CUSUM
hundreds of minutes too early.

Online variant (`cusum_statistic`): mu and sigma are EWMA estimates from the past minutes only,
updated only with minutes whose z-score is below `outlier_z`, so an attack does not raise its own
baseline while slow (diurnal) drift is still followed; the statistic S_t is what a threshold is
tuned on.

Restart after an alarm (decision level `h`, in the statistic's units, i.e. accumulated sigmas above
the allowance). Without it a sustained new level is an outlier for ever: the baseline never learns
it and S latches on for hundreds of minutes (and even a short burst keeps S high for S/k minutes
after it). With `h` finite, a minute whose S_t >= h is reported with that S_t (the alarm stays
visible), then S restarts from 0 at the next minute and the baseline re-learns from the current
level: mu = x_t, var = 0, and for the next `warmup` minutes (the relearn period) mu/var are the
running mean/variance of the calm minutes since the alarm (weight max(alpha, 1/(m+1)) for the m-th
update), so a sustained new level is the new normal after one alarm, as an operator's CUSUM with
restart does. During the relearn period the pre-alarm baseline is kept aside: once the relearnt
mean falls below the midpoint of the pre-alarm mean and the alarm minute's level (traffic is back to
where it was: a burst has ended), the pre-alarm baseline is restored, so a short burst does not
leave the baseline at the burst's level (without this a 3x burst 20 minutes after a 10x one went
unseen). The test is on the running mean, not on single minutes, so the noisy minutes of a modest
sustained shift do not restore the old baseline and re-alarm over and over. A further alarm inside
the relearn period keeps the original pre-alarm baseline aside and restarts the period.
Everything is a forward recursion over time, vectorized over the leading axes: causal.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class CusumConfig:
    k: float = 0.5  # allowance, in sigmas: drift below k sigma is ignored
    h: float = 8.0  # decision interval, in sigmas
    sigma_floor: float = 0.25  # in log1p units (~28 % change)
    search: int = 60  # minutes before the alert in which the onset is searched
    reference: int = 120  # minutes before the search span that set the normal level
    z_clip: float = 2.0  # each minute adds at most z_clip - k: an alarm needs a sustained rise


def cusum_path(z: np.ndarray, k: float) -> np.ndarray:
    """(T,) standardized values -> (T,) upward CUSUM S_t = max(0, S_{t-1} + z_t - k), S_{-1} = 0."""
    s = np.empty_like(z, dtype=np.float64)
    acc = 0.0
    for t, v in enumerate(z):
        acc = max(0.0, acc + float(v) - k)
        s[t] = acc
    return s


def cusum_onset(series: np.ndarray, alert_t: int, cfg: CusumConfig = CusumConfig()) -> int:
    """Onset minute (index into `series`, (T,) raw counts) of the rise that led to the alert at
    index `alert_t`."""
    x = np.log1p(np.clip(np.asarray(series, dtype=np.float64), 0.0, None))
    # short windows: keep at least half of the minutes before the alert (up to `reference`) as reference
    s0 = max(alert_t - cfg.search, min(cfg.reference, alert_t // 2), 1)
    ref = x[max(s0 - cfg.reference, 0):s0]
    mu = float(np.median(ref))
    # MAD for dense series, the standard deviation for sparse ones (MAD 0 but occasional bursts)
    sigma = max(1.4826 * float(np.median(np.abs(ref - mu))), float(np.std(ref)), cfg.sigma_floor)
    z = np.clip((x[s0:] - mu) / sigma, -cfg.z_clip, cfg.z_clip)
    s = cusum_path(z, cfg.k)  # s[i] is minute s0 + i
    fired = np.flatnonzero(s[:alert_t - s0 + 1] > cfg.h)
    if fired.size == 0:
        fired = np.flatnonzero(s > cfg.h)
    if fired.size == 0:
        return int(alert_t)
    alarm = int(fired[0])
    zeros = np.flatnonzero(s[:alarm] == 0.0)
    return s0 + (int(zeros[-1]) + 1 if zeros.size else 0)


def cusum_statistic(series: np.ndarray, k: float = 0.5, alpha: float = 0.02,
                    sigma_floor: float = 0.25, warmup: int = 30, outlier_z: float = 3.0,
                    h: float = float("inf")) -> np.ndarray:
    """Online upward CUSUM over the last axis of `series` (..., T) raw counts -> (..., T) statistic.

    mu/sigma^2 are EWMAs (weight `alpha` per minute) of log1p(series), updated with minutes whose
    z-score is below `outlier_z`.
    The first `warmup` minutes only learn the baseline (statistic 0).
    `h`: decision level of the restart after an alarm (module docstring); inf (the default here) never
    restarts.
    """
    x = np.log1p(np.clip(np.asarray(series, dtype=np.float64), 0.0, None))
    shape = x.shape
    x = x.reshape(-1, shape[-1])
    n, T = x.shape
    w = min(warmup, T)
    mu = x[:, :w].mean(axis=1) if w else x[:, 0].copy()
    var = x[:, :w].var(axis=1) if w else np.zeros(n)
    s = np.zeros(n)
    out = np.zeros_like(x)
    restart = bool(np.isfinite(h))
    relearn = max(int(warmup), 1)  # minutes after an alarm during which the baseline re-learns
    since = np.full(n, relearn)  # minutes since the last alarm (>= relearn: not relearning)
    ups = np.zeros(n)  # calm updates since the last alarm
    mu_old, var_old = mu.copy(), var.copy()  # the pre-alarm baseline, kept aside while relearning
    level = mu.copy()  # log1p level of the last alarm minute
    for t in range(w, T):
        xt = x[:, t]
        if restart:
            learning = since < relearn
            back = learning & (mu < 0.5 * (level + mu_old))  # traffic back at the pre-alarm level
            mu = np.where(back, mu_old, mu)
            var = np.where(back, var_old, var)
            since = np.where(back, relearn, since)
        sigma = np.maximum(np.sqrt(var), sigma_floor)
        z = (xt - mu) / sigma
        s = np.maximum(0.0, s + z - k)
        out[:, t] = s
        calm = z < outlier_z
        d = xt - mu
        mu_prev, var_prev = mu, var
        if restart:
            a = np.where(since < relearn, np.maximum(alpha, 1.0 / (ups + 2.0)), alpha)
        else:
            a = np.full(n, alpha)
        mu = np.where(calm, mu + a * d, mu)
        var = np.where(calm, (1 - a) * (var + a * d * d), var)
        if restart:
            ups = ups + calm
            since = since + 1
            fire = s >= h
            keep = fire & (since <= relearn)  # fired while relearning: the original baseline stays aside
            mu_old = np.where(fire & ~keep, mu_prev, mu_old)
            var_old = np.where(fire & ~keep, var_prev, var_old)
            # restart from the current level
            level = np.where(fire, xt, level)
            mu = np.where(fire, xt, mu)
            var = np.where(fire, 0.0, var)
            s = np.where(fire, 0.0, s)
            since = np.where(fire, 0, since)
            ups = np.where(fire, 0.0, ups)
    return out.reshape(shape)
