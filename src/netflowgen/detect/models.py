"""Survival models: each maps example ids to per-minute hazards (B, L) so one trainer serves all.

- `FrozenBackboneSurvival`: NetFlowGen as in the paper: the pre-trained decoder is frozen, its hidden
  states are computed once per example and cached; only the SAFE head trains.
- `BackboneSurvival`: decoder + head trained end to end: the Transformer from scratch ("TF", a
  randomly initialized TrafficGPT of the same configuration) or NetFlowGen with the backbone unfrozen.
- `MultiScaleLSTM`: the multi-timescale LSTM baseline. A RECONSTRUCTION of Xatu's model from its
  description (the original code is not public in a form we used): LSTMs over causally pooled copies
  of the log-scaled, per-node standardized 86 features at 1, 10 and 60 minutes, fused by concatenation,
  same survival head and loss.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from netflowgen.detect.safe import SurvivalHead


class FrozenBackboneSurvival(nn.Module):
    """Hazards from cached hidden states of a frozen backbone.

    hidden : (N, L, d) float32 hidden states of every example (row = example id).
    mean, std : (d,) per-dimension statistics of unlabelled hidden states (e.g. the train split's).
    The final LayerNorm leaves a large constant part in every dimension and a small varying one
    (std ~0.05 against a norm ~10 in our runs); standardizing lets a small head learn from a few
    hundred labels in a few hundred steps.
    """

    def __init__(self, hidden: Tensor, head_hidden: int = 512, dropout: float = 0.1,
                 mean: Tensor | None = None, std: Tensor | None = None) -> None:
        super().__init__()
        d = hidden.shape[-1]
        self.register_buffer("hidden", hidden, persistent=False)
        self.register_buffer("mean", torch.zeros(d) if mean is None else mean)
        self.register_buffer("std", torch.ones(d) if std is None else std.clamp_min(1e-6))
        self.head = SurvivalHead(d, head_hidden, dropout)

    def forward(self, ids: Tensor) -> Tensor:
        return self.head((self.hidden[ids] - self.mean) / self.std)  # (B, L)


@torch.no_grad()
def backbone_hidden_states(backbone: nn.Module, make_inputs: Callable[[np.ndarray], object], n: int,
                           batch_size: int = 32, progress: Callable[[int], None] | None = None) -> Tensor:
    """Hidden states (n, L, d) of examples 0..n-1, computed in eval mode in batches."""
    backbone.eval()
    out = []
    for lo in range(0, n, batch_size):
        ids = np.arange(lo, min(n, lo + batch_size))
        out.append(backbone.hidden_states(make_inputs(ids)).float())  # (b, L, d)
        if progress is not None:
            progress(len(ids))
    return torch.cat(out, dim=0)


class BackboneSurvival(nn.Module):
    """Backbone (a TrafficGPT) + SAFE head trained end to end; `make_inputs(ids)` builds ModelInputs."""

    def __init__(self, backbone: nn.Module, make_inputs: Callable[[np.ndarray], object], d_model: int,
                 head_hidden: int = 512, dropout: float = 0.1) -> None:
        super().__init__()
        self.backbone = backbone
        self.make_inputs = make_inputs
        self.head = SurvivalHead(d_model, head_hidden, dropout)

    def forward(self, ids: Tensor) -> Tensor:
        return self.head(self.backbone.hidden_states(self.make_inputs(ids.cpu().numpy())))  # (B, L)


def causal_mean(x: Tensor, k: int) -> Tensor:
    """(B, L, F) -> (B, L, F) mean over minutes t-k+1..t (fewer at the start); no future minutes."""
    if k == 1:
        return x
    c = torch.cumsum(x, dim=1)
    shifted = torch.cat([torch.zeros_like(c[:, :k]), c[:, :-k]], dim=1)
    count = torch.clamp(torch.arange(1, x.shape[1] + 1, device=x.device), max=k).view(1, -1, 1)
    return (c - shifted) / count


class MultiScaleLSTM(nn.Module):
    """Multi-timescale LSTM survival model (a reconstruction of Xatu's, see the module docstring).

    features : (N, L, F) float32 inputs of every example, already log1p-scaled and standardized.
    For scale k the LSTM runs over the causal k-minute means sampled every k minutes (L/k steps); the
    output at minute t is that of the last sample at or before t, so no minute sees the future.
    """

    def __init__(self, features: Tensor, scales: Sequence[int] = (1, 10, 60), hidden: int = 64,
                 head_hidden: int = 512, dropout: float = 0.1) -> None:
        super().__init__()
        self.register_buffer("x", features, persistent=False)
        self.scales = tuple(scales)
        f = features.shape[-1]
        self.lstms = nn.ModuleList([nn.LSTM(f, hidden, batch_first=True) for _ in self.scales])
        self.head = SurvivalHead(hidden * len(self.scales), head_hidden, dropout)

    def forward(self, ids: Tensor) -> Tensor:
        x = self.x[ids]  # (B, L, F)
        B, L, _ = x.shape
        outs = []
        for k, lstm in zip(self.scales, self.lstms):
            pooled = causal_mean(x, k)[:, k - 1::k]  # (B, L//k, F): samples at minutes k-1, 2k-1, ...
            h, _ = lstm(pooled)  # (B, L//k, H)
            t = torch.arange(L, device=x.device)
            j = (t + 1) // k - 1  # last sample at or before minute t; -1 = none yet
            h = torch.cat([torch.zeros_like(h[:, :1]), h], dim=1)[:, j + 1]  # (B, L, H)
            outs.append(h)
        return self.head(torch.cat(outs, dim=-1))  # (B, L)
