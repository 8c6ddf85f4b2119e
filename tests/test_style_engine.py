"""The style-transfer engine: the documented objective, every control, determinism, cancel, previews.

Tiny synthetic images and seeded random VGG-19 weights keep this fast and offline. The reference
objective below is written independently of the engine (torchvision's module, float64, plain loops)
so a mistake in the engine's loss cannot hide behind a shared helper.
"""

from __future__ import annotations

import io
import re

import numpy as np
import pytest
import torch
import torch.nn as nn
from PIL import Image

from core.engines.progress import Cancelled, RecordingProgress
from core.engines.style import engine as engine_mod
from core.engines.style.color import rgb_to_ycbcr
from core.engines.style.memory import estimate_bytes
from core.engines.style.schedule import plan_levels
from core.engines.style_transfer import StyleOptions, stylize
from core.engines.vgg import LAYER_NAMES, load_conv_params
from core.errors import JobFailure, UserError

pytestmark = pytest.mark.usefixtures("single_thread")


# -- synthetic inputs ------------------------------------------------------------------------------
def content_image(w: int = 48, h: int = 36) -> Image.Image:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    r = xx / (w - 1)
    g = yy / (h - 1)
    b = ((xx - w / 2) ** 2 + (yy - h / 2) ** 2 < (h / 3) ** 2).astype(np.float32) * 0.8 + 0.1
    return Image.fromarray((np.stack([r, g, b], -1) * 255).astype(np.uint8), "RGB")


def style_image(kind: int = 0, w: int = 40, h: int = 40) -> Image.Image:
    rng = np.random.default_rng(kind)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    if kind == 0:
        base = np.sin(xx / 2.0) * 0.5 + 0.5
        rgb = np.stack([base, 0.3 + 0.2 * base, 1 - base], -1)
    else:
        base = ((xx // 5 + yy // 5) % 2).astype(np.float32)
        rgb = np.stack([0.9 * base, 0.6 * base + 0.2, 0.1 + 0.0 * base], -1)
    rgb = np.clip(rgb + rng.normal(0, 0.05, rgb.shape), 0, 1)
    return Image.fromarray((rgb * 255).astype(np.uint8), "RGB")


def png_roundtrip(img: Image.Image) -> Image.Image:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


# -- the independent reference ---------------------------------------------------------------------
def _pil_resize_longest(img: Image.Image, longest: int) -> Image.Image:
    w, h = img.size
    size = (longest, max(1, round(h * longest / w))) if w >= h else (max(1, round(w * longest / h)), longest)
    return img if size == img.size else img.resize(size, Image.Resampling.BICUBIC)


def _as_tensor(img: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(img, dtype=np.float64) / 255.0).permute(2, 0, 1).unsqueeze(0)


def _parse(items) -> dict[str, float]:
    out = {}
    for item in items:
        name, _, w = item.partition(":")
        out[name] = float(w) if w else 1.0
    return out


def reference_objective(result: Image.Image, content: Image.Image, styles: list[Image.Image], opts: StyleOptions,
                        weights: str = "random") -> dict[str, float]:
    """The documented objective of ``result``, in float64, with torchvision's own VGG-19 module."""
    content_layers, style_layers = _parse(opts.content_layers), _parse(opts.style_layers)
    last = max(LAYER_NAMES.index(n) for n in list(content_layers) + list(style_layers))
    from torchvision.models.vgg import cfgs, make_layers

    features = make_layers(cfgs["E"])[: last + 1]  # torchvision's vgg19().features, without the classifier
    convs = [m for m in features if isinstance(m, nn.Conv2d)]
    with torch.no_grad():
        for conv, (w, b) in zip(convs, load_conv_params(weights, len(convs))):
            conv.weight.copy_(w)
            conv.bias.copy_(b)
    for i, m in enumerate(features):
        if isinstance(m, nn.ReLU):
            features[i] = nn.ReLU(inplace=False)
        if isinstance(m, nn.MaxPool2d) and opts.pooling == "avg":
            features[i] = nn.AvgPool2d(2, 2)
    features = features.double().eval()
    mean = torch.tensor([0.485, 0.456, 0.406], dtype=torch.float64).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225], dtype=torch.float64).view(1, 3, 1, 1)

    def acts(img: torch.Tensor) -> dict[str, torch.Tensor]:
        out, h = {}, (img - mean) / std
        for name, module in zip(LAYER_NAMES, features):
            h = module(h)
            out[name] = h
        return out

    def gram(f: torch.Tensor) -> torch.Tensor:
        _, c, hh, ww = f.shape
        m = f.reshape(c, hh * ww)
        return m @ m.t() / (c * hh * ww)

    blend = list(opts.style_blend_weights) or [1.0] * len(styles)
    blend = [b / sum(blend) for b in blend]
    with torch.no_grad():
        x = _as_tensor(result)
        c = _as_tensor(_pil_resize_longest(content, opts.size))
        assert c.shape == x.shape
        fx, fc = acts(x), acts(c)
        targets = {n: 0.0 for n in style_layers}
        for s, b in zip(styles, blend):
            fs = acts(_as_tensor(_pil_resize_longest(s, round(opts.size * opts.style_scale))))
            for n in style_layers:
                targets[n] = targets[n] + b * gram(fs[n])
        content_loss = sum(w * ((fx[n] - fc[n]) ** 2).mean() for n, w in content_layers.items())
        style_loss = sum(w * ((gram(fx[n]) - targets[n]) ** 2).mean() for n, w in style_layers.items())
        tv = (x[..., 1:, :] - x[..., :-1, :]).abs().sum() + (x[..., :, 1:] - x[..., :, :-1]).abs().sum()
    parts = {"content_loss": opts.content_weight * float(content_loss), "style_loss": opts.style_weight * float(style_loss),
             "tv_loss": opts.tv_weight * float(tv)}
    parts["loss"] = sum(parts.values())
    return parts


