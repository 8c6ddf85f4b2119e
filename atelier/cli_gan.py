"""``atelier translate``, ``atelier cyclegan train`` and ``atelier pix2pix train``.

Options come from the job kinds' schemas (:mod:`core.kinds.gan`), so the CLI and the API take the same
parameters under the same names (``--lambda-A`` <-> ``lambda_A``). Training writes into ``-o OUTDIR``:
``checkpoints/`` (running the same command again continues from the newest one), ``model/`` (a model
directory ``atelier translate --model`` takes) and ``samples.png``. With ``--json`` the last line on
stdout is one JSON object: ``it_per_s`` (after warm-up), ``iterations``, ``seconds``, ``losses`` and more.

``--model`` takes a model directory or a generator file (``.pth``/``.safetensors``). A registered model
*id* needs the service database: :func:`add_parsers` accepts a ``resolve_model(id, settings) -> Path``
hook for that; without one, ids are refused with a message saying so.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from core.engines.progress import Progress
from core.errors import AtelierError, UserError
from core.kinds import gan as kinds
from core.schema import resolve_job_device

ModelResolver = Callable[[str, Any], Path]


class ConsoleProgress(Progress):
    """Prints engine log lines and a progress line every ``every`` steps to stderr (stdout stays for JSON)."""

    def __init__(self, every: int = 10, quiet: bool = False) -> None:
        self.every, self.quiet = every, quiet
        self.last: tuple[int, int, dict[str, float]] | None = None

    def report(self, step: int, total: int, metrics: Mapping[str, float]) -> None:
        self.last = (step, total, dict(metrics))
        if not self.quiet and (step % self.every == 0 or step == total):
            losses = " ".join(f"{k} {v:.3f}" for k, v in metrics.items())
            print(f"[{step}/{total}] {losses}", file=sys.stderr, flush=True)

    def log(self, message: str) -> None:
        if not self.quiet:
            print(message, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------------
# Parsers
# ---------------------------------------------------------------------------------------------------
def add_parsers(subparsers: Any, resolve_model: ModelResolver | None = None) -> None:
    """Add ``translate``, ``cyclegan`` and ``pix2pix`` to ``subparsers``; each sets ``func(args, settings)``."""
    p = subparsers.add_parser("translate", help="translate images with a CycleGAN/pix2pix generator",
                              description=kinds.TRANSLATE_SCHEMA.description)
    p.add_argument("inputs", nargs="+", metavar="IN", help="input images")
    p.add_argument("-o", "--output", required=True, metavar="OUTDIR", help="output directory (one PNG per input)")
    kinds.TRANSLATE_SCHEMA.add_arguments(p)
    group = p.add_argument_group("generator file options (for a bare .pth/.safetensors; empty = read from the file)")
    kinds.IMPORT_SCHEMA.add_arguments(group, skip=("name", "direction"))
    p.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    p.set_defaults(func=lambda args, settings: run_translate(args, settings, resolve_model))

    for family, schema in (("cyclegan", kinds.CYCLEGAN_SCHEMA), ("pix2pix", kinds.PIX2PIX_SCHEMA)):
        top = subparsers.add_parser(family, help=f"{family} commands")
        sub = top.add_subparsers(dest=f"{family}_command", required=True)
        t = sub.add_parser("train", help=schema.description, description=schema.description)
        t.add_argument("--a", type=Path, metavar="DIR", help="folder of domain A images" +
                       (" (inputs)" if family == "pix2pix" else ""))
        t.add_argument("--b", type=Path, metavar="DIR", help="folder of domain B images" +
                       (" with the same file names as in --a" if family == "pix2pix" else ""))
        if family == "pix2pix":
            t.add_argument("--ab", type=Path, metavar="DIR", help="instead of --a/--b: side-by-side A|B images")
        t.add_argument("-o", "--output", required=True, type=Path, metavar="OUTDIR",
                       help="checkpoints, model and samples go here; rerunning continues from the checkpoints")
        schema.add_arguments(t)
        t.add_argument("--json", action="store_true", help="print one JSON object as the last line")
        t.set_defaults(func=lambda args, settings, fam=family: run_train(args, settings, fam))


# ---------------------------------------------------------------------------------------------------
# translate
# ---------------------------------------------------------------------------------------------------
def resolve_model_arg(value: str, settings: Any, resolve_model: ModelResolver | None) -> Path:
    path = Path(value).expanduser()
    if path.exists():
        return path
    if resolve_model is None:
        raise UserError(f"--model {value}: no such model directory or generator file (model ids are looked up "
                        "in the service database only where the CLI is wired to it)", "model")
    return resolve_model(value, settings)


def run_translate(args: argparse.Namespace, settings: Any, resolve_model: ModelResolver | None = None) -> int:
    try:
        return _translate(args, settings, resolve_model)
    except AtelierError as exc:
        print(f"atelier translate: {exc}", file=sys.stderr)
        return 1


def _translate(args: argparse.Namespace, settings: Any, resolve_model: ModelResolver | None) -> int:
    from core.engines.gan.translate import Translator
    from core.engines.gan.weights import load_generator
    from core.images import encode_png, load_image

    params = kinds.TRANSLATE_SCHEMA.from_args(args)
    overrides = kinds.IMPORT_SCHEMA.from_args(args)
    if not params["model"]:
        raise UserError("--model is required", "model")
    model_path = resolve_model_arg(params["model"], settings, resolve_model)
    net, spec, direction = load_generator(model_path, params["direction"],
                                          {k: overrides[k] for k in ("netG", "ngf", "norm", "dropout")})
    device = resolve_job_device(params["device"], getattr(settings, "device", "auto"))
    translator = Translator(net, spec, device=device, amp=params["amp"])
    out_dir = Path(args.output)
    out_dir.mkdir(parents=True, exist_ok=True)
    names = kinds.output_names(list(args.inputs))
    images = []
    for path in args.inputs:
        im = load_image(str(path), field=str(path))
        translator.check_size(str(path), im.width, im.height)
        images.append(im)
    t0 = time.perf_counter()
    outputs = translator.translate(images, params["batch_size"])
    seconds = time.perf_counter() - t0
    written = []
    for name, out in zip(names, outputs):
        target = out_dir / name
        tmp = target.with_name(f".{name}.tmp")
        tmp.write_bytes(encode_png(out))
        tmp.replace(target)
        written.append(str(target))
    if not args.json:
        print(f"translated {len(images)} images {direction} with {spec.name} "
              f"({'+'.join(sorted(translator.precisions_used))}) "
              f"in {seconds:.2f} s -> {out_dir}", file=sys.stderr)
    else:
        print(json.dumps({"images": len(images), "seconds": round(seconds, 4),
                          "images_per_s": round(len(images) / max(seconds, 1e-9), 4), "direction": direction,
                          "generator": spec.name, "precision": "+".join(sorted(translator.precisions_used)),
                          "outputs": written}))
    return 0


# ---------------------------------------------------------------------------------------------------
# train
# ---------------------------------------------------------------------------------------------------
def run_train(args: argparse.Namespace, settings: Any, family: str) -> int:
    try:
        return _train(args, settings, family)
    except AtelierError as exc:
        print(f"atelier {family} train: {exc}", file=sys.stderr)
        return 1


def _train(args: argparse.Namespace, settings: Any, family: str) -> int:
    from core.engines.gan.trainer import train
    from core.images import encode_png

    schema = kinds.CYCLEGAN_SCHEMA if family == "cyclegan" else kinds.PIX2PIX_SCHEMA
    params = schema.from_args(args)
    params["dataset"] = "cli"  # the folders below stand in for a registered dataset
    kinds.check_train(params)
    ab = getattr(args, "ab", None)
    if ab is None and (args.a is None or args.b is None):
        raise UserError("--a DIR and --b DIR are required" + (" (or --ab DIR)" if family == "pix2pix" else ""), "a")
    opts = kinds.train_options(family, params)
    data = kinds.training_data(family, opts, a=args.a, b=args.b, ab=ab)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    progress = ConsoleProgress(every=max(1, min(50, opts.total_iterations(len(data)) // 20)))
    device = resolve_job_device(params["device"], getattr(settings, "device", "auto"))
    result = train(opts, data, out / "checkpoints", progress, device=device)
    model_dir = out / "model"
    kinds.finish_training(result, family, params, model_dir)
    samples = out / "samples.png"
    samples.write_bytes(encode_png(result.final_sample(data)))
    warnings = result.collapse_warnings(data)
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    summary = {"warnings": warnings, "it_per_s": round(result.it_per_s, 4), "iterations": result.iterations,
               "seconds": round(result.seconds, 3), "losses": {k: round(v, 6) for k, v in result.losses.items()},
               "precision": result.precision, "device": result.device, "resumed_from": result.resumed_from,
               "model_dir": str(model_dir), "samples": str(samples)}
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"{result.iterations} iterations, {result.it_per_s:.2f} it/s ({result.precision} on {result.device}); "
              f"model in {model_dir}", file=sys.stderr)
    return 0
