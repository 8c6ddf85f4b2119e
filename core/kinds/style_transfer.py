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

from core.engines.style.options import StyleOptions, min_size_for, used_layers
from core.engines.style.schedule import check_sizes, plan_levels
from core.engines.vgg import weights_source
from core.errors import UserError
from core.kinds.base import InputSpec, JobKind, UploadInfo
from core.schema import Schema, resolve_job_device

if TYPE_CHECKING:  # pragma: no cover
    from core.kinds.context import JobContext

SCHEMA = Schema(
    kind="style_transfer",
    model=StyleOptions,
    description="Neural style transfer (Gatys et al.) on VGG-19: paint the content photo in the style of "
                "one or more paintings.",
)


def total_steps(params: Mapping[str, Any]) -> int:
    return int(params.get("steps", StyleOptions.model_fields["steps"].default))


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
    params["device"] = resolve_job_device(params["device"], getattr(ctx, "device", "auto"))
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
