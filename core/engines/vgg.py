"""VGG-19 ``features`` with named layers, and where its weights come from.

The style-transfer objective is defined on torchvision's VGG-19 ``features`` stack, addressed by layer
name (``conv1_1``, ``relu1_1``, ... ``pool5``). This module knows those names, loads the weights from
one of three sources and runs the stack only as deep as a caller needs:

* ``""`` -- torchvision's ImageNet weights, loaded the standard way (``VGG19_Weights.IMAGENET1K_V1``,
  cached under ``$TORCH_HOME/hub/checkpoints``). When the file is not cached and cannot be downloaded the
  job fails with a message that says exactly where to put the file or what to set instead.
* a path -- a torchvision-layout ``state_dict`` (``.pth``/``.pt`` via ``torch.load(weights_only=True)``,
  or ``.safetensors``), either a whole ``vgg19`` (``features.N.weight``) or just its ``features``
  (``N.weight``).
* ``"random"`` -- a seeded, deterministic initialisation for tests, demos and benchmarks: the arithmetic
  is exactly that of the real network, the pictures are not artistic.

Importing this module does not import torch: the web process uses :func:`weights_status` for its health
check and must stay light. Torch is imported inside the functions that need it.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.errors import JobFailure

if TYPE_CHECKING:  # pragma: no cover
    import torch

# torchvision's VGG-19 configuration: conv widths, "M" = 2x2 pooling.
_CFG: tuple[int | str, ...] = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M",
                               512, 512, 512, 512, "M", 512, 512, 512, 512, "M")

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TORCHVISION_URL = "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth"
RANDOM_WEIGHTS_SEED = 0
POOLINGS = ("max", "avg")


@dataclass(frozen=True)
class Layer:
    """One module of ``features``: ``index`` is its position in torchvision's ``nn.Sequential``."""

    name: str
    kind: str  # "conv" | "relu" | "pool"
    index: int
    in_channels: int
    out_channels: int
    scale: int  # spatial downsampling factor of this layer's output (1, 2, 4, 8, 16, 32)


def _build_table() -> tuple[Layer, ...]:
    layers: list[Layer] = []
    block, conv_in_block, channels, scale = 1, 1, 3, 1
    for width in _CFG:
        if width == "M":
            scale *= 2
            layers.append(Layer(f"pool{block}", "pool", len(layers), channels, channels, scale))
            block, conv_in_block = block + 1, 1
            continue
        assert isinstance(width, int)
        layers.append(Layer(f"conv{block}_{conv_in_block}", "conv", len(layers), channels, width, scale))
        layers.append(Layer(f"relu{block}_{conv_in_block}", "relu", len(layers), width, width, scale))
        channels, conv_in_block = width, conv_in_block + 1
    return tuple(layers)


LAYERS: tuple[Layer, ...] = _build_table()
LAYER_NAMES: tuple[str, ...] = tuple(layer.name for layer in LAYERS)
_BY_NAME = {layer.name: layer for layer in LAYERS}
CONV_INDICES: tuple[int, ...] = tuple(layer.index for layer in LAYERS if layer.kind == "conv")


def layer(name: str) -> Layer:
    """The :class:`Layer` called ``name``; ``KeyError`` for an unknown name."""
    return _BY_NAME[name]


def deepest(names: Collection[str]) -> str:
    """The name among ``names`` that sits deepest in the network (the stack runs up to it)."""
    return max(names, key=lambda n: _BY_NAME[n].index)


# -- where the weights are ---------------------------------------------------------------------------
def torchvision_cache_path() -> Path:
    """Where ``torch.hub`` keeps torchvision's VGG-19 file.

    Mirrors ``torch.hub.get_dir()`` (``$TORCH_HOME/hub``, ``TORCH_HOME`` defaulting to
    ``$XDG_CACHE_HOME/torch`` then ``~/.cache/torch``) without importing torch, so the health check
    stays cheap. These are torch's own variables, read exactly as torch reads them; when torch is
    already imported we ask it directly (that also honours ``torch.hub.set_dir``).
    """
    if "torch" in sys.modules:
        import torch.hub

        hub_dir = Path(torch.hub.get_dir())
    else:
        cache_home = os.getenv("XDG_CACHE_HOME", os.path.join("~", ".cache"))
        hub_dir = Path(os.path.expanduser(os.getenv("TORCH_HOME", os.path.join(cache_home, "torch")))) / "hub"
    return hub_dir / "checkpoints" / TORCHVISION_URL.rsplit("/", 1)[-1]


