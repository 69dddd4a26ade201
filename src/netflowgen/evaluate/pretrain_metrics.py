"""Pre-training metrics (SPEC 8): loss, perplexity = exp(loss) and accuracy of next-minute bin
prediction on a split, per feature group, for the model and for the bigram baseline; the paper's
Table 4 layout.

Every figure averages over the same (node, minute, feature) targets: minutes of the split whose
token is not missing, each predicted from the minutes before it (context may reach into the
previous split, targets never leave the split).
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Callable, ContextManager, Sequence

import numpy as np
import torch

from netflowgen.model import TrafficGPT, next_minute_loss
from netflowgen.tokens import TokenData, scoring_windows

GROUPS: tuple[str, ...] = ("volume", "protocol", "port", "flags")


def feature_group(name: str) -> str:
    """SPEC 3 group of a feature name: volume, protocol, port or flags."""
    if "_flag" in name:
        return "flags"
    if "_port" in name:
        return "port"
    if "_all_" in name:
        return "volume"
    return "protocol"


@dataclass
class Scores:
    """Per-feature sums over scored targets: nll (P,), correct (P,), count (P,)."""

    features: tuple[str, ...]
    nll: np.ndarray
    correct: np.ndarray
    count: np.ndarray

    def summary(self, features: Sequence[str] | None = None) -> dict[str, float]:
        """Loss, perplexity and accuracy averaged over nodes, steps and the given features."""
        idx = [i for i, n in enumerate(self.features) if features is None or n in features]
        n = max(float(self.count[idx].sum()), 1.0)
        loss = float(self.nll[idx].sum()) / n
        return {"loss": loss, "perplexity": math.exp(loss), "accuracy": float(self.correct[idx].sum()) / n,
                "targets": int(self.count[idx].sum())}

    def by_group(self) -> dict[str, dict[str, float]]:
        groups = {g: [n for n in self.features if feature_group(n) == g] for g in GROUPS}
        return {g: self.summary(names) for g, names in groups.items() if names}


def evaluation_windows(data: TokenData, lo: int, hi: int, length: int, max_windows: int = 0,
                       seed: int = 0) -> list[tuple[int, int, int, int]]:
    """Windows scoring the targets in minutes [lo, hi) of every node (see `scoring_windows`).

    Returns
    -------
    list of (node row, window start, first scored position, one past the last scored position);
    with `max_windows` > 0, a fixed random subset (the same at every call with the same seed).
    """
    T = min(length, data.n_minutes)
    wins = [(n, s, a, b) for n in range(len(data.nodes)) for s, a, b in scoring_windows(lo, hi, T, data.n_minutes)]
    if max_windows and len(wins) > max_windows:
        keep = np.sort(np.random.default_rng(seed).choice(len(wins), max_windows, replace=False))
        wins = [wins[i] for i in keep]
    return wins


@torch.no_grad()
def score_model(model: TrafficGPT, data: TokenData, lo: int, hi: int, batch: int = 32,
                max_windows: int = 0, seed: int = 0, shard: tuple[int, int] = (0, 1),
                amp: Callable[[], ContextManager] = nullcontext) -> Scores:
    """Model scores of the targets in minutes [lo, hi) (see `evaluation_windows`).

    Parameters
    ----------
    model : TrafficGPT (its device is used)
    data : TokenData
    lo, hi : int
        Minute range of the split.
    batch : int
        Windows per forward pass.
    max_windows : int
        If > 0, score a fixed random subset of that many windows (fast validation during training).
    shard : (rank, world)
        Score every world-th window only (DDP; sum the results over ranks).
    amp : callable returning a context manager (e.g. bf16 autocast) for the forward pass.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    T = min(model.cfg.context, data.n_minutes)
    wins = evaluation_windows(data, lo, hi, T, max_windows, seed)[shard[0]::shard[1]]
    P = len(model.cfg.predicted_features)
    nll, correct, count = (torch.zeros(P, dtype=torch.float64, device=device) for _ in range(3))
    for i in range(0, len(wins), batch):
        w = torch.tensor(wins[i:i + batch])  # (b, 4): node, window start, scored positions [a, b)
        x = data.inputs(w[:, 0].numpy(), w[:, 1].numpy(), T).to(device)
        with amp():
            logits = model(x)  # (b, T, P, N)
        targets, mask = model.targets(x)  # (b, T-1, P), (b, T-1)
        pos = (w[:, 1:2] + torch.arange(T - 1)[None, :]).to(device)  # (b, T-1) absolute minute of position
        scored = mask & (pos >= w[:, 2:3].to(device)) & (pos < w[:, 3:4].to(device))  # (b, T-1)
        s = scored[..., None]  # (b, T-1, 1)
        nll += next_minute_loss(logits, targets, scored, reduction="none").sum((0, 1)).double()
        correct += ((logits[:, :-1].argmax(-1) == targets) & s).sum((0, 1)).double()
        count += s.expand_as(targets).sum((0, 1)).double()
    model.train(was_training)
    return Scores(tuple(model.cfg.predicted_features), nll.cpu().numpy(), correct.cpu().numpy(),
                  count.cpu().numpy())


