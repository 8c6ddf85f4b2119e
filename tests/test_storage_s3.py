"""The storage interface on both backends (the local directory and S3 on a local moto server), and what
only the S3 backend has: atomic uploads (a failed upload leaves no visible key), presigned redirects,
work directories that move between hosts."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
import requests

from core import db
from core.services import build_services
from core.storage import LocalStorage, Storage, open_storage
from core.storage.s3 import S3Storage
from tests.conftest import make_settings, png_bytes
from tests.s3_support import S3Server


def s3_settings(tmp_path: Path, server: S3Server, **kw: Any):  # type: ignore[no-untyped-def]
    env = server.env(server.new_bucket())
    return make_settings(tmp_path, storage_url=env["ATELIER_STORAGE_URL"], s3_endpoint_url=server.endpoint,
                         s3_region=env["ATELIER_S3_REGION"], s3_access_key_id=env["ATELIER_S3_ACCESS_KEY_ID"],
                         s3_secret_access_key=env["ATELIER_S3_SECRET_ACCESS_KEY"], s3_addressing_style="path", **kw)


@pytest.fixture(params=["file", "s3"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Storage:
    if request.param == "file":
        return open_storage(make_settings(tmp_path, storage_url=f"file://{tmp_path / 'store'}"))
    return open_storage(s3_settings(tmp_path, request.getfixturevalue("s3_server")))


@pytest.fixture()
def s3(tmp_path: Path, s3_server: S3Server) -> S3Storage:
    st = open_storage(s3_settings(tmp_path, s3_server))
    assert isinstance(st, S3Storage)
    return st


# -- the interface, on both backends --------------------------------------------------------------
def test_write_read_list_delete(storage: Storage, tmp_path: Path) -> None:
    obj = storage.put_bytes("jobs/a/outputs/x.bin", b"hello")
    assert (obj.size, obj.sha256[:8]) == (5, "2cf24dba")
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "m.json").write_text("{}")
    (src / "sub" / "w.bin").write_bytes(b"\0" * 3000)
    stored = storage.put_tree("models/m1", src)
    assert [o.key for o in stored] == ["models/m1/m.json", "models/m1/sub/w.bin"]
    assert storage.read_bytes("jobs/a/outputs/x.bin") == b"hello"
    assert storage.stat("models/m1/sub/w.bin").size == 3000 and storage.stat("models/m1/nope") is None
    assert [i.key for i in storage.list("models")] == ["models/m1/m.json", "models/m1/sub/w.bin"]
    assert [i.key for i in storage.list("models/m")] == []  # a prefix is a folder, not a string prefix
    assert {i.key for i in storage.list()} == {"jobs/a/outputs/x.bin", "models/m1/m.json", "models/m1/sub/w.bin"}
    with storage.local_copy("models/m1", tmp_path / "scratch") as copy:
        assert (copy / "sub" / "w.bin").read_bytes() == b"\0" * 3000 and (copy / "m.json").read_text() == "{}"
    with storage.local_copy("jobs/a/outputs/x.bin", tmp_path / "scratch") as copy:
        assert copy.read_bytes() == b"hello"
    with pytest.raises(FileNotFoundError), storage.local_copy("datasets/none", tmp_path / "scratch"):
        pass
    assert storage.delete_prefix("models/m1") == 2
    assert list(storage.list("models")) == [] and storage.exists("jobs/a/outputs/x.bin")
    storage.delete("jobs/a/outputs/x.bin")
    assert not storage.exists("jobs/a/outputs/x.bin")
    with pytest.raises(FileNotFoundError):
        storage.open_read("jobs/a/outputs/x.bin")
    if isinstance(storage, S3Storage):  # the scratch copies are gone after their block
        assert not any((tmp_path / "scratch").iterdir())


def test_reads_stream_in_chunks(storage: Storage) -> None:
    data = bytes(range(256)) * 40  # 10 240 bytes
    storage.put_bytes("jobs/b/big.bin", data)
    chunks = list(storage.iter_chunks("jobs/b/big.bin", chunk=4096))
    assert [len(c) for c in chunks] == [4096, 4096, 2048] and b"".join(chunks) == data
    with storage.open_read("jobs/b/big.bin") as fh:
        assert fh.read(10) == data[:10] and fh.read(5) == data[10:15]


@pytest.mark.parametrize("bad", ["../x", "/etc/passwd", "a/../../b", "", "./a", "a//b", "a\\b", "jobs/..", "a/\0"])
def test_keys_that_escape_are_refused_before_any_request(storage: Storage, bad: str) -> None:
    for op in (lambda: storage.put_bytes(bad, b"x"), lambda: storage.open_read(bad), lambda: storage.stat(bad),
               lambda: storage.delete_prefix(bad), lambda: list(storage.list(bad or "..")),
               lambda: storage.delete(bad)):
        with pytest.raises(ValueError, match="invalid storage key"):
            op()


def test_storage_urls_are_checked_at_start_up(tmp_path: Path) -> None:
    from core.errors import ConfigError
    from core.settings import load_settings

    for url, needle in [("s3://", "s3://bucket"), ("s3://b/../etc", "invalid storage key"), ("ftp://x", "file://"),
                        ("file://relative/path", "absolute")]:
        with pytest.raises(ConfigError, match="ATELIER_STORAGE_URL") as err:
            load_settings({"ATELIER_STORAGE_URL": url})
        assert needle in str(err.value)
    with pytest.raises(ConfigError, match="ATELIER_S3_ADDRESSING_STYLE"):
        load_settings({"ATELIER_S3_ADDRESSING_STYLE": "sideways"})
    assert isinstance(open_storage(load_settings({"ATELIER_STORAGE_URL": f"file://{tmp_path}"})), LocalStorage)
    s3 = open_storage(load_settings({"ATELIER_STORAGE_URL": "s3://bkt/a/b", "ATELIER_S3_ENDPOINT_URL": "http://x:9"}))
    assert isinstance(s3, S3Storage) and (s3.bucket, s3.prefix) == ("bkt", "a/b")


# -- S3 only --------------------------------------------------------------------------------------
class _FailingReader(io.RawIOBase):
    """A file that breaks after ``limit`` bytes (a disk error, a killed process) while being uploaded."""

    def __init__(self, path: Path, limit: int) -> None:
        self._fh, self._left = open(path, "rb"), limit

    def readable(self) -> bool:
        return True

    def readinto(self, buf: Any) -> int:
        if self._left <= 0:
            raise OSError("read error half-way through the upload")
        data = self._fh.read(min(len(buf), self._left))
        self._left -= len(data)
        buf[:len(data)] = data
        return len(data)

    def close(self) -> None:
        self._fh.close()
        super().close()


@pytest.mark.parametrize("multipart", [False, True], ids=["single-put", "multipart"])
def test_a_failed_upload_leaves_no_visible_key(s3: S3Storage, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               multipart: bool) -> None:
    import core.storage.s3 as s3mod

    size = 11 << 20 if multipart else 300_000
    src = tmp_path / "ckpt.pt"
    src.write_bytes(b"n" * size)
    s3.put_bytes("jobs/j/work/checkpoints/old.pt", b"old")
    if multipart:
        monkeypatch.setattr(s3mod, "MULTIPART_THRESHOLD", 5 << 20)  # parts of 8 MiB: the first one is sent
    monkeypatch.setattr(s3mod, "open", lambda path, mode="r": io.BufferedReader(_FailingReader(path, size - 1000)),
                        raising=False)
    for key in ("jobs/j/work/checkpoints/new.pt", "jobs/j/work/checkpoints/old.pt"):
        with pytest.raises(OSError, match="half-way"):
            s3.put_file(key, src)
    assert not s3.exists("jobs/j/work/checkpoints/new.pt")  # never visible, not even empty
    assert s3.read_bytes("jobs/j/work/checkpoints/old.pt") == b"old"  # an overwrite that failed keeps the old
    assert list(s3.incomplete_uploads()) == []  # a failed multipart upload was aborted, not left behind
    monkeypatch.undo()
    s3.put_file("jobs/j/work/checkpoints/new.pt", src)
    assert s3.stat("jobs/j/work/checkpoints/new.pt").size == size


def test_work_dir_moves_between_hosts(s3: S3Storage, tmp_path: Path) -> None:
    """Host 1 syncs checkpoints as it writes and prunes them; host 2 restores the newest set and goes on."""
    host1 = s3.work_dir("jobs/j/work", tmp_path / "host1")
    host1.restore()
    ckpts = host1.path / "checkpoints"
    ckpts.mkdir()
    for it in (10, 20, 30):
        (ckpts / f"ckpt_{it:09d}.pt").write_bytes(b"state %d" % it)
        (ckpts / f".ckpt_{it:09d}.pt.x1.tmp").write_bytes(b"half")  # an atomic write's temp file: never synced
        if it == 30:
            (ckpts / "ckpt_000000010.pt").unlink()  # pruned (KEEP = 2)
        host1.sync("checkpoints")
    (host1.path / "registered_model.json").write_text('{"model_id": "m"}')
    host1.sync("registered_model.json")
    assert sorted(i.key for i in s3.list("jobs/j/work")) == [
        "jobs/j/work/checkpoints/ckpt_000000020.pt", "jobs/j/work/checkpoints/ckpt_000000030.pt",
        "jobs/j/work/registered_model.json"]
    host2 = s3.work_dir("jobs/j/work", tmp_path / "host2")
    host2.restore()
    assert sorted(p.name for p in (host2.path / "checkpoints").iterdir()) == ["ckpt_000000020.pt", "ckpt_000000030.pt"]
    assert (host2.path / "checkpoints" / "ckpt_000000030.pt").read_bytes() == b"state 30"
    assert json.loads((host2.path / "registered_model.json").read_text()) == {"model_id": "m"}
    (host2.path / "checkpoints" / "ckpt_000000040.pt").write_bytes(b"state 40")
    host2.sync("checkpoints")
    # host 1 lost its lease but runs on for a moment: its pruning never removes what host 2 stored
    (ckpts / "ckpt_000000020.pt").unlink()
    host1.sync("checkpoints")
    assert sorted(i.key.rsplit("/", 1)[1] for i in s3.list("jobs/j/work/checkpoints")) == [
        "ckpt_000000030.pt", "ckpt_000000040.pt"]
    for host in (host1, host2):
        host.close()
        assert not host.path.exists()


@pytest.fixture()
def s3_client(tmp_path: Path, s3_server: S3Server, celery_recorder):  # type: ignore[no-untyped-def]
    """The web app on S3 storage with presigned redirects on."""
    from tests.conftest import csrf_client_class
    from web import create_app

    settings = s3_settings(tmp_path, s3_server, storage_redirects=True, presign_seconds=60)
    db.upgrade(settings.resolved_database_url)
    services = build_services(settings)
    app = create_app(services=services, celery=celery_recorder)
    app.config["TESTING"] = True
    app.test_client_class = csrf_client_class()
    yield app.test_client(), services
    services.close()


def _submit(client) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    content, style = png_bytes(40, 30), png_bytes(24, 24, (20, 90, 200))
    resp = client.post("/api/v1/jobs", content_type="multipart/form-data",
                       data={"kind": "style_transfer", "params": json.dumps({"size": 32}),
                             "content": [(io.BytesIO(content), "photo.png", "image/png")],
                             "style": [(io.BytesIO(style), "paint.png", "text/html")]})
    assert resp.status_code == 202, resp.get_json()
    return resp.get_json() | {"_content": content}


def test_downloads_stream_inline_and_redirect_attachments_to_presigned_urls(s3_client) -> None:  # type: ignore[no-untyped-def]
    from web.security import FILE_CSP

    client, services = s3_client
    job = _submit(client)
    assert [i.key.split("/")[-2] for i in services.storage.list(f"jobs/{job['id']}")] == ["inputs", "inputs"]
    url = next(i["url"] for i in job["inputs"] if i["role"] == "content")
    inline = client.get(url)  # an image the pages show: streamed from this origin, under the file CSP
    assert inline.status_code == 200 and inline.is_streamed and inline.data == job["_content"]
    assert inline.headers["Content-Length"] == str(len(job["_content"]))
    assert inline.headers["Content-Security-Policy"] == FILE_CSP and inline.headers["Content-Type"] == "image/png"
    ranged = client.get(url, headers={"Range": "bytes=0-7"})
    assert ranged.status_code == 206 and ranged.data == job["_content"][:8]
    assert client.get(url, headers={"If-None-Match": inline.headers["ETag"]}).status_code == 304

    redirect = client.get(url + "?download=1")  # an attachment: straight from the object store
    assert redirect.status_code == 302 and redirect.headers["Cache-Control"] == "no-store"
    location = redirect.headers["Location"]
    assert location.startswith(services.settings.s3_endpoint_url) and "Signature" in location
    direct = requests.get(location, timeout=10)
    assert direct.status_code == 200 and direct.content == job["_content"]
    # type and name come from the row (typed by decoding at upload), whatever the client sent
    assert direct.headers["Content-Type"] == "image/png"
    assert direct.headers["Content-Disposition"] == 'attachment; filename="content-0-photo.png"'
    assert "response-content-disposition=attachment" in location  # part of what the signature covers


def test_model_download_is_a_streamed_zip(s3_client, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import zipfile

    from core import resources

    client, services = s3_client
    src = tmp_path / "model"
    src.mkdir()
    (src / "meta.json").write_text('{"family": "imported"}')
    (src / "G_A.safetensors").write_bytes(b"w" * 5000)
    model = resources.add_model(services, name="my model", family="imported", source_dir=src, meta={})
    resp = client.get(f"/api/v1/models/{model.id}/download")
    assert resp.status_code == 200 and resp.is_streamed
    assert resp.headers["Content-Disposition"] == 'attachment; filename="my_model.zip"'
    zf = zipfile.ZipFile(io.BytesIO(resp.data))
    assert sorted(zf.namelist()) == ["G_A.safetensors", "meta.json"] and zf.read("G_A.safetensors") == b"w" * 5000
    services.storage.delete_prefix(model.path)
    assert client.get(f"/api/v1/models/{model.id}/download").status_code == 404
