"""The job page's "run this job from a program" snippets say what the API takes: the curl command parses
(as a shell would) into the job's kind, parameters, submit fields and files, and the Python snippet is
valid Python whose parameters are the job's."""

from __future__ import annotations

import ast
import io
import json
import shlex
from typing import Any

import pytest

from tests.conftest import png_bytes
from tests.fake_kind import echo_kind  # noqa: F401  (fixture)
from web.snippets import curl_snippet, python_snippet

JOB = {"kind": "style_transfer", "params": {"size": 32, "note": "it's \"quoted\" $HOME", "flag": True, "none": None},
       "inputs": [{"role": "content", "name": "content-0-a b.png"}, {"role": "style", "name": "style-1-b.jpg"}],
       "priority": "high", "webhook": "https://example.com/h", "webhook_events": ["start", "completed"]}


def curl_args(snippet: str) -> list[str]:
    return shlex.split(snippet.replace("\\\n", " "))


def test_the_curl_command_carries_the_job() -> None:
    args = curl_args(curl_snippet(JOB, "http://127.0.0.1:8000/", auth=True))
    assert args[:4] == ["curl", "-X", "POST", "http://127.0.0.1:8000/api/v1/jobs"]
    assert "Authorization: Bearer $ATELIER_TOKEN" in args and "Prefer: wait=60" in args
    forms = [args[i + 1] for i, a in enumerate(args) if a == "-F"]
    fields = dict(f.split("=", 1) for f in forms)
    assert json.loads(fields["params"]) == JOB["params"]
    assert fields["kind"] == "style_transfer" and fields["priority"] == "high"
    assert fields["webhook_events"] == "start,completed" and fields["content"] == "@content-0-a b.png"
    body = curl_args(curl_snippet({"kind": "cyclegan_train", "params": {"dataset": "d"}, "inputs": []}, "http://h/",
                                  auth=False))
    assert json.loads(body[body.index("-d") + 1]) == {"kind": "cyclegan_train", "params": {"dataset": "d"}}
    assert not any("Authorization" in a for a in body)


def test_the_python_snippet_is_python_with_the_job_s_parameters() -> None:
    tree = ast.parse(python_snippet(JOB, "http://127.0.0.1:8000/", auth=True))
    assigned = {node.targets[0].id: node.value for node in tree.body if isinstance(node, ast.Assign)}
    assert ast.literal_eval(assigned["params"]) == JOB["params"]
    assert [ast.literal_eval(t.elts[0]) for t in assigned["files"].elts] == ["content", "style"]
    tree = ast.parse(python_snippet({"kind": "cyclegan_train", "params": {"dataset": "d"}, "inputs": []}, "http://h/",
                                    auth=False))
    assert "json=body" in ast.unparse(tree)


@pytest.mark.usefixtures("echo_kind")
def test_the_job_page_shows_both_with_copy_buttons(client) -> None:  # type: ignore[no-untyped-def]
    data = {"kind": "echo", "params": json.dumps({"steps": 7}), "image": (io.BytesIO(png_bytes()), "cat.png"),
            "webhook": "https://example.com/h"}
    job: dict[str, Any] = client.post("/api/v1/jobs", data=data, content_type="multipart/form-data").get_json()
    page = client.get(f"/jobs/{job['id']}").get_data(as_text=True)
    assert 'data-copy="snippet-curl"' in page and 'data-copy="snippet-python"' in page
    assert "-F &#39;image=@image-0-cat.png&#39;" in page and "&#34;steps&#34;:7" in page
    assert "Webhook deliveries" in page and "Nothing sent yet." in page
