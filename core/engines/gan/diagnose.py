"""Did training learn a translation at all? Two failures a finished run can be checked for.

A GAN run "succeeds" whatever its generators ended up doing. Two outcomes are common when the budget is
too small for the data (too few iterations, a weak discriminator, a hard mapping) and are visible
without knowing the right answer:

- **identity**: the generator returns its input almost unchanged. The cycle loss is then trivially
  low (G_B(G_A(a)) = a), so a CycleGAN can sit there while its discriminators keep winning. Flagged
  when the mean change is below :data:`IDENTITY_CHANGE` of the value range *and* the two domains'
  colour statistics differ by several times more than that (domains that really are alike may be
  translated by doing nothing);
- **constant**: every input gives nearly the same image (mode collapse). Flagged when the outputs vary
  less than :data:`CONSTANT_SPREAD` of what the inputs vary;
- **stalled**: the domains differ clearly in colour (per-channel mean and spread differ by at least
  :data:`CLEAR_GAP`), but the outputs' colour statistics moved less than :data:`MIN_PROGRESS` of the way
  from the source's towards the target's: the generator settled on a mapping the discriminator still
  rejects (near-identity colour mixes are the usual one). Domains that differ in texture rather than
  colour are not judged by this check.

Measured on a fixed batch of training samples in eval mode, as translation runs. Values are in the
[0, 1] range of pixel values; each check returns a sentence for the user, not a number to interpret.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

#: Mean |G(x) - x| below this share of the value range counts as "unchanged" (about 2.5 of 255 levels).
IDENTITY_CHANGE = 0.01
#: ... but only when the domains' colour statistics differ by at least this many times that change.
DOMAIN_GAP_FACTOR = 3.0
#: Output spread below this share of the input spread counts as "the same image for every input".
CONSTANT_SPREAD = 0.15
#: Colour statistics of the two domains that differ by this much (shares of the value range) are a
#: colour change that the outputs must at least partly make ...
CLEAR_GAP = 0.04
#: ... by moving at least this share of the way from the source's statistics to the target's.
MIN_PROGRESS = 0.25


@dataclass(frozen=True)
class DirectionReport:
    """What one generator does to a batch: all figures are shares of the [0, 1] value range."""

    direction: str  # "AtoB" | "BtoA"
    change: float  # mean |G(x) - x|
    input_spread: float  # std of the inputs (per channel, over samples and pixels, averaged)
    output_spread: float  # std of the outputs, measured the same way
    domain_gap: float  # difference of the source's and target's per-channel mean and std
    remaining_gap: float  # the same difference between the outputs and the target

    @property
    def progress(self) -> float:
        """Share of the colour-statistics gap the generator closed (1: outputs look like the target)."""
        return 1.0 - self.remaining_gap / self.domain_gap if self.domain_gap > 0 else 1.0

    def problems(self) -> list[str]:
        arrow = self.direction.replace("to", "→")
        out = []
        if self.input_spread > 0.02 and self.output_spread < CONSTANT_SPREAD * self.input_spread:
            out.append(f"the {arrow} generator gives nearly the same image whatever the input (its outputs vary "
                       f"{self.output_spread / self.input_spread:.0%} as much as its inputs): it collapsed to a "
                       "constant")
        elif self.change < IDENTITY_CHANGE and self.domain_gap > DOMAIN_GAP_FACTOR * self.change:
            out.append(f"the {arrow} generator returns its inputs almost unchanged (mean change {self.change:.1%} "
                       f"of the value range, while the two domains' colours differ by {self.domain_gap:.1%}): it "
                       "collapsed to the identity")
        elif self.domain_gap >= CLEAR_GAP and self.progress < MIN_PROGRESS:
            out.append(f"the {arrow} generator's outputs keep the colours of its inputs (they moved "
                       f"{max(self.progress, 0.0):.0%} of the way towards the target domain's colour statistics)")
        return out


def _channel_stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, C, H, W) -> per-channel mean and std over samples and pixels, each (C,)."""
    flat = x.transpose(0, 1).reshape(x.shape[1], -1)
    return flat.mean(1), flat.std(1)


@torch.no_grad()
def measure(direction: str, net: nn.Module, source: torch.Tensor, target: torch.Tensor) -> DirectionReport:
    """``source`` and ``target``: (N, 3, H, W) batches in [-1, 1] of the generator's input and output
    domains. The network runs in eval mode and is put back in its previous mode."""
    mode = net.training
    try:
        net.eval()
        fake = net(source).float()
    finally:
        net.train(mode)
    src, tgt, fake = source.float() / 2, target.float() / 2, fake / 2  # [-1, 1] -> shares of [0, 1]
    m_src, s_src = _channel_stats(src)
    m_tgt, s_tgt = _channel_stats(tgt)
    m_fake, s_fake = _channel_stats(fake)
    gap = ((m_src - m_tgt).abs() + (s_src - s_tgt).abs()).mean()
    remaining = ((m_fake - m_tgt).abs() + (s_fake - s_tgt).abs()).mean()
    return DirectionReport(direction, float((fake - src).abs().mean()), float(s_src.mean()),
                           float(s_fake.mean()), float(gap), float(remaining))


def collapse_warnings(reports: list[DirectionReport], iterations: int) -> list[str]:
    """One sentence per collapsed generator, with what to try, or nothing when training looks sound."""
    problems = [p for r in reports for p in r.problems()]
    if not problems:
        return []
    return [f"Training may not have learned a translation after {iterations} iterations: {p}. "
            "Try more iterations, more training images, or another seed; the sample grid shows what the "
            "model does." for p in problems]
