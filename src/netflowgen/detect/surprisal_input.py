"""NetFlowGen+surprisal: the SAFE head reads the pre-trained model's surprisal beside its hidden states.

The frozen NetFlowGen head sees the standardized final hidden states h_t (d values), from which it
must itself learn how unexpected minute t is. The model already says so: the upward surprisal per
feature group S_g(t) of the zero-label detector (`cores.SurprisalCore`, SPEC 14) is -log p of the
observed bins under the prediction made at t - 1, where they are above the predicted mean. Here the
head's input at minute t is

    [ (h_t - mean) / std ,  c(z_t) ],   z_{t,g} = (S_g(t) - median_g(v)) / scale_g(v),
    c(z) = sign(z) log(1 + |z|)

(d + G values): mean / std of the hidden states as for NetFlowGen (train-split examples, no labels),
median / scale per node v and group g as the Surprisal detector calibrates them (median and
max(1.4826 MAD, floor) over the node's calibration range: the training range for training nodes,
the reference range for new ones), the log compression keeping a flood's z of a few hundred within
a few units of the standardized hidden states. Both inputs come from one backbone pass per window
(`TrafficGPT.hidden_and_logits`). The backbone stays frozen (the calibration is a statistic of it).
With `tail` (new detectors), S_g includes the Surprisal detector's top-bin tail (how far beyond its
top bin a feature lies: `cores.top_bin_tail`), so the head can tell a flood from a busy minute.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch

from netflowgen.detect.cores import (
    SURPRISAL_INPUT_METHODS,
    ScoringData,
    TransformerCore,
    calibrate_group_surprisal,
    cube_tail,
    group_membership,
    group_tail,
    surprisal_groups,
    upward_surprisal,
)
from netflowgen.detect.safe import SurvivalHead

SURPRISAL_INPUT_METHOD = SURPRISAL_INPUT_METHODS[0]


def compress(z: torch.Tensor) -> torch.Tensor:
    """sign(z) log(1 + |z|): monotone, ~z near 0, logarithmic for the z of a flood."""
    return torch.sign(z) * torch.log1p(z.abs())


class SurprisalInputCore(TransformerCore):
    """A frozen TrafficGPT backbone and a SAFE head on [standardized hidden states, compressed per-node
    z of the group surprisal] (module docstring). Intensity = hazard ("sum"). Per node: the
    transformer node map (embedding, cut-offs) and `surprisal_median` / `surprisal_scale` (n, G)."""

    def __init__(self, backbone: Any, binner: Any, head: SurvivalHead, mean: torch.Tensor, std: torch.Tensor,
                 backbone_config: dict[str, Any] | None = None, scale_floor: float = 0.5,
                 tail: bool = True) -> None:
        super().__init__(backbone, binner, head, mean, std, backbone_config)
        self.scale_floor = float(scale_floor)
        self.tail = bool(tail)
        self.groups = surprisal_groups(list(backbone.cfg.predicted_features))
        self._member = group_membership(self.groups, len(backbone.cfg.predicted_features))  # (P, G)

    @staticmethod
    def head_inputs(d_model: int, predicted: list[str] | tuple[str, ...]) -> int:
        """Width of the head's input: d_model + the number of surprisal groups."""
        return int(d_model) + len(surprisal_groups(list(predicted)))

    # --- calibration ----------------------------------------------------------------------------------
    def surprisal_of(self, x: Any, logits: torch.Tensor) -> torch.Tensor:
        """(B, T, G) float32 upward group surprisal (nats) of windows `x` from the backbone's logits on them."""
        return upward_surprisal(self.backbone, x, logits, self._member)

    @property
    def predicted(self) -> tuple[str, ...]:
        return tuple(self.backbone.cfg.predicted_features)

    def tail_of(self, x: Any, tail: Callable | None, rows: np.ndarray, starts: np.ndarray, length: int,
                params: np.ndarray) -> torch.Tensor | float:
        """(B, T, G) float32 group sums of the top-bin tail of windows `x` (0 without `tail`)."""
        if tail is None:
            return 0.0
        member = self._member.double().numpy()
        return torch.from_numpy(group_tail(tail, rows, starts, length, params, x.valid.numpy(), member)).float()

    @torch.no_grad()
    def group_surprisal(self, tokens: Any, rows: np.ndarray, starts: np.ndarray, length: int,
                        tail: Callable | None = None, params: np.ndarray | None = None) -> np.ndarray:
        """(B, length, G) upward surprisal per group of windows [start, start + length) (nats), with the
        top-bin tail `tail` (`cores.cube_tail`, rows `params` of its statistics) where given."""
        x = tokens.inputs(rows, starts, length)
        S = self.surprisal_of(x, self.backbone.eval()(x))
        return (S + self.tail_of(x, tail, rows, starts, length, np.asarray(params))).double().numpy()

    def fit_nodes(self, data: ScoringData, rows: np.ndarray, lo: int, hi: int) -> dict[str, np.ndarray]:
        """The transformer node map of cube rows `rows` and the median / scale (n, G) of their group
        surprisal over minutes [lo, hi), tokenized as scoring tokenizes them (own bins included)."""
        rows = np.asarray(rows, dtype=np.int64)
        out = super().fit_nodes(data, rows, lo, hi)
        tail_stats, med, scale = calibrate_group_surprisal(self, data, rows, lo, hi, out)
        return {**out, **tail_stats, "surprisal_median": med, "surprisal_scale": scale}

    def data_tail(self, data: ScoringData) -> Callable | None:
        """The top-bin tail of `data`'s cube with this core's statistics (None without `tail`)."""
        return cube_tail(data.cube, self.predicted, self.calib) if self.tail else None

    # --- hazards ---------------------------------------------------------------------------------------
    def surprisal_z(self, surprisal: torch.Tensor, calib: np.ndarray) -> torch.Tensor:
        """(B, T, G) group surprisal of windows of calibration rows `calib` (B,) -> (B, T, G) float32
        compressed per-node z, the head's last G inputs."""
        c = np.asarray(calib, dtype=np.int64)
        med = torch.from_numpy(np.asarray(self.calib["surprisal_median"], dtype=np.float32)[c])[:, None]  # (B, 1, G)
        scale = torch.from_numpy(np.asarray(self.calib["surprisal_scale"], dtype=np.float32)[c])[:, None]
        return compress((surprisal.float() - med) / scale)

    def hazards(self, hidden: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        """(B, T, d) hidden states and (B, T, G) `surprisal_z` -> (B, T) hazards."""
        assert z is not None, "NetFlowGen+surprisal: the head needs the surprisal z beside the hidden states"
        return self.head(torch.cat([(hidden.float() - self.mean) / self.std, z.float()], dim=-1))

    def window_fn(self, data: ScoringData, calib_rows: np.ndarray) -> Callable:
        """fn(rows, starts, length) -> (B, length) hazards: one backbone pass per window."""
        tail = self.data_tail(data)

        @torch.no_grad()
        def fn(rows: np.ndarray, starts: np.ndarray, length: int) -> np.ndarray:
            x = data.tokens.inputs(rows, starts, length)
            h, logits = self.backbone.eval().hidden_and_logits(x)
            c = calib_rows[rows]
            z = self.surprisal_z(self.surprisal_of(x, logits) + self.tail_of(x, tail, rows, starts, length, c), c)
            return self.hazards(h, z).double().numpy()
        return fn

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), "surprisal_scale_floor": self.scale_floor, "surprisal_tail": self.tail}


def load_surprisal_input_core(meta: dict[str, Any], tensors: dict[str, torch.Tensor], model: Any, binner: Any,
                              extra: dict[str, Any]) -> SurprisalInputCore:
    """The core of a saved NetFlowGen+surprisal detector (backbone already loaded)."""
    s = meta["core"]
    head = SurvivalHead(s["head_in"], s["head_hidden"], s["head_dropout"])
    head.load_state_dict({k[5:]: v for k, v in tensors.items() if k.startswith("head.")})
    return SurprisalInputCore(model, binner, head, tensors["hidden_mean"], tensors["hidden_std"], extra,
                              float(s["surprisal_scale_floor"]), bool(s.get("surprisal_tail", False)))
