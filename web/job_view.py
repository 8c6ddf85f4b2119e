"""What the job page shows beyond the job's JSON: parameters and metrics under their labels, datasets and
models by name with links, the inputs grouped by slot, and the input/output pairs to compare.

Kept apart from :mod:`web.pages` (routes) so the page's wording has one home. Labels come from the kinds'
schemas (``ParamView.title``) and from :mod:`web.labels` for metrics.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from flask import url_for

from core import resources
from core.kinds.base import JobKind
from web import deps
from web.labels import format_metric, metric_label, shown_metrics

#: Kinds that record no loss series: their job page has no loss panel.
KINDS_WITHOUT_LOSSES = frozenset({"translate"})
#: Upload slots whose images are the "before" of a result, by kind.
COMPARE_ROLES = {"style_transfer": "content", "translate": "images"}
#: Friendlier titles of upload slots (the form uses the same words).
ROLE_TITLES = {"content": "Content photo", "style": "Style painting", "init": "Initial image", "images": "Images"}


@dataclass(frozen=True)
class Row:
    """One labelled value; ``href`` makes it a link (a dataset or model by name)."""

    label: str
    value: str
    href: str | None = None
    mono: bool = False


def reference_link(table: str, row_id: str) -> tuple[str, str | None]:
    """``(name, link)`` of a dataset or model id; the id itself (no link) when the row is gone."""
    row = resources.get(deps.services(), table + "s", str(row_id)) if row_id else None
    if row is None:
        return (str(row_id) if row_id else "—"), None
    return row.name, url_for(f"pages.{table}s") + f"#{table}-{row.id}"


def param_rows(kind: JobKind | None, params: Mapping[str, Any]) -> list[Row]:
    rows = []
    references = kind.references if kind is not None else {}
    for name, value in params.items():
        p = kind.schema[name] if kind is not None and name in kind.schema else None
        label = p.title if p else name.replace("_", " ").capitalize()
        if name in references and value:
            text, href = reference_link(references[name], str(value))
            rows.append(Row(label, text, href))
            continue
        text = p.form_value(value) if p else str(value)
        rows.append(Row(label, text if text != "" else "—", mono=bool(text) and p is not None and p.type != "choice"))
    return rows


def metric_rows(metrics: Mapping[str, Any] | None) -> list[Row]:
    rows = []
    for key, value in shown_metrics(metrics).items():
        if key == "model_id" and value:
            text, href = reference_link("model", str(value))
            rows.append(Row(metric_label(key), text, href))
        elif isinstance(value, Mapping):
            continue
        else:
            rows.append(Row(metric_label(key), format_metric(key, value)))
    return rows


@dataclass(frozen=True)
class InputGroup:
    role: str
    title: str
    files: list[dict[str, Any]]


def input_groups(inputs: Sequence[Mapping[str, Any]]) -> list[InputGroup]:
    """Inputs by slot, in order: "Content photo: cat.png", "Images (3)", never "images, images"."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for i in inputs:
        groups.setdefault(i["role"], []).append({**i, "label": display_name(i["role"], i["name"])})
    return [InputGroup(role, ROLE_TITLES.get(role, role.replace("_", " ").capitalize()), files)
            for role, files in groups.items()]


def display_name(role: str, stored: str) -> str:
    """The name a file was uploaded with: stored inputs are ``<role>-<i>-<name>``."""
    return re.sub(rf"^(\d+-)?{re.escape(role)}-\d+-", "", stored)


@dataclass(frozen=True)
class Pair:
    before: Mapping[str, Any]
    after: Mapping[str, Any]
    title: str


def compare_pairs(kind_name: str, inputs: Sequence[Mapping[str, Any]], outputs: Sequence[Mapping[str, Any]]
                  ) -> list[Pair]:
    """Input/output pairs of image-to-image results: the content photo and the painting-like result, or
    each translated image and its source (outputs are named after the sources, see
    :func:`core.kinds.gan.output_names`)."""
    role = COMPARE_ROLES.get(kind_name)
    sources = [i for i in inputs if i["role"] == role and i["content_type"].startswith("image/")]
    images = [o for o in outputs if o["content_type"].startswith("image/")]
    if not role or not sources or not images:
        return []
    if kind_name == "style_transfer":
        result = next((o for o in images if o["name"] == "result.png"), images[0])
        return [Pair(sources[0], result, "Result")]
    from core.kinds.gan import output_names

    by_name = {o["name"]: o for o in images}
    expected = output_names([display_name(role, s["name"]) for s in sources])
    return [Pair(s, by_name[n], display_name(role, s["name"])) for s, n in zip(sources, expected) if n in by_name]


# -- models -----------------------------------------------------------------------------------------
DIRECTION_TITLES = {"AtoB": "A→B", "BtoA": "B→A"}


def _architecture(spec: Mapping[str, Any]) -> str:
    arch, depth = spec.get("arch"), spec.get("depth")
    parts = [f"ResNet, {depth} blocks" if arch == "resnet" else f"U-Net, {2 ** int(depth)} px" if arch == "unet"
             and isinstance(depth, int) else str(spec.get("netG") or arch or "")]
    if spec.get("ngf"):
        parts.append(f"{spec['ngf']} filters")
    if spec.get("norm"):
        parts.append(f"{spec['norm']} norm")
    if spec.get("dropout"):
        parts.append("dropout")
    return ", ".join(p for p in parts if p)


def model_summary(meta: Mapping[str, Any] | None) -> list[Row]:
    """A handful of facts a person picks a model by (architecture, directions, training size and length,
    data), instead of every key of its metadata; the page keeps the rest in a collapsed list."""
    meta = meta or {}
    generators = meta.get("generators") or {}
    options = meta.get("options") or {}
    rows = []
    spec = next((g.get("spec") for g in generators.values() if isinstance(g, Mapping) and g.get("spec")), None)
    if isinstance(spec, Mapping):
        rows.append(Row("Architecture", _architecture(spec)))
    elif meta.get("netG"):
        rows.append(Row("Architecture", str(meta["netG"])))
    if generators:
        rows.append(Row("Directions", ", ".join(DIRECTION_TITLES.get(d, d) for d in generators)))
    if options.get("size"):
        rows.append(Row("Trained at", f"{options['size']} px"))
    iterations = options.get("iterations_done") or options.get("iterations")
    if iterations:
        rows.append(Row("Iterations", str(iterations)))
    if options.get("dataset"):
        text, href = reference_link("dataset", str(options["dataset"]))
        rows.append(Row("Dataset", text, href))
    return rows