# -- the objective ---------------------------------------------------------------------------------
OBJECTIVE_CASES = [
    pytest.param({}, 1, id="defaults"),
    pytest.param(dict(content_layers=("conv2_2:0.5", "relu3_1"), style_layers=("relu1_1:2", "pool2", "conv3_1:0.25"),
                      tv_weight=0.0, style_weight=1e4, precision="fp32"), 1, id="layers-weights-fp32"),
    pytest.param(dict(style_blend_weights=(0.3, 0.7), style_scale=0.75, content_weight=3.0), 2, id="two-styles"),
    pytest.param(dict(pooling="avg", original_colors=True, tv_weight=1e-3, precision="bf16"), 2, id="avg-colors-bf16"),
]


@pytest.mark.parametrize("overrides,n_styles", OBJECTIVE_CASES)
def test_reported_loss_is_the_documented_objective_of_the_saved_image(overrides, n_styles):
    content, styles = content_image(), [style_image(i) for i in range(n_styles)]
    opts = StyleOptions(size=40, steps=6, schedule="none", **overrides)
    result = stylize(content, styles, opts, weights="random")
    ref = reference_objective(png_roundtrip(result.image), content, styles, opts)
    for key in ("loss", "content_loss", "style_loss", "tv_loss"):
        assert getattr(result, key) == pytest.approx(ref[key], rel=2e-4, abs=1e-9), key
    assert result.loss == pytest.approx(result.content_loss + result.style_loss + result.tv_loss, rel=1e-6)


def test_trace_per_step_losses_and_multiresolution_rule():
    progress = RecordingProgress()
    opts = StyleOptions(size=64, steps=8, schedule="0.5:3", precision="fp32")
    result = stylize(content_image(64, 48), [style_image()], opts, progress=progress)
    assert result.levels == [(32, 24, 3), (64, 48, 5)]
    assert [s for s, _, _ in progress.steps] == list(range(1, 9))
    assert all(total == 8 for _, total, _ in progress.steps)
    for _, _, m in progress.steps:
        assert set(m) == {"loss", "content_loss", "style_loss", "tv_loss"}
        assert m["loss"] == pytest.approx(m["content_loss"] + m["style_loss"] + m["tv_loss"], rel=1e-5)
    # Only output-size steps are in the trace, and they are the last five reported losses.
    assert [loss for _, loss in result.trace] == pytest.approx([m["loss"] for _, _, m in progress.steps[3:]])
    times = [t for t, _ in result.trace]
    assert times == sorted(times) and times[0] > 0


def test_auto_schedule_uses_coarse_levels_only_when_large_enough():
    assert len(plan_levels("auto", 64, 300, 64, 48, 16)) == 1
    levels = plan_levels("auto", 256, 300, 256, 192, 16)
    assert [(lv.longest, lv.steps) for lv in levels] == [(128, 50), (192, 70), (256, 180)]
    assert sum(lv.steps for lv in plan_levels("auto", 512, 37, 512, 300, 16)) == 37


def test_gram_gradient_matches_autograd():
    """The Gram's one-matmul backward equals autograd's two-matmul one."""
    from core.engines.style.objective import gram

    f = torch.randn(1, 6, 5, 4, requires_grad=True)
    w = torch.randn(6, 6)
    (gram(f)[0] * w).sum().backward()
    ours, f.grad = f.grad.clone(), None
    m = f.reshape(6, 20)
    ((m @ m.t() / 120) * w).sum().backward()
    torch.testing.assert_close(ours, f.grad)


