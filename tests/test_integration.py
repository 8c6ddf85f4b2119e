"""End to end on real components: `atelier serve` and two `atelier worker` processes on PostgreSQL and
Redis; and `atelier up` (SQLite + file broker). Jobs are submitted over HTTP and followed to the end."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from tests.conftest import REPO_ROOT
from tests.stack import Api, Proc, base_env, run_cli, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CONTENT = REPO_ROOT / "web/static/examples/content/chelsea.png"  # 451x300
STYLE = REPO_ROOT / "web/static/examples/styles/starry_night.jpg"


def style_files() -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("content", ("chelsea.png", CONTENT.read_bytes(), "image/png")),
            ("style", ("starry.jpg", STYLE.read_bytes(), "image/jpeg"))]


def assert_png_of_size(data: bytes, size: tuple[int, int]) -> None:
    img = Image.open(io.BytesIO(data))
    assert img.format == "PNG"
    img.load()
    assert img.size == size


@pytest.fixture()
def distributed(request: pytest.FixtureRequest, tmp_path: Path, fresh_pg_url: str,
                redis_url: str) -> Iterator[tuple[Api, list[Proc], dict[str, str]]]:
    """`serve` and two workers. Storage: one shared data directory (``file``, the default), or S3 on the
    test's moto server (``s3``, via ``indirect`` parametrization) with a data directory of its own per
    process, so nothing can pass between them through the filesystem: three hosts, as far as files go."""
    backend = getattr(request, "param", "file")
    env = base_env(tmp_path, ATELIER_DATABASE_URL=fresh_pg_url, ATELIER_BROKER_URL=redis_url)
    envs = {name: env for name in ("serve", "w1", "w2")}
    if backend == "s3":
        server = request.getfixturevalue("s3_server")
        s3_env = server.env(server.new_bucket())
        envs = {name: {**env, **s3_env, "ATELIER_DATA_DIR": str(tmp_path / f"host-{name}")} for name in envs}
    migrated = run_cli(["db", "upgrade"], env)
    assert migrated.returncode == 0, migrated.stderr
    procs = [Proc(["serve"], envs["serve"], tmp_path / "serve.log"),
             Proc(["worker", "--name", "w1@%h"], envs["w1"], tmp_path / "w1.log"),
             Proc(["worker", "--name", "w2@%h"], envs["w2"], tmp_path / "w2.log")]
    api = Api(int(env["ATELIER_PORT"]))
    try:
        wait_until(lambda: api.healthz()["workers"]["live"] == 2, 90, "two live workers", procs)
        yield api, procs, envs["serve"]
        if backend == "s3":  # every artifact went through the object store: no host has a files/ directory
            assert not [p for p in tmp_path.glob("host-*/files")], "an S3 process wrote artifacts to its disk"
    finally:
        for p in procs:
            p.stop()


def kill_its_worker_and_follow(api: Api, procs: list[Proc], job_id: str, min_step: int
                               ) -> tuple[dict[str, Any], dict[str, Any]]:
    """Wait until the job is running at ``min_step`` or later, SIGKILL the worker running it, and follow the
    job to its end; it must succeed on the other worker, on attempt 2. Returns (job when killed, final)."""
    running = wait_until(lambda: (j := api.job(job_id))["status"] == "running" and j["step"] >= min_step and j,
                         120, f"the job to reach step {min_step}", procs)
    victim = next(p for p in procs[1:] if running["worker"].startswith(p.log_path.stem + "@"))
    victim.kill()
    final, _ = api.follow(job_id, 300, procs)
    assert final["status"] == "succeeded", final
    assert final["attempt"] == 2 and final["worker"] != running["worker"]
    return running, final


@pytest.mark.parametrize("distributed", ["file", "s3"], indirect=True)
def test_two_workers_run_jobs_from_http_to_png(distributed) -> None:  # type: ignore[no-untyped-def]
    api, procs, _env = distributed
    health = api.healthz()
    assert health["database"]["dialect"] == "postgresql" and health["broker"]["state"] == "ok"
    jobs = [api.submit("style_transfer", {"size": 48, "steps": 150, "seed": i}, style_files()) for i in range(2)]
    workers = set()
    for final, seen in api.follow_all([j["id"] for j in jobs], 240, procs).values():
        assert final["status"] == "succeeded", final
        assert any(0 < p < 1 for p in seen), f"no intermediate progress seen: {seen}"
        assert seen == sorted(seen)
        [out] = [o for o in final["outputs"] if o["name"] == "result.png"]
        resp = api.get(out["url"])
        assert resp.status_code == 200
        assert_png_of_size(resp.content, (48, 32))  # longest side 48, 300/451*48 = 31.9 -> 32
        assert final["preview_url"] and api.get(final["preview_url"]).status_code == 200
        assert final["metrics"]["loss"] > 0
        workers.add(final["worker"])
    assert workers == {w for w in workers if w.split("@")[0] in ("w1", "w2")} and len(workers) == 2


def test_a_killed_worker_s_job_is_finished_by_the_other(distributed, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    api, procs, _env = distributed
    job = api.submit("style_transfer", {"size": 64, "steps": 300}, style_files())
    _running, final = kill_its_worker_and_follow(api, procs, job["id"], min_step=1)
    assert any(o["name"] == "result.png" for o in final["outputs"])


@pytest.mark.parametrize("distributed", ["file", "s3"], indirect=True)
def test_a_killed_worker_s_training_resumes_from_its_checkpoint(distributed) -> None:  # type: ignore[no-untyped-def]
    """CycleGAN on the demo dataset, checkpointing every 10 iterations; the worker running it is killed
    after iteration 25. The other worker continues from the newest checkpoint (not from zero), the loss
    curves hold every iteration exactly once, and the finished job registers a model that translates."""
    api, procs, _env = distributed
    created = api.post("/api/v1/datasets/demo", json={"layout": "unpaired"})
    assert created.status_code == 201, created.text
    params = {"dataset": created.json()["id"], "name": "resumed", "size": 32, "iterations": 300,
              "netG": "resnet_6blocks", "ngf": 8, "ndf": 8, "checkpoint_every": 10}
    job = api.submit("cyclegan_train", params, [])
    running, final = kill_its_worker_and_follow(api, procs, job["id"], min_step=25)
    resumed = final["metrics"]["resumed_from"]
    assert resumed % 10 == 0 and 10 * (running["step"] // 10) <= resumed < 300, (resumed, running["step"])
    events = [e["message"] for e in api.get(f"/api/v1/jobs/{job['id']}/events").json()["events"]]
    assert any(f"at iteration {resumed} of 300" in m for m in events), events
    series = api.get(f"/api/v1/jobs/{job['id']}/metrics").json()["series"]
    assert series and all([s for s, _ in pts] == list(range(1, 301)) for pts in series.values())
    [model] = [m for m in api.get("/api/v1/models").json()["models"] if m["source_job_id"] == job["id"]]
    assert model["name"] == "resumed" and final["urls"]["translate"] == f"/new/translate?model={model['id']}"

    # the model translates photos over HTTP, in either direction, each at its own size
    translate = api.submit("translate", {"model": model["id"], "direction": "BtoA"},
                           [("images", ("chelsea.png", CONTENT.read_bytes(), "image/png")),
                            ("images", ("starry.jpg", STYLE.read_bytes(), "image/jpeg"))])
    done, _ = api.follow(translate["id"], 120, procs)
    assert done["status"] == "succeeded", done
    outputs = {o["name"]: o["url"] for o in done["outputs"]}
    assert set(outputs) == {"chelsea.png", "starry.png"}
    assert_png_of_size(api.get(outputs["chelsea.png"]).content, Image.open(CONTENT).size)
    assert_png_of_size(api.get(outputs["starry.png"]).content, Image.open(STYLE).size)


def test_cancel_a_running_job_keeps_its_preview(distributed) -> None:  # type: ignore[no-untyped-def]
    api, procs, _env = distributed
    job = api.submit("style_transfer", {"size": 64, "steps": 2000}, style_files())
    wait_until(lambda: api.job(job["id"])["preview_url"], 120, "a preview", procs)
    assert api.post(f"/api/v1/jobs/{job['id']}/cancel").status_code == 202
    final, _ = api.follow(job["id"], 30, procs)
    assert final["status"] == "canceled" and final["step"] < 2000
    assert api.get(final["preview_url"]).status_code == 200


def test_bad_input_over_http_stores_nothing(distributed) -> None:  # type: ignore[no-untyped-def]
    api, _procs, _env = distributed
    resp = api.post("/api/v1/jobs", data={"kind": "style_transfer", "params": "{}"},
                    files=[("content", ("x.png", b"not an image", "image/png")),
                           ("style", ("s.jpg", STYLE.read_bytes(), "image/jpeg"))])
    assert resp.status_code == 415 and resp.json()["field"] == "content"
    assert api.get("/api/v1/jobs").json()["jobs"] == []


def test_embedded_mode_runs_a_job(tmp_path: Path) -> None:
    env = base_env(tmp_path)
    up = Proc(["up"], env, tmp_path / "up.log")
    api = Api(int(env["ATELIER_PORT"]))
    try:
        wait_until(lambda: api.healthz()["workers"]["live"] == 1, 90, "the embedded worker", [up])
        assert api.healthz()["database"]["dialect"] == "sqlite"
        job = api.submit("style_transfer", {"size": 40, "steps": 60}, style_files())
        final, seen = api.follow(job["id"], 240, [up])
        assert final["status"] == "succeeded", final
        assert any(0 < p < 1 for p in seen), seen
        assert_png_of_size(api.get(final["outputs"][0]["url"]).content, (40, 27))
    finally:
        up.stop()
    assert (tmp_path / "data" / "atelier.db").exists()


@pytest.mark.parametrize("command", [["worker"], ["serve"]])
def test_unmigrated_database_is_refused(tmp_path: Path, fresh_pg_url: str, redis_url: str, command: list[str]) -> None:
    env = base_env(tmp_path, ATELIER_DATABASE_URL=fresh_pg_url, ATELIER_BROKER_URL=redis_url)
    result = run_cli(command, env, timeout=60)
    assert result.returncode == 2
    assert "atelier db upgrade" in result.stderr


def test_bad_setting_is_refused_with_the_variable_name(tmp_path: Path) -> None:
    result = run_cli(["serve"], base_env(tmp_path, ATELIER_PORT="eighty"), timeout=60)
    assert result.returncode == 2 and "ATELIER_PORT" in result.stderr
