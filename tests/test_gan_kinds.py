"""The cyclegan_train, pix2pix_train and translate kinds: schemas, submit-time rules, runs, registration."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from core.errors import UserError
from core.kinds import gan as kinds
from core.kinds.context import InputFile
from tests.gan_support import REPO_ROOT, ResourceContext, noise_image, tiny_paired_dir, tiny_unpaired_dir

pytestmark = pytest.mark.usefixtures("single_thread")

TINY = {"size": 24, "load_size": 28, "ngf": 4, "ndf": 4, "netG": "resnet_6blocks", "checkpoint_every": 2}


def test_kinds_module_imports_no_torch() -> None:
    code = ("import sys; import core.kinds.gan, core.datasets; "
            "assert 'torch' not in sys.modules, 'torch imported'; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_schemas_use_the_reference_names_and_defaults() -> None:
    c = kinds.CYCLEGAN_SCHEMA.defaults()
    assert (c["netG"], c["norm"], c["gan_mode"], c["dropout"], c["pool_size"]) == \
        ("resnet_9blocks", "instance", "lsgan", False, 50)
    assert (c["lambda_A"], c["lambda_B"], c["lambda_identity"], c["lr"], c["beta1"]) == (10.0, 10.0, 0.5, 2e-4, 0.5)
    p = kinds.PIX2PIX_SCHEMA.defaults()
    assert (p["netG"], p["norm"], p["gan_mode"], p["dropout"], p["lambda_L1"]) == \
        ("unet_256", "batch", "vanilla", True, 100.0)
    assert kinds.CYCLEGAN_KIND.references == {"dataset": "dataset"}
    assert kinds.TRANSLATE_KIND.references == {"model": "model"}
    assert [k.name for k in kinds.KINDS] == ["cyclegan_train", "pix2pix_train", "translate"]
    assert kinds.TRANSLATE_KIND.inputs[0].role == "images" and kinds.TRANSLATE_KIND.inputs[0].multiple


@pytest.mark.parametrize("params, field, message", [
    ({}, "dataset", "dataset is required"),
    ({"dataset": "d", "iterations": 5, "epochs": 1}, "epochs", "not both"),
    ({"dataset": "d", "netG": "unet_256", "size": 128}, "size", "multiple of 256"),
    ({"dataset": "d", "size": 30}, "size", "multiple of 4"),
    ({"dataset": "d", "size": 16}, "size", "too small for the basic discriminator"),
    ({"dataset": "d", "size": 128, "load_size": 100}, "load_size", "at least the crop size"),
    ({"dataset": "d", "netG": "unet_128", "preprocess": "none"}, "preprocess", "trains on crops"),
])
def test_submit_time_rules(params: dict, field: str, message: str) -> None:
    with pytest.raises(UserError) as err:
        kinds.check_train(kinds.CYCLEGAN_SCHEMA.validate(params), [])
    assert err.value.field == field and message in str(err.value)


@pytest.mark.parametrize("schema", [kinds.CYCLEGAN_SCHEMA, kinds.PIX2PIX_SCHEMA], ids=lambda s: s.kind)
def test_the_defaults_make_a_valid_job(schema) -> None:  # type: ignore[no-untyped-def]
    kinds.check_train(schema.validate({"dataset": "d"}), [])


def test_total_steps() -> None:
    assert kinds.total_steps_train(kinds.CYCLEGAN_SCHEMA.validate({})) == kinds.DEFAULT_ITERATIONS
    assert kinds.total_steps_train(kinds.CYCLEGAN_SCHEMA.validate({"iterations": 7})) == 7
    assert kinds.total_steps_train(kinds.CYCLEGAN_SCHEMA.validate({"epochs": 2})) == 0


def test_demo_params_are_valid() -> None:
    kinds.check_train(kinds.CYCLEGAN_SCHEMA.validate({"dataset": "demo", **kinds.DEMO_PARAMS}), [])


def test_output_names() -> None:
    assert kinds.output_names(["a/cat.jpg", "cat.png", "dog.webp", "x"]) == ["cat.png", "cat-2.png", "dog.png", "x.png"]


def test_cyclegan_job_registers_a_model_once_and_translate_uses_it(tmp_path: Path) -> None:
    dataset = tiny_unpaired_dir(tmp_path / "dataset", short_side=32)
    params = {"dataset": "ds1", "iterations": 3, "name": "zebras", **TINY}
    ctx = ResourceContext(params, tmp_path / "job", {("datasets", "ds1"): dataset})
    kinds.run_cyclegan(ctx)
    assert len(ctx.registered) == 1
    reg = ctx.registered[0]
    assert (reg["name"], reg["kind"]) == ("zebras", "cyclegan")
    assert set(reg["meta"]["generators"]) == {"AtoB", "BtoA"} and reg["meta"]["options"]["size"] == 24
    assert set(ctx.outputs) == {"G_A.safetensors", "G_B.safetensors", "model.json", "samples.png"}
    assert ctx.metrics["model_id"] == reg["id"] and ctx.metrics["iterations"] == 3
    assert "final_cycle_A" in ctx.metrics
    # 3 iterations teach nothing: the job says so instead of a silent success
    assert ctx.warnings and all("may not have learned a translation after 3 iterations" in w for w in ctx.warnings)

    # the job runs again (its worker died after registering): no second model, same id
    again = ResourceContext(params, tmp_path / "job", {("datasets", "ds1"): dataset})
    kinds.run_cyclegan(again)
    assert again.registered == [] and again.metrics["model_id"] == reg["id"] and again.metrics["resumed_from"] == 3

    images = []
    for i, (w, h) in enumerate([(37, 53), (64, 48)]):
        p = tmp_path / f"images-{i}-photo{i}.jpg"
        noise_image(w, h, i).save(p)
        images.append(InputFile("images", p.name, "image/jpeg", p))
    tctx = ResourceContext({"model": reg["id"], "direction": "BtoA"}, tmp_path / "translate",
                           {("models", reg["id"]): reg["dir"]}, inputs=images)
    kinds.run_translate(tctx)
    assert sorted(tctx.outputs) == ["photo0.png", "photo1.png"]
    assert Image.open(tmp_path / "translate" / "photo0.png").size == (37, 53)
    assert tctx.metrics["direction"] == "BtoA" and tctx.metrics["images"] == 2


def test_pix2pix_job(tmp_path: Path) -> None:
    dataset = tiny_paired_dir(tmp_path / "dataset", short_side=32)
    ctx = ResourceContext({"dataset": "p", "iterations": 2, **TINY}, tmp_path / "job", {("datasets", "p"): dataset})
    kinds.run_pix2pix(ctx)
    meta = json.loads((tmp_path / "job" / "model.json").read_text())
    assert meta["family"] == "pix2pix" and list(meta["generators"]) == ["AtoB"]
    assert ctx.registered[0]["kind"] == "pix2pix"
