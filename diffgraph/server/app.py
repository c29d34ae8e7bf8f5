"""`diffgraph serve`: the aiohttp application, its routes and its start-up.

Routes (see /api/openapi.json): health, openapi, nodes, validate, runs (submit, list, get, cancel),
outputs, uploads, templates, the saved-workflow library and the /ws event stream. The data
directory holds `diffgraph.db` (SQLite, WAL), `uploads/`, `outputs/` and `cache/`.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import logging
import mimetypes
import os
import signal
import sys
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import HttpProcessingError

from diffgraph.engine import (
    Cache,
    DiskCache,
    Executor,
    Issue,
    MemoryCache,
    NodeRegistry,
    ThreadPolicy,
    WorkflowError,
    compile_workflow,
    default_registry,
    parse_document,
    read_document,
)
from diffgraph.engine.executor import check_device
from diffgraph.engine.plan import templates_dir

from . import openapi
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
from .store import STATUSES, Store
from .worker import Hub, Worker, default_data_dir

log = logging.getLogger("diffgraph.server")

VERSION = "0.1.0"
MAX_JSON_BYTES = 16 * 1024 * 1024
MAX_UPLOAD_BYTES = int(os.environ.get("DIFFGRAPH_MAX_UPLOAD_MB", "32")) * 1024 * 1024
MAX_IMAGE_PIXELS = 8192 * 8192
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
    def __init__(self, data_dir: Path, host: str, device: str, dtype: str, token: str | None):
        self.data_dir = data_dir
        self.host = host
        self.device = device
        self.dtype = dtype
        self.token = token
        self.uploads = data_dir / "uploads"
        self.outputs = data_dir / "outputs"
        self.cache = data_dir / "cache"
        for folder in (self.uploads, self.outputs, self.cache):
            folder.mkdir(parents=True, exist_ok=True)


STORE = web.AppKey("store", Store)
WORKER = web.AppKey("worker", Worker)
HUB = web.AppKey("hub", Hub)
REGISTRY = web.AppKey("registry", NodeRegistry)
CONFIG = web.AppKey("config", Config)
VALIDATOR = web.AppKey("validator", ThreadPoolExecutor)


# ---------------------------------------------------------------------------------------------
# request helpers


async def read_json_object(request: web.Request) -> dict[str, Any]:
    if request.content_length is not None and request.content_length > MAX_JSON_BYTES:
        raise RequestError(413, f"request body too large (limit {MAX_JSON_BYTES} bytes)")
    raw = await request.read()
    if len(raw) > MAX_JSON_BYTES:
        raise RequestError(413, f"request body too large (limit {MAX_JSON_BYTES} bytes)")
    try:
        body = json.loads(raw.decode("utf-8"), object_pairs_hook=_unique_keys)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise RequestError(400, f"request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise RequestError(400, "request body must be a JSON object")
    return body


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


def library_resolver(store: Store):
    """`workflow:<name>` inside a submitted workflow: a saved workflow, else a shipped template.
    Never a file path: a request may not make the server read arbitrary files."""

    def resolve(ref: str, base: Path | None) -> tuple[dict[str, Any], Path]:
        try:
            check_name(ref, "subgraph workflow")
        except RequestError as exc:
            raise WorkflowError([Issue(None, None, exc.message)]) from None
        saved = store.get_workflow(ref)
        if saved is not None:
            return saved, Path(f"/library/{ref}")
        for suffix in (".yaml", ".yml", ".json"):
            path = templates_dir() / f"{ref}{suffix}"
            if path.is_file():
                return read_document(path), path.resolve()
        raise WorkflowError([Issue(None, None, f"no saved workflow or template named {ref!r}")])

    return resolve


def compile_checked(app: web.Application, document: dict[str, Any], params: dict[str, Any]):
    try:
        return compile_workflow(document, app[REGISTRY], params, resolver=library_resolver(app[STORE]))
    except WorkflowError:
        raise
    except (RecursionError, TypeError, ValueError, AttributeError, KeyError, IndexError) as exc:
        # a gap in the engine's checks must still be the client's 4xx, not a 500
        log.warning("validation raised %s", exc, exc_info=True)
        raise WorkflowError([Issue(None, None, f"workflow could not be validated: {exc}")]) from None


async def compile_off_loop(app: web.Application, document: dict[str, Any], params: dict[str, Any]):
    """Validation is CPU work; a thread keeps the loop free to answer health and status meanwhile."""
    return await asyncio.get_running_loop().run_in_executor(app[VALIDATOR], compile_checked, app, document, params)


# ---------------------------------------------------------------------------------------------
# routes

routes = web.RouteTableDef()


@routes.get("/api/health")
async def health(request: web.Request) -> web.Response:
    worker: Worker = request.app[WORKER]
    return web.json_response({"status": "ok", "version": VERSION, "running": worker.current_run})


@routes.get("/api/openapi.json")
async def openapi_document(request: web.Request) -> web.Response:
    return web.json_response(openapi.document(VERSION))


@routes.get("/api/nodes")
async def nodes(request: web.Request) -> web.Response:
    return web.json_response(request.app[REGISTRY].catalog())


@routes.post("/api/validate")
async def validate(request: web.Request) -> web.Response:
    body = await read_json_object(request)
    try:
        document = workflow_from(body)
        await compile_off_loop(request.app, document, params_from(body))
    except RequestError as exc:
        if "errors" not in exc.extra:
            raise
        return web.json_response({"valid": False, "errors": exc.extra["errors"]})
    except WorkflowError as exc:
        return web.json_response({"valid": False, "errors": [i.to_dict() for i in exc.issues]})
    return web.json_response({"valid": True, "errors": []})


@routes.post("/api/runs")
async def submit_run(request: web.Request) -> web.Response:
    body = await read_json_object(request)
    document, params = workflow_from(body), params_from(body)
    try:
        await compile_off_loop(request.app, document, params)
    except WorkflowError as exc:
        raise RequestError(400, "invalid workflow", errors=[i.to_dict() for i in exc.issues]) from None
    run = request.app[STORE].add_run(document, params)
    request.app[WORKER].wake()
    request.app[HUB].publish_event({"type": "run_queued", "run_id": run["id"], "seq": run["seq"],
                                    "name": run["name"]})
    return web.json_response({"id": run["id"], "seq": run["seq"], "status": "queued"}, status=202)


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
    runs, next_cursor = request.app[STORE].list_runs(status, limit, before)
    return web.json_response({"runs": runs, "next": next_cursor})


def _run_or_404(request: web.Request) -> dict[str, Any]:
    run = request.app[STORE].get_run(request.match_info["id"])
    if run is None:
        raise RequestError(404, f"no run with id {request.match_info['id']!r}")
    return run


@routes.get("/api/runs/{id}")
async def get_run(request: web.Request) -> web.Response:
    return web.json_response(_run_or_404(request))


@routes.post("/api/runs/{id}/cancel")
async def cancel_run(request: web.Request) -> web.Response:
    run = _run_or_404(request)
    outcome = request.app[WORKER].cancel(run["id"])
    if outcome == "cancelled":
        request.app[HUB].publish_event({"type": "run_cancelled", "run_id": run["id"], "status": "cancelled"})
        return web.json_response({"id": run["id"], "status": "cancelled"})
    if outcome == "cancelling":
        return web.json_response({"id": run["id"], "status": "cancelling"}, status=202)
    current = request.app[STORE].get_run(run["id"]) or run
    raise RequestError(409, f"run {run['id']} is already {current['status']}", run_status=current["status"])


@routes.get("/api/outputs/{name:.+}")
async def get_output(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    path = contained(request.app[CONFIG].outputs, name)
    if any(part.startswith(".") for part in name.split("/")):  # hidden: a file still being written
        raise RequestError(404, f"no output named {name!r}")
    if not path.is_file():
        raise RequestError(404, f"no output named {request.match_info['name']!r}")
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


def _ascii_name(name: str) -> str:
    return "".join(ch if ch.isascii() and ch.isprintable() and ch not in '"\\' else "_" for ch in name)


@routes.post("/api/uploads")
async def upload(request: web.Request) -> web.Response:
    if not request.content_type.startswith("multipart/"):
        raise RequestError(415, "send the image as multipart/form-data (field 'image')")
    if request.content_length is not None and request.content_length > MAX_UPLOAD_BYTES + 64 * 1024:
        raise RequestError(413, f"upload too large (limit {MAX_UPLOAD_BYTES} bytes)")
    try:
        reader = await request.multipart()
        data = None
        while True:
            part = await reader.next()
            if part is None:
                break
            if getattr(part, "name", None) in ("image", "file") and isinstance(part, BodyPartReader):
                data = await _read_limited(part)
                break
            if isinstance(part, BodyPartReader):
                await part.release()
    except (ValueError, AssertionError, LookupError, HttpProcessingError, asyncio.IncompleteReadError) as exc:
        raise RequestError(400, f"malformed multipart body: {exc}") from None
    if data is None:
        raise RequestError(400, "no file part named 'image' in the form", field="image")
    image_format, size = _sniff_image(data)
    name = f"{uuid.uuid4().hex}.{UPLOAD_FORMATS[image_format]}"
    target = request.app[CONFIG].uploads / name
    temporary = target.with_name(f".{name}.tmp")
    temporary.write_bytes(data)
    os.replace(temporary, target)
    return web.json_response({"name": name, "path": str(target.resolve()), "format": image_format,
                              "width": size[0], "height": size[1]}, status=201)


async def _read_limited(part: Any) -> bytes:
    chunks: list[bytes] = []
    total = 0
    while True:
        chunk = await part.read_chunk(256 * 1024)
        if not chunk:
            return b"".join(chunks)
        total += len(chunk)
        if total > MAX_UPLOAD_BYTES:
            raise RequestError(413, f"upload too large (limit {MAX_UPLOAD_BYTES} bytes)")
        chunks.append(chunk)


def _sniff_image(data: bytes) -> tuple[str, tuple[int, int]]:
    """The content decides, not the name or the declared type: Pillow must recognise and verify it."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as image:
            image_format, size = image.format, image.size
            if image_format not in UPLOAD_FORMATS:
                raise RequestError(415, f"unsupported image format {image_format}; "
                                        f"send one of {', '.join(UPLOAD_FORMATS)}", field="image")
            if size[0] * size[1] > MAX_IMAGE_PIXELS:
                raise RequestError(413, f"image is {size[0]}x{size[1]}; the limit is {MAX_IMAGE_PIXELS} pixels")
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
    return web.json_response(request.app[STORE].list_workflows())


