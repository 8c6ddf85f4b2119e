"""A zip written while it is sent: "Download all" of a job's outputs without building the archive first.

``zipfile`` writes to any object with ``write``; on a stream it cannot seek, it puts each file's sizes
and checksum after the file's data (data descriptors), which every unzip tool reads. Files are read from
storage in chunks (:meth:`core.storage.base.Storage.iter_chunks`, local or S3 alike) and every chunk is
handed on at once, so memory stays at about one chunk whatever the outputs weigh.
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterable, Iterator
from typing import Any

#: Already-compressed types gain nothing from deflate; everything else (JSON, logs) is deflated.
STORED_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".gif", ".zip", ".safetensors")


class _Pipe:
    """The write end zipfile sees; the generator drains what was written since the last chunk."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.offset = 0

    def write(self, data: bytes) -> int:
        self.parts.append(bytes(data))
        self.offset += len(data)
        return len(data)

    def tell(self) -> int:  # zipfile records the offsets of local headers for the central directory
        return self.offset

    def flush(self) -> None:
        pass

    def drain(self) -> bytes:
        out = b"".join(self.parts)
        self.parts.clear()
        return out


def zip_stream(storage: Any, files: Iterable[tuple[str, str]]) -> Iterator[bytes]:
    """The zip of ``files`` (``(name in the archive, storage key)``) from ``storage``, in chunks."""
    pipe = _Pipe()
    with zipfile.ZipFile(pipe, "w") as zf:  # type: ignore[arg-type]
        for name, key in files:
            info = storage.stat(key)
            if info is None:  # gone between the listing and now: leave it out rather than break the zip
                continue
            entry = zipfile.ZipInfo(name, date_time=info.modified.timetuple()[:6])
            entry.compress_type = zipfile.ZIP_STORED if name.lower().endswith(STORED_SUFFIXES) else zipfile.ZIP_DEFLATED
            with zf.open(entry, "w", force_zip64=info.size > 2**31) as dst:
                for chunk in storage.iter_chunks(key):
                    dst.write(chunk)
                    if pipe.parts:
                        yield pipe.drain()
            yield pipe.drain()
    yield pipe.drain()
