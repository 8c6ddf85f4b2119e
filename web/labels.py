"""Names people read for metrics, loss series and worker facts.

Parameters get their labels from the kinds' schemas (``ParamView.title``, set with ``label=`` where the
generated one reads poorly); metrics and worker info are free-form dictionaries written by the kinds and
the worker, so their labels live here, in one small registry the pages and ``job.js`` share (the page
embeds :func:`client_labels` as JSON). An unknown key still reads acceptably: ``images_per_s`` becomes
"Images per s".
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

#: Metric (and worker info) keys -> labels.
METRIC_LABELS: dict[str, str] = {
    "loss": "Total loss",
    "content_loss": "Content loss",
    "style_loss": "Style loss",
    "tv_loss": "Smoothness (TV) loss",
    "steps": "Steps",
    "seconds": "Compute time",
    "run_seconds": "Time in the worker",
    "load_seconds": "Load time",
    "device": "Device",
    "precision": "Precision",
    "weights": "VGG-19 weights",
    "levels": "Resolution levels",
    "output_size": "Output size",
    "model_id": "Model",
    "iterations": "Iterations",
    "it_per_s": "Speed",
    "resumed_from": "Resumed from iteration",
    "images": "Images",
    "images_per_s": "Speed",
    "direction": "Direction",
    "generator": "Generator",
    "vgg19_weights_ok": "VGG-19 weights",
    "vgg19_weights": "VGG-19 weights",
    # CycleGAN / pix2pix loss terms (the series and their final_ values)
    "G_A": "Generator A→B (adversarial)",
    "G_B": "Generator B→A (adversarial)",
    "D_A": "Discriminator A",
    "D_B": "Discriminator B",
    "cycle_A": "Cycle A→B→A",
    "cycle_B": "Cycle B→A→B",
    "idt_A": "Identity A",
    "idt_B": "Identity B",
    "G_GAN": "Generator (adversarial)",
    "G_L1": "Generator L1 to target",
    "D_real": "Discriminator on real",
    "D_fake": "Discriminator on fake",
}

#: Loss series -> the small plot they share: terms of one kind on one scale, not eight on one log plot.
LOSS_GROUPS: dict[str, str] = {
    "G_A": "Generators", "G_B": "Generators", "G_GAN": "Generators", "G_L1": "L1 to target",
    "D_A": "Discriminators", "D_B": "Discriminators", "D_real": "Discriminators", "D_fake": "Discriminators",
    "cycle_A": "Cycle consistency", "cycle_B": "Cycle consistency",
    "idt_A": "Identity", "idt_B": "Identity",
    "loss": "Total", "content_loss": "Content and style", "style_loss": "Content and style",
    "tv_loss": "Smoothness",
}

#: Units after a number, by key.
UNITS = {"seconds": "s", "load_seconds": "s", "run_seconds": "s", "it_per_s": "it/s", "images_per_s": "images/s"}
#: The order of the loss plots: the headline first, then each term.
GROUP_ORDER = ("Total", "Content and style", "Smoothness", "Generators", "Discriminators", "Cycle consistency",
               "Identity", "L1 to target")

WEIGHT_NAMES = {"imagenet": "ImageNet", "random": "random"}


def metric_label(key: str) -> str:
    """The label of a metric key: the registry's, else ``final_G_A`` -> "Generator A→B (adversarial), last",
    else the key in words."""
    if key in METRIC_LABELS:
        return METRIC_LABELS[key]
    if key.startswith("final_") and key[6:] in METRIC_LABELS:
        return f"{METRIC_LABELS[key[6:]]}, last"
    words = key.replace("_", " ").strip()
    return words[:1].upper() + words[1:]


def format_number(value: float) -> str:
    if value == 0:
        return "0"
    if not math.isfinite(value):
        return str(value)
    a = abs(value)
    if a >= 1e5 or a < 1e-3:
        return f"{value:.3e}"
    return f"{round(value, 4):g}"


def format_metric(key: str, value: Any) -> str:
    """A metric's value as a person reads it: '3.2 s', '512×384', 'ImageNet', 'yes'."""
    if key == "vgg19_weights_ok" and isinstance(value, bool):
        return "usable" if value else "missing"
    if key == "weights" and isinstance(value, str):
        return WEIGHT_NAMES.get(value.lower(), value)
    if isinstance(value, bool):
        return "yes" if value else "no"
    if value is None:
        return "—"
    if isinstance(value, (int, float)):
        text = format_number(float(value)) if isinstance(value, float) else str(value)
        if key in ("seconds", "load_seconds", "run_seconds") and value >= 60:
            s = int(round(value))
            return f"{s // 60} min {s % 60} s" if s < 3600 else f"{s // 3600} h {(s % 3600) // 60} min"
        unit = UNITS.get(key)
        return f"{text} {unit}" if unit else text
    if isinstance(value, (list, tuple)):
        if len(value) == 2 and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            return f"{value[0]}×{value[1]}"
        return ", ".join(str(v) for v in value)
    if isinstance(value, Mapping):
        return ", ".join(f"{k} {v}" for k, v in value.items())
    return str(value)


def client_labels() -> dict[str, Any]:
    """What ``job.js`` needs to label series and group them into plots (embedded in the job page)."""
    return {"labels": METRIC_LABELS, "groups": LOSS_GROUPS, "units": UNITS, "order": list(GROUP_ORDER)}


def shown_metrics(metrics: Mapping[str, Any] | None) -> dict[str, Any]:
    """The metrics worth a row: no empty values, and no ``final_X`` beside the same ``X`` (a finished
    training job records both)."""
    metrics = metrics or {}
    return {k: v for k, v in metrics.items()
            if v is not None and v != "" and not (k.startswith("final_") and k[6:] in metrics)}
