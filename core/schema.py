"""One parameter model per job kind (pydantic v2), and the small adapters that drive everything from it.

A kind's parameters are a :class:`KindParams` subclass: types, defaults, bounds (``Field(ge=, le=)``),
choices (``Literal``), ``extra="forbid"``, cross-field rules as validators and a description per field.
:class:`Schema` adapts that one model to every place a parameter shows up, so a parameter is added in
exactly one place:

- the JSON API: :meth:`Schema.validate` (all errors at once, each naming its field, as the 422 body's
  ``errors`` list; ``error``/``field`` are the first);
- the web form: :attr:`Schema.params` describes each control, :meth:`Schema.validate_form` reads it;
- the CLI: :meth:`Schema.add_arguments` / :meth:`Schema.from_args` (names, defaults, bounds and help
  from the model);
- the docs: :meth:`Schema.json_schema` is the model's own JSON schema.

Parameter names are the CLI's long options with underscores (``--content-weight`` <-> ``content_weight``).
Field helpers: :func:`param` (a field with help, label, bounds and display hints) and the list types
:func:`List` (JSON lists or comma-separated strings, with per-item bounds).
"""

from __future__ import annotations

import argparse
import functools
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal, get_args, get_origin

import annotated_types
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator
from pydantic.fields import FieldInfo

from core.errors import UserError, quote


