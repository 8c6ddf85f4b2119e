"""Neural style transfer (Gatys et al.) on VGG-19, split by concern.

``options`` (what a caller may ask, validated; no torch), ``objective`` (the documented loss),
``lbfgs`` (the optimiser), ``schedule`` (coarse-to-fine levels; no torch), ``memory`` (will it fit),
``color`` (original-colour transfer) and ``engine`` (the loop tying them together). The public entry
point is :mod:`core.engines.style_transfer`. This package imports no torch at import time, so the job
kind can validate parameters in the web process.
"""
