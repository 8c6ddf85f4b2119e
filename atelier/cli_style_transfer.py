"""``atelier style-transfer CONTENT STYLE [STYLE ...] -o OUT.png [options]``: the engine from a shell.

The options are generated from the job kind's schema (:data:`core.kinds.style_transfer.SCHEMA`), so the
CLI, the API and the web form accept the same parameters with the same checks. Two are special here:
``--init`` also takes a PATH (an initial image; the API uploads it instead), and ``--weights`` picks the
VGG-19 weights (a .pth/.safetensors path or ``random``; default ``ATELIER_VGG19_WEIGHTS``, else
torchvision's ImageNet weights).

With ``--json`` the last line on stdout is one JSON object: ``seconds`` (optimisation), ``load_seconds``
(decoding images, loading weights), ``steps``, ``loss``, ``content_loss``, ``style_loss``, ``tv_loss``
(the documented objective of the saved image, in fp32) and ``trace``: ``[[seconds, loss], ...]`` with one
entry per step at the output size (coarse-level steps count in the seconds but add no entry, so the
traces of different schedules compare honestly). Progress goes to stderr.

Exit status: 0 done, 1 the job could not run (e.g. weights missing), 2 bad input (the message names
the option), 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from core.engines.progress import Progress
from core.errors import ConfigError, JobFailure, UserError
from core.kinds.style_transfer import SCHEMA

_OUTPUT_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
_POSITIONAL = {"content": "CONTENT", "style": "STYLE", "output": "-o/--output", "weights": "--weights"}


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``style-transfer`` on an ``argparse`` subparsers object (``func`` = :func:`run`)."""
    p = subparsers.add_parser(
        "style-transfer", help="render a photo in the style of one or more paintings",
        description="Neural style transfer (Gatys et al.) on VGG-19. " + SCHEMA.description)
    configure(p)
    return p


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("content", metavar="CONTENT", help="the photo to repaint")
    p.add_argument("styles", metavar="STYLE", nargs="+", help="one or more style images")
    p.add_argument("-o", "--output", required=True, metavar="OUT.png", help="where to write the result")
    SCHEMA.add_arguments(p, skip=("init",))
    p.add_argument("--init", default=None, metavar="content|random|PATH",
                   help="starting image: the content, seeded noise, or an image file (default: content)")
    p.add_argument("--weights", default=None, metavar="PATH|random",
                   help="VGG-19 weights: a torchvision-layout .pth/.safetensors state_dict, or random "
                        "(default: ATELIER_VGG19_WEIGHTS, else torchvision's ImageNet weights)")
    p.add_argument("--json", action="store_true", help="print one JSON object with figures and trace as the last line")
    p.set_defaults(func=run)


class _StderrProgress(Progress):
    """One progress line on stderr about once a second, plus the engine's log lines."""

    def __init__(self) -> None:
        self.last = 0.0

    def report(self, step: int, total: int, metrics: Mapping[str, float]) -> None:
        now = time.monotonic()
        if now - self.last >= 1.0 or step == total:
            self.last = now
            print(f"step {step}/{total}  loss {metrics['loss']:.6g}  content {metrics['content_loss']:.4g}  "
                  f"style {metrics['style_loss']:.4g}  tv {metrics['tv_loss']:.4g}", file=sys.stderr, flush=True)

    def log(self, message: str) -> None:
        print(message, file=sys.stderr, flush=True)


def run(args: argparse.Namespace, settings: Any = None) -> int:
    """Run ``style-transfer`` for parsed ``args``; returns the exit status."""
    try:
        return _run(args, settings)
    except UserError as exc:
        option = _POSITIONAL.get(exc.field or "", "--" + (exc.field or "").replace("_", "-"))
        print(f"atelier style-transfer: error: {option}: {exc.message}", file=sys.stderr)
        return 2
    except (JobFailure, ConfigError) as exc:
        print(f"atelier style-transfer: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("atelier style-transfer: interrupted", file=sys.stderr)
        return 130


def _run(args: argparse.Namespace, settings: Any) -> int:
    from core.images import load_image

    raw = {p.name: getattr(args, p.name) for p in SCHEMA.params if getattr(args, p.name, None) is not None}
    init_path = None
    if args.init is not None:
        if args.init in ("content", "random"):
            raw["init"] = args.init
        else:
            init_path, raw["init"] = args.init, "image"
    params = SCHEMA.validate(raw)
    output = Path(args.output)
    if output.suffix.lower() not in _OUTPUT_SUFFIXES:
        raise UserError(f"unsupported output format {output.suffix or '(none)'}; use one of "
                        f"{', '.join(_OUTPUT_SUFFIXES)}", "output")
    if not output.parent.is_dir():
        raise UserError(f"directory {output.parent} does not exist", "output")
    weights = _weights(args.weights, settings)

    t0 = time.perf_counter()
    content = _read(args.content, "content", load_image)
    styles = [_read(path, "style", load_image) for path in args.styles]
    init_image = _read(init_path, "init", load_image) if init_path else None
    image_seconds = time.perf_counter() - t0

    from core.engines.style.options import StyleOptions
    from core.engines.style_transfer import stylize

    options = StyleOptions.from_params(params)
    progress = _StderrProgress()
    result = stylize(content, styles, options, weights=weights, init_image=init_image, progress=progress)
    tmp = output.with_name(f".{output.name}.tmp{output.suffix}")
    result.image.save(tmp)
    tmp.replace(output)
    print(f"wrote {output} ({result.image.width}x{result.image.height}), loss {result.loss:.6g}, "
          f"{result.seconds:.1f} s", file=sys.stderr)
    if args.json:
        figures = result.metrics()
        figures.update(load_seconds=round(result.load_seconds + image_seconds, 3), seconds=result.seconds,
                       output=str(output), size=[result.image.width, result.image.height],
                       trace=[[round(t, 4), loss] for t, loss in result.trace])
        print(json.dumps(figures))
    return 0


def _weights(flag: str | None, settings: Any) -> str:
    """``--weights`` wins; else the settings' ``vgg19_weights`` (from ``ATELIER_VGG19_WEIGHTS``)."""
    if flag is not None:
        flag = flag.strip()
        if flag != "random" and not Path(flag).expanduser().is_file():
            raise UserError(f"{flag} is not a file (give a .pth/.safetensors VGG-19 state_dict, or random)", "weights")
        return flag
    if settings is None:
        from core.settings import load_settings

        settings = load_settings()
    return str(settings.vgg19_weights)


def _read(path: str, field: str, loader: Any) -> Any:
    try:
        return loader(path, field)
    except FileNotFoundError:
        raise UserError(f"{path}: no such file", field) from None
    except IsADirectoryError:
        raise UserError(f"{path} is a directory, not an image", field) from None


def main(argv: list[str] | None = None) -> int:
    """``python -m atelier.cli_style_transfer ...``: the same command without the ``atelier`` wrapper."""
    parser = argparse.ArgumentParser(prog="atelier style-transfer",
                                     description="Neural style transfer (Gatys et al.) on VGG-19. " + SCHEMA.description)
    configure(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
