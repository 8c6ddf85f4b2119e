"""Refuse a ``.pth`` whose pickle names anything but tensors and containers, without importing torch.

Weights files are loaded with ``torch.load(weights_only=True)``, which never runs a pickle's code. But
importing torch costs a web process about 500 MB, and a hostile upload should not make the web process
pay that to be refused. So before a ``.pth`` reaches torch, its pickle's opcodes are *read* (with
:func:`pickletools.genops`, which executes nothing) and every global it would look up is checked
against what a state dict needs: ``collections.OrderedDict`` and names under ``torch``. Anything else
(``builtins.print``, ``os.system``, ...) is refused here; torch's own restricted unpickler stays the
second line of defence for the files that pass.

Hand-written rather than a library: it is one scan over opcodes, and the allowed names are ours.
"""

from __future__ import annotations

import io
import pickletools
import zipfile
from pathlib import Path

from core.errors import UserError

ALLOWED_MODULES = ("torch", "collections")
ALLOWED_COLLECTIONS = {"OrderedDict"}
_STRING_OPS = {"SHORT_BINUNICODE", "BINUNICODE", "UNICODE", "BINUNICODE8", "SHORT_BINSTRING", "BINSTRING", "STRING"}


def _globals(stream: io.BufferedIOBase) -> list[tuple[str, str]]:
    """Every (module, name) one pickle in ``stream`` would import."""
    found: list[tuple[str, str]] = []
    strings: list[str] = []
    for op, arg, _pos in pickletools.genops(stream):
        if op.name in _STRING_OPS and isinstance(arg, (str, bytes)):
            strings.append(arg.decode("latin-1") if isinstance(arg, bytes) else arg)
        elif op.name in ("GLOBAL", "INST"):
            module, _, name = str(arg).partition(" ")
            found.append((module, name))
        elif op.name == "STACK_GLOBAL":
            found.append((strings[-2], strings[-1]) if len(strings) >= 2 else ("?", "?"))
    return found


def _allowed(module: str, name: str) -> bool:
    if module == "collections":
        return name in ALLOWED_COLLECTIONS
    return module == "torch" or module.startswith("torch.")


def check_torch_file(path: Path, field: str = "file") -> None:
    """Raise :class:`UserError` (422, ``field``) unless ``path``'s pickle only names allowed globals."""
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as zf:
                pickles = [n for n in zf.namelist() if n.endswith("data.pkl")]
                if not pickles:
                    raise UserError(f"{path.name}: not a PyTorch weights file (no data.pkl inside)", field, 422)
                with zf.open(pickles[0]) as fh:
                    names = _globals(io.BufferedReader(fh))  # type: ignore[arg-type]
        else:  # the legacy format: several pickles in a row, the state dict among the first ones
            names = []
            with open(path, "rb") as fh:
                for _ in range(4):
                    try:
                        names += _globals(fh)  # type: ignore[arg-type]
                    except ValueError:
                        break  # past the pickles: raw tensor bytes follow
    except UserError:
        raise
    except Exception as exc:  # a damaged or non-pickle file
        raise UserError(f"{path.name}: not a readable PyTorch weights file ({exc.__class__.__name__})", field,
                        422) from exc
    bad = [f"{m}.{n}" for m, n in names if not _allowed(m, n)]
    if bad:
        raise UserError(f"{path.name} cannot be loaded safely: its pickle would call {bad[0][:100]}, which a "
                        "weights file never needs; export the state dict (or use .safetensors)", field, 422)
