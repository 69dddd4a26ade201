"""TrafficGPT: the NetFlowGen traffic decoder (SPEC 7-8), readable top-down.

Input embedding (paper Fig. 3):  x_t = W * concat(one_hot(bin_{t,f}) for f, 122 time one-hots)
                                        + E_node[v] + E_customer[c] + E_pos[t]
W * one_hot is a sum of rows of W, so the whole first term is ONE `embedding_bag(mode="sum")` over a
flat table of F * (n_bins + 1) + 122 rows: feature f's bin b sits at row f * (n_bins + 1) + b (row
n_bins of each feature is the missing-minute token), the time fields follow. Nothing is one-hot.
Then a GPT decoder (pre-LayerNorm, causal scaled-dot-product attention, GELU MLP) and one linear
head that gives, for every position t and predicted feature p, logits over the bins of minute t+1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
import torch.nn as nn
import torch.nn.functional as F

from netflowgen.schema import FEATURE_NAMES, LIGHT_FEATURE_NAMES
from netflowgen.tokens.data import TIME_FIELDS, ModelInputs


@dataclass
class ModelConfig:
    """Model hyper-parameters; stored in every checkpoint so scoring never repeats flags."""

    n_layers: int = 4
    n_heads: int = 4
    d_model: int = 128
    d_ff: int = 512
    dropout: float = 0.3  # residual and embedding dropout (paper / Fairseq --dropout)
    attn_dropout: float = 0.0  # on attention weights (Fairseq's default 0); > 0 forces the slow unfused kernel
    context: int = 512  # minutes per window (learned positions)
    n_bins: int = 10
    token_features: tuple[str, ...] = FEATURE_NAMES  # columns of the token arrays, in order
    input_features: tuple[str, ...] = FEATURE_NAMES  # embedded features (subset of token_features)
    predicted_features: tuple[str, ...] = FEATURE_NAMES  # features with an output head


MODEL_CONFIGS: dict[str, ModelConfig] = {  # paper Table 10, and the section 7.2 "Light" variant
    "4-4-128-512": ModelConfig(),
    "4-4-256-1024": ModelConfig(d_model=256, d_ff=1024),
    "4-4-512-1024": ModelConfig(d_model=512, d_ff=1024),
    "4-4-512-2048": ModelConfig(d_model=512, d_ff=2048),
    "light": ModelConfig(input_features=LIGHT_FEATURE_NAMES, predicted_features=LIGHT_FEATURE_NAMES),
}
MODEL_CONFIGS["paper"] = MODEL_CONFIGS["4-4-128-512"]


def model_config(name: str, **overrides: object) -> ModelConfig:
    """A named configuration (see MODEL_CONFIGS) with field overrides."""
    if name not in MODEL_CONFIGS:
        raise ValueError(f"unknown model configuration {name!r}; known: {sorted(MODEL_CONFIGS)}")
    return replace(MODEL_CONFIGS[name], **overrides)  # type: ignore[arg-type]


class _LookupSum(torch.autograd.Function):
    """`embedding_bag(idx, weight, mode="sum")` with a faster weight gradient on CPU.

    Forward is the fused lookup-and-sum. The stock backward sorts all B*T*K indices (~0.3 s per
    paper-config step on 2 cores, more than any single matmul); here column k of `idx` holds one
    feature, so the gradient is K `index_add_`s of the (B*T, C) output gradient into the table
    (~5x faster; same sums, another order of float additions).
    """

    @staticmethod
    def forward(ctx, idx: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:  # idx (M, K) -> (M, C)
        ctx.save_for_backward(idx)
        ctx.weight_shape, ctx.weight_dtype = weight.shape, weight.dtype
        return F.embedding_bag(idx, weight, mode="sum")

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # (M, C) -> (None, table gradient)
        (idx,) = ctx.saved_tensors
        grad = grad.contiguous().to(ctx.weight_dtype)
        out = grad.new_zeros(ctx.weight_shape)
        for col in idx.t().contiguous():  # (M,) each, contiguous: a strided index is ~50x slower
            out.index_add_(0, col, grad)
        return None, out


def lookup_sum(idx: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Rows of `weight` summed per row of `idx` (M, K) -> (M, C); fused backward on CPU."""
    if weight.requires_grad and torch.is_grad_enabled() and weight.device.type == "cpu":
        return _LookupSum.apply(idx, weight)
    return F.embedding_bag(idx, weight, mode="sum")


