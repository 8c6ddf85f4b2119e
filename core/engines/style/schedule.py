"""Coarse-to-fine schedules: optimise a small image first, upsample it, continue at the output size.

A step at half the size costs about a quarter of a full-size step, and the coarse solution already
holds the large-scale structure of the stylised image, so the full-size steps start much closer to
the optimum. ``steps`` always counts every step of every level (it is what the progress bar shows);
a schedule says how many of them run at which coarse scale, and the rest run at the output size.

Syntax of the ``schedule`` parameter:

* ``auto`` -- the schedule that won ``bench/style_transfer.py`` (see :data:`AUTO_LEVELS`), used when
  the output is large enough for the coarse levels to be meaningful;
* ``none`` -- everything at the output size;
* ``SCALE:STEPS[,SCALE:STEPS...]`` -- coarse levels, e.g. ``0.5:120`` runs 120 steps at half the size
  and the remaining ``steps - 120`` at the output size. Scales are in (0, 1) and increase.

Torch-free, so the job kind can validate a schedule in the web process.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from core.errors import UserError
from core.images import scaled_size

#: Coarse levels of the ``auto`` schedule as (scale, share of ``steps``), from the benchmark: at 256 px
#: and 300 steps, 50 steps at 128 px and 70 at 192 px, then 180 at 256 px. The output level needs
#: ~120-170 steps whatever came before (it must build the finest texture), so coarse steps beyond
#: these add time without saving any full-size steps; a single coarse level at 0.5 was ~15% slower
#: to the baseline's loss, and three levels starting at 0.25 slower still.
AUTO_LEVELS: tuple[tuple[float, float], ...] = ((0.5, 1 / 6), (0.75, 7 / 30))
#: ``auto`` uses no coarse level whose longest side would be below this (too little for VGG's
#: deep layers to see structure; below it a single level is as fast).
AUTO_MIN_COARSE = 96
#: At least this many steps stay at the output size under ``auto``.
AUTO_MIN_FINAL_STEPS = 10


@dataclass(frozen=True)
class Level:
    """One resolution of a schedule: image ``width`` x ``height`` (longest side ``longest``)."""

    longest: int
    width: int
    height: int
    steps: int
    is_output: bool


def parse_schedule(text: str, steps: int) -> list[tuple[float, int]] | None:
    """``None`` for ``auto``; otherwise the explicit coarse levels as ``[(scale, steps), ...]``."""
    spec = (text or "").strip().lower()
    if spec == "auto":
        return None
    if spec in ("none", "single", ""):
        return []
    levels: list[tuple[float, int]] = []
    for item in spec.split(","):
        scale_text, sep, steps_text = item.strip().partition(":")
        try:
            scale, n = float(scale_text), int(steps_text)
        except ValueError:
            raise UserError(f"schedule: {item.strip()!r} is not SCALE:STEPS (e.g. 0.5:100); "
                            "or use auto or none", "schedule") from None
        if not sep or not 0 < scale < 1:
            raise UserError(f"schedule: scale {scale_text} must be between 0 and 1 (exclusive)", "schedule")
        if n < 1:
            raise UserError(f"schedule: steps of level {scale_text} must be at least 1", "schedule")
        if levels and scale <= levels[-1][0]:
            raise UserError("schedule: scales must increase from coarse to fine", "schedule")
        levels.append((scale, n))
    if sum(n for _, n in levels) >= steps:
        raise UserError(f"schedule: coarse levels take {sum(n for _, n in levels)} of the {steps} steps; "
                        "leave at least one for the output size", "schedule")
    return levels


def plan_levels(schedule: str, size: int, steps: int, content_width: int, content_height: int,
                min_side: int = 1) -> list[Level]:
    """The levels to run for an output of longest side ``size`` from a content image of this shape.

    ``min_side`` is the smallest image side the chosen VGG layers can take; an explicit coarse level
    below it is an error, an ``auto`` one is dropped.
    """
    explicit = parse_schedule(schedule, steps)
    if explicit is None:
        coarse: list[tuple[float, int]] = []
        budget = steps - AUTO_MIN_FINAL_STEPS
        for scale, share in AUTO_LEVELS:
            n = int(round(steps * share))
            longest = round(size * scale)
            if longest >= max(AUTO_MIN_COARSE, min_side) and 0 < n <= budget:
                coarse.append((scale, n))
                budget -= n
    else:
        coarse = explicit
    levels: list[Level] = []
    for scale, n in coarse:
        longest = max(1, round(size * scale))
        w, h = scaled_size(content_width, content_height, longest)
        if min(w, h) < min_side:
            raise UserError(f"schedule: level {scale:g} would be {w}x{h} pixels, smaller than the {min_side} "
                            "pixels the chosen layers need", "schedule")
        levels.append(Level(longest, w, h, n, False))
    w, h = scaled_size(content_width, content_height, size)
    levels.append(Level(size, w, h, steps - sum(lv.steps for lv in levels), True))
    return levels


def check_sizes(levels: Sequence[Level], style_dims: Sequence[tuple[int, int]], style_scale: float,
                min_side: int) -> None:
    """Every image the levels will feed VGG must keep at least a pixel at the deepest layer used.

    ``style_dims`` are the style images' original sizes; each level scales them to
    ``style_scale`` x the level's longest side.
    """
    out = levels[-1]
    if min(out.width, out.height) < min_side:
        raise UserError(f"size: the output would be {out.width}x{out.height} pixels, but the chosen layers need "
                        f"at least {min_side} pixels on each side", "size")
    for lv in levels:
        for sw, sh in style_dims:
            w, h = scaled_size(sw, sh, max(1, round(lv.longest * style_scale)))
            if min(w, h) < min_side:
                raise UserError(f"style_scale: a style image would be {w}x{h} pixels at {lv.longest} px, but "
                                f"the chosen layers need at least {min_side} pixels on each side", "style_scale")
