"""`netflowgen pretrain`: pre-train the traffic model on a node-minute table (SPEC 8)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def pretrain_command(
    features: Path = typer.Option(..., "--features", "-f", help="Node-minute table (Parquet) from `netflowgen features`."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder: model, binner, tokens, checkpoint, metrics."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="TOML settings (see --dump for every key)."),
    preset: str = typer.Option("paper", "--preset", help="Starting settings: paper (defaults), demo (a few "
                               "minutes on a CPU), tiny (seconds, for tests). --config and flags override it."),
    model: Optional[str] = typer.Option(None, help="4-4-128-512 (= paper), 4-4-256-1024, 4-4-512-1024, 4-4-512-2048, light."),
    predicted: Optional[str] = typer.Option(None, help="Predicted features: all, light, or comma-separated names."),
    context: Optional[int] = typer.Option(None, help="Minutes per training window."),
    batch_size: Optional[int] = typer.Option(None, help="Windows per step (over all processes)."),
    lr: Optional[float] = typer.Option(None, help="Learning rate."),
    max_epochs: Optional[int] = typer.Option(None, help="Epochs at most."),
    max_steps: Optional[int] = typer.Option(None, help="Steps at most (0 = no limit)."),
    max_minutes: Optional[float] = typer.Option(None, help="Wall-clock budget in minutes (0 = none)."),
    patience: Optional[int] = typer.Option(None, help="Validations without improvement before stopping."),
    eval_every: Optional[int] = typer.Option(None, help="Steps between validations (0 = once per epoch)."),
    device: Optional[str] = typer.Option(None, help="auto, cpu or cuda."),
    precision: Optional[str] = typer.Option(None, help="auto (bf16 on CUDA and on CPUs with bf16 instructions, else fp32), fp32 or bf16."),
    seed: Optional[int] = typer.Option(None, help="Random seed."),
    threads: Optional[int] = typer.Option(None, help="Torch threads per process (0 = default)."),
    resume: bool = typer.Option(False, "--resume", help="Continue from OUT/checkpoint.pt if present."),
    init: Optional[Path] = typer.Option(None, "--init", help="Continued pre-training: start from this model "
                                        "folder (its architecture, binner and weights; new nodes get their own "
                                        "cut-offs and their nearest old node's embedding)."),
    dump: bool = typer.Option(False, "--dump", help="Print the resolved settings as TOML and exit."),
) -> None:
    """Pre-train the GPT traffic model: fit the binner on the training range, tokenize, train with
    early stopping on validation loss. Run under `torchrun --nproc_per_node N` for data-parallel
    training (gloo on CPU, NCCL on GPU)."""
    from netflowgen import config as C
    from netflowgen.train.pretrain import PRESETS, PretrainConfig

    if preset not in PRESETS:
        raise C.ConfigError(f"unknown preset {preset!r}; known: {sorted(PRESETS)}")
    flags = dict(model=model, predicted=predicted, context=context, batch_size=batch_size, lr=lr,
                 max_epochs=max_epochs, max_steps=max_steps, max_minutes=max_minutes, patience=patience,
                 eval_every=eval_every, device=device, precision=precision, seed=seed, threads=threads)
    section = C.section_if_present(config, "pretrain")
    cfg = C.load(PretrainConfig, config, flags, section, PRESETS[preset])
    given = {k for k, v in flags.items() if v is not None} | _file_keys(config, section)
    if init is not None:  # the architecture comes from the model (a contradicting setting is refused)
        from netflowgen.train.init_from import init_config, load_init
        cfg = init_config(cfg, load_init(init).model.cfg, given, where=f"--init {init}")
    if dump:
        typer.echo(C.to_toml(cfg), nl=False)
        raise typer.Exit()
    if not features.exists():
        raise FileNotFoundError(f"features file not found: {features}")
    from netflowgen.train.pretrain import pretrain

    result = pretrain(features, out, cfg, resume=resume, log=lambda s: typer.echo(s, err=True), init=init,
                      given=given)
    import json
    import os
    import sys

    if int(os.environ.get("RANK", "0")) == 0:
        typer.echo(json.dumps(result, indent=1))
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        # Under torchrun, end the rank here: everything is written and the process group destroyed, but
        # gloo's threads can still abort the interpreter's shutdown ("terminate called without an active
        # exception", SIGABRT; once in 4 `make test` runs on 2026-12-02), failing a finished run.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


def _file_keys(config: Optional[Path], section: Optional[str]) -> set[str]:
    """Top-level keys the --config file sets (of its [pretrain] table when it has one)."""
    if config is None:
        return set()
    import tomllib

    data = tomllib.loads(config.read_text(encoding="utf-8"))  # C.load has read it already
    return set(data.get(section, {}) if section else data)


def register(app: typer.Typer) -> None:
    app.command("pretrain")(pretrain_command)


def standalone() -> None:
    """Entry point for `torchrun -m netflowgen.cli.pretrain` (the pretrain command alone)."""
    typer.run(pretrain_command)


if __name__ == "__main__":  # torchrun --nproc_per_node N -m netflowgen.cli.pretrain ...
    standalone()
