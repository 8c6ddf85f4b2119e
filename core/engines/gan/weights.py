"""Generator files: read without unpickling, infer the architecture, explain mismatches, write model dirs.

A reference ``latest_net_G_A.pth`` is a bare ``state_dict``. Its keys and shapes determine the
architecture almost completely, so :func:`infer_spec` reads them back (ResNet blocks, U-Net depth, norm,
ngf, dropout, channels) and the user needs no flags. Options given explicitly are compared with what the
file holds, and a disagreement is reported in those terms ("the file has dropout layers ... load with
--dropout") instead of PyTorch's list of missing keys.

Loading never unpickles: ``.safetensors`` through safetensors, anything else through
``torch.load(weights_only=True)``, which refuses pickles that would construct arbitrary objects.

A *model directory* (what training registers and what ``import_generator`` writes)::

    meta.json          {"format": "atelier.gan.model/1", "family": "cyclegan"|"pix2pix"|"imported",
                        "generators": {"AtoB": {"file": "G_A.safetensors", "spec": {...}},
                                       "BtoA": {"file": "G_B.safetensors", "spec": {...}}},
                        "options": {...training or import options...}, "notes": [...]}
    G_A.safetensors    generator mapping A -> B (reference key layout)
    G_B.safetensors    generator mapping B -> A (CycleGAN only)
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from core.atomic import write_atomically, write_atomically_by_path
from core.engines.gan.directions import DIRECTIONS, choose_direction
from core.engines.gan.networks import GENERATORS, NORMS, GeneratorSpec
from core.errors import UserError

MODEL_FORMAT = "atelier.gan.model/1"
GENERATOR_FORMAT = "atelier.gan.generator/1"
FILE_FOR_DIRECTION = {"AtoB": "G_A.safetensors", "BtoA": "G_B.safetensors"}


class ArchitectureMismatch(UserError):
    """The file does not hold the generator that was asked for; the message says expected vs found."""

    def __init__(self, message: str) -> None:
        super().__init__(message, "file", 422)


# ---------------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------------
def read_state_dict(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors of a ``.pth``/``.pt``/``.safetensors`` file and the safetensors metadata (may be empty)."""
    path = Path(path)
    name = path.name
    if not path.is_file():
        raise UserError(f"{path} is not a file", "file")
    metadata: dict[str, str] = {}
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt", device="cpu") as f:
                metadata = dict(f.metadata() or {})
                sd = {k: f.get_tensor(k) for k in f.keys()}
        except Exception as exc:
            raise UserError(f"{name} is not a readable safetensors file ({exc})", "file") from exc
    else:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise UserError(
                f"{name} cannot be loaded safely: it is not a plain tensor file ({_short(exc)}). "
                "Files that need unpickling of arbitrary objects are refused because loading them could "
                "run code; save the generator's state_dict() (or use .safetensors).", "file") from exc
        if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
            obj = obj["state_dict"]
        if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
            raise UserError(f"{name} does not hold a state_dict (a mapping of names to tensors)", "file")
        sd = dict(obj)
    if not sd:
        raise UserError(f"{name} holds no tensors", "file")
    # DataParallel-wrapped saves carry a "module." prefix on every key.
    if all(k.startswith("module.") for k in sd):
        sd = {k[len("module."):]: v for k, v in sd.items()}
    return sd, metadata


def _short(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else exc.__class__.__name__)[:200]


# ---------------------------------------------------------------------------------------------------
# Inference from keys and shapes
# ---------------------------------------------------------------------------------------------------
def _has_prefix(sd: Mapping[str, Any], prefix: str) -> bool:
    return any(k.startswith(prefix) for k in sd)


def _is_conv(sd: Mapping[str, torch.Tensor], key: str) -> bool:
    return key in sd and sd[key].ndim == 4


