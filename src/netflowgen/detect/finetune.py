"""Fine-tuning with the SAFE loss (SPEC 10): which examples train, which stop training early, which
tune the threshold; the training loop with early stopping; survival curves for evaluation.

Label regimes (`labels`):
- "val": the paper's label-scarce setting: fit on the validation-split examples (the paper's 360). A
  seeded 20 % of their pairs is held out for early stopping; the threshold is chosen on the whole
  validation split (the only labels this regime may use). The count is whatever the validation split
  holds (58 on the default 7-day simulated ISP), and is reported.
- "all": the "MoreData" baselines: fit on the train split; early stopping and threshold on validation.
- N (an integer): N examples (N/2 attack-non-attack pairs) drawn with the seed from the train split,
  used exactly like the validation examples of "val" (20 % of the pairs stop early, all N tune the
  threshold): only N labels are ever seen (the label-efficiency curve).
The test split is only ever used to report.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl
import torch
from torch import nn

from netflowgen.detect.safe import safe_loss


@dataclass
class FinetuneConfig:
    epochs: int = 30
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-4
    patience: int = 6  # epochs without a better early-stopping loss before stopping
    min_epochs: int = 8  # never stop earlier: the loss on held-out attacks often rises first
    holdout: float = 0.2  # share of label pairs held out for early stopping (val and count regimes)
    head_hidden: int = 512
    head_dropout: float = 0.1
    variant: str = "safe"  # or "regular"
    unfreeze: bool = False  # also train the pre-trained backbone (at backbone_lr)
    backbone_lr: float = 1e-4
    seed: int = 0

    def validate(self) -> None:
        """Refuse settings that would fail deep inside training, naming the key."""
        if self.variant not in ("safe", "regular"):
            raise ValueError(f"variant = {self.variant!r}: use 'safe' or 'regular'")
        for key in ("epochs", "batch_size", "head_hidden", "min_epochs", "patience"):
            if getattr(self, key) < (0 if key in ("min_epochs", "patience") else 1):
                raise ValueError(f"{key} = {getattr(self, key)} is out of range")
        if not 0 <= self.holdout < 1 or not 0 <= self.head_dropout < 1:
            raise ValueError(f"holdout ({self.holdout}) and head_dropout ({self.head_dropout}) must be in [0, 1)")
        if self.lr <= 0 or self.backbone_lr < 0:
            raise ValueError(f"lr ({self.lr}) must be > 0 and backbone_lr ({self.backbone_lr}) >= 0")


@dataclass
class LabelSets:
    fit: np.ndarray  # example ids the loss is computed on
    stop: np.ndarray  # early-stopping ids
    tune: np.ndarray  # threshold-selection ids
    test: np.ndarray
    regime: str


def _pairs(ex: pl.DataFrame) -> np.ndarray:
    return np.unique(ex.get_column("pair").to_numpy())


def _ids_of_pairs(ex: pl.DataFrame, pairs: np.ndarray) -> np.ndarray:
    return ex.filter(pl.col("pair").is_in(pairs.tolist())).get_column("id").to_numpy().astype(np.int64)


def select_labels(examples: pl.DataFrame, labels: str | int, seed: int = 0, holdout: float = 0.2,
                  attack_type: str | None = None) -> LabelSets:
    """Example ids per role for a label regime ("val", "all", or a count such as "360"); see module doc."""
    ex = examples if attack_type in (None, "all") else examples.filter(pl.col("attack_type") == attack_type)
    by = {s: ex.filter(pl.col("split") == s) for s in ("train", "val", "test")}
    rng = np.random.default_rng(seed)
    val_ids = by["val"].get_column("id").to_numpy().astype(np.int64)
    test_ids = by["test"].get_column("id").to_numpy().astype(np.int64)
    lab = str(labels)
    if lab == "all":
        return LabelSets(by["train"].get_column("id").to_numpy().astype(np.int64), val_ids, val_ids, test_ids, "all")
    if lab == "val":
        pool, regime = by["val"], "val"
        pairs = rng.permutation(_pairs(pool))
    else:
        n = int(lab)
        pool, regime = by["train"], f"train[{n}]"
        pairs = rng.permutation(_pairs(pool))[: max(1, n // 2)]
    n_stop = max(1, int(round(holdout * len(pairs)))) if len(pairs) > 1 else 0
    return LabelSets(_ids_of_pairs(pool, pairs[n_stop:]), _ids_of_pairs(pool, pairs[:n_stop]),
                     _ids_of_pairs(pool, pairs), test_ids, regime)


def train_survival(model: nn.Module, label_t: np.ndarray, event: np.ndarray, sets: LabelSets,
                   cfg: FinetuneConfig, param_groups: list[dict] | None = None) -> dict:
    """Train `model` (ids -> hazards (B, L)) with the SAFE loss; keep the weights of the best
    early-stopping loss. label_t, event : (N_examples,) for all example ids. Returns the history."""
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    lt = torch.as_tensor(np.array(label_t, dtype=np.int64))
    ev = torch.as_tensor(np.array(event, dtype=bool))
    params = param_groups or [{"params": [p for p in model.parameters() if p.requires_grad]}]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    stop_ids = sets.stop if len(sets.stop) else sets.fit
    best, best_state, bad = float("inf"), None, 0
    hist: dict[str, Any] = {"fit": [], "stop": []}
    for epoch in range(cfg.epochs):
        model.train()
        order = rng.permutation(sets.fit)
        total = 0.0
        for lo in range(0, len(order), cfg.batch_size):
            ids = torch.as_tensor(order[lo:lo + cfg.batch_size])
            loss = safe_loss(model(ids), lt[ids], ev[ids], cfg.variant)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            total += float(loss.detach()) * len(ids)
        stop_loss = evaluate_loss(model, stop_ids, lt, ev, cfg)
        hist["fit"].append(total / max(1, len(order)))
        hist["stop"].append(stop_loss)
        if stop_loss < best - 1e-4:
            best, bad = stop_loss, 0
            best_state = copy.deepcopy({k: v for k, v in model.state_dict().items()})
        else:
            bad += 1
            if bad >= cfg.patience and epoch + 1 >= cfg.min_epochs:
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    hist["best_stop_loss"] = best
    hist["epochs_run"] = len(hist["fit"])
    return hist


@torch.no_grad()
def evaluate_loss(model: nn.Module, ids: np.ndarray, label_t: torch.Tensor, event: torch.Tensor,
                  cfg: FinetuneConfig) -> float:
    model.eval()
    total = 0.0
    for lo in range(0, len(ids), 128):
        b = torch.as_tensor(ids[lo:lo + 128])
        total += float(safe_loss(model(b), label_t[b], event[b], cfg.variant, reduction="sum"))
    return total / max(1, len(ids))
