"""`netflowgen demo` (what `make demo` runs): the whole pipeline on a small simulated ISP on a CPU,
simulate -> features -> pre-train -> EarlyDetect -> fine-tune -> evaluate -> report, printing each
stage's time, the report path and its headline table.

The demo configuration is smaller than the paper's (see `DemoConfig`): 4 simulated days of 60 nodes
(default difficulty, attack rate scaled to the node count), 256-minute EarlyDetect windows of which
the detectors see the last 128, a 4-4-128-512 decoder pre-trained for a few minutes with context 256,
two seeds, and the cheap methods (NetFlowGen, MS-LSTM and the operator baselines; the end-to-end
Transformer is left to `netflowgen experiment paper`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import typer


def register(app: typer.Typer) -> None:
    app.command("demo")(demo_cmd)


@dataclass
class DemoConfig:
    days: float = 4.0
    nodes: int = 60
    customers: int = 10
    attacks_per_day: float = 70.0  # the simulator's default 140 is for 120 nodes
    seed: int = 0
    # wall-clock cap of pre-training: the demo preset's 450 steps take ~2.5 minutes on an idle 2-core CPU with
    # bf16 instructions and ~7 with another job on it; in fp32 on an AVX2-only CPU with the other core busy,
    # 8 minutes stopped them at ~330 (2026-12-03). A 3-minute cap stopped them at 192 (a weaker backbone,
    # other figures)
    pretrain_minutes: float = 12.0
    window: int = 256  # EarlyDetect minutes per example
    length: int = 128  # minutes the detectors see
    labels: str = "360"
    seeds: list[int] = field(default_factory=lambda: [0, 1])
    methods: list[str] = field(default_factory=lambda: ["NetFlowGen", "MS-LSTM", "Static-EWMA",
                                                        "Static-percentile", "Seasonal-band", "CUSUM"])
    parts: list[str] = field(default_factory=lambda: ["table5", "fig5", "truth", "operator"])


def demo_cmd(
    out: Path = typer.Option(Path("demo-out"), "--out", "-o", help="Output folder (simulation, features, model, report)."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="TOML settings (see --dump for every key)."),
    dump: bool = typer.Option(False, "--dump", help="Print the resolved settings as TOML and exit."),
) -> None:
    """Run the whole pipeline on a small simulated ISP (about 10-15 minutes on a 2-core CPU) and
    print the report path and its headline table."""
    from netflowgen import config as cfgmod

    cfg = cfgmod.load(DemoConfig, config)
    if dump:
        typer.echo(cfgmod.to_toml(cfg), nl=False)
        raise typer.Exit()
    run_demo(cfg, out)


def _stage(name: str, t0: float, timings: dict[str, float]) -> float:
    now = time.time()
    timings[name] = now - t0
    typer.secho(f"[demo] {name}: {now - t0:.0f} s", fg=typer.colors.GREEN, err=True)
    return now


def run_demo(cfg: DemoConfig, out: Path) -> Path:
    from netflowgen import config as cfgmod

    out.mkdir(parents=True, exist_ok=True)
    cfgmod.save_beside(out, cfg)
    timings: dict[str, float] = {}
    start = t = time.time()

    from netflowgen.simulate import SimConfig, simulate
    sim_cfg = cfgmod.load(SimConfig, None, {"seed": cfg.seed, "topology": {"nodes": cfg.nodes, "customers": cfg.customers},
                                            "time": {"days": cfg.days}, "events": {"attacks_per_day": cfg.attacks_per_day}})
    sim = out / "sim"
    if not (sim / "truth.csv").exists():
        simulate(sim_cfg, sim)
    t = _stage("simulate", t, timings)

    from netflowgen.features.build import build_features
    from netflowgen.features.settings import FeatureConfig
    feats = out / "features.parquet"
    if not feats.exists():
        build_features([sim / "flows.parquet"], feats, FeatureConfig(customers=str(sim / "customers.csv")))
    t = _stage("features", t, timings)

    from netflowgen.train.pretrain import PRESETS, PretrainConfig, pretrain
    model_dir = out / "model"
    if not any(model_dir.glob("*.safetensors")):
        pcfg = cfgmod.load(PretrainConfig, None, {"max_minutes": cfg.pretrain_minutes, "seed": cfg.seed},
                           preset=PRESETS["demo"])
        run = pretrain(feats, model_dir, pcfg, log=lambda s: typer.echo(s, err=True))
        if run.get("stop") == "max_minutes":
            typer.echo(f"[demo] warning: pre-training reached its {cfg.pretrain_minutes:g}-minute cap after "
                       f"{run.get('steps')} of {pcfg.max_steps} steps (a busy machine): the backbone is weaker "
                       "and the figures differ from an uncapped run", err=True)
    t = _stage("pre-train", t, timings)

    from netflowgen.detect.earlydetect import EarlyDetectConfig
    from netflowgen.detect.stages import run_earlydetect
    ed_cfg = EarlyDetectConfig(window=cfg.window)
    run_earlydetect(feats, sim / "alerts.csv", out / "earlydetect", ed_cfg, sim / "truth.csv")
    t = _stage("EarlyDetect", t, timings)

    from netflowgen.cli.experiment import run_paper
    from netflowgen.experiments.paper import PaperConfig
    pc = PaperConfig(features=str(feats), alerts=str(sim / "alerts.csv"), truth=str(sim / "truth.csv"),
                     model=str(model_dir), length=cfg.length, seeds=list(cfg.seeds), methods=list(cfg.methods),
                     headline_labels=cfg.labels, more_data_seeds=0, earlydetect=ed_cfg)
    report = run_paper(pc, out / "report", tuple(cfg.parts))
    t = _stage("fine-tune + evaluate + report", t, timings)
    total = time.time() - start
    (out / "timings.json").write_text(__import__("json").dumps({**timings, "total": total}, indent=1))
    typer.echo(f"\ndemo finished in {total / 60:.1f} min; report: {report} (and {report.with_suffix('.html')})")
    return report
