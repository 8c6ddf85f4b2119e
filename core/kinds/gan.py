"""The ``cyclegan_train``, ``pix2pix_train`` and ``translate`` job kinds, and generator import.

Parameter names follow the reference implementation (``netG``, ``ngf``, ``lambda_A``, ``gan_mode``...)
where they read well as CLI options; three deliberate differences: ``size`` is the reference's
``crop_size`` (the issue's ``--size``), and ``dropout`` / ``flip`` replace the negative flags
``--no_dropout`` / ``--no_flip`` (the CLI still has ``--no-dropout`` and ``--no-flip``).

Importing this module imports no torch (the web process validates with these schemas); the ``run``
functions import the engine when a worker runs a job.

Model directories (what training registers, what :func:`import_generator` writes, what ``translate``
reads) are described in :mod:`core.engines.gan.weights`.
"""

from __future__ import annotations

import json
import re
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args

from pydantic import model_validator

from core.engines.gan.directions import DIRECTIONS, choose_direction
from core.engines.gan.rules import DEFAULT_ITERATIONS, check_training
from core.errors import UserError, quote
from core.kinds.base import InputSpec, JobKind, UploadInfo
from core.schema import DEVICE_FIELD, Device, Float, Int, KindParams, Schema, param, resolve_job_device

if TYPE_CHECKING:  # pragma: no cover
    from core.kinds.context import JobContext

# Choices, kept torch-free here; tests check they match the engine's registries.
Generator = Literal["resnet_9blocks", "resnet_6blocks", "unet_256", "unet_128"]
Discriminator = Literal["basic", "n_layers", "pixel"]
Norm = Literal["instance", "batch", "none"]
GanMode = Literal["lsgan", "vanilla"]
PreprocessMode = Literal["resize_and_crop", "crop", "scale_width", "scale_width_and_crop", "none"]
Amp = Literal["auto", "bf16", "fp16", "fp32"]
Direction = Literal["AtoB", "BtoA"]
GENERATORS, DISCRIMINATORS, NORMS = get_args(Generator), get_args(Discriminator), get_args(Norm)
GAN_MODES, PREPROCESS, AMP = get_args(GanMode), get_args(PreprocessMode), get_args(Amp)
assert get_args(Direction) == DIRECTIONS

#: The one-click demo training (the datasets page's button): small networks and crops so it finishes in
#: minutes on a laptop CPU (the kind's defaults are the reference's, sized for a GPU). The page and the
#: tests use this one dict.
DEMO_PARAMS: dict[str, Any] = {"name": "demo cyclegan", "iterations": 300, "size": 64, "netG": "resnet_6blocks",
                               "ngf": 16, "ndf": 16, "checkpoint_every": 100}


