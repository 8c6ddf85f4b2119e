"""The style_transfer job kind: its schema (shared by API, form and CLI), submit-time checks and run()."""

from __future__ import annotations

import subprocess
import sys
import urllib.error
from pathlib import Path

import pytest
import torch
from PIL import Image

from core.engines.progress import RecordingProgress
from core.errors import JobFailure, UserError
from core.kinds.base import UploadInfo
from core.kinds.context import InputFile, LocalJobContext
from core.kinds.style_transfer import KIND, SCHEMA
from core.settings import Settings
from tests.test_style_engine import content_image, reference_objective, style_image
from core.engines.style.options import StyleOptions


pytestmark = pytest.mark.usefixtures("single_thread")


def test_device_choices_are_spelled_once() -> None:
    """Every kind's device parameter and ATELIER_DEVICE take the same names, from core.schema.DEVICES."""
    from core.kinds.gan import CYCLEGAN_SCHEMA, TRANSLATE_SCHEMA
    from core.schema import DEVICES

    for schema in (SCHEMA, CYCLEGAN_SCHEMA, TRANSLATE_SCHEMA):
        assert schema["device"].choices == DEVICES == ("auto", "cpu", "cuda")


def test_schema_names_are_the_cli_options():
    names = [p.name for p in SCHEMA.params]
    for required in ("size", "steps", "seed", "optimizer", "content_layers", "style_layers", "content_weight",
                     "style_weight", "tv_weight", "init", "style_blend_weights", "style_scale", "original_colors",
                     "pooling", "lbfgs_history", "learning_rate", "schedule", "precision", "device"):
        assert required in names
    basic = [p.name for p in SCHEMA.params if not p.advanced]
    assert basic == ["size", "steps"]
    assert SCHEMA["content_weight"].option == "--content-weight"
    assert KIND.name == SCHEMA.kind == "style_transfer"
    assert [(i.role, i.required, i.multiple) for i in KIND.inputs] == [
        ("content", True, False), ("style", True, True), ("init", False, False)]
    assert KIND.total_steps(SCHEMA.validate({"steps": 42})) == 42


def test_kind_module_does_not_import_torch():
    code = "import sys, core.kinds.style_transfer; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[1])


def test_validation_names_the_field():
    params = SCHEMA.validate({"style_layers": "relu1_1:2, relu2_1", "schedule": "0.5:10"})
    assert params["style_layers"] == ["relu1_1:2", "relu2_1"] and params["schedule"] == "0.5:10"
    for raw, field in (({"content_layers": "relu9_9"}, "content_layers"), ({"size": 99999}, "size"),
                       ({"schedule": "half"}, "schedule"), ({"optimizer": "sgd"}, "optimizer"),
                       ({"style_blend_weights": "1,-1"}, "style_blend_weights"), ({"nope": 1}, "nope")):
        with pytest.raises(UserError) as err:
            SCHEMA.validate(raw)
        assert err.value.field == field


def _uploads(n_styles: int = 1, init: bool = False, content=(640, 480), style=(300, 300)) -> list[UploadInfo]:
    ups = [UploadInfo("content", "c.png", "image/png", 10, *content)]
    ups += [UploadInfo("style", f"s{i}.png", "image/png", 10, *style) for i in range(n_styles)]
    if init:
        ups.append(UploadInfo("init", "i.png", "image/png", 10, 64, 48))
    return ups


def test_check_cross_field_rules():
    KIND.check(SCHEMA.validate({}), _uploads())
    cases = [
        ({"style_blend_weights": [1, 2, 3]}, _uploads(2), "style_blend_weights"),
        ({"init": "image"}, _uploads(), "init"),
        ({}, _uploads(init=True), "init"),
        ({"steps": 10, "schedule": "0.5:10"}, _uploads(), "schedule"),
        ({"size": 16}, _uploads(content=(640, 100)), "size"),
        ({"style_scale": 0.05}, _uploads(style=(300, 40)), "style_scale"),
    ]
    for raw, uploads, field in cases:
        with pytest.raises(UserError) as err:
            KIND.check(SCHEMA.validate(raw), uploads)
        assert err.value.field == field, raw
    KIND.check(SCHEMA.validate({"init": "image", "style_blend_weights": "1,3"}), _uploads(2, init=True))


def _context(tmp_path: Path, params: dict, settings, n_styles: int = 1, progress=None) -> LocalJobContext:
    inputs = []
    images = [("content", content_image())] + [("style", style_image(i)) for i in range(n_styles)]
    for i, (role, img) in enumerate(images):
        path = tmp_path / f"{role}{i}.png"
        img.save(path)
        inputs.append(InputFile(role, path.name, "image/png", path))
    return LocalJobContext(SCHEMA.validate(params), inputs, tmp_path / "out", progress=progress, settings=settings)


def test_run_saves_result_and_metrics(tmp_path):
    progress = RecordingProgress(preview_every=2)
    params = {"size": 40, "steps": 4, "style_blend_weights": [1, 1]}
    ctx = _context(tmp_path, params, Settings(vgg19_weights="random"), n_styles=2, progress=progress)
    KIND.run(ctx)
    out = tmp_path / "out" / "result.png"
    assert ctx.outputs["result.png"] == ("image/png", out.stat().st_size)
    img = Image.open(out)
    assert img.format == "PNG" and img.size == (40, 30)
    m = ctx.metrics
    for key in ("loss", "content_loss", "style_loss", "tv_loss", "seconds", "load_seconds", "steps"):
        assert key in m
    assert m["weights"] == "random" and m["steps"] == 4 and m["output_size"] == [40, 30]
    ref = reference_objective(img.convert("RGB"), content_image(), [style_image(0), style_image(1)],
                              StyleOptions.from_params(ctx.params))
    assert m["loss"] == pytest.approx(ref["loss"], rel=2e-4)
    assert [s for s, _, _ in progress.steps] == [1, 2, 3, 4] and len(progress.previews) == 2
    assert any("not artistic" in line for line in progress.messages)


def test_run_enforces_the_services_size_limit(tmp_path):
    ctx = _context(tmp_path, {"size": 128, "steps": 1}, Settings(vgg19_weights="random", max_output_size=64))
    with pytest.raises(UserError) as err:
        KIND.run(ctx)
    assert err.value.field == "size" and "64" in err.value.message


def test_run_without_settings_uses_imagenet_weights_and_fails_clearly_offline(tmp_path, monkeypatch):
    from core.engines import vgg

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(torch.hub, "urlopen", lambda *a, **k: (_ for _ in ()).throw(urllib.error.URLError("offline")))
    vgg._torchvision_params.cache_clear()
    ctx = _context(tmp_path, {"size": 32, "steps": 1}, None)
    try:
        with pytest.raises(JobFailure, match="ATELIER_VGG19_WEIGHTS=random"):
            KIND.run(ctx)
    finally:
        vgg._torchvision_params.cache_clear()
    assert not (tmp_path / "out" / "result.png").exists()