# -- controls ----------------------------------------------------------------------------------------
def test_original_colors_keep_the_content_chroma():
    muted = Image.fromarray((np.asarray(content_image(), dtype=np.float32) * 0.5 + 64).astype(np.uint8), "RGB")
    opts = StyleOptions(size=40, steps=8, schedule="none", precision="fp32")
    plain = _as_tensor(stylize(muted, [style_image(0)], opts).image).float()
    kept = _as_tensor(stylize(muted, [style_image(0)],
                              StyleOptions(**{**opts.__dict__, "original_colors": True})).image).float()
    ref = _as_tensor(_pil_resize_longest(muted, 40)).float()
    inside = ((kept > 0) & (kept < 1)).all(1)[0]  # (H, W): pixels not clipped to black/white
    assert inside.float().mean() > 0.5  # clipped pixels necessarily lose some chroma

    def chroma_error(img: torch.Tensor) -> torch.Tensor:
        return (rgb_to_ycbcr(img)[0, 1:] - rgb_to_ycbcr(ref)[0, 1:]).abs()[:, inside]

    assert float(chroma_error(kept).max()) < 2.5 / 255  # 8-bit rounding only
    assert float(chroma_error(plain).mean()) > 0.01  # without the option the palette changes
    # ... while the luminance is the stylised one, not the content's.
    y = lambda img: rgb_to_ycbcr(img)[0, 0][inside]  # noqa: E731
    assert float((y(kept) - y(plain)).abs().max()) < 2.5 / 255
    assert float((y(kept) - y(ref)).abs().mean()) > 0.01


def test_style_scale_sets_the_style_targets_resolution(monkeypatch):
    seen: list[tuple[int, int]] = []
    real = engine_mod.Objective

    def spy(model, content, styles, *args, **kwargs):
        seen.extend(tuple(s.shape[-2:]) for s in styles)
        return real(model, content, styles, *args, **kwargs)

    monkeypatch.setattr(engine_mod, "Objective", spy)
    style = style_image(0, 60, 30)  # 2:1
    for scale, expected in ((1.0, (20, 40)), (0.5, (10, 20)), (1.5, (30, 60))):
        seen.clear()
        stylize(content_image(), [style], StyleOptions(size=40, steps=1, style_scale=scale, schedule="none",
                                                      style_layers=("relu1_1", "relu2_1")))
        assert seen[0] == expected


def test_blend_weights_one_zero_equal_the_single_style():
    content = content_image()
    opts = StyleOptions(size=40, steps=5, schedule="none")
    single = stylize(content, [style_image(0)], opts)
    blended = stylize(content, [style_image(0), style_image(1)],
                      StyleOptions(**{**opts.__dict__, "style_blend_weights": (1.0, 0.0)}))
    assert blended.loss == single.loss
    assert blended.image.tobytes() == single.image.tobytes()


def test_blend_weights_are_normalised():
    content, styles = content_image(), [style_image(0), style_image(1)]
    opts = StyleOptions(size=40, steps=3, schedule="none")
    a = stylize(content, styles, StyleOptions(**{**opts.__dict__, "style_blend_weights": (2.0, 2.0)}))
    b = stylize(content, styles, opts)  # empty = equal
    assert a.image.tobytes() == b.image.tobytes()


def test_init_modes():
    content, init = content_image(), style_image(1, 48, 36)
    one = dict(size=40, steps=1, schedule="none")  # one step: the result is the initial image itself
    got = stylize(content, [style_image()], StyleOptions(**one, init="content")).image
    assert got.tobytes() == _pil_resize_longest(content, 40).tobytes()
    got = stylize(content, [style_image()], StyleOptions(**one, init="image"), init_image=init).image
    assert got.tobytes() == init.resize(got.size, Image.Resampling.BICUBIC).tobytes()
    noise_a = stylize(content, [style_image()], StyleOptions(**one, init="random", seed=1)).image
    noise_b = stylize(content, [style_image()], StyleOptions(**one, init="random", seed=2)).image
    assert noise_a.tobytes() != noise_b.tobytes()
    assert abs(np.asarray(noise_a).mean() - 127.5) < 10  # uniform noise, not the content
    with pytest.raises(UserError) as err:
        stylize(content, [style_image()], StyleOptions(**one, init="image"))
    assert err.value.field == "init"


def test_pooling_changes_the_network():
    content = content_image()
    kw = dict(size=40, steps=4, schedule="none", precision="fp32")
    a = stylize(content, [style_image()], StyleOptions(**kw, pooling="max"))
    b = stylize(content, [style_image()], StyleOptions(**kw, pooling="avg"))
    assert a.loss != b.loss  # correctness of both is checked against torchvision above


