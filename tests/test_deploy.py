"""What can be checked of the container set-up without a Docker engine: the compose file is valid against
the Compose Specification's JSON schema (the copy check-jsonschema ships and keeps current as its
``vendor.compose-spec`` builtin schema), has the services the design names, every command it runs is one the CLI accepts, every setting it
passes is one the services accept, and every path the Dockerfile copies exists."""

from __future__ import annotations

import json
import re
from importlib import resources
from typing import Any

import jsonschema
import yaml

from atelier.cli import build_parser
from core.settings import load_settings
from tests.conftest import REPO_ROOT

COMPOSE = REPO_ROOT / "docker-compose.yml"
_VAR = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::?-(?P<default>[^}]*))?\}")


def interpolate(value: Any, env: dict[str, str]) -> Any:
    """Compose's ``${VAR:-default}`` interpolation (``$$`` is a literal ``$``), over a loaded file."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if isinstance(value, str):
        escaped = value.replace("$$", "\0")
        return _VAR.sub(lambda m: env.get(m["name"]) or m["default"] or "", escaped).replace("\0", "$")
    return value


def compose(env: dict[str, str] | None = None) -> dict[str, Any]:
    return interpolate(yaml.safe_load(COMPOSE.read_text()), env or {})


def test_compose_file_is_valid_against_the_compose_specification() -> None:
    schema = json.loads(resources.files("check_jsonschema.builtin_schemas.vendor")
                        .joinpath("compose-spec.json").read_text(encoding="utf-8"))
    validator = jsonschema.validators.validator_for(schema, default=jsonschema.Draft7Validator)(schema)
    for env in ({}, {"ATELIER_WEB_WORKERS": "8", "ATELIER_STORAGE_URL": "s3://bucket/prefix"}):
        errors = sorted(validator.iter_errors(compose(env)), key=lambda e: list(e.path))
        assert not errors, "\n".join(f"{'/'.join(map(str, e.path))}: {e.message}" for e in errors)
    for path, bad in ((("web", "healthcheck", "interval"), 15),  # a duration is a string ("15s")
                      (("worker-gpu0", "deploy", "resources", "reservations", "devices"), [{"device_ids": ["0"]}]),
                      (("worker-cpu", "depends_on", "migrate", "condition"), "after_migrate")):
        broken = compose()
        target = broken["services"]
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = bad
        assert not validator.is_valid(broken), path  # the schema does check what the services say


def test_compose_services_and_commands() -> None:
    services = compose()["services"]
    expected = {"postgres", "redis", "migrate", "web", "worker-gpu0", "worker-gpu1", "worker-cpu", "flower"}
    assert expected <= set(services)
    parser = build_parser()
    atelier = [name for name, svc in services.items() if svc.get("build") == "."]
    assert set(atelier) == {"migrate", "web", "worker-gpu0", "worker-gpu1", "worker-cpu"}
    for name in atelier:
        svc = services[name]
        cmd = svc["command"]
        assert cmd[0] == "atelier"
        parser.parse_args(cmd[1:])  # exits (SystemExit) if the CLI does not accept it
        env = svc["environment"]
        assert env["ATELIER_DATABASE_URL"].startswith("postgresql+psycopg://")
        assert env["ATELIER_BROKER_URL"].startswith("redis://")
        load_settings(env)  # every ATELIER_* variable is a known setting with a valid value
    for name in atelier[1:]:
        assert "data:/data" in services[name]["volumes"]  # shared storage (or ATELIER_STORAGE_URL=s3://)
        assert services[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"


def test_web_runs_several_processes_with_a_health_check() -> None:
    web = compose()["services"]["web"]
    settings = load_settings(web["environment"])
    assert settings.web_workers > 1  # gunicorn, /metrics summed over the processes
    assert any("/healthz" in part for part in web["healthcheck"]["test"])
    assert load_settings(compose({"ATELIER_WEB_WORKERS": "2"})["services"]["web"]["environment"]).web_workers == 2


def test_gpu_workers_are_one_anchor_pinned_one_gpu_each_and_cpu_workers_scale() -> None:
    text = COMPOSE.read_text()
    assert re.search(r"^x-gpu-worker: &gpu-worker$", text, re.M)
    gpu = [name for name in compose()["services"] if name.startswith("worker-gpu")]
    assert len(gpu) >= 2 and len(re.findall(r"^    <<: \*gpu-worker$", text, re.M)) == len(gpu)
    services = compose()["services"]
    pinned = []
    for name in gpu:
        svc = services[name]
        [device] = svc["deploy"]["resources"]["reservations"]["devices"]
        assert device["capabilities"] == ["gpu"] and len(device["device_ids"]) == 1 and "count" not in device
        pinned.append(device["device_ids"][0])
        assert load_settings(svc["environment"]).device == "cuda"
        assert svc["healthcheck"]["test"][0] == "CMD-SHELL" and "inspect ping" in svc["healthcheck"]["test"][1]
    assert len(set(pinned)) == len(pinned)  # one worker per GPU
    nodes = [services[name]["command"][services[name]["command"].index("--name") + 1] for name in gpu]
    assert len(set(nodes)) == len(nodes)
    cpu = services["worker-cpu"]
    assert load_settings(cpu["environment"]).device == "cpu"
    assert "container_name" not in cpu and "ports" not in cpu and "deploy" not in cpu  # `--scale` can copy it
    assert cpu["command"][cpu["command"].index("--name") + 1].endswith("@%h")  # each replica its own node


def test_flower_is_optional_behind_a_profile() -> None:
    flower = compose()["services"]["flower"]
    assert flower["profiles"] == ["monitoring"]
    assert "flower" in flower["command"] and any(a.startswith("--broker=redis://") for a in flower["command"])
    assert all(p.startswith("127.0.0.1:") for p in flower["ports"])


def test_env_example_lists_only_what_compose_reads() -> None:
    lines = (REPO_ROOT / ".env.example").read_text().splitlines()
    names = {line.split("=", 1)[0] for line in lines if line and not line.startswith("#")}
    referenced = {m["name"] for m in _VAR.finditer(COMPOSE.read_text())}
    assert names and names <= referenced, names - referenced
    settings_env = {n: "x" for n in names}
    assert {"ATELIER_DATABASE_URL", "ATELIER_BROKER_URL", "ATELIER_STORAGE_URL", "ATELIER_WEB_WORKERS"} <= names
    # The ATELIER_* names it lists are settings, apart from the compose file's own knobs.
    compose_only = {"ATELIER_PUBLISH", "ATELIER_CPU_THREADS"}
    unknown = [n for n in settings_env if n.startswith("ATELIER_") and n not in compose_only
               and n not in load_settings.__globals__["_SPEC"]]
    assert not unknown, unknown


def test_dockerfile_copies_existing_paths() -> None:
    text = (REPO_ROOT / "Dockerfile").read_text()
    sources = [src for line in re.findall(r"^COPY (.+)$", text, re.M) for src in line.split()[:-1]]
    assert sources
    for src in sources:
        assert (REPO_ROOT / src).exists(), src
    assert 'CMD ["atelier", "serve"]' in text
