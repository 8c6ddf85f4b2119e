"""A training run that learned nothing is told apart from one that learned the mapping."""

from __future__ import annotations

import torch
from torch import nn

from core.engines.gan.diagnose import collapse_warnings, measure


class Swap(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flip(1)


class Constant(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.full_like(x, 0.3)


def domains() -> tuple[torch.Tensor, torch.Tensor]:
    """A: reddish noise images in [-1, 1]; B: the same with R and B swapped (bluish)."""
    g = torch.Generator().manual_seed(0)
    a = torch.rand(8, 3, 16, 16, generator=g) * torch.tensor([1.0, 0.6, 0.3]).view(1, 3, 1, 1)
    a = a * 2 - 1
    return a, a.flip(1)


def test_identity_generator_is_flagged_when_the_domains_differ() -> None:
    a, b = domains()
    report = measure("AtoB", nn.Identity(), a, b)
    assert report.change == 0 and report.domain_gap > 0.1
    [warning] = collapse_warnings([report], iterations=300)
    assert "after 300 iterations" in warning and "A→B" in warning and "identity" in warning


def test_identity_is_fine_when_the_domains_are_alike() -> None:
    a, _ = domains()
    assert collapse_warnings([measure("AtoB", nn.Identity(), a, a.clone())], 300) == []


def test_constant_generator_is_flagged() -> None:
    a, b = domains()
    [warning] = collapse_warnings([measure("BtoA", Constant(), b, a)], 300)
    assert "B→A" in warning and "constant" in warning


def test_a_generator_that_learned_the_mapping_passes() -> None:
    a, b = domains()
    assert collapse_warnings([measure("AtoB", Swap(), a, b), measure("BtoA", Swap(), b, a)], 300) == []


def test_measure_restores_the_training_mode() -> None:
    net = nn.Sequential(nn.Dropout(0.5))
    net.train()
    measure("AtoB", net, *domains())
    assert net.training
