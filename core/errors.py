"""Error types shared by every layer.

``UserError`` is a mistake in what someone asked for: the web layer turns it into HTTP 4xx with
``{"error", "field"}``; the CLI prints it; the job layer turns it into a failed job whose reason is the
message. ``JobFailure`` is a job that cannot run for a reason a user can act on (missing weights, too
big for memory). Messages are sentences a user understands: what happened and what to do.
"""

from __future__ import annotations


class AtelierError(Exception):
    """Base of errors whose message is safe and useful to show to a user."""


class UserError(AtelierError):
    """Bad input. ``field`` names the offending parameter or upload; ``status`` is the HTTP status."""

    def __init__(self, message: str, field: str | None = None, status: int = 422) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.status = status

    def to_dict(self) -> dict[str, str | None]:
        return {"error": self.message, "field": self.field}


class JobFailure(AtelierError):
    """A job that cannot complete, with a reason written for the person who submitted it."""


class ConfigError(AtelierError):
    """A bad ``ATELIER_*`` setting; the message names the variable."""
