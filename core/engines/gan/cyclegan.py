"""CycleGAN (Zhu et al. 2017): two generators, two discriminators, cycle and identity losses.

One :meth:`CycleGAN.train_step` is the reference's ``optimize_parameters``: forward both cycles, update
G_A and G_B together on adversarial + cycle + identity losses (discriminators frozen), then update D_A
and D_B on real vs. pooled fake images. Naming follows the reference: G_A maps A->B and D_A judges
domain B; ``idt_A = G_A(real_B)``.

Speed without changing the maths: with instance norm (or none) every sample of a batch is processed
independently, so the passes of one generator that do not depend on each other run as *one* batched
call (3 generator calls per step instead of 6, 1 discriminator call per network in the D step instead
of 2). Each call reorders the weights for oneDNN/cuDNN and pays per-layer overhead once instead of
twice. With batch norm the samples would share statistics, so passes stay separate there.
"""

from __future__ import annotations

from itertools import chain
from typing import Any

import torch
from torch import nn

from core.engines.gan.losses import gan_loss, l1
from core.engines.gan.networks import GeneratorSpec, has_batch_norm, init_weights
from core.engines.gan.optim import adam, backward_step, scheduler, set_requires_grad
from core.engines.gan.options import TrainOptions
from core.engines.gan.pool import ImagePool
from core.engines.gan.precision import Precision
from core.engines.gan.preview import grid

#: What the sample grid's tiles show, row by row (drawn above them).
SAMPLE_LABELS = (("real A", "fake B", "reconstructed A"), ("real B", "fake A", "reconstructed B"))

Tensor = torch.Tensor