class Dropout(nn.Dropout):
    """`nn.Dropout` with a cheaper mask on CPU: keep where an fp32 uniform draw is >= p.

    Same distribution (keep probability 1 - p to 2^-24, survivors scaled by 1 / (1 - p)); the
    stock kernel's Bernoulli sampling costs ~3x more (~15 ms per (32, 512, 128) tensor on 2 cores,
    9 per step). Other devices use the stock kernel.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0 or x.device.type != "cpu" or self.inplace:
            return super().forward(x)
        if self.p == 1.0:
            return x * 0.0
        keep = torch.rand(x.shape, device=x.device).ge_(self.p).mul_(1.0 / (1.0 - self.p))  # fp32
        return x * keep.to(x.dtype)


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        assert cfg.d_model % cfg.n_heads == 0
        self.n_heads = cfg.n_heads
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model)
        self.attn_dropout = cfg.attn_dropout
        self.resid_drop = Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)  # 3 x (B, T, C)
        q, k, v = (t.view(B, T, self.n_heads, C // self.n_heads).transpose(1, 2) for t in (q, k, v))  # (B, H, T, D)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True,
                                           dropout_p=self.attn_dropout if self.training else 0.0)  # (B, H, T, D)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # (B, T, C)
        return self.resid_drop(self.proj(y))


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.fc = nn.Linear(cfg.d_model, cfg.d_ff)
        self.proj = nn.Linear(cfg.d_ff, cfg.d_model)
        self.drop = Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.proj(F.gelu(self.fc(x))))  # (B, T, C)


class Block(nn.Module):
    """Pre-LayerNorm decoder block."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.d_model)
        self.attn = CausalSelfAttention(cfg)
        self.ln2 = nn.LayerNorm(cfg.d_model)
        self.mlp = MLP(cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))  # (B, T, C)


