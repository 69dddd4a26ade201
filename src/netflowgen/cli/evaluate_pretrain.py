"""`netflowgen evaluate-pretrain`: loss, perplexity and accuracy next to the bigram baseline (Table 4)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def evaluate_pretrain_command(
    model: Path = typer.Option(..., "--model", "-m", help="Folder written by `netflowgen pretrain`."),
    features: Optional[Path] = typer.Option(None, "--features", "-f", help="Node-minute Parquet to score "
                                            "instead of the model's own tokens (MODEL/tokens)."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="TOML settings (see --dump)."),
    splits: Optional[str] = typer.Option(None, help="Comma-separated splits to score (default val,test)."),
    max_windows: Optional[int] = typer.Option(None, help="Score a fixed random subset of windows (0 = all)."),
    device: Optional[str] = typer.Option(None, help="auto, cpu or cuda."),
    precision: Optional[str] = typer.Option(None, help="fp32 or bf16."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Write the scores as JSON here "
                                       "(default MODEL/evaluate_pretrain.json)."),
    dump: bool = typer.Option(False, "--dump", help="Print the resolved settings as TOML and exit."),
) -> None:
    """Score a pre-trained model per split and feature group, next to the bigram baseline pooled over
    nodes and per node, and print the paper's Table 4 layout."""
    import json

    from netflowgen import config as C
    from netflowgen.evaluate.report import EvaluateConfig, evaluate_pretrain, format_report

    flags = {"splits": splits.split(",") if splits else None, "max_windows": max_windows, "device": device,
             "precision": precision}
    cfg = C.load(EvaluateConfig, config, flags)
    if dump:
        typer.echo(C.to_toml(cfg), nl=False)
        raise typer.Exit()
    result = evaluate_pretrain(model, features, cfg)
    typer.echo(format_report(result, cfg.splits))
    target = out or model / "evaluate_pretrain.json"
    target.write_text(json.dumps(result, indent=1))
    C.save_beside(target, cfg)
    typer.echo(f"\nscores written to {target}", err=True)


def register(app: typer.Typer) -> None:
    app.command("evaluate-pretrain")(evaluate_pretrain_command)
