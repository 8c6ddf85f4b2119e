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
from typing import TYPE_CHECKING, Any

from core.engines.gan.directions import DIRECTIONS, choose_direction
from core.errors import UserError, quote
from core.kinds.base import DEVICE_PARAM, InputSpec, JobKind, UploadInfo
from core.schema import Param, Schema

if TYPE_CHECKING:  # pragma: no cover
    from core.kinds.context import JobContext

# Choices, kept torch-free here; tests check they match the engine's registries.
GENERATORS = ("resnet_9blocks", "resnet_6blocks", "unet_256", "unet_128")
DISCRIMINATORS = ("basic", "n_layers", "pixel")
NORMS = ("instance", "batch", "none")
GAN_MODES = ("lsgan", "vanilla")
PREPROCESS = ("resize_and_crop", "crop", "scale_width", "scale_width_and_crop", "none")
AMP = ("auto", "bf16", "fp16", "fp32")
DEFAULT_ITERATIONS = 1000
#: load_size / crop_size of the reference's defaults (286 / 256), used when load_size is left empty.
LOAD_RATIO = 286 / 256

#: Suggested parameters for the one-click demo (built-in demo dataset, a few minutes on 2 CPU cores).
DEMO_PARAMS: dict[str, Any] = {"size": 128, "iterations": 600, "netG": "resnet_6blocks", "ngf": 32, "ndf": 32,
                               "checkpoint_every": 100}


def _common_train_params(family: str) -> tuple[Param, ...]:
    cyc = family == "cyclegan"
    return (
        Param("dataset", "str", "", f"Id of a registered {'unpaired' if cyc else 'paired'} dataset",
              cli=False),
        Param("name", "str", "", "Name of the model this job registers (default: the family and job id)"),
        # CycleGAN: 128 rather than the reference's 256, so a default job finishes on a CPU worker; pix2pix
        # keeps the reference's 256, the size its default U-Net-256 needs.
        Param("size", "int", 128 if cyc else 256, "Side of the square crops the networks train on (the "
              "reference's crop_size); a multiple of 4 for ResNet, of 128/256 for U-Net", minimum=16,
              maximum=1024, label="Crop size"),
        Param("load_size", "int", None, "Images are scaled to this size before cropping (empty: 286/256 of the "
              "crop size, as the reference's defaults)", minimum=16, maximum=4096, nullable=True, advanced=True),
        Param("iterations", "int", None, f"Training iterations (batches); default {DEFAULT_ITERATIONS} when "
              "epochs is empty too", minimum=1, maximum=10_000_000, nullable=True),
        Param("epochs", "int", None, "Train for this many passes over the dataset instead of a number of "
              "iterations", minimum=1, maximum=100_000, nullable=True),
        Param("batch_size", "int", 1, "Images per iteration", minimum=1, maximum=64),
        Param("netG", "choice", "resnet_9blocks" if cyc else "unet_256", "Generator architecture",
              choices=GENERATORS, label="Generator"),
        Param("ngf", "int", 64, "Filters in the generator's first layer", minimum=4, maximum=256, advanced=True),
        Param("netD", "choice", "basic", "Discriminator: basic (70x70 PatchGAN), n_layers (PatchGAN with "
              "n_layers_D), pixel (1x1)", choices=DISCRIMINATORS, advanced=True, label="Discriminator"),
        Param("ndf", "int", 64, "Filters in the discriminator's first layer", minimum=4, maximum=256, advanced=True),
        Param("n_layers_D", "int", 3, "Layers of the n_layers discriminator", minimum=1, maximum=6, advanced=True),
        Param("norm", "choice", "instance" if cyc else "batch", "Normalisation in generator and discriminator",
              choices=NORMS, advanced=True),
        Param("dropout", "bool", not cyc, "Dropout (0.5) in the generator", advanced=True),
        Param("gan_mode", "choice", "lsgan" if cyc else "vanilla", "Adversarial loss: lsgan (least squares) or "
              "vanilla (cross-entropy)", choices=GAN_MODES, advanced=True),
    )


