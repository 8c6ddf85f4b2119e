"""Decoding uploads: upright (EXIF orientation), no larger than a job needs, truncation caught cheaply."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from core.errors import UserError
from core.images import check_complete, decode_image, oriented_size


def jpeg(w: int, h: int, orientation: int = 1) -> bytes:
    img = Image.new("RGB", (w, h), (200, 30, 30))
    img.paste((30, 30, 200), (0, 0, w // 2, h))  # left half blue: shows which way it turned
    exif = Image.Exif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    img.save(buf, format="JPEG", exif=exif.tobytes(), quality=95)
    return buf.getvalue()


def test_phone_photos_are_decoded_upright() -> None:
    data = jpeg(60, 40, orientation=6)  # stored landscape, shown rotated 90 degrees clockwise
    assert oriented_size(data) == (40, 60)
    img = decode_image(data, "content")
    assert img.size == (40, 60)
    assert img.getpixel((20, 2))[2] > 150 and img.getpixel((20, 57))[0] > 150  # blue on top after the turn


def test_decoding_at_the_size_a_job_needs() -> None:
    img = decode_image(jpeg(1600, 1200), "style", longest=200)
    assert img.size == (200, 150)
    small = decode_image(jpeg(120, 80), "style", longest=200)
    assert small.size == (120, 80), "never scaled up"


def test_truncated_files_are_caught_without_decoding() -> None:
    data = jpeg(64, 64)
    check_complete(data, "JPEG", "content")
    with pytest.raises(UserError) as err:
        check_complete(data[: len(data) // 2], "JPEG", "content")
    assert err.value.status == 422 and err.value.field == "content"