class Bigram:
    """p(bin_t | bin_{t-1}) per feature with add-one smoothing, pooled over nodes or per node.

    counts : (G, F, N+1, N) transition counts; G = 1 (pooled) or n_nodes (per node); the previous
    token may be the missing token (row N), the current never is.
    """

    def __init__(self, counts: np.ndarray, per_node: bool, features: Sequence[str]) -> None:
        self.counts, self.per_node, self.features = counts, per_node, tuple(features)
        n = counts.shape[-1]
        self.log_p = np.log((counts + 1.0) / (counts.sum(-1, keepdims=True) + n))  # (G, F, N+1, N)
        self.argmax = counts.argmax(-1)  # (G, F, N+1): ties go to the lower bin, as torch.argmax

    @classmethod
    def fit(cls, data: TokenData, lo: int, hi: int, per_node: bool) -> "Bigram":
        """Count transitions whose current minute lies in [lo, hi) (the training range)."""
        N, F = data.n_bins, len(data.feature_names)
        G = len(data.nodes) if per_node else 1
        counts = np.zeros(G * F * (N + 1) * N, dtype=np.int64)
        f_idx = np.arange(F)[None, :]
        for r in range(len(data.nodes)):  # one node at a time keeps memory flat
            tok = np.asarray(data.tokens[r, max(lo - 1, 0):hi], dtype=np.int64)  # (M, F)
            prev, cur = tok[:-1], tok[1:]
            ok = cur < N  # targets are never missing minutes
            g = r if per_node else 0
            flat = ((g * F + f_idx) * (N + 1) + prev) * N + np.minimum(cur, N - 1)  # (M-1, F)
            counts += np.bincount(flat[ok], minlength=counts.size)
        return cls(counts.reshape(G, F, N + 1, N), per_node, data.feature_names)

    def score(self, data: TokenData, lo: int, hi: int, features: Sequence[str],
              windows: list[tuple[int, int, int, int]] | None = None) -> Scores:
        """Scores of the targets in minutes [lo, hi) of the predicted `features`; with `windows`
        (from `evaluation_windows`), exactly the targets those windows score."""
        N = data.n_bins
        cols = np.array([self.features.index(n) for n in features])
        if windows is None:  # every node, whole split: positions max(lo-1, 0) .. hi-2
            windows = [(r, 0, max(lo - 1, 0), hi - 1) for r in range(len(data.nodes))]
        nll, correct, count = (np.zeros(len(cols)) for _ in range(3))
        for r, _, a, b in windows:
            tok = np.asarray(data.tokens[r, a:b + 1], dtype=np.int64)[:, cols]  # (b-a+1, P)
            prev, cur = tok[:-1], tok[1:]  # position t predicts minute t+1
            ok = cur < N
            g = r if self.per_node else 0
            lp = self.log_p[g, cols[None, :], prev, np.minimum(cur, N - 1)]  # (b-a, P)
            nll -= np.where(ok, lp, 0.0).sum(0)
            correct += ((self.argmax[g, cols[None, :], prev] == cur) & ok).sum(0)
            count += ok.sum(0)
        return Scores(tuple(features), nll, correct, count)


def table4(rows: dict[str, dict[str, float]], title: str) -> str:
    """Rows {name: summary} in the paper's Table 4 layout (Loss, Perplexity, Accuracy)."""
    width = max(len(r) for r in rows) + 2
    lines = [title, f"{'':<{width}}{'Loss ↓':>10}{'Perplexity ↓':>14}{'Accuracy ↑':>12}"]
    for name, s in rows.items():
        lines.append(f"{name:<{width}}{s['loss']:>10.4f}{s['perplexity']:>14.4f}{s['accuracy']:>12.4f}")
    return "\n".join(lines)
