"""TrafficGPT: causality, the lookup-and-sum embedding, configurations, overfitting one batch."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from netflowgen.model import MODEL_CONFIGS, TrafficGPT, model_config, next_minute_loss
from netflowgen.schema import FEATURE_NAMES, LIGHT_FEATURE_NAMES
from netflowgen.tokens import Binner, TokenData

from .fixtures import node_minute_table

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def data() -> TokenData:
    df = node_minute_table(n_nodes=3, n_minutes=400, missing=(100,))
    return TokenData.build(df, Binner.fit(df), None)


def tiny(**kw) -> TrafficGPT:
    torch.manual_seed(0)
    cfg = model_config("paper", d_model=32, n_heads=4, n_layers=2, d_ff=64, context=64, **kw)
    return TrafficGPT(cfg, n_nodes=3, n_customers=2)


def test_changing_minute_t_plus_1_never_changes_outputs_at_t(data):
    m = tiny().eval()
    x = data.inputs(np.array([0, 1]), np.array([0, 50]), 64)
    base = m(x)  # (B, T, P, N)
    for t in (0, 20, 62):
        y = data.inputs(np.array([0, 1]), np.array([0, 50]), 64)
        y.tokens[:, t + 1:] = torch.randint(0, 11, y.tokens[:, t + 1:].shape)
        y.time[:, t + 1:] = 0
        out = m(y)
        torch.testing.assert_close(out[:, :t + 1], base[:, :t + 1], rtol=0, atol=1e-5)
        assert not torch.allclose(out[:, t + 1:], base[:, t + 1:])


def test_embedding_equals_W_times_concatenated_one_hots(data):
    m = tiny()
    x = data.inputs(np.array([2]), np.array([90]), 32)  # window holds the missing minute 100
    fin = len(FEATURE_NAMES)
    one_hot = torch.cat([F.one_hot(x.tokens, 11).reshape(1, 32, fin * 11)]
                        + [F.one_hot(x.time[..., i], n) for i, n in enumerate((60, 24, 7, 31))], dim=-1)
    assert one_hot.shape[-1] == fin * 11 + 122
    dense = one_hot.float() @ m.wte.weight  # (B, T, C): SPEC 7 with materialized one-hots
    dense = dense + (m.node_emb(x.node) + m.customer_emb(x.customer))[:, None] + m.pos_emb.weight[:32]
    torch.testing.assert_close(m.embed_inputs(x), dense, rtol=1e-5, atol=1e-5)


def test_fused_embedding_backward_equals_embedding_bag():
    # the custom CPU backward of `lookup_sum` against PyTorch's own embedding_bag, repeated rows included
    from netflowgen.model.gpt import lookup_sum
    g = torch.Generator().manual_seed(0)
    idx = torch.randint(0, 50, (64, 9), generator=g)
    idx[:, 3] = idx[:, 4]  # the same row twice in one bag
    w1 = torch.randn(50, 16, generator=g, requires_grad=True)
    w2 = w1.detach().clone().requires_grad_(True)
    up = torch.randn(64, 16, generator=g)
    (lookup_sum(idx, w1) * up).sum().backward()
    (F.embedding_bag(idx, w2, mode="sum") * up).sum().backward()
    torch.testing.assert_close(lookup_sum(idx, w1), F.embedding_bag(idx, w2, mode="sum"))
    torch.testing.assert_close(w1.grad, w2.grad, rtol=1e-5, atol=1e-6)
    assert w1.grad.abs().sum() > 0


def test_named_configurations_and_light_variant(data):
    assert {"4-4-128-512", "4-4-256-1024", "4-4-512-1024", "4-4-512-2048", "light", "paper"} <= set(MODEL_CONFIGS)
    assert MODEL_CONFIGS["4-4-512-2048"].d_ff == 2048 and MODEL_CONFIGS["4-4-256-1024"].d_model == 256
    light = tiny(input_features=LIGHT_FEATURE_NAMES, predicted_features=("in_all_byt", "out_all_pkt"))
    x = data.inputs(np.array([0]), np.array([0]), 16)
    assert light(x).shape == (1, 16, 2, 10)
    assert light.wte.num_embeddings == 6 * 11 + 122
    tg, _ = light.targets(x)
    torch.testing.assert_close(tg, x.tokens[:, 1:, [1, 3]])
    with pytest.raises(ValueError):
        tiny(predicted_features=("no_such_feature",))


def test_loss_ignores_missing_targets(data):
    m = tiny()
    x = data.inputs(np.array([0]), np.array([90]), 32)  # minute 100 = position 10 is missing
    logits = m(x)
    tg, mask = m.targets(x)
    assert not mask[0, 9] and mask.sum() == 30
    logits2 = logits.detach().clone()
    logits2[0, 9] = torch.randn_like(logits2[0, 9]) * 100  # the prediction of the missing minute
    assert torch.equal(next_minute_loss(logits.detach(), tg, mask), next_minute_loss(logits2, tg, mask))


def test_tiny_model_overfits_one_batch(data):
    m = tiny(dropout=0.0, predicted_features=FEATURE_NAMES[:12])
    x = data.inputs(np.array([0, 1, 2, 1]), np.array([0, 10, 200, 300]), 48)
    tg, mask = m.targets(x)
    opt = torch.optim.AdamW(m.parameters(), lr=3e-3)
    first = None
    for _ in range(150):
        loss = next_minute_loss(m(x), tg, mask)
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert first > 2.0 and loss.item() < 0.1 * first  # from ~log(10) to near-memorized


def test_output_bias_starts_at_the_training_marginals(data):
    m = tiny(predicted_features=FEATURE_NAMES[:3])
    freq = torch.softmax(torch.randn(3, 10), dim=-1)  # (P, N)
    m.init_output_bias(freq)
    torch.nn.init.zeros_(m.head.weight)  # logits = bias only
    p = torch.softmax(m(data.inputs(np.array([0]), np.array([0]), 8)), dim=-1)  # (1, 8, P, N)
    torch.testing.assert_close(p[0, 5], freq)
