"""`netflowgen finetune`: fine-tune a detector with the SAFE loss on EarlyDetect labels, choose its
threshold for an overhead bound and report its test metrics (SPEC 10-11)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from netflowgen.detect.stages import FinetuneRun, run_finetune

_D = FinetuneRun()  # help texts show the settings' own defaults


def register(app: typer.Typer) -> None:
    app.command("finetune", no_args_is_help=True)(finetune_cmd)


def finetune_cmd(
    examples: Path = typer.Option(..., "--examples", "-e", help="examples.parquet from `netflowgen earlydetect`."),
    features: Path = typer.Option(..., "--features", "-f", help="The node-minute table the examples came from."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder: the detector (load with netflowgen.Detector.load; "
                             "score with `netflowgen detect`), result.json, config.toml."),
    model: Optional[Path] = typer.Option(None, "--model", "-m", help="Pre-trained NetFlowGen folder (needed by NetFlowGen and TF)."),
    method: Optional[str] = typer.Option(None, help=f"{_D.method} (default), NetFlowGen+surprisal, NetFlowGen-unfrozen, TF, MS-LSTM, "
                                         "Static-EWMA, Static-percentile, Seasonal-band or CUSUM."),
    labels: Optional[str] = typer.Option(None, help=f"{_D.labels} (default; a count = examples drawn from the train split), "
                                         "val (the validation split) or all (the train split)."),
    attack_type: Optional[str] = typer.Option(None, "--attack-type", help="dns, ntp, udp, syn, ... or all (default)."),
    seed: Optional[int] = typer.Option(None, help=f"Seed of the label draw and of training (default {_D.seed})."),
    overhead_bound: Optional[float] = typer.Option(None, "--overhead-bound", help="p: share of customers within the "
                                                   f"budget (default {_D.metrics.overhead_bound})."),
    unfreeze: Optional[bool] = typer.Option(None, "--unfreeze/--frozen", help="Also train the pre-trained backbone."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="TOML settings (see --dump for every key)."),
    dump: bool = typer.Option(False, "--dump", help="Print the resolved settings as TOML and exit."),
) -> None:
    """Train one detector on a label regime, pick its threshold on that regime's labels for the overhead
    bound, and print its test metrics with every constant.

    Example: netflowgen finetune -m model/ -e ed/examples.parquet -f features.parquet --labels 360 -o ft/
    """
    from netflowgen import config as cfgmod

    ov = {"method": method, "labels": labels, "attack_type": attack_type, "seed": seed,
          "finetune": {k: v for k, v in {"unfreeze": unfreeze}.items() if v is not None},
          "metrics": {k: v for k, v in {"overhead_bound": overhead_bound}.items() if v is not None}}
    cfg = cfgmod.load(FinetuneRun, config, ov)
    if dump:
        typer.echo(cfgmod.to_toml(cfg), nl=False)
        raise typer.Exit()
    res = run_finetune(cfg, examples, features, out, model)
    typer.echo(json.dumps(res.test, indent=1))