class TrainParams(KindParams):
    """What CycleGAN and pix2pix training share. The reference's names where they read well as CLI
    options; ``size`` is its ``crop_size``. Defaults are CycleGAN's; pix2pix overrides its own."""

    dataset: str = param("", "Id of a registered dataset", label="Dataset", cli=False)
    name: str = param("", "Name of the model this job registers (default: the family and job id)", label="Model name")
    # 128 rather than the reference's 256, so a default CycleGAN job finishes on a CPU worker.
    size: Int = param(128, "Side of the square crops the networks train on (the reference's crop_size); a "
                      "multiple of 4 for ResNet, of 128/256 for U-Net", label="Crop size", ge=16, le=1024)
    load_size: Int | None = param(None, "Images are scaled to this size before cropping (empty: 286/256 of the "
                                  "crop size, as the reference's defaults)",
                                  label="Load size", advanced=True, ge=16, le=4096)
    iterations: Int | None = param(None, f"Training iterations (batches); default {DEFAULT_ITERATIONS} when "
                                   "epochs is empty too", ge=1, le=10_000_000)
    epochs: Int | None = param(None, "Train for this many passes over the dataset instead of a number of "
                               "iterations", ge=1, le=100_000)
    batch_size: Int = param(1, "Images per iteration", ge=1, le=64)
    netG: Generator = param("resnet_9blocks", "Generator architecture", label="Generator")
    ngf: Int = param(64, "Filters in the generator's first layer",
                     label="Generator filters", advanced=True, ge=4, le=256)
    netD: Discriminator = param("basic", "Discriminator: basic (70x70 PatchGAN), n_layers (PatchGAN with "
                                "n_layers_D), pixel (1x1)", label="Discriminator", advanced=True)
    ndf: Int = param(64, "Filters in the discriminator's first layer",
                     label="Discriminator filters", advanced=True, ge=4, le=256)
    n_layers_D: Int = param(3, "Layers of the n_layers discriminator",
                            label="Discriminator layers", advanced=True, ge=1, le=6)
    norm: Norm = param("instance", "Normalisation in generator and discriminator", label="Normalisation", advanced=True)
    dropout: bool = param(False, "Dropout (0.5) in the generator", advanced=True)
    gan_mode: GanMode = param("lsgan", "Adversarial loss: lsgan (least squares) or vanilla (cross-entropy)",
                              label="Adversarial loss", advanced=True)
    lr: Float = param(2e-4, "Adam learning rate", label="Learning rate", advanced=True, ge=1e-7, le=1.0)
    beta1: Float = param(0.5, "Adam beta1", label="Adam β1", advanced=True, ge=0.0, le=0.999)
    lr_decay_fraction: Float = param(0.5, "Share of the run, at the end, over which the learning rate decays "
                                     "linearly to zero (the reference's n_epochs_decay / (n_epochs + "
                                     "n_epochs_decay))",
                                     label="Learning-rate decay share", advanced=True, ge=0.0, le=1.0)
    preprocess: PreprocessMode = param("resize_and_crop", "How training images become crops", label="Preprocessing",
                                       advanced=True)
    flip: bool = param(True, "Random horizontal flips (--no-flip turns them off)", label="Random flips",
                       advanced=True)
    checkpoint_every: Int = param(250, "Save a checkpoint every N iterations (0: only at the end); a job "
                                  "restarted after a crash continues from the newest",
                                  label="Checkpoint every", advanced=True, ge=0,
                                  le=10_000_000)
    seed: Int = param(0, "Seed of initialisation, data order and augmentation", advanced=True, ge=0, le=2**31 - 1)
    amp: Amp = param("auto", "Arithmetic: auto (bf16 where the CPU/GPU has bf16 units, else fp32 or fp16 with "
                     "loss scaling on older GPUs), bf16, fp16, fp32", label="Precision", advanced=True)
    device: Device = DEVICE_FIELD

    @model_validator(mode="after")
    def _engine_rules(self) -> "TrainParams":
        """The engine's own rules on crop sizes and iterations (one place: :mod:`core.engines.gan.rules`)."""
        check_training(crop_size=self.size, netG=self.netG, netD=self.netD, n_layers_D=self.n_layers_D,
                       preprocess=self.preprocess, load_size=self.load_size, iterations=self.iterations,
                       epochs=self.epochs)
        return self


class CycleGANParams(TrainParams):
    dataset: str = param("", "Id of a registered unpaired dataset", label="Dataset", cli=False)
    lambda_A: Float = param(10.0, "Weight of the cycle loss A->B->A",
                            label="Cycle weight A→B→A", advanced=True, ge=0.0, le=1000.0)
    lambda_B: Float = param(10.0, "Weight of the cycle loss B->A->B",
                            label="Cycle weight B→A→B", advanced=True, ge=0.0, le=1000.0)
    lambda_identity: Float = param(0.5, "Weight of the identity loss, relative to the cycle weights (0 turns it "
                                   "off)", label="Identity weight", advanced=True, ge=0.0, le=100.0)
    pool_size: Int = param(50, "Generated images kept for the discriminators (0: no history)",
                           label="Image pool size", advanced=True,
                           ge=0, le=1000)


class Pix2PixParams(TrainParams):
    dataset: str = param("", "Id of a registered paired dataset", label="Dataset", cli=False)
    # The reference's 256, the size its default U-Net-256 needs.
    size: Int = param(256, "Side of the square crops the networks train on (the reference's crop_size); a "
                      "multiple of 4 for ResNet, of 128/256 for U-Net", label="Crop size", ge=16, le=1024)
    netG: Generator = param("unet_256", "Generator architecture", label="Generator")
    norm: Norm = param("batch", "Normalisation in generator and discriminator", label="Normalisation", advanced=True)
    dropout: bool = param(True, "Dropout (0.5) in the generator", advanced=True)
    gan_mode: GanMode = param("vanilla", "Adversarial loss: lsgan (least squares) or vanilla (cross-entropy)",
                              label="Adversarial loss", advanced=True)
    lambda_L1: Float = param(100.0, "Weight of the L1 loss to the target", label="L1 weight", advanced=True,
                             ge=0.0, le=10000.0)
    direction: Direction = param("AtoB", "Which side is the input: AtoB or BtoA")