def test_same_seed_same_image_on_cpu():
    content = content_image()
    opts = StyleOptions(size=40, steps=6, init="random", seed=7, schedule="none")
    a = stylize(content, [style_image()], opts)
    b = stylize(content, [style_image()], opts)
    c = stylize(content, [style_image()], StyleOptions(**{**opts.__dict__, "seed": 8}))
    assert a.image.tobytes() == b.image.tobytes() and a.loss == b.loss
    assert a.image.tobytes() != c.image.tobytes()


def test_cancel_stops_within_one_step_and_previews_came_before():
    progress = RecordingProgress(preview_every=1, cancel_after=3)
    with pytest.raises(Cancelled):
        stylize(content_image(), [style_image()], StyleOptions(size=40, steps=50, schedule="none"), progress=progress)
    assert len(progress.steps) == 3  # checked before every step: no fourth evaluation started
    assert [s for s, _ in progress.previews] == [1, 2, 3]


def test_previews_every_k_steps_at_the_output_size():
    progress = RecordingProgress(preview_every=3)
    result = stylize(content_image(64, 48), [style_image()], StyleOptions(size=64, steps=8, schedule="0.5:4"),
                     progress=progress)
    assert [s for s, _ in progress.previews] == [3, 6]
    assert all(img.size == result.image.size == (64, 48) for _, img in progress.previews)


def test_adam_and_lbfgs_both_optimise():
    for optimizer in ("adam", "lbfgs"):
        r = stylize(content_image(), [style_image()], StyleOptions(size=32, steps=12, optimizer=optimizer,
                                                                   schedule="none", learning_rate=0.03))
        assert r.trace[-1][1] < 0.5 * r.trace[0][1], optimizer


# -- memory ------------------------------------------------------------------------------------------
def test_memory_estimate_rejects_sizes_that_cannot_fit():
    with pytest.raises(JobFailure) as err:
        # Past the schema's bound on purpose (model_construct skips it): the engine's own check must hold.
        stylize(content_image(), [style_image()], StyleOptions.model_construct(
            **{**StyleOptions().model_dump(), "size": 60000, "steps": 1}))
    msg = str(err.value)
    assert "60000x45000" in msg and "Choose a size of at most" in msg


def test_memory_estimate_grows_with_size_and_reports_what_would_fit(monkeypatch):
    layers = ["relu4_2", "relu1_1", "relu5_1"]
    small = estimate_bytes(256, 256, [(256, 256)], layers, 2, "lbfgs", 100)
    big = estimate_bytes(512, 512, [(512, 512)], layers, 2, "lbfgs", 100)
    assert 3.0 < big / small < 4.5  # pixels x 4, plus size-independent weights
    assert estimate_bytes(256, 256, [(256, 256)], layers, 4, "lbfgs", 100) > small
    monkeypatch.setattr(engine_mod, "available_bytes", lambda device: small // 2)
    with pytest.raises(JobFailure) as err:
        stylize(content_image(), [style_image()], StyleOptions(size=256, steps=1))
    fits = int(re.search(r"at most (\d+) px", str(err.value)).group(1))
    assert 64 <= fits < 256


# -- golden: optimisation must keep improving ---------------------------------------------------------
def test_golden_lbfgs_keeps_improving():
    """Golden figures (fp32, 32x24, seeded random VGG-19): 129.5 -> 10.57 (step 10) -> 6.311 (20) -> 5.497 (40).

    Fails if a change makes the optimisation stall, diverge or converge markedly slower; the margins
    allow for other CPUs' rounding.
    """
    r = stylize(content_image(32, 24), [style_image()], StyleOptions(size=32, steps=40, precision="fp32",
                                                                    schedule="none"))
    tr = [loss for _, loss in r.trace]
    assert len(tr) == 40
    assert tr[0] == pytest.approx(129.5, rel=1e-3)  # the content init: same objective as before
    assert tr[9] < 0.1 * tr[0]
    assert tr[19] < 0.7 * tr[9]
    assert tr[39] < 0.93 * tr[19]
    assert r.loss < 5.497 * 1.08


# -- option errors name their field ---------------------------------------------------------------------
@pytest.mark.parametrize("overrides,field", [
    (dict(style_layers=("relu9_1",)), "style_layers"),
    (dict(content_layers=("relu4_2", "relu4_2")), "content_layers"),
    (dict(style_blend_weights=(1.0, 2.0)), "style_blend_weights"),
    (dict(schedule="2:10"), "schedule"),
    (dict(schedule="0.5:400"), "schedule"),
    (dict(size=8), "size"),
    (dict(style_scale=0.01), "style_scale"),
    (dict(optimizer="sgd"), "optimizer"),
])
def test_bad_options_name_their_field(overrides, field):
    with pytest.raises(UserError) as err:
        stylize(content_image(), [style_image()], StyleOptions(**{"steps": 300, **overrides}))
    assert err.value.field == field
