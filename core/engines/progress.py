"""The small interface through which an engine reports progress and learns it should stop.

Engines call :meth:`Progress.report` once per step, :meth:`Progress.preview` every few steps with a
*callable* that renders the current image (so no image is made when nobody wants one), and
:meth:`Progress.check_cancel` at least once per step. The job layer adapts this to rows and files;
the CLI prints; tests record.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image


class Cancelled(Exception):
    """Raised by :meth:`Progress.check_cancel` when the caller asked the engine to stop."""


class TimeLimitExceeded(Cancelled):
    """Raised by :meth:`Progress.check_cancel` when the run used up its time. Engines stop as for a
    cancel (a trainer checkpoints first), so the job can fail cleanly and be retried from there."""


class Progress:
    """Base progress sink: ignores everything and never cancels.

    Subclasses override what they need. ``preview_every`` tells the engine how often a preview is
    wanted (0 = never), so an engine never pays for renders nobody looks at.
    """

    preview_every: int = 0

    def report(self, step: int, total: int, metrics: Mapping[str, float]) -> None:
        """Called after each step with scalar metrics (losses) for that step."""

    def preview(self, step: int, render: Callable[[], "Image.Image"]) -> None:
        """Called every ``preview_every`` steps; ``render()`` returns the current image."""

    def log(self, message: str) -> None:
        """A human-readable line about what the engine is doing (loading weights, resolution change)."""

    def flush(self) -> None:
        """Make everything reported so far durable. A trainer calls this before it saves a checkpoint, so
        a run resumed from that checkpoint finds every earlier step's metrics already stored."""

    def is_cancelled(self) -> bool:
        return False

    def check_cancel(self) -> None:
        """Raise :class:`Cancelled` if the caller asked to stop. Engines call this every step."""
        if self.is_cancelled():
            raise Cancelled()


class RecordingProgress(Progress):
    """Keeps everything it is told; used by tests and the CLI's ``--json`` trace."""

    def __init__(self, preview_every: int = 0, cancel_after: int | None = None) -> None:
        self.preview_every = preview_every
        self.cancel_after = cancel_after
        self.steps: list[tuple[int, int, dict[str, float]]] = []
        self.previews: list[tuple[int, "Image.Image"]] = []
        self.messages: list[str] = []

    def report(self, step: int, total: int, metrics: Mapping[str, float]) -> None:
        self.steps.append((step, total, dict(metrics)))

    def preview(self, step: int, render: Callable[[], "Image.Image"]) -> None:
        self.previews.append((step, render()))

    def log(self, message: str) -> None:
        self.messages.append(message)

    def is_cancelled(self) -> bool:
        return self.cancel_after is not None and len(self.steps) >= self.cancel_after
