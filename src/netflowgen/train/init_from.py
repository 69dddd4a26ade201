"""`netflowgen pretrain --init MODEL`: continued pre-training on a new network's unlabelled minutes.

    netflowgen pretrain --features new.parquet --init runs/old --out runs/new [--preset demo ...]

The new model starts as the old one:
- binner: the old binner, extended (`Binner.extended`) with cut-offs fitted on the training range of
  the nodes it does not know. Known nodes keep their old cut-offs, so the tokens the model learned
  for them keep their meaning; their signatures stay too.
- architecture: the old model's config (`init_config`); a setting given on purpose (flag or --config
  key) that contradicts it is one InputError naming both values. Dropout may be changed.
- weights: copied (`init_from_model`); `node_emb` grows to the extended binner, each new node's
  row copied from its nearest old training node by signature (L1, as
  `netflowgen.detect.cores.nearest_training_nodes` picks), and `customer_emb` grows in the sorted
  customer vocabulary: known customers keep their rows, new ones start at the mean customer row.
Then `pretrain` trains as usual on the new table; the saved config.json records `init_from`, the
old model's `content_hash`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

import numpy as np
import polars as pl
import torch

from netflowgen.model.gpt import MODEL_CONFIGS, ModelConfig, TrafficGPT, model_config
from netflowgen.model.io import Pretrained, load_pretrained
from netflowgen.rejects import InputError
from netflowgen.tokens import Binner

if TYPE_CHECKING:
    from netflowgen.train.pretrain import PretrainConfig

# PretrainConfig keys that define the architecture (taken from the --init model)
ARCHITECTURE_KEYS = ("model", "n_layers", "n_heads", "d_model", "d_ff", "context", "n_bins", "predicted")
_SIZES = ("n_layers", "n_heads", "d_model", "d_ff")
_GROWN = ("node_emb.weight", "customer_emb.weight")


def load_init(directory: str | Path) -> Pretrained:
    """The model to start from, or a one-line InputError: no such folder, not a model folder,
    another feature set, weights that do not match their config, a binner that does not match."""
    d = Path(directory)
    if not d.is_dir():
        raise InputError(f"--init {d}: no such model folder (a `netflowgen pretrain --out` folder)")
    pre = load_pretrained(d)  # checks format, feature-set hash, weight names/shapes, finite values
    m, b = pre.model, pre.binner
    if b.n_bins != m.cfg.n_bins or tuple(b.feature_names) != tuple(m.cfg.token_features) \
            or len(b.customers) != m.n_customers:
        raise InputError(f"--init {d}: binner.json does not match the model (bins {b.n_bins} vs {m.cfg.n_bins}, "
                         f"{len(b.feature_names)} vs {len(m.cfg.token_features)} features, "
                         f"{len(b.customers)} vs {m.n_customers} customers)")
    return pre


def _model_name(mcfg: ModelConfig) -> str:
    """The named configuration whose input features the model has ("paper" first)."""
    names = ["paper", *(n for n in MODEL_CONFIGS if n != "paper")]
    return next((n for n in names if MODEL_CONFIGS[n].input_features == mcfg.input_features), "paper")


def init_config(cfg: PretrainConfig, old: ModelConfig, given: Iterable[str] = (), where: str = "--init"
                ) -> PretrainConfig:
    """`cfg` with its architecture settings taken from the model `old`.

    Parameters
    ----------
    cfg : PretrainConfig
        The resolved settings of the run.
    old : ModelConfig
        The --init model's configuration.
    given : Iterable[str]
        Keys the user set on purpose (flags, --config keys); one of `ARCHITECTURE_KEYS` among them
        whose value contradicts the model is an InputError naming both values. Others (preset or
        default values) are silently replaced. `dropout` given is kept (a training setting).
    where : str
        How messages name the model ("--init DIR").
    """
    from netflowgen.train.pretrain import predicted_features

    given = set(given)

    def refuse(key: str, value: Any, model_value: Any) -> InputError:
        return InputError(f"{where}: {key} = {value!r} contradicts the model's {key} = {model_value!r} "
                          "(with --init the architecture comes from the model: leave the setting out)")

    for key in ("context", "n_bins", *_SIZES):
        value = getattr(cfg, key)
        if key in given and value is not None and value != getattr(old, key):
            raise refuse(key, value, getattr(old, key))
    name = _model_name(old)
    if "model" in given:
        asked = model_config(cfg.model, **{k: getattr(cfg, k) for k in _SIZES
                                           if k in given and getattr(cfg, k) is not None})
        if asked.input_features != old.input_features:
            raise refuse("model", cfg.model, name)
        for key in _SIZES:
            if getattr(asked, key) != getattr(old, key):
                raise InputError(f"{where}: model = {cfg.model!r} has {key} = {getattr(asked, key)!r}, which "
                                 f"contradicts the model's {key} = {getattr(old, key)!r} (with --init the "
                                 "architecture comes from the model: leave the setting out)")
    base = model_config(cfg.model if "model" in given else name)
    if "predicted" in given:
        asked_pred = base.predicted_features if cfg.predicted == "all" else predicted_features(cfg.predicted)
        if asked_pred != old.predicted_features:
            raise refuse("predicted", cfg.predicted, ",".join(old.predicted_features)
                         if len(old.predicted_features) <= 8 else f"{len(old.predicted_features)} features")
    predicted = "all" if old.predicted_features == model_config(name).predicted_features \
        else ",".join(old.predicted_features)
    dropout = cfg.dropout if "dropout" in given and cfg.dropout is not None else old.dropout
    return dataclasses.replace(cfg, model=name, n_layers=old.n_layers, n_heads=old.n_heads, d_model=old.d_model,
                               d_ff=old.d_ff, dropout=dropout, context=old.context, n_bins=old.n_bins,
                               predicted=predicted)


def extend_binner(old: Binner, train: pl.DataFrame) -> Binner:
    """`old` with rows for the nodes of `train` (a node-minute table cut to its training range) that
    it does not know, their cut-offs fitted on their own minutes; known nodes keep theirs."""
    new_nodes = [n for n in train["node"].unique(maintain_order=True).to_list() if n not in old.node_index]
    if not new_nodes:
        return old
    fitted = Binner.fit(train.filter(pl.col("node").is_in(new_nodes)), n_bins=old.n_bins,
                        feature_names=old.feature_names)
    return old.extended(fitted) if fitted.nodes else old


def nearest_old_rows(old: Binner, signatures: np.ndarray) -> np.ndarray:
    """(K,) index of the old training node nearest (L1 over signatures, first on ties) to each of
    `signatures` (K, 5): the choice of `nearest_training_nodes` for an unseen node."""
    if len(signatures) == 0:
        return np.zeros(0, dtype=np.int64)
    return np.abs(old.signatures[None, :, :] - signatures[:, None, :]).sum(axis=2).argmin(axis=1)


@torch.no_grad()
def init_from_model(model: TrafficGPT, old: Binner, new: Binner, dropout: float | None = None) -> TrafficGPT:
    """A model for binner `new` (= `old` extended) that starts as `model`: every weight copied, the
    node and customer embeddings grown (new nodes: their nearest old node's row; new customers:
    the mean customer row). `dropout`, when given, replaces the model's."""
    n_old = len(old.nodes)
    if new.nodes[:n_old] != old.nodes or new.feature_names != old.feature_names or new.n_bins != old.n_bins:
        raise ValueError("the new binner must be the old one extended (same nodes first, bins, features)")
    mcfg = model.cfg if dropout is None else dataclasses.replace(model.cfg, dropout=dropout)
    grown = TrafficGPT(mcfg, len(new.nodes), len(new.customers))
    state = {k: v for k, v in model.state_dict().items() if k not in _GROWN}
    missing, unexpected = grown.load_state_dict(state, strict=False)
    if sorted(missing) != sorted(_GROWN) or unexpected:
        raise ValueError(f"weights do not fit: missing {missing}, unexpected {unexpected}")
    rows = model.node_emb.weight.detach().to(grown.node_emb.weight.device)
    grown.node_emb.weight[:n_old] = rows
    grown.node_emb.weight[n_old:] = rows[torch.from_numpy(nearest_old_rows(old, new.signatures[n_old:]))]
    cust = model.customer_emb.weight.detach().to(grown.customer_emb.weight.device)
    known = {c: i for i, c in enumerate(old.customers)}
    for j, c in enumerate(new.customers):
        grown.customer_emb.weight[j] = cust[known[c]] if c in known else cust.mean(0)
    return grown
