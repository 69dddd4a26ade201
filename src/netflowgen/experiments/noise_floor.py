"""The simulated ISP's noise floor for next-minute prediction (Table 4's lower bound).

The simulator draws every node-minute from rates it knows: the node's scale, its daily and weekly
profile, a day factor, each event's envelope and every exporter outage (all fixed by the seed), then
per minute a rate jitter (gamma, mean 1), Poisson session counts, each session's sizes, ports and
peer, each attack record and 1:N packet sampling. No model can predict those per-minute draws from
the minutes before. An oracle that knows the fixed part still faces the per-minute randomness: its
best next-minute loss on a feature is the entropy of that feature's bin, given the fixed part.

`noise_floor` measures it by redrawing a split's minutes K times (`ChunkGenerator.chunk(replicate=k)`:
same plan, new per-minute draws), building their features with the original settings and binning
them with the model's cut-offs. Per (node, minute, feature), the K replicate bins estimate the
oracle's distribution. Two estimates bracket its entropy: the plug-in entropy (biased low by about
(bins - 1) / 2K nats; Miller-Madow adds that back) and the held-out cross-entropy of the *observed*
token under the replicates' distribution with one pseudo-count spread over the bins (the loss an
oracle built from K draws gets on the real targets; biased high). Both biases shrink as 1 / K, so
the result also holds them at K / 2 and extrapolates each (2 x(K) - x(K / 2)); where the two
extrapolations agree, the floor is known. The plug-in entropy at K stays a lower bound (in
expectation): the floor is at least that. Any model's loss on the same targets is at least the floor: minutes are independent given
the fixed part, so the history tells a model nothing the oracle does not already know.
"""

from __future__ import annotations

import tempfile
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from netflowgen.evaluate import GROUPS, Bigram, feature_group, score_model
from netflowgen.features import FeatureConfig, build_features
from netflowgen.schema import MS_PER_MINUTE, time_splits
from netflowgen.simulate.run import Simulation
from netflowgen.tokens import Binner, TokenData


@dataclass
class NoiseFloorConfig:
    """Settings of `netflowgen experiment noise-floor`."""

    replicates: int = 32  # K redraws of the split's minutes
    split: str = "val"  # val or test, as the model's own split fractions cut the table
    prior_count: float = 1.0  # pseudo-count of the held-out cross-entropy, spread evenly over the bins

    def validate(self) -> None:
        if self.replicates < 2:
            raise ValueError(f"replicates must be at least 2, got {self.replicates}")
        if self.split not in ("train", "val", "test"):
            raise ValueError(f"split must be train, val or test, got {self.split!r}")
        if self.prior_count <= 0:
            raise ValueError(f"prior_count must be > 0, got {self.prior_count}")


def replicate_flows(sim: Simulation, t0: int, t1: int, replicate: int | None) -> pa.Table:
    """FLOW_SCHEMA records starting in simulation minutes [t0, t1), drawn from the simulation's own
    chunks (replicate None: exactly the records `simulate` wrote) or redrawn (replicate k >= 0)."""
    parts = [sim.gen.chunk(i, a, b, replicate)[0].table()
             for i, (a, b) in enumerate(sim.chunk_bounds()) if a < t1 and b > t0]
    table = pa.concat_tables(parts)
    start_ms = int(sim.start.timestamp() * 1000)
    ts = pc.cast(table["ts_start"], pa.int64())
    keep = pc.and_(pc.greater_equal(ts, start_ms + t0 * MS_PER_MINUTE), pc.less(ts, start_ms + t1 * MS_PER_MINUTE))
    return table.filter(keep)


def feature_config_beside(features: Path, sim_dir: Path) -> FeatureConfig:
    """The settings a features table was built with (FEATURES.config.toml), its customers table
    taken from the simulation folder."""
    from netflowgen import config as C

    beside = features.with_name(features.name + ".config.toml")
    if not beside.exists():
        raise C.ConfigError(f"{beside}: not found; the noise floor rebuilds features with the table's own settings")
    data = tomllib.loads(beside.read_text(encoding="utf-8"))
    data.pop("inputs", None)
    cfg = C.from_dict(FeatureConfig, data, str(beside))
    cfg.customers = str(sim_dir / "customers.csv")
    return cfg


