"""The OpenAPI document, generated from the kinds' schemas (the same schemas that validate requests)."""

from __future__ import annotations

from typing import Any

from core.kinds.registry import job_kinds

ERROR = {"type": "object", "properties": {"error": {"type": "string"}, "field": {"type": "string", "nullable": True}},
         "required": ["error", "field"]}
JOB = {
    "type": "object",
    "properties": {
        "id": {"type": "string", "format": "uuid"}, "kind": {"type": "string"},
        "status": {"type": "string", "enum": ["queued", "running", "succeeded", "failed", "canceled"]},
        "progress": {"type": "number", "minimum": 0, "maximum": 1}, "step": {"type": "integer"},
        "total_steps": {"type": "integer"}, "error": {"type": "string", "nullable": True},
        "created_at": {"type": "string", "format": "date-time"},
        "started_at": {"type": "string", "format": "date-time", "nullable": True},
        "finished_at": {"type": "string", "format": "date-time", "nullable": True},
        "params": {"type": "object"}, "metrics": {"type": "object"},
        "outputs": {"type": "array", "items": {"type": "object", "properties": {
            "name": {"type": "string"}, "url": {"type": "string"}, "content_type": {"type": "string"},
            "size": {"type": "integer"}}}},
        "preview_url": {"type": "string", "nullable": True},
    },
}


def _err(desc: str) -> dict[str, Any]:
    return {"description": desc, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}


def openapi_spec() -> dict[str, Any]:
    kinds = job_kinds()
    schemas: dict[str, Any] = {"Error": ERROR, "Job": JOB}
    variants = []
    for k in kinds.values():
        name = "Params_" + k.name
        schemas[name] = k.schema.json_schema()
        props: dict[str, Any] = {"kind": {"type": "string", "enum": [k.name]},
                                 "params": {"type": "string", "description": f"JSON object: {name}"}}
        for i in k.inputs:
            file_schema = {"type": "string", "format": "binary", "description": i.help}
            props[i.role] = {"type": "array", "items": file_schema} if i.multiple else file_schema
        variants.append({"type": "object", "title": k.name, "properties": props,
                         "required": ["kind"] + [i.role for i in k.inputs if i.required]})
    job_ref = {"application/json": {"schema": {"$ref": "#/components/schemas/Job"}}}
    return {
        "openapi": "3.0.3",
        "info": {"title": "Atelier API", "version": "1"},
        "paths": {
            "/api/v1/jobs": {
                "post": {"summary": "Submit a job",
                         "requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {"oneOf": variants}},
                                                                       "application/json": {"schema": {"type": "object"}}}},
                         "responses": {"202": {"description": "accepted", "content": job_ref},
                                       "400": _err("malformed request"), "413": _err("too large"),
                                       "415": _err("unsupported file"), "422": _err("invalid parameter")}},
                "get": {"summary": "List jobs, newest first",
                        "parameters": [{"name": n, "in": "query", "schema": {"type": t}} for n, t in
                                       (("status", "string"), ("kind", "string"), ("limit", "integer"), ("cursor", "string"))],
                        "responses": {"200": {"description": "a page of jobs"}, "400": _err("bad query")}},
            },
            "/api/v1/jobs/{id}": {"get": {"summary": "One job", "parameters": [{"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}],
                                          "responses": {"200": {"description": "the job", "content": job_ref}, "404": _err("no such job")}}},
            "/api/v1/jobs/{id}/cancel": {"post": {"summary": "Cancel a job", "parameters": [{"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}],
                                                  "responses": {"202": {"description": "cancel requested", "content": job_ref}}}},
            "/api/v1/jobs/{id}/outputs/{name}": {"get": {"summary": "An output file", "parameters": [
                {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}},
                {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}],
                "responses": {"200": {"description": "the file"}, "404": _err("no such output")}}},
            "/api/v1/jobs/{id}/metrics": {"get": {"summary": "Metric series", "parameters": [{"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}],
                                                  "responses": {"200": {"description": "series"}}}},
            "/api/v1/kinds": {"get": {"summary": "Job kinds and their parameter schemas", "responses": {"200": {"description": "kinds"}}}},
            "/healthz": {"get": {"summary": "Database, broker and workers", "responses": {"200": {"description": "healthy"}, "503": {"description": "unhealthy"}}}},
        },
        "components": {"schemas": schemas},
    }
