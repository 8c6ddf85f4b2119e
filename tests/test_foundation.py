"""Settings, the parameter schema, storage and safe image decoding."""

from __future__ import annotations

import argparse
import io
from pathlib import Path
from typing import Literal

import pytest
from PIL import Image

from core.errors import ConfigError, UserError
from core.images import decode_image, resize_longest, scaled_size
from core.schema import Float, Int, KindParams, List, Schema, param
from core.settings import load_settings
from core.atomic import write_atomically_by_path
from core.storage import LocalStorage
from tests.conftest import png_bytes


# -- settings ----------------------------------------------------------------------------------------
def test_settings_defaults_and_parsing() -> None:
    s = load_settings({})
    assert s.port == 8000 and s.device == "auto" and s.queue == "gpu"
    assert s.resolved_database_url.startswith("sqlite:///") and s.embedded_broker
    s = load_settings({"ATELIER_PORT": "9001", "ATELIER_DATABASE_URL": "postgresql+psycopg://x@h/db",
                       "ATELIER_BROKER_URL": "redis://h:6379/0", "ATELIER_DEVICE": "cuda"})
    assert (s.port, s.device, s.embedded_broker) == (9001, "cuda", False)


@pytest.mark.parametrize(("env", "needle"), [
    ({"ATELIER_PORT": "eighty"}, "ATELIER_PORT"),
    ({"ATELIER_PORT": "70000"}, "ATELIER_PORT"),
    ({"ATELIER_DEVICE": "tpu"}, "ATELIER_DEVICE"),
    ({"ATELIER_LEASE_SECONDS": "0"}, "ATELIER_LEASE_SECONDS"),
    ({"ATELIER_DATABASE_URL": "mysql://x"}, "ATELIER_DATABASE_URL"),
    ({"ATELIER_BROKER_URL": "kafka://x"}, "ATELIER_BROKER_URL"),
    ({"ATELIER_VGG19_WEIGHTS": "weights.zip"}, "ATELIER_VGG19_WEIGHTS"),
    ({"ATELIER_PORTT": "1"}, "ATELIER_PORTT"),
])
def test_bad_settings_name_the_variable(env: dict[str, str], needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        load_settings(env)


# -- schema ------------------------------------------------------------------------------------------
class DemoParams(KindParams):
    size: Int = param(256, "longest side", ge=16, le=1024)
    weight: Float = param(1.5, "a weight", ge=0)
    mode: Literal["a", "b"] = param("a", "a mode")
    layers: List(str) = param(["x", "y"], "layer names")
    blend: List(float, ge=0) = param([1.0], "blend weights")
    flag: bool = param(False, "a flag", advanced=True)


SCHEMA = Schema("demo", DemoParams)


def test_schema_fills_defaults_and_coerces() -> None:
    assert SCHEMA.validate({}) == {"size": 256, "weight": 1.5, "mode": "a", "layers": ["x", "y"], "blend": [1.0],
                                   "flag": False}
    got = SCHEMA.validate({"size": "64", "weight": 2, "layers": "p, q", "blend": [1, 2], "flag": "true"})
    assert got["size"] == 64 and got["weight"] == 2.0 and got["layers"] == ["p", "q"] and got["blend"] == [1.0, 2.0]
    assert got["flag"] is True


@pytest.mark.parametrize(("raw", "field"), [
    ({"size": 8}, "size"), ({"size": 2000}, "size"), ({"size": 1.5}, "size"), ({"size": True}, "size"),
    ({"weight": "nan"}, "weight"), ({"weight": -1}, "weight"), ({"mode": "c"}, "mode"),
    ({"blend": [1, -1]}, "blend"), ({"flag": "maybe"}, "flag"), ({"sise": 1}, "sise"), ({"layers": 3}, "layers"),
])
def test_schema_errors_name_the_field(raw: dict[str, object], field: str) -> None:
    with pytest.raises(UserError) as info:
        SCHEMA.validate(raw)
    assert info.value.field == field and field in info.value.message


def test_schema_builds_cli_and_form_and_json_schema() -> None:
    parser = argparse.ArgumentParser()
    SCHEMA.add_arguments(parser)
    ns = parser.parse_args(["--size", "32", "--layers", "a,b", "--flag"])
    assert SCHEMA.from_args(ns) == {**SCHEMA.defaults(), "size": 32, "layers": ["a", "b"], "flag": True}
    assert SCHEMA.validate_form({"size": "", "weight": "3", "flag__present": "1"})["flag"] is False
    assert SCHEMA.validate_form({"flag__present": "1", "flag": "on"})["flag"] is True
    js = SCHEMA.json_schema()
    assert {k: v for k, v in js["properties"]["size"].items() if k != "title"} == {
        "type": "integer", "minimum": 16, "maximum": 1024, "default": 256, "description": "longest side"}
    assert js["properties"]["blend"]["items"]["minimum"] == 0 and js["additionalProperties"] is False


# -- storage -----------------------------------------------------------------------------------------
def test_storage_is_atomic_and_refuses_escaping_keys(tmp_path: Path) -> None:
    st = LocalStorage(tmp_path)
    obj = st.put_bytes("jobs/a/out.bin", b"hello")
    assert obj.size == 5 and st.read_bytes("jobs/a/out.bin") == b"hello"
    assert [p.name for p in (tmp_path / "jobs/a").iterdir()] == ["out.bin"]  # no temp file left
    for bad in ("../x", "/etc/passwd", "a/../../b", "", "./a", "a//b", "a\\b"):
        with pytest.raises(ValueError):
            st.path(bad)
    st.delete_prefix("jobs/a")
    assert not st.exists("jobs/a/out.bin")


def test_storage_write_failure_leaves_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    st = LocalStorage(tmp_path)
    st.put_bytes("k/file", b"old")

    def broken_replace(*_a: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError):
        st.put_bytes("k/file", b"new")
    monkeypatch.undo()
    assert st.read_bytes("k/file") == b"old" and len(list((tmp_path / "k").iterdir())) == 1


def test_path_writers_are_atomic_too(tmp_path: Path) -> None:
    """``write_atomically_by_path`` (for writers that want a file name): a writer that fails half-way
    leaves the old file and no temp file; one that succeeds replaces it."""
    target = tmp_path / "model" / "G.safetensors"
    write_atomically_by_path(target, lambda tmp: tmp.write_bytes(b"old"))

    def half_then_fail(tmp: Path) -> None:
        tmp.write_bytes(b"ne")
        raise OSError("disk full")

    with pytest.raises(OSError):
        write_atomically_by_path(target, half_then_fail)
    assert target.read_bytes() == b"old" and [p.name for p in target.parent.iterdir()] == ["G.safetensors"]
    write_atomically_by_path(target, lambda tmp: tmp.write_bytes(b"new"))
    assert target.read_bytes() == b"new" and len(list(target.parent.iterdir())) == 1


# -- images ------------------------------------------------------------------------------------------
def test_decode_checks_and_normalises() -> None:
    img = decode_image(png_bytes(20, 10))
    assert img.mode == "RGB" and img.size == (20, 10)
    rgba = io.BytesIO()
    Image.new("RGBA", (5, 5)).save(rgba, format="PNG")
    assert decode_image(rgba.getvalue()).mode == "RGB"
    with pytest.raises(UserError) as info:
        decode_image(png_bytes(100, 100), "content", max_pixels=5000)
    assert info.value.status == 413 and info.value.field == "content"


def test_resize_longest_side_rounds_to_nearest() -> None:
    assert scaled_size(451, 300, 48) == (48, 32)
    assert scaled_size(300, 451, 48) == (32, 48)
    assert scaled_size(600, 400, 128) == (128, 85)
    assert resize_longest(Image.new("RGB", (451, 300)), 100).size == (100, 67)
