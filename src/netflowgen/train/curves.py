"""Loss curves of pre-training runs: validation (and mean training) loss against step and against
wall seconds, with the learning rate, from the `history.json` a run writes (one row per validation:
step, wall_s, lr, train_loss, val_loss)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Sequence


def read_history(model_dir: str | Path) -> list[dict[str, Any]]:
    """The validation rows of a run folder (`history.json`)."""
    rows: list[dict[str, Any]] = json.loads((Path(model_dir) / "history.json").read_text())
    return rows


def plot_loss_curves(runs: Mapping[str, Sequence[Mapping[str, Any]]], path: str | Path,
                     baselines: Mapping[str, float] | None = None, title: str | None = None) -> Path:
    """Write a PNG: left, loss against step (validation solid, training dashed) with the lr below;
    right, validation loss against wall seconds. `baselines` draws horizontal lines (e.g. the
    bigram's validation loss)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(10, 5.5), height_ratios=(3, 1), sharex="col")
    (ax_step, ax_wall), (ax_lr, ax_blank) = axes
    ax_blank.axis("off")
    for i, (label, rows) in enumerate(runs.items()):
        color = f"C{i}"
        step = [r["step"] for r in rows]
        ax_step.plot(step, [r["val_loss"] for r in rows], "o-", color=color, label=f"{label} val")
        ax_step.plot(step, [r["train_loss"] for r in rows], "--", color=color, alpha=0.6, label=f"{label} train")
        ax_wall.plot([r["wall_s"] for r in rows], [r["val_loss"] for r in rows], "o-", color=color, label=label)
        ax_lr.plot(step, [r["lr"] for r in rows], ".-", color=color)
    for j, (label, value) in enumerate((baselines or {}).items()):
        for ax in (ax_step, ax_wall):
            ax.axhline(value, color="k", linestyle=(0, (1, 1 + j)), linewidth=1, label=label if ax is ax_step else None)
    ax_step.set_ylabel("loss (next-minute NLL)")
    ax_step.legend(fontsize=7)
    ax_step.grid(alpha=0.3)
    ax_wall.set_xlabel("wall seconds of training")
    ax_wall.set_ylabel("validation loss")
    ax_wall.grid(alpha=0.3)
    ax_wall.tick_params(labelbottom=True)
    ax_lr.set_xlabel("step")
    ax_lr.set_ylabel("lr (at validation)")
    ax_lr.grid(alpha=0.3)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
