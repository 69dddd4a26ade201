"""Apply a fine-tuned NetFlowGen detector (a `netflowgen finetune --method NetFlowGen` output) to a
node-minute table: survival curves and detection minutes per node (`NetFlowGen.detect`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch

from netflowgen.detect.metrics import detect as first_below
from netflowgen.detect.safe import SurvivalHead, survival


def load_detector(directory: str | Path, d_model: int) -> tuple[SurvivalHead, dict[str, Any]]:
    """The SAFE head and its settings (theta, length, warmup) written by `netflowgen finetune`."""
    from safetensors.torch import load_file

    d = Path(directory)
    info = json.loads((d / "detector.json").read_text())
    if info.get("method") != "NetFlowGen":
        raise ValueError(f"{d}: a {info.get('method')} detector; NetFlowGen.detect needs a frozen-backbone "
                         "NetFlowGen head (netflowgen finetune --method NetFlowGen)")
    head = SurvivalHead(d_model, info["head_hidden"], info["head_dropout"])
    head.load_state_dict(load_file(str(d / "detector.safetensors")))
    return head.eval(), info


@torch.no_grad()
def detect_table(gen: Any, table: Any, detector: str | Path, theta: float | None = None
                 ) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Survival curves and detections for the last `length` minutes of every node of `table`.

    Returns
    -------
    curves : pl.DataFrame  node, minute (UTC), survival (in (0, 1], non-increasing per node)
    detections : pl.DataFrame  node, detected (bool), detection_minute (UTC or null), min_survival,
        theta — a detection is the first minute at or after the warm-up with survival < theta.
    """
    head, info = load_detector(detector, gen.model.cfg.d_model)
    theta = float(info["theta"] if theta is None else theta)
    data = gen.tokenize(table)
    length = min(int(info["length"]), data.n_minutes, gen.model.cfg.context)
    x = gen._window(data, length)
    s = survival(head(gen.model.eval().hidden_states(x).float())).cpu().numpy()  # (n_nodes, L)
    minutes = data.minutes[data.n_minutes - length:].astype("datetime64[ms]").astype(np.int64)  # UTC ms
    warmup = min(int(info["warmup"]), length - 1)
    t_det = first_below(s, theta, warmup)
    n = len(data.nodes)
    curves = pl.DataFrame({"node": [nd for nd in data.nodes for _ in range(length)],
                           "minute": pl.Series(np.tile(minutes, n), dtype=pl.Int64), "survival": s.reshape(-1)})
    dets = pl.DataFrame({"node": list(data.nodes), "detected": t_det >= 0,
                         "detection_minute": pl.Series([int(minutes[t]) if t >= 0 else None for t in t_det],
                                                       dtype=pl.Int64),
                         "min_survival": s[:, warmup:].min(axis=1), "theta": [theta] * n})
    utc = pl.Datetime("ms", "UTC")
    curves = curves.with_columns(pl.col("minute").cast(pl.Datetime("ms")).dt.replace_time_zone("UTC").cast(utc))
    dets = dets.with_columns(pl.col("detection_minute").cast(pl.Datetime("ms")).dt.replace_time_zone("UTC").cast(utc))
    return curves, dets
