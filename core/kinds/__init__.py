"""Job kinds: what a job of each kind takes (schema + uploads) and how it runs.

Each kind lives in its own module and exposes a :class:`~core.kinds.base.JobKind`. The registry in
:mod:`core.kinds.registry` lists them explicitly. Kind modules import no ML library at import time
(the web process never loads torch); their ``run`` functions import engines lazily.
"""
