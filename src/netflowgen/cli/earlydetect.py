"""`netflowgen earlydetect`: build the labelled early-detection examples (SPEC 9) and print the
paper's Table 2 layout for them."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from netflowgen.detect.earlydetect import EarlyDetectConfig
from netflowgen.detect.stages import run_earlydetect

_D = EarlyDetectConfig()  # help texts show the settings' own defaults


def register(app: typer.Typer) -> None:
    app.command("earlydetect", no_args_is_help=True)(earlydetect_cmd)


def earlydetect_cmd(
    features: Path = typer.Option(..., "--features", "-f", help="Node-minute table (Parquet) from `netflowgen features`."),
    alerts: Path = typer.Option(..., "--alerts", "-a", help="Alert table (CSV/Parquet): target_ip, start, end, "
                                "attack_type [, false_positive, reported_pkts, reported_bytes]."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder: examples.parquet, table2.csv, summary.json, config.toml."),
    truth: Optional[Path] = typer.Option(None, "--truth", help="Simulator truth.csv: adds the true onset of each attack."),
    window: Optional[int] = typer.Option(None, help=f"Minutes per example (default {_D.window})."),
    horizon: Optional[int] = typer.Option(None, help=f"The window ends this many minutes after the alert start (default {_D.horizon})."),
    margin: Optional[int] = typer.Option(None, help=f"Minutes kept clear of alerts around non-attack windows (default {_D.margin})."),
    seed: Optional[int] = typer.Option(None, help=f"Seed of the non-attack window draw (default {_D.seed})."),
    model: Optional[Path] = typer.Option(None, "--model", "-m", help="Pre-trained model folder: its train/validation "
                                         "split fractions are used (a different `split` in --config is refused)."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="TOML settings (see --dump for every key)."),
    dump: bool = typer.Option(False, "--dump", help="Print the resolved settings as TOML and exit."),
) -> None:
    """Attack windows around every kept alert and as many matched non-attack windows of the same
    nodes, per time split, with the CUSUM attack onset.

    Example: netflowgen earlydetect -f features.parquet -a sim/alerts.csv --truth sim/truth.csv -o ed/
    """
    from netflowgen import config as cfgmod
    from netflowgen.detect.earlydetect import EarlyDetectConfig

    cfg = cfgmod.load(EarlyDetectConfig, config, {"window": window, "horizon": horizon, "margin": margin,
                                                   "seed": seed})
    if model is not None:
        cfg.split = split_from_model(model, config, cfg.split)
    if dump:
        typer.echo(cfgmod.to_toml(cfg), nl=False)
        raise typer.Exit()
    result = run_earlydetect(features, alerts, out, cfg, truth)
    typer.echo(f"wrote {result['examples']} examples to {out / 'examples.parquet'}; dropped alerts: {result['dropped']}")


def split_from_model(model: Path, config: Path | None, split: list[float]) -> list[float]:
    """The model's split fractions; refused when the settings file sets other ones."""
    import tomllib

    from netflowgen.detect.detector import check_handoff
    from netflowgen.model.io import read_config, split_of
    model_split = split_of(read_config(model))
    if config is not None and "split" in tomllib.loads(Path(config).read_text()):
        check_handoff(str(config), "split fractions", [float(x) for x in split], model_split)
    return model_split