def _what_to_do(cache: Path) -> str:
    return (f"Put {TORCHVISION_URL} at {cache}, or set ATELIER_VGG19_WEIGHTS=/path/to/vgg19.pth "
            "(a torchvision-layout state_dict), or ATELIER_VGG19_WEIGHTS=random "
            "(for tests and demos; results are not artistic).")


def weights_status(setting: str) -> tuple[bool, str]:
    """Cheap check of the configured VGG-19 weights, for ``/healthz`` and the worker's start-up log.

    Looks only at the file system: it never downloads and never loads the tensors, so it is safe to
    call on every health probe. ``ok`` is False when a job would fail (or would first have to download
    the ImageNet weights); the message says what to do.
    """
    if setting == "random":
        return True, "VGG-19 weights: random (seeded); style-transfer results are not artistic."
    if setting:
        path = Path(setting).expanduser()
        if path.is_file():
            return True, f"VGG-19 weights: {path}"
        return False, (f"ATELIER_VGG19_WEIGHTS={setting} does not exist or is not a file. Point it at a "
                       "torchvision-layout VGG-19 state_dict (.pth or .safetensors), or unset it to use "
                       "torchvision's ImageNet weights, or set it to random for demos.")
    cache = torchvision_cache_path()
    if cache.is_file():
        return True, f"VGG-19 weights: torchvision ImageNet weights at {cache}"
    return False, ("VGG-19 ImageNet weights are not downloaded yet; the first style-transfer job will "
                   f"try to download them. Without network access it fails. {_what_to_do(cache)}")


def weights_source(setting: str) -> str:
    """``"random"``, ``"file"`` or ``"imagenet"``: how results should be labelled."""
    return "random" if setting == "random" else ("file" if setting else "imagenet")


# -- loading ---------------------------------------------------------------------------------------
ConvParams = list[tuple["torch.Tensor", "torch.Tensor"]]  # [(weight (O, I, 3, 3), bias (O,)), ...]


def load_conv_params(setting: str, n_convs: int = len(CONV_INDICES)) -> ConvParams:
    """fp32 CPU weights of the first ``n_convs`` conv layers, from the source ``setting`` names.

    Results are cached per process (a worker runs many jobs with the same weights); the tensors are
    shared, so callers must not modify them in place.
    """
    if setting == "random":
        return _random_params()[:n_convs]
    if setting:
        path = Path(setting).expanduser()
        try:
            stamp = path.stat().st_mtime_ns
        except OSError:
            raise JobFailure(weights_status(setting)[1]) from None
        return _need(_file_params(str(path), stamp), n_convs, str(path))
    return _need(_torchvision_params(), n_convs, str(torchvision_cache_path()))


@functools.lru_cache(maxsize=1)
def _random_params() -> ConvParams:
    """Kaiming-normal (fan-in, ReLU gain) weights and zero biases from one seeded generator.

    Fan-in scaling keeps the activations' scale roughly constant with depth, as in a trained VGG, so
    the default loss weights balance the terms sensibly. All 16 layers are drawn once, in order, so a
    layer's weights never depend on how deep a caller goes.
    """
    import torch

    gen = torch.Generator().manual_seed(RANDOM_WEIGHTS_SEED)
    params: ConvParams = []
    for idx in CONV_INDICES:
        lay = LAYERS[idx]
        fan_in = lay.in_channels * 9
        w = torch.randn(lay.out_channels, lay.in_channels, 3, 3, generator=gen) * (2.0 / fan_in) ** 0.5
        params.append((w, torch.zeros(lay.out_channels)))
    return params