def infer_spec(sd: Mapping[str, torch.Tensor]) -> tuple[GeneratorSpec, list[str]]:
    """Read the architecture off a reference-layout generator state_dict; returns (spec, notes)."""
    notes: list[str] = []
    if _is_conv(sd, "model.1.weight") and sd["model.1.weight"].shape[-1] == 7:
        w = sd["model.1.weight"]  # (ngf, input_nc, 7, 7)
        n_blocks = 0
        while _has_prefix(sd, f"model.{10 + n_blocks}.conv_block."):
            n_blocks += 1
        norm = "batch" if "model.2.weight" in sd else ("instance" if "model.1.bias" in sd else "none")
        dropout = _is_conv(sd, "model.10.conv_block.6.weight")
        last = f"model.{17 + n_blocks}.weight"
        if last not in sd:
            raise UserError(f"this looks like a ResNet generator with {n_blocks} blocks, but its final "
                            f"convolution {last} is missing", "file")
        spec = GeneratorSpec("resnet", n_blocks, int(w.shape[0]), norm, dropout, int(w.shape[1]),
                             int(sd[last].shape[0]))
        return spec, notes
    if _is_conv(sd, "model.model.0.weight"):
        w = sd["model.model.0.weight"]  # (ngf, input_nc, 4, 4)
        depth, prefix = 1, "model.model.1"
        while _has_prefix(sd, prefix + ".model."):
            depth += 1
            if not _has_prefix(sd, prefix + ".model.3.model."):
                break
            prefix += ".model.3"
        if "model.model.1.model.2.weight" in sd:
            norm = "batch"
        elif "model.model.1.model.1.bias" in sd:
            norm = "instance"
        else:
            norm = "none"
        notes.append("U-Net dropout has no weights, so it cannot be read from the file; it does not affect "
                     "translation (dropout is off at inference)")
        out_nc = int(sd["model.model.3.weight"].shape[1]) if "model.model.3.weight" in sd else 3
        return GeneratorSpec("unet", depth, int(w.shape[0]), norm, False, int(w.shape[1]), out_nc), notes
    sample = ", ".join(list(sd)[:3])
    raise UserError("this file is not a CycleGAN/pix2pix generator: expected keys like model.1.weight "
                    f"(ResNet) or model.model.0.weight (U-Net), found {sample}", "file")


def _describe(spec: GeneratorSpec) -> str:
    if spec.arch == "resnet":
        blocks = f"model.10 … model.{9 + spec.depth}" if spec.depth else "none"
        return f"{spec.name} ({spec.depth} residual blocks: {blocks})"
    return f"{spec.name} ({spec.depth} down-samplings)"


