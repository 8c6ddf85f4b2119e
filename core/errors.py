"""Error types shared by every layer.

``UserError`` is a mistake in what someone asked for: the web layer turns it into HTTP 4xx with
``{"error", "field"}``; the CLI prints it; the job layer turns it into a failed job whose reason is the
message. ``JobFailure`` is a job that cannot run for a reason a user can act on (missing weights, too
big for memory). Messages are sentences a user understands: what happened and what to do.
"""

from __future__ import annotations

import reprlib


class AtelierError(Exception):
    """Base of errors whose message is safe and useful to show to a user."""


class UserError(AtelierError):
    """Bad input. ``field`` names the offending parameter or upload; ``status`` is the HTTP status."""

    #: Messages are sentences; anything longer was padded with a value by mistake and is cut.
    MAX_MESSAGE = 1000

    def __init__(self, message: str, field: str | None = None, status: int = 422,
                 errors: list[dict[str, str]] | None = None) -> None:
        if len(message) > self.MAX_MESSAGE:
            message = message[: self.MAX_MESSAGE] + "…"
        super().__init__(message)
        self.message = message
        self.field = field
        self.status = status
        #: Every mistake found at once (``{field, error}``), when there were several to report.
        self.errors = errors or [{"field": field or "", "error": message}]

    def to_dict(self) -> dict[str, object]:
        return {"error": self.message, "field": self.field, "errors": self.errors}


class JobFailure(AtelierError):
    """A job that cannot complete, with a reason written for the person who submitted it."""


class ConfigError(AtelierError):
    """A bad ``ATELIER_*`` setting; the message names the variable."""


#: At most this many characters of a user's value are quoted back in a message.
QUOTE_LIMIT = 100


def quote(value: object, limit: int = QUOTE_LIMIT) -> str:
    """``repr(value)`` for a message, at most ``limit`` characters (plus an ellipsis): a 45 MB string or
    a 5,000-digit number sent as a parameter must not come back whole in the error about it."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 256:
        return f"<an integer of about {int(value.bit_length() * 0.30103) + 1} digits>"
    r = reprlib.Repr()
    r.maxstring = r.maxother = r.maxlong = limit
    r.maxlevel, r.maxlist, r.maxdict, r.maxtuple = 2, 5, 5, 5
    try:
        text = r.repr(value)
    except (ValueError, RecursionError):
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[:limit] + "…"
