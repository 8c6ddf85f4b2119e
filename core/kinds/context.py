"""What a running job sees: its parameters, its inputs, a progress sink and a place for outputs.

The job layer (:mod:`core.jobs.runner`) builds a :class:`JobContext` for each attempt; kinds never
touch the database or storage directly, so they are easy to test with :class:`LocalJobContext`.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from core.atomic import write_atomically
from core.engines.progress import Progress
from core.images import DEFAULT_MAX_PIXELS, decode_image


@dataclass(frozen=True)
class InputFile:
    """One stored input of the job."""

    role: str
    name: str  # original filename (sanitised)
    content_type: str
    path: Path  # local path to read the bytes from


class JobContext(abc.ABC):
    """Interface a kind's ``run`` uses. See :class:`LocalJobContext` for the simplest implementation."""

    job_id: str
    params: Mapping[str, Any]
    inputs: list[InputFile]
    progress: Progress
    device: str  # "cpu", "cuda" or "auto" (from settings; the engine resolves "auto")
    work_dir: Path  # private, persistent across attempts (checkpoints live here)
    settings: Any  # core.settings.Settings, for weights paths and limits
    warnings: list[str]  # see warn(); each implementation starts with an empty list

    def inputs_for(self, role: str) -> list[InputFile]:
        return [f for f in self.inputs if f.role == role]

    def load_image(self, f: InputFile, longest: int | None = None) -> Image.Image:
        """Decode an input upright; with ``longest``, no larger than that (see :func:`decode_image`), so a
        job never holds an upload at a resolution it does not use. Same pixel limit as at submit."""
        max_pixels = getattr(self.settings, "max_image_pixels", None) or DEFAULT_MAX_PIXELS
        return decode_image(f.path.read_bytes(), f.role, max_pixels, longest)

    @abc.abstractmethod
    def save_output(self, name: str, data: bytes, content_type: str) -> None:
        """Store an output file (atomically) and attach it to the job."""

    @abc.abstractmethod
    def set_metrics(self, metrics: Mapping[str, Any]) -> None:
        """Set the job's final metrics (merged into the ``metrics`` object shown by the API)."""

    def warn(self, message: str) -> None:
        """A warning the user must see on the job page even though the job succeeded (e.g. a model that
        learned nothing). Logged now; the job layer adds it to the job's notices when the job ends."""
        self.warnings.append(message)
        self.progress.log(f"warning: {message}")

    def resource_path(self, table: str, resource_id: str) -> Path:
        """Local directory of a registered dataset or model (see :mod:`core.resources`)."""
        raise NotImplementedError

    def persist_work(self, relative: str = "") -> None:
        """Make ``relative`` (a file or folder in :attr:`work_dir`; all of it for ``""``) durable where the
        next attempt looks, which may be on another host (after each checkpoint, after the model is
        registered). A plain local directory needs nothing: this default does nothing."""

    def register_model(self, name: str, kind: str, source_dir: Path, meta: Mapping[str, Any]) -> str:
        """Register a trained model from files in ``source_dir``; returns the new model id."""
        raise NotImplementedError


class LocalJobContext(JobContext):
    """A context backed by a plain directory: for tests, notebooks and the CLI."""

    def __init__(self, params: Mapping[str, Any], inputs: list[InputFile], out_dir: Path,
                 progress: Progress | None = None, device: str = "cpu", settings: Any = None,
                 job_id: str = "local") -> None:
        self.job_id = job_id
        self.params = params
        self.inputs = inputs
        self.progress = progress or Progress()
        self.device = device
        self.settings = settings
        self.out_dir = Path(out_dir)
        self.work_dir = self.out_dir / "work"
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.outputs: dict[str, tuple[str, int]] = {}
        self.metrics: dict[str, Any] = {}
        self.warnings = []

    def save_output(self, name: str, data: bytes, content_type: str) -> None:
        write_atomically(self.out_dir / name, lambda fh: fh.write(data))
        self.outputs[name] = (content_type, len(data))

    def set_metrics(self, metrics: Mapping[str, Any]) -> None:
        self.metrics.update(metrics)
