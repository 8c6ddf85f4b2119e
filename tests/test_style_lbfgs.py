"""Our L-BFGS follows torch.optim.LBFGS (no line search) iterate for iterate, including a full history."""

from __future__ import annotations

import pytest
import torch

from core.engines.style.lbfgs import LBFGS


def _problem(n: int = 60):
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=gen, dtype=torch.float64)
    a = a @ a.t() / n + 0.1 * torch.eye(n, dtype=torch.float64)
    b = torch.randn(n, generator=gen, dtype=torch.float64)

    def f(x: torch.Tensor) -> torch.Tensor:
        x = x.double()
        return 0.5 * x @ a @ x - b @ x + 0.1 * (x**4).sum()

    return f


@pytest.mark.parametrize("history", [3, 7, 100])  # 3 and 7 wrap the ring buffer many times
def test_matches_torch_lbfgs(history):
    f, steps, n = _problem(), 50, 60
    x_ref = torch.zeros(n, requires_grad=True)
    opt = torch.optim.LBFGS([x_ref], lr=1, max_iter=steps, history_size=history, tolerance_grad=-1,
                            tolerance_change=-1)
    ref: list[float] = []

    def closure():
        opt.zero_grad()
        loss = f(x_ref)
        loss.backward()
        ref.append(loss.item())
        return loss

    opt.step(closure)
    x = torch.zeros(n, requires_grad=True)
    ours = LBFGS(x, history)
    got: list[float] = []
    for i in range(steps):
        loss = f(x)
        (g,) = torch.autograd.grad(loss, x)
        got.append(loss.item())
        if i + 1 < steps:
            ours.step(g)
    assert len(ref) == steps
    assert got == pytest.approx(ref, rel=1e-4, abs=1e-6)
    assert got[-1] < got[0] - 1.0


def test_rejected_curvature_pairs_are_inert():
    """s.y <= 0 (non-convex step) must not poison the history: the pair gets rho = 0."""
    x = torch.zeros(4, requires_grad=True)
    opt = LBFGS(x, 5)
    opt.step(torch.tensor([1.0, 0, 0, 0]))
    opt.step(torch.tensor([2.0, 0, 0, 0]))  # gradient grew along the step: y.s < 0
    assert float(opt.rho[0]) == 0.0
    assert torch.isfinite(x).all()
