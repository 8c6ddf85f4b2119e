"""A local S3-compatible server for the tests: moto in server mode, started once per session on a free
port (a real HTTP endpoint, so worker processes reach it exactly as they would reach MinIO or AWS)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

ACCESS_KEY, SECRET_KEY, REGION = "testing", "testing", "us-east-1"


@dataclass(frozen=True)
class S3Server:
    endpoint: str

    def client(self):  # type: ignore[no-untyped-def]
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, region_name=REGION, aws_access_key_id=ACCESS_KEY,
                            aws_secret_access_key=SECRET_KEY)

    def new_bucket(self) -> str:
        name = f"atelier-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return name

    def env(self, bucket: str, prefix: str = "artifacts") -> dict[str, str]:
        """The ``ATELIER_*`` settings of a process storing under ``s3://bucket/prefix`` on this server."""
        return {"ATELIER_STORAGE_URL": f"s3://{bucket}/{prefix}", "ATELIER_S3_ENDPOINT_URL": self.endpoint,
                "ATELIER_S3_REGION": REGION, "ATELIER_S3_ACCESS_KEY_ID": ACCESS_KEY,
                "ATELIER_S3_SECRET_ACCESS_KEY": SECRET_KEY, "ATELIER_S3_ADDRESSING_STYLE": "path"}


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    from moto.server import ThreadedMotoServer

    from tests.stack import free_port

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield S3Server(f"http://127.0.0.1:{port}")
    finally:
        server.stop()