def resolve_spec(sd: Mapping[str, torch.Tensor], overrides: Mapping[str, Any] | None = None,
                 base: GeneratorSpec | None = None) -> tuple[GeneratorSpec, list[str]]:
    """The spec to build: what the file holds, checked against explicit ``overrides``.

    ``overrides`` may hold ``netG``, ``ngf``, ``norm``, ``dropout`` (or ``no_dropout``), ``input_nc``,
    ``output_nc``; a ``None`` value means "infer". ``base`` is a spec stored with the file (our own
    safetensors metadata), used for what the keys cannot tell (U-Net dropout).
    """
    found, notes = infer_spec(sd)
    if base is not None and found.arch == "unet":
        found = found.with_(dropout=base.dropout)
        notes = []
    ov = {k: v for k, v in dict(overrides or {}).items() if v is not None}
    if "no_dropout" in ov and "dropout" not in ov:
        ov["dropout"] = not ov.pop("no_dropout")
    ov.pop("no_dropout", None)
    spec = found
    if "netG" in ov:
        if ov["netG"] not in GENERATORS:
            raise UserError(f"netG must be one of {', '.join(GENERATORS)}, got {ov['netG']!r}", "netG")
        arch, depth = GENERATORS[ov["netG"]]
        if (arch, depth) != (found.arch, found.depth):
            raise ArchitectureMismatch(f"expected a {ov['netG']} generator, but the file holds {_describe(found)}; "
                                       f"load it with --netG {found.name} or leave --netG out")
    if "norm" in ov:
        if ov["norm"] not in NORMS:
            raise UserError(f"norm must be one of {', '.join(NORMS)}", "norm")
        if ov["norm"] != found.norm:
            evidence = {"batch": "it has BatchNorm weights and running statistics",
                        "instance": "its convolutions have biases and there are no norm weights",
                        "none": "it has neither norm weights nor convolution biases"}[found.norm]
            raise ArchitectureMismatch(f"expected {ov['norm']} norm, but the file uses {found.norm} norm ({evidence}); "
                                       f"load it with --norm {found.norm}")
    for key, label in (("ngf", "filters in the first layer (ngf)"), ("input_nc", "input channels"),
                       ("output_nc", "output channels")):
        if key in ov and int(ov[key]) != getattr(found, key):
            raise ArchitectureMismatch(f"expected {ov[key]} {label}, but the file has {getattr(found, key)}; "
                                       f"load it with --{key.replace('_', '-')} {getattr(found, key)}")
    if "dropout" in ov:
        want = bool(ov["dropout"])
        if found.arch == "resnet" and found.depth and want != found.dropout:
            if found.dropout:
                raise ArchitectureMismatch(
                    "checkpoint has dropout layers (a Dropout at model.10.conv_block.4 moves each block's second "
                    "convolution to conv_block.6) but the model was asked for without dropout; load with --dropout")
            raise ArchitectureMismatch(
                "checkpoint has no dropout layers (each residual block's second convolution is conv_block.5) but "
                "the model was asked for with dropout; load without --dropout (--no-dropout)")
        spec = spec.with_(dropout=want)
        notes = [n for n in notes if "dropout" not in n]
    return spec, notes


