"""What can be checked of the container set-up without a Docker engine: the compose file is valid YAML
with the services the design names, every command it runs is one the CLI accepts, and every path the
Dockerfile copies exists."""

from __future__ import annotations

import re

import yaml

from atelier.cli import build_parser
from tests.conftest import REPO_ROOT


def test_compose_services_and_commands() -> None:
    compose = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"postgres", "redis", "migrate", "web", "worker"} <= set(services)
    parser = build_parser()
    for name in ("migrate", "web", "worker"):
        svc = services[name]
        assert svc["build"] == "."
        cmd = svc["command"]
        assert cmd[0] == "atelier"
        parser.parse_args(cmd[1:])  # exits (SystemExit) if the CLI does not accept it
        env = svc["environment"]
        assert env["ATELIER_DATABASE_URL"].startswith("postgresql+psycopg://")
        assert env["ATELIER_BROKER_URL"].startswith("redis://")
    for name in ("web", "worker"):
        assert "data:/data" in services[name]["volumes"]  # shared storage
        assert services[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert services["worker"]["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]


def test_dockerfile_copies_existing_paths() -> None:
    text = (REPO_ROOT / "Dockerfile").read_text()
    sources = [src for line in re.findall(r"^COPY (.+)$", text, re.M) for src in line.split()[:-1]]
    assert sources
    for src in sources:
        assert (REPO_ROOT / src).exists(), src
    assert 'CMD ["atelier", "serve"]' in text