class TrafficGPT(nn.Module):
    input_index: torch.Tensor  # buffers (registered in __init__), typed for readers and mypy
    target_index: torch.Tensor
    offsets: torch.Tensor

    """GPT decoder over per-minute token vectors of one node.

    Parameters
    ----------
    cfg : ModelConfig
    n_nodes : int
        Size of the node vocabulary (training nodes; unseen nodes reuse a neighbour's row).
    n_customers : int
        Size of the customer vocabulary.
    """

    def __init__(self, cfg: ModelConfig, n_nodes: int, n_customers: int) -> None:
        super().__init__()
        self.cfg, self.n_nodes, self.n_customers = cfg, n_nodes, n_customers
        pos = {name: i for i, name in enumerate(cfg.token_features)}
        unknown = [n for n in (*cfg.input_features, *cfg.predicted_features) if n not in pos]
        if unknown:
            raise ValueError(f"features not in the token data: {unknown}")
        n_in, per = len(cfg.input_features), cfg.n_bins + 1  # +1: the missing-minute token
        # Row offsets into the flat embedding table: feature f's bins, then the time fields.
        time_sizes = [n for _, n in TIME_FIELDS]
        offsets = [f * per for f in range(n_in)]
        offsets += [n_in * per + sum(time_sizes[:i]) for i in range(len(time_sizes))]
        self.register_buffer("input_index", torch.tensor([pos[n] for n in cfg.input_features]), persistent=False)
        self.register_buffer("target_index", torch.tensor([pos[n] for n in cfg.predicted_features]),
                             persistent=False)
        self.register_buffer("offsets", torch.tensor(offsets), persistent=False)
        self.wte = nn.Embedding(n_in * per + sum(time_sizes), cfg.d_model)  # W of SPEC 7, one row per one-hot
        self.node_emb = nn.Embedding(n_nodes, cfg.d_model)
        self.customer_emb = nn.Embedding(n_customers, cfg.d_model)
        self.pos_emb = nn.Embedding(cfg.context, cfg.d_model)
        self.drop = Dropout(cfg.dropout)
        self.blocks = nn.ModuleList([Block(cfg) for _ in range(cfg.n_layers)])
        self.ln_f = nn.LayerNorm(cfg.d_model)
        self.head = nn.Linear(cfg.d_model, len(cfg.predicted_features) * cfg.n_bins)
        self.apply(self._init_weights)
        for name, p in self.named_parameters():  # GPT-2: scale residual projections by depth
            if name.endswith("proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * cfg.n_layers))

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, mean=0.0, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, mean=0.0, std=0.02)

    def embed_inputs(self, x: ModelInputs) -> torch.Tensor:
        """SPEC 7 input vectors (B, T, d_model): one lookup-and-sum, never a one-hot."""
        B, T, _ = x.tokens.shape
        if T > self.cfg.context:
            raise ValueError(f"window of {T} minutes exceeds the model context {self.cfg.context}")
        idx = torch.cat([x.tokens.index_select(2, self.input_index), x.time], dim=2) + self.offsets  # (B, T, F_in + 4)
        tok = lookup_sum(idx.reshape(B * T, -1), self.wte.weight).view(B, T, -1)  # (B, T, C)
        meta = self.node_emb(x.node) + self.customer_emb(x.customer)  # (B, C)
        pos = self.pos_emb(torch.arange(T, device=idx.device))  # (T, C)
        return tok + meta[:, None, :] + pos[None, :, :]  # (B, T, C)

    def hidden_states(self, x: ModelInputs) -> torch.Tensor:
        """Final-layer hidden states (B, T, d_model); position t sees minutes <= t only."""
        h = self.drop(self.embed_inputs(x))
        for block in self.blocks:
            h = block(h)
        return self.ln_f(h)  # (B, T, C)

    def forward(self, x: ModelInputs) -> torch.Tensor:
        """Logits (B, T, P, n_bins): position t's distribution over the bins of minute t+1."""
        return self.hidden_and_logits(x)[1]

    def hidden_and_logits(self, x: ModelInputs) -> tuple[torch.Tensor, torch.Tensor]:
        """Hidden states (B, T, d_model) and logits (B, T, P, n_bins) of one backbone pass (a
        detector reading both, e.g. the SAFE head on hidden states and surprisal, runs it once)."""
        h = self.hidden_states(x)  # (B, T, C)
        B, T, _ = h.shape
        # Stored bins-first (B, T, N, P): the loss's softmax then runs over a strided dim with P
        # contiguous lanes, ~5x faster on CPU than over a contiguous dim of only 10.
        logits = self.head(h).view(B, T, self.cfg.n_bins, len(self.cfg.predicted_features))  # (B, T, N, P)
        return h, logits.transpose(2, 3)  # (B, T, C), (B, T, P, N) view

    def targets(self, x: ModelInputs) -> tuple[torch.Tensor, torch.Tensor]:
        """Next-minute targets (B, T-1, P) and their mask (B, T-1): False where minute t+1 is missing."""
        return x.tokens[:, 1:].index_select(2, self.target_index), x.valid[:, 1:]

    @torch.no_grad()
    def init_output_bias(self, bin_frequency: torch.Tensor) -> None:
        """Start the head at the training marginals: bias[p, b] = log frequency of bin b of feature p.

        Without it the first hundreds of steps only learn that ~80 % of minutes are bin 0.
        bin_frequency : (P, n_bins), rows summing to 1.
        """
        self.head.bias.copy_(bin_frequency.clamp_min(1e-6).log().t().reshape(-1))  # head rows are (N, P)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def flops_per_minute(self, T: int | None = None) -> float:
        """Matmul FLOPs of one forward pass per node-minute (x3 for forward + backward).

        Counts the Linear layers, attention scores and weighting (causal: half of the T x T square,
        as the fused kernel skips the masked half) and the output head; embeddings are lookups.
        """
        c, T = self.cfg, T or self.cfg.context
        linear = c.n_layers * (4 * c.d_model ** 2 + 2 * c.d_model * c.d_ff)
        head = c.d_model * len(c.predicted_features) * c.n_bins
        attn = c.n_layers * 2 * c.d_model * (T + 1) / 2  # QK^T and AV over the causal half
        return 2.0 * (linear + head + attn)


def next_minute_loss(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor,
                     reduction: str = "mean") -> torch.Tensor:
    """SPEC 8 loss (paper eq. 1): negative log-likelihood of minute t+1's bins.

    Parameters
    ----------
    logits : (B, T, P, N) model output.
    targets : (B, T-1, P) next-minute bins (from `TrafficGPT.targets`).
    mask : (B, T-1) bool, False where minute t+1 is missing (never a target).
    reduction : "mean" over valid (node, step, feature) triples, "sum", or "none" ((B, T-1, P), 0
        where masked).
    """
    lg = logits[:, :-1].permute(0, 3, 1, 2).float()  # (B, N, T-1, P): class dim second; fp32 even under autocast
    nll = F.cross_entropy(lg, targets.clamp_max(lg.shape[1] - 1), reduction="none")  # (B, T-1, P)
    nll = nll * mask[..., None]
    if reduction == "none":
        return nll
    if reduction == "sum":
        return nll.sum()
    return nll.sum() / (mask.sum() * targets.shape[-1]).clamp_min(1)
