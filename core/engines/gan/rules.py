"""The rules a training configuration must follow, in one torch-free place: the job kinds check them at
submit time (in the web process) and :class:`core.engines.gan.options.TrainOptions` when it is built."""

from __future__ import annotations

from core.errors import UserError

#: load_size / crop_size of the reference's defaults (286 / 256), used when load_size is left empty.
LOAD_RATIO = 286 / 256
#: Training iterations when neither iterations nor epochs is given.
DEFAULT_ITERATIONS = 1000


def min_crop_size(netD: str, n_layers_D: int = 3) -> int:
    """A PatchGAN halves the size n times, then a 4x4 convolution removes one pixel; its norm needs at
    least 2x2 values left, so crops must be at least 3 * 2**n pixels (the pixel discriminator: any)."""
    n = {"basic": 3, "n_layers": n_layers_D, "pixel": 0}.get(netD, 3)
    return 3 * 2**n if n else 1


def resolved_load_size(crop_size: int, load_size: int | None) -> int:
    return int(load_size or round(crop_size * LOAD_RATIO))


def check_training(*, crop_size: int, netG: str, netD: str, n_layers_D: int, preprocess: str,
                   load_size: int | None, iterations: int | None, epochs: int | None) -> None:
    """Raise :class:`UserError` naming the parameter (the kinds' names: ``size`` is the crop size)."""
    if iterations is not None and epochs is not None:
        raise UserError("give iterations or epochs, not both", "epochs")
    if netG.startswith("unet"):
        need = int(netG.split("_")[1])
        if preprocess in ("scale_width", "none"):
            raise UserError(f"{netG} trains on crops: use preprocess resize_and_crop, crop or "
                            "scale_width_and_crop", "preprocess")
        if crop_size % need:
            raise UserError(f"{netG} needs a crop size that is a multiple of {need}, got {crop_size}", "size")
    elif crop_size % 4:
        raise UserError(f"ResNet generators need a crop size that is a multiple of 4, got {crop_size}", "size")
    least = min_crop_size(netD, n_layers_D)
    if crop_size < least:
        layers = n_layers_D if netD == "n_layers" else 3
        raise UserError(f"crop size {crop_size} is too small for the {netD} discriminator ({layers} layers); "
                        f"use at least {least}", "size")
    if preprocess in ("resize_and_crop", "scale_width_and_crop") and resolved_load_size(crop_size, load_size) < crop_size:
        raise UserError(f"load_size ({load_size}) must be at least the crop size ({crop_size})", "load_size")