@routes.get("/api/workflows/{name}")
async def get_workflow(request: web.Request) -> web.Response:
    name = check_name(request.match_info["name"], "workflow")
    document = request.app[STORE].get_workflow(name)
    if document is None:
        raise RequestError(404, f"no saved workflow named {name!r}")
    return web.json_response({"name": name, "document": document})


@routes.put("/api/workflows/{name}")
async def put_workflow(request: web.Request) -> web.Response:
    name = check_name(request.match_info["name"], "workflow")
    body = await read_json_object(request)
    document = workflow_from(body)
    created = request.app[STORE].put_workflow(name, document)
    return web.json_response({"name": name, "created": created}, status=201 if created else 200)


@routes.delete("/api/workflows/{name}")
async def delete_workflow(request: web.Request) -> web.Response:
    name = check_name(request.match_info["name"], "workflow")
    if not request.app[STORE].delete_workflow(name):
        raise RequestError(404, f"no saved workflow named {name!r}")
    return web.json_response({"name": name, "deleted": True})


@routes.get("/ws")
async def websocket(request: web.Request) -> web.StreamResponse:
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
        async for _ in ws:  # clients have nothing to say yet; reading keeps ping/close working
            pass
    finally:
        hub.unsubscribe(subscriber)
        sender.cancel()
    return ws