class TranslateParams(KindParams):
    model: str = param("", "Id of a registered model (the CLI also takes a model directory or a generator file)",
                       label="Model")
    direction: Literal["auto", "AtoB", "BtoA"] = param("auto", "AtoB or BtoA (auto: the model's only direction, "
                                                        "AtoB when it has both)")
    batch_size: Int = param(4, "Images per forward pass (images of similar size are batched)", advanced=True,
                            ge=1, le=64)
    amp: Amp = param("auto", "Arithmetic: auto (bf16 where supported), bf16, fp16, fp32", label="Precision",
                     advanced=True)
    device: Device = DEVICE_FIELD


class ImportOptions(KindParams):
    """Options for importing a reference generator file (the models import endpoint and the CLI's translate
    with a bare .pth). Empty values mean "read it from the file"."""

    name: str = param("", "Model name (default: the file name)")
    direction: Direction | None = param(None, "What the generator maps (default: BtoA for a *G_B* file, else AtoB)")
    netG: Generator | None = param(None, "Expected architecture (empty: inferred from the file)", label="Generator")
    ngf: Int | None = param(None, "Expected filters in the first layer (empty: inferred)", label="Generator filters",
                            ge=1, le=1024)
    norm: Norm | None = param(None, "Expected normalisation (empty: inferred)", label="Normalisation")
    dropout: bool | None = param(None, "Whether the generator has dropout layers (empty: inferred where the file "
                                 "shows it)")


CYCLEGAN_SCHEMA = Schema("cyclegan_train", CycleGANParams, "Train CycleGAN on an unpaired dataset (two folders of "
                         "images): learns A->B and B->A.")
PIX2PIX_SCHEMA = Schema("pix2pix_train", Pix2PixParams, "Train pix2pix on a paired dataset (aligned A/B images): "
                        "learns input->output.")
TRANSLATE_SCHEMA = Schema("translate", TranslateParams, "Translate images with a trained or imported generator, "
                          "each at its own size.")
IMPORT_SCHEMA = Schema("import_generator", ImportOptions, "Import a generator file of the reference implementation "
                       "(latest_net_G_A.pth, latest_net_G.pth).")


# ---------------------------------------------------------------------------------------------------
# Cross-field rules (submit time) and params -> engine options
# ---------------------------------------------------------------------------------------------------
def check_train(params: Mapping[str, Any], uploads: list[UploadInfo] | None = None) -> None:
    """Submit-time rule of a training job beyond its parameters' own (the model checks those): it needs
    a dataset."""
    if not params.get("dataset"):
        raise UserError("dataset is required: the id of a registered dataset", "dataset")


def total_steps_train(params: Mapping[str, Any]) -> int:
    """Known before the job starts only when counted in iterations (epochs depend on the dataset)."""
    if params.get("epochs") is not None:
        return 0
    return int(params.get("iterations") or DEFAULT_ITERATIONS)


def train_options(family: str, params: Mapping[str, Any]) -> Any:
    """Validated params -> :class:`core.engines.gan.options.TrainOptions` (imports the engine)."""
    from core.engines.gan.options import TrainOptions

    return TrainOptions.from_params(family, params)


def training_data(family: str, opts: Any, a: Path | None = None, b: Path | None = None,
                  root: Path | None = None, ab: Path | None = None) -> Any:
    """The engine's data source from a dataset directory (``root``), two folders (``a``, ``b``) or a folder
    of side-by-side A|B images (``ab``, pix2pix)."""
    from core.engines.gan import data as D

    pre = opts.preprocess_spec()
    if family == "cyclegan":
        files_a, files_b = D.unpaired_files(root) if root is not None else (D.list_images(a), D.list_images(b))
        return D.UnpairedData(files_a, files_b, pre, opts.seed)
    if root is not None:
        pairs = D.paired_files(root)
    elif ab is not None:
        pairs = [(p, None) for p in D.list_images(ab)]
    else:
        pairs, missing = D.match_pairs(D.list_images(a), D.list_images(b))
        if missing:
            raise UserError(f"{len(missing)} images have no partner with the same name, e.g. {missing[0]}", "b")
    return D.PairedData(pairs, pre, opts.seed)


# ---------------------------------------------------------------------------------------------------
# Running
# ---------------------------------------------------------------------------------------------------
def _device(params: Mapping[str, Any], ctx: "JobContext") -> str:
    return resolve_job_device(params.get("device", "auto"), getattr(ctx, "device", "auto"))


