"""L-BFGS with a fixed step, one update per loss+gradient evaluation.

The same algorithm as ``torch.optim.LBFGS(line_search_fn=None)`` (and neural-style): first step
``min(1, 1/|g|_1) * lr`` along ``-g``, then ``lr`` along ``-H g`` with the usual two-loop recursion,
initial Hessian ``(s.y)/(y.y)`` of the newest pair and curvature pairs with ``s.y <= 1e-10`` ignored.

Why our own:

* one update per call, so each loss+gradient evaluation is one "step" the engine can report, preview
  and cancel between, and the last evaluated image is the result (torch's moves once more, unseen);
* no tolerance-based early exit: a user who asks for 300 steps gets 300;
* no data-dependent Python branches, so on CUDA the loop never waits for the GPU: a rejected pair is
  stored with ``rho = 0`` (which makes it inert) instead of being skipped;
* the two-loop recursion is written as two small triangular solves over the history's Gram-like
  matrix ``S Y^T`` (kept up to date with two mat-vecs per step). That is the same arithmetic as the
  loops but in six mat-vecs instead of ~4m tiny vector ops: about 2x faster on CPU at m = 100 and a
  handful of kernels instead of hundreds on a GPU.
"""

from __future__ import annotations

import torch


class LBFGS:
    """Optimises the tensor ``x`` in place; call :meth:`step` with the gradient at the current ``x``."""

    def __init__(self, x: torch.Tensor, history_size: int = 100, lr: float = 1.0) -> None:
        if history_size < 1:
            raise ValueError("history_size must be at least 1")
        self.x = x
        self.lr = lr
        self.m = history_size
        n = x.numel()
        kw = dict(device=x.device, dtype=torch.float32)
        self.S = torch.zeros(self.m, n, **kw)  # (m, N) steps s_i, ring buffer
        self.Y = torch.zeros(self.m, n, **kw)  # (m, N) gradient changes y_i
        self.rho = torch.zeros(self.m, **kw)  # (m,) 1/(s_i.y_i), 0 for rejected pairs
        self.SY = torch.zeros(self.m, self.m, **kw)  # (m, m) SY[i, j] = s_i . y_j
        self.h_diag = torch.ones((), **kw)
        self.k = 0  # pairs written so far (host-side: never needs the device)
        self.prev_g: torch.Tensor | None = None
        self.prev_step: torch.Tensor | None = None

    @torch.no_grad()
    def step(self, grad: torch.Tensor) -> None:
        """Move ``x`` given ``grad`` = dLoss/dx at the current ``x``."""
        g = grad.reshape(-1).float()  # (N,)
        if self.prev_g is None:
            d = -g
            t = torch.clamp(self.lr / g.abs().sum(), max=self.lr)  # first step: min(1, 1/|g|_1) * lr
        else:
            assert self.prev_step is not None
            self._push(self.prev_step, g - self.prev_g)
            d = self._direction(g)
            t = torch.full((), self.lr, device=g.device)
        step = d * t  # (N,)
        self.x.view(-1).add_(step.to(self.x.dtype))
        self.prev_g = g.clone()
        self.prev_step = step

    def _push(self, s: torch.Tensor, y: torch.Tensor) -> None:
        p = self.k % self.m
        ys = torch.dot(y, s)
        ok = ys > 1e-10
        self.S[p] = s
        self.Y[p] = y
        self.rho[p] = torch.where(ok, 1.0 / ys, torch.zeros_like(ys))
        self.h_diag = torch.where(ok, ys / torch.dot(y, y), self.h_diag)
        self.SY[p, :] = self.Y @ s  # s_p . y_j
        self.SY[:, p] = self.S @ y  # s_i . y_p
        self.k += 1

    def _direction(self, g: torch.Tensor) -> torch.Tensor:
        """-H g by the two-loop recursion, as triangular solves in chronological order."""
        n = min(self.k, self.m)
        shift = self.k % self.m if self.k > self.m else 0  # ring slot of the oldest pair (when full)
        S, Y = self.S[:n], self.Y[:n]  # (n, N) in ring order

        def chrono(v: torch.Tensor) -> torch.Tensor:  # ring order -> oldest..newest
            return v.roll(-shift, 0) if shift else v

        def ring(v: torch.Tensor) -> torch.Tensor:  # oldest..newest -> ring order
            return v.roll(shift, 0) if shift else v

        rho = chrono(self.rho[:n])  # (n,)
        SY = self.SY[:n, :n]
        if shift:
            SY = SY.roll((-shift, -shift), (0, 1))  # (n, n) chronological
        q0 = -g
        # First loop (newest -> oldest): alpha_i = rho_i s_i.(q0 - sum_{j>i} alpha_j y_j)
        #   <=> (I + diag(rho) U) alpha = rho * S q0, U = strict upper part of S Y^T.
        a = chrono(S @ q0)  # (n,)
        alpha = torch.linalg.solve_triangular(rho[:, None] * SY, (rho * a)[:, None], upper=True,
                                              unitriangular=True)[:, 0]  # (n,)
        r0 = self.h_diag * (q0 - Y.t() @ ring(alpha))  # (N,)
        # Second loop (oldest -> newest) on delta = alpha - beta, beta_i = rho_i y_i.r_i
        #   <=> (I + diag(rho) L) delta = alpha - rho * Y r0, L = strict lower part of (S Y^T)^T.
        b = chrono(Y @ r0)  # (n,)
        delta = torch.linalg.solve_triangular(rho[:, None] * SY.t(), (alpha - rho * b)[:, None], upper=False,
                                              unitriangular=True)[:, 0]  # (n,)
        return r0 + S.t() @ ring(delta)  # (N,)
