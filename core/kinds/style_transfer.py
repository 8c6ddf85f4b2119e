"""The ``style_transfer`` job kind: one schema for API, web form and CLI, and how a job runs.

Parameter names are the CLI's long options with underscores (``--content-weight`` <-> ``content_weight``).
Uploads: ``content`` (one image), ``style`` (one or more), ``init`` (optional; used when ``init`` is
``image``). Importing this module imports no torch: the web process validates with it; :func:`run`
imports the engine when a worker runs the job.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from core.engines.style.options import (DEFAULT_CONTENT_LAYERS, DEFAULT_STYLE_LAYERS, INITS,
                                        OPTIMIZERS, PRECISIONS, StyleOptions, min_size_for, normalize_layers,
                                        used_layers)
from core.engines.style.schedule import check_sizes, parse_schedule, plan_levels
from core.engines.vgg import POOLINGS, weights_source
from core.errors import UserError
from core.kinds.base import DEVICE_PARAM, InputSpec, JobKind, UploadInfo
from core.schema import Param, Schema

if TYPE_CHECKING:  # pragma: no cover
    from core.kinds.context import JobContext

_D = StyleOptions()


def _normalize_schedule(value: str) -> str:
    """Syntax check only (the step budget is checked with ``steps`` in :func:`check`)."""
    parse_schedule(value, 10**9)
    return value.strip().lower() or "auto"


SCHEMA = Schema(
    kind="style_transfer",
    description="Neural style transfer (Gatys et al.) on VGG-19: paint the content photo in the style of "
                "one or more paintings.",
    params=(
        Param("size", "int", _D.size, "Longest side of the output in pixels (the other side keeps the content's "
              "aspect ratio)", minimum=16, maximum=4096, label="Output size"),
        Param("steps", "int", _D.steps, "Optimisation steps (one loss and gradient evaluation each, at every "
              "resolution of the schedule)", minimum=1, maximum=5000),
        Param("style_weight", "float", _D.style_weight, "Weight of the style loss: higher = more painterly",
              minimum=0, maximum=1e12, advanced=True),
        Param("content_weight", "float", _D.content_weight, "Weight of the content loss: higher = closer to "
              "the photo", minimum=0, maximum=1e12, advanced=True),
        Param("tv_weight", "float", _D.tv_weight, "Weight of total variation (smoothness); 0 turns it off",
              minimum=0, maximum=1e6, advanced=True, label="TV weight"),
        Param("style_blend_weights", "float_list", [], "One weight per style image, normalised to sum 1 "
              "(empty = equal)", minimum=0, advanced=True),
        Param("style_scale", "float", _D.style_scale, "Size of the style images relative to the output: smaller "
              "= larger brush strokes", minimum=0.05, maximum=4.0, advanced=True),
        Param("original_colors", "bool", _D.original_colors, "Keep the content's colours; transfer only "
              "luminance", advanced=True, label="Keep original colours"),
        Param("init", "choice", _D.init, "Starting image: the content, seeded noise, or the uploaded init "
              "image", choices=INITS, advanced=True, label="Initial image"),
        Param("seed", "int", _D.seed, "Seed of the random initial image (same inputs and seed give the same "
              "image on CPU)", minimum=0, maximum=2**31 - 1, advanced=True),
        Param("content_layers", "str_list", list(DEFAULT_CONTENT_LAYERS), "VGG-19 layers for content, as "
              "name or name:weight (e.g. relu4_2)", advanced=True, normalize=normalize_layers),
        Param("style_layers", "str_list", list(DEFAULT_STYLE_LAYERS), "VGG-19 layers for style, as name or "
              "name:weight (e.g. relu1_1,relu2_1:0.5)", advanced=True, normalize=normalize_layers),
        Param("optimizer", "choice", _D.optimizer, "L-BFGS (fast convergence) or Adam (less memory)",
              choices=OPTIMIZERS, advanced=True),
        Param("lbfgs_history", "int", _D.lbfgs_history, "L-BFGS history size (more = better curvature "
              "estimate, more memory)", minimum=1, maximum=500, advanced=True, label="L-BFGS history"),
        Param("learning_rate", "float", _D.learning_rate, "Adam's learning rate (pixels are in [0, 1])",
              minimum=1e-6, maximum=10.0, advanced=True),
        Param("pooling", "choice", _D.pooling, "Pooling in VGG-19: max (standard) or avg (smoother)",
              choices=POOLINGS, advanced=True),
        Param("schedule", "str", _D.schedule, "Resolution schedule: auto, none, or coarse levels SCALE:STEPS,... "
              "(e.g. 0.5:100 = 100 of the steps at half size first)", advanced=True,
              normalize=_normalize_schedule),
        Param("precision", "choice", _D.precision, "Arithmetic of the network: auto (bf16 where the hardware "
              "has bf16 matrix units), fp32 or bf16; the reported loss is always fp32", choices=PRECISIONS,
              advanced=True),
        DEVICE_PARAM,
    ),
)


def total_steps(params: Mapping[str, Any]) -> int:
    return int(params.get("steps", _D.steps))


def check(params: Mapping[str, Any], uploads: list[UploadInfo]) -> None:
    """Cross-field rules, at submit time: blend weights per style, init image, schedule, tiny sizes."""
    styles = [u for u in uploads if u.role == "style"]
    has_init = any(u.role == "init" for u in uploads)
    options = StyleOptions.from_params(params)
    options.check(len(styles), has_init)
    if has_init and options.init != "image":
        raise UserError("an init image was uploaded but init is not 'image'; set init to image or leave the "
                        "init upload out", "init")
    content = next((u for u in uploads if u.role == "content"), None)
    if content is None or content.width is None or content.height is None:
        return
    min_side = min_size_for(used_layers(options))
    levels = plan_levels(options.schedule, options.size, options.steps, content.width, content.height, min_side)
    dims = [(u.width, u.height) for u in styles if u.width and u.height]
    check_sizes(levels, dims, options.style_scale, min_side)


def run(ctx: "JobContext") -> None:
    """Load the uploads, run the engine with ``ctx.progress``, store ``result.png`` and the final metrics."""
    from core.engines.style_transfer import stylize
    from core.images import encode_png
    from core.settings import Settings

    settings = ctx.settings if ctx.settings is not None else Settings()
    params = SCHEMA.validate(dict(ctx.params))
    if params["size"] > settings.max_output_size:
        raise UserError(f"size {params['size']} is above this service's limit of {settings.max_output_size} px "
                        "(ATELIER_MAX_OUTPUT_SIZE)", "size")
    t0 = time.perf_counter()
    content_files, style_files, init_files = ctx.inputs_for("content"), ctx.inputs_for("style"), ctx.inputs_for("init")
    if not content_files:
        raise UserError("a content image is required", "content")
    # Decoded no larger than the job uses: the output's size, and the styles at style_scale of it.
    size = params["size"]
    content = ctx.load_image(content_files[0], longest=size)
    styles = [ctx.load_image(f, longest=max(1, round(size * params["style_scale"]))) for f in style_files]
    init_image = ctx.load_image(init_files[0], longest=size) if init_files and params["init"] == "image" else None
    image_seconds = time.perf_counter() - t0
    if params["device"] == "auto" and getattr(ctx, "device", "auto") in ("cpu", "cuda"):
        params["device"] = ctx.device
    weights = settings.vgg19_weights
    if weights_source(weights) == "random":
        ctx.progress.log("VGG-19 weights are random (ATELIER_VGG19_WEIGHTS=random): this shows how style transfer "
                         "works, but the result is not artistic.")
    result = stylize(content, styles, StyleOptions.from_params(params), weights=weights, init_image=init_image,
                     progress=ctx.progress)
    ctx.save_output("result.png", encode_png(result.image), "image/png")
    metrics = result.metrics()
    metrics["load_seconds"] = round(result.load_seconds + image_seconds, 3)
    metrics["output_size"] = list(result.image.size)
    ctx.set_metrics(metrics)


RANDOM_WEIGHTS_NOTICE = ("This server runs VGG-19 with random weights (ATELIER_VGG19_WEIGHTS=random): the result "
                         "shows the optimisation working, but it is not artistic.")

KIND = JobKind(
    name="style_transfer",
    title="Style transfer",
    schema=SCHEMA,
    inputs=(
        InputSpec("content", "The photo to repaint"),
        InputSpec("style", "One or more paintings whose style to use", multiple=True),
        InputSpec("init", "Optional starting image (with init = image)", required=False),
    ),
    run=run,
    total_steps=total_steps,
    check=check,
    notices=lambda settings: [RANDOM_WEIGHTS_NOTICE] if settings.vgg19_weights == "random" else [],
    description="Neural style transfer with VGG-19: L-BFGS or Adam, several styles, original colours, "
                "coarse-to-fine schedule.",
)
