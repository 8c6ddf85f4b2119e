"""Training options: the reference implementation's names and defaults, as one frozen dataclass.

The job kinds' schemas (``core.kinds.gan``) map onto these fields one to one, so a parameter has one
meaning from the web form down to the engine.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

from core.engines.gan.data import Preprocess
from core.engines.gan.networks import DiscriminatorSpec, GeneratorSpec, parse_generator_name
from core.engines.gan.rules import DEFAULT_ITERATIONS, min_crop_size, resolved_load_size

FAMILY_NAMES = ("cyclegan", "pix2pix")
#: The training kinds' parameter names that differ from these options' (the reference's) names.
KIND_NAMES = {"size": "crop_size"}
#: Options that may differ between a checkpoint and the run resuming it (they do not change the maths
#: already done): how often to checkpoint, and how long to train.
RESUMABLE_CHANGES = frozenset({"checkpoint_every", "iterations", "epochs"})


@dataclass(frozen=True)
class TrainOptions:
    family: str = "cyclegan"  # "cyclegan" | "pix2pix"
    # networks
    netG: str = "resnet_9blocks"
    ngf: int = 64
    netD: str = "basic"
    ndf: int = 64
    n_layers_D: int = 3
    norm: str = "instance"
    dropout: bool = False
    init_gain: float = 0.02
    # objective
    gan_mode: str = "lsgan"
    lambda_A: float = 10.0
    lambda_B: float = 10.0
    lambda_identity: float = 0.5
    lambda_L1: float = 100.0
    pool_size: int = 50
    # optimisation
    lr: float = 2e-4
    beta1: float = 0.5
    lr_decay_fraction: float = 0.5  # the reference's n_epochs_decay / (n_epochs + n_epochs_decay)
    batch_size: int = 1
    iterations: int | None = None
    epochs: int | None = None
    # data
    preprocess: str = "resize_and_crop"
    load_size: int = 286
    crop_size: int = 256
    flip: bool = True
    direction: str = "AtoB"  # pix2pix: which side is the input
    # run
    checkpoint_every: int = 250
    seed: int = 0
    amp: str = "auto"
    merge_passes: bool = True  # run independent forward passes of one network as one batch where exact

    def __post_init__(self) -> None:
        if self.family not in FAMILY_NAMES:
            raise ValueError(f"unknown family {self.family!r}")
        parse_generator_name(self.netG)
        if self.iterations is not None and self.epochs is not None:
            raise ValueError("give iterations or epochs, not both")
        if self.crop_size < self.min_crop_size():
            raise ValueError(f"crop size {self.crop_size} is too small for a {self.netD} discriminator with "
                             f"{self.n_layers_D if self.netD == 'n_layers' else 3} layers; use at least "
                             f"{self.min_crop_size()}")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainOptions":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    @classmethod
    def from_params(cls, family: str, params: Mapping[str, Any]) -> "TrainOptions":
        """From a training kind's validated parameters, by name: every parameter whose name is a field is
        taken as it is (no hand-written field list); ``size`` is the crop size, an empty ``load_size`` is
        286/256 of it, iterations default to :data:`DEFAULT_ITERATIONS` when epochs are not given either,
        and pix2pix keeps no image pool. Job-level parameters (dataset, name, device) are not options."""
        names = {f.name for f in fields(cls)}
        kw = {KIND_NAMES.get(k, k): v for k, v in params.items() if KIND_NAMES.get(k, k) in names}
        kw["load_size"] = resolved_load_size(kw["crop_size"], kw.get("load_size"))
        if kw.get("iterations") is None and kw.get("epochs") is None:
            kw["iterations"] = DEFAULT_ITERATIONS
        if family == "pix2pix":
            kw["pool_size"] = 0
        return cls(family=family, **kw)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def min_crop_size(self) -> int:
        return min_crop_size(self.netD, self.n_layers_D)

    def generator_spec(self) -> GeneratorSpec:
        return GeneratorSpec.from_name(self.netG, ngf=self.ngf, norm=self.norm, dropout=self.dropout)

    def discriminator_spec(self) -> DiscriminatorSpec:
        # pix2pix's discriminator is conditional: it sees input and output stacked (3 + 3 channels).
        return DiscriminatorSpec(self.netD, self.ndf, self.n_layers_D, self.norm,
                                 input_nc=6 if self.family == "pix2pix" else 3)

    def preprocess_spec(self) -> Preprocess:
        return Preprocess(self.preprocess, self.load_size, self.crop_size, self.flip)

    def iterations_per_epoch(self, dataset_len: int) -> int:
        return max(1, math.ceil(dataset_len / self.batch_size))

    def total_iterations(self, dataset_len: int) -> int:
        if self.iterations is not None:
            return self.iterations
        return (self.epochs or 1) * self.iterations_per_epoch(dataset_len)