class KindParams(BaseModel):
    """Base of every kind's parameter model: unknown keys are errors (a typo must not silently fall back
    to a default), strings are stripped, non-finite numbers refused, and validated values are kept as
    given types (lists stay lists) for JSON storage."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True, allow_inf_nan=False,
                              validate_assignment=False, frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _no_booleans_for_numbers(cls, data: Any) -> Any:
        """Numbers are numbers: ``true`` for a size is a mistake, not 1 (pydantic's lax mode would take it).
        A boolean sent for a numeric field (or list item) goes on as text, which the field refuses."""
        if not isinstance(data, Mapping):
            return data
        numeric = _numeric_fields(cls)
        out = dict(data)
        for name in numeric.intersection(out):
            value = out[name]
            if isinstance(value, bool):
                out[name] = str(value).lower()
            elif isinstance(value, (list, tuple)):
                out[name] = [str(v).lower() if isinstance(v, bool) else v for v in value]
        return out

    def __init__(self, **data: Any) -> None:
        """Built in code (an engine's options from a caller's values), a bad value is still the user's
        mistake: a :class:`UserError` naming the field, as from :meth:`Schema.parse`."""
        try:
            super().__init__(**data)
        except ValidationError as exc:
            errors = errors_of(exc, type(self).__name__, type(self).model_fields)
            raise UserError(errors[0]["error"], errors[0]["field"] or None, 422, errors=errors) from None


def _split(value: Any) -> Any:
    """Lists arrive as JSON lists, or as comma-separated strings (forms, CLI)."""
    if isinstance(value, str):
        return [x for x in (s.strip() for s in value.split(",")) if x != ""]
    if isinstance(value, tuple):
        return list(value)
    return value


#: Numeric field types (plain, so bounds show in the JSON schema as minimum/maximum); booleans sent for
#: them are refused by :meth:`KindParams._no_booleans_for_numbers`.
Int = int
Float = float


def List(item: type, ge: float | None = None, le: float | None = None) -> Any:  # noqa: N802 - a type factory
    """A list of ``item`` (``int``, ``float`` or ``str``) with per-item bounds, from a JSON list or a
    comma-separated string."""
    constraints = [c for c in (annotated_types.Ge(ge) if ge is not None else None,
                               annotated_types.Le(le) if le is not None else None) if c is not None]
    element = Annotated[item, *constraints] if constraints else item
    return Annotated[list[element], BeforeValidator(_split)]  # type: ignore[valid-type]


def param(default: Any, help: str, *, label: str | None = None, advanced: bool = False, cli: bool = True,
          ge: float | None = None, le: float | None = None) -> Any:
    """A field with its help text (the API docs, the form, ``--help``), an optional display label, bounds,
    and display hints: ``advanced`` goes in the form's collapsed section, ``cli=False`` leaves it out of
    the CLI (a value the CLI takes another way)."""
    extra: dict[str, Any] = {}  # OpenAPI extension keys ("x-"), read back by ParamView
    if advanced:
        extra["x-advanced"] = True
    if not cli:
        extra["x-cli"] = False
    return Field(default, description=help, title=label, ge=ge, le=le, json_schema_extra=extra or None)


#: Where a job runs: the same choices for every kind that runs a network, and for ATELIER_DEVICE.
Device = Literal["auto", "cpu", "cuda"]
DEVICES: tuple[str, ...] = get_args(Device)
#: The ``device`` parameter of every kind that runs a network ("auto" falls back to the worker's setting).
DEVICE_FIELD: Any = param("auto", "Where to run: auto (the worker's setting), cpu or cuda", advanced=True)


def resolve_job_device(requested: str, worker_default: str) -> str:
    """The one "auto" fallback: a job's ``device`` of ``auto`` means the worker's ``ATELIER_DEVICE``."""
    return worker_default if requested == "auto" and worker_default in ("cpu", "cuda") else requested


# ---------------------------------------------------------------------------------------------------
# One field as the form and the CLI see it
# ---------------------------------------------------------------------------------------------------
_SCALARS = {int: "int", float: "float", bool: "bool", str: "str"}


@dataclass(frozen=True)
class ParamView:
    """A model field described for the form and the CLI (derived; never written by hand)."""

    name: str
    type: str  # int | float | bool | str | choice | int_list | float_list | str_list
    default: Any
    help: str
    minimum: float | None
    maximum: float | None
    choices: tuple[str, ...]
    advanced: bool
    nullable: bool
    cli: bool
    label: str | None

    @property
    def option(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def title(self) -> str:
        return self.label or self.name.replace("_", " ").capitalize()

    def form_value(self, value: Any) -> str:
        """The value as the web form shows it."""
        if value is None:
            return ""
        if isinstance(value, (list, tuple)):
            return ",".join(_fmt(v) for v in value)
        if isinstance(value, bool):
            return "true" if value else "false"
        return _fmt(value)


def _unwrap(annotation: Any) -> tuple[Any, bool, list[Any]]:
    """(inner type, nullable, metadata) of a field annotation: strips Optional and Annotated."""
    nullable, metadata = False, []
    while True:
        origin = get_origin(annotation)
        if origin is Annotated:
            annotation, *meta = get_args(annotation)
            metadata += meta
        elif origin in (typing.Union, types.UnionType):
            args = [a for a in get_args(annotation) if a is not type(None)]
            nullable = nullable or len(args) < len(get_args(annotation))
            annotation = args[0]
        else:
            return annotation, nullable, metadata


def _bounds(metadata: Iterable[Any]) -> tuple[float | None, float | None]:
    lo = hi = None
    for m in metadata:
        if isinstance(m, annotated_types.Ge):
            lo = m.ge
        elif isinstance(m, annotated_types.Le):
            hi = m.le
        elif isinstance(m, FieldInfo):
            a, b = _bounds(m.metadata)
            lo, hi = lo if a is None else a, hi if b is None else b
    return lo, hi


def _view(name: str, info: FieldInfo) -> ParamView:
    inner, nullable, meta = _unwrap(info.annotation)
    lo, hi = _bounds([*info.metadata, *meta])
    choices: tuple[str, ...] = ()
    if get_origin(inner) is Literal:
        kind, choices = "choice", tuple(get_args(inner))
    elif get_origin(inner) in (list, tuple):
        item, _, item_meta = _unwrap(get_args(inner)[0])
        kind = _SCALARS[item] + "_list"
        lo, hi = _bounds(item_meta)
    else:
        kind = _SCALARS[inner]
    extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
    return ParamView(name=name, type=kind, default=info.get_default(call_default_factory=True),
                     help=info.description or "", minimum=lo, maximum=hi, choices=choices,
                     advanced=bool(extra.get("x-advanced")), nullable=nullable, cli=extra.get("x-cli", True) is not False,
                     label=info.title)


@functools.cache
def _numeric_fields(model: type[KindParams]) -> frozenset[str]:
    return frozenset(n for n, f in model.model_fields.items()
                     if _view(n, f).type in ("int", "float", "int_list", "float_list"))


# ---------------------------------------------------------------------------------------------------
# Errors in the words the API, the form and the CLI use
# ---------------------------------------------------------------------------------------------------
def _message(err: Mapping[str, Any], kind: str, known: Iterable[str]) -> str:
    """One pydantic error as a sentence about the parameter (pydantic's own wording otherwise)."""
    kind_of, ctx, given = err["type"], err.get("ctx") or {}, err.get("input")
    if kind_of == "extra_forbidden":
        return f"unknown parameter {quote(err['loc'][0])} for {kind}; known: {', '.join(known)}"
    if kind_of in ("greater_than_equal", "greater_than"):
        return f"must be at least {_fmt(ctx.get('ge', ctx.get('gt')))}, got {quote(given)}"
    if kind_of in ("less_than_equal", "less_than"):
        return f"must be at most {_fmt(ctx.get('le', ctx.get('lt')))}, got {quote(given)}"
    if kind_of == "literal_error":
        return f"expected one of {ctx.get('expected', '').replace(' or ', ', ').replace(chr(39), '')}, got {quote(given)}"
    if kind_of in ("int_parsing", "int_type", "int_from_float"):
        return f"expected an integer, got {quote(given)}"
    if kind_of in ("float_parsing", "float_type"):
        return f"expected a number, got {quote(given)}"
    if kind_of == "finite_number":
        return "expected a finite number"
    if kind_of in ("bool_parsing", "bool_type"):
        return f"expected true or false, got {quote(given)}"
    if kind_of == "list_type":
        return f"expected a list or a comma-separated string, got {type(given).__name__}"
    if kind_of == "missing":
        return "a value is required"
    if kind_of == "value_error":
        return str(ctx.get("error", err["msg"]))
    return str(err["msg"])


def errors_of(exc: ValidationError, kind: str, known: Iterable[str]) -> list[dict[str, str]]:
    """Every error of a validation, as ``{field, error}`` (the field is the parameter, never an index)."""
    known = list(known)
    out = []
    for err in exc.errors(include_url=False):
        field = str(err["loc"][0]) if err["loc"] else ""
        out.append({"field": field, "error": f"{field}: {_message(err, kind, known)}" if field else
                    _message(err, kind, known)})
    return out


# ---------------------------------------------------------------------------------------------------
# The adapter
# ---------------------------------------------------------------------------------------------------
class Schema:
    """The parameters of one job kind: one :class:`KindParams` model, seen by the API, form, CLI and docs."""

    def __init__(self, kind: str, model: type[KindParams], description: str = "") -> None:
        self.kind, self.model, self.description = kind, model, description
        self.params: tuple[ParamView, ...] = tuple(_view(n, f) for n, f in model.model_fields.items())
        self._by_name = {p.name: p for p in self.params}

    def __getitem__(self, name: str) -> ParamView:
        return self._by_name[name]

    def __contains__(self, name: str) -> bool:
        return name in self._by_name

    def defaults(self) -> dict[str, Any]:
        return {p.name: p.default for p in self.params}

    def parse(self, raw: Mapping[str, Any] | None) -> KindParams:
        """The typed model, or a :class:`UserError` listing every mistake (422; ``field``: the first)."""
        try:
            return self.model.model_validate(dict(raw or {}))
        except ValidationError as exc:
            errors = errors_of(exc, self.kind, self._by_name)
            raise UserError(errors[0]["error"], errors[0]["field"] or None, 422, errors=errors) from None

    def validate(self, raw: Mapping[str, Any] | None) -> dict[str, Any]:
        """Check ``raw`` and return a complete, typed parameter dict (defaults filled in), as stored."""
        return self.parse(raw).model_dump(mode="json")

    def validate_form(self, form: Mapping[str, str]) -> dict[str, Any]:
        """Validate an HTML form: empty fields mean 'use the default'; checkboxes arrive as 'on' or absent."""
        raw: dict[str, Any] = {}
        for p in self.params:
            if p.type == "bool" and not p.nullable:
                if f"{p.name}__present" in form or p.name in form:
                    raw[p.name] = form.get(p.name, "false") or "false"
            elif p.name in form and str(form[p.name]).strip() != "":
                raw[p.name] = form[p.name]
        return self.validate(raw)

    # -- CLI -----------------------------------------------------------------------------------------
    def add_arguments(self, parser: argparse.ArgumentParser | Any, skip: Iterable[str] = ()) -> None:
        """One long option per parameter; values stay strings and are checked by :meth:`from_args`."""
        skip = set(skip)
        for p in self.params:
            if not p.cli or p.name in skip:
                continue
            bounds = "".join([f", at least {_fmt(p.minimum)}" if p.minimum is not None else "",
                              f", at most {_fmt(p.maximum)}" if p.maximum is not None else ""])
            helptext = f"{p.help} (default: {p.form_value(p.default) or 'none'}{bounds})".replace("%", "%%")
            if p.type == "bool":
                parser.add_argument(p.option, dest=p.name, action=argparse.BooleanOptionalAction, default=None,
                                    help=helptext)
            else:
                metavar = "|".join(p.choices) if p.type == "choice" else p.type.upper().replace("_LIST", ",...")
                parser.add_argument(p.option, dest=p.name, default=None, metavar=metavar, help=helptext)

    def from_args(self, ns: argparse.Namespace) -> dict[str, Any]:
        raw = {p.name: getattr(ns, p.name) for p in self.params if getattr(ns, p.name, None) is not None}
        return self.validate(raw)

    # -- docs ----------------------------------------------------------------------------------------
    def json_schema(self) -> dict[str, Any]:
        """The model's JSON schema (what the API validates), with the kind's description."""
        schema = self.model.model_json_schema()
        schema.pop("title", None)
        if self.description:
            schema["description"] = self.description
        return schema


def _fmt(v: Any) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)
