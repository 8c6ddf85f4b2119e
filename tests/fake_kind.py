"""A cheap job kind for testing the job layer without an ML engine: it walks ``steps`` steps,
reporting a loss, previewing, honouring cancel, and writes its input back as the result."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from core.errors import JobFailure
from core.images import encode_png
from core.kinds import registry
from core.kinds.base import InputSpec, JobKind
from core.kinds.context import JobContext
from typing import Literal

from core.schema import Float, Int, KindParams, Schema, param


class EchoParams(KindParams):
    steps: Int = param(5, "how many steps", ge=1, le=1000)
    delay: Float = param(0.0, "seconds per step", ge=0, le=5)
    outcome: Literal["succeed", "fail", "crash", "oom", "oom-text"] = param("succeed", "what happens")
    warning: str = param("", "a warning to raise while running (empty: none)")


SCHEMA = Schema("echo", EchoParams)


def run(ctx: JobContext) -> None:
    p: dict[str, Any] = dict(ctx.params)
    [image_file] = ctx.inputs_for("image")
    img = ctx.load_image(image_file)
    for step in range(1, p["steps"] + 1):
        ctx.progress.check_cancel()
        time.sleep(p["delay"])
        ctx.progress.report(step, p["steps"], {"loss": 1.0 / step})
        if ctx.progress.preview_every and step % ctx.progress.preview_every == 0:
            ctx.progress.preview(step, lambda: img)
    if p["warning"]:
        ctx.warn(p["warning"])
    if p["outcome"] == "fail":
        raise JobFailure("The echo job was asked to fail.")
    if p["outcome"] == "crash":
        raise RuntimeError("secret internal detail")
    if p["outcome"] == "oom":
        import torch

        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
    if p["outcome"] == "oom-text":  # says "out of memory" but is another error: not an OOM
        raise RuntimeError("the cache ran out of memory slots")
    ctx.save_output("result.png", encode_png(img), "image/png")
    ctx.set_metrics({"final": 1.0 / p["steps"]})


ECHO = JobKind(name="echo", title="Echo", schema=SCHEMA, inputs=(InputSpec("image", "any image"),), run=run,
               total_steps=lambda params: int(params["steps"]), notices=lambda settings: ["just a test kind"])


@pytest.fixture()
def echo_kind(monkeypatch: pytest.MonkeyPatch) -> Iterator[JobKind]:
    """Register the echo kind next to the built-in ones for one test."""
    original = registry.builtin_kinds
    monkeypatch.setattr(registry, "builtin_kinds", lambda: (*original(), ECHO))
    registry.job_kinds.cache_clear()
    yield ECHO
    registry.job_kinds.cache_clear()