def replicate_tokens(sim: Simulation, t0: int, t1: int, replicate: int | None, fcfg: FeatureConfig,
                     binner: Binner, nodes: list[str], time_zone: str, work: Path,
                     bin_rows: dict[str, int] | None = None) -> np.ndarray:
    """(n_nodes, t1 - t0, F) uint8 tokens of a replicate of simulation minutes [t0, t1): its flows,
    features built with `fcfg`, each node binned with the binner row `bin_rows` gives it (default:
    its own, a training node's), in `nodes` order; a node or minute the replicate lacks is the
    missing token."""
    pq.write_table(replicate_flows(sim, t0, t1, replicate), work / "flows.parquet")
    build_features([work / "flows.parquet"], work / "features.parquet", fcfg)
    df = pl.read_parquet(work / "features.parquet").filter(pl.col("node").is_in(nodes))
    rows = {n: (bin_rows[n] if bin_rows is not None else binner.node_index[n]) for n in df["node"].unique().to_list()}
    tok = TokenData.build(df, binner, None, time_zone, {n: (r, r) for n, r in rows.items()})
    out = np.full((len(nodes), t1 - t0, len(binner.feature_names)), binner.missing_token, dtype=np.uint8)
    first = (tok.minute0_ms - int(sim.start.timestamp() * 1000)) // MS_PER_MINUTE - t0
    a, b = max(first, 0), min(first + tok.n_minutes, t1 - t0)
    where = [nodes.index(n) for n in tok.nodes]
    out[where, a:b] = tok.tokens[:, a - first:b - first]
    return out


@dataclass
class FloorEstimate:
    """Per-feature sums over the scored targets (P,): plug-in entropy, Miller-Madow entropy,
    held-out cross-entropy of the observed token, and the number of targets."""

    features: tuple[str, ...]
    plug_in: np.ndarray
    miller_madow: np.ndarray
    held_out: np.ndarray
    count: np.ndarray

    def summary(self, names: list[str] | None = None) -> dict[str, float]:
        idx = [i for i, n in enumerate(self.features) if names is None or n in names]
        n = max(float(self.count[idx].sum()), 1.0)
        return {"plug_in": float(self.plug_in[idx].sum()) / n, "miller_madow": float(self.miller_madow[idx].sum()) / n,
                "held_out": float(self.held_out[idx].sum()) / n, "targets": int(self.count[idx].sum())}


def floor_estimate(counts: np.ndarray, observed: np.ndarray, n_bins: int, prior_count: float,
                   features: tuple[str, ...]) -> FloorEstimate:
    """Entropy estimates from replicate bin counts `counts` (n, M, P, N) at the targets `observed`
    (n, M, P) marks with a reported token (< n_bins) where at least two replicates reported the minute."""
    k = counts.sum(-1, dtype=np.int64)  # (n, M, P) replicates that reported the minute
    ok = (observed < n_bins) & (k >= 2)
    c = counts.astype(np.float64)
    kk = np.maximum(k, 1)[..., None].astype(np.float64)
    p = c / kk
    plug = -(np.where(c > 0, p * np.log(np.where(c > 0, p, 1.0)), 0.0)).sum(-1)  # (n, M, P)
    mm = plug + ((c > 0).sum(-1) - 1) / (2.0 * np.maximum(k, 1))
    c_obs = np.take_along_axis(c, np.minimum(observed, n_bins - 1)[..., None].astype(np.int64), -1)[..., 0]
    held = -np.log((c_obs + prior_count / n_bins) / (k + prior_count))
    total = lambda x: np.where(ok, x, 0.0).sum((0, 1))  # noqa: E731 - (P,) sums over targets
    return FloorEstimate(features, total(plug), total(mm), total(held), ok.sum((0, 1)).astype(np.float64))


