"""Incremental anchored windows: the live scorer's per-node state advanced one minute at a time,
for cores whose window output at position p follows from their state at p - 1 and minute p.

`detect.anchored` scores minute tau on the window [a(tau), tau], a(tau) the first clock anchor >=
tau - C + 1 (anchors every K minutes). Recomputing that window every minute costs up to C positions
per node; here every anchor's window keeps its running state (an EWMA accumulator, LSTM hidden and
cell states), so a closed minute costs one position per live window (at most C/K + 1 = 3) per node.
A window is opened at its anchor (or at the first minute scored, where the batch scorer clips), and
dropped once no later minute can use it. The output of window a(tau) at tau is what the batch scorer
computes (tests: the streaming scorer equals `Detector.score` for every method).

Cores covered: Static-EWMA, Static-percentile, Seasonal-band (OperatorCore) and MS-LSTM (LstmCore).
CUSUM, Surprisal and the transformer methods recompute their window (`StreamingScorer`).

A stepper has `new(n)`, a window's fresh state for n nodes, and `step(state, rows, position, recent,
hour)`, which advances the rows' state by one minute (`recent(k)` = their last k minutes) and returns
the window's output there.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch

from netflowgen.detect.cores import LstmCore, OperatorCore


class OperatorStream:
    """Static-EWMA (EWMA of volumes / the node's level), Static-percentile (volume / level),
    Seasonal-band (EWMA of the hour's z-score): (n, 3) per window, same arithmetic as `baselines`."""

    def __init__(self, core: OperatorCore, calib: np.ndarray) -> None:
        self.core, self.calib = core, calib
        self.method = core.method

    def new(self, n: int) -> dict[str, Any]:
        return {"acc": np.zeros((n, 3))}

    def step(self, st: dict[str, Any], rows: np.ndarray, p: int, recent: Callable[[int], np.ndarray], hour: int) -> np.ndarray:
        x = recent(1)[:, 0]  # (b, 3) float32 volumes of the minute
        c = self.calib[rows]
        stat = self.core.stat
        if self.method == "Static-percentile":
            return np.asarray(x, dtype=np.float64) / stat.ref_[c]
        if self.method == "Static-EWMA":
            z: np.ndarray = x
        else:  # Seasonal-band
            z = (np.log1p(np.clip(x, 0, None)) - stat.mean_[c, hour]) / stat.std_[c, hour]
        acc = z.astype(np.float64) if p == 0 else st["acc"][rows]  # baselines.ewma starts at the first value
        acc = stat.alpha * z + (1 - stat.alpha) * acc
        st["acc"][rows] = acc
        return acc / stat.ref_[c] if self.method == "Static-EWMA" else acc


class LstmStream:
    """MS-LSTM: per scale k, the LSTM state after the window's k-minute means sampled at positions
    k-1, 2k-1, ...; the hazard at p is the head on the latest state of every scale (zeros before a
    scale's first sample), as `models.MultiScaleLSTMNet.forward`."""

    def __init__(self, core: LstmCore, calib: np.ndarray) -> None:
        self.core, self.calib = core, calib
        self.net = core.net.eval()

    def new(self, n: int) -> dict[str, Any]:
        H = self.net.hidden
        st: dict[str, Any] = {}
        for k in self.net.scales:
            st[f"h{k}"] = np.zeros((n, H), np.float32)
            st[f"c{k}"] = np.zeros((n, H), np.float32)
            st[f"seen{k}"] = np.zeros(n, bool)
        return st

    @torch.no_grad()
    def step(self, st: dict[str, Any], rows: np.ndarray, p: int, recent: Callable[[int], np.ndarray], hour: int) -> np.ndarray:
        c = self.calib[rows]
        mean, std = self.core.calib["mean"][c], self.core.calib["std"][c]
        outs = []
        for k, lstm in zip(self.net.scales, self.net.lstms):
            if (p + 1) % k == 0:  # a sample of this scale: the mean of the window's last k minutes
                w = np.log1p(np.clip(recent(k), 0, None))
                x = ((w - mean[:, None]) / std[:, None]).astype(np.float32).mean(axis=1)  # (b, F)
                h0 = torch.from_numpy(st[f"h{k}"][rows])[None]
                c0 = torch.from_numpy(st[f"c{k}"][rows])[None]
                _, (h1, c1) = lstm(torch.from_numpy(x)[:, None, :], (h0, c0))
                st[f"h{k}"][rows], st[f"c{k}"][rows] = h1[0].numpy(), c1[0].numpy()
                st[f"seen{k}"][rows] = True
            outs.append(torch.from_numpy(st[f"h{k}"][rows] * st[f"seen{k}"][rows][:, None]))
        return self.net.head(torch.cat(outs, dim=-1)[:, None, :])[:, 0].double().numpy()


def stream_for(core: Any, calib: np.ndarray) -> Any:
    """The incremental stepper of a core, or None when the core recomputes its window."""
    if isinstance(core, OperatorCore) and core.method in ("Static-EWMA", "Static-percentile", "Seasonal-band"):
        core.bind_calibration()
        return OperatorStream(core, calib)
    if isinstance(core, LstmCore):
        return LstmStream(core, calib)
    return None
