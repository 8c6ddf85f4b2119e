"""Neural style transfer: the public entry point of the engine.

``stylize(content, styles, StyleOptions(...), weights=..., progress=...)`` takes PIL images and returns
a :class:`StyleResult` (PIL image, final fp32 losses, per-step trace). It knows nothing of jobs: the
job kind (:mod:`core.kinds.style_transfer`), the CLI and the benchmark all call it the same way. The
implementation lives in :mod:`core.engines.style`; this module only names what callers may rely on.
"""

from __future__ import annotations

from core.engines.style.engine import StyleResult, resolve_device, resolve_precision, stylize
from core.engines.style.objective import Objective, gram, total_variation
from core.engines.style.options import DEFAULT_CONTENT_LAYERS, DEFAULT_STYLE_LAYERS, StyleOptions
from core.engines.style.schedule import plan_levels

__all__ = ["DEFAULT_CONTENT_LAYERS", "DEFAULT_STYLE_LAYERS", "Objective", "StyleOptions", "StyleResult", "gram",
           "plan_levels", "resolve_device", "resolve_precision", "stylize", "total_variation"]