def noise_floor(sim_dir: str | Path, features: str | Path, binner: Binner, predicted: tuple[str, ...],
                split_fractions: tuple[float, float], time_zone: str, cfg: NoiseFloorConfig,
                model: Any = None, progress: Callable[[int], None] | None = None) -> dict[str, Any]:
    """The floor of a split's next-minute loss beside the two bigrams on the same targets.

    Parameters
    ----------
    sim_dir : the `netflowgen simulate` output (its config.toml fixes the plan).
    features : the node-minute table built from that simulation's flows (its settings file beside).
    binner, predicted, split_fractions, time_zone : the model's cut-offs, predicted features, train /
        validation fractions and time zone.
    model : a TrafficGPT over that binner, scored on the same targets (`score_model`), or None.
    progress : called with 1 after each replicate.

    Returns
    -------
    dict: `split` (name, minutes), `replicates`, `targets`, and per group and "all" the floor
    estimates (nats per target) and the bigrams' (and the model's) losses on exactly those targets.
    Targets are the split's reported minutes where at least two replicates reported the minute too;
    `dropped` counts the reported ones left out.
    """
    from netflowgen import config as C
    from netflowgen.simulate.config import SimConfig

    sim_dir, features = Path(sim_dir), Path(features)
    sim = Simulation(C.load(SimConfig, sim_dir / "config.toml"))
    fcfg = feature_config_beside(features, sim_dir)
    df = pl.read_parquet(features)
    bin_rows = binner.training_rows_of(df)  # unseen nodes: their nearest training node's cut-offs, as Table 4
    data = TokenData.build(df, binner, None, time_zone, {n: (r, r) for n, r in bin_rows.items()})
    lo, hi = time_splits(data.n_minutes, *split_fractions)[cfg.split]
    offset = (data.minute0_ms - int(sim.start.timestamp() * 1000)) // MS_PER_MINUTE  # sim minute of table minute 0
    if offset < 0 or offset + hi > sim.minutes:
        raise C.ConfigError(f"{features}: its minutes are not inside the simulation {sim_dir}")
    cols = np.array([data.feature_names.index(f) for f in predicted])
    observed = np.asarray(data.tokens[:, lo:hi][..., cols])  # (n, M, P)
    N = data.n_bins
    n, M, P = observed.shape
    counts = np.zeros((n, M, P, N), dtype=np.uint16)
    half: FloorEstimate | None = None
    flat_base = (np.arange(n * M * P, dtype=np.int64) * N).reshape(n, M, P)
    with tempfile.TemporaryDirectory(prefix="netflowgen-floor-") as tmp:
        for r in range(cfg.replicates):
            tok = replicate_tokens(sim, offset + lo, offset + hi, r, fcfg, binner, data.nodes, time_zone,
                                   Path(tmp), bin_rows)[..., cols]
            seen = tok < N
            idx = (flat_base + np.minimum(tok, N - 1))[seen]
            counts += np.bincount(idx, minlength=counts.size).reshape(counts.shape).astype(np.uint16)
            if r + 1 == cfg.replicates // 2:
                half = floor_estimate(counts, observed, N, cfg.prior_count, tuple(predicted))
            if progress is not None:
                progress(1)
    est = floor_estimate(counts, observed, N, cfg.prior_count, tuple(predicted))
    # the bigrams, fitted on the training range, scored on exactly the floor's targets
    targets = (observed < N) & (counts.sum(-1) >= 2)
    scored = np.where(targets, observed, N).astype(np.uint8)
    masked = TokenData(np.array(data.tokens), data.nodes, data.customers, data.node_customer, data.node_embed_row,
                       data.minute0_ms, data.feature_names, N, time_zone)
    masked.tokens[:, lo:hi][..., cols] = scored  # unscored targets count as missing for the bigrams
    result: dict[str, Any] = {"split": {"name": cfg.split, "first": lo, "end": hi}, "replicates": cfg.replicates,
                              "targets": int(targets.sum()), "dropped": int((observed < N).sum() - targets.sum())}
    tr = time_splits(data.n_minutes, *split_fractions)["train"]
    losses = {name: Bigram.fit(data, *tr, per_node=per).score(masked, lo, hi, predicted)
              for name, per in (("bigram_pooled", False), ("bigram_per_node", True))}
    if model is not None:
        losses["model"] = score_model(model, masked, lo, hi)
    groups = {g: [f for f in predicted if feature_group(f) == g] for g in GROUPS}
    for g, names in [("all", list(predicted))] + [(g, v) for g, v in groups.items() if v]:
        row: dict[str, Any] = dict(est.summary(names))
        if half is not None:  # Richardson: both biases shrink as 1/K, so 2 x(K) - x(K/2) removes most of them
            h = row["at_half"] = half.summary(names)
            row["extrapolated_plug_in"] = 2 * row["plug_in"] - h["plug_in"]
            row["extrapolated_held_out"] = 2 * row["held_out"] - h["held_out"]
        row.update({b: s.summary(names)["loss"] for b, s in losses.items()})
        result[g] = row
    return result


def floor_table(result: dict[str, Any]) -> str:
    """Markdown table: per group, the bigrams, the model (where scored), the floor (plug-in entropy
    at K: a lower bound; both extrapolations: the estimate), and how far below the stronger bigram
    the model is and the lower bound lies: the most any model could gain."""
    with_model = "model" in result["all"]
    extra = "extrapolated_plug_in" in result["all"]
    head = ("| group | pooled bigram | per-node bigram |" + (" model |" if with_model else "")
            + f" floor, lower bound (plug-in, K = {result['replicates']}) |"
            + (" floor (extrapolated plug-in) | floor (extrapolated held-out) |" if extra else "")
            + (" model vs stronger bigram |" if with_model else "") + " lower bound vs stronger bigram |")
    lines = [head, "|---|" + "---:|" * (head.count("|") - 2)]
    for g in ["all", *GROUPS]:
        if g not in result:
            continue
        r = result[g]
        best = min(r["bigram_pooled"], r["bigram_per_node"])
        cells = [g, f"{r['bigram_pooled']:.4f}", f"{r['bigram_per_node']:.4f}"]
        cells += [f"{r['model']:.4f}"] if with_model else []
        cells.append(f"{r['plug_in']:.4f}")
        cells += [f"{r['extrapolated_plug_in']:.4f}", f"{r['extrapolated_held_out']:.4f}"] if extra else []
        cells += [_relative(r["model"], best)] if with_model else []
        cells.append(_relative(r["plug_in"], best))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _relative(x: float, reference: float) -> str:
    return f"{(x - reference) / reference:+.1%}" if reference > 0 else ""