class CycleGAN:
    loss_names = ("D_A", "G_A", "cycle_A", "idt_A", "D_B", "G_B", "cycle_B", "idt_B")

    def __init__(self, opts: TrainOptions, precision: Precision, total_iterations: int) -> None:
        self.opts, self.precision = opts, precision
        dev, fmt = precision.device, precision.memory_format()
        init_gen = torch.Generator().manual_seed(opts.seed)
        self.g_spec = opts.generator_spec()
        d_spec = opts.discriminator_spec()

        def make(build: Any) -> nn.Module:
            return init_weights(build(), opts.init_gain, init_gen).to(dev, memory_format=fmt)

        self.G_A, self.G_B = make(self.g_spec.build), make(self.g_spec.build)
        self.D_A, self.D_B = make(d_spec.build), make(d_spec.build)
        self.nets = {"G_A": self.G_A, "G_B": self.G_B, "D_A": self.D_A, "D_B": self.D_B}
        self.opt_G = adam(chain(self.G_A.parameters(), self.G_B.parameters()), opts.lr, opts.beta1, dev)
        self.opt_D = adam(chain(self.D_A.parameters(), self.D_B.parameters()), opts.lr, opts.beta1, dev)
        self.sched_G = scheduler(self.opt_G, total_iterations, opts.lr_decay_fraction)
        self.sched_D = scheduler(self.opt_D, total_iterations, opts.lr_decay_fraction)
        self.pool_A = ImagePool(opts.pool_size, seed=opts.seed + 1)  # holds fake A images, for D_B
        self.pool_B = ImagePool(opts.pool_size, seed=opts.seed + 2)  # holds fake B images, for D_A
        self.scaler = torch.amp.GradScaler(dev.type, enabled=precision.use_scaler)
        self.merge_G = opts.merge_passes and not has_batch_norm(self.G_A)
        self.merge_D = opts.merge_passes and not has_batch_norm(self.D_A)
        self._visuals: list[list[Tensor]] = []

    # -----------------------------------------------------------------------------------------------
    def _generate(self, real_A: Tensor, real_B: Tensor, identity: bool) -> dict[str, Tensor]:
        n = real_A.shape[0]
        if not self.merge_G:
            out = {"fake_B": self.G_A(real_A), "fake_A": self.G_B(real_B)}
            out["rec_A"], out["rec_B"] = self.G_B(out["fake_B"]), self.G_A(out["fake_A"])
            if identity:
                out["idt_A"], out["idt_B"] = self.G_A(real_B), self.G_B(real_A)
            return out
        out = {}
        if identity:  # G_B on [real_B | real_A] -> [fake_A | idt_B]; (2N, 3, H, W)
            out["fake_A"], out["idt_B"] = self.G_B(torch.cat([real_B, real_A])).split(n)
            # G_A on [real_A | real_B | fake_A] -> [fake_B | idt_A | rec_B]; (3N, 3, H, W)
            out["fake_B"], out["idt_A"], out["rec_B"] = self.G_A(torch.cat([real_A, real_B, out["fake_A"]])).split(n)
        else:
            out["fake_A"] = self.G_B(real_B)
            out["fake_B"], out["rec_B"] = self.G_A(torch.cat([real_A, out["fake_A"]])).split(n)
        out["rec_A"] = self.G_B(out["fake_B"])  # depends on fake_B: its own call
        return out

    def _d_loss(self, D: nn.Module, real: Tensor, fake: Tensor) -> Tensor:
        mode = self.opts.gan_mode
        if self.merge_D:  # (2N, 3, H, W) -> two (N, 1, H', W') halves
            pred_real, pred_fake = D(torch.cat([real, fake])).split(real.shape[0])
        else:
            pred_real, pred_fake = D(real), D(fake)
        return (gan_loss(pred_real, True, mode) + gan_loss(pred_fake, False, mode)) * 0.5

    def train_step(self, real_A: Tensor, real_B: Tensor) -> dict[str, Tensor]:
        """One iteration on (N, 3, H, W) batches in [-1, 1]; returns detached float32 loss scalars."""
        o, autocast = self.opts, self.precision.autocast
        identity = o.lambda_identity > 0
        # --- generators: adversarial + cycle + identity, discriminators frozen -----------------------
        set_requires_grad([self.D_A, self.D_B], False)
        with autocast():
            v = self._generate(real_A, real_B, identity)
            loss_G_A = gan_loss(self.D_A(v["fake_B"]), True, o.gan_mode)
            loss_G_B = gan_loss(self.D_B(v["fake_A"]), True, o.gan_mode)
        loss_cycle_A = l1(v["rec_A"], real_A) * o.lambda_A
        loss_cycle_B = l1(v["rec_B"], real_B) * o.lambda_B
        if identity:
            loss_idt_A = l1(v["idt_A"], real_B) * o.lambda_B * o.lambda_identity
            loss_idt_B = l1(v["idt_B"], real_A) * o.lambda_A * o.lambda_identity
        else:
            loss_idt_A = loss_idt_B = torch.zeros((), device=real_A.device)
        loss_G = loss_G_A + loss_G_B + loss_cycle_A + loss_cycle_B + loss_idt_A + loss_idt_B
        self.opt_G.zero_grad(set_to_none=True)
        backward_step(loss_G, self.opt_G, self.scaler)
        # --- discriminators: real vs. fake from the history pool ---------------------------------------
        set_requires_grad([self.D_A, self.D_B], True)
        fake_B = self.pool_B.query(v["fake_B"].detach())
        fake_A = self.pool_A.query(v["fake_A"].detach())
        with autocast():
            loss_D_A = self._d_loss(self.D_A, real_B, fake_B)
            loss_D_B = self._d_loss(self.D_B, real_A, fake_A)
        self.opt_D.zero_grad(set_to_none=True)
        backward_step(loss_D_A + loss_D_B, self.opt_D, self.scaler)
        self.scaler.update()
        self.sched_G.step()
        self.sched_D.step()
        self._visuals = [[real_A[0], v["fake_B"][0], v["rec_A"][0]], [real_B[0], v["fake_A"][0], v["rec_B"][0]]]
        losses = {"D_A": loss_D_A, "G_A": loss_G_A, "cycle_A": loss_cycle_A, "idt_A": loss_idt_A,
                  "D_B": loss_D_B, "G_B": loss_G_B, "cycle_B": loss_cycle_B, "idt_B": loss_idt_B}
        return {k: t.detach().float() for k, t in losses.items()}

    def sample_grid(self):
        """Row 1: real A, fake B, reconstructed A. Row 2: real B, fake A, reconstructed B (labelled)."""
        return grid(self._visuals, labels=SAMPLE_LABELS)

    @torch.no_grad()
    def visualize(self, real_A: Tensor, real_B: Tensor):
        """The sample grid of a given batch in eval mode (as translation runs): per sample, a row
        real A, fake B, rec A, real B, fake A, rec B."""
        nets = (self.G_A, self.G_B)
        modes = [n.training for n in nets]
        try:
            for n in nets:
                n.eval()
            with self.precision.autocast():
                fake_B, fake_A = self.G_A(real_A), self.G_B(real_B)
                rec_A, rec_B = self.G_B(fake_B), self.G_A(fake_A)
        finally:
            for n, m in zip(nets, modes):
                n.train(m)
        return grid([[real_A[i], fake_B[i], rec_A[i], real_B[i], fake_A[i], rec_B[i]] for i in range(real_A.shape[0])],
                    labels=[SAMPLE_LABELS[0] + SAMPLE_LABELS[1]] * real_A.shape[0])

    def generators(self) -> dict[str, tuple[nn.Module, GeneratorSpec]]:
        return {"AtoB": (self.G_A, self.g_spec), "BtoA": (self.G_B, self.g_spec)}

    # -----------------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            **{name: net.state_dict() for name, net in self.nets.items()},
            "opt_G": self.opt_G.state_dict(), "opt_D": self.opt_D.state_dict(),
            "sched_G": self.sched_G.state_dict(), "sched_D": self.sched_D.state_dict(),
            "pool_A": self.pool_A.state_dict(), "pool_B": self.pool_B.state_dict(),
            "scaler": self.scaler.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name, net in self.nets.items():
            net.load_state_dict(state[name])
        self.opt_G.load_state_dict(state["opt_G"])
        self.opt_D.load_state_dict(state["opt_D"])
        self.sched_G.load_state_dict(state["sched_G"])
        self.sched_D.load_state_dict(state["sched_D"])
        self.pool_A.load_state_dict(state["pool_A"], self.precision.device)
        self.pool_B.load_state_dict(state["pool_B"], self.precision.device)
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
