"""Per-(node, feature) discretization of traffic values into N bins (SPEC 6, paper Algorithm 1).

Bin 0 holds exactly zero traffic; non-zero values go to bins 1..N-1 by equal-frequency cut-offs
fitted on the training range of every (node, feature) separately. A reserved token, `n_bins`
(`MISSING_TOKEN` for the default N = 10), marks minutes the exporter did not report.

Algorithm 1 with duplicate refinement, on the sorted non-zero training values v[0..n-1]:
    delta = round(n / (N-1));  tentative c_i = v[i * delta - 1]  (i = 1..N-1, clipped to v[n-1])
    for j = 2..N-1: if c_j == c_{j-1} (a heavy repeated value swallowed the bin):
        m = first index with v[m] > c_{j-1}   (none left: stop, the top bins stay unused)
        re-split v[m..n-1] evenly over bins j..N-1: delta' = round((n-m) / (N-j)),
        c_{j+k} = v[m + (k+1) * delta' - 1]  (k = 0..N-1-j)
So cut-offs are strictly increasing and no bin is dropped while distinct values remain. Values above
the last cut-off go to the top used bin. Decoding a bin gives the median of its training values.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np
import polars as pl

from netflowgen.schema import FEATURE_NAMES, FEATURE_SET_HASH

MISSING_TOKEN: int = 10  # == n_bins for the default N = 10; a Binner's own is `binner.missing_token`
_FORMAT = "netflowgen.binner/1"


def _round_half_up(x: float) -> int:
    return int(np.floor(x + 0.5))


def algorithm1_cutoffs(nonzero_sorted: np.ndarray, n_bins: int) -> np.ndarray:
    """Cut-offs c_1 < ... < c_k (k <= n_bins - 1) of one series (paper Algorithm 1, SPEC 6).

    Parameters
    ----------
    nonzero_sorted : np.ndarray
        (n,) the non-zero training values of one (node, feature), sorted ascending.
    n_bins : int
        N, the number of bins including bin 0 (exact zero).

    Returns
    -------
    np.ndarray
        (k,) strictly increasing cut-offs; k < N-1 only when fewer distinct values exist.
    """
    v = nonzero_sorted
    n = len(v)
    n_cuts = n_bins - 1
    if n == 0:
        return np.empty(0, dtype=np.float64)
    delta = max(1, _round_half_up(n / n_cuts))
    cuts = [v[min(i * delta, n) - 1] for i in range(1, n_cuts + 1)]
    j = 1  # 0-based: cuts[j] is c_{j+1}
    while j < n_cuts:
        if cuts[j] <= cuts[j - 1]:
            m = int(np.searchsorted(v, cuts[j - 1], side="right"))
            if m >= n:  # no larger distinct value: the remaining top bins stay unused
                return np.asarray(cuts[:j], dtype=np.float64)
            left = n_cuts - j  # bins j+1..N-1 (1-based) share the values v[m:]
            step = max(1, _round_half_up((n - m) / left))
            for k in range(left):
                cuts[j + k] = v[min(m + (k + 1) * step, n) - 1]
        j += 1
    return np.asarray(cuts, dtype=np.float64)


def _bin_medians(nonzero_sorted: np.ndarray, cuts: np.ndarray, n_bins: int) -> np.ndarray:
    """(N,) representative value per bin: 0 for bin 0, the median training value of used bins, the
    top used bin's value for unused bins (the bins `transform` can never produce)."""
    reps = np.zeros(n_bins, dtype=np.float64)
    if len(cuts) == 0:
        return reps
    bins = _assign(nonzero_sorted[None, :], cuts[None, :], np.array([len(cuts)]))[0]
    for b in range(1, len(cuts) + 1):
        vals = nonzero_sorted[bins == b]
        reps[b] = float(np.median(vals)) if len(vals) else cuts[b - 1]
    reps[len(cuts) + 1:] = reps[len(cuts)]
    return reps


def _assign(x: np.ndarray, cuts: np.ndarray, n_used: np.ndarray) -> np.ndarray:
    """Bins of values x (R, T) given per-row cut-offs (R, K) padded with +inf and used counts (R,).

    bin = 0 for x <= 0, else the smallest i with x <= c_i, capped at the top used bin (so values
    beyond the training maximum land in the top used bin; with no cut-off at all, in bin 1).
    """
    above = (x[:, :, None] > cuts[:, None, :]).sum(axis=-1)  # (R, T) cut-offs strictly below x
    top = np.maximum(n_used, 1)[:, None]  # (R, 1)
    return np.where(x > 0, np.minimum(1 + above, top), 0)