# ---------------------------------------------------------------------------------------------------
# Building
# ---------------------------------------------------------------------------------------------------
def _drop_instance_norm_stats(net: nn.Module, sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Files saved by PyTorch < 0.4 carry running statistics for InstanceNorm layers that have none now
    (the reference patches them away the same way)."""
    inorm = {name for name, m in net.named_modules() if isinstance(m, nn.InstanceNorm2d)}
    stats = ("running_mean", "running_var", "num_batches_tracked")
    return {k: v for k, v in sd.items() if not (k.rsplit(".", 1)[-1] in stats and k.rsplit(".", 1)[0] in inorm)}


def build_generator(spec: GeneratorSpec, sd: Mapping[str, torch.Tensor]) -> nn.Module:
    """Build ``spec`` and load ``sd`` strictly; a disagreement names the keys and shapes involved."""
    net = spec.build()
    sd = _drop_instance_norm_stats(net, dict(sd))
    expected = net.state_dict()
    missing = [k for k in expected if k not in sd]
    unexpected = [k for k in sd if k not in expected]
    shapes = [f"{k}: expected {tuple(expected[k].shape)}, found {tuple(sd[k].shape)}"
              for k in expected if k in sd and sd[k].shape != expected[k].shape]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {', '.join(unexpected[:3])})")
        if shapes:
            parts.append(f"{len(shapes)} with another shape ({'; '.join(shapes[:2])})")
        raise ArchitectureMismatch(f"the file does not match a {_describe(spec)} with {spec.norm} norm, "
                                   f"ngf {spec.ngf}: " + ", ".join(parts) + " tensors")
    net.load_state_dict(sd, strict=True)
    return net


# ---------------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------------
def save_generator(net: nn.Module, spec: GeneratorSpec, path: Path) -> None:
    """Write ``net`` as safetensors in the reference key layout, with its spec in the metadata."""
    from safetensors.torch import save_file

    sd = {k: v.detach().to("cpu", torch.float32 if v.is_floating_point() else v.dtype).contiguous()
          for k, v in net.state_dict().items()}
    meta = {"format": GENERATOR_FORMAT, "spec": json.dumps(spec.to_dict())}
    write_atomically_by_path(Path(path), lambda tmp: save_file(sd, str(tmp), metadata=meta))


def write_model_dir(dest: Path, family: str, generators: Mapping[str, tuple[nn.Module, GeneratorSpec]],
                    options: Mapping[str, Any], notes: list[str] | None = None) -> dict[str, Any]:
    """Write generator files + ``meta.json`` into ``dest``; returns the meta dict."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    entries = {}
    for direction, (net, spec) in generators.items():
        if direction not in DIRECTIONS:
            raise ValueError(f"unknown direction {direction!r}")
        save_generator(net, spec, dest / FILE_FOR_DIRECTION[direction])
        entries[direction] = {"file": FILE_FOR_DIRECTION[direction], "spec": spec.to_dict()}
    meta = {"format": MODEL_FORMAT, "family": family, "generators": entries, "options": dict(options),
            "notes": list(notes or [])}
    write_atomically(dest / "meta.json", lambda fh: fh.write(json.dumps(meta, indent=2, sort_keys=True).encode()))
    return meta


def read_model_meta(model_dir: Path) -> dict[str, Any]:
    path = Path(model_dir) / "meta.json"
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise UserError(f"{model_dir} is not a model directory (no readable meta.json)", "model") from exc
    if meta.get("format") != MODEL_FORMAT or not meta.get("generators"):
        raise UserError(f"{path} is not a model description of this program", "model")
    return meta


def load_generator(path: Path, direction: str = "auto", overrides: Mapping[str, Any] | None = None
                   ) -> tuple[nn.Module, GeneratorSpec, str]:
    """Load from a model directory or a single generator file; returns (net, spec, direction used).

    A bare file has no direction of its own: it is taken to map the way ``direction`` says (AtoB by
    default), which only labels the output.
    """
    path = Path(path)
    if path.is_dir():
        meta = read_model_meta(path)
        chosen = choose_direction(list(meta["generators"]), direction)
        entry = meta["generators"][chosen]
        sd, _ = read_state_dict(path / entry["file"])
        base = GeneratorSpec.from_dict(entry["spec"])
        spec, _ = resolve_spec(sd, overrides, base=base)
        return build_generator(spec, sd), spec, chosen
    sd, metadata = read_state_dict(path)
    base = None
    if metadata.get("format") == GENERATOR_FORMAT and "spec" in metadata:
        base = GeneratorSpec.from_dict(json.loads(metadata["spec"]))
    spec, _ = resolve_spec(sd, overrides, base=base)
    return build_generator(spec, sd), spec, ("AtoB" if direction == "auto" else direction)


def import_generator(src_path: Path, dest_dir: Path, options_override: Mapping[str, Any] | None = None
                     ) -> dict[str, Any]:
    """Import a reference generator file (``latest_net_G_A.pth``, ``latest_net_G.pth``, or safetensors)
    into a new model directory ``dest_dir``. Returns the model meta (also written as ``meta.json``).

    ``options_override``: ``netG, ngf, norm, dropout|no_dropout, input_nc, output_nc`` (``None`` = infer),
    ``direction`` (``AtoB``/``BtoA``; default: ``BtoA`` for a file named like ``*G_B*``, else ``AtoB``)
    and ``name`` (kept in the meta). Raises :class:`UserError` (field ``file``) for unreadable or
    mismatching files.
    """
    src_path = Path(src_path)
    opts = dict(options_override or {})
    direction = opts.pop("direction", None) or ("BtoA" if "G_B" in src_path.stem else "AtoB")
    if direction not in DIRECTIONS:
        raise UserError(f"direction must be AtoB or BtoA, got {direction!r}", "direction")
    name = opts.pop("name", None) or src_path.stem
    sd, _ = read_state_dict(src_path)
    spec, notes = resolve_spec(sd, opts)
    net = build_generator(spec, sd)
    options = {"source_file": src_path.name, "name": name, "direction": direction,
               "inferred": {k: v for k, v in spec.to_dict().items()}}
    return write_model_dir(dest_dir, "imported", {direction: (net, spec)}, options, notes)
