"""The server's OpenAPI 3 document, served at /api/openapi.json (and fuzzed by the tests)."""

from __future__ import annotations

from typing import Any

from diffgraph.engine.node import MODEL_KINDS

RUN_STATUSES = ["queued", "running", "succeeded", "failed", "cancelled"]


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


ERROR = {"default": _json(_ref("Error"), "An error: a 4xx for bad input, with a JSON body naming the problem")}
NULLABLE_STRING = {"type": "string", "nullable": True}
STRING_LIST = {"type": "array", "items": {"type": "string"}}
#: POST /api/runs' `options` (inline: schemathesis cannot generate through a $ref inside a request body)
RUN_OPTIONS = {
    "type": "object",
    "additionalProperties": False,
    "description": "POST /api/runs only (not with `sweep`): the run's speed and memory options, as `run --compile "
                   "--vram-budget GB`; what is left out is the server's own flags",
    "properties": {
        "compile": {"type": "boolean", "description": "torch.compile the denoiser (the first run of each size "
                                                      "compiles; later ones reuse it)"},
        "vram_budget": {"type": "number", "exclusiveMinimum": True, "minimum": 0, "maximum": 4096, "nullable": True,
                        "description": "CUDA: keep the GPU's peak under this many GiB by offloading (no effect "
                                       "on the CPU); null: no budget"},
    },
}

SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {"type": "string"},
            "errors": {"type": "array", "items": _ref("Issue")},
            "field": {"type": "string"},
        },
    },
    "Issue": {
        "type": "object",
        "required": ["node", "field", "message"],
        "properties": {"node": NULLABLE_STRING, "field": NULLABLE_STRING, "message": {"type": "string"}},
    },
    "Health": {
        "type": "object",
        "required": ["status", "version", "running", "worker", "problem"],
        "properties": {"status": {"type": "string", "enum": ["ok", "degraded"]}, "version": {"type": "string"},
                       "running": {**NULLABLE_STRING, "description": "id of the run executing now"},
                       "worker": {"type": "string", "enum": ["idle", "running", "retrying", "stopped"],
                                  "description": "retrying: the worker failed (a full disk, say) and retries"},
                       "problem": {**NULLABLE_STRING, "description": "why the worker is retrying or stopped"}},
    },
    "NodeEntry": {
        "type": "object",
        "required": ["type", "category", "inputs", "params", "outputs", "schema"],
        "properties": {
            "type": {"type": "string"}, "category": {"type": "string"}, "version": {"type": "integer"},
            "deterministic": {"type": "boolean"}, "output_node": {"type": "boolean"}, "doc": {"type": "string"},
            "inputs": {"type": "array", "items": {"type": "object", "description": "name, type, optional, doc, "
                                                   "accepts (source types a link may carry; * = any), colour"}},
            "params": {"type": "array", "items": {"type": "object", "description": "name, type, default, bounds, "
                                                   "choices, multiline, widget (upload | seed | model | model:<kind>), "
                                                   "accepts, "
                                                   "colour"}},
            "outputs": {"type": "array", "items": {"type": "object", "description": "name, type, doc, colour"}},
            "schema": {"type": "object", "description": "JSON schema of the node's params"},
        },
    },
    "WorkflowRequest": {
        "type": "object",
        "required": ["workflow"],
        "properties": {
            "workflow": {"description": "the workflow document (format diffgraph/v1) as an object, or its "
                                        "YAML/JSON text",
                         "oneOf": [{"type": "object"}, {"type": "string"}]},
            "params": {"type": "object", "description": "template param name -> value (like `--set`)"},
            "sweep": {"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": 16,
                      "description": "POST /api/runs only: `NAME=VALUES` items (0..9 or a,b,c), as `run --sweep`; "
                                     "each combination is queued as its own run (at most 1000)"},
            "zip": {"type": "boolean", "description": "pair the sweep's values instead of their product"},
            "options": RUN_OPTIONS,
        },
    },
    "Validation": {
        "type": "object",
        "required": ["valid", "errors"],
        "properties": {"valid": {"type": "boolean"}, "errors": {"type": "array", "items": _ref("Issue")},
                       "families": {"type": "object", "additionalProperties": {"type": "string"},
                                    "description": "when valid: loader node id -> the model family its files "
                                                   "declare (local models only)"}},
    },
    "Queued": {
        "type": "object",
        "required": ["id", "seq", "status"],
        "properties": {"id": {"type": "string"}, "seq": {"type": "integer"},
                       "status": {"type": "string", "enum": ["queued"]}},
    },
    "SweepQueued": {
        "type": "object",
        "required": ["sweep", "status", "runs"],
        "properties": {"sweep": {"type": "string"}, "status": {"type": "string", "enum": ["queued"]},
                       "runs": {"type": "array", "items": {
                           "type": "object", "required": ["id", "seq", "params"],
                           "properties": {"id": {"type": "string"}, "seq": {"type": "integer"},
                                          "params": {"type": "object"}}}}},
    },
    "RunSummary": {
        "type": "object",
        "required": ["id", "seq", "status", "created_at", "outputs", "executed", "cached", "seconds", "error"],
        "properties": {
            "id": {"type": "string"},
            "seq": {"type": "integer", "description": "submission order; the history cursor"},
            "status": {"type": "string", "enum": RUN_STATUSES},
            "name": NULLABLE_STRING,
            "params": {"type": "object"},
            "created_at": {"type": "string", "format": "date-time"},
            "started_at": {"type": "string", "format": "date-time", "nullable": True},
            "finished_at": {"type": "string", "format": "date-time", "nullable": True},
            "outputs": {"type": "object", "additionalProperties": STRING_LIST,
                        "description": "node id -> file names under /api/outputs/"},
            "executed": STRING_LIST,
            "cached": STRING_LIST,
            "seconds": {"type": "object", "additionalProperties": {"type": "number"},
                        "description": "node id -> seconds it took"},
            "error": NULLABLE_STRING,
            "failed_node": NULLABLE_STRING,
            "sweep": {**NULLABLE_STRING, "description": "the sweep this run is one combination of"},
            "options": {"type": "object", "description": "the speed and memory options it runs with: compile, "
                                                         "vram_budget"},
        },
    },
    "Run": {
        "allOf": [
            _ref("RunSummary"),
            {"type": "object", "required": ["workflow", "values"],
             "properties": {"workflow": {"type": "object"},
                            "values": {"type": "object", "description": "the workflow's plain `outputs:` values"}}},
        ],
    },
    "RunPage": {
        "type": "object",
        "required": ["runs", "next"],
        "properties": {"runs": {"type": "array", "items": _ref("RunSummary")},
                       "next": {"type": "integer", "nullable": True,
                                "description": "pass as `before` for the next (older) page; null at the end"}},
    },
    "CancelResult": {
        "type": "object",
        "required": ["id", "status"],
        "properties": {"id": {"type": "string"}, "status": {"type": "string", "enum": ["cancelled", "cancelling"]}},
    },
    "Upload": {
        "type": "object",
        "required": ["name", "format", "width", "height"],
        "properties": {"name": {"type": "string", "description": "use it as LoadImage's `image` on this server"},
                       "format": {"type": "string"}, "width": {"type": "integer"}, "height": {"type": "integer"}},
    },
    "Template": {
        "type": "object",
        "required": ["name", "file", "description", "params", "document"],
        "properties": {"name": {"type": "string"}, "file": {"type": "string"}, "description": NULLABLE_STRING,
                       "params": {"type": "object"}, "document": {"type": "object"}},
    },
    "SavedWorkflowInfo": {
        "type": "object",
        "required": ["name", "description", "created_at", "updated_at"],
        "properties": {"name": {"type": "string"}, "description": NULLABLE_STRING,
                       "created_at": {"type": "string", "format": "date-time"},
                       "updated_at": {"type": "string", "format": "date-time"}},
    },
    "SavedWorkflow": {
        "type": "object",
        "required": ["name", "document"],
        "properties": {"name": {"type": "string"}, "document": {"type": "object"}},
    },
}

RUN_ID = {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}
WORKFLOW_NAME = {"name": "name", "in": "path", "required": True,
                 "schema": {"type": "string", "pattern": "^[A-Za-z0-9_][A-Za-z0-9_.\\- ]{0,127}$"}}
WORKFLOW_BODY = {"required": True, "content": {"application/json": {"schema": _ref("WorkflowRequest")}}}


