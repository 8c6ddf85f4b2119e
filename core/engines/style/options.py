"""What a caller may ask of the style-transfer engine, and the checks that keep it meaningful.

Torch-free on purpose: the job kind validates parameters with these functions in the web process.
Every check raises :class:`core.errors.UserError` naming the parameter (``field``) so the API, the web
form and the CLI all point at the right input.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from pydantic import field_validator

from core.engines.vgg import LAYER_NAMES, POOLINGS, layer
from core.errors import UserError
from core.schema import DEVICE_FIELD, Device, Float, Int, KindParams, List, param

DEFAULT_CONTENT_LAYERS = ("relu4_2",)
DEFAULT_STYLE_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
INITS = ("content", "random", "image")
OPTIMIZERS = ("lbfgs", "adam")
PRECISIONS = ("auto", "fp32", "bf16")


class StyleOptions(KindParams):
    """Every control of the engine: the ``style_transfer`` kind's parameters, one model for the engine,
    the API, the web form, the CLI and the docs (:class:`core.schema.Schema` adapts it).

    Layer lists take ``name`` or ``name:weight`` items (weight defaults to 1), e.g.
    ``["relu1_1:2", "relu2_1"]``. ``style_blend_weights`` empty means equal weights; they are
    normalised to sum to 1. ``schedule`` is ``auto``, ``none`` or coarse levels ``SCALE:STEPS,...``
    (see :mod:`core.engines.style.schedule`); ``steps`` always counts every step of every level.
    """

    size: Int = param(256, "Longest side of the output in pixels (the other side keeps the content's aspect "
                      "ratio)", label="Output size", ge=16, le=4096)
    steps: Int = param(300, "Optimisation steps (one loss and gradient evaluation each, at every resolution of "
                       "the schedule)", ge=1, le=5000)
    style_weight: Float = param(1e6, "Weight of the style loss: higher = more painterly", advanced=True, ge=0,
                                le=1e12)
    content_weight: Float = param(1.0, "Weight of the content loss: higher = closer to the photo", advanced=True,
                                  ge=0, le=1e12)
    tv_weight: Float = param(1e-5, "Weight of total variation (smoothness); 0 turns it off", label="TV weight",
                             advanced=True, ge=0, le=1e6)
    style_blend_weights: List(float, ge=0) = param([], "One weight per style image, normalised to sum 1 (empty "
                                                   "= equal)", advanced=True)
    style_scale: Float = param(1.0, "Size of the style images relative to the output: smaller = larger brush "
                               "strokes", advanced=True, ge=0.05, le=4.0)
    original_colors: bool = param(False, "Keep the content's colours; transfer only luminance",
                                  label="Keep original colours", advanced=True)
    init: Literal["content", "random", "image"] = param("content", "Starting image: the content, seeded noise, or "
                                                        "the uploaded init image", label="Initial image",
                                                        advanced=True)
    seed: Int = param(0, "Seed of the random initial image (same inputs and seed give the same image on CPU)",
                      advanced=True, ge=0, le=2**31 - 1)
    content_layers: List(str) = param(list(DEFAULT_CONTENT_LAYERS), "VGG-19 layers for content, as name or "
                                      "name:weight (e.g. relu4_2)", advanced=True)
    style_layers: List(str) = param(list(DEFAULT_STYLE_LAYERS), "VGG-19 layers for style, as name or name:weight "
                                    "(e.g. relu1_1,relu2_1:0.5)", advanced=True)
    optimizer: Literal["lbfgs", "adam"] = param("lbfgs", "L-BFGS (fast convergence) or Adam (less memory)",
                                                advanced=True)
    lbfgs_history: Int = param(100, "L-BFGS history size (more = better curvature estimate, more memory)",
                               label="L-BFGS history", advanced=True, ge=1, le=500)
    learning_rate: Float = param(0.02, "Adam's learning rate (pixels are in [0, 1])", advanced=True, ge=1e-6,
                                 le=10.0)
    pooling: Literal["max", "avg"] = param("max", "Pooling in VGG-19: max (standard) or avg (smoother)",
                                           advanced=True)
    schedule: str = param("auto", "Resolution schedule: auto, none, or coarse levels SCALE:STEPS,... (e.g. "
                          "0.5:100 = 100 of the steps at half size first)", label="Resolution schedule",
                          advanced=True)
    precision: Literal["auto", "fp32", "bf16"] = param("auto", "Arithmetic of the network: auto (bf16 where the "
                                                       "hardware has bf16 matrix units), fp32 or bf16; the reported "
                                                       "loss is always fp32", advanced=True)
    device: Device = DEVICE_FIELD

    @field_validator("content_layers", "style_layers")
    @classmethod
    def _layers(cls, items: list[str]) -> list[str]:
        return normalize_layers(items)

    @field_validator("schedule")
    @classmethod
    def _schedule(cls, value: str) -> str:
        """Syntax only; the step budget is checked with ``steps`` in :meth:`check`."""
        from core.engines.style.schedule import parse_schedule

        parse_schedule(value, 10**9)
        return value.strip().lower() or "auto"

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> "StyleOptions":
        """From a stored parameter dict (already validated); keys the engine does not know are ignored."""
        return cls.model_validate({k: v for k, v in params.items() if k in cls.model_fields and v is not None})

    def check(self, n_styles: int, has_init_image: bool) -> None:
        """Raise :class:`UserError` for any value the engine cannot honour."""
        _positive_int(self.size, "size")
        _positive_int(self.steps, "steps")
        parse_layers(self.content_layers, "content_layers", allow_empty=True)
        parse_layers(self.style_layers, "style_layers", allow_empty=True)
        for name in ("content_weight", "style_weight", "tv_weight"):
            _non_negative(getattr(self, name), name)
        if not self.content_layers and not self.style_layers:
            raise UserError("content_layers and style_layers are both empty: nothing to optimise", "style_layers")
        if n_styles < 1:
            raise UserError("at least one style image is needed", "style")
        blend_weights(self.style_blend_weights, n_styles)
        if not (math.isfinite(self.style_scale) and self.style_scale > 0):
            raise UserError(f"style_scale must be greater than 0, got {self.style_scale}", "style_scale")
        _choice(self.init, INITS, "init")
        if self.init == "image" and not has_init_image:
            raise UserError("init is 'image' but no init image was given", "init")
        _choice(self.optimizer, OPTIMIZERS, "optimizer")
        _choice(self.pooling, POOLINGS, "pooling")
        _choice(self.precision, PRECISIONS, "precision")
        _positive_int(self.lbfgs_history, "lbfgs_history")
        if not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
            raise UserError(f"learning_rate must be greater than 0, got {self.learning_rate}", "learning_rate")
        from core.engines.style.schedule import parse_schedule

        parse_schedule(self.schedule, self.steps)


def parse_layers(items: Sequence[str], field: str, *, allow_empty: bool = False) -> dict[str, float]:
    """``["relu1_1:2", "relu2_1"]`` -> ``{"relu1_1": 2.0, "relu2_1": 1.0}`` (order kept).

    A layer named twice is an error rather than a silent merge: it is almost always a typo.
    """
    try:
        out = _parse_layers(items)
    except ValueError as exc:
        raise UserError(f"{field}: {exc}", field) from None
    if not out and not allow_empty:
        raise UserError(f"{field}: name at least one layer", field)
    return out


def _parse_layers(items: Sequence[str]) -> dict[str, float]:
    out: dict[str, float] = {}
    for raw in items:
        name, sep, weight_text = str(raw).strip().lower().partition(":")
        name = name.strip()
        if name not in LAYER_NAMES:
            raise ValueError(f"unknown VGG-19 layer {name!r}; use names like conv1_1, relu4_2, pool5 "
                             "(conv/relu 1_1..5_4, pool1..pool5)")
        if name in out:
            raise ValueError(f"layer {name} is listed twice")
        weight = 1.0
        if sep:
            try:
                weight = float(weight_text)
            except ValueError:
                raise ValueError(f"weight of {name} must be a number, got {weight_text!r}") from None
            if not math.isfinite(weight) or weight < 0:
                raise ValueError(f"weight of {name} must be 0 or more, got {weight_text}")
        out[name] = weight
    return out


def used_layers(options: StyleOptions) -> list[str]:
    """The VGG layers a run evaluates: those with a non-zero weight in a term with a non-zero weight."""
    layers: list[str] = []
    if options.content_weight > 0:
        layers += [n for n, w in parse_layers(options.content_layers, "content_layers", allow_empty=True).items()
                   if w > 0]
    if options.style_weight > 0:
        layers += [n for n, w in parse_layers(options.style_layers, "style_layers", allow_empty=True).items()
                   if w > 0 and n not in layers]
    return layers


def normalize_layers(items: Sequence[str]) -> list[str]:
    """Schema ``normalize`` hook: check layer items and return them in canonical ``name[:weight]`` form.

    Raises ``ValueError``, which the schema reports under the parameter's own name."""
    parsed = _parse_layers(items)
    return [name if w == 1.0 else f"{name}:{w:g}" for name, w in parsed.items()]


