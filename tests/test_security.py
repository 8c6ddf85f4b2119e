"""Hostile input over HTTP against real processes (`atelier serve` + one `atelier worker` on PostgreSQL and
Redis): every refused request answers 4xx with a JSON error within 5 s and stores nothing, the web
process's memory stays bounded over the whole corpus, stored files cannot become pages, and the worker
lives on. Plus the same defences at unit level on the Flask app (fast, every branch)."""

from __future__ import annotations

import concurrent.futures
import io
import json
import pickle
import struct
import time
import uuid
import zipfile
import zlib
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import requests
from PIL import Image
from sqlalchemy import create_engine, text

from tests.conftest import PG_ADMIN_URL, REDIS_URL, png_bytes
from tests.stack import Api, Proc, base_env, run_cli, wait_until

PNG_HTML = png_bytes(40, 30) + b"<html><body><script>document.title='pwned';alert(1)</script></body></html>"


# -- payloads (built once per session: some take a second) ------------------------------------------
@cache
def zero_png(side: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (side, side)).save(buf, format="PNG", compress_level=9)
    return buf.getvalue()


def header_bomb_png(w: int = 100_000, h: int = 100_000) -> bytes:
    """A PNG whose header claims w x h pixels (and no pixel data)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00" * 100)) + chunk(b"IEND", b""))


def zip_of(entries: dict[str, bytes], level: int = 6) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=level) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return buf.getvalue()


@cache
def many_zero_members_zip() -> bytes:
    """1,000 members of 1 MiB of zeros each: about 1 MB compressed, 1 GiB inflated."""
    zero = bytes(1 << 20)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        for i in range(1000):
            zf.writestr(f"trainA/z{i:04d}.bmp", zero)
    return buf.getvalue()


@cache
def two_gib_zip_bomb() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        with zf.open("trainA/big.bmp", "w", force_zip64=True) as fh:
            zero = bytes(1 << 20)
            for _ in range(2048):
                fh.write(zero)
    return buf.getvalue()


def symlink_zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        info = zipfile.ZipInfo("trainA/link.png")
        info.external_attr = (0o120777 << 16)  # a symbolic link to /etc/passwd
        zf.writestr(info, "/etc/passwd")
        zf.writestr("../../escape.png", png_bytes(64, 64))
        zf.writestr("/abs/evil.png", png_bytes(64, 64))
    return buf.getvalue()


def pickle_pth() -> bytes:
    class Boom:
        def __reduce__(self):  # type: ignore[no-untyped-def]
            return (print, ("unpickled!",))
    return pickle.dumps({"model.1.weight": Boom()})


def nested(depth: int) -> str:
    return '{"size": ' + "[" * depth + "]" * depth + "}"


def multipart_parts(n: int) -> tuple[bytes, str]:
    boundary = "b0undary"
    body = b"".join(f'--{boundary}\r\nContent-Disposition: form-data; name="f{i}"\r\n\r\nx\r\n'.encode()
                    for i in range(n)) + f"--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def content_file(data: bytes = b"", name: str = "photo.png", ctype: str = "image/png") -> tuple[str, tuple]:
    return ("content", (name, data or png_bytes(48, 32), ctype))


def style_file(data: bytes = b"", name: str = "style.png") -> tuple[str, tuple]:
    return ("style", (name, data or png_bytes(40, 40, (30, 90, 200)), "image/png"))


# -- the stack --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Api, dict[str, Any]]]:
    tmp = tmp_path_factory.mktemp("security")
    name = f"atelier_sec_{uuid.uuid4().hex[:8]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    db_url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    env = base_env(tmp, ATELIER_DATABASE_URL=db_url, ATELIER_BROKER_URL=f"{REDIS_URL}/11")
    import redis

    redis.Redis.from_url(f"{REDIS_URL}/11").flushdb()
    assert run_cli(["db", "upgrade"], env).returncode == 0
    procs = [Proc(["serve"], env, tmp / "serve.log"), Proc(["worker", "--name", "w1@%h"], env, tmp / "w1.log")]
    api = Api(int(env["ATELIER_PORT"]))
    try:
        wait_until(lambda: api.healthz()["workers"]["live"] == 1, 90, "a live worker", procs)
        yield api, {"procs": procs, "db_url": db_url, "files": tmp / "data" / "files", "env": env}
    finally:
        for p in procs:
            p.stop()
        with admin.connect() as conn:
            conn.execute(text(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"))
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        admin.dispose()


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def stored_counts(ctx: dict[str, Any]) -> tuple[int, int, int]:
    engine = create_engine(ctx["db_url"])
    with engine.connect() as conn:
        jobs = conn.execute(text("SELECT count(*) FROM jobs")).scalar_one()
        datasets = conn.execute(text("SELECT count(*) FROM datasets")).scalar_one()
        models = conn.execute(text("SELECT count(*) FROM models")).scalar_one()
    engine.dispose()
    return jobs, datasets, models


def refused_requests(base: str, port: int) -> list[tuple[str, dict[str, Any], set[int]]]:
    """(what, requests.request kwargs, acceptable statuses) for every input that must be refused."""
    jobs, datasets, models = f"{base}/api/v1/jobs", f"{base}/api/v1/datasets", f"{base}/api/v1/models"
    evil = f"evil.example:{port}"
    parts_body, parts_type = multipart_parts(20_000)
    style_params = {"size": 32, "steps": 5}

    def job_form(params: Any, files: list[tuple[str, tuple]], kind: str = "style_transfer") -> dict[str, Any]:
        return {"method": "POST", "url": jobs, "files": files,
                "data": {"kind": kind, "params": params if isinstance(params, str) else json.dumps(params)}}

    def dataset_form(payload: bytes, layout: str = "unpaired") -> dict[str, Any]:
        return {"method": "POST", "url": datasets, "data": {"layout": layout, "name": "x"},
                "files": [("file", ("set.zip", payload, "application/zip"))]}

    return [
        ("DNS rebinding: Host and Origin both evil.example",
         {**job_form(style_params, [content_file(), style_file()]),
          "headers": {"Host": evil, "Origin": f"http://{evil}"}}, {400}),
        ("DNS rebinding: a GET with Host evil.example", {"method": "GET", "url": jobs, "headers": {"Host": evil}}, {400}),
        ("cross-origin POST", {**job_form(style_params, [content_file(), style_file()]),
                               "headers": {"Origin": "http://evil.example"}}, {403}),
        ("30 all-zero 6000x6000 PNG styles", job_form(style_params, [content_file()] + [
            style_file(zero_png(6000), f"z{i}.png") for i in range(30)]), {413}),
        ("params nested 100,000 deep (multipart)", job_form(nested(100_000), [content_file(), style_file()]), {400}),
        ("params nested 100,000 deep (JSON body)",
         {"method": "POST", "url": jobs, "headers": {"Content-Type": "application/json"},
          "data": '{"kind": "style_transfer", "params": ' + nested(100_000) + "}"}, {400}),
        ("a 5,000-digit integer in multipart params",
         job_form('{"size": ' + "9" * 5000 + "}", [content_file(), style_file()]), {400}),
        ("a 45 MB string in params (multipart)", job_form({"size": "x" * 45_000_000}, [content_file(), style_file()]),
         {413}),
        ("a 45 MB string in params (JSON body)",
         {"method": "POST", "url": jobs, "json": {"kind": "style_transfer", "params": {"size": "x" * 45_000_000}}},
         {422}),
        ("20,000 form parts", {"method": "POST", "url": jobs, "data": parts_body,
                               "headers": {"Content-Type": parts_type}}, {413}),
        ("a non-image as content", job_form(style_params, [content_file(b"hello, not an image"), style_file()]), {415}),
        ("a truncated PNG", job_form(style_params, [content_file(png_bytes(64, 64)[:-40]), style_file()]), {422}),
        ("a PNG header claiming 100,000 x 100,000 pixels",
         job_form(style_params, [content_file(header_bomb_png()), style_file()]), {413}),
        ("a zip of 1,000 members of 1 MiB of zeros", dataset_form(many_zero_members_zip()), {413}),
        ("a 2 GiB zip bomb", dataset_form(two_gib_zip_bomb()), {413}),
        ("zip-slip, absolute and symlink members only", dataset_form(symlink_zip()), {422}),
        ("a dataset of 8 PNGs of 7900x7900", {
            "method": "POST", "url": datasets, "data": {"layout": "unpaired", "name": "huge"},
            "files": [("files", (f"{side}/{i}.png", zero_png(7900), "image/png"))
                      for side in ("trainA", "trainB") for i in range(4)]}, {413, 422}),
        ("a pickle-carrying .pth as a model", {"method": "POST", "url": models, "data": {"options": "{}"},
                                               "files": [("file", ("G_A.pth", pickle_pth(), "application/octet-stream"))]},
         {415, 422}),
        ("path traversal in an output URL", {"method": "GET", "url": f"{jobs}/nope/outputs/..%2F..%2Fetc%2Fpasswd"},
         {404}),
        ("an unknown job's input", {"method": "GET", "url": f"{jobs}/{'a' * 5000}/inputs/x.png"}, {404}),
    ]


@pytest.mark.integration
@pytest.mark.slow
def test_hostile_corpus_is_refused_quickly_stores_nothing_and_memory_stays_bounded(stack) -> None:  # type: ignore[no-untyped-def]
    api, ctx = stack
    serve_pid = ctx["procs"][0].popen.pid
    port = int(ctx["env"]["ATELIER_PORT"])
    cases = refused_requests(api.base, port)  # payloads are built before the first measurement
    before_counts = stored_counts(ctx)
    rss_before = rss_mb(serve_pid)
    for what, kwargs, statuses in cases:
        t0 = time.perf_counter()
        resp = requests.request(timeout=60, **kwargs)
        seconds = time.perf_counter() - t0
        assert resp.status_code in statuses, f"{what}: {resp.status_code} {resp.text[:300]}"
        assert seconds < 5, f"{what}: took {seconds:.1f} s"
        body = resp.json()
        assert {"error", "field"} <= set(body) <= {"error", "field", "errors"} and body["error"], f"{what}: {body}"
        assert len(resp.content) < 2000, f"{what}: the error is {len(resp.content)} bytes long"
        print(f"{what}: {resp.status_code} in {seconds:.2f} s, web RSS {rss_mb(serve_pid):.0f} MB")
    assert stored_counts(ctx) == before_counts, "a refused request stored something"
    jobs_dir = ctx["files"] / "jobs"
    assert not jobs_dir.exists() or not any(jobs_dir.iterdir())
    growth = rss_mb(serve_pid) - rss_before
    print(f"web RSS {rss_before:.0f} MB -> {rss_mb(serve_pid):.0f} MB over {len(cases)} hostile requests")
    assert growth < 300, f"the web process grew by {growth:.0f} MB"


@pytest.mark.integration
@pytest.mark.slow
def test_concurrent_heavy_requests_do_not_starve_other_requests(stack) -> None:  # type: ignore[no-untyped-def]
    api, _ = stack
    files = [content_file()] + [style_file(zero_png(6000), f"z{i}.png") for i in range(10)]

    def heavy() -> int:
        return requests.post(f"{api.base}/api/v1/jobs", files=files,
                             data={"kind": "style_transfer", "params": '{"size": 32, "steps": 5}'}, timeout=60).status_code

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(heavy) for _ in range(8)]
        t0 = time.perf_counter()
        kinds = requests.get(f"{api.base}/api/v1/kinds", timeout=30)
        waited = time.perf_counter() - t0
        statuses = [f.result() for f in futures]
    assert kinds.status_code == 200 and waited < 5, f"GET /api/v1/kinds waited {waited:.1f} s"
    assert statuses == [413] * 8


@pytest.mark.integration
@pytest.mark.slow
def test_stored_html_is_never_served_as_a_page_and_the_worker_lives_on(stack) -> None:  # type: ignore[no-untyped-def]
    api, ctx = stack
    job = api.submit("style_transfer", {"size": 32, "steps": 3},
                     [content_file(PNG_HTML, "<script>alert(1)</script>.html", "text/html"), style_file()])
    [inp] = [f for f in job["inputs"] if f["role"] == "content"]
    assert "<" not in inp["name"] and inp["content_type"] == "image/png"
    resp = api.get(inp["url"])
    assert resp.headers["Content-Type"] == "image/png"
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert "sandbox" in resp.headers["Content-Security-Policy"]
    page = api.get(f"/jobs/{job['id']}")
    assert "<script>alert(1)</script>" not in page.text and "script-src 'self'" in page.headers["Content-Security-Policy"]
    final, _ = api.follow(job["id"], 120, ctx["procs"])
    assert final["status"] == "succeeded", final
    assert ctx["procs"][1].popen.poll() is None, "the worker died"


# -- the same defences at unit level (Flask test client) --------------------------------------------
def post_job(client, params: Any = None, files: list[tuple[str, tuple]] | None = None, **kw: Any):  # type: ignore[no-untyped-def]
    data: dict[str, Any] = {"kind": "style_transfer",
                            "params": params if isinstance(params, str) else json.dumps(params or {"size": 32})}
    for field, (name, payload, ctype) in files if files is not None else [content_file(), style_file()]:
        data.setdefault(field, [])
        data[field].append((io.BytesIO(payload), name, ctype))
    return client.post("/api/v1/jobs", data=data, content_type="multipart/form-data", **kw)


def test_host_allow_list_comes_first(client) -> None:  # type: ignore[no-untyped-def]
    resp = client.get("/api/v1/kinds", headers={"Host": "evil.example"})
    assert resp.status_code == 400 and resp.get_json()["field"] == "Host"
    assert client.get("/", headers={"Host": "evil.example:8000"}).status_code == 400
    assert client.get("/api/v1/kinds", headers={"Host": "127.0.0.1:8000"}).status_code == 200
    assert client.get("/api/v1/kinds", headers={"Host": "[::1]:8000"}).status_code == 200


def test_origin_is_checked_against_the_allow_list_not_the_host(client) -> None:  # type: ignore[no-untyped-def]
    assert post_job(client, headers={"Origin": "http://evil.example"}).status_code == 403
    assert post_job(client, headers={"Origin": "null"}).status_code == 403
    assert post_job(client, headers={"Origin": "http://localhost:8000"}).status_code == 202


def test_every_response_has_a_strict_csp(client) -> None:  # type: ignore[no-untyped-def]
    for path in ("/", "/jobs", "/api/v1/kinds", "/healthz", "/no-such-page"):
        csp = client.get(path).headers["Content-Security-Policy"]
        assert "script-src 'self'" in csp and "object-src 'none'" in csp and "frame-ancestors 'none'" in csp
        assert "unsafe-inline" not in csp.split("script-src")[1].split(";")[0]


def test_uploads_are_typed_by_what_they_decode_to(client) -> None:  # type: ignore[no-untyped-def]
    resp = post_job(client, files=[content_file(PNG_HTML, "page.html", "text/html"), style_file()])
    assert resp.status_code == 202, resp.get_json()
    job = resp.get_json()
    [inp] = [f for f in job["inputs"] if f["role"] == "content"]
    assert inp["content_type"] == "image/png"
    served = client.get(inp["url"])
    assert served.headers["Content-Type"] == "image/png" and served.headers["X-Content-Type-Options"] == "nosniff"
    assert served.headers["Content-Disposition"].startswith("inline")
    assert client.get(inp["url"] + "?download=1").headers["Content-Disposition"].startswith("attachment")


def test_a_stored_non_image_type_is_served_as_an_attachment(client, services) -> None:  # type: ignore[no-untyped-def]
    from core.jobs import repository as repo

    job = post_job(client).get_json()
    with services.sessions.begin() as s:  # a row written before typing-by-decoding existed
        s.execute(text("UPDATE job_files SET content_type = 'text/html' WHERE job_id = :id"), {"id": job["id"]})
    row = repo.get_job(services.sessions, job["id"])
    served = client.get(f"/api/v1/jobs/{row.id}/inputs/{row.files[0].name}")
    assert served.headers["Content-Type"] == "application/octet-stream"
    assert served.headers["Content-Disposition"].startswith("attachment")


@pytest.mark.parametrize(("params", "needle"), [
    (nested(5000), "nested"),
    ('{"size": ' + "1" * 5000 + "}", "digits"),
    ('{"size": NaN}', "NaN"),
    ("[1, 2]", "object"),
    ("{not json", "not valid JSON"),
])
def test_json_the_parser_refuses_is_a_400_naming_params(client, params: str, needle: str) -> None:  # type: ignore[no-untyped-def]
    resp = post_job(client, params=params)
    assert resp.status_code == 400 and resp.get_json()["field"] == "params", resp.get_json()
    assert needle in resp.get_json()["error"]
    body = client.post("/api/v1/jobs", data='{"kind": "style_transfer", "params": ' + nested(5000) + "}",
                       content_type="application/json")
    assert body.status_code == 400


def test_messages_quote_at_most_100_characters_of_a_value(client) -> None:  # type: ignore[no-untyped-def]
    resp = client.post("/api/v1/jobs", json={"kind": "style_transfer", "params": {"size": "x" * 100_000}})
    assert resp.status_code == 422 and len(resp.get_json()["error"]) < 300
    resp = client.post("/api/v1/jobs", json={"kind": "k" * 100_000})
    assert resp.status_code == 422 and len(resp.get_json()["error"]) < 600


def test_413_names_the_limit_that_was_hit(client, app) -> None:  # type: ignore[no-untyped-def]
    app.config["MAX_FORM_PARTS"] = 50
    body, ctype = multipart_parts(200)
    resp = client.post("/api/v1/jobs", data=body, content_type=ctype)
    assert resp.status_code == 413 and "50 parts" in resp.get_json()["error"]
    resp = post_job(client, params={"size": "x" * (2 << 20)})
    assert resp.status_code == 413 and "text field" in resp.get_json()["error"]


def test_files_per_field_and_pixels_per_job_are_capped(client, app, services) -> None:  # type: ignore[no-untyped-def]
    services.settings = services.settings.with_overrides(max_files_per_field=3, max_job_pixels=100_000)
    resp = post_job(client, files=[content_file()] + [style_file() for _ in range(4)])
    assert resp.status_code == 413 and resp.get_json()["field"] == "style"
    assert "ATELIER_MAX_FILES_PER_FIELD" in resp.get_json()["error"]
    resp = post_job(client, files=[content_file(zero_png(400)), style_file()])
    assert resp.status_code == 413 and "ATELIER_MAX_JOB_PIXELS" in resp.get_json()["error"]


def test_healthz_warns_about_a_public_bind_without_an_allow_list(tmp_path: Path) -> None:
    from core import db
    from core.services import build_services
    from tests.conftest import RecordingCelery, make_settings
    from web import create_app

    settings = make_settings(tmp_path, host="0.0.0.0")
    db.upgrade(settings.resolved_database_url)
    app = create_app(services=build_services(settings), celery=RecordingCelery())
    exposure = app.test_client().get("/healthz").get_json()["exposure"]
    assert exposure["state"] == "warn" and "ATELIER_ALLOWED_HOSTS" in exposure["detail"]
    settings = make_settings(tmp_path, host="0.0.0.0", allowed_hosts=("atelier.example",))
    app = create_app(services=build_services(settings), celery=RecordingCelery())
    client = app.test_client()
    assert client.get("/healthz", headers={"Host": "atelier.example"}).get_json()["exposure"]["state"] == "ok"
    assert client.get("/healthz", headers={"Host": "other.example"}).status_code == 400
