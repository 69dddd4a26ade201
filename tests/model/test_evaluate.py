"""Pre-training metrics: scoring windows, bigram counts, model scores, the CLI's Table 4."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from netflowgen.cli.main import app
from netflowgen.evaluate import Bigram, evaluation_windows, feature_group, score_model
from netflowgen.model import TrafficGPT, model_config, next_minute_loss
from netflowgen.schema import FEATURE_NAMES
from netflowgen.tokens import Binner, TokenData, scoring_windows

from .fixtures import node_minute_table

torch.set_num_threads(1)


@pytest.mark.parametrize("lo,hi,length,n", [(0, 100, 16, 100), (70, 90, 16, 100), (30, 100, 64, 100),
                                              (5, 41, 7, 60), (10, 60, 100, 60)])
def test_scoring_windows_score_each_target_once_with_context(lo, hi, length, n):
    seen = []
    for start, a, b in scoring_windows(lo, hi, length, n):
        L = min(length, n)
        assert 0 <= start and start + L <= n and start <= a and b <= start + L - 1
        assert a - start >= min(L - 1 - max(1, L // 2), a)  # about half a window of context when available
        seen += list(range(a + 1, b + 1))  # targets t+1 of the scored positions
    assert sorted(seen) == list(range(max(lo, 1), hi))


def _toy_data(n_bins: int = 4) -> TokenData:
    rng = np.random.default_rng(0)
    tok = rng.integers(0, n_bins, (2, 50, 3)).astype(np.uint8)
    tok[1, ::2, 2], tok[1, 1::2, 2] = 1, 3  # node 1 alternates 1, 3 in feature 2
    tok[0, 20] = n_bins  # a missing minute
    return TokenData(tok, ["a", "b"], ["c"], np.zeros(2), np.array([0, 1]), 0, FEATURE_NAMES[:3], n_bins)


def test_bigram_counts_match_brute_force_and_skip_missing_targets():
    data, N = _toy_data(), 4
    bg = Bigram.fit(data, 0, 30, per_node=True)
    expected = np.zeros((2, 3, N + 1, N))
    for r in range(2):
        for t in range(1, 30):
            for f in range(3):
                prev, cur = data.tokens[r, t - 1, f], data.tokens[r, t, f]
                if cur < N:
                    expected[r, f, prev, cur] += 1
    np.testing.assert_array_equal(bg.counts, expected)
    pooled = Bigram.fit(data, 0, 30, per_node=False)
    np.testing.assert_array_equal(pooled.counts[0], expected.sum(0))
    s = bg.score(data, 30, 50, FEATURE_NAMES[2:3])
    assert s.count[0] == 40  # two nodes x 20 targets, none missing
    per_node_b = Bigram.fit(data, 0, 30, per_node=True).score(data, 30, 50, FEATURE_NAMES[2:3])
    assert per_node_b.correct[0] >= 20  # node b's alternation is learned exactly
    # scoring through evaluation windows covers the same targets as scoring the whole split
    whole = bg.score(data, 30, 50, FEATURE_NAMES[:3])
    windowed = bg.score(data, 30, 50, FEATURE_NAMES[:3], evaluation_windows(data, 30, 50, 8))
    np.testing.assert_allclose(windowed.nll, whole.nll)
    np.testing.assert_array_equal(windowed.count, whole.count)
    # add-one smoothing: probabilities are positive and sum to one over the current bin
    np.testing.assert_allclose(np.exp(bg.log_p).sum(-1), 1.0)


def test_model_scores_equal_the_training_loss_on_the_same_targets():
    df = node_minute_table(n_nodes=2, n_minutes=120, missing=(100,))
    data = TokenData.build(df, Binner.fit(df), None)
    torch.manual_seed(0)
    cfg = model_config("paper", d_model=16, n_layers=1, d_ff=32, context=128, dropout=0.0,
                       predicted_features=FEATURE_NAMES[:10])
    model = TrafficGPT(cfg, 2, 2).eval()
    s = score_model(model, data, 80, 120)
    x = data.inputs(np.array([0, 1]), np.array([0, 0]), 120)
    with torch.no_grad():
        logits = model(x)
    tg, mask = model.targets(x)
    mask = mask.clone()
    mask[:, :79] = False  # targets 80..119 only
    assert s.count.sum() == mask.sum() * 10 == 2 * 39 * 10  # 40 minutes minus the missing one, per node
    ref = next_minute_loss(logits, tg, mask).item()
    assert abs(s.summary()["loss"] - ref) < 1e-5
    assert set(s.by_group()) == {"volume", "protocol"}
    assert [feature_group(n) for n in ("in_all_pkt", "out_udp_byt", "in_port53_flow", "out_flag16_flow")] == \
        ["volume", "protocol", "port", "flags"]


def test_cli_pretrain_then_evaluate_prints_table4(tmp_path):
    p = tmp_path / "f.parquet"
    node_minute_table(n_nodes=2, n_minutes=900).write_parquet(p)
    runner = CliRunner()
    r = runner.invoke(app, ["pretrain", "--features", str(p), "--out", str(tmp_path / "m"), "--preset", "tiny",
                            "--max-steps", "4", "--threads", "1"])
    assert r.exit_code == 0, r.output
    dumped = runner.invoke(app, ["pretrain", "--features", str(p), "--out", "x", "--preset", "demo", "--dump"])
    assert "context = 256" in dumped.output
    r = runner.invoke(app, ["evaluate-pretrain", "--model", str(tmp_path / "m"), "--splits", "val",
                            "--max-windows", "3"])
    assert r.exit_code == 0, r.output
    assert "Table 4" in r.output and "Pre-trained" in r.output and "Bigram (per node)" in r.output
    scores = json.loads((tmp_path / "m" / "evaluate_pretrain.json").read_text())
    assert scores["val"]["model"]["targets"] == scores["val"]["bigram_pooled"]["targets"] > 0
    assert (tmp_path / "m" / "config.toml").exists()