def _tail_params() -> tuple[Param, ...]:
    return (
        Param("lr", "float", 2e-4, "Adam learning rate", minimum=1e-7, maximum=1.0, advanced=True),
        Param("beta1", "float", 0.5, "Adam beta1", minimum=0.0, maximum=0.999, advanced=True),
        Param("lr_decay_fraction", "float", 0.5, "Share of the run, at the end, over which the learning rate "
              "decays linearly to zero (the reference's n_epochs_decay / (n_epochs + n_epochs_decay))",
              minimum=0.0, maximum=1.0, advanced=True),
        Param("preprocess", "choice", "resize_and_crop", "How training images become crops", choices=PREPROCESS,
              advanced=True),
        Param("flip", "bool", True, "Random horizontal flips (--no-flip turns them off)", advanced=True),
        Param("checkpoint_every", "int", 250, "Save a checkpoint every N iterations (0: only at the end); a job "
              "restarted after a crash continues from the newest", minimum=0, maximum=10_000_000, advanced=True),
        Param("seed", "int", 0, "Seed of initialisation, data order and augmentation", minimum=0,
              maximum=2**31 - 1, advanced=True),
        Param("amp", "choice", "auto", "Arithmetic: auto (bf16 where the CPU/GPU has bf16 units, else fp32 "
              "or fp16 with loss scaling on older GPUs), bf16, fp16, fp32", choices=AMP, advanced=True,
              label="Precision"),
        DEVICE_PARAM,
    )


CYCLEGAN_SCHEMA = Schema(
    kind="cyclegan_train",
    description="Train CycleGAN on an unpaired dataset (two folders of images): learns A->B and B->A.",
    params=(
        *_common_train_params("cyclegan"),
        Param("lambda_A", "float", 10.0, "Weight of the cycle loss A->B->A", minimum=0.0, maximum=1000.0,
              advanced=True),
        Param("lambda_B", "float", 10.0, "Weight of the cycle loss B->A->B", minimum=0.0, maximum=1000.0,
              advanced=True),
        Param("lambda_identity", "float", 0.5, "Weight of the identity loss, relative to the cycle weights (0 "
              "turns it off)", minimum=0.0, maximum=100.0, advanced=True),
        Param("pool_size", "int", 50, "Generated images kept for the discriminators (0: no history)",
              minimum=0, maximum=1000, advanced=True),
        *_tail_params(),
    ),
)

PIX2PIX_SCHEMA = Schema(
    kind="pix2pix_train",
    description="Train pix2pix on a paired dataset (aligned A/B images): learns input->output.",
    params=(
        *_common_train_params("pix2pix"),
        Param("lambda_L1", "float", 100.0, "Weight of the L1 loss to the target", minimum=0.0, maximum=10000.0,
              advanced=True, label="Lambda L1"),
        Param("direction", "choice", "AtoB", "Which side is the input: AtoB or BtoA", choices=DIRECTIONS),
        *_tail_params(),
    ),
)

TRANSLATE_SCHEMA = Schema(
    kind="translate",
    description="Translate images with a trained or imported generator, each at its own size.",
    params=(
        Param("model", "str", "", "Id of a registered model (the CLI also takes a model directory or a "
              "generator file)"),
        Param("direction", "choice", "auto", "AtoB or BtoA (auto: the model's only direction, AtoB when it "
              "has both)", choices=("auto", *DIRECTIONS)),
        Param("batch_size", "int", 4, "Images per forward pass (images of similar size are batched)",
              minimum=1, maximum=64, advanced=True),
        Param("amp", "choice", "auto", "Arithmetic: auto (bf16 where supported), bf16, fp16, fp32",
              choices=AMP, advanced=True, label="Precision"),
        DEVICE_PARAM,
    ),
)

#: Options for importing a reference generator file (the models import endpoint and the CLI's
#: translate with a bare .pth). Empty values mean "read it from the file".
IMPORT_SCHEMA = Schema(
    kind="import_generator",
    description="Import a generator file of the reference implementation (latest_net_G_A.pth, latest_net_G.pth).",
    params=(
        Param("name", "str", "", "Model name (default: the file name)"),
        Param("direction", "choice", None, "What the generator maps (default: BtoA for a *G_B* file, else AtoB)",
              choices=DIRECTIONS, nullable=True),
        Param("netG", "choice", None, "Expected architecture (empty: inferred from the file)", choices=GENERATORS,
              nullable=True),
        Param("ngf", "int", None, "Expected filters in the first layer (empty: inferred)", minimum=1,
              maximum=1024, nullable=True),
        Param("norm", "choice", None, "Expected normalisation (empty: inferred)", choices=NORMS, nullable=True),
        Param("dropout", "bool", None, "Whether the generator has dropout layers (empty: inferred where the "
              "file shows it)", nullable=True),
    ),
)


