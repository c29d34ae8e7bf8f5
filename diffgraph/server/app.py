"""`diffgraph serve`: the aiohttp application, its routes and its start-up.

Routes (see /api/openapi.json): health, openapi, nodes, validate, runs (submit, list, get, cancel),
outputs, uploads, templates, the saved-workflow library and the /ws event stream. The data
directory holds `diffgraph.db` (SQLite, WAL), `uploads/`, `outputs/` and `cache/`.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import importlib
import io
import json
import logging
import mimetypes
import os
import signal
import sqlite3
import sys
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import HttpProcessingError

from diffgraph.engine import (
    DEFAULT_MAX_IMAGE_PIXELS,
    Cache,
    DiskCache,
    Executor,
    FileAccess,
    Issue,
    MemoryCache,
    ModelRoot,
    NodeRegistry,
    OptionError,
    RunOptions,
    WorkflowError,
    compile_workflow,
    default_registry,
    parse_document,
    read_document,
)
from diffgraph.engine.executor import check_device
from diffgraph.engine.node import MODEL_KINDS
from diffgraph.engine.plan import templates_dir
from diffgraph.settings import Settings

from . import openapi, sweeps
from .security import (
    RequestError,
    allowed_hosts,
    check_name,
    contained,
    error_middleware,
    headers_middleware,
    is_loopback,
    security_middleware,
)
from .store import STATUSES, DamagedDatabase, Store
from .worker import PREVIEWS_KEEP_FILES, Hub, Subscriber, Worker

log = logging.getLogger("diffgraph.server")

VERSION = "0.1.0"
MAX_JSON_BYTES = 16 * 1024 * 1024
MAX_PAGE = 500
WS_WRITE_BUFFER = 1024 * 1024
UPLOAD_FORMATS = {"PNG": "png", "JPEG": "jpg", "WEBP": "webp", "BMP": "bmp", "GIF": "gif", "TIFF": "tiff"}
#: inline-servable output types; anything else is sent as an attachment
IMAGE_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".webp": "image/webp",
               ".gif": "image/gif", ".bmp": "image/bmp"}
EDITOR_CSP = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
              "img-src 'self' data: blob:; connect-src 'self'; font-src 'self' data:; object-src 'none'; "
              "base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
USER_CONTENT_CSP = "default-src 'none'; sandbox"
STATIC_DIR = Path(__file__).resolve().parent / "static"
NOT_BUILT = """<!doctype html><html><head><meta charset="utf-8"><title>diffgraph</title></head>
<body><h1>diffgraph server</h1><p>The browser editor is not built. Build it with
<code>cd web &amp;&amp; npm ci &amp;&amp; npm run build</code>; the API is at
<a href="/api/openapi.json">/api/openapi.json</a>.</p></body></html>"""



class Config:
    def __init__(self, data_dir: Path, host: str, device: str, dtype: str, token: str | None,
                 settings: Settings, model_dirs: list[Path] | None = None, allow_downloads: bool = False,
                 max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS, options: RunOptions | None = None,
                 backend: str = "local"):
        self.settings = settings
        #: every run's speed and memory options unless its request says otherwise (serve's flags)
        self.options = options or RunOptions()
        self.backend = backend
        self.max_upload_bytes = settings.max_upload_bytes
        self.data_dir = data_dir
        self.host = host
        self.device = device
        self.dtype = dtype
        self.token = token
        self.uploads = data_dir / "uploads"
        self.outputs = data_dir / "outputs"
        self.cache = data_dir / "cache"
        self.models = data_dir / "models"
        for folder in (self.uploads, self.outputs, self.cache, self.models):
            folder.mkdir(parents=True, exist_ok=True)
        #: the folders whose models GET /api/models lists, by a name relative to them
        self.model_dirs = [(self.models, "data dir"), *((Path(folder), "model dir") for folder in model_dirs or [])]
        self.access = FileAccess.contained(self.uploads, server_model_roots(self.models, model_dirs or []),
                                           allow_downloads=allow_downloads, max_image_pixels=max_image_pixels)


def server_model_roots(data_models: Path, model_dirs: list[Path]) -> list[ModelRoot]:
    """Where a request's model params may point: the bundled models (also as `models/<name>`, as the
    templates name them), `<data dir>/models`, each `--model-dir`, and the Hugging Face hub cache."""
    from huggingface_hub.constants import HF_HUB_CACHE

    package = Path(__file__).resolve().parent.parent
    bundled = package / "models"
    roots = [ModelRoot(package, bundled, "<bundled models>"), ModelRoot(bundled, bundled, "<bundled models>"),
             ModelRoot(data_models, data_models, "<data dir>/models")]
    roots += [ModelRoot(folder, folder, f"<model dir {number}>") for number, folder in enumerate(model_dirs, 1)]
    roots.append(ModelRoot(Path(HF_HUB_CACHE), Path(HF_HUB_CACHE), "<hub cache>"))
    return roots


STORE = web.AppKey("store", Store)
WORKER = web.AppKey("worker", Worker)
HUB = web.AppKey("hub", Hub)
REGISTRY = web.AppKey("registry", NodeRegistry)
CONFIG = web.AppKey("config", Config)
VALIDATOR = web.AppKey("validator", ThreadPoolExecutor)
STORE_THREAD = web.AppKey("store_thread", ThreadPoolExecutor)


# ---------------------------------------------------------------------------------------------
# request helpers


async def read_json_object(request: web.Request) -> dict[str, Any]:
    if request.content_length is not None and request.content_length > MAX_JSON_BYTES:
        raise RequestError(413, f"request body too large (limit {MAX_JSON_BYTES} bytes)")
    try:
        raw = await request.read()
    except (web.RequestPayloadError, HttpProcessingError):
        raise RequestError(400, unreadable_body(request)) from None
    if len(raw) > MAX_JSON_BYTES:
        raise RequestError(413, f"request body too large (limit {MAX_JSON_BYTES} bytes)")
    try:
        # parsing up to MAX_JSON_BYTES is blocking work: off the event loop
        body = await off_loop(request.app, _parse_json, raw)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise RequestError(400, f"request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise RequestError(400, "request body must be a JSON object")
    return body


def unreadable_body(request: web.Request) -> str:
    """The message for a body that cannot be read. The rest of that body cannot be read either: the
    connection closes after the answer, and aiohttp is told not to drain it (it would log a traceback)."""
    request.protocol.close()
    request.content.feed_eof()
    encoding = request.headers.get("Content-Encoding")
    if encoding:
        return (f"the request body could not be decoded as Content-Encoding {encoding[:40]!r}: send it "
                "compressed that way, or without the header")
    return "the request body could not be read (its length or chunking is malformed)"
def _parse_json(raw: bytes) -> Any:
    return json.loads(raw.decode("utf-8"), object_pairs_hook=_unique_keys)


async def off_loop(app: web.Application, function: Any, *args: Any) -> Any:
    """Run blocking work (parsing, validation with file fingerprints, planning, decoding) on the
    validation thread, so the event loop keeps answering health, status and WebSocket clients."""
    return await asyncio.get_running_loop().run_in_executor(app[VALIDATOR], function, *args)


async def in_store(app: web.Application, function: Any, *args: Any) -> Any:
    """Run a Store call on the store thread: it may wait for the worker's hold on the database or
    for the disk (a commit that checkpoints the WAL), and the event loop must not. One thread keeps
    the calls in the order the handlers made them (runs are queued in the order they were sent)."""
    return await asyncio.get_running_loop().run_in_executor(app[STORE_THREAD], function, *args)


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """Like workflow files, a request may not repeat a key (the last one would silently win)."""
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate key {key!r}")
        result[key] = value
    return result


def workflow_from(body: dict[str, Any]) -> dict[str, Any]:
    """The `workflow` field: a document object (or its YAML/JSON text), checked like a file would be."""
    raw = body.get("workflow")
    if isinstance(raw, dict):
        try:
            text = json.dumps(raw, ensure_ascii=False, allow_nan=False)
        except (ValueError, RecursionError):
            issue = Issue(None, None, "the document holds a non-finite number or is nested too deeply")
            raise RequestError(400, "invalid workflow", errors=[issue.to_dict()]) from None
        fmt = "json"
    elif isinstance(raw, str):
        text, fmt = raw, None
    else:
        raise RequestError(400, "field 'workflow' is required: the workflow document as a JSON object",
                           field="workflow")
    try:
        return parse_document(text, fmt)
    except WorkflowError as exc:
        raise RequestError(400, "invalid workflow", errors=[i.to_dict() for i in exc.issues]) from None


def params_from(body: dict[str, Any]) -> dict[str, Any]:
    params = body.get("params")
    if params is None:
        return {}
    if not isinstance(params, dict):
        raise RequestError(400, "field 'params' must be an object of template param name -> value", field="params")
    return params


def library_resolver(store: Store, record: dict[str, Any] | None = None,
                     snapshot: dict[str, Any] | None = None):
    """`workflow:<name>` inside a submitted workflow: a saved workflow, else a shipped template.
    Never a file path: a request may not make the server read arbitrary files.

    At submit, `record` collects what each name resolved to (the run stores it); the worker then
    resolves from that `snapshot` only, so a library entry replaced after submit does not change
    what runs: the run executes the document that was validated."""

    def resolve(ref: str, base: Path | None) -> tuple[dict[str, Any], Path]:
        if snapshot is not None:
            entry = snapshot.get(ref)
            if entry is None:
                raise WorkflowError([Issue(None, None, f"subgraph {ref!r} was not resolved when the run was submitted")])
            return entry["document"], Path(entry["path"])
        if record is not None and ref in record:  # one name, one document, even if the library changes meanwhile
            return record[ref]["document"], Path(record[ref]["path"])
        try:
            check_name(ref, "subgraph workflow")
        except RequestError as exc:
            raise WorkflowError([Issue(None, None, exc.message)]) from None
        saved = store.get_workflow(ref)
        if saved is not None:
            document, path = saved, Path(f"/library/{ref}")
        else:
            for suffix in (".yaml", ".yml", ".json"):
                candidate = templates_dir() / f"{ref}{suffix}"
                if candidate.is_file():
                    document, path = read_document(candidate), candidate.resolve()
                    break
            else:
                raise WorkflowError([Issue(None, None, f"no saved workflow or template named {ref!r}")])
        if record is not None:
            record[ref] = {"document": document, "path": str(path)}
        return document, path

    return resolve


def compile_checked(app: web.Application, document: dict[str, Any], params: dict[str, Any],
                    record: dict[str, Any] | None = None, snapshot: dict[str, Any] | None = None):
    try:
        return compile_workflow(document, app[REGISTRY], params,
                                resolver=library_resolver(app[STORE], record, snapshot), access=app[CONFIG].access)
    except WorkflowError:
        raise
    except (RecursionError, TypeError, ValueError, AttributeError, KeyError, IndexError) as exc:
        # a gap in the engine's checks must still be the client's 4xx, not a 500
        log.warning("validation raised %s", exc, exc_info=True)
        raise WorkflowError([Issue(None, None, f"workflow could not be validated: {exc}")]) from None


async def compile_off_loop(app: web.Application, document: dict[str, Any], params: dict[str, Any],
                           record: dict[str, Any] | None = None):
    """Validation is CPU work; a thread keeps the loop free to answer health and status meanwhile."""
    return await off_loop(app, compile_checked, app, document, params, record)


# ---------------------------------------------------------------------------------------------
# routes

routes = web.RouteTableDef()


@routes.get("/api/health")
async def health(request: web.Request) -> web.Response:
    """200 while the worker can run runs; 503 (`degraded`) while it retries a failure (a full disk, say)
    or is not running, with the reason."""
    worker: Worker = request.app[WORKER]
    state, problem = worker.state
    healthy = state in ("idle", "running")
    return web.json_response({"status": "ok" if healthy else "degraded", "version": VERSION,
                              "running": worker.current_run, "worker": state, "problem": problem},
                             status=200 if healthy else 503)


@routes.get("/api/openapi.json")
async def openapi_document(request: web.Request) -> web.Response:
    return web.json_response(openapi.document(VERSION))


@routes.get("/api/nodes")
async def nodes(request: web.Request) -> web.Response:
    return web.json_response(request.app[REGISTRY].catalog())


@routes.get("/api/models")
async def models(request: web.Request) -> web.Response:
    """The models this server has without downloading: what the editor offers for model params;
    `?kind=` only those of one kind (a param's `model:<kind>` widget hint)."""
    kind = request.query.get("kind")
    if kind is not None and kind not in MODEL_KINDS:
        raise RequestError(400, f"unknown model kind {_shown(kind)}; use one of {', '.join(MODEL_KINDS)}",
                           field="kind")
    # the node pack knows what model files are; imported by name like every node pack (no static tie)
    known_models = importlib.import_module("diffgraph.nodes.model_kinds").known_models
    found = await asyncio.to_thread(known_models, request.app[CONFIG].model_dirs, kind)
    return web.json_response({"models": found})


@routes.post("/api/validate")
async def validate(request: web.Request) -> web.Response:
    body = await read_json_object(request)
    try:
        document = await off_loop(request.app, workflow_from, body)
        plan = await compile_off_loop(request.app, document, params_from(body))
    except RequestError as exc:
        if "errors" not in exc.extra:
            raise
        return web.json_response({"valid": False, "errors": exc.extra["errors"]})
    except WorkflowError as exc:
        return web.json_response({"valid": False, "errors": [i.to_dict() for i in exc.issues]})
    return web.json_response({"valid": True, "errors": [], "families": await off_loop(request.app, loader_families, plan)})


def loader_families(plan: Any) -> dict[str, str]:
    """The model family of each loader node whose model validation can tell from its files (the editor
    shows it on the node); loaders of hub ids or linked models are left out (their run says)."""
    # the node pack knows the families; imported by name like every node pack (no static tie)
    family_of_loader = importlib.import_module("diffgraph.nodes.modular").family_of_loader
    found = {}
    for node_id, node in plan.nodes.items():
        family = family_of_loader((node.type, node.params, ""), plan.access)
        if family is not None:
            found[node_id] = family.name
    return found


@routes.post("/api/runs")
async def submit_run(request: web.Request) -> web.Response:
    body = await read_json_object(request)
    document, params = await off_loop(request.app, workflow_from, body), params_from(body)
    options = options_from(request.app, body)
    subgraphs: dict[str, Any] = {}
    if (sweep := sweeps.sweep_from(body)) is not None:
        if "options" in body:
            raise RequestError(400, "field 'options' does not apply to a sweep yet (sweeps run eager): leave it "
                                    "out, or submit the runs one by one", field="options")
        return await submit_sweep(request, document, params, *sweep)
    try:
        await compile_off_loop(request.app, document, params, subgraphs)
    except WorkflowError as exc:
        raise RequestError(400, "invalid workflow", errors=[i.to_dict() for i in exc.issues]) from None
    app, loop = request.app, asyncio.get_running_loop()

    def announce(run: dict[str, Any]) -> None:  # on the store thread, before the worker can claim the run
        app[HUB].publish_event_threadsafe(loop, {"type": "run_queued", "run_id": run["id"], "seq": run["seq"],
                                                 "name": run["name"]})

    run = await in_store(app, app[STORE].add_run, document, params, subgraphs, announce, options)
    app[WORKER].wake()
    return web.json_response({"id": run["id"], "seq": run["seq"], "status": "queued"}, status=202)


def options_from(app: web.Application, body: dict[str, Any]) -> dict[str, Any]:
    """A request's `options` (compile, vram_budget) over the server's flags: what the run stores and
    runs with, whatever the flags of a server that runs it after a restart."""
    try:
        options = RunOptions.from_json(body.get("options"), app[CONFIG].options)
    except OptionError as exc:
        raise RequestError(400, f"field '{exc.field}': {exc.message}", field=exc.field) from None
    if app[CONFIG].backend == "ray" and options != app[CONFIG].options:
        raise RequestError(400, "field 'options': runs on the Ray backend take the server's options only",
                           field="options")
    return options.to_json()


async def submit_sweep(request: web.Request, document: dict[str, Any], params: dict[str, Any],
                       arguments: list[str], zipped: bool) -> web.Response:
    app = request.app

    subgraphs: dict[str, Any] = {}  # what the runs will execute: the subgraphs as validated now

    def plan_all() -> list[dict[str, Any]]:
        return sweeps.sweep_params(app[REGISTRY], lambda values: compile_checked(app, document, values, subgraphs),
                                   document, params, arguments, zipped)

    try:
        combinations = await asyncio.get_running_loop().run_in_executor(app[VALIDATOR], plan_all)
    except WorkflowError as exc:
        raise sweeps.invalid_sweep(exc) from None
    loop = asyncio.get_running_loop()

    def announce(sweep_id: str, runs: list[dict[str, Any]]) -> None:  # as in submit_run
        for run in runs:
            app[HUB].publish_event_threadsafe(loop, {"type": "run_queued", "run_id": run["id"], "seq": run["seq"],
                                                     "name": run["name"], "sweep": sweep_id})

    sweep_id, runs = await in_store(app, app[STORE].add_sweep, document, combinations, subgraphs, announce)
    app[WORKER].wake()
    return web.json_response({"sweep": sweep_id, "status": "queued",
                              "runs": [{"id": run["id"], "seq": run["seq"], "params": run["params"]} for run in runs]},
                             status=202)


def _int_query(request: web.Request, name: str, default: int | None, low: int, high: int) -> int | None:
    text = request.query.get(name)
    if text is None or text == "":
        return default
    try:
        value = int(text)
    except ValueError:
        raise RequestError(400, f"query parameter {name!r} must be an integer, got {text!r}", field=name) from None
    if not low <= value <= high:
        raise RequestError(400, f"query parameter {name!r} must be between {low} and {high}", field=name)
    return value


@routes.get("/api/runs")
async def list_runs(request: web.Request) -> web.Response:
    status = request.query.get("status") or None
    if status is not None and status not in STATUSES:
        raise RequestError(400, f"status must be one of {', '.join(STATUSES)}", field="status")
    limit = _int_query(request, "limit", 50, 1, MAX_PAGE) or 50
    before = _int_query(request, "before", None, 1, 2**62)
    sweep = request.query.get("sweep") or None
    store = request.app[STORE]

    def page() -> str:  # a page of up to 500 runs: encoded on the store thread too
        runs, next_cursor = store.list_runs(status, limit, before, sweep)
        return json.dumps({"runs": runs, "next": next_cursor})

    return web.json_response(text=await in_store(request.app, page))


async def _run_or_404(request: web.Request) -> dict[str, Any]:
    run = await in_store(request.app, request.app[STORE].get_run, request.match_info["id"])
    if run is None:
        raise RequestError(404, f"no run with id {request.match_info['id']!r}")
    return run


@routes.get("/api/runs/{id}")
async def get_run(request: web.Request) -> web.Response:
    return web.json_response(await _run_or_404(request))


@routes.post("/api/runs/{id}/cancel")
async def cancel_run(request: web.Request) -> web.Response:
    run = await _run_or_404(request)
    outcome = await in_store(request.app, request.app[WORKER].cancel, run["id"])
    if outcome == "cancelled":
        request.app[HUB].publish_event({"type": "run_cancelled", "run_id": run["id"], "status": "cancelled"})
        return web.json_response({"id": run["id"], "status": "cancelled"})
    if outcome == "cancelling":
        return web.json_response({"id": run["id"], "status": "cancelling"}, status=202)
    current = await in_store(request.app, request.app[STORE].get_run, run["id"]) or run
    raise RequestError(409, f"run {run['id']} is already {current['status']}", run_status=current["status"])


@routes.get("/api/outputs/{name:.+}")
async def get_output(request: web.Request) -> web.StreamResponse:
    return user_file(request.app[CONFIG].outputs, request.match_info["name"], "output")


@routes.get("/api/uploads/{name:.+}")
async def get_upload(request: web.Request) -> web.StreamResponse:
    """An uploaded picture read back (the editor's thumbnails after a reload)."""
    config = request.app[CONFIG]
    return user_file(config.uploads, request.match_info["name"], "upload", max_bytes=config.max_upload_bytes)


def user_file(root: Path, name: str, what: str, max_bytes: int | None = None) -> web.StreamResponse:
    """A regular file inside `root`, sandboxed: images inline, anything else as an attachment. A
    hidden name (a file still being written), a missing one and anything but a regular file (or one
    larger than `max_bytes`) all get the same 404, so a request learns nothing about what exists."""
    path = contained(root, name)
    missing = RequestError(404, f"no {what} named {_shown(name)}")
    if any(part.startswith(".") for part in name.split("/")) or not regular_file(path):
        raise missing
    try:
        if max_bytes is not None and path.stat().st_size > max_bytes:
            raise missing
    except OSError:
        raise missing from None
    content_type = IMAGE_TYPES.get(path.suffix.lower())
    headers = {"Content-Security-Policy": USER_CONTENT_CSP, "X-Content-Type-Options": "nosniff"}
    if content_type is None:
        content_type = "application/octet-stream"
        headers["Content-Disposition"] = f'attachment; filename="{_ascii_name(path.name)}"'
    else:
        headers["Content-Disposition"] = f'inline; filename="{_ascii_name(path.name)}"'
    response = web.FileResponse(path, headers=headers)
    response.content_type = content_type
    return response


def regular_file(path: Path) -> bool:
    """True for a regular file; False for anything else, including names the file system refuses
    (longer than its limit: "File name too long"), which no stored file can have."""
    try:
        return path.is_file()
    except (OSError, ValueError):
        return False


def _shown(name: str, limit: int = 200) -> str:
    """A name for an error message, cut to `limit` characters."""
    return repr(name) if len(name) <= limit else f"{name[:limit]!r}... ({len(name)} characters)"


def _ascii_name(name: str) -> str:
    return "".join(ch if ch.isascii() and ch.isprintable() and ch not in '"\\' else "_" for ch in name)


@routes.post("/api/uploads")
async def upload(request: web.Request) -> web.Response:
    if not request.content_type.startswith("multipart/"):
        raise RequestError(415, "send the image as multipart/form-data (field 'image')")
    max_upload_bytes = request.app[CONFIG].max_upload_bytes
    if request.content_length is not None and request.content_length > max_upload_bytes + 64 * 1024:
        raise RequestError(413, f"upload too large (limit {max_upload_bytes} bytes)")
    try:
        reader = await request.multipart()
        data = None
        while True:
            part = await reader.next()
            if part is None:
                break
            if getattr(part, "name", None) in ("image", "file") and isinstance(part, BodyPartReader):
                data = await _read_limited(part, max_upload_bytes)
                break
            if isinstance(part, BodyPartReader):
                await part.release()
    except web.RequestPayloadError:
        raise RequestError(400, unreadable_body(request)) from None
    except HttpProcessingError as exc:
        raise RequestError(400, f"malformed multipart body: {exc}") from None
    except (ValueError, AssertionError, LookupError, asyncio.IncompleteReadError) as exc:
        raise RequestError(400, f"malformed multipart body: {exc}") from None
    if data is None:
        raise RequestError(400, "no file part named 'image' in the form", field="image")
    config = request.app[CONFIG]
    # decoding and writing up to MAX_UPLOAD_BYTES is blocking work: off the event loop
    name, image_format, size = await off_loop(request.app, _store_upload, data, config.uploads,
                                              config.access.max_image_pixels)
    # the name is what a workflow's LoadImage `image` takes on this server; no server path is shown
    return web.json_response({"name": name, "format": image_format, "width": size[0], "height": size[1]},
                             status=201)


def _store_upload(data: bytes, uploads: Path, max_pixels: int) -> tuple[str, str, tuple[int, int]]:
    image_format, size = _sniff_image(data, max_pixels)
    name = f"{uuid.uuid4().hex}.{UPLOAD_FORMATS[image_format]}"
    write_atomically(uploads / name, data)
    return name, image_format, size


def write_atomically(path: Path, data: bytes) -> None:
    """Write through a hidden temporary file and a rename: readers never see half a file, and a full
    disk leaves no partial file behind."""
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        temporary.write_bytes(data)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


async def _read_limited(part: Any, max_upload_bytes: int) -> bytes:
    chunks: list[bytes] = []
    total = 0
    while True:
        chunk = await part.read_chunk(256 * 1024)
        if not chunk:
            return b"".join(chunks)
        total += len(chunk)
        if total > max_upload_bytes:
            raise RequestError(413, f"upload too large (limit {max_upload_bytes} bytes)")
        chunks.append(chunk)


def _sniff_image(data: bytes, max_pixels: int) -> tuple[str, tuple[int, int]]:
    """The content decides, not the name or the declared type: Pillow must recognise and verify it."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as image:
            image_format, size = image.format, image.size
            if image_format not in UPLOAD_FORMATS:
                raise RequestError(415, f"unsupported image format {image_format}; "
                                        f"send one of {', '.join(UPLOAD_FORMATS)}", field="image")
            if size[0] * size[1] > max_pixels:
                raise RequestError(413, f"image is {size[0]}x{size[1]} = {size[0] * size[1]} pixels; the limit is "
                                        f"{max_pixels} pixels (`diffgraph serve --max-image-pixels`)", field="image")
            image.verify()
    except RequestError:
        raise
    except Exception as exc:  # noqa: BLE001 - Pillow raises many types for bad bytes
        raise RequestError(415, f"the upload is not an image Pillow can read ({type(exc).__name__})",
                           field="image") from None
    return image_format, size


@routes.get("/api/templates")
async def templates(request: web.Request) -> web.Response:
    result = []
    folder = templates_dir()
    for path in sorted(folder.glob("*")) if folder.is_dir() else []:
        if path.suffix.lower() not in (".yaml", ".yml", ".json") or not path.is_file():
            continue
        try:
            document = read_document(path)
        except WorkflowError as exc:
            log.warning("template %s is unreadable: %s", path, exc)
            continue
        result.append({"name": path.stem, "file": path.name,
                       "description": document.get("description") if isinstance(document.get("description"), str)
                       else None,
                       "params": document.get("params") or {}, "document": document})
    return web.json_response(result)


@routes.get("/api/workflows")
async def list_workflows(request: web.Request) -> web.Response:
    return web.json_response(await in_store(request.app, request.app[STORE].list_workflows))


@routes.get("/api/workflows/{name}")
async def get_workflow(request: web.Request) -> web.Response:
    name = check_name(request.match_info["name"], "workflow")
    document = await in_store(request.app, request.app[STORE].get_workflow, name)
    if document is None:
        raise RequestError(404, f"no saved workflow named {name!r}")
    return web.json_response({"name": name, "document": document})


@routes.put("/api/workflows/{name}")
async def put_workflow(request: web.Request) -> web.Response:
    name = check_name(request.match_info["name"], "workflow")
    body = await read_json_object(request)
    document = await off_loop(request.app, workflow_from, body)
    created = await in_store(request.app, request.app[STORE].put_workflow, name, document)
    return web.json_response({"name": name, "created": created}, status=201 if created else 200)


@routes.delete("/api/workflows/{name}")
async def delete_workflow(request: web.Request) -> web.Response:
    name = check_name(request.match_info["name"], "workflow")
    if not await in_store(request.app, request.app[STORE].delete_workflow, name):
        raise RequestError(404, f"no saved workflow named {name!r}")
    return web.json_response({"name": name, "deleted": True})


@routes.get("/ws")
async def websocket(request: web.Request) -> web.StreamResponse:
    if "clientId" in request.query:  # a ComfyUI client: ComfyUI's messages (comfy.py)
        from . import comfy

        return await comfy.websocket(request)
    run_id = request.query.get("run") or None
    if run_id is not None and request.app[STORE].get_run(run_id) is None:
        raise RequestError(404, f"no run with id {run_id!r}")
    ws = web.WebSocketResponse(heartbeat=30, max_msg_size=64 * 1024, compress=False)
    if not ws.can_prepare(request).ok:
        raise RequestError(400, "this route is a WebSocket: connect with a WebSocket client")
    hub: Hub = request.app[HUB]
    # subscribe, then read the run's state, with no await in between: no event falls in the gap
    subscriber = hub.subscribe(run_id)
    snapshot = request.app[STORE].get_run(run_id) if run_id is not None else None
    try:
        await ws.prepare(request)
    except BaseException:
        hub.unsubscribe(subscriber)
        raise
    if snapshot is not None:  # a late subscriber learns where the run already is
        snapshot.pop("workflow", None)
        await ws.send_str(json.dumps({"type": "run_status", "run_id": run_id, "run": snapshot}))

    transport = request.transport
    if transport is None:  # the client went away during the handshake
        hub.unsubscribe(subscriber)
        return ws
    subscriber.attach(transport, WS_WRITE_BUFFER)  # events now go straight to the socket while it keeps up
    return await stream_frames(ws, transport, subscriber, lambda: hub.unsubscribe(subscriber))


async def stream_frames(ws: web.WebSocketResponse, transport: asyncio.Transport, subscriber: Subscriber,
                        leave: Callable[[], None]) -> web.WebSocketResponse:
    """Send the subscriber's frames to the socket until either side closes, then `leave` (also the
    ComfyUI API's socket)."""

    async def forward() -> None:
        while True:
            frames = await subscriber.take()
            if frames is None:
                await ws.close(message=b"too slow or server stopping")
                return
            if not transport.is_closing():
                transport.write(b"".join(frames))  # whole frames, so aiohttp's own pings interleave safely
            while transport.get_write_buffer_size() > WS_WRITE_BUFFER and not transport.is_closing():
                await asyncio.sleep(0.05)  # a slow reader: its pending frames, which are bounded, take the wait

    sender = asyncio.create_task(forward())
    try:
        async for _ in ws:  # clients have nothing to say; reading keeps ping/close working
            pass
    finally:
        leave()
        sender.cancel()
    return ws


@routes.get("/")
async def index(request: web.Request) -> web.StreamResponse:
    headers = {"Content-Security-Policy": EDITOR_CSP}
    page = STATIC_DIR / "index.html"
    if page.is_file():
        return web.FileResponse(page, headers={**headers, "Content-Type": "text/html; charset=utf-8"})
    return web.Response(text=NOT_BUILT, content_type="text/html", headers=headers)


@routes.get("/favicon.ico")
async def favicon(request: web.Request) -> web.StreamResponse:
    icon = STATIC_DIR / "favicon.svg"
    if not icon.is_file():
        raise RequestError(404, "the editor is not built (no favicon.svg)")
    return web.FileResponse(icon, headers={"Content-Type": "image/svg+xml", "Cache-Control": "public, max-age=86400"})


@routes.get("/assets/{path:.+}")
async def assets(request: web.Request) -> web.StreamResponse:
    path = contained(STATIC_DIR / "assets", request.match_info["path"])
    if not regular_file(path):
        raise RequestError(404, f"no asset {_shown(request.match_info['path'])}")
    content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    if path.suffix == ".js":
        content_type = "text/javascript"
    return web.FileResponse(path, headers={"Content-Type": content_type, "Cache-Control": "public, max-age=3600",
                                           "Content-Security-Policy": EDITOR_CSP})


# ---------------------------------------------------------------------------------------------
# the application


def is_disk_full(exc: BaseException) -> bool:
    if isinstance(exc, OSError):
        return exc.errno in (errno.ENOSPC, errno.EDQUOT)
    return isinstance(exc, sqlite3.OperationalError) and "full" in str(exc)  # SQLITE_FULL


@web.middleware
async def storage_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    """A full disk is the server's condition, not the client's mistake: 507 with the reason (nothing
    stored is lost; the request may be retried once there is room)."""
    try:
        return await handler(request)
    except (OSError, sqlite3.OperationalError) as exc:
        if not is_disk_full(exc):
            raise
        log.error("%s %s: the disk is full (%s)", request.method, request.path, exc)
        raise RequestError(507, f"the server's disk is full ({exc}); nothing was stored: free space in its data "
                                "directory and try again") from None


def make_app(data_dir: Path, *, host: str = "127.0.0.1", token: str | None = None, device: str = "cpu",
             dtype: str = "fp32", extra_hosts: list[str] | None = None,
             keep_previews: int = PREVIEWS_KEEP_FILES, settings: Settings | None = None, backend: str = "local",
             ray_address: str | None = None, cpus_per_worker: float = 1.0, model_dirs: list[Path] | None = None,
             allow_downloads: bool = False, max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
             options: RunOptions | None = None) -> web.Application:
    settings = settings or Settings()  # the entry point parsed the environment; tests pass their own
    config = Config(data_dir, host, device, dtype, token, settings, model_dirs, allow_downloads, max_image_pixels,
                    options, backend)
    store = Store(data_dir / "diffgraph.db")
    registry = default_registry()
    for problem in registry.load_errors:
        log.warning("%s", problem)
    executor = Executor(Cache(MemoryCache(), DiskCache(config.cache, max_bytes=settings.cache_max_bytes)),
                        services={"settings": settings}, threads=settings.threads)
    app = web.Application(
        middlewares=[headers_middleware, error_middleware,
                     security_middleware(allowed_hosts(host, extra_hosts or []), token), storage_middleware],
        client_max_size=max(MAX_JSON_BYTES, settings.max_upload_bytes) + 1024 * 1024,
    )

    def compile_run(record: dict[str, Any]):
        return compile_checked(app, record["workflow"], record["params"], snapshot=record.get("subgraphs"))

    if backend == "ray":  # the queue's runs go to a Ray cluster (diffgraph/server/ray_worker.py)
        from .ray_worker import RayWorker

        worker: Worker = RayWorker(store, executor, compile_run, config.outputs, device, dtype, address=ray_address,
                                   cpus_per_worker=cpus_per_worker)
    else:
        worker = Worker(store, executor, compile_run, config.outputs, device, dtype,
                        previews_keep_files=keep_previews, options=config.options)
    app[CONFIG], app[STORE], app[REGISTRY], app[WORKER], app[HUB] = config, store, registry, worker, Hub()
    # one validation thread: more would only fight the event loop for the GIL
    app[VALIDATOR] = ThreadPoolExecutor(max_workers=1, thread_name_prefix="diffgraph-validate")
    app[STORE_THREAD] = ThreadPoolExecutor(max_workers=1, thread_name_prefix="diffgraph-store")
    app.add_routes(routes)
    from . import comfy  # ComfyUI's API (imports this module, hence here)

    comfy.setup(app)

    async def start_worker(app: web.Application) -> None:
        for run_id in store.recover():
            log.warning("run %s was executing when the server stopped; marked failed", run_id)
        worker.start(asyncio.get_running_loop(), app[HUB])

    async def stop_worker(app: web.Application) -> None:
        app[HUB].close_all()
        stopped = await asyncio.get_running_loop().run_in_executor(None, worker.stop, 5.0)  # SIGTERM: seconds
        app[VALIDATOR].shutdown(wait=False, cancel_futures=True)  # never wait on a request's work to stop
        app[STORE_THREAD].shutdown(wait=False, cancel_futures=True)
        if stopped:  # else the busy worker still needs the connection; process exit closes it
            store.close()

    app.on_startup.append(start_worker)
    app.on_shutdown.append(stop_worker)
    return app


def serve(args: argparse.Namespace, settings: Settings) -> int:
    """Entry point of `diffgraph serve` (settings: the environment, parsed by the CLI); returns an exit code."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    logging.getLogger("aiohttp.server").addFilter(BadRequestsInOneLine())
    token = args.token or settings.token
    if not is_loopback(args.host) and token is None:
        print(f"refusing to bind {args.host}: beyond loopback a token is required "
              "(--token or DIFFGRAPH_TOKEN)", file=sys.stderr)
        return 2
    try:
        check_device(args.device, args.dtype)
    except ValueError as exc:
        print(f"invalid --device/--dtype: {exc}", file=sys.stderr)
        return 2
    # the worker thread and the validation thread hand the GIL back to the event loop sooner (default 5 ms)
    sys.setswitchinterval(0.001)
    data_dir = (Path(args.data_dir).expanduser() if args.data_dir else settings.data_dir).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    lock = _lock_data_dir(data_dir)
    if lock is None:
        print(f"another diffgraph server is using {data_dir}; stop it or pass another --data-dir", file=sys.stderr)
        return 1
    backend = getattr(args, "backend", "local")
    options = RunOptions(compile=bool(getattr(args, "compile", False)), vram_budget_gb=getattr(args, "vram_budget", None))
    if backend == "ray" and options != RunOptions():
        print("--compile and --vram-budget do not apply to --backend ray yet", file=sys.stderr)
        return 2
    if (note := options.budget_note(args.device)) is not None:
        print(note, file=sys.stderr)
    if backend == "ray":
        from diffgraph.ray_backend import ray_available

        if not ray_available():
            print("the ray backend needs Ray: pip install 'diffgraph[ray]' (or pip install 'ray>=2.9')", file=sys.stderr)
            return 2
    model_dirs = []
    for text in getattr(args, "model_dir", None) or []:
        folder = Path(text).expanduser().resolve()
        if not folder.is_dir():
            print(f"invalid --model-dir {text!r}: not a directory", file=sys.stderr)
            return 2
        model_dirs.append(folder)
    try:
        app = make_app(data_dir, host=args.host, token=token, device=args.device, dtype=args.dtype,
                       extra_hosts=getattr(args, "allow_host", None) or [],
                       keep_previews=getattr(args, "keep_previews", PREVIEWS_KEEP_FILES), settings=settings,
                       backend=backend, ray_address=getattr(args, "address", None),
                       cpus_per_worker=getattr(args, "cpus_per_worker", 1.0), model_dirs=model_dirs,
                       allow_downloads=bool(getattr(args, "allow_downloads", False)),
                       max_image_pixels=getattr(args, "max_image_pixels", None) or DEFAULT_MAX_IMAGE_PIXELS,
                       options=options)
    except DamagedDatabase as exc:
        print(f"diffgraph serve: {exc}", file=sys.stderr)
        return 1
    return asyncio.run(_run(app, args.host, args.port))


class BadRequestsInOneLine(logging.Filter):
    """aiohttp answers a malformed HTTP request (a NUL in a header, say) with a 400 itself, and logs it
    as an error with a traceback. Hostile input is normal input: one warning line says enough."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError) and 400 <= exc.code < 500:
            first_line = str(exc.message).strip().splitlines()[0] if str(exc.message).strip() else ""
            record.msg, record.args = f"{record.getMessage()}: {exc.code} {first_line}", None
            record.exc_info, record.exc_text = None, None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


def _lock_data_dir(data_dir: Path):
    """An exclusive lock on `<data dir>/server.lock` for the life of the process, or None when another
    server holds it (two servers would each mark the other's running run "server stopped")."""
    handle = open(data_dir / "server.lock", "a+")  # noqa: SIM115 - held open until the process exits
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks here; one server per data dir is then up to the user
        return handle
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        return None
    return handle


async def _run(app: web.Application, host: str, port: int) -> int:
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except OSError as exc:
        print(f"cannot listen on {host}:{port}: {exc.strerror}", file=sys.stderr)
        await runner.cleanup()
        return 1
    bound = runner.addresses[0]
    shown = f"[{bound[0]}]" if ":" in bound[0] else bound[0]
    print(f"diffgraph serving on http://{shown}:{bound[1]} (data in {app[CONFIG].data_dir})", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    print("stopping", flush=True)
    await runner.cleanup()
    return 0
