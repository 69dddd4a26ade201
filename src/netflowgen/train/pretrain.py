"""Pre-training loop (SPEC 8): random 512-minute windows, AdamW, early stopping on validation loss,
exactly-resumable checkpoints, JSON-lines metrics, CPU or CUDA, and DDP under `torchrun`.

    netflowgen pretrain --features feats.parquet --out runs/pt [--preset demo] [--config C.toml]
    torchrun --nproc_per_node 2 -m netflowgen.cli.pretrain --features feats.parquet --out runs/pt
    netflowgen pretrain --features new.parquet --init runs/pt --out runs/new   # continued (init_from.py)

Output folder: model.safetensors + config.json + binner.json (best validation loss, loadable with
`NetFlowGen.from_pretrained`), tokens/ (token data), checkpoint.pt (last state, for --resume),
metrics.jsonl, history.json + loss_curve.png (every validation: step, wall seconds, train and
validation loss, lr), config.toml (resolved settings), tb/ (TensorBoard, when installed).

Recipe (`schedule = "cosine"`): linear warm-up over `warmup_steps`, then cosine decay to
`min_lr_ratio` x lr at the run's last step; the default `schedule = "constant"` is the flat lr
(it beat the cosine in the short run measured in docs/model.md); AdamW decays only the 2-D
weights (linear layers and embeddings), never biases or LayerNorm parameters (as nanoGPT).

Determinism: the windows of step s come from a generator seeded with (seed, s), and the checkpoint
holds model, optimizer, torch RNG and loop counters, so an interrupted run resumed from its last
checkpoint reaches exactly the state of an uninterrupted run. Under DDP every rank draws the same
global batch and takes its own slice; the loss is normalized by the global number of targets so the
averaged gradient equals the single-process full-batch gradient.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import polars as pl
import torch
import torch.distributed as dist

from netflowgen.config import ConfigError, save_beside, to_dict
from netflowgen.evaluate.pretrain_metrics import score_model
from netflowgen.model import TrafficGPT, model_config, next_minute_loss
from netflowgen.model.device import autocast, cpu_has_native_bf16, resolve_device, resolve_precision
from netflowgen.model.io import save_model
from netflowgen.progress import progress_bar
from netflowgen.schema import FEATURE_NAMES, LIGHT_FEATURE_NAMES
from netflowgen.tokens import DEFAULT_SPLIT, Binner, ModelInputs, TokenData, random_windows, time_splits
from netflowgen.train.checkpoint import check_resume_settings

CHECKPOINT = "checkpoint.pt"
HISTORY = "history.json"


@dataclass
class PretrainConfig:
    """Settings of `netflowgen pretrain` (defaults: the paper's)."""

    model: str = "paper"  # 4-4-128-512 (= paper), 4-4-256-1024, 4-4-512-1024, 4-4-512-2048, light
    n_layers: int | None = None  # overrides of the named model configuration
    n_heads: int | None = None
    d_model: int | None = None
    d_ff: int | None = None
    dropout: float | None = None
    context: int = 512  # minutes per training window
    predicted: str = "all"  # "all", "light" (6 volume features) or comma-separated feature names
    n_bins: int = 10
    time_zone: str = "UTC"
    train_fraction: float = DEFAULT_SPLIT[0]  # SPEC 5: contiguous train / val / test ranges
    val_fraction: float = DEFAULT_SPLIT[1]
    batch_size: int = 32  # windows per step, over all DDP ranks together
    lr: float = 5e-4  # paper
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0  # 0 = the paper's plain Adam; AdamW decoupled decay when > 0 (2-D weights only)
    schedule: str = "constant"  # constant (lr at every step) or cosine (warm-up + cosine decay; docs/model.md)
    warmup_steps: int = 0  # linear warm-up steps; 0 = 5 % of the run's steps (at least 1)
    min_lr_ratio: float = 0.1  # cosine: lr at the last step = min_lr_ratio x lr
    grad_clip: float = 1.0
    max_epochs: int = 100  # paper: 100 epochs at most, early stopping on validation loss
    max_steps: int = 0  # 0 = no limit
    max_minutes: float = 0.0  # wall-clock budget, 0 = no limit
    patience: int = 5  # evaluations without a validation improvement before stopping
    eval_every: int = 0  # steps between validations; 0 = once per epoch
    eval_max_windows: int = 0  # cap on validation windows per evaluation (0 = all)
    log_every: int = 10
    seed: int = 0
    device: str = "auto"  # auto, cpu, cuda
    precision: str = "auto"  # auto (bf16 on CUDA and on CPUs with bf16 instructions, else fp32), fp32, bf16
    threads: int = 0  # torch intra-op threads, 0 = torch default

    def __post_init__(self) -> None:
        from netflowgen.model.gpt import MODEL_CONFIGS

        checks = {"model": (self.model, tuple(MODEL_CONFIGS)), "device": (self.device, ("auto", "cpu", "cuda")),
                  "precision": (self.precision, ("auto", "fp32", "bf16")),
                  "schedule": (self.schedule, ("cosine", "constant"))}
        for key, (value, allowed) in checks.items():
            if value not in allowed:
                raise ConfigError(f"{key} = {value!r}: expected one of {list(allowed)}")
        if self.context < 2 or self.batch_size < 1 or self.lr < 0 or not 2 <= self.n_bins <= 255:
            raise ConfigError("context >= 2, batch_size >= 1, lr >= 0 and 2 <= n_bins <= 255 are required")
        if self.warmup_steps < 0 or not 0 <= self.min_lr_ratio <= 1:
            raise ConfigError("warmup_steps >= 0 and 0 <= min_lr_ratio <= 1 are required")
        predicted_features(self.predicted)  # raises on unknown names


PRESETS: dict[str, dict[str, Any]] = {
    "paper": {},
    # minutes on a 2-core CPU: the paper's model, shorter windows, bf16 where the CPU has it, frequent validation
    # (450 steps ~ 2 epochs of a 7-day, 120-node ISP: beats the per-node bigram on the simulated ISP)
    "demo": {"context": 256, "batch_size": 16, "max_steps": 450, "max_minutes": 8.0, "eval_every": 100,
             "eval_max_windows": 256, "patience": 4, "precision": "auto", "log_every": 10},
    # seconds: for tests and CI
    "tiny": {"model": "paper", "n_layers": 1, "d_model": 32, "d_ff": 64, "n_heads": 2, "dropout": 0.0,
             "context": 64, "batch_size": 8, "max_steps": 20, "eval_every": 10, "eval_max_windows": 16},
}


def predicted_features(spec: str) -> tuple[str, ...]:
    """Predicted feature names from a setting: 'all', 'light' or comma-separated names."""
    if spec == "all":
        return FEATURE_NAMES
    if spec == "light":
        return LIGHT_FEATURE_NAMES
    names = tuple(n.strip() for n in spec.split(",") if n.strip())
    bad = [n for n in names if n not in FEATURE_NAMES]
    if bad or not names:
        raise ConfigError(f"predicted = {spec!r}: unknown feature(s) {bad}; use all, light or names from the schema")
    return tuple(n for n in FEATURE_NAMES if n in names)  # schema order


def build_model(cfg: PretrainConfig, binner: Binner) -> TrafficGPT:
    """The model a config describes, sized to the binner's node and customer vocabularies."""
    over = {k: getattr(cfg, k) for k in ("n_layers", "n_heads", "d_model", "d_ff", "dropout")
            if getattr(cfg, k) is not None}
    base = model_config(cfg.model)  # "light" predicts its own 6 features unless told otherwise
    predicted = base.predicted_features if cfg.predicted == "all" else predicted_features(cfg.predicted)
    mcfg = model_config(cfg.model, context=cfg.context, n_bins=cfg.n_bins, token_features=binner.feature_names,
                        predicted_features=predicted, **over)
    return TrafficGPT(mcfg, len(binner.nodes), len(binner.customers))


def warmup_length(cfg: PretrainConfig, total_steps: int) -> int:
    """Warm-up steps of a run of `total_steps`: the setting, or 5 % of the run (at least 1)."""
    w = cfg.warmup_steps or max(1, round(0.05 * total_steps))
    return max(1, min(w, total_steps))


def learning_rate(cfg: PretrainConfig, step: int, total_steps: int) -> float:
    """Learning rate of optimizer step `step` (0-based) of a run of `total_steps` steps.

    cosine: lr x (step + 1) / W over the W warm-up steps (the peak lr at step W - 1), then a cosine
    from lr down to min_lr_ratio x lr at step total_steps - 1, and that floor beyond it (a resumed
    run that was given more steps). constant: lr at every step.
    """
    if cfg.schedule == "constant":
        return cfg.lr
    w = warmup_length(cfg, total_steps)
    if step < w:
        return cfg.lr * (step + 1) / w
    floor = cfg.min_lr_ratio * cfg.lr
    progress = min(1.0, (step - w + 1) / max(total_steps - w, 1))  # 1 at the last step and beyond
    return floor + 0.5 * (cfg.lr - floor) * (1.0 + math.cos(math.pi * progress))


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: decay for the parameters with 2 or more dimensions (linear weights,
    embeddings), none for biases and LayerNorm gains (nanoGPT's split)."""
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def bin_frequency(data: TokenData, lo: int, hi: int, features: tuple[str, ...]) -> torch.Tensor:
    """(P, n_bins) share of each bin per feature over minutes [lo, hi) of all nodes (missing excluded)."""
    cols = [data.feature_names.index(n) for n in features]
    N = data.n_bins
    counts = np.zeros((len(cols), N + 1))
    offsets = np.arange(len(cols))[None, :] * (N + 1)
    for r in range(len(data.nodes)):
        tok = np.asarray(data.tokens[r, lo:hi][:, cols], dtype=np.int64)  # (M, P)
        counts += np.bincount((tok + offsets).ravel(), minlength=counts.size).reshape(counts.shape)
    counts = counts[:, :N] + 1.0  # add-one: no bin starts impossible
    return torch.from_numpy(counts / counts.sum(1, keepdims=True)).float()


# --- distributed ----------------------------------------------------------------------------------
@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    owns_group: bool = False  # init_distributed created the process group (and ends it)

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device: torch.device) -> Dist:
    """Join the torchrun process group when WORLD_SIZE > 1 (gloo on CPU, NCCL on CUDA)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    owns = not dist.is_initialized()
    if owns:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")),
                owns)


def end_distributed(d: Dist) -> None:
    """Wait for every rank (rank 0 may still be saving), then end the process group if
    `init_distributed` created it. A rank that exits with its gloo group alive can abort at
    exit ("terminate called without an active exception", seen in the torchrun test)."""
    if d.world > 1 and dist.is_initialized():
        dist.barrier()
        if d.owns_group:
            dist.destroy_process_group()


# --- one step -----------------------------------------------------------------------------------
def loss_and_backward(model: torch.nn.Module, raw: TrafficGPT, x: ModelInputs, d: Dist,
                      amp: Callable[[], Any]) -> float:
    """Forward + backward of this rank's slice; returns the global mean loss of the batch.

    The loss is the sum over this rank's valid targets divided by the global count, times the world
    size (DDP averages gradients over ranks), so gradients equal those of the full batch.
    """
    targets, mask = raw.targets(x)
    with amp():
        logits = model(x)  # (B, T, P, N)
    loss_sum = next_minute_loss(logits, targets, mask, reduction="sum")
    stats = torch.stack([loss_sum.detach().float(), mask.sum().float() * targets.shape[-1]])
    if d.world > 1:
        dist.all_reduce(stats)
    count = stats[1].clamp_min(1)
    (loss_sum / count * d.world).backward()
    return float(stats[0] / count)


def validate(raw: TrafficGPT, data: TokenData, lo: int, hi: int, cfg: PretrainConfig, d: Dist,
             amp: Callable[[], Any]) -> dict[str, float]:
    """Loss / perplexity / accuracy on the predictions whose targets lie in minutes [lo, hi),
    windows shared out between DDP ranks and summed."""
    s = score_model(raw, data, lo, hi, max_windows=cfg.eval_max_windows, seed=cfg.seed,
                    shard=(d.rank, d.world), amp=amp)
    tot = torch.tensor([s.nll.sum(), s.correct.sum(), s.count.sum()], dtype=torch.float64)
    if d.world > 1:
        dist.all_reduce(tot)
    n = max(tot[2].item(), 1.0)
    loss = tot[0].item() / n
    return {"loss": loss, "perplexity": math.exp(loss), "accuracy": tot[1].item() / n, "targets": int(n)}


# --- data preparation -------------------------------------------------------------------------------
def read_features_for_training(path: Path, cfg: PretrainConfig) -> tuple[pl.DataFrame, int]:
    """(the node-minute table, UTC ms at which its training range ends), or an InputError naming
    the file and what makes it unusable for pre-training: not Parquet, missing columns, no rows,
    every minute missing, or a training range shorter than one context window."""
    from netflowgen.rejects import InputError
    from netflowgen.schema import NODE_MINUTE_KEY_COLUMNS
    try:
        df = pl.read_parquet(path)
    except (OSError, pl.exceptions.PolarsError) as e:
        raise InputError(f"{path}: not a readable Parquet node-minute table ({' '.join(str(e).split())[:160]})") from None
    missing = [c for c in (*NODE_MINUTE_KEY_COLUMNS, *FEATURE_NAMES) if c not in df.columns]  # the binner reads all 86
    if missing:
        raise InputError(f"{path}: missing column(s) {missing[:6]}{' ...' if len(missing) > 6 else ''} "
                         "(a table from `netflowgen features`?)")
    if df.height == 0:
        raise InputError(f"{path}: no rows")
    if df["missing"].all():
        raise InputError(f"{path}: every node-minute is missing (no exporter reported): nothing to learn from")
    ms = df["minute"].dt.epoch("ms").to_numpy()
    m0 = int(ms.min())
    n_minutes = (int(ms.max()) - m0) // 60_000 + 1
    train = time_splits(n_minutes, cfg.train_fraction, cfg.val_fraction)["train"][1]
    if train < cfg.context:
        raise InputError(f"{path}: the training range has {train} minutes ({cfg.train_fraction:.0%} of {n_minutes}), "
                         f"shorter than one window of context = {cfg.context}: use a smaller --context or more data")
    return df, m0 + train * 60_000


def prepare_data(features: Path, out: Path, cfg: PretrainConfig, d: Dist,
                 reuse: bool, init_binner: Binner | None = None) -> tuple[Binner, TokenData]:
    """Fit the binner on the training range and tokenize (rank 0; other ranks wait, then load).
    With `reuse` (resuming), existing OUT/tokens and OUT/binner.json are kept as they are. With
    `init_binner` (--init), that binner extended with the nodes it does not know (`extend_binner`)."""
    tok_dir, binner_path = out / "tokens", out / "binner.json"
    if d.main and not (reuse and (tok_dir / "index.json").exists() and binner_path.exists()):
        df, train_end_ms = read_features_for_training(features, cfg)
        train_df = df.filter(pl.col("minute").dt.epoch("ms") < train_end_ms)
        if init_binner is not None:
            from netflowgen.train.init_from import extend_binner
            binner = extend_binner(init_binner, train_df)
        else:
            binner = Binner.fit(train_df, n_bins=cfg.n_bins)
        del train_df
        binner.save(binner_path)
        TokenData.build(df, binner, tok_dir, cfg.time_zone)
        del df
    if d.world > 1:
        dist.barrier()
    return Binner.load(binner_path), TokenData.load(tok_dir, cfg.time_zone)


# --- the loop -------------------------------------------------------------------------------------
def pretrain(features: str | Path, out: str | Path, cfg: PretrainConfig, resume: bool = False,
             log: Callable[[str], None] = print, init: str | Path | None = None,
             given: Iterable[str] = ()) -> dict[str, Any]:
    """Pre-train a TrafficGPT on a node-minute table; see the module docstring for outputs.

    With `init` (a model folder), continued pre-training (`netflowgen.train.init_from`): the
    architecture, binner and weights start from that model, grown for the table's new nodes and
    customers; `given` names the settings the caller set on purpose (one that contradicts the
    model's architecture is an InputError; the others are taken from the model).

    Returns
    -------
    dict
        Final state: steps, epochs, best validation metrics, stop reason, throughput.
    """
    out = Path(out)
    init_model = None
    if init is not None:
        from netflowgen.rejects import InputError
        from netflowgen.train.init_from import init_config, load_init
        if out.resolve() == Path(init).resolve():
            raise InputError(f"--out {out} is the --init model folder: write the new model elsewhere")
        init_model = load_init(init)
        cfg = init_config(cfg, init_model.model.cfg, given, where=f"--init {init}")
    probe = resolve_device(cfg.device)
    d = init_distributed(probe)
    device = resolve_device(cfg.device, d.local_rank if d.world > 1 else None)
    if device.type == "cuda":
        torch.cuda.set_device(device)  # NCCL collectives run on the current device
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    ckpt = out / CHECKPOINT
    if resume and ckpt.exists():
        check_resume_settings(ckpt, cfg)  # before config.toml is rewritten
    if d.main:
        out.mkdir(parents=True, exist_ok=True)
        save_beside(out, cfg)
    if d.world > 1:
        dist.barrier()
    binner, data = prepare_data(Path(features), out, cfg, d, reuse=resume,
                                init_binner=None if init_model is None else init_model.binner)
    splits = time_splits(data.n_minutes, cfg.train_fraction, cfg.val_fraction)
    (tr_lo, tr_hi), (va_lo, va_hi) = splits["train"], splits["val"]
    T = cfg.context
    if cfg.batch_size % d.world:
        raise ValueError(f"batch_size {cfg.batch_size} must be divisible by the {d.world} processes")
    steps_per_epoch = max(1, math.ceil(len(data.nodes) * (tr_hi - tr_lo) / (cfg.batch_size * T)))
    eval_every = cfg.eval_every or steps_per_epoch

    torch.manual_seed(cfg.seed)
    if init_model is None:
        raw = build_model(cfg, binner)
        raw.init_output_bias(bin_frequency(data, tr_lo, tr_hi, raw.cfg.predicted_features))
    else:  # the old weights (its output bias included), embeddings grown for the new nodes
        from netflowgen.train.init_from import init_from_model
        raw = init_from_model(init_model.model, init_model.binner, binner, dropout=cfg.dropout)
    raw = raw.to(device)
    opt = torch.optim.AdamW(param_groups(raw, cfg.weight_decay), lr=cfg.lr, betas=cfg.betas)
    state: dict[str, Any] = {"step": 0, "best_val": float("inf"), "bad_evals": 0, "best_step": 0,
                             "train_time_s": 0.0, "history": []}
    if resume and ckpt.exists():
        blob = torch.load(ckpt, map_location=device, weights_only=True)
        raw.load_state_dict(blob["model"])
        opt.load_state_dict(blob["optimizer"])
        torch.set_rng_state(blob["rng_cpu"])
        if device.type == "cuda" and "rng_cuda" in blob:
            torch.cuda.set_rng_state(blob["rng_cuda"])
        state = json.loads(blob["state"])
        log(f"resumed from {ckpt} at step {state['step']}")
    model: torch.nn.Module = raw
    if d.world > 1:
        model = torch.nn.parallel.DistributedDataParallel(
            raw, device_ids=[device.index] if device.type == "cuda" else None)
    amp = lambda: autocast(device, cfg.precision)  # noqa: E731
    model_settings = {"time_zone": cfg.time_zone, "train_fraction": cfg.train_fraction,
                      "val_fraction": cfg.val_fraction}
    if init_model is not None:
        model_settings["init_from"] = init_model.config["content_hash"]  # the old model's identity
    metrics = open(out / "metrics.jsonl", "a" if resume else "w") if d.main else None
    tb = _tensorboard(out) if d.main else None

    def emit(row: dict[str, Any]) -> None:
        if metrics is not None:
            metrics.write(json.dumps(row) + "\n")
            metrics.flush()
        if tb is not None:
            for k, v in row.items():
                if isinstance(v, (int, float)) and k != "step":
                    tb.add_scalar(k, v, row["step"])

    def save_checkpoint() -> None:
        if not d.main:
            return
        blob = {"model": raw.state_dict(), "optimizer": opt.state_dict(), "rng_cpu": torch.get_rng_state(),
                "state": json.dumps(state), "config": json.dumps(to_dict(cfg)),
                "model_args": json.dumps(dataclasses.asdict(raw.cfg))}
        if device.type == "cuda":
            blob["rng_cuda"] = torch.cuda.get_rng_state()
        tmp = ckpt.with_suffix(".tmp")
        torch.save(blob, tmp)
        os.replace(tmp, ckpt)  # atomic: an interruption never leaves half a checkpoint

    max_steps = steps_per_epoch * cfg.max_epochs
    if cfg.max_steps:
        max_steps = min(max_steps, cfg.max_steps)
    B_local = cfg.batch_size // d.world
    reason = "max_epochs" if max_steps == steps_per_epoch * cfg.max_epochs else "max_steps"
    # The schedule belongs to the run: fixed at its first start (kept in the checkpoint), so a
    # resumed run continues it at the right step; steps a resume adds past it run at the floor.
    schedule_steps = int(state.setdefault("schedule_steps", max_steps))
    state.setdefault("history", [])
    if schedule_steps != max_steps and cfg.schedule != "constant":
        log(f"keeping the run's {cfg.schedule} schedule over {schedule_steps} steps (now {max_steps} steps; "
            "steps past it use min_lr_ratio x lr)")
    train_sum, train_n = 0.0, 0  # training loss since the last validation
    t_start = time.perf_counter()
    time0 = state["train_time_s"]
    raw.train()
    log(f"pre-training {raw.num_parameters():,} parameters on {len(data.nodes)} nodes x {tr_hi - tr_lo} "
        f"training minutes ({steps_per_epoch} steps/epoch, batch {cfg.batch_size} x {T}, {d.world} "
        f"process(es), {device.type}, precision {resolve_precision(device, cfg.precision)})")
    if device.type == "cpu" and cfg.precision == "bf16" and not cpu_has_native_bf16():
        log("warning: this CPU has no bf16 instructions, so bf16 is emulated (about 6 x slower than fp32 here); "
            "use --precision auto or fp32")
    with progress_bar("pre-training", total=max_steps) if d.main else nullcontext(lambda *a, **k: None) as advance:
        advance(state["step"])
        try:
            while state["step"] < max_steps:
                step = state["step"]
                rng = np.random.default_rng([cfg.seed, step])
                nodes, starts = random_windows(rng, len(data.nodes), tr_lo, tr_hi, T, cfg.batch_size)
                sl = slice(d.rank * B_local, (d.rank + 1) * B_local)
                x = data.inputs(nodes[sl], starts[sl], T).to(device)
                opt.zero_grad(set_to_none=True)
                loss = loss_and_backward(model, raw, x, d, amp)
                train_sum, train_n = train_sum + loss, train_n + 1
                if cfg.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(raw.parameters(), cfg.grad_clip)
                lr = learning_rate(cfg, step, schedule_steps)
                for group in opt.param_groups:
                    group["lr"] = lr
                opt.step()
                state["step"] = step = step + 1
                elapsed = time0 + time.perf_counter() - t_start
                state["train_time_s"] = elapsed
                advance(1, description=f"pre-training loss {loss:.4f}")
                if step % cfg.log_every == 0 or step == 1:
                    emit({"step": step, "epoch": step / steps_per_epoch, "train_loss": loss,
                          "lr": lr, "elapsed_s": round(elapsed, 2),
                          "node_minutes_per_s": round(step * cfg.batch_size * T / max(elapsed, 1e-9), 1)})
                out_of_time = cfg.max_minutes and elapsed >= cfg.max_minutes * 60
                if step % eval_every == 0 or step == max_steps or out_of_time:
                    val = validate(raw, data, va_lo, va_hi, cfg, d, amp)
                    improved = val["loss"] < state["best_val"]
                    if improved:
                        state.update(best_val=val["loss"], best_step=step, bad_evals=0)
                        if d.main:
                            save_model(out, raw, binner, model_settings)
                    else:
                        state["bad_evals"] += 1
                    emit({"step": step, "epoch": step / steps_per_epoch, "val_loss": val["loss"],
                          "val_perplexity": val["perplexity"], "val_accuracy": val["accuracy"],
                          "best": improved})
                    state["history"].append({"step": step, "wall_s": round(elapsed, 2), "lr": lr,
                                             "train_loss": train_sum / max(train_n, 1), "val_loss": val["loss"]})
                    train_sum, train_n = 0.0, 0
                    if d.main:
                        (out / HISTORY).write_text(json.dumps(state["history"], indent=1))
                    log(f"step {step}: train {loss:.4f}  val loss {val['loss']:.4f} ppl "
                        f"{val['perplexity']:.4f} acc {val['accuracy']:.4f}{'  (best)' if improved else ''}")
                    save_checkpoint()
                    if state["bad_evals"] >= cfg.patience:
                        reason = "early_stopping"
                        break
                if out_of_time:
                    reason = "max_minutes"
                    break
        except KeyboardInterrupt:
            # The step in flight may be half applied: the last checkpoint (written at each
            # validation) is the exact resume point, so nothing is saved here.
            reason = "interrupted"
            log("interrupted: rerun with --resume to continue from the last checkpoint")
    if metrics is not None:
        metrics.close()
    if tb is not None:
        tb.close()
    if d.main and state["history"]:
        from netflowgen.train.curves import plot_loss_curves
        plot_loss_curves({out.name or "run": state["history"]}, out / "loss_curve.png")
    result = {"steps": state["step"], "epochs": state["step"] / steps_per_epoch, "best_val_loss": state["best_val"],
              "best_step": state["best_step"], "stop": reason, "train_time_s": round(state["train_time_s"], 1),
              "node_minutes_per_s": round(state["step"] * cfg.batch_size * T / max(state["train_time_s"], 1e-9), 1),
              "parameters": raw.num_parameters(), "world_size": d.world}
    if d.main:
        (out / "train_summary.json").write_text(json.dumps(result, indent=1))
    end_distributed(d)
    return result


def _tensorboard(out: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except Exception:  # tensorboard is optional
        return None
    return SummaryWriter(str(out / "tb"))