def document(version: str) -> dict[str, Any]:
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "diffgraph server",
            "version": version,
            "description": (
                "Queue, run and watch diffgraph workflows. When the server has a token (always when it "
                "listens beyond loopback), every route but /api/health needs it as `Authorization: Bearer`, "
                "`?token=` or the `diffgraph_token` cookie. State-changing requests carrying an Origin other "
                "than the server's own are refused with 403. History pages are newest first: pass `next` "
                "as `before` to get the following page."
            ),
        },
        "servers": [{"url": "/"}],
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "query": {"type": "apiKey", "in": "query", "name": "token"},
                "cookie": {"type": "apiKey", "in": "cookie", "name": "diffgraph_token"},
            },
        },
        "security": [{}, {"bearer": []}, {"query": []}, {"cookie": []}],
        "paths": {
            "/api/health": {"get": {"operationId": "health", "summary": "Liveness (never needs the token)",
                                    "security": [],
                                    "responses": {"200": _json(_ref("Health"), "The server is up"),
                                                  "503": _json(_ref("Health"), "Up, but the worker cannot run runs now"),
                                                  **ERROR}}},
            "/api/openapi.json": {"get": {"operationId": "openapi", "summary": "This document",
                                          "responses": {"200": _json({"type": "object"}, "OpenAPI 3"), **ERROR}}},
            "/api/nodes": {"get": {"operationId": "nodes", "summary": "The node catalog with a JSON schema per node",
                                   "responses": {"200": _json({"type": "array", "items": _ref("NodeEntry")},
                                                              "Every registered node type"), **ERROR}}},
            "/api/models": {"get": {"operationId": "models",
                                    "summary": "Models this server has without downloading (bundled, <data dir>/models, "
                                               "--model-dir, Hugging Face cache)",
                                    "parameters": [{"name": "kind", "in": "query", "required": False,
                                                    "description": "only models that are or hold this kind",
                                                    "schema": {"type": "string", "enum": list(MODEL_KINDS)}}],
                                    "responses": {"200": _json({"type": "object", "required": ["models"], "properties": {
                                        "models": {"type": "array", "items": {
                                            "type": "object", "required": ["name", "source", "kind", "kinds"],
                                            "properties": {"name": {"type": "string"}, "source": {"type": "string"},
                                                           "kind": {"type": "string"},
                                                           "kinds": {"type": "array", "items": {"type": "string"}}}}}}},
                                        "The models, by the name a model param takes"), **ERROR}}},
            "/api/validate": {"post": {"operationId": "validate", "summary": "Check a workflow without running it",
                                       "requestBody": WORKFLOW_BODY,
                                       "responses": {"200": _json(_ref("Validation"), "valid, or every problem"),
                                                     **ERROR}}},
            "/api/runs": {
                "post": {"operationId": "submitRun", "summary": "Validate and queue a run",
                         "requestBody": WORKFLOW_BODY,
                         "responses": {"202": _json({"oneOf": [_ref("Queued"), _ref("SweepQueued")]},
                                                    "Queued (a sweep: every combination)"), **ERROR}},
                "get": {"operationId": "listRuns", "summary": "Run history, newest first",
                        "parameters": [
                            {"name": "status", "in": "query", "required": False,
                             "schema": {"type": "string", "enum": RUN_STATUSES}},
                            {"name": "limit", "in": "query", "required": False,
                             "schema": {"type": "integer", "minimum": 1, "maximum": 500, "default": 50}},
                            {"name": "sweep", "in": "query", "required": False,
                             "description": "only the runs of this sweep", "schema": {"type": "string"}},
                            {"name": "before", "in": "query", "required": False,
                             "description": "cursor: only runs with a smaller seq (the previous page's `next`)",
                             "schema": {"type": "integer", "minimum": 1}},
                        ],
                        "responses": {"200": _json(_ref("RunPage"), "A page of runs"), **ERROR}},
            },
            "/api/runs/{id}": {"get": {"operationId": "getRun", "summary": "One run with its workflow and results",
                                       "parameters": [RUN_ID],
                                       "responses": {"200": _json(_ref("Run"), "The run"), **ERROR}}},
            "/api/runs/{id}/cancel": {"post": {
                "operationId": "cancelRun", "summary": "Cancel a queued or running run",
                "parameters": [RUN_ID],
                "responses": {"200": _json(_ref("CancelResult"), "Cancelled before it started"),
                              "202": _json(_ref("CancelResult"), "Running; it stops at the next step"),
                              **ERROR}}},
            "/api/outputs/{name}": {"get": {
                "operationId": "getOutput", "summary": "A file a run wrote (name relative to the outputs folder)",
                "parameters": [{"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}],
                "responses": {"200": {"description": "The file; images inline, anything else as an attachment",
                                      "content": {"image/*": {"schema": {"type": "string", "format": "binary"}},
                                                  "application/octet-stream": {
                                                      "schema": {"type": "string", "format": "binary"}}}},
                              **ERROR}}},
            "/api/uploads/{name}": {"get": {
                "operationId": "getUpload", "summary": "An uploaded image read back (the name POST /api/uploads gave)",
                "parameters": [{"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}],
                "responses": {"200": {"description": "The image, inline",
                                      "content": {"image/*": {"schema": {"type": "string", "format": "binary"}}}},
                              **ERROR}}},
            "/api/uploads": {"post": {
                "operationId": "upload", "summary": "Upload an image for LoadImage",
                "requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
                    "type": "object", "required": ["image"],
                    "properties": {"image": {"type": "string", "format": "binary"}}}}}},
                "responses": {"201": _json(_ref("Upload"), "Stored under a server-chosen name"), **ERROR}}},
            "/api/templates": {"get": {"operationId": "templates", "summary": "The shipped workflow templates",
                                       "responses": {"200": _json({"type": "array", "items": _ref("Template")},
                                                                  "Templates"), **ERROR}}},
            "/api/workflows": {"get": {"operationId": "listWorkflows", "summary": "The saved-workflow library",
                                       "responses": {"200": _json({"type": "array",
                                                                   "items": _ref("SavedWorkflowInfo")},
                                                                  "Saved workflows"), **ERROR}}},
            "/api/workflows/{name}": {
                "get": {"operationId": "getWorkflow", "parameters": [WORKFLOW_NAME],
                        "responses": {"200": _json(_ref("SavedWorkflow"), "The saved document"), **ERROR}},
                "put": {"operationId": "putWorkflow", "parameters": [WORKFLOW_NAME], "requestBody": WORKFLOW_BODY,
                        "responses": {
                            "200": _json({"type": "object", "required": ["name", "created"],
                                          "properties": {"name": {"type": "string"},
                                                         "created": {"type": "boolean"}}}, "Replaced"),
                            "201": _json({"type": "object", "required": ["name", "created"],
                                          "properties": {"name": {"type": "string"},
                                                         "created": {"type": "boolean"}}}, "Created"),
                            **ERROR}},
                "delete": {"operationId": "deleteWorkflow", "parameters": [WORKFLOW_NAME],
                           "responses": {"200": _json({"type": "object", "required": ["name", "deleted"],
                                                       "properties": {"name": {"type": "string"},
                                                                      "deleted": {"type": "boolean"}}}, "Deleted"),
                                         **ERROR}},
            },
            "/ws": {"get": {
                "operationId": "events",
                "summary": "WebSocket of run events",
                "description": (
                    "Upgrade to a WebSocket. `?run=<id>` follows one run (its current state arrives first as "
                    "a `run_status` message), no parameter follows every run. Text frames are JSON events "
                    "with `type` (run_queued, run_started, node_cached, node_started, progress, node_finished, "
                    "node_failed, run_finished, run_failed, run_cancelled) and `run_id`. Binary frames are "
                    "sampling previews: a 4-byte big-endian length N, N bytes of JSON header {type: preview, "
                    "run_id, node, step, total, format: jpeg}, then the JPEG bytes."
                ),
                "parameters": [{"name": "run", "in": "query", "required": False, "schema": {"type": "string"}}],
                "responses": {"101": {"description": "Switching to the WebSocket protocol"}, **ERROR}}},
            "/": {"get": {"operationId": "editor", "summary": "The browser editor (with a Content-Security-Policy)",
                          "responses": {"200": {"description": "HTML", "content": {"text/html": {
                              "schema": {"type": "string"}}}}, **ERROR}}},
            "/assets/{path}": {"get": {
                "operationId": "asset", "summary": "The editor's built assets",
                "parameters": [{"name": "path", "in": "path", "required": True, "schema": {"type": "string"}}],
                "responses": {"200": {"description": "A static file", "content": {"*/*": {
                    "schema": {"type": "string", "format": "binary"}}}}, **ERROR}}},
        },
    }