# ---------------------------------------------------------------------------------------------------
# Cross-field rules (submit time) and params -> engine options
# ---------------------------------------------------------------------------------------------------
def resolved_load_size(params: Mapping[str, Any]) -> int:
    return int(params.get("load_size") or round(params["size"] * LOAD_RATIO))


def check_train(params: Mapping[str, Any], uploads: list[UploadInfo] | None = None) -> None:
    if not params.get("dataset"):
        raise UserError("dataset is required: the id of a registered dataset", "dataset")
    if params.get("iterations") is not None and params.get("epochs") is not None:
        raise UserError("give iterations or epochs, not both", "epochs")
    size, net, pre = params["size"], params["netG"], params["preprocess"]
    if net.startswith("unet"):
        need = int(net.split("_")[1])
        if pre in ("scale_width", "none"):
            raise UserError(f"{net} trains on crops: use preprocess resize_and_crop, crop or "
                            "scale_width_and_crop", "preprocess")
        if size % need:
            raise UserError(f"{net} needs a crop size that is a multiple of {need}, got {size}", "size")
    elif size % 4:
        raise UserError(f"ResNet generators need a crop size that is a multiple of 4, got {size}", "size")
    n = {"basic": 3, "n_layers": params["n_layers_D"], "pixel": 0}[params["netD"]]
    if n and size < 3 * 2**n:
        raise UserError(f"crop size {size} is too small for the {params['netD']} discriminator ({n} layers); "
                        f"use at least {3 * 2**n}", "size")
    if pre in ("resize_and_crop", "scale_width_and_crop") and resolved_load_size(params) < size:
        raise UserError(f"load_size ({params['load_size']}) must be at least the crop size ({size})", "load_size")


def total_steps_train(params: Mapping[str, Any]) -> int:
    """Known before the job starts only when counted in iterations (epochs depend on the dataset)."""
    if params.get("epochs") is not None:
        return 0
    return int(params.get("iterations") or DEFAULT_ITERATIONS)


def train_options(family: str, params: Mapping[str, Any]) -> Any:
    """Validated params -> :class:`core.engines.gan.options.TrainOptions` (imports the engine)."""
    from core.engines.gan.options import TrainOptions

    iterations, epochs = params.get("iterations"), params.get("epochs")
    if iterations is None and epochs is None:
        iterations = DEFAULT_ITERATIONS
    common = dict(
        family=family, netG=params["netG"], ngf=params["ngf"], netD=params["netD"], ndf=params["ndf"],
        n_layers_D=params["n_layers_D"], norm=params["norm"], dropout=params["dropout"],
        gan_mode=params["gan_mode"], lr=params["lr"], beta1=params["beta1"],
        lr_decay_fraction=params["lr_decay_fraction"], batch_size=params["batch_size"], iterations=iterations,
        epochs=epochs, preprocess=params["preprocess"], load_size=resolved_load_size(params),
        crop_size=params["size"], flip=params["flip"], checkpoint_every=params["checkpoint_every"],
        seed=params["seed"], amp=params["amp"],
    )
    if family == "cyclegan":
        return TrainOptions(**common, lambda_A=params["lambda_A"], lambda_B=params["lambda_B"],
                            lambda_identity=params["lambda_identity"], pool_size=params["pool_size"])
    return TrainOptions(**common, lambda_L1=params["lambda_L1"], direction=params["direction"], pool_size=0)


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
    if params.get("device", "auto") == "auto" and getattr(ctx, "device", "auto") in ("cpu", "cuda"):
        return ctx.device
    return params.get("device", "auto")


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
    result = train(opts, data, Path(ctx.work_dir) / "checkpoints", ctx.progress, device=_device(params, ctx))
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
