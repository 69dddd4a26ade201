"""User-facing API over a pre-trained NetFlowGen model (weights as safetensors, config and binner as
JSON, no pickle).

    gen = NetFlowGen.from_pretrained("runs/pretrain")
    proba = gen.predict_proba(table)        # (nodes, T, P, n_bins) next-minute bin distributions
    h = gen.embed(table)                    # (nodes, T, d_model) hidden states
    future = gen.generate(table, steps=30)  # node-minute table of 30 sampled, decoded minutes

`table` is a node-minute table (SPEC 3, polars or pandas); the last `context` minutes of each node
are used. Unseen nodes reuse the cut-offs and embedding of their nearest training node (SPEC 6).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch

from netflowgen.model import TrafficGPT
from netflowgen.model.io import load_model, save_model, split_of
from netflowgen.tokens import Binner, ModelInputs, TokenData, time_index


def _as_polars(table: Any) -> pl.DataFrame:
    return table if isinstance(table, pl.DataFrame) else pl.from_pandas(table)


class NetFlowGen:
    """A pre-trained traffic model with its binner.

    Attributes
    ----------
    model : TrafficGPT
    binner : Binner
    config : dict   model arguments, vocabulary sizes, time zone, split fractions
    """

    def __init__(self, model: TrafficGPT, binner: Binner, config: dict[str, Any] | None = None) -> None:
        self.model, self.binner = model, binner
        self.config = dict(config or {})
        self.config.setdefault("time_zone", "UTC")

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    # --- persistence --------------------------------------------------------------------------
    def save_pretrained(self, directory: str | Path) -> Path:
        """Write model.safetensors, config.json and binner.json into `directory`."""
        return save_model(directory, self.model, self.binner, self.config)

    @classmethod
    def from_pretrained(cls, directory: str | Path, device: str | torch.device = "cpu") -> "NetFlowGen":
        """Load a model written by `save_pretrained` (or a `netflowgen pretrain` output folder);
        checked against this code's feature set and its own config before any weight is used."""
        model, binner, extra = load_model(directory, device)
        return cls(model, binner, extra)

    @property
    def split(self) -> list[float]:
        """The train / validation fractions the model was pre-trained with (SPEC 5)."""
        return split_of(self.config)

    # --- inputs -----------------------------------------------------------------------------------
    def tokenize(self, table: Any) -> TokenData:
        """Token data (in memory) of a node-minute table with this model's binner and time zone."""
        return TokenData.build(_as_polars(table), self.binner, None, self.config["time_zone"])

    def _window(self, data: TokenData, rows: np.ndarray | None = None) -> ModelInputs:
        """The last min(minutes, context) minutes of nodes `rows` (default all) as model inputs."""
        T = min(data.n_minutes, self.model.cfg.context)
        rows = np.arange(len(data.nodes)) if rows is None else rows
        return data.inputs(rows, np.full(len(rows), data.n_minutes - T), T).to(self.device)

    # --- inference ---------------------------------------------------------------------------------
    @torch.no_grad()
    def predict_proba(self, table: Any) -> np.ndarray:
        """Next-minute bin distributions for every node and minute of the table's last window.

        Parameters
        ----------
        table : node-minute table (polars or pandas), one or more nodes.

        Returns
        -------
        np.ndarray
            (n_nodes, T, P, n_bins) float32: entry [i, t, p] is the distribution of predicted
            feature p at minute t+1 of node i (nodes sorted by name, as `tokenize(table).nodes`);
            T = min(table minutes, context).
        """
        return self._batched(self.tokenize(table), lambda x: torch.softmax(self.model.eval()(x).float(), dim=-1))

    @torch.no_grad()
    def embed(self, table: Any) -> np.ndarray:
        """Final-layer hidden states (n_nodes, T, d_model), causal: minute t sees minutes <= t."""
        return self._batched(self.tokenize(table), lambda x: self.model.eval().hidden_states(x).float())

    def _batched(self, data: TokenData, fn: Any, batch_nodes: int = 64) -> np.ndarray:
        """fn over the last-window inputs of `batch_nodes` nodes at a time (activations bounded by
        the batch; the returned array itself holds every node)."""
        n = len(data.nodes)
        out: np.ndarray | None = None
        for lo in range(0, n, batch_nodes):
            rows = np.arange(lo, min(n, lo + batch_nodes))
            y = fn(self._window(data, rows)).cpu().numpy()
            if out is None:
                out = np.empty((n, *y.shape[1:]), dtype=y.dtype)
            out[rows] = y
        assert out is not None, "no nodes in the table"
        return out

    @torch.no_grad()
    def generate(self, table: Any, steps: int, temperature: float = 1.0, seed: int = 0) -> pl.DataFrame:
        """Sample `steps` future minutes per node and decode them to traffic values.

        Each sampled minute is fed back as input (predicted features must cover the input features);
        bins decode to the median training value of the bin (SPEC 6).

        Parameters
        ----------
        table : node-minute table; generation continues after its last minute.
        steps : int
            Minutes to generate.
        temperature : float
            Softmax temperature (<1 sharper, >1 flatter).
        seed : int
            Sampling seed.

        Returns
        -------
        pl.DataFrame
            node, customer, minute, missing (False), then the predicted features; steps rows per node.
        """
        cfg = self.model.cfg
        if not set(cfg.input_features) <= set(cfg.predicted_features):
            raise ValueError("generate needs every input feature to be predicted")
        data = self.tokenize(table)
        x = self._window(data)
        B = len(data.nodes)
        gen = torch.Generator(device="cpu").manual_seed(seed)
        pred_cols = torch.tensor([cfg.token_features.index(n) for n in cfg.predicted_features])
        tokens, times, valid = x.tokens, x.time, x.valid  # grow by one minute per step
        minute = data.minutes[-1]
        sampled = []
        for _ in range(steps):
            ctx = ModelInputs(tokens[:, -cfg.context:], x.node, x.customer, times[:, -cfg.context:],
                              valid[:, -cfg.context:])
            logits = self.model.eval()(ctx)[:, -1].float().cpu() / max(temperature, 1e-6)  # (B, P, N)
            probs = torch.softmax(logits, dim=-1)
            nxt = torch.multinomial(probs.view(-1, cfg.n_bins), 1, generator=gen).view(probs.shape[:2])  # (B, P)
            minute = minute + np.timedelta64(60_000, "ms")
            tok = torch.zeros(B, 1, len(cfg.token_features), dtype=torch.long)  # (B, 1, F)
            tok[:, 0, pred_cols] = nxt
            tim = torch.from_numpy(time_index(np.array([minute]), self.config["time_zone"]))  # (1, 4)
            tokens = torch.cat([tokens, tok.to(self.device)], dim=1)  # (B, T+1, F)
            times = torch.cat([times, tim.expand(B, 1, 4).to(self.device)], dim=1)  # (B, T+1, 4)
            valid = torch.cat([valid, torch.ones(B, 1, dtype=torch.bool, device=self.device)], dim=1)
            sampled.append((minute, nxt.numpy()))
        return self._decode_frame(data, sampled)

    def _decode_frame(self, data: TokenData, sampled: list[tuple[np.datetime64, np.ndarray]]) -> pl.DataFrame:
        cfg = self.model.cfg
        feat_idx = [self.binner.feature_names.index(n) for n in cfg.predicted_features]
        frames = []
        cust = [data.customers[c] for c in data.node_customer]
        for i, node in enumerate(data.nodes):
            bins = np.stack([s[1][i] for s in sampled])  # (steps, P)
            reps = self.binner.reps[data.node_embed_row[i]][feat_idx]  # (P, N)
            values = reps[np.arange(len(feat_idx))[None, :], bins]  # (steps, P)
            frames.append(pl.DataFrame({
                "node": [node] * len(sampled), "customer": [cust[i]] * len(sampled),
                "minute": pl.Series(np.array([s[0] for s in sampled], dtype="datetime64[ms]"))
                .dt.replace_time_zone("UTC"),
                "missing": [False] * len(sampled),
                **{n: values[:, j] for j, n in enumerate(cfg.predicted_features)}}))
        return pl.concat(frames)

