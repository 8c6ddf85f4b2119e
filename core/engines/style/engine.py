"""The style-transfer loop: levels, optimiser, progress, previews, cancel, and the final fp32 loss.

Speed comes from being smarter, not from doing less of the documented objective:

* the network runs in bf16 where the hardware has bf16 matrix units (AMX or AVX512-BF16 on CPU,
  tensor cores on CUDA), with weights cast once instead of on every step; Gram matrices and losses
  stay fp32;
* a coarse-to-fine schedule (see :mod:`.schedule`) spends early steps on a quarter of the pixels;
* targets (content activations, blended style Grams) are computed once per level; layers deeper
  than the deepest one used are never run; zero-weight terms are skipped;
* L-BFGS's two-loop recursion runs as six mat-vecs (see :mod:`.lbfgs`);
* on CUDA nothing in the step loop waits for the GPU: losses are recorded on the device with CUDA
  events and read in batches about twice a second.

Whatever ran in bf16, the reported final ``loss`` is the documented objective of the final image (the
8-bit pixels that are saved) computed in fp32.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from core.engines.device import cpu_has_fast_bf16, resolve_device
from core.engines.progress import Progress
from core.engines.style.color import keep_colors
from core.engines.style.lbfgs import LBFGS
from core.engines.reservations import reserve
from core.engines.style.memory import available_bytes, estimate_bytes, format_bytes, largest_fitting_size
from core.engines.style.objective import Objective
from core.engines.style.options import StyleOptions, blend_weights, min_size_for, parse_layers, used_layers
from core.engines.style.schedule import Level, check_sizes, plan_levels
from core.engines.vgg import VGG19Features, load_vgg19, weights_source
from core.errors import JobFailure
from core.images import resize_longest, scaled_size

#: On CUDA, per-step losses are read back at most this often (each read waits for the GPU).
CUDA_FLUSH_SECONDS = 0.5

StepHook = Callable[[int, Level, torch.Tensor, torch.Tensor], None]


@dataclass
class StyleResult:
    """What a run produced. Losses are the fp32 objective of ``image``'s 8-bit pixels; ``trace`` holds
    ``(seconds since optimisation began, loss)`` for each step at the output size."""

    image: Image.Image
    loss: float
    content_loss: float
    style_loss: float
    tv_loss: float
    steps: int
    seconds: float
    load_seconds: float
    trace: list[tuple[float, float]] = field(default_factory=list)
    device: str = "cpu"
    precision: str = "fp32"
    weights: str = "random"
    levels: list[tuple[int, int, int]] = field(default_factory=list)  # (width, height, steps)

    def metrics(self) -> dict[str, Any]:
        return {"loss": self.loss, "content_loss": self.content_loss, "style_loss": self.style_loss,
                "tv_loss": self.tv_loss, "steps": self.steps, "seconds": round(self.seconds, 3),
                "load_seconds": round(self.load_seconds, 3), "device": self.device,
                "precision": self.precision, "weights": self.weights,
                "levels": [f"{w}x{h}:{n}" for w, h, n in self.levels]}


def resolve_precision(name: str, device: torch.device) -> torch.dtype:
    """``auto`` is bf16 where the hardware has bf16 matrix units, else fp32."""
    if name == "fp32":
        return torch.float32
    if name == "bf16":
        return torch.bfloat16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    return torch.bfloat16 if cpu_has_fast_bf16() else torch.float32


def to_tensor(img: Image.Image, device: torch.device) -> torch.Tensor:
    """PIL RGB -> (1, 3, H, W) fp32 in [0, 1]."""
    arr = np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0  # (H, W, 3)
    return torch.from_numpy(arr).permute(2, 0, 1).unsqueeze(0).contiguous().to(device)


def to_image(x: torch.Tensor) -> Image.Image:
    """(1, 3, H, W) in [0, 1] -> PIL RGB, rounding to the nearest 8-bit value."""
    arr = (x.detach()[0].clamp(0, 1) * 255.0).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(arr, "RGB")


def quantize(x: torch.Tensor) -> torch.Tensor:
    """The exact pixel values :func:`to_image` saves, as fp32 in [0, 1]."""
    return (x.clamp(0, 1) * 255.0).round() / 255.0


class _Recorder:
    """Per-step losses and times, reported to ``progress`` and kept for the output-size trace.

    On CPU every step is reported at once (reading a CPU tensor costs nothing). On CUDA the (4,) loss
    vector and a timing event are kept on the device and read in batches, so the host never waits for
    the GPU inside the step loop.
    """

    def __init__(self, device: torch.device, progress: Progress, total: int) -> None:
        self.cuda = device.type == "cuda"
        self.progress, self.total = progress, total
        self.pending: list[tuple[int, bool, torch.Tensor, Any]] = []
        self.trace: list[tuple[float, float]] = []
        self.t0 = time.perf_counter()
        self.last_flush = self.t0
        self.start_event = None
        if self.cuda:
            self.start_event = torch.cuda.Event(enable_timing=True)
            self.start_event.record()

    def record(self, step: int, is_output: bool, parts: torch.Tensor) -> None:
        if self.cuda:
            ev = torch.cuda.Event(enable_timing=True)
            ev.record()
            self.pending.append((step, is_output, parts, ev))
            if time.perf_counter() - self.last_flush >= CUDA_FLUSH_SECONDS:
                self.flush()
        else:
            self.pending.append((step, is_output, parts, time.perf_counter() - self.t0))
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        if self.cuda:
            self.pending[-1][3].synchronize()
            values = torch.stack([p[2] for p in self.pending]).tolist()
            assert self.start_event is not None
            seconds = [self.start_event.elapsed_time(p[3]) / 1000.0 for p in self.pending]
        else:
            values = [p[2].tolist() for p in self.pending]
            seconds = [p[3] for p in self.pending]
        for (step, is_output, _, _), (loss, content, style, tv), secs in zip(self.pending, values, seconds):
            if not math.isfinite(loss):
                self.pending.clear()
                raise JobFailure(f"The optimisation diverged at step {step} (the loss is {loss}). Use optimizer "
                                 "lbfgs, a lower learning_rate, or smaller loss weights.")
            self.progress.report(step, self.total, {"loss": loss, "content_loss": content,
                                                    "style_loss": style, "tv_loss": tv})
            if is_output:
                self.trace.append((secs, loss))
        self.pending.clear()
        self.last_flush = time.perf_counter()


def stylize(content: Image.Image, styles: Sequence[Image.Image], options: StyleOptions, *,
            weights: str = "random", init_image: Image.Image | None = None, progress: Progress | None = None,
            on_step: StepHook | None = None) -> StyleResult:
    """Render ``content`` in the style of ``styles`` and return the result with its losses and trace.

    Raises :class:`core.errors.UserError` for options that cannot work with these images, :class:`JobFailure` when
    the job cannot run here (weights missing, too big for memory, no GPU), and
    :class:`core.engines.progress.Cancelled` when ``progress`` asks to stop (checked before every step).
    ``on_step(step, level, x, parts)`` sees every evaluated iterate and its ``[loss, content, style, tv]``
    (for benchmarks and notebooks; ``x`` is the unclamped optimisation tensor, not to be modified).
    """
    progress = progress or Progress()
    options.check(len(styles), init_image is not None)
    content_layers = parse_layers(options.content_layers, "content_layers", allow_empty=True)
    style_layers = parse_layers(options.style_layers, "style_layers", allow_empty=True)
    blend = blend_weights(options.style_blend_weights, len(styles))
    capture = used_layers(options)
    device = resolve_device(options.device)
    dtype = resolve_precision(options.precision, device)
    min_side = min_size_for(capture)
    levels = plan_levels(options.schedule, options.size, options.steps, content.width, content.height, min_side)
    out = levels[-1]
    style_size = max(1, round(options.size * options.style_scale))
    check_sizes(levels, [s.size for s in styles], options.style_scale, min_side)
    need = _check_memory(out, [_style_dims(s, style_size) for s in styles], capture, dtype, device, options)
    with reserve(need if device.type == "cpu" else 0):
        return _run(content, styles, options, weights, init_image, progress, on_step, content_layers, style_layers,
                    blend, capture, device, dtype, levels)


def _run(content: Image.Image, styles: Sequence[Image.Image], options: StyleOptions, weights: str,
         init_image: Image.Image | None, progress: Progress, on_step: StepHook | None, content_layers: Any,
         style_layers: Any, blend: Any, capture: Any, device: torch.device, dtype: torch.dtype,
         levels: Any) -> StyleResult:
    """The optimisation itself, once the job is known to fit (see :func:`stylize`)."""
    out = levels[-1]

    t_load = time.perf_counter()
    vgg32 = load_vgg19(weights, capture or ["conv1_1"], options.pooling, device=device, dtype=torch.float32)
    vgg = vgg32 if dtype == torch.float32 else vgg32.to(dtype=dtype)
    load_seconds = time.perf_counter() - t_load
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # shapes are fixed within a level
    progress.log(f"style transfer on {device.type} in {_dtype_name(dtype)}, weights: {weights_source(weights)}, "
                 "levels " + ", ".join(f"{lv.width}x{lv.height}:{lv.steps}" for lv in levels))

    def make_objective(model: VGG19Features, level: Level) -> tuple[Objective, torch.Tensor]:
        c = to_tensor(_resize(content, level.width, level.height), device)  # (1, 3, H, W)
        ss = [to_tensor(resize_longest(s, max(1, round(level.longest * options.style_scale))), device)
              for s in styles]
        obj = Objective(model, c, ss, blend, content_layers, style_layers,
                        options.content_weight, options.style_weight, options.tv_weight)
        return obj, c

    recorder = _Recorder(device, progress, options.steps)
    step = 0
    x: torch.Tensor | None = None
    content_t = torch.empty(0)
    objective: Objective | None = None
    for level in levels:
        prev_content = content_t if x is not None else None
        objective, content_t = make_objective(vgg, level)
        x0 = _initial(level, x, prev_content, content_t, init_image, options, device)
        x = x0.detach().clone().contiguous().requires_grad_(True)  # (1, 3, H, W) fp32 master pixels
        optimizer: LBFGS | torch.optim.Adam
        if options.optimizer == "lbfgs":
            optimizer = LBFGS(x, options.lbfgs_history, lr=1.0)
        else:
            optimizer = torch.optim.Adam([x], lr=options.learning_rate)
        for i in range(level.steps):
            progress.check_cancel()
            loss, parts = objective(x)
            (grad,) = torch.autograd.grad(loss, x)
            step += 1
            recorder.record(step, level.is_output, parts)
            if on_step is not None:
                on_step(step, level, x.detach(), parts)
            if progress.preview_every and step % progress.preview_every == 0:
                progress.preview(step, _renderer(x.detach().clone(), content_t, out, options.original_colors))
            if i + 1 < level.steps:  # the last evaluated iterate is the result
                if isinstance(optimizer, LBFGS):
                    optimizer.step(grad)
                else:
                    x.grad = grad
                    optimizer.step()
        x = x.detach()
        del optimizer  # free this level's L-BFGS history before the next level allocates its own
        recorder.flush()

    assert x is not None and objective is not None
    final = x.clamp(0, 1)
    if options.original_colors:
        final = keep_colors(final, content_t)
    final = quantize(final)  # (1, 3, H, W): exactly the saved pixels
    with torch.no_grad(), _full_precision(device):
        if dtype != torch.float32:
            objective, _ = make_objective(vgg32, out)
        _, parts = objective(final)
    loss, content_loss, style_loss, tv_loss = parts.tolist()
    seconds = time.perf_counter() - recorder.t0
    return StyleResult(image=to_image(final), loss=loss, content_loss=content_loss, style_loss=style_loss,
                       tv_loss=tv_loss, steps=step, seconds=seconds, load_seconds=load_seconds,
                       trace=recorder.trace, device=device.type, precision=_dtype_name(dtype),
                       weights=weights_source(weights), levels=[(lv.width, lv.height, lv.steps) for lv in levels])


def _initial(level: Level, prev: torch.Tensor | None, prev_content: torch.Tensor | None, content_t: torch.Tensor,
             init_image: Image.Image | None, options: StyleOptions, device: torch.device) -> torch.Tensor:
    """The starting image of a level: the upsampled previous level, else content / seeded noise / an image."""
    h, w = level.height, level.width
    if prev is not None:
        up = F.interpolate(prev.clamp(0, 1), size=(h, w), mode="bicubic", align_corners=False)
        if options.init == "content" and prev_content is not None:
            # Residual upsampling: carry over what the coarse level *changed* and keep the content's
            # own fine detail, which plain upsampling would blur away and the fine level would have
            # to rebuild step by step. Measured: the fine level then reaches a given loss in ~25%
            # fewer steps (bench/style_transfer.py).
            up_content = F.interpolate(prev_content, size=(h, w), mode="bicubic", align_corners=False)
            return content_t + (up - up_content)
        return up
    if options.init == "random":
        gen = torch.Generator().manual_seed(options.seed)  # CPU generator: the same noise on every device
        return torch.rand(1, 3, h, w, generator=gen).to(device)
    if options.init == "image":
        assert init_image is not None
        return to_tensor(_resize(init_image, w, h), device)
    return content_t.clone()


def _renderer(x: torch.Tensor, content_t: torch.Tensor, out: Level, original_colors: bool) -> Callable[[], Image.Image]:
    """A preview render of a snapshot of ``x``, at the output size, computed only if asked for."""

    def render() -> Image.Image:
        img = x.clamp(0, 1)
        if original_colors:
            img = keep_colors(img, content_t)
        pil = to_image(img)
        return pil if pil.size == (out.width, out.height) else pil.resize((out.width, out.height),
                                                                           Image.Resampling.BICUBIC)

    return render


def _resize(img: Image.Image, width: int, height: int) -> Image.Image:
    img = img.convert("RGB")
    return img if img.size == (width, height) else img.resize((width, height), Image.Resampling.BICUBIC)


def _style_dims(style: Image.Image, longest: int) -> tuple[int, int]:
    return scaled_size(style.width, style.height, longest)


def _check_memory(out: Level, style_dims: list[tuple[int, int]], capture: list[str], dtype: torch.dtype,
                  device: torch.device, options: StyleOptions) -> int:
    """Refuse, before allocating anything big, a size that would not fit in memory; returns the estimate."""
    need = estimate_bytes(out.width, out.height, style_dims, capture, 2 if dtype == torch.bfloat16 else 4,
                          options.optimizer, options.lbfgs_history)
    have = available_bytes(str(device) if device.type == "cuda" else "cpu")
    if have is not None and need > have:
        fits = largest_fitting_size(options.size, need, have)
        raise JobFailure(f"A {out.width}x{out.height} output needs about {format_bytes(need)} of "
                         f"{'GPU ' if device.type == 'cuda' else ''}memory but only {format_bytes(max(have, 0))} "
                         f"is free on this worker. Choose a size of at most {fits} px"
                         f"{' or a shorter L-BFGS history' if options.optimizer == 'lbfgs' else ''}.")
    return need


@contextlib.contextmanager
def _full_precision(device: torch.device) -> Iterator[None]:
    """Context for the final loss: on CUDA, forbid TF32 so that "fp32" really is fp32."""
    if device.type != "cuda":
        yield
        return
    matmul_tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        with torch.backends.cudnn.flags(enabled=True, benchmark=True, allow_tf32=False):
            yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = matmul_tf32


def _dtype_name(dtype: torch.dtype) -> str:
    return "bf16" if dtype == torch.bfloat16 else "fp32"