@routes.get("/")
async def index(request: web.Request) -> web.StreamResponse:
    headers = {"Content-Security-Policy": EDITOR_CSP}
    page = STATIC_DIR / "index.html"
    if page.is_file():
        return web.FileResponse(page, headers={**headers, "Content-Type": "text/html; charset=utf-8"})
    return web.Response(text=NOT_BUILT, content_type="text/html", headers=headers)


@routes.get("/assets/{path:.+}")
async def assets(request: web.Request) -> web.StreamResponse:
    path = contained(STATIC_DIR / "assets", request.match_info["path"])
    if not path.is_file():
        raise RequestError(404, f"no asset {request.match_info['path']!r}")
    content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    if path.suffix == ".js":
        content_type = "text/javascript"
    return web.FileResponse(path, headers={"Content-Type": content_type, "Cache-Control": "public, max-age=3600",
                                           "Content-Security-Policy": EDITOR_CSP})


# ---------------------------------------------------------------------------------------------
# the application


def make_app(data_dir: Path, *, host: str = "127.0.0.1", token: str | None = None, device: str = "cpu",
             dtype: str = "fp32", extra_hosts: list[str] | None = None) -> web.Application:
    config = Config(data_dir, host, device, dtype, token)
    store = Store(data_dir / "diffgraph.db")
    registry = default_registry()
    for problem in registry.load_errors:
        log.warning("%s", problem)
    max_gb = float(os.environ.get("DIFFGRAPH_CACHE_MAX_GB", "20"))
    executor = Executor(Cache(MemoryCache(), DiskCache(config.cache, max_bytes=int(max_gb * 1024**3))),
                        threads=ThreadPolicy.from_environment(os.environ))
    app = web.Application(
        middlewares=[headers_middleware, error_middleware,
                     security_middleware(allowed_hosts(host, extra_hosts or []), token)],
        client_max_size=max(MAX_JSON_BYTES, MAX_UPLOAD_BYTES) + 1024 * 1024,
    )

    def compile_run(record: dict[str, Any]):
        return compile_checked(app, record["workflow"], record["params"])

    worker = Worker(store, executor, compile_run, config.outputs, device, dtype)
    app[CONFIG], app[STORE], app[REGISTRY], app[WORKER], app[HUB] = config, store, registry, worker, Hub()
    # one validation thread: more would only fight the event loop for the GIL
    app[VALIDATOR] = ThreadPoolExecutor(max_workers=1, thread_name_prefix="diffgraph-validate")
    app.add_routes(routes)

    async def start_worker(app: web.Application) -> None:
        for run_id in store.recover():
            log.warning("run %s was executing when the server stopped; marked failed", run_id)
        worker.start(asyncio.get_running_loop(), app[HUB])

    async def stop_worker(app: web.Application) -> None:
        app[HUB].close_all()
        stopped = await asyncio.get_running_loop().run_in_executor(None, worker.stop)
        app[VALIDATOR].shutdown(wait=True)
        if stopped:  # else the busy worker still needs the connection; process exit closes it
            store.close()

    app.on_startup.append(start_worker)
    app.on_shutdown.append(stop_worker)
    return app


def serve(args: argparse.Namespace) -> int:
    """Entry point of `diffgraph serve`; returns an exit code."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    token = args.token or os.environ.get("DIFFGRAPH_TOKEN") or None
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
    data_dir = (Path(args.data_dir).expanduser() if args.data_dir else default_data_dir()).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    lock = _lock_data_dir(data_dir)
    if lock is None:
        print(f"another diffgraph server is using {data_dir}; stop it or pass another --data-dir", file=sys.stderr)
        return 1
    app = make_app(data_dir, host=args.host, token=token, device=args.device, dtype=args.dtype,
                   extra_hosts=getattr(args, "allow_host", None) or [])
    return asyncio.run(_run(app, args.host, args.port))


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