def finish_training(result: Any, family: str, params: Mapping[str, Any], model_dir: Path) -> dict[str, Any]:
    """Write the trained generator(s) and their options as a model directory; returns its meta."""
    from core.engines.gan.weights import write_model_dir

    options = {k: v for k, v in params.items() if k not in ("dataset", "device")}
    options.update(iterations_done=result.iterations, precision=result.precision)
    return write_model_dir(model_dir, family, result.generators(), options)


def _run_training(family: str, ctx: "JobContext") -> None:
    from core.engines.gan.trainer import train
    from core.images import encode_png

    schema = CYCLEGAN_SCHEMA if family == "cyclegan" else PIX2PIX_SCHEMA
    params = schema.validate(dict(ctx.params))
    check_train(params)
    opts = train_options(family, params)
    data = training_data(family, opts, root=ctx.resource_path("datasets", params["dataset"]))
    result = train(opts, data, Path(ctx.work_dir) / "checkpoints", ctx.progress, device=_device(params, ctx),
                   on_checkpoint=lambda _path: ctx.persist_work("checkpoints"))
    # Registration happens once even if this attempt dies after it and the job runs again.
    marker = Path(ctx.work_dir) / "registered_model.json"
    with tempfile.TemporaryDirectory(dir=ctx.work_dir) as tmp:
        model_dir = Path(tmp) / "model"
        meta = finish_training(result, family, params, model_dir)
        if marker.exists():
            model_id = json.loads(marker.read_text())["model_id"]
        else:
            name = params["name"] or f"{family} {ctx.job_id[:8]}"
            model_id = ctx.register_model(name, family, model_dir, meta)
            marker.write_text(json.dumps({"model_id": model_id}))
            ctx.persist_work(marker.name)
        for entry in meta["generators"].values():
            ctx.save_output(entry["file"], (model_dir / entry["file"]).read_bytes(), "application/octet-stream")
        ctx.save_output("model.json", (model_dir / "meta.json").read_bytes(), "application/json")
    ctx.save_output("samples.png", encode_png(result.final_sample(data)), "image/png")
    for warning in result.collapse_warnings(data):
        ctx.warn(warning)
    ctx.set_metrics({"model_id": model_id, "iterations": result.iterations, "seconds": round(result.seconds, 3),
                     "it_per_s": round(result.it_per_s, 4), "precision": result.precision, "device": result.device,
                     "resumed_from": result.resumed_from,
                     **{f"final_{k}": round(v, 6) for k, v in result.losses.items()}})


def run_cyclegan(ctx: "JobContext") -> None:
    _run_training("cyclegan", ctx)


def run_pix2pix(ctx: "JobContext") -> None:
    _run_training("pix2pix", ctx)


def output_names(input_names: list[str]) -> list[str]:
    """One ``<stem>.png`` per input, made unique (``cat.jpg`` and ``cat.png`` -> ``cat.png``, ``cat-2.png``)."""
    used: set[str] = set()
    out = []
    for raw in input_names:
        stem = Path(raw.replace("\\", "/")).stem or "image"
        name, n = f"{stem}.png", 1
        while name.lower() in used:
            n += 1
            name = f"{stem}-{n}.png"
        used.add(name.lower())
        out.append(name)
    return out


def run_translate(ctx: "JobContext") -> None:
    from core.engines.gan.translate import Translator
    from core.engines.gan.weights import load_generator
    from core.images import encode_png

    params = TRANSLATE_SCHEMA.validate(dict(ctx.params))
    if not params["model"]:
        raise UserError("model is required: the id of a registered model", "model")
    files = ctx.inputs_for("images")
    if not files:
        raise UserError("at least one image is required", "images")
    net, spec, direction = load_generator(ctx.resource_path("models", params["model"]), params["direction"])
    translator = Translator(net, spec, device=_device(params, ctx), amp=params["amp"])
    prec = translator.precision
    small = ", float32 for images under 128x128 pixels" if translator.small_images_fp32 else ""
    ctx.progress.log(f"translating {len(files)} images {direction} with {spec.name} on {prec.device.type} "
                     f"({prec.name}{small})")
    # Submit stores inputs as "images-<i>-<original>"; outputs are named after the original.
    names = output_names([re.sub(r"^images-\d+-", "", f.name) for f in files])
    t0, done, chunk = time.perf_counter(), 0, 16  # decode a chunk at a time: bounded memory
    used: set[str] = set()
    for start in range(0, len(files), chunk):
        part = files[start:start + chunk]
        images = [ctx.load_image(f) for f in part]
        for f, im in zip(part, images):
            translator.check_size(f.name, im.width, im.height)

        def on_done(k: int, base: int = done) -> None:
            ctx.progress.report(base + k, len(files), {})
            ctx.progress.check_cancel()

        for name, out in zip(names[start:start + chunk], translator.translate(images, params["batch_size"], on_done)):
            ctx.save_output(name, encode_png(out), "image/png")
        used |= translator.precisions_used
        done += len(part)
    seconds = time.perf_counter() - t0
    ctx.set_metrics({"images": len(files), "seconds": round(seconds, 3), "images_per_s": round(len(files) / seconds, 3),
                     "direction": direction, "precision": "+".join(sorted(used)), "generator": spec.name})


