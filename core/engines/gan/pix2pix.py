"""pix2pix (Isola et al. 2017): a conditional GAN on aligned pairs, with an L1 term (lambda_L1 = 100).

One :meth:`Pix2Pix.train_step` is the reference's ``optimize_parameters``: G makes fake_B from real_A;
D (which sees input and output stacked on channels, 6 channels) is updated on (A, fake_B) vs (A, B);
then G is updated on fooling the updated D plus L1 to the target. The input side is A for direction
AtoB and B for BtoA; the trainer swaps the batch, so here "A" always means "input".

As in :mod:`core.engines.gan.cyclegan`, D's real and fake passes run as one batch when D has no batch
norm (the reference's pix2pix default is batch norm, where they stay separate).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from core.engines.gan.losses import gan_loss, l1
from core.engines.gan.networks import GeneratorSpec, has_batch_norm, init_weights
from core.engines.gan.optim import adam, backward_step, scheduler, set_requires_grad
from core.engines.gan.options import TrainOptions
from core.engines.gan.precision import Precision
from core.engines.gan.preview import grid

#: What the sample grid's tiles show, row by row (drawn above them).
SAMPLE_LABELS = ("input", "output", "target")

Tensor = torch.Tensor


class Pix2Pix:
    loss_names = ("G_GAN", "G_L1", "D_real", "D_fake")

    def __init__(self, opts: TrainOptions, precision: Precision, total_iterations: int) -> None:
        self.opts, self.precision = opts, precision
        dev, fmt = precision.device, precision.memory_format()
        init_gen = torch.Generator().manual_seed(opts.seed)
        self.g_spec = opts.generator_spec()
        self.G = init_weights(self.g_spec.build(), opts.init_gain, init_gen).to(dev, memory_format=fmt)
        self.D = init_weights(opts.discriminator_spec().build(), opts.init_gain, init_gen).to(dev, memory_format=fmt)
        self.opt_G = adam(self.G.parameters(), opts.lr, opts.beta1, dev)
        self.opt_D = adam(self.D.parameters(), opts.lr, opts.beta1, dev)
        self.sched_G = scheduler(self.opt_G, total_iterations, opts.lr_decay_fraction)
        self.sched_D = scheduler(self.opt_D, total_iterations, opts.lr_decay_fraction)
        self.scaler = torch.amp.GradScaler(dev.type, enabled=precision.use_scaler)
        self.merge_D = opts.merge_passes and not has_batch_norm(self.D)
        self._visuals: list[list[Tensor]] = []

    def train_step(self, real_A: Tensor, real_B: Tensor) -> dict[str, Tensor]:
        """One iteration on input/target batches (N, 3, H, W) in [-1, 1]; returns detached losses."""
        o, autocast = self.opts, self.precision.autocast
        n = real_A.shape[0]
        with autocast():
            fake_B = self.G(real_A)                                  # (N, 3, H, W)
        fake_AB = torch.cat([real_A, fake_B.to(real_A.dtype)], 1)   # (N, 6, H, W): D is conditional
        real_AB = torch.cat([real_A, real_B], 1)
        # --- discriminator ----------------------------------------------------------------------------
        set_requires_grad([self.D], True)
        with autocast():
            if self.merge_D:
                pred_fake, pred_real = self.D(torch.cat([fake_AB.detach(), real_AB])).split(n)
            else:
                pred_fake, pred_real = self.D(fake_AB.detach()), self.D(real_AB)
        loss_D_fake = gan_loss(pred_fake, False, o.gan_mode)
        loss_D_real = gan_loss(pred_real, True, o.gan_mode)
        self.opt_D.zero_grad(set_to_none=True)
        backward_step((loss_D_fake + loss_D_real) * 0.5, self.opt_D, self.scaler)
        # --- generator --------------------------------------------------------------------------------
        set_requires_grad([self.D], False)
        with autocast():
            loss_G_GAN = gan_loss(self.D(fake_AB), True, o.gan_mode)
        loss_G_L1 = l1(fake_B, real_B) * o.lambda_L1
        self.opt_G.zero_grad(set_to_none=True)
        backward_step(loss_G_GAN + loss_G_L1, self.opt_G, self.scaler)
        self.scaler.update()
        self.sched_G.step()
        self.sched_D.step()
        self._visuals = [[real_A[0], fake_B[0], real_B[0]]]
        losses = {"G_GAN": loss_G_GAN, "G_L1": loss_G_L1, "D_real": loss_D_real, "D_fake": loss_D_fake}
        return {k: t.detach().float() for k, t in losses.items()}

    def sample_grid(self):
        """Input, output, target (labelled)."""
        return grid(self._visuals, labels=[SAMPLE_LABELS])

    @torch.no_grad()
    def visualize(self, real_A: Tensor, real_B: Tensor):
        """Input, output (eval mode, as translation runs), target: one row per sample."""
        mode = self.G.training
        try:
            self.G.eval()
            with self.precision.autocast():
                fake_B = self.G(real_A)
        finally:
            self.G.train(mode)
        return grid([[real_A[i], fake_B[i], real_B[i]] for i in range(real_A.shape[0])],
                    labels=[SAMPLE_LABELS] * real_A.shape[0])

    def generators(self) -> dict[str, tuple[nn.Module, GeneratorSpec]]:
        return {self.opts.direction: (self.G, self.g_spec)}

    def state_dict(self) -> dict[str, Any]:
        return {"G": self.G.state_dict(), "D": self.D.state_dict(),
                "opt_G": self.opt_G.state_dict(), "opt_D": self.opt_D.state_dict(),
                "sched_G": self.sched_G.state_dict(), "sched_D": self.sched_D.state_dict(),
                "scaler": self.scaler.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.G.load_state_dict(state["G"])
        self.D.load_state_dict(state["D"])
        self.opt_G.load_state_dict(state["opt_G"])
        self.opt_D.load_state_dict(state["opt_D"])
        self.sched_G.load_state_dict(state["sched_G"])
        self.sched_D.load_state_dict(state["sched_D"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
