"""The survival head and the SAFE loss (SPEC 10).

A per-minute head maps hidden states to non-negative hazards; the survival probability that no attack
has started by minute t is s_t = exp(-sum_{tau<=t} lambda_tau), non-increasing by construction. The
loss is evaluated at the label time T of each example:

- non-attack (censored) example: Lambda_T = -log s_T;
- attack example (event by T):    -log(1 - s_T) = -log(-expm1(-Lambda_T)), finite and with finite
  gradients for Lambda_T anywhere in [1e-12, 1e4+];
- "regular" variant for attacks:  -log(s_{T-1} - s_T) = Lambda_{T-1} - log(-expm1(-lambda_T)).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

# Below this a cumulative hazard is treated as this: -log(-expm1(-x)) ~ -log(x) would otherwise be
# +inf at exactly 0 (a head that outputs softplus(-100) for every minute).
_MIN_HAZARD = 1e-12


class SurvivalHead(nn.Module):
    """Hidden states (B, T, d) -> hazards (B, T) >= 0, one hidden layer (paper: 512 units, ~67 K
    parameters for d = 128)."""

    def __init__(self, d_in: int, hidden: int = 512, dropout: float = 0.1) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(d_in, hidden), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(hidden, 1))
        # Start with a small hazard (~0.01/min) so the initial survival over a 512-min window is not 0.
        last = self.net[-1]
        assert isinstance(last, nn.Linear)
        nn.init.constant_(last.bias, -4.6)

    def forward(self, h: Tensor) -> Tensor:
        return F.softplus(self.net(h).squeeze(-1))  # (B, T)


def cumulative_hazard(hazards: Tensor) -> Tensor:
    """(B, T) hazards -> (B, T) Lambda_t = sum_{tau <= t} lambda_tau."""
    return torch.cumsum(hazards, dim=-1)


def survival(hazards: Tensor) -> Tensor:
    """(B, T) hazards -> (B, T) survival s_t = exp(-Lambda_t) in (0, 1], non-increasing in t."""
    return torch.exp(-cumulative_hazard(hazards))


def _neg_log_one_minus_exp_neg(x: Tensor) -> Tensor:
    """-log(1 - exp(-x)) for x >= 0, stable at both ends (x -> 0 and x -> 1e4)."""
    return -torch.log(-torch.expm1(-x.clamp_min(_MIN_HAZARD)))


def safe_loss(hazards: Tensor, label_t: Tensor, event: Tensor, variant: str = "safe",
              reduction: str = "mean") -> Tensor:
    """SAFE survival loss.

    Parameters
    ----------
    hazards : (B, T) float, >= 0 per minute.
    label_t : (B,) long, index of the label minute T in the window (attack: alert minute; non-attack:
        the window's last minute).
    event : (B,) bool, True for attack examples (event observed by T), False for censored ones.
    variant : "safe" (-log(1 - s_T) for events) or "regular" (-log(s_{T-1} - s_T)).
    reduction : "mean", "sum" or "none" ((B,) per-example losses).
    """
    cum = cumulative_hazard(hazards)  # (B, T)
    idx = label_t.long().view(-1, 1)
    lam_T = cum.gather(1, idx).squeeze(1)  # (B,)
    if variant == "safe":
        ev_loss = _neg_log_one_minus_exp_neg(lam_T)
    elif variant == "regular":
        lam_prev = lam_T - hazards.gather(1, idx).squeeze(1)  # Lambda_{T-1}
        ev_loss = lam_prev + _neg_log_one_minus_exp_neg(hazards.gather(1, idx).squeeze(1))
    else:
        raise ValueError(f"unknown SAFE variant {variant!r}; use 'safe' or 'regular'")
    loss = torch.where(event.bool(), ev_loss, lam_T)
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    return loss