def import_generator(src_path: Path, dest_dir: Path,
                     options_override: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Import a reference generator file into a new model directory; returns the model meta.

    ``options_override`` takes :data:`IMPORT_SCHEMA`'s parameters (validated here); empty values are
    inferred from the file. Raises :class:`UserError` with field ``file`` for unreadable or mismatching
    files (the message says what was expected and what was found).
    """
    from core.pickle_guard import check_torch_file

    opts = IMPORT_SCHEMA.validate({k: v for k, v in dict(options_override or {}).items() if v is not None})
    if Path(src_path).suffix.lower() != ".safetensors":
        check_torch_file(Path(src_path))  # refused before torch is even imported (about 500 MB)
    from core.engines.gan.weights import import_generator as _import

    return _import(Path(src_path), Path(dest_dir), opts)


def check_translate(params: Mapping[str, Any], uploads: list[UploadInfo]) -> None:
    if not params.get("model"):
        raise UserError("model is required: the id of a registered model", "model")


def require_paired_dataset(params: Mapping[str, Any], referenced: Mapping[str, Any]) -> None:
    """pix2pix learns from aligned pairs; an unpaired dataset's files may share names by chance, and
    training on such "pairs" would run without error and learn nothing useful. (CycleGAN takes either
    layout: it never uses the pairing.)"""
    dataset = referenced.get("dataset")
    if dataset is not None and dataset.layout != "paired":
        raise UserError(f"dataset: {quote(dataset.name)} is an {dataset.layout} dataset; pix2pix learns from aligned "
                        "pairs, so upload it as a paired dataset, or train CycleGAN on this one", "dataset", 422)


def require_model_direction(params: Mapping[str, Any], referenced: Mapping[str, Any]) -> None:
    """A direction the model has no generator for is refused at submit (by the rule the engine applies
    when it loads the model), not after the job was queued."""
    model = referenced.get("model")
    available = list(((model.meta or {}).get("generators") or {}) if model is not None else {})
    if available:
        choose_direction(available, params.get("direction", "auto"), f"model {quote(model.name)}")


#: Training runs for hours on a CPU; two days bounds a run that will never end.
TRAINING_TIME_LIMIT_S = 48 * 3600

CYCLEGAN_KIND = JobKind(
    name="cyclegan_train", title="CycleGAN training", schema=CYCLEGAN_SCHEMA, inputs=(), run=run_cyclegan,
    time_limit_s=TRAINING_TIME_LIMIT_S,
    total_steps=total_steps_train, check=check_train, references={"dataset": "dataset"},
    description="Unpaired image-to-image translation: two generators and two discriminators with cycle "
                "consistency. Registers a model that translates both ways.")
PIX2PIX_KIND = JobKind(
    name="pix2pix_train", title="pix2pix training", schema=PIX2PIX_SCHEMA, inputs=(), run=run_pix2pix,
    time_limit_s=TRAINING_TIME_LIMIT_S,
    total_steps=total_steps_train, check=check_train, references={"dataset": "dataset"},
    check_references=require_paired_dataset,
    description="Paired image-to-image translation: a conditional GAN with an L1 term. Registers a model "
                "that translates input to output.")
TRANSLATE_KIND = JobKind(
    name="translate", title="Translate images", schema=TRANSLATE_SCHEMA,
    inputs=(InputSpec("images", "Images to translate (any size; each output keeps its input's size)",
                      multiple=True),),
    run=run_translate, total_steps=lambda params: 0, check=check_translate, references={"model": "model"},
    check_references=require_model_direction,
    description="Apply a trained or imported CycleGAN/pix2pix generator to images, in either direction.")

KINDS: tuple[JobKind, ...] = (CYCLEGAN_KIND, PIX2PIX_KIND, TRANSLATE_KIND)
