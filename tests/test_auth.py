"""Identity and isolation (issue 12): tokens stored hashed, bearer auth on the API, a login and CSRF on the
pages, owners that cannot see each other's jobs, datasets and models (404, never 403), admins that see
everything, revocation that takes effect at once, and the refusal to serve auth-off on a public address.

Flask test client on SQLite, except the last test: the real stack (PostgreSQL, Redis, ``atelier serve``
and an ``atelier worker`` process) with auth on.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import text

from core import auth, db, resources
from core.errors import ConfigError
from core.jobs.runner import run_job
from core.kinds.gan import DEMO_PARAMS
from core.services import Services, build_services
from core.settings import load_settings
from tests.conftest import RecordingCelery, make_settings, png_bytes
from tests.fake_kind import echo_kind  # noqa: F401  (fixture)

pytestmark = pytest.mark.usefixtures("echo_kind")


class World:
    """An auth-on app with three tokens: owners ``alice`` and ``bob``, and an admin ``root``."""

    def __init__(self, app: Any, services: Services, tokens: dict[str, str]) -> None:
        self.app, self.services, self.tokens = app, services, tokens
        self.client: FlaskClient = app.test_client()

    def h(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[who]}"}

    def get(self, who: str, url: str) -> Any:
        return self.client.get(url, headers=self.h(who))

    def submit(self, who: str, **params: Any) -> dict[str, Any]:
        resp = self.client.post("/api/v1/jobs", headers=self.h(who), content_type="multipart/form-data",
                                data={"kind": "echo", "params": json.dumps(params),
                                      "image": (io.BytesIO(png_bytes(16, 12)), "cat.png")})
        assert resp.status_code == 202, resp.get_json()
        return resp.get_json()


@pytest.fixture()
def world(tmp_path: Path) -> Iterator[World]:
    from web import create_app

    settings = make_settings(tmp_path, auth="on")
    db.upgrade(settings.resolved_database_url)
    services = build_services(settings)
    tokens = {name: auth.create_token(services.sessions, name, admin=name == "root").token
              for name in ("alice", "bob", "root")}
    app = create_app(services=services, celery=RecordingCelery())
    app.config["TESTING"] = True
    yield World(app, services, tokens)
    services.close()


# -- tokens ---------------------------------------------------------------------------------------
def test_tokens_are_stored_only_as_hashes(world: World) -> None:
    token = world.tokens["alice"]
    assert re.fullmatch(r"atl_[A-Za-z0-9_-]{43}", token)
    with world.services.engine.connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(text("SELECT * FROM api_tokens"))]
    assert len(rows) == 3
    dumped = repr(rows)
    assert token not in dumped and token[4:] not in dumped, "the token itself is nowhere in the table"
    alice = next(r for r in rows if r["name"] == "alice")
    assert alice["token_hash"] == hashlib.sha256(token.encode()).hexdigest()
    assert token.startswith(alice["prefix"]) and len(alice["prefix"]) < 16 and not alice["admin"]
    assert len(alice["webhook_secret"]) >= 32
    with pytest.raises(Exception, match="exists already"):
        auth.create_token(world.services.sessions, "alice")
    with pytest.raises(Exception, match="token name"):
        auth.create_token(world.services.sessions, "bad name; drop")


def test_the_token_commands(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                            capsys: pytest.CaptureFixture[str]) -> None:
    from atelier.cli import main

    monkeypatch.setenv("ATELIER_DATA_DIR", str(tmp_path / "data"))
    assert main(["db", "upgrade"]) == 0
    capsys.readouterr()
    assert main(["token", "create", "ci", "--admin"]) == 0
    out, err = capsys.readouterr()
    token = out.splitlines()[0]
    assert token.startswith("atl_") and "shown only now" in err
    assert main(["token", "list"]) == 0
    listing = capsys.readouterr().out
    assert re.search(r"^ci\s+atl_\S+…\s+yes\s+\d{4}-", listing, re.M) and token not in listing
    assert main(["token", "revoke", "ci"]) == 0
    assert main(["token", "revoke", "ci"]) == 1, "nothing live to revoke"
    main(["token", "list"])
    assert re.search(r"^ci\s.*\s-\s+\d{4}-\d{2}-\d{2} \d{2}:\d{2}$", capsys.readouterr().out, re.M), "revoked time"


def test_settings_accept_only_known_auth_modes() -> None:
    assert load_settings({"ATELIER_AUTH": "on"}).auth_enabled
    assert not load_settings({"ATELIER_AUTH": "off-i-know"}).auth_enabled
    with pytest.raises(ConfigError, match="ATELIER_AUTH"):
        load_settings({"ATELIER_AUTH": "yes"})
    with pytest.raises(ConfigError, match="ATELIER_SECRET_KEY"):
        load_settings({"ATELIER_SECRET_KEY": "short"})


# -- binding --------------------------------------------------------------------------------------
def test_auth_off_on_a_public_address_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    from atelier.cli import main

    s = make_settings(tmp_path)
    assert auth.bind_refusal(s) is None, "the embedded default: loopback, auth off"
    assert auth.bind_refusal(s.with_overrides(host="::1")) is None
    assert auth.bind_refusal(s.with_overrides(host="0.0.0.0", auth="on")) is None
    assert auth.bind_refusal(s.with_overrides(host="0.0.0.0", auth="off-i-know")) is None
    message = auth.bind_refusal(s.with_overrides(host="0.0.0.0"))
    assert message and "ATELIER_AUTH=on" in message and "ATELIER_AUTH=off-i-know" in message
    monkeypatch.setenv("ATELIER_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("ATELIER_HOST", "0.0.0.0")
    for command in ("serve", "up"):
        assert main([command]) == 2
        err = capsys.readouterr().err
        assert "refusing to serve on 0.0.0.0" in err and "ATELIER_AUTH=off-i-know" in err
    assert not (tmp_path / "data" / "atelier.db").exists(), "refused before anything started"


def test_the_containers_serve_with_auth_on() -> None:
    """The image and the compose file bind 0.0.0.0, so they must turn auth on (else serve refuses)."""
    import yaml

    from tests.conftest import REPO_ROOT

    assert re.search(r"^\s+ATELIER_AUTH=on \\$", (REPO_ROOT / "Dockerfile").read_text(), re.M)
    compose = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())
    web = compose["services"]["web"]["environment"]
    assert web["ATELIER_HOST"] == "0.0.0.0" and web["ATELIER_AUTH"] == "on"
    assert "atelier token create admin --admin" in (REPO_ROOT / "docker-compose.yml").read_text()


# -- the API ----------------------------------------------------------------------------------------
def test_the_api_needs_a_valid_bearer_token(world: World) -> None:
    c = world.client
    resp = c.get("/api/v1/jobs")
    assert resp.status_code == 401 and resp.get_json()["field"] == "Authorization"
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    bad = c.get("/api/v1/jobs", headers={"Authorization": "Bearer atl_nope"})
    assert bad.status_code == 401 and 'error="invalid_token"' in bad.headers["WWW-Authenticate"]
    assert c.get("/api/v1/jobs", headers={"Authorization": f"Basic {world.tokens['alice']}"}).status_code == 401
    assert c.post("/api/v1/jobs", json={"kind": "echo"}).status_code == 401
    assert c.get("/api/v1/openapi.json").status_code == 200 and c.get("/healthz").status_code in (200, 503)
    assert world.get("alice", "/api/v1/jobs").status_code == 200
    spec = c.get("/api/v1/openapi.json").get_json()
    assert spec["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    assert "401" in spec["paths"]["/api/v1/jobs"]["get"]["responses"]
    health = spec["paths"]["/healthz"]["get"]
    assert health["security"] == [] and "401" not in health["responses"]


def test_owners_cannot_reach_each_other_s_jobs(world: World) -> None:
    done = world.submit("alice", steps=5)
    assert run_job(world.services, done["id"], "w").status == "succeeded"
    failed = world.submit("alice", outcome="fail")
    run_job(world.services, failed["id"], "w")
    queued = world.submit("alice")
    job = world.get("alice", f"/api/v1/jobs/{done['id']}").get_json()
    assert job["preview_url"] and job["outputs"] and job["inputs"]
    urls = [f"/api/v1/jobs/{done['id']}", job["outputs"][0]["url"], job["inputs"][0]["url"], job["preview_url"],
            f"/api/v1/jobs/{done['id']}/metrics", f"/api/v1/jobs/{done['id']}/events"]
    for url in urls:
        assert world.get("alice", url).status_code == 200, url
        assert world.get("root", url).status_code == 200, url
        resp = world.get("bob", url)
        assert resp.status_code == 404 and resp.get_json()["field"] in ("id", None), url
    assert world.get("bob", "/api/v1/jobs").get_json()["jobs"] == []
    assert {j["id"] for j in world.get("alice", "/api/v1/jobs").get_json()["jobs"]} == {
        done["id"], failed["id"], queued["id"]}
    assert len(world.get("root", "/api/v1/jobs").get_json()["jobs"]) == 3
    c, bob = world.client, world.h("bob")
    assert c.post(f"/api/v1/jobs/{queued['id']}/cancel", headers=bob).status_code == 404
    assert c.post(f"/api/v1/jobs/{failed['id']}/retry", headers=bob).status_code == 404
    assert c.delete(f"/api/v1/jobs/{done['id']}", headers=bob).status_code == 404
    assert world.get("alice", f"/api/v1/jobs/{queued['id']}").get_json()["status"] == "queued", "bob changed nothing"
    assert world.get("alice", f"/api/v1/jobs/{failed['id']}").get_json()["status"] == "failed"
    # an Idempotency-Key alice used is not a way for bob to read her job
    key = {"Idempotency-Key": "k-1"}
    data = {"kind": "echo", "params": "{}"}
    first = c.post("/api/v1/jobs", headers={**world.h("alice"), **key}, content_type="multipart/form-data",
                   data={**data, "image": (io.BytesIO(png_bytes(16, 12)), "cat.png")})
    again = c.post("/api/v1/jobs", headers={**bob, **key}, content_type="multipart/form-data",
                   data={**data, "image": (io.BytesIO(png_bytes(16, 12)), "cat.png")})
    assert first.status_code == 202 and again.status_code == 409 and first.get_json()["id"] not in again.get_data(True)
    # the workers view is for admins
    assert world.get("alice", "/api/v1/workers").status_code == 404
    assert world.get("root", "/api/v1/workers").status_code == 200


def test_owners_cannot_reach_or_use_each_other_s_datasets_and_models(world: World) -> None:
    c = world.client
    ds = c.post("/api/v1/datasets/demo", headers=world.h("alice"), json={"layout": "unpaired"}).get_json()
    src = world.services.settings.data_dir / "model-src"
    src.mkdir(parents=True)
    (src / "meta.json").write_text('{"netG": "resnet_9blocks"}')
    model = resources.add_model(world.services, name="m", family="cyclegan_train", source_dir=src,
                                meta={"netG": "resnet_9blocks"}, owner="alice")
    assert resources.get(world.services, "datasets", ds["id"]).owner == "alice"
    for url in (f"/api/v1/datasets/{ds['id']}", f"/api/v1/models/{model.id}", f"/api/v1/models/{model.id}/download"):
        assert world.get("alice", url).status_code == 200, url
        assert world.get("root", url).status_code == 200, url
        assert world.get("bob", url).status_code == 404, url
    assert world.get("bob", "/api/v1/datasets").get_json() == {"datasets": []}
    assert world.get("bob", "/api/v1/models").get_json() == {"models": []}
    assert [d["id"] for d in world.get("alice", "/api/v1/datasets").get_json()["datasets"]] == [ds["id"]]
    assert [m["id"] for m in world.get("root", "/api/v1/models").get_json()["models"]] == [model.id]
    assert c.delete(f"/api/v1/datasets/{ds['id']}", headers=world.h("bob")).status_code == 404
    assert c.delete(f"/api/v1/models/{model.id}", headers=world.h("bob")).status_code == 404
    # bob cannot train on alice's dataset or translate with her model: it answers like a missing one
    train = {"kind": "cyclegan_train", "params": {**DEMO_PARAMS, "dataset": ds["id"]}}
    refused = c.post("/api/v1/jobs", headers=world.h("bob"), json=train)
    missing = c.post("/api/v1/jobs", headers=world.h("bob"), json={**train, "params": {**DEMO_PARAMS, "dataset": "x"}})
    assert refused.status_code == missing.status_code == 422
    assert refused.get_json()["field"] == "dataset" and "there is no dataset" in refused.get_json()["error"]
    translate = c.post("/api/v1/jobs", headers=world.h("bob"), content_type="multipart/form-data",
                       data={"kind": "translate", "params": json.dumps({"model": model.id}),
                             "images": (io.BytesIO(png_bytes(16, 12)), "p.png")})
    assert translate.status_code == 422 and translate.get_json()["field"] == "model", translate.get_json()
    mine = c.post("/api/v1/jobs", headers=world.h("alice"), json=train)
    assert mine.status_code == 202, mine.get_json()
    assert world.get("bob", f"/api/v1/jobs/{mine.get_json()['id']}").status_code == 404


def test_a_revoked_token_is_refused_at_once(world: World) -> None:
    assert world.get("alice", "/api/v1/jobs").status_code == 200
    page = world.app.test_client()
    login(page, world.tokens["alice"])
    assert page.get("/jobs").status_code == 200
    assert auth.revoke_token(world.services.sessions, "alice") == 1
    assert world.get("alice", "/api/v1/jobs").status_code == 401
    assert page.get("/jobs").status_code == 303, "the page session ends with its token"
    assert world.get("bob", "/api/v1/jobs").status_code == 200


# -- pages ----------------------------------------------------------------------------------------
def csrf_of(page_html: str) -> str:
    m = re.search(r'name="csrf_token" value="([^"]+)"', page_html)
    assert m, "the page's forms carry a CSRF token"
    return m.group(1)


def login(client: FlaskClient, token: str, next_url: str = "/jobs") -> Any:
    form = client.get(f"/login?next={next_url}")
    return client.post("/login", data={"token": token, "next": next_url,
                                       "csrf_token": csrf_of(form.get_data(as_text=True))})


def test_pages_need_a_login_and_show_only_one_s_own(world: World) -> None:
    done = world.submit("alice", steps=5)
    run_job(world.services, done["id"], "w")
    theirs = world.submit("bob")
    c = world.app.test_client()
    resp = c.get("/jobs")
    assert resp.status_code == 303 and resp.headers["Location"].startswith("/login?next=/jobs")
    assert c.get("/static/style.css").status_code == 200 and c.get("/api/docs").status_code == 200
    form = c.get("/login")
    assert form.status_code == 200 and 'name="token"' in form.get_data(as_text=True)
    assert 'href="/workers"' not in form.get_data(as_text=True), "no one is logged in: no admin links"
    cookie = form.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Secure" not in cookie
    secure = world.app.test_client().get("/login", base_url="https://localhost")
    assert "Secure" in secure.headers["Set-Cookie"], "Secure when served over HTTPS"
    assert c.post("/login", data={"token": world.tokens["alice"]}).status_code == 400, "no CSRF token"
    assert login(c, "atl_wrong").status_code == 401
    ok = login(c, world.tokens["alice"], "//evil.example/x")
    assert ok.status_code == 303 and ok.headers["Location"] == "/", "only local redirects after login"
    listing = c.get("/jobs").get_data(as_text=True)
    assert done["id"] in listing and theirs["id"] not in listing
    assert c.get(f"/jobs/{done['id']}").status_code == 200
    page = c.get(f"/jobs/{theirs['id']}")
    assert page.status_code == 404
    token = csrf_of(c.get("/jobs").get_data(as_text=True))
    for action in ("cancel", "retry", "delete"):
        assert c.post(f"/jobs/{theirs['id']}/{action}", data={"csrf_token": token}).status_code == 404, action
    assert c.post(f"/jobs/{done['id']}/delete").status_code == 400, "a POST without the CSRF token"
    src = world.services.settings.data_dir / "src"
    src.mkdir(parents=True)
    (src / "meta.json").write_text("{}")
    for table in ("datasets", "models"):
        add = resources.add_dataset if table == "datasets" else resources.add_model
        kw = {"layout": "unpaired"} if table == "datasets" else {"family": "imported"}
        bobs = add(world.services, name=f"bob's {table}", source_dir=src, meta={}, owner="bob", **kw)
        mine = add(world.services, name=f"alice's {table}", source_dir=src, meta={}, owner="alice", **kw)
        listing = c.get(f"/{table}").get_data(as_text=True)
        assert mine.id in listing and bobs.id not in listing and "bob&#39;s" not in listing
        assert c.post(f"/{table}/{bobs.id}/delete", data={"csrf_token": token}).status_code == 404
        assert resources.get(world.services, table, bobs.id) is not None
    assert c.get("/workers").status_code == 404, "the workers page is for admins"
    # the pages' scripts use the session for the API; a change must come from this site
    assert c.get("/api/v1/jobs").status_code == 200
    assert c.post(f"/api/v1/jobs/{done['id']}/retry").status_code == 400, "no Origin and no X-CSRF-Token"
    assert c.delete(f"/api/v1/jobs/{done['id']}", headers={"Origin": "http://localhost"}).status_code == 204
    assert c.post("/logout", data={"csrf_token": token}).status_code == 303
    assert c.get("/jobs").status_code == 303
    admin = world.app.test_client()
    login(admin, world.tokens["root"])
    everything = admin.get("/jobs").get_data(as_text=True)
    assert theirs["id"] in everything and admin.get("/workers").status_code == 200


def test_csrf_guards_every_page_form_with_auth_off(app, services: Services) -> None:  # type: ignore[no-untyped-def]
    c = FlaskClient(app, app.response_class, use_cookies=True)  # a plain client: no token added for it
    home = c.get("/").get_data(as_text=True)
    token = csrf_of(home)
    data = {"content": (io.BytesIO(png_bytes()), "c.png"), "example_style": "starry_night.jpg"}
    assert c.post("/", data=dict(data), content_type="multipart/form-data").status_code == 400
    bad = {**data, "content": (io.BytesIO(png_bytes()), "c.png"), "csrf_token": "forged"}
    assert c.post("/", data=bad, content_type="multipart/form-data").status_code == 400
    from core.jobs import repository as repo

    assert repo.list_jobs(services.sessions)[0] == [], "nothing was submitted"
    ok = {**data, "content": (io.BytesIO(png_bytes()), "c.png"), "csrf_token": token}
    resp = c.post("/", data=ok, content_type="multipart/form-data")
    assert resp.status_code == 303, resp.get_data(as_text=True)[:500]
    job_page = c.get(resp.headers["Location"]).get_data(as_text=True)
    assert csrf_of(job_page) == token
    src = services.settings.data_dir / "src"
    src.mkdir(parents=True)
    (src / "meta.json").write_text("{}")
    ds = resources.add_dataset(services, name="d", layout="unpaired", source_dir=src, meta={})
    model = resources.add_model(services, name="m", family="imported", source_dir=src, meta={})
    job_id = resp.headers["Location"].rsplit("/", 1)[1]
    repo.request_cancel(services.sessions, job_id)
    checked = 0
    for path in ("/datasets", "/models", "/jobs", f"/jobs/{job_id}"):
        html = c.get(path).get_data(as_text=True)
        for form in re.findall(r"<form[^>]*method=\"post\"[^>]*>.*?</form>", html, re.S):
            if "data-api-form" not in form:  # forms the scripts send to the API (bearer/session + Origin)
                assert 'name="csrf_token"' in form, (path, form[:200])
                checked += 1
    assert checked >= 5, "delete forms of the dataset, the model and the job, the job's retry and cancel"
    for action in (f"/datasets/{ds.id}/delete", f"/models/{model.id}/delete", f"/jobs/{job_id}/delete"):
        assert c.post(action).status_code == 400, action
    assert resources.get(services, "datasets", ds.id) is not None
    assert repo.get_job(services.sessions, job_id).deleted_at is None


# -- the real stack ----------------------------------------------------------------------------------
def test_isolation_through_the_real_stack(tmp_path: Path, fresh_pg_url: str, redis_url: str) -> None:
    """``atelier serve`` + an ``atelier worker`` on PostgreSQL and Redis, auth on, alice's token from the CLI:
    alice's job runs on the worker; bob sees nothing of it; the admin does; revoking alice locks her out."""
    import requests

    from tests.stack import Api, Proc, base_env, run_cli, wait_until

    env = base_env(tmp_path, ATELIER_DATABASE_URL=fresh_pg_url, ATELIER_BROKER_URL=redis_url, ATELIER_AUTH="on")
    db.upgrade(fresh_pg_url)
    made = run_cli(["token", "create", "alice"], env, timeout=60)  # the CLI against PostgreSQL
    assert made.returncode == 0, made.stderr
    tokens = {"alice": made.stdout.splitlines()[0]}
    services = build_services(make_settings(tmp_path, database_url=fresh_pg_url))
    try:  # the other two in-process: each CLI start costs seconds on a busy machine
        tokens |= {name: auth.create_token(services.sessions, name, admin=name == "root").token
                   for name in ("bob", "root")}
    finally:
        services.close()
    procs = [Proc(["serve"], env, tmp_path / "serve.log"),
             Proc(["worker", "--name", "w1@%h"], env, tmp_path / "w1.log")]
    api = Api(int(env["ATELIER_PORT"]))

    def h(who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {tokens[who]}"}

    try:
        wait_until(lambda: api.healthz()["workers"]["live"] == 1, 90, "a live worker", procs)
        assert api.get("/api/v1/jobs").status_code == 401
        style = Path(__file__).resolve().parent.parent / "web" / "static" / "examples" / "styles"
        resp = requests.post(f"{api.base}/api/v1/jobs", headers=h("alice"), timeout=30,
                             data={"kind": "style_transfer", "params": json.dumps({"size": 32, "steps": 5})},
                             files=[("content", ("c.png", png_bytes(40, 30), "image/png")),
                                    ("style", ("s.jpg", next(style.glob("*.jpg")).read_bytes(), "image/jpeg"))])
        assert resp.status_code == 202, resp.text
        job_id = resp.json()["id"]
        final = wait_until(lambda: (j := api.get(f"/api/v1/jobs/{job_id}", headers=h("alice")).json())["status"]
                           in ("succeeded", "failed", "canceled") and j, 120, "alice's job to end", procs)
        assert final["status"] == "succeeded", final
        out = final["outputs"][0]["url"]
        assert api.get(out, headers=h("alice")).status_code == 200
        assert api.get(out, headers=h("bob")).status_code == 404
        assert api.get(f"/api/v1/jobs/{job_id}", headers=h("bob")).status_code == 404
        assert api.get("/api/v1/jobs", headers=h("bob")).json()["jobs"] == []
        assert [j["id"] for j in api.get("/api/v1/jobs", headers=h("root")).json()["jobs"]] == [job_id]
        assert api.get("/api/v1/workers", headers=h("bob")).status_code == 404
        assert api.get("/api/v1/workers", headers=h("root")).json()["workers"]
        revoker = build_services(make_settings(tmp_path, database_url=fresh_pg_url))
        try:
            assert auth.revoke_token(revoker.sessions, "alice") == 1
        finally:
            revoker.close()
        assert api.get(f"/api/v1/jobs/{job_id}", headers=h("alice")).status_code == 401
    finally:
        for p in procs:
            p.stop()


def test_metrics_need_an_admin_token_with_auth_on(world: World) -> None:
    """A Prometheus scraper authenticates with a bearer token (no login redirect); counts over every owner
    are for admins only."""
    assert world.client.get("/metrics").status_code == 401
    assert world.get("alice", "/metrics").status_code == 404
    resp = world.get("root", "/metrics")
    assert resp.status_code == 200 and b"atelier_jobs" in resp.data
