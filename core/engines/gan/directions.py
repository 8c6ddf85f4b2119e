"""Which way a model translates: its directions, and the choice among them. Torch-free, so the job kinds
can check a requested direction at submit time with the same rule the engine applies when it loads."""

from __future__ import annotations

from collections.abc import Sequence

from core.errors import UserError

DIRECTIONS = ("AtoB", "BtoA")


def choose_direction(available: Sequence[str], direction: str, model: str = "this model") -> str:
    """``auto``: the model's only direction, or AtoB when it has both; otherwise ``direction`` if the model
    has a generator for it (a :class:`UserError` naming ``direction`` if not)."""
    if direction == "auto":
        return "AtoB" if "AtoB" in available else available[0]
    if direction not in available:
        raise UserError(f"{model} translates only {', '.join(sorted(available))}; it has no {direction} "
                        "generator", "direction")
    return direction
