"""One parameter schema per job kind.

A :class:`Schema` is a list of :class:`Param` (type, default, bounds, choices, help text). The same
object validates API requests, renders and validates the web form, builds the CLI's long options and
documents the OpenAPI spec, so a parameter is added in exactly one place.

Parameter names are the CLI's long options with underscores (``--content-weight`` <-> ``content_weight``).
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from core.errors import UserError, quote

_TYPES = ("int", "float", "str", "bool", "choice", "int_list", "float_list", "str_list")


@dataclass(frozen=True)
class Param:
    """One parameter.

    ``type`` is one of ``int, float, str, bool, choice, int_list, float_list, str_list``. Lists accept a
    JSON list or a comma-separated string. ``normalize`` (optional) gets the typed value and returns the
    stored value or raises ``ValueError`` with a message for the user. ``advanced`` puts the field in the
    web form's collapsed section. ``cli`` = False hides it from the CLI (e.g. a value the CLI takes as a
    positional argument).
    """

    name: str
    type: str
    default: Any
    help: str
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] = ()
    advanced: bool = False
    nullable: bool = False
    normalize: Callable[[Any], Any] | None = None
    cli: bool = True
    label: str | None = None

    def __post_init__(self) -> None:
        if self.type not in _TYPES:
            raise ValueError(f"unknown param type {self.type!r} for {self.name}")
        if self.type == "choice" and not self.choices:
            raise ValueError(f"choice param {self.name} needs choices")

    @property
    def option(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def title(self) -> str:
        return self.label or self.name.replace("_", " ").capitalize()

    # -- coercion -----------------------------------------------------------------------------------
    def coerce(self, raw: Any) -> Any:
        """Turn a raw value (JSON, form string or CLI string) into the typed, checked value."""
        if raw is None or (isinstance(raw, str) and raw.strip() == "" and self.type != "str"):
            if self.nullable:
                return None
            raise UserError(f"{self.name}: a value is required", self.name, 422)
        try:
            value = self._convert(raw)
        except (TypeError, ValueError) as exc:
            raise UserError(f"{self.name}: {exc}", self.name, 422) from None
        if self.normalize is not None:
            try:
                value = self.normalize(value)
            except (TypeError, ValueError) as exc:
                raise UserError(f"{self.name}: {exc}", self.name, 422) from None
        return value

    def _convert(self, raw: Any) -> Any:
        t = self.type
        if t == "bool":
            if isinstance(raw, bool):
                return raw
            if isinstance(raw, str) and raw.lower() in ("1", "true", "yes", "on"):
                return True
            if isinstance(raw, str) and raw.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(f"expected true or false, got {quote(raw)}")
        if t == "int":
            return self._bounded(_to_int(raw))
        if t == "float":
            return self._bounded(_to_float(raw))
        if t == "str":
            if not isinstance(raw, str):
                raise ValueError(f"expected a string, got {type(raw).__name__}")
            return raw.strip()
        if t == "choice":
            if raw not in self.choices:
                raise ValueError(f"expected one of {', '.join(self.choices)}, got {quote(raw)}")
            return raw
        items = _to_list(raw)
        if t == "int_list":
            return [self._bounded(_to_int(x)) for x in items]
        if t == "float_list":
            return [self._bounded(_to_float(x)) for x in items]
        return [str(x).strip() for x in items]

    def _bounded(self, v: float) -> Any:
        if self.minimum is not None and v < self.minimum:
            raise ValueError(f"must be at least {_fmt(self.minimum)}, got {_fmt(v)}")
        if self.maximum is not None and v > self.maximum:
            raise ValueError(f"must be at most {_fmt(self.maximum)}, got {_fmt(v)}")
        return v

    # -- descriptions -------------------------------------------------------------------------------
    def json_schema(self) -> dict[str, Any]:
        base: dict[str, Any]
        t = self.type
        if t in ("int", "float"):
            base = {"type": "integer" if t == "int" else "number"}
        elif t == "bool":
            base = {"type": "boolean"}
        elif t == "choice":
            base = {"type": "string", "enum": list(self.choices)}
        elif t == "str":
            base = {"type": "string"}
        else:
            item = {"int_list": "integer", "float_list": "number", "str_list": "string"}[t]
            base = {"type": "array", "items": {"type": item}}
        if self.minimum is not None:
            (base["items"] if "items" in base else base)["minimum"] = self.minimum
        if self.maximum is not None:
            (base["items"] if "items" in base else base)["maximum"] = self.maximum
        base["default"] = self.default
        base["description"] = self.help
        if self.nullable:
            base["nullable"] = True
        return base

    def form_value(self, value: Any) -> str:
        """The value as the web form shows it."""
        if value is None:
            return ""
        if isinstance(value, list):
            return ",".join(_fmt(v) if isinstance(v, float) else str(v) for v in value)
        if isinstance(value, bool):
            return "true" if value else "false"
        return _fmt(value) if isinstance(value, float) else str(value)


@dataclass(frozen=True)
class Schema:
    """The parameters of one job kind, in display order."""

    kind: str
    params: tuple[Param, ...]
    description: str = ""
    _by_name: dict[str, Param] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        names = [p.name for p in self.params]
        dupes = {n for n in names if names.count(n) > 1}
        if dupes:
            raise ValueError(f"duplicate params in {self.kind}: {sorted(dupes)}")
        self._by_name.update({p.name: p for p in self.params})

    def __getitem__(self, name: str) -> Param:
        return self._by_name[name]

    def __contains__(self, name: str) -> bool:
        return name in self._by_name

    def defaults(self) -> dict[str, Any]:
        return {p.name: p.default for p in self.params}

    def validate(self, raw: Mapping[str, Any] | None, *, partial_ok: bool = True) -> dict[str, Any]:
        """Check ``raw`` and return a complete, typed parameter dict (defaults filled in).

        Unknown keys are an error naming the key: a typo must not silently fall back to a default.
        """
        raw = dict(raw or {})
        unknown = sorted(set(raw) - set(self._by_name))
        if unknown:
            raise UserError(
                f"unknown parameter {quote(unknown[0])} for {self.kind}; known: {', '.join(self._by_name)}",
                unknown[0],
                422,
            )
        out: dict[str, Any] = {}
        for p in self.params:
            out[p.name] = p.coerce(raw[p.name]) if p.name in raw else p.default
        return out

    def validate_form(self, form: Mapping[str, str]) -> dict[str, Any]:
        """Validate an HTML form: empty fields mean 'use the default'; checkboxes arrive as 'on' or absent."""
        raw: dict[str, Any] = {}
        for p in self.params:
            if p.type == "bool":
                if f"{p.name}__present" in form or p.name in form:
                    raw[p.name] = form.get(p.name, "false") or "false"
            elif p.name in form and str(form[p.name]).strip() != "":
                raw[p.name] = form[p.name]
        return self.validate(raw)

    # -- CLI -----------------------------------------------------------------------------------------
    def add_arguments(self, parser: argparse.ArgumentParser, skip: Iterable[str] = ()) -> None:
        """Add one long option per parameter; values stay strings and are checked by :meth:`from_args`."""
        skip = set(skip)
        for p in self.params:
            if not p.cli or p.name in skip:
                continue
            helptext = f"{p.help} (default: {p.form_value(p.default) or 'none'})"
            if p.type == "bool":
                parser.add_argument(p.option, dest=p.name, action=argparse.BooleanOptionalAction, default=None, help=helptext)
            else:
                metavar = "|".join(p.choices) if p.type == "choice" else p.type.upper().replace("_LIST", ",...")
                parser.add_argument(p.option, dest=p.name, default=None, metavar=metavar, help=helptext)

    def from_args(self, ns: argparse.Namespace) -> dict[str, Any]:
        raw = {p.name: getattr(ns, p.name) for p in self.params if getattr(ns, p.name, None) is not None}
        return self.validate(raw)

    # -- docs ----------------------------------------------------------------------------------------
    def json_schema(self) -> dict[str, Any]:
        return {
            "type": "object",
            "description": self.description,
            "additionalProperties": False,
            "properties": {p.name: p.json_schema() for p in self.params},
        }


def _to_int(raw: Any) -> int:
    if isinstance(raw, bool):
        raise ValueError("expected an integer, got a boolean")
    if isinstance(raw, int):
        return raw
    if isinstance(raw, float) and raw.is_integer():
        return int(raw)
    if isinstance(raw, str):
        try:
            return int(raw.strip())
        except ValueError:
            pass
    raise ValueError(f"expected an integer, got {quote(raw)}")


def _to_float(raw: Any) -> float:
    if isinstance(raw, bool):
        raise ValueError("expected a number, got a boolean")
    try:
        v = float(raw.strip() if isinstance(raw, str) else raw)
    except (TypeError, ValueError):
        raise ValueError(f"expected a number, got {quote(raw)}") from None
    if not math.isfinite(v):
        raise ValueError("expected a finite number")
    return v


def _to_list(raw: Any) -> list[Any]:
    if isinstance(raw, str):
        return [x for x in (s.strip() for s in raw.split(",")) if x != ""]
    if isinstance(raw, (list, tuple)):
        return list(raw)
    raise ValueError(f"expected a list or a comma-separated string, got {type(raw).__name__}")


def _fmt(v: float) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)
