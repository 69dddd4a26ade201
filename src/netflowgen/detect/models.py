"""Survival models: each maps example ids to per-minute hazards (B, L) so one trainer serves all.

- `FrozenBackboneSurvival`: NetFlowGen as in the paper: the pre-trained decoder is frozen, its hidden
  states are computed once per example and cached; only the SAFE head trains.
- `AnchoredSurvival`: any causal model trained end to end on the anchored windows of its examples:
  the Transformer from scratch ("TF", a randomly initialized TrafficGPT of the same configuration),
  NetFlowGen with the backbone unfrozen, and the MS-LSTM.
- `MultiScaleLSTMNet`: the multi-timescale LSTM baseline. A RECONSTRUCTION of Xatu's model from its
  description (the original code is not public in a form we used): LSTMs over causally pooled copies
  of the log-scaled, per-node standardized 86 features at 1, 10 and 60 minutes, fused by concatenation,
  same survival head and loss.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from netflowgen.detect.safe import SurvivalHead


class FrozenBackboneSurvival(nn.Module):
    hidden: Tensor  # buffers (registered in __init__)
    mean: Tensor
    std: Tensor
    extra: Tensor | None

    """Hazards from cached hidden states of a frozen backbone.

    hidden : (N, L, d) float32 hidden states of every example (row = example id).
    head : the SurvivalHead that trains (shared with the detector that is saved).
    mean, std : (d,) per-dimension statistics of unlabelled hidden states (e.g. the train split's).
    The final LayerNorm leaves a large constant part in every dimension and a small varying one
    (std ~0.05 against a norm ~10 in our runs); standardizing lets a small head learn from a few
    hundred labels in a few hundred steps.
    extra : optional (N, L, G) float32 inputs appended after the standardized hidden states (e.g.
    NetFlowGen+surprisal's per-node surprisal z); the head then reads d + G values per minute.
    """

    def __init__(self, hidden: Tensor, head: SurvivalHead, mean: Tensor, std: Tensor,
                 extra: Tensor | None = None) -> None:
        super().__init__()
        self.register_buffer("hidden", hidden, persistent=False)
        self.register_buffer("mean", mean.float())
        self.register_buffer("std", std.float().clamp_min(1e-6))
        self.register_buffer("extra", None if extra is None else extra.float(), persistent=False)
        self.head = head

    def forward(self, ids: Tensor) -> Tensor:
        h = (self.hidden[ids] - self.mean) / self.std  # (B, L, d)
        if self.extra is not None:
            h = torch.cat([h, self.extra[ids]], dim=-1)  # (B, L, d + G)
        return self.head(h)  # (B, L)


def causal_mean(x: Tensor, k: int) -> Tensor:
    """(B, L, F) -> (B, L, F) mean over minutes t-k+1..t (fewer at the start); no future minutes."""
    if k == 1:
        return x
    c = torch.cumsum(x, dim=1)
    shifted = torch.cat([torch.zeros_like(c[:, :k]), c[:, :-k]], dim=1)
    count = torch.clamp(torch.arange(1, x.shape[1] + 1, device=x.device), max=k).view(1, -1, 1)
    return (c - shifted) / count


class MultiScaleLSTMNet(nn.Module):
    """Multi-timescale LSTM survival model (a reconstruction of Xatu's, see the module docstring).

    Input (B, T, F) float32 windows, already log1p-scaled and standardized per node; output (B, T)
    hazards. For scale k the LSTM runs over the causal k-minute means sampled every k minutes (T/k
    steps); the output at minute t is that of the last sample at or before t, so no minute sees the
    future (the model is causal: `detect.anchored` relies on it).
    """

    def __init__(self, n_features: int, scales: Sequence[int] = (1, 10, 60), hidden: int = 64,
                 head_hidden: int = 512, dropout: float = 0.1) -> None:
        super().__init__()
        self.n_features, self.scales, self.hidden = int(n_features), tuple(int(k) for k in scales), int(hidden)
        self.head_hidden, self.dropout = int(head_hidden), float(dropout)
        self.lstms = nn.ModuleList([nn.LSTM(self.n_features, hidden, batch_first=True) for _ in self.scales])
        self.head = SurvivalHead(hidden * len(self.scales), head_hidden, dropout)

    def settings(self) -> dict:
        return {"n_features": self.n_features, "scales": list(self.scales), "hidden": self.hidden,
                "head_hidden": self.head_hidden, "dropout": self.dropout}

    def forward(self, x: Tensor) -> Tensor:
        B, L, _ = x.shape  # (B, L, F)
        outs = []
        for k, lstm in zip(self.scales, self.lstms):
            pooled = causal_mean(x, k)[:, k - 1::k]  # (B, L//k, F): samples at minutes k-1, 2k-1, ...
            if pooled.shape[1] == 0:
                outs.append(torch.zeros(B, L, self.hidden, dtype=x.dtype, device=x.device))
                continue
            h, _ = lstm(pooled)  # (B, L//k, H)
            t = torch.arange(L, device=x.device)
            j = (t + 1) // k - 1  # last sample at or before minute t; -1 = none yet
            h = torch.cat([torch.zeros_like(h[:, :1]), h], dim=1)[:, j + 1]  # (B, L, H)
            outs.append(h)
        return self.head(torch.cat(outs, dim=-1))  # (B, L)


class AnchoredSurvival(nn.Module):
    """Example ids -> hazards (B, L) through anchored windows (`detect.anchored`), trainable end to end.

    plan : the WindowPlan of every example's L minutes (row = example id).
    window_hazards : fn(node_rows, starts, length) -> (b, length) hazards tensor, with gradients.
    modules : the trained modules (registered so their parameters train and save).
    """

    def __init__(self, plan: Any, window_hazards: Callable[[np.ndarray, np.ndarray, int], Tensor],
                 **modules: nn.Module) -> None:
        super().__init__()
        self.plan, self.window_hazards = plan, window_hazards
        for name, m in modules.items():
            self.add_module(name, m)

    def forward(self, ids: Tensor) -> Tensor:
        p = self.plan
        idx = ids.cpu().numpy()
        w, pos = p.window[idx], p.position[idx]  # (B, L)
        uw, inv = np.unique(w.ravel(), return_inverse=True)
        flat_pos = pos.ravel()
        pieces, where = [], []
        for length in np.unique(p.length[uw]):
            sel = np.flatnonzero(p.length[uw] == length)
            y = self.window_hazards(p.node_row[uw[sel]], p.start[uw[sel]], int(length))  # (b, length)
            local = np.full(uw.size, -1)
            local[sel] = np.arange(sel.size)
            req = np.flatnonzero(local[inv] >= 0)
            pieces.append(y[torch.as_tensor(local[inv][req]), torch.as_tensor(flat_pos[req])])
            where.append(req)
        order = torch.as_tensor(np.argsort(np.concatenate(where)))
        return torch.cat(pieces)[order].view(w.shape)  # (B, L)
