"""SAFE loss against a direct computation, finite differences and extreme hazards; survival shape."""

from __future__ import annotations

import math

import numpy as np
import torch

from netflowgen.detect.metrics import detect as detection_minutes
from netflowgen.detect.safe import SurvivalHead, safe_loss, survival

torch.set_num_threads(1)


def test_safe_loss_matches_direct_formula() -> None:
    g = torch.Generator().manual_seed(0)
    hz = torch.rand(4, 7, generator=g, dtype=torch.float64) * 0.5
    label_t = torch.tensor([6, 3, 6, 0])
    event = torch.tensor([True, True, False, False])
    got = safe_loss(hz, label_t, event, reduction="none")
    want = []
    for b in range(4):
        lam = float(hz[b, : label_t[b] + 1].sum())
        s = math.exp(-lam)
        want.append(-math.log(1 - s) if event[b] else -math.log(s))
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-10)
    assert torch.isclose(safe_loss(hz, label_t, event), got.mean())


def test_regular_variant_matches_direct_formula() -> None:
    hz = torch.tensor([[0.1, 0.2, 0.3, 0.4]], dtype=torch.float64)
    got = safe_loss(hz, torch.tensor([2]), torch.tensor([True]), variant="regular")
    want = -math.log(math.exp(-0.3) - math.exp(-0.6))
    assert abs(float(got) - want) < 1e-10


def test_safe_loss_gradient_matches_finite_differences() -> None:
    hz = (torch.rand(3, 5, dtype=torch.float64) * 0.3 + 0.01).requires_grad_()
    label_t = torch.tensor([4, 2, 4])
    event = torch.tensor([True, True, False])
    assert torch.autograd.gradcheck(lambda h: safe_loss(h, label_t, event), (hz,), eps=1e-6, atol=1e-6)
    assert torch.autograd.gradcheck(lambda h: safe_loss(h, label_t, event, variant="regular"), (hz,),
                                    eps=1e-6, atol=1e-6)


def test_safe_loss_stable_at_extreme_cumulative_hazard() -> None:
    # Cumulative hazard 1e4: an attack example costs ~0, a censored one costs 1e4; all finite.
    hz = torch.full((2, 10), 1e3, requires_grad=True)
    loss = safe_loss(hz, torch.tensor([9, 9]), torch.tensor([True, False]), reduction="none")
    assert torch.isfinite(loss).all()
    assert float(loss[0].detach()) < 1e-6 and abs(float(loss[1].detach()) - 1e4) < 1.0
    loss.sum().backward()
    assert torch.isfinite(hz.grad).all()
    # And at (almost) zero hazard an attack example costs a large but finite loss.
    tiny = torch.zeros(1, 5, requires_grad=True)
    l0 = safe_loss(tiny, torch.tensor([4]), torch.tensor([True]))
    l0.backward()
    assert torch.isfinite(l0) and float(l0.detach()) > 20 and torch.isfinite(tiny.grad).all()


def test_survival_from_head_is_non_increasing_in_unit_interval() -> None:
    torch.manual_seed(0)
    head = SurvivalHead(16, hidden=32)
    s = survival(head(torch.randn(5, 40, 16) * 3))
    assert s.shape == (5, 40)
    assert (s <= 1).all() and (s > 0).all()
    assert (s[:, 1:] <= s[:, :-1]).all()


def test_detection_minutes_first_crossing() -> None:
    curves = np.array([[1.0, 0.9, 0.4, 0.1], [1.0, 1.0, 0.95, 0.9], [0.2, 0.1, 0.1, 0.1]])
    assert detection_minutes(curves, 0.5).tolist() == [2, -1, 0]
    assert detection_minutes(curves, 0.5, 1).tolist() == [2, -1, 1]