@functools.lru_cache(maxsize=2)
def _file_params(path: str, _mtime_ns: int) -> ConvParams:
    """All conv layers present in the file (a file may stop early, e.g. a features-only dump up to
    relu4_1); :func:`_need` then checks there are enough for the layers a job uses."""
    import torch

    try:
        if path.endswith(".safetensors"):
            from safetensors.torch import load_file

            state: Any = load_file(path, device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle, zip and safetensors errors have no common base
        raise JobFailure(f"Could not read the VGG-19 weights file {path} ({exc.__class__.__name__}: {exc}). "
                         "It must be a torchvision-layout state_dict saved with torch.save, or a "
                         ".safetensors file.") from exc
    return _extract_features(state, path)


@functools.lru_cache(maxsize=1)
def _torchvision_params() -> ConvParams:
    """torchvision's ImageNet weights through the standard cache, downloading them when missing."""
    from torchvision.models import VGG19_Weights

    cache = torchvision_cache_path()
    weights = VGG19_Weights.IMAGENET1K_V1
    try:
        state = weights.get_state_dict(progress=False)
    except OSError as exc:  # URLError, HTTPError, socket and disk errors are all OSError
        reason = getattr(exc, "reason", None) or exc
        raise JobFailure(f"VGG-19 ImageNet weights are not available: they are not in the torch cache and "
                         f"downloading them failed ({reason}). {_what_to_do(cache)}") from exc
    except Exception as exc:  # a damaged cached file fails inside torch.load
        raise JobFailure(f"The cached VGG-19 weights at {cache} could not be read ({exc.__class__.__name__}). "
                         f"Delete that file so it is downloaded again, or: {_what_to_do(cache)}") from exc
    return _extract_features(state, str(cache))


def _extract_features(state: Any, origin: str) -> ConvParams:
    """The leading conv weights of a ``vgg19`` or ``vgg19.features`` state_dict, shapes checked."""
    import torch

    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise JobFailure(f"{origin} does not hold a state_dict (got {type(state).__name__}).")
    prefix = "features." if any(str(k).startswith("features.") for k in state) else ""
    params: ConvParams = []
    for idx in CONV_INDICES:
        lay = LAYERS[idx]
        wkey, bkey = f"{prefix}{idx}.weight", f"{prefix}{idx}.bias"
        w, b = state.get(wkey), state.get(bkey)
        if w is None and b is None:
            break
        want = (lay.out_channels, lay.in_channels, 3, 3)
        if not isinstance(w, torch.Tensor) or not isinstance(b, torch.Tensor):
            raise JobFailure(f"{origin}: {wkey!r} or {bkey!r} (layer {lay.name}) is missing or not a tensor.")
        if tuple(w.shape) != want or tuple(b.shape) != (lay.out_channels,):
            raise JobFailure(f"{origin}: {wkey} (layer {lay.name}) has shape {tuple(w.shape)}, expected {want}; "
                             "this is not a torchvision-layout VGG-19.")
        params.append((w.detach().float().contiguous(), b.detach().float().contiguous()))
    if not params:
        raise JobFailure(f"{origin} is not a torchvision-layout VGG-19 state_dict: no '{prefix}0.weight' "
                         "(conv1_1). Expected keys like features.0.weight or 0.weight.")
    return params


def _need(params: ConvParams, n_convs: int, origin: str) -> ConvParams:
    if len(params) < n_convs:
        have = LAYERS[CONV_INDICES[len(params) - 1]].name
        want = LAYERS[CONV_INDICES[n_convs - 1]].name
        raise JobFailure(f"{origin} holds VGG-19 weights only up to {have}, but the chosen layers need {want}.")
    return params[:n_convs]


# -- running ---------------------------------------------------------------------------------------
class VGG19Features:
    """VGG-19 ``features`` up to ``upto``, returning the activations of the layers a caller names.

    A plain object holding weight tensors rather than an ``nn.Module``: no parameters need gradients,
    and ``forward`` can then use in-place ReLUs where nothing captured is overwritten (less memory
    traffic) and stop at the deepest layer asked for. Input pixels are in [0, 1]; ImageNet
    normalisation happens here, in fp32, before casting to the compute dtype.
    """

    def __init__(self, params: ConvParams, upto: str, pooling: str = "max", source: str = "random",
                 channels_last: bool = True) -> None:
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        self.layers: tuple[Layer, ...] = LAYERS[: layer(upto).index + 1]
        n_convs = sum(1 for lay in self.layers if lay.kind == "conv")
        if len(params) < n_convs:
            raise ValueError(f"need {n_convs} conv layers' weights for {upto}, got {len(params)}")
        self.params = list(params[:n_convs])
        self.upto, self.pooling, self.source, self.channels_last = upto, pooling, source, channels_last
        self._mean: torch.Tensor | None = None
        self._std: torch.Tensor | None = None

    @property
    def dtype(self) -> "torch.dtype":
        return self.params[0][0].dtype

    @property
    def device(self) -> "torch.device":
        return self.params[0][0].device

    def to(self, device: "torch.device | str | None" = None, dtype: "torch.dtype | None" = None) -> "VGG19Features":
        """A copy on ``device`` in ``dtype`` (weights cast once here, not on every step as autocast would)."""
        import torch

        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        params = [(w.to(device=device, dtype=dtype).contiguous(memory_format=fmt), b.to(device=device, dtype=dtype))
                  for w, b in self.params]
        return VGG19Features(params, self.upto, self.pooling, self.source, self.channels_last)

    def __call__(self, pixels: "torch.Tensor", capture: Collection[str]) -> dict[str, "torch.Tensor"]:
        """pixels (B, 3, H, W) in [0, 1] -> {name: (B, C_l, H_l, W_l)} in the model's dtype."""
        import torch
        import torch.nn.functional as F

        if self._mean is None or self._mean.device != pixels.device:
            self._mean = torch.tensor(IMAGENET_MEAN, device=pixels.device).view(1, 3, 1, 1)
            self._std = torch.tensor(IMAGENET_STD, device=pixels.device).view(1, 3, 1, 1)
        assert self._std is not None
        wanted = set(capture)
        unknown = wanted - set(LAYER_NAMES)
        if unknown:
            raise ValueError(f"unknown VGG-19 layers: {sorted(unknown)}")
        last = max(_BY_NAME[n].index for n in wanted)
        if last >= len(self.layers):
            raise ValueError(f"layer {LAYERS[last].name} is deeper than this stack ({self.upto})")
        h = ((pixels.float() - self._mean) / self._std).to(self.dtype)  # (B, 3, H, W)
        if self.channels_last:
            h = h.contiguous(memory_format=torch.channels_last)
        out: dict[str, torch.Tensor] = {}
        conv_i = 0
        prev_captured = False
        for lay in self.layers[: last + 1]:
            if lay.kind == "conv":
                w, b = self.params[conv_i]
                conv_i += 1
                h = F.conv2d(h, w, b, padding=1)  # (B, C_out, H, W)
            elif lay.kind == "relu":
                # In place unless the conv output it would overwrite was captured.
                h = torch.relu(h) if prev_captured else torch.relu_(h)
            elif self.pooling == "max":
                h = F.max_pool2d(h, 2, 2)  # (B, C, H/2, W/2)
            else:
                h = F.avg_pool2d(h, 2, 2)
            prev_captured = lay.name in wanted
            if prev_captured:
                out[lay.name] = h
        return out


def load_vgg19(setting: str, layers: Sequence[str], pooling: str = "max", *, device: "str | torch.device" = "cpu",
               dtype: "torch.dtype | None" = None, channels_last: bool = True) -> VGG19Features:
    """Load VGG-19 ``features`` deep enough for ``layers``, on ``device`` in ``dtype`` (default fp32).

    Raises :class:`core.errors.JobFailure` with instructions when the weights cannot be had.
    """
    import torch

    upto = deepest(layers)
    n_convs = sum(1 for lay in LAYERS[: layer(upto).index + 1] if lay.kind == "conv")
    params = load_conv_params(setting, n_convs)
    key = (upto, pooling, str(torch.device(device)), dtype or torch.float32, channels_last, weights_source(setting))
    cached = _CONVERTED.get(key)
    if cached is not None and len(cached[0]) == len(params) and all(
            a[0] is b[0] for a, b in zip(cached[0], params, strict=True)):  # the same tensors: a changed
        return cached[1]                                                   # file loads new ones
    model = VGG19Features(params, upto, pooling, weights_source(setting), channels_last)
    model = model.to(device=device, dtype=dtype or torch.float32)
    _CONVERTED.clear()  # one converted stack at a time: a worker runs one job, often of the same shape
    _CONVERTED[key] = (params, model)
    return model


#: The newest converted stack (copying 20 M weights into channels-last costs ~0.2 s a job on a CPU).
#: Its tensors are only ever read: the style engine optimises the image, never the network.
_CONVERTED: dict[tuple[Any, ...], tuple[ConvParams, VGG19Features]] = {}