def blend_weights(weights: Sequence[float], n_styles: int) -> list[float]:
    """Blend weights for ``n_styles`` styles, normalised to sum to 1 (empty = equal)."""
    if not weights:
        return [1.0 / n_styles] * n_styles
    if len(weights) != n_styles:
        raise UserError(f"style_blend_weights has {len(weights)} values for {n_styles} style images; "
                        "give one weight per style image", "style_blend_weights")
    if any(not math.isfinite(w) or w < 0 for w in weights):
        raise UserError("style_blend_weights must be 0 or more", "style_blend_weights")
    total = float(sum(weights))
    if total <= 0:
        raise UserError("style_blend_weights must not all be 0", "style_blend_weights")
    return [float(w) / total for w in weights]


def min_size_for(layers: Sequence[str]) -> int:
    """Smallest image side for which every layer in ``layers`` still has at least one pixel."""
    return max((layer(n).scale for n in layers), default=1)


def _positive_int(value: int, field: str) -> None:
    if not isinstance(value, int) or value < 1:
        raise UserError(f"{field} must be a whole number of at least 1, got {value!r}", field)


def _non_negative(value: float, field: str) -> None:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
        raise UserError(f"{field} must be a number of at least 0, got {value!r}", field)


def _choice(value: str, choices: tuple[str, ...], field: str) -> None:
    if value not in choices:
        raise UserError(f"{field} must be one of {', '.join(choices)}, got {value!r}", field)
