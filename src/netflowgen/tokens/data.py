"""Token data: the node-minute table as compact uint8 tokens, memory-mapped, plus the indexes the
model needs (nodes, customers, minutes, time-of-day features), time splits and windows (SPEC 4-5).

On disk (`TokenData.build(..., out_dir)`):
    out_dir/tokens.u8     raw uint8 array (n_nodes, n_minutes, F), C order, memory-mapped on load
    out_dir/index.json    nodes, customers, minute range, features, n_bins, time zone, node mapping
Missing minutes carry the reserved token `n_bins` in every feature, so they stay distinguishable
from zero traffic (bin 0); `ModelInputs.valid` is False there and the loss never targets them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import polars as pl
import torch

from netflowgen.schema import DEFAULT_SPLIT, FEATURE_SET_HASH, time_splits  # noqa: F401  (re-exported)
from netflowgen.tokens.binner import Binner

_FORMAT = "netflowgen.tokens/1"
TIME_FIELDS: tuple[tuple[str, int], ...] = (("minute_of_hour", 60), ("hour_of_day", 24),
                                            ("day_of_week", 7), ("day_of_month", 31))  # 122 one-hots


@dataclass
class ModelInputs:
    """A batch of windows, all torch tensors (the model's only input type).

    tokens   : LongTensor (B, T, F)  bins 0..n_bins-1, or n_bins at missing minutes
    node     : LongTensor (B,)       index into the model's node vocabulary (training nodes)
    customer : LongTensor (B,)       index into the model's customer vocabulary
    time     : LongTensor (B, T, 4)  minute-of-hour 0..59, hour 0..23, day-of-week 0..6 (Monday 0),
                                     day-of-month 0..30, in the data's time zone
    valid    : BoolTensor (B, T)     False where the minute is missing
    """

    tokens: torch.Tensor
    node: torch.Tensor
    customer: torch.Tensor
    time: torch.Tensor
    valid: torch.Tensor

    def to(self, device: torch.device | str) -> "ModelInputs":
        nb = torch.device(device).type == "cuda"
        return ModelInputs(*(t.to(device, non_blocking=nb) for t in
                             (self.tokens, self.node, self.customer, self.time, self.valid)))

    def __getitem__(self, idx: slice | torch.Tensor) -> "ModelInputs":
        """Rows `idx` of the batch (used to split a global batch between DDP ranks)."""
        return ModelInputs(self.tokens[idx], self.node[idx], self.customer[idx], self.time[idx],
                           self.valid[idx])

    def __len__(self) -> int:
        return int(self.tokens.shape[0])


def time_index(minutes: np.ndarray, time_zone: str = "UTC") -> np.ndarray:
    """Calendar fields of minute timestamps in a time zone.

    Parameters
    ----------
    minutes : np.ndarray
        (M,) datetime64[ms] UTC minute starts.
    time_zone : str
        IANA zone name (SPEC 4: configurable, UTC by default).

    Returns
    -------
    np.ndarray
        (M, 4) int64: minute-of-hour, hour-of-day, day-of-week (Monday 0), day-of-month - 1.
    """
    s = pl.Series("m", minutes.astype("datetime64[ms]")).dt.replace_time_zone("UTC") \
        .dt.convert_time_zone(time_zone)
    return np.stack([s.dt.minute().to_numpy(), s.dt.hour().to_numpy(), s.dt.weekday().to_numpy() - 1,
                     s.dt.day().to_numpy() - 1], axis=1).astype(np.int64)


def random_windows(rng: np.random.Generator, n_nodes: int, lo: int, hi: int, length: int,
                   count: int) -> tuple[np.ndarray, np.ndarray]:
    """`count` random windows of `length` minutes inside minutes [lo, hi), from random nodes.

    Returns
    -------
    tuple[np.ndarray, np.ndarray]
        node rows (count,) and window starts (count,).
    """
    if hi - lo < length:
        raise ValueError(f"range of {hi - lo} minutes is shorter than a window of {length}")
    return rng.integers(0, n_nodes, count), rng.integers(lo, hi - length + 1, count)


def scoring_windows(lo: int, hi: int, length: int, n_minutes: int) -> list[tuple[int, int, int]]:
    """Windows that score every prediction whose target minute lies in [lo, hi) exactly once.

    Position t of a window predicts minute t+1 (so the window's last position predicts nothing).
    Each window scores a stretch of `length // 2` positions that starts `length - 1 - length // 2`
    positions into it, so every scored prediction sees about half a window of context or more
    (earlier splits may serve as context, never as targets).

    Returns
    -------
    list[tuple[int, int, int]]
        (window start, first scored position, one past the last scored position), absolute minutes.
    """
    length = min(length, n_minutes)
    stride = max(1, length // 2)
    out = []
    p = max(lo - 1, 0)
    while p < hi - 1:
        q = min(p + stride, hi - 1)
        start = min(max(0, p - (length - 1 - stride)), n_minutes - length)  # last position has no target
        out.append((start, p, q))
        p = q
    return out


class TokenData:
    """Tokens (n_nodes, n_minutes, F) uint8 plus indexes; see the module docstring for the layout."""

    def __init__(self, tokens: np.ndarray, nodes: Sequence[str], customers: Sequence[str],
                 node_customer: np.ndarray, node_embed_row: np.ndarray, minute0_ms: int,
                 feature_names: Sequence[str], n_bins: int, time_zone: str = "UTC") -> None:
        self.tokens = tokens  # (n_nodes, n_minutes, F) uint8
        self.nodes = list(nodes)
        self.customers = list(customers)  # the model's customer vocabulary
        self.node_customer = np.asarray(node_customer, dtype=np.int64)  # (n_nodes,) into customers
        self.node_embed_row = np.asarray(node_embed_row, dtype=np.int64)  # (n_nodes,) row of the model's node embedding
        self.minute0_ms = int(minute0_ms)
        self.feature_names = tuple(feature_names)
        self.n_bins = int(n_bins)
        self.time_zone = time_zone
        self.minutes = (np.datetime64(self.minute0_ms, "ms")
                        + np.arange(tokens.shape[1]) * np.timedelta64(60_000, "ms"))
        self.time = time_index(self.minutes, time_zone)  # (n_minutes, 4)

    @property
    def n_minutes(self) -> int:
        return int(self.tokens.shape[1])

    @property
    def missing_token(self) -> int:
        return self.n_bins

    # --- building ---------------------------------------------------------------------------------
    @classmethod
    def build(cls, features: str | Path | pl.DataFrame, binner: Binner, out_dir: str | Path | None,
              time_zone: str = "UTC", node_map: dict[str, tuple[int, int]] | None = None,
              customers: list[str] | None = None) -> "TokenData":
        """Tokenize a node-minute table with a fitted binner.

        Parameters
        ----------
        features : path to the node-minute Parquet file, or the table itself.
        binner : Binner
            Fitted on the training range; unseen nodes are mapped to their nearest training node.
        out_dir : path or None
            Where to write tokens.u8 and index.json; None keeps everything in memory.
        time_zone : str
            Zone of the time-of-day features.
        node_map : dict or None
            node -> (binner row whose cut-offs bin it, training node whose embedding it uses); None:
            training nodes are themselves, unseen ones map to their nearest training node over the
            whole table (`Binner.node_rows`). Detectors decide it once on a reference range.
        customers : list or None
            The model's customer vocabulary (default the binner's). A binner extended with rows
            for new nodes (own cut-offs) may hold customers the model has no embedding for: give
            the model's, and a node of an unknown customer takes its embedding node's customer.

        Returns
        -------
        TokenData
            Absent (node, minute) rows count as missing.
        """
        df = features if isinstance(features, pl.DataFrame) else pl.read_parquet(features)
        df = df.sort(["node", "minute"])
        minute_ms = df["minute"].dt.epoch("ms").to_numpy()
        m0, m1 = int(minute_ms.min()), int(minute_ms.max())
        n_minutes = (m1 - m0) // 60_000 + 1
        nodes = df["node"].unique(maintain_order=True).to_list()
        node_idx = {n: i for i, n in enumerate(nodes)}
        shape = (len(nodes), n_minutes, len(binner.feature_names))
        if out_dir is None:
            tokens = np.full(shape, binner.missing_token, dtype=np.uint8)
        else:
            out = Path(out_dir)
            out.mkdir(parents=True, exist_ok=True)
            tokens = np.memmap(out / "tokens.u8", dtype=np.uint8, mode="w+", shape=shape)
            tokens[:] = binner.missing_token
        rows = df["node"].replace_strict(node_idx, return_dtype=pl.Int64).to_numpy()
        cols = (minute_ms - m0) // 60_000
        if node_map is None:
            node_map = {n: (r, r) for n, r in binner.training_rows_of(df).items()}
        tokens[rows, cols] = binner.transform(df, {n: b for n, (b, _) in node_map.items()})
        emb = {n: e for n, (_, e) in node_map.items()}
        node_embed_row = np.array([emb[n] for n in nodes], dtype=np.int64)
        customers = list(customers) if customers is not None else binner.customers
        cust_idx = {c: i for i, c in enumerate(customers)}
        first_customer = dict(df.group_by("node", maintain_order=True).agg(pl.col("customer").first()).iter_rows())
        node_customer = np.array([cust_idx.get(first_customer[n],
                                               cust_idx[binner.node_customer[emb[n]]]) for n in nodes])
        data = cls(tokens, nodes, customers, node_customer, node_embed_row, m0, binner.feature_names,
                   binner.n_bins, time_zone)
        if isinstance(tokens, np.memmap):
            tokens.flush()
        if out_dir is not None:
            (Path(out_dir) / "index.json").write_text(json.dumps(data._index()))
        return data

    def _index(self) -> dict:
        return {"format": _FORMAT, "shape": list(self.tokens.shape), "nodes": self.nodes,
                "customers": self.customers, "node_customer": self.node_customer.tolist(),
                "node_embed_row": self.node_embed_row.tolist(), "minute0_ms": self.minute0_ms,
                "feature_names": list(self.feature_names), "feature_set_hash": FEATURE_SET_HASH,
                "n_bins": self.n_bins, "time_zone": self.time_zone}

    @classmethod
    def load(cls, directory: str | Path, time_zone: str | None = None) -> "TokenData":
        """Open token data written by `build` (tokens memory-mapped read-only); checked against this
        code's feature-set hash and, when given, the expected time zone."""
        d = Path(directory)
        idx = json.loads((d / "index.json").read_text())
        if idx.get("format") != _FORMAT:
            raise ValueError(f"{d}: not netflowgen token data")
        if idx.get("feature_set_hash") != FEATURE_SET_HASH:
            raise ValueError(f"{d}: feature-set hash mismatch: built with {idx.get('feature_set_hash')!r}, "
                             f"this netflowgen has {FEATURE_SET_HASH!r}")
        if time_zone is not None and idx.get("time_zone") != time_zone:
            raise ValueError(f"{d}: time zone mismatch: built with {idx.get('time_zone')!r}, given {time_zone!r}")
        tokens = np.memmap(d / "tokens.u8", dtype=np.uint8, mode="r", shape=tuple(idx["shape"]))
        embed = idx.get("node_embed_row", idx.get("node_embed"))  # (the key's name before 2026-12)
        return cls(tokens, idx["nodes"], idx["customers"], np.array(idx["node_customer"]), np.array(embed),
                   idx["minute0_ms"], idx["feature_names"], idx["n_bins"], idx["time_zone"])

    # --- batches ----------------------------------------------------------------------------------
    def inputs(self, node_rows: np.ndarray, starts: np.ndarray, length: int) -> ModelInputs:
        """Windows [start, start + length) of the given nodes as a model batch.

        Parameters
        ----------
        node_rows : np.ndarray
            (B,) indexes into `nodes`.
        starts : np.ndarray
            (B,) first minute index of each window.
        length : int
            T, minutes per window.
        """
        node_rows = np.asarray(node_rows, dtype=np.int64)
        span = np.asarray(starts, dtype=np.int64)[:, None] + np.arange(length)  # (B, T)
        tok = torch.from_numpy(np.ascontiguousarray(self.tokens[node_rows[:, None], span]))  # (B, T, F)
        tok = tok.long()
        return ModelInputs(
            tokens=tok,
            node=torch.from_numpy(self.node_embed_row[node_rows]),
            customer=torch.from_numpy(self.node_customer[node_rows]),
            time=torch.from_numpy(self.time[span]),  # (B, T, 4)
            valid=tok[..., 0] != self.missing_token,  # (B, T)
        )