def node_signature(values: np.ndarray) -> np.ndarray:
    """The 5-vector that maps an unseen node to a training node (SPEC 6, paper section 7.1).

    Parameters
    ----------
    values : np.ndarray
        (T, F) traffic values of one node over time (missing minutes removed).

    Returns
    -------
    np.ndarray
        (5,) mean over features of (min, p25, p50, p75, max) of the per-feature standardized series.
    """
    if len(values) == 0:
        return np.zeros(5)
    mu = values.mean(axis=0)
    sd = values.std(axis=0)
    z = (values - mu) / np.where(sd > 0, sd, 1.0)  # constant features become all zeros
    q = np.quantile(z, [0.0, 0.25, 0.5, 0.75, 1.0], axis=0)  # (5, F)
    return q.mean(axis=1)


class Binner:
    """Per-(node, feature) cut-offs and bin representatives, fitted on the training range.

    Attributes
    ----------
    nodes : list[str]            training nodes, in fitting order (the model's node vocabulary)
    node_customer : list[str]    customer of each training node
    feature_names : tuple[str]   the F features binned, in schema order
    cuts : np.ndarray            (n_nodes, F, N-1) cut-offs, padded with +inf past `n_used`
    n_used : np.ndarray          (n_nodes, F) number of cut-offs in use (bins 1..n_used)
    reps : np.ndarray            (n_nodes, F, N) representative value per bin (decoding)
    pooled : np.ndarray          (F,) True where a node had no non-zero value and uses pooled cuts
    signatures : np.ndarray      (n_nodes, 5) unseen-node mapping vectors
    """

    def __init__(self, n_bins: int, feature_names: Sequence[str], nodes: Sequence[str],
                 node_customer: Sequence[str], cuts: np.ndarray, n_used: np.ndarray,
                 reps: np.ndarray, signatures: np.ndarray, pooled_nodes: np.ndarray) -> None:
        self.n_bins = int(n_bins)
        self.feature_names = tuple(feature_names)
        self.nodes = list(nodes)
        self.node_customer = list(node_customer)
        self.cuts, self.n_used, self.reps = cuts, n_used, reps
        self.signatures = signatures
        self.pooled_nodes = pooled_nodes  # (n_nodes, F) bool: cut-offs came from the pooled fallback
        self.node_index = {n: i for i, n in enumerate(self.nodes)}

    @property
    def missing_token(self) -> int:
        """Token of a missing minute (== n_bins): never produced by `transform` for reported data."""
        return self.n_bins

    @property
    def customers(self) -> list[str]:
        """Sorted customer vocabulary of the training nodes."""
        return sorted(set(self.node_customer))

    # --- fitting ----------------------------------------------------------------------------------
    @classmethod
    def fit(cls, features: pl.DataFrame, n_bins: int = 10,
            feature_names: Sequence[str] = FEATURE_NAMES) -> "Binner":
        """Fit cut-offs on a node-minute table restricted to the training range.

        Parameters
        ----------
        features : pl.DataFrame
            Node-minute table (node, customer, minute, missing, features); missing minutes are ignored.
        n_bins : int
            N, bins per feature including bin 0 (exact zero).
        feature_names : Sequence[str]
            The features to bin (a subset of the schema, in schema order).

        Returns
        -------
        Binner
        """
        if n_bins < 2 or n_bins > 255:
            raise ValueError(f"n_bins must be in 2..255 (uint8 tokens with a missing token), got {n_bins}")
        names = list(feature_names)
        df = features.sort(["node", "minute"])
        if "missing" in df.columns:
            df = df.filter(~pl.col("missing"))
        first = df.group_by("node", maintain_order=True).agg(pl.col("customer").first())
        nodes = first["node"].to_list()
        node_customer = first["customer"].to_list()
        counts = df.group_by("node", maintain_order=True).len()["len"].to_numpy()
        starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        n_nodes, n_f, k = len(nodes), len(names), n_bins - 1
        cuts = np.full((n_nodes, n_f, k), np.inf)
        n_used = np.zeros((n_nodes, n_f), dtype=np.int64)
        reps = np.zeros((n_nodes, n_f, n_bins))
        pooled_nodes = np.zeros((n_nodes, n_f), dtype=bool)
        for f, name in enumerate(names):
            col = df[name].to_numpy().astype(np.float64, copy=False)
            pooled_vals = np.sort(col[col > 0])
            pooled_cuts = algorithm1_cutoffs(pooled_vals, n_bins)
            pooled_reps = _bin_medians(pooled_vals, pooled_cuts, n_bins)
            for i in range(n_nodes):
                x = col[starts[i]:starts[i + 1]]
                v = np.sort(x[x > 0])
                if len(v) == 0:  # no non-zero training value: the feature's pooled cut-offs
                    c, r = pooled_cuts, pooled_reps
                    pooled_nodes[i, f] = True
                else:
                    c = algorithm1_cutoffs(v, n_bins)
                    r = _bin_medians(v, c, n_bins)
                cuts[i, f, :len(c)] = c
                n_used[i, f] = len(c)
                reps[i, f] = r
        values = df.select(names).to_numpy()
        signatures = np.stack([node_signature(values[starts[i]:starts[i + 1]]) for i in range(n_nodes)]) \
            if n_nodes else np.zeros((0, 5))
        return cls(n_bins, names, nodes, node_customer, cuts, n_used, reps, signatures, pooled_nodes)

    # --- unseen nodes -------------------------------------------------------------------------
    def nearest_node(self, values: np.ndarray) -> int:
        """Index of the training node closest (L1 over `node_signature`) to an unseen node.

        Parameters
        ----------
        values : np.ndarray
            (T, F) the unseen node's values over time, features in `feature_names` order.
        """
        sig = node_signature(values)
        return int(np.abs(self.signatures - sig).sum(axis=1).argmin())

    def training_rows_of(self, features: pl.DataFrame) -> dict[str, int]:
        """Training-node index for every node of a table: itself if seen, else its nearest neighbour."""
        out: dict[str, int] = {}
        for (node,), part in features.group_by(["node"], maintain_order=True):
            if node in self.node_index:
                out[node] = self.node_index[node]
            else:
                if "missing" in part.columns:
                    part = part.filter(~pl.col("missing"))
                out[node] = self.nearest_node(part.select(self.feature_names).to_numpy())
        return out

    def extended(self, other: "Binner") -> "Binner":
        """This binner with `other`'s node rows appended (same bins and features): cut-offs fitted
        on new nodes' own data, beside the training nodes'."""
        if other.n_bins != self.n_bins or other.feature_names != self.feature_names:
            raise ValueError("binners differ in bins or features")
        cat = np.concatenate
        return Binner(self.n_bins, self.feature_names, self.nodes + other.nodes,
                      self.node_customer + other.node_customer, cat([self.cuts, other.cuts]),
                      cat([self.n_used, other.n_used]), cat([self.reps, other.reps]),
                      cat([self.signatures, other.signatures]), cat([self.pooled_nodes, other.pooled_nodes]))

    # --- transform / decode ------------------------------------------------------------------
    def transform_values(self, node_row: int, values: np.ndarray) -> np.ndarray:
        """Bins of one node's values with the cut-offs of training node `node_row`.

        Parameters
        ----------
        node_row : int
            Index into `nodes` (use `training_rows_of` to map unseen nodes).
        values : np.ndarray
            (T, F) traffic values, features in `feature_names` order.

        Returns
        -------
        np.ndarray
            (T, F) uint8 bins in 0..n_bins-1.
        """
        x = np.ascontiguousarray(np.asarray(values, dtype=np.float64).T)  # (F, T)
        b = _assign(x, self.cuts[node_row], self.n_used[node_row])  # (F, T)
        return b.T.astype(np.uint8)

    def transform(self, features: pl.DataFrame, rows: dict[str, int] | None = None) -> np.ndarray:
        """Bins of every row of a node-minute table, rows in the table's order.

        Missing minutes (column `missing` true) get `missing_token`; `rows` maps each node to the
        binner row whose cut-offs it uses (default `training_rows_of`: unseen nodes use their nearest
        training node's).

        Returns
        -------
        np.ndarray
            (rows, F) uint8 tokens.
        """
        out = np.empty((features.height, len(self.feature_names)), dtype=np.uint8)
        rows = self.training_rows_of(features) if rows is None else rows
        node_col = features["node"].to_numpy()
        values = features.select(self.feature_names).to_numpy()
        order = np.argsort(node_col, kind="stable")
        sorted_nodes = node_col[order]
        bounds = np.flatnonzero(sorted_nodes[1:] != sorted_nodes[:-1]) + 1
        for idx in np.split(order, bounds):
            if len(idx):
                out[idx] = self.transform_values(rows[node_col[idx[0]]], values[idx])
        if "missing" in features.columns:
            out[features["missing"].to_numpy()] = self.missing_token
        return out

    def decode(self, node: str | int, bins: np.ndarray) -> np.ndarray:
        """Representative traffic values of bins (the median training value of each bin).

        Parameters
        ----------
        node : str | int
            Training node name or index (map unseen nodes with `training_rows_of` first).
        bins : np.ndarray
            (..., F) tokens; `missing_token` decodes to NaN.

        Returns
        -------
        np.ndarray
            (..., F) float64 values.
        """
        i = self.node_index[node] if isinstance(node, str) else int(node)
        b = np.asarray(bins).astype(np.int64)
        f_idx = np.broadcast_to(np.arange(len(self.feature_names)), b.shape)
        missing = b >= self.n_bins
        vals = self.reps[i][f_idx, np.minimum(b, self.n_bins - 1)]
        return np.where(missing, np.nan, vals)

    # --- serialization (JSON, no pickle) -----------------------------------------------------
    def to_dict(self) -> dict:
        return {
            "format": _FORMAT, "n_bins": self.n_bins, "feature_set_hash": FEATURE_SET_HASH,
            "feature_names": list(self.feature_names), "nodes": self.nodes,
            "node_customer": self.node_customer,
            # ragged lists: only the used cut-offs (JSON has no infinity)
            "cuts": [[self.cuts[i, f, :self.n_used[i, f]].tolist() for f in range(len(self.feature_names))]
                     for i in range(len(self.nodes))],
            "reps": self.reps.tolist(), "signatures": self.signatures.tolist(),
            "pooled_nodes": self.pooled_nodes.astype(int).tolist(),
        }

    @classmethod
    def from_dict(cls, d: dict) -> "Binner":
        if d.get("format") != _FORMAT:
            raise ValueError(f"not a netflowgen binner (format {d.get('format')!r})")
        if d.get("feature_set_hash") != FEATURE_SET_HASH:
            raise ValueError(f"binner built for feature set {d.get('feature_set_hash')!r}, this netflowgen has "
                             f"{FEATURE_SET_HASH!r}")
        n_bins, names = int(d["n_bins"]), list(d["feature_names"])
        n_nodes, n_f = len(d["nodes"]), len(names)
        if not 2 <= n_bins <= 255 or not set(names) <= set(FEATURE_NAMES):
            raise ValueError(f"n_bins {n_bins} or feature names out of range")
        if len(d["cuts"]) != n_nodes or any(len(per_node) != n_f for per_node in d["cuts"]) \
                or len(d["node_customer"]) != n_nodes:
            raise ValueError(f"cut-offs or customers do not match {n_nodes} nodes x {n_f} features")
        cuts = np.full((n_nodes, n_f, n_bins - 1), np.inf)
        n_used = np.zeros((n_nodes, n_f), dtype=np.int64)
        for i, per_node in enumerate(d["cuts"]):
            for f, c in enumerate(per_node):
                if len(c) > n_bins - 1 or any(b <= a for a, b in zip(c, c[1:])):
                    raise ValueError(f"node {i}, feature {names[f]}: cut-offs not strictly increasing "
                                     f"or more than {n_bins - 1}")
                cuts[i, f, :len(c)] = c
                n_used[i, f] = len(c)
        reps = np.asarray(d["reps"], dtype=np.float64).reshape(n_nodes, n_f, n_bins)
        sig = np.asarray(d["signatures"], dtype=np.float64).reshape(n_nodes, 5)
        pooled = np.asarray(d["pooled_nodes"], dtype=bool).reshape(n_nodes, n_f)
        return cls(n_bins, names, d["nodes"], d["node_customer"], cuts, n_used, reps, sig, pooled)

    def save(self, path: str | Path) -> Path:
        """Write the binner as JSON (floats round-trip exactly)."""
        p = Path(path)
        p.write_text(json.dumps(self.to_dict()))
        return p

    @classmethod
    def load(cls, path: str | Path) -> "Binner":
        """Read a binner written by `save`."""
        return cls.from_dict(json.loads(Path(path).read_text()))
