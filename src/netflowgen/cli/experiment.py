"""`netflowgen experiment paper`: the paper's detection tables and Fig. 5 on the simulated ISP, plus
the label-efficiency curve, survival curves over traffic and the ground-truth comparison."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

experiment_app = typer.Typer(help="Reproducible experiments (SPEC 13).", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(experiment_app, name="experiment")


@experiment_app.command("paper", no_args_is_help=True)
def paper_cmd(
    out: Path = typer.Option(..., "--out", "-o", help="Report folder: report.md, report.html, PNGs, results.json, config.toml."),
    data: Optional[Path] = typer.Option(None, "--data", help="Folder holding features.parquet, alerts.csv and "
                                        "truth.csv (e.g. a `netflowgen demo` output or a simulation with its features)."),
    features: Optional[Path] = typer.Option(None, "--features", "-f", help="Node-minute table (overrides --data)."),
    alerts: Optional[Path] = typer.Option(None, "--alerts", help="Alert table (overrides --data)."),
    truth: Optional[Path] = typer.Option(None, "--truth", help="Simulator truth.csv (overrides --data)."),
    model: Optional[Path] = typer.Option(None, "--model", "-m", help="Pre-trained NetFlowGen folder (`netflowgen pretrain --out`)."),
    seeds: Optional[str] = typer.Option(None, help="Comma-separated seeds (default 0,1,2)."),
    methods: Optional[str] = typer.Option(None, help="Comma-separated methods (default NetFlowGen,"
                                          "NetFlowGen+surprisal,TF,MS-LSTM,Static-EWMA,Static-percentile,"
                                          "Seasonal-band,CUSUM)."),
    parts: str = typer.Option("table5,fig5,table6,labels,truth,operator", help="Which parts to run; also "
                              "table8 (unseen nodes), table9 (86 vs 6 features), table10 (model sizes): opt-in, each "
                              "pre-trains its own backbones (cached under OUT/backbones; settings [ablations])."),
    length: Optional[int] = typer.Option(None, help="Minutes of each example the detectors see (default 128)."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="TOML settings (see --dump for every key)."),
    dump: bool = typer.Option(False, "--dump", help="Print the resolved settings as TOML and exit."),
) -> None:
    """Tables 5 and 6, Fig. 5 (violins at three overhead bounds), a label-efficiency curve (every
    method from 10 labels to all, the zero-label Surprisal at 0), survival curves of attacks over their
    traffic and a comparison with the simulator's true onsets; on request the ablations of Tables 8,
    9 and 10. Every learned method is trained per seed and reported as mean ± sd.

    Example: netflowgen experiment paper --data demo-out --model demo-out/model --out report/
    """
    from netflowgen import config as cfgmod
    from netflowgen.experiments.paper import PaperConfig

    d = data or Path(".")
    overrides = {
        "features": str(features or (d / "features.parquet")) if (features or data) else None,
        "alerts": str(alerts or (d / "sim" / "alerts.csv" if (d / "sim").is_dir() else d / "alerts.csv"))
        if (alerts or data) else None,
        "truth": str(truth or (d / "sim" / "truth.csv" if (d / "sim").is_dir() else d / "truth.csv"))
        if (truth or data) else None,
        "model": str(model) if model else None, "length": length,
        "seeds": [int(s) for s in seeds.split(",")] if seeds else None,
        "methods": methods.split(",") if methods else None,
    }
    cfg = cfgmod.load(PaperConfig, config, overrides)
    if dump:
        typer.echo(cfgmod.to_toml(cfg), nl=False)
        raise typer.Exit()
    report = run_paper(cfg, out, tuple(parts.split(",")))
    typer.echo(f"report: {report}")


def run_paper(cfg, out: Path, parts: tuple[str, ...]) -> Path:
    """Run the experiments of `cfg` and write the report; prints the headline table."""
    import time

    from netflowgen import config as cfgmod
    from netflowgen.detect.io import markdown_table
    from netflowgen.experiments.paper import PaperRun
    from netflowgen.experiments.report import metric_rows, write_report

    if not cfg.features or not Path(cfg.features).exists():
        raise FileNotFoundError(f"features not found: {cfg.features!r} (give --data or --features)")
    from netflowgen.experiments.paper import PARTS
    unknown = [p for p in parts if p not in PARTS]
    if unknown:
        raise typer.BadParameter(f"unknown part(s) {unknown}; known: {', '.join(PARTS)}", param_hint="--parts")
    t0 = time.time()
    run = PaperRun(cfg, log=lambda s: typer.echo(s, err=True), work_dir=out)
    run.prepare()
    results = run.run(parts)
    results["seconds"] = time.time() - t0
    out.mkdir(parents=True, exist_ok=True)
    report = write_report(results, out, run)
    cfgmod.save_beside(out, cfg)
    if "table5" in results:
        typer.echo(markdown_table(metric_rows(results["table5"], "labels")))
    return report


@experiment_app.command("transfer", no_args_is_help=True)
def transfer_cmd(
    detectors: list[Path] = typer.Option(..., "--detectors", "-d", help="Detector folders (`netflowgen finetune "
                                         "--out`, `Detector.save`); repeat or give several after one flag."),
    out: Path = typer.Option(..., "--out", "-o", help="Report folder: transfer.md, results.json, work/ (data)."),
    benchmarks: str = typer.Option("isp,splice", "--benchmarks", help="isp (a second simulated ISP), splice (real "
                                   "hosts with real attacks; skipped when ../shared/data/real is absent)."),
    fa_budget: float = typer.Option(1.0, "--fa-budget", help="False alarms per node-day on the reference range."),
    real: Optional[Path] = typer.Option(None, "--real", help="Folder of the real traces (default ../shared/data/real)."),
    length: int = typer.Option(16, "--length", min=0, help="Minutes each score aggregates on the new networks "
                               "(0 = each detector's evaluated length)."),
    per_node_budget: bool = typer.Option(False, "--per-node-budget", help="Each node its own theta from the budget."),
    adapt_steps: int = typer.Option(0, "--adapt-steps", min=0, help="Methods with a pre-trained backbone: first "
                                    "continue its pre-training this many steps on the new network's reference "
                                    "minutes (its own node embeddings and cut-offs); 0 = no."),
    more: Optional[list[Path]] = typer.Argument(None, help="More detector folders (`--detectors A B C`)."),
) -> None:
    """Score detectors on traffic they never saw: every node onboarded on its reference range (first
    60 %), one global theta by the false-alarm budget there, operator metrics over the rest.

    Example: netflowgen experiment transfer --detectors det/Static-EWMA det/CUSUM --out report/transfer
    """
    from netflowgen.experiments.transfer import TransferConfig, run_transfer, tables

    cfg = TransferConfig(benchmarks=[b.strip() for b in benchmarks.split(",") if b.strip()], fa_budget=fa_budget,
                         score_length=length or None, per_node_budget=per_node_budget, adapt_steps=adapt_steps)
    if real is not None:
        cfg.splice.real = str(real)
    results = run_transfer([*detectors, *(more or [])], out, cfg, log=lambda s: typer.echo(s, err=True))
    typer.echo(tables(results))
    typer.echo(f"report: {out / 'transfer.md'}")


@experiment_app.command("noise-floor", no_args_is_help=True)
def noise_floor_cmd(
    sim: Path = typer.Option(..., "--sim", help="The `netflowgen simulate --out` folder the features were built from."),
    features: Path = typer.Option(..., "--features", "-f", help="Its node-minute table (settings file beside it)."),
    model: Path = typer.Option(..., "--model", "-m", help="Pre-trained model folder: its cut-offs, split and "
                               "predicted features; the model itself is scored on the same targets."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder: noise_floor.md, noise_floor.json, config.toml."),
    replicates: Optional[int] = typer.Option(None, "--replicates", "-k", help="Redraws of the split's minutes "
                                             "(default 64; ~6 s each for the default ISP's 806 validation minutes)."),
    split: Optional[str] = typer.Option(None, "--split", help="val (default) or test."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="TOML settings (see --dump)."),
    dump: bool = typer.Option(False, "--dump", help="Print the resolved settings as TOML and exit."),
) -> None:
    """The lowest next-minute loss any model can reach on a simulated ISP: the split's minutes redrawn
    K times from the simulator's own rates (same plan, new per-minute draws), binned with the model's
    cut-offs; per feature group beside the bigrams and the model on the same targets (docs/model.md).

    Example: netflowgen experiment noise-floor --sim sim --features feats.parquet -m model -o floor/
    """
    import json

    from netflowgen import config as cfgmod
    from netflowgen.experiments.noise_floor import NoiseFloorConfig, floor_table, noise_floor
    from netflowgen.model.io import load_pretrained
    from netflowgen.progress import progress_bar

    cfg = cfgmod.load(NoiseFloorConfig, config, {"replicates": replicates, "split": split})
    if dump:
        typer.echo(cfgmod.to_toml(cfg), nl=False)
        raise typer.Exit()
    pre = load_pretrained(model)
    train, val = pre.split
    with progress_bar("noise floor: replicates", total=cfg.replicates) as advance:
        result = noise_floor(sim, features, pre.binner, tuple(pre.model.cfg.predicted_features), (train, val),
                             str(pre.config.get("time_zone", "UTC")), cfg, pre.model, advance)
    result["model"] = {"path": str(model), "content_hash": pre.config["content_hash"]}
    out.mkdir(parents=True, exist_ok=True)
    (out / "noise_floor.json").write_text(json.dumps(result, indent=1))
    table = floor_table(result)
    (out / "noise_floor.md").write_text(f"# Noise floor of {features} ({cfg.split}, {result['targets']:,} targets)\n\n"
                                        f"{table}\n")
    cfgmod.save_beside(out, cfg)
    typer.echo(table)
    typer.echo(f"report: {out / 'noise_floor.md'}", err=True)
