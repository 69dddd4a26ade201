"""Pre-training throughput of TrafficGPT next to two references measured in the same run.

    python benchmarks/pretrain.py                       # paper config, batch 32 x 512, fp32 and bf16
    python benchmarks/pretrain.py --steps 3 --context 128 --batch 8    # a quick look
    python benchmarks/pretrain.py --device cuda --batch 256 --compile  # on a GPU

Prints, per variant: node-minutes per second of full training steps (forward, backward, AdamW),
achieved matmul FLOP/s (forward + backward = 3 x forward; Linear layers, causal attention counted
over its half of the T x T square, output head; embedding lookups count zero), peak memory, and the
dtype. References: a plain `nn.TransformerEncoder` with a causal mask fed materialized one-hots (its
one-hot projection is a real matmul and is counted), and the machine's own `torch.mm` throughput.
Each variant runs in its own process so peak memory is its own (peak RSS on CPU, peak allocated on
CUDA). Inputs are random tokens already in memory: this measures the model, not the data loader.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

from netflowgen.model import TrafficGPT, model_config, next_minute_loss
from netflowgen.schema import FEATURE_NAMES
from netflowgen.tokens import ModelInputs

N_BINS = 10
N_NODES, N_CUSTOMERS = 150, 20
ONE_HOT = len(FEATURE_NAMES) * (N_BINS + 1) + 122


def random_inputs(B: int, T: int, device: torch.device, seed: int = 0) -> ModelInputs:
    g = torch.Generator().manual_seed(seed)
    time_ = torch.stack([torch.randint(0, n, (B, T), generator=g) for n in (60, 24, 7, 31)], dim=-1)  # (B, T, 4)
    return ModelInputs(tokens=torch.randint(0, N_BINS, (B, T, len(FEATURE_NAMES)), generator=g),
                       node=torch.randint(0, N_NODES, (B,), generator=g),
                       customer=torch.randint(0, N_CUSTOMERS, (B,), generator=g),
                       time=time_, valid=torch.ones(B, T, dtype=torch.bool)).to(device)


class PlainReference(nn.Module):
    """The plain implementation: materialized one-hots -> Linear -> nn.TransformerEncoder -> head."""

    def __init__(self, d: int, layers: int, heads: int, ff: int, T: int) -> None:
        super().__init__()
        self.inp = nn.Linear(ONE_HOT, d)
        self.node, self.cust, self.pos = nn.Embedding(N_NODES, d), nn.Embedding(N_CUSTOMERS, d), nn.Embedding(T, d)
        layer = nn.TransformerEncoderLayer(d, heads, ff, dropout=0.3, batch_first=True, norm_first=True,
                                           activation="gelu")
        self.enc = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.head = nn.Linear(d, len(FEATURE_NAMES) * N_BINS)
        self.register_buffer("mask", nn.Transformer.generate_square_subsequent_mask(T), persistent=False)

    def forward(self, x: ModelInputs) -> torch.Tensor:
        B, T, Fn = x.tokens.shape
        oh = torch.cat([F.one_hot(x.tokens, N_BINS + 1).reshape(B, T, -1).float()]
                       + [F.one_hot(x.time[..., i], n).float() for i, n in enumerate((60, 24, 7, 31))], -1)  # (B, T, 1068)
        h = self.inp(oh) + (self.node(x.node) + self.cust(x.customer))[:, None] + self.pos.weight[:T]
        h = self.enc(h, mask=self.mask[:T, :T], is_causal=True)  # (B, T, C)
        return self.head(h).view(B, T, Fn, N_BINS)


def run_variant(args: argparse.Namespace) -> dict:
    device = torch.device(args.device)
    torch.manual_seed(0)
    cfg = model_config(args.config, context=args.context)
    if args.variant == "mm":
        n = 4096 if device.type == "cuda" else 2048
        dt = torch.float32 if args.dtype == "fp32" else torch.bfloat16
        a, b = torch.randn(n, n, device=device, dtype=dt), torch.randn(n, n, device=device, dtype=dt)
        best = float("inf")
        for _ in range(6):
            _sync(device)
            t = time.perf_counter()
            for _ in range(4):
                torch.mm(a, b)
            _sync(device)
            best = min(best, (time.perf_counter() - t) / 4)
        return {"variant": f"torch.mm {n}x{n}", "dtype": args.dtype, "flops_per_s": 2 * n ** 3 / best}
    if args.variant == "ours":
        model = TrafficGPT(cfg, N_NODES, N_CUSTOMERS).to(device)
        flops = model.flops_per_minute(args.context)
        name = "TrafficGPT (lookup embedding, SDPA causal)"
    else:
        model = PlainReference(cfg.d_model, cfg.n_layers, cfg.n_heads, cfg.d_ff, args.context).to(device)
        c = cfg
        flops = 2.0 * (ONE_HOT * c.d_model + c.n_layers * (4 * c.d_model ** 2 + 2 * c.d_model * c.d_ff)
                       + c.d_model * len(FEATURE_NAMES) * N_BINS + c.n_layers * c.d_model * (args.context + 1))
        name = "nn.TransformerEncoder + one-hots"
    step_fn = model
    if args.compile:
        step_fn = torch.compile(model)
    opt = torch.optim.AdamW(model.parameters(), lr=5e-4)
    x = random_inputs(args.batch, args.context, device)
    targets, mask = x.tokens[:, 1:], x.valid[:, 1:]
    amp = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if args.dtype == "bf16" else \
        (lambda: torch.autocast(device.type, enabled=False))

    def step() -> None:
        with amp():
            logits = step_fn(x)  # (B, T, F, N)
        if args.variant == "ours":  # the training loss (bins-first layout, fp32 softmax)
            loss = next_minute_loss(logits, targets, mask)
        else:  # the plain way: cross-entropy over the last dim of (B, T, F, N)
            loss = F.cross_entropy(logits[:, :-1].float().reshape(-1, N_BINS), targets.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(args.warmup):
        step()
    _sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t = time.perf_counter()
    for _ in range(args.steps):
        step()
    _sync(device)
    dt_ = (time.perf_counter() - t) / args.steps
    nm = args.batch * args.context / dt_
    peak = torch.cuda.max_memory_allocated() if device.type == "cuda" else \
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"variant": name + (" compiled" if args.compile else ""), "dtype": args.dtype,
            "node_minutes_per_s": nm, "flops_per_s": 3 * flops * nm, "peak_mem_mb": peak / 2 ** 20,
            "step_s": dt_, "parameters": sum(p.numel() for p in model.parameters())}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="paper", help="model configuration name (Table 10 or light)")
    ap.add_argument("--batch", type=int, default=32, help="windows per step")
    ap.add_argument("--context", type=int, default=512, help="minutes per window")
    ap.add_argument("--steps", type=int, default=5, help="timed steps per variant")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtypes", default="fp32,bf16", help="dtypes of our model to measure")
    ap.add_argument("--compile", action="store_true", help="also measure torch.compile of our model")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--variant", help=argparse.SUPPRESS)
    ap.add_argument("--dtype", default="fp32", help=argparse.SUPPRESS)
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.variant:  # child process: one measurement
        print(json.dumps(run_variant(args)))
        return
    plan = [("mm", "fp32", False), ("mm", "bf16", False), ("plain", "fp32", False)]
    plan += [("ours", d, False) for d in args.dtypes.split(",")]
    if args.compile:
        plan += [("ours", d, True) for d in args.dtypes.split(",")]
    base = [sys.executable, os.path.abspath(__file__), "--config", args.config, "--batch", str(args.batch),
            "--context", str(args.context), "--steps", str(args.steps), "--warmup", str(args.warmup),
            "--device", args.device, "--threads", str(args.threads)]
    rows = []
    for variant, dtype, comp in plan:
        cmd = base + ["--variant", variant, "--dtype", dtype] + (["--compile"] if comp else [])
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            print(f"{variant} {dtype}: failed\n{r.stderr[-2000:]}", file=sys.stderr)
            continue
        rows.append(json.loads(r.stdout.strip().splitlines()[-1]))
        print(f"measured {rows[-1]['variant']} ({dtype})", file=sys.stderr)
    mm32 = next((r["flops_per_s"] for r in rows if r["variant"].startswith("torch.mm") and r["dtype"] == "fp32"), None)
    plain = next((r["node_minutes_per_s"] for r in rows if r["variant"].startswith("nn.Transformer")), None)
    print(f"\npre-training throughput: config {args.config}, batch {args.batch} x {args.context} minutes, "
          f"device {args.device}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    print(f"{'variant':<52}{'dtype':>6}{'node-min/s':>12}{'GFLOP/s':>10}{'of fp32 mm':>11}{'peak MB':>9}")
    for r in rows:
        nm = f"{r['node_minutes_per_s']:,.0f}" if "node_minutes_per_s" in r else "-"
        frac = f"{r['flops_per_s'] / mm32:.2f}" if mm32 else "-"
        mem = f"{r['peak_mem_mb']:,.0f}" if "peak_mem_mb" in r else "-"
        print(f"{r['variant']:<52}{r['dtype']:>6}{nm:>12}{r['flops_per_s'] / 1e9:>10.1f}{frac:>11}{mem:>9}")
    ours = [r for r in rows if r["variant"].startswith("TrafficGPT")]
    if ours and mm32 and plain:
        best = max(ours, key=lambda r: r["node_minutes_per_s"])
        print(f"\nbest: {best['variant']} {best['dtype']}: {best['flops_per_s'] / mm32:.2f} x fp32 mm throughput "
              f"(target >= 0.50), {best['node_minutes_per_s'] / plain:.2f} x the plain reference (target >= 1.00)")
        print(f"one epoch of the paper's volume (50 M node-minutes) would take "
              f"{50e6 / best['node_minutes_per_s']:,.0f} s at this rate")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
