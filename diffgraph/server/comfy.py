"""ComfyUI's HTTP API on `diffgraph serve`, so ComfyUI clients work unchanged.

Routes (each also under /api/): POST|GET /prompt, GET|POST /queue, GET /history[/{prompt_id}],
GET /view, POST /upload/image, POST /upload/mask, GET /object_info[/{class}], GET /system_stats,
GET /embeddings, POST /interrupt, POST /free; and GET /ws?clientId= (app.py's /ws hands a request
with `clientId` to `websocket` here).

A prompt is translated (diffgraph.comfy_import) and validated before it is queued as an ordinary
run; the table `comfy_prompts` in the server's SQLite file remembers which run a prompt became, so
/history survives restarts. The run's events (the Hub's listeners) become ComfyUI's messages for
the submitting client id: status, execution_start, execution_cached, executing, progress, executed,
execution_success / execution_error / execution_interrupted, then executing with node null.
"""

from __future__ import annotations

import asyncio
import importlib
import io
import json
import logging
import os
import platform
import re
import sqlite3
import struct
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import HttpProcessingError

from diffgraph.comfy_import import (
    CLASSES,
    ComfyError,
    Problem,
    Resolvers,
    Translation,
    translate_prompt,
)
from diffgraph.engine import WorkflowError
from diffgraph.engine.files import read_regular

from . import app as server
from .security import RequestError, contained
from .worker import Subscriber, websocket_frame

log = logging.getLogger("diffgraph.server.comfy")

PACKAGE_MODELS = Path(__file__).resolve().parent.parent / "models"
MAX_CLIENT_ID = 200
MAX_FIELD_BYTES = 64 * 1024
MAX_LISTED_FILES = 2000
UPLOAD_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._()+-]{0,199}$")
FOLDER_TYPES = ("input", "temp", "output")
#: extra_data.preview_method values that turn binary preview frames on (ComfyUI's default is none)
PREVIEW_ON = ("auto", "latent2rgb", "taesd")
PREVIEW_IMAGE, JPEG = 1, 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS comfy_prompts (
    prompt_id   TEXT PRIMARY KEY,
    run_id      TEXT NOT NULL UNIQUE,
    client_id   TEXT,
    prompt      TEXT NOT NULL,
    extra_data  TEXT NOT NULL,
    outputs     TEXT NOT NULL,
    node_ids    TEXT NOT NULL,
    created_at  REAL NOT NULL
);
"""


@dataclass
class Prompt:
    """What a run needs to speak ComfyUI: its prompt, who sent it, and how its node ids map."""

    prompt_id: str
    run_id: str
    client_id: str | None
    prompt: dict[str, Any]
    extra_data: dict[str, Any]
    outputs: list[str]
    node_ids: dict[str, str]  # diffgraph id -> prompt node id
    number: int = 0
    executed: list[str] = field(default_factory=list)
    cached: list[str] | None = None  # collected between run_started and the first other event

    def entry(self) -> list[Any]:
        """ComfyUI's queue/history item: [number, prompt_id, prompt, extra_data, outputs_to_execute]."""
        return [self.number, self.prompt_id, self.prompt, self.extra_data, self.outputs]


class ComfyStore:
    """The prompt <-> run table, on its own connection to the server's SQLite file (WAL)."""

    def __init__(self, path: Path):
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
        self._db.row_factory = sqlite3.Row
        self._db.executescript(_SCHEMA)

    def add(self, p: Prompt) -> None:
        with self._lock:
            self._db.execute("INSERT INTO comfy_prompts VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                             (p.prompt_id, p.run_id, p.client_id, json.dumps(p.prompt), json.dumps(p.extra_data),
                              json.dumps(p.outputs), json.dumps(p.node_ids), time.time()))

    def _select(self, where: str, args: tuple[Any, ...]) -> list[tuple[Prompt, sqlite3.Row]]:
        with self._lock:
            rows = self._db.execute(
                "SELECT c.*, r.seq, r.status, r.outputs AS run_outputs, r.executed, r.cached, r.error, r.failed_node, "
                "r.started_at, r.finished_at FROM comfy_prompts c JOIN runs r ON r.id = c.run_id "
                f"{where}", args).fetchall()
        return [(Prompt(row["prompt_id"], row["run_id"], row["client_id"], json.loads(row["prompt"]),
                        json.loads(row["extra_data"]), json.loads(row["outputs"]), json.loads(row["node_ids"]),
                        row["seq"]), row) for row in rows]

    def by_prompt(self, prompt_id: str) -> tuple[Prompt, sqlite3.Row] | None:
        found = self._select("WHERE c.prompt_id = ?", (prompt_id,))
        return found[0] if found else None

    def by_run(self, run_id: str) -> Prompt | None:
        found = self._select("WHERE c.run_id = ?", (run_id,))
        return found[0][0] if found else None

    def with_status(self, statuses: tuple[str, ...], limit: int = 10_000) -> list[tuple[Prompt, sqlite3.Row]]:
        marks = ", ".join("?" * len(statuses))
        found = self._select(f"WHERE r.status IN ({marks}) ORDER BY r.seq DESC LIMIT ?", (*statuses, limit))
        return found[::-1]

    def remaining(self) -> int:
        """ComfyUI's queue_remaining: runs queued or running, whoever submitted them."""
        with self._lock:
            return self._db.execute("SELECT count(*) FROM runs WHERE status IN ('queued', 'running')").fetchone()[0]

    def forget(self, prompt_ids: list[str]) -> None:
        with self._lock:
            self._db.executemany("DELETE FROM comfy_prompts WHERE prompt_id = ?", [(p,) for p in prompt_ids])


class Comfy:
    """The ComfyUI side of one server: its prompt table, its WebSocket clients and the event fan-out."""

    def __init__(self, app: web.Application):
        self.app = app
        self.store = ComfyStore(app[server.CONFIG].data_dir / "diffgraph.db")
        self.clients: dict[str, set[Subscriber]] = {}
        # run id -> prompt, for runs that may still send events: every prompt this server queues is put
        # here before its first event, and those still queued from before a restart are loaded now, so
        # the event listeners (on the loop, for every run's events) never need to ask the database
        self.prompts: dict[str, Prompt] = {p.run_id: p for p, _ in self.store.with_status(("queued",))}

    # -- what the server knows ------------------------------------------------------------------

    def roots(self) -> dict[str, Path]:
        config = self.app[server.CONFIG]
        temp = config.outputs / "previews"
        temp.mkdir(exist_ok=True)
        return {"input": config.uploads, "temp": temp, "output": config.outputs}

    def models(self) -> dict[str, Path]:
        """ckpt_name -> folder or file: the bundled text-to-image models and <data dir>/models."""
        found: dict[str, Path] = {}
        for folder in sorted(PACKAGE_MODELS.iterdir()) if PACKAGE_MODELS.is_dir() else []:
            if (folder / "model_index.json").is_file() and _text_to_image(folder):
                found[folder.name] = folder
        user = self.app[server.CONFIG].data_dir / "models"
        for entry in sorted(user.iterdir()) if user.is_dir() else []:
            if entry.is_dir() and (entry / "model_index.json").is_file():
                found[entry.name] = entry.resolve()
            elif entry.is_file() and entry.suffix == ".safetensors" and not entry.is_symlink():
                found[entry.name] = entry.resolve()
        return found

    def controlnets(self) -> dict[str, Path]:
        """control_net_name -> folder or file: <data dir>/models/controlnet (ComfyUI's models/controlnet)."""
        folder = self.app[server.CONFIG].data_dir / "models" / "controlnet"
        found: dict[str, Path] = {}
        for entry in sorted(folder.iterdir()) if folder.is_dir() and not folder.is_symlink() else []:
            if entry.is_symlink():
                continue
            if (entry.is_dir() and (entry / "config.json").is_file()) or (entry.is_file() and entry.suffix == ".safetensors"):
                found[entry.name] = entry.resolve()
        return found

    def loras(self) -> dict[str, Path]:
        """lora_name -> file: the .safetensors files in <data dir>/models/loras (and its subfolders), as
        ComfyUI keeps them in models/loras."""
        root = self.app[server.CONFIG].data_dir / "models" / "loras"
        found: dict[str, Path] = {}
        for path in sorted(root.rglob("*.safetensors")) if root.is_dir() and not root.is_symlink() else []:
            if len(found) >= MAX_LISTED_FILES:
                break
            relative = path.relative_to(root).as_posix()
            if path.is_file() and not path.is_symlink() and not any(p.startswith(".") for p in relative.split("/")):
                found[relative] = path.resolve()
        return found

    def input_files(self) -> list[str]:
        root = self.roots()["input"]
        names: list[str] = []
        for path in sorted(root.rglob("*")):
            if len(names) >= MAX_LISTED_FILES:
                break
            relative = path.relative_to(root).as_posix()
            if path.is_file() and not path.is_symlink() and not any(p.startswith(".") for p in relative.split("/")):
                names.append(relative)
        return names

    def image_path(self, name: str) -> str | None:
        """`name`, `sub/name` or `name [input|temp|output]` as a regular file inside that root."""
        kind = "input"
        match = re.fullmatch(r"(.*) \[(input|temp|output)\]", name)
        if match:
            name, kind = match.group(1), match.group(2)
        try:
            path = contained(self.roots()[kind], name)
        except RequestError:
            return None
        if any(part.startswith(".") for part in name.split("/")) or not path.is_file():
            return None
        return str(path)

    def loadable_image(self, name: str) -> str | None:
        """What a LoadImage param takes for `name` on the server: its name inside the uploads folder
        (the server's contained policy refuses paths)."""
        path = self.image_path(name)
        root = self.roots()["input"].resolve()
        if path is not None and Path(path).is_relative_to(root):
            return Path(path).relative_to(root).as_posix()
        return path

    def resolvers(self) -> Resolvers:
        models = self.models()

        def checkpoint(name: str) -> str | None:
            return str(models[name]) if name in models else None

        def check_sampler(name: str, sigmas: str, spacing: str) -> str | None:
            # by name: the server needs no static import of the node pack (nor mypy a walk through it)
            scheduler_overrides = importlib.import_module("diffgraph.nodes.sampling").scheduler_overrides
            try:
                scheduler_overrides(name, sigmas, spacing)
            except ValueError as exc:
                return str(exc)
            return None

        controlnets, loras = self.controlnets(), self.loras()
        return Resolvers(checkpoint, lambda: list(models), self.loadable_image, check_sampler,
                         controlnet=lambda name: str(controlnets[name]) if name in controlnets else None,
                         controlnet_choices=lambda: list(controlnets),
                         lora=lambda name: str(loras[name]) if name in loras else None, lora_choices=lambda: list(loras))

    # -- messages ---------------------------------------------------------------------------------

    def send(self, client_id: str | None, kind: str, data: dict[str, Any]) -> None:
        """To one client id, or to every ComfyUI client when the prompt named none (as ComfyUI does)."""
        frame = websocket_frame(json.dumps({"type": kind, "data": data}, default=str))
        self._push(client_id, frame)

    def _push(self, client_id: str | None, frame: bytes) -> None:
        targets = [self.clients.get(client_id, set())] if client_id is not None else list(self.clients.values())
        for subscribers in targets:
            for subscriber in list(subscribers):
                if not subscriber.push(frame):
                    subscribers.discard(subscriber)

    def status(self, client_id: str | None = None, sid: str | None = None) -> None:
        if not any(self.clients.values()):  # nobody to tell: spare the loop the database query
            return
        data: dict[str, Any] = {"status": {"exec_info": {"queue_remaining": self.store.remaining()}}}
        if sid is not None:
            data["sid"] = sid
        self.send(client_id, "status", data)

    def prompt_of(self, run_id: str) -> Prompt | None:
        prompt = self.prompts.get(run_id)
        if prompt is None:
            prompt = self.store.by_run(run_id)
            if prompt is not None:
                self.prompts[run_id] = prompt
        return prompt

    def on_event(self, event: dict[str, Any]) -> None:
        """A Hub listener: one diffgraph run event, on the event loop."""
        kind, run_id = event.get("type"), event.get("run_id")
        if kind == "run_queued":
            self.status()
            return
        if not isinstance(run_id, str):
            return
        prompt = self.prompts.get(run_id)
        if prompt is None:
            if kind in ("run_started", "run_finished", "run_failed", "run_cancelled"):
                self.status()
            return
        pid, client = prompt.prompt_id, prompt.client_id
        now = int(time.time() * 1000)
        if kind == "run_started":
            prompt.cached, prompt.executed = [], []
            self.send(client, "execution_start", {"prompt_id": pid, "timestamp": now})
            self.status()
            return
        if kind == "node_cached" and prompt.cached is not None:
            self._collect(prompt, event.get("node"), prompt.cached)
            return
        if prompt.cached is not None:  # the up-front cache hits are all known: one message, as ComfyUI sends
            self.send(client, "execution_cached", {"nodes": prompt.cached, "prompt_id": pid, "timestamp": now})
            prompt.cached = None
        node = prompt.node_ids.get(str(event.get("node")))
        if kind == "node_cached" and node is not None:
            self.send(client, "execution_cached", {"nodes": [node], "prompt_id": pid, "timestamp": now})
        elif kind == "node_started" and node is not None:
            self.send(client, "executing", {"node": node, "display_node": node, "prompt_id": pid})
        elif kind == "node_finished" and node is not None:
            prompt.executed.append(node)
        elif kind == "progress":
            owner = node or self._owner(prompt, event.get("node"))
            self.send(client, "progress", {"value": event.get("step"), "max": event.get("total"),
                                           "prompt_id": pid, "node": owner})
        elif kind in ("run_finished", "run_failed", "run_cancelled"):
            self._finish(prompt, event, now)

    def _collect(self, prompt: Prompt, node_id: Any, into: list[str]) -> None:
        node = prompt.node_ids.get(str(node_id))
        if node is not None and node not in into:
            into.append(node)

    @staticmethod
    def _owner(prompt: Prompt, node_id: Any) -> str | None:
        """The prompt node a helper node (`<id>_scheduler`, `<id>_mask`) was made for."""
        text = str(node_id)
        for diffgraph_id, node in prompt.node_ids.items():
            if text.startswith(f"{diffgraph_id}_"):
                return node
        return None

    def _finish(self, prompt: Prompt, event: dict[str, Any], now: int) -> None:
        pid, client, kind = prompt.prompt_id, prompt.client_id, event["type"]
        if kind == "run_finished":
            for node, images in self.images(prompt, event.get("outputs") or {}).items():
                self.send(client, "executed", {"node": node, "display_node": node, "output": {"images": images},
                                               "prompt_id": pid})
            self.send(client, "execution_success", {"prompt_id": pid, "timestamp": now})
        else:
            failed = prompt.node_ids.get(str(event.get("node")))
            failed = failed or self._owner(prompt, event.get("node"))
            node_type = prompt.prompt.get(failed, {}).get("class_type") if failed else None
            data = {"prompt_id": pid, "node_id": failed, "node_type": node_type, "executed": prompt.executed,
                    "timestamp": now}
            if kind == "run_failed":
                data.update({"exception_message": event.get("error") or "the run failed",
                             "exception_type": "diffgraph.RunFailed", "traceback": [], "current_inputs": {},
                             "current_outputs": {}})
                self.send(client, "execution_error", data)
            else:
                self.send(client, "execution_interrupted", data)
        self.send(client, "executing", {"node": None, "display_node": None, "prompt_id": pid})
        self.prompts.pop(prompt.run_id, None)
        self.status()

    def on_preview(self, run_id: str, frame: bytes) -> None:
        """A Hub listener for binary frames: diffgraph's preview frame, re-framed the ComfyUI way
        (4-byte event type 1, 4-byte format 1 = JPEG, the JPEG bytes)."""
        prompt = self.prompts.get(run_id)
        if prompt is None or str(prompt.extra_data.get("preview_method", "none")) not in PREVIEW_ON:
            return
        if len(frame) < 4:
            return
        header_length = struct.unpack(">I", frame[:4])[0]
        jpeg = frame[4 + header_length:]
        self._push(prompt.client_id, websocket_frame(struct.pack(">II", PREVIEW_IMAGE, JPEG) + jpeg))

    def images(self, prompt: Prompt, outputs: dict[str, list[str]]) -> dict[str, list[dict[str, str]]]:
        """A run's output files (relative to the outputs folder) as ComfyUI's {filename, subfolder, type}."""
        result: dict[str, list[dict[str, str]]] = {}
        for diffgraph_id, names in outputs.items():
            node = prompt.node_ids.get(diffgraph_id)
            if node is None or node not in prompt.outputs:
                continue
            images = []
            for name in names:
                kind, relative = ("temp", name[len("previews/"):]) if name.startswith("previews/") else ("output", name)
                subfolder, _, filename = relative.rpartition("/")
                images.append({"filename": filename, "subfolder": subfolder, "type": kind})
            result[node] = images
        return result

    def history_entry(self, prompt: Prompt, row: sqlite3.Row) -> dict[str, Any]:
        outputs = {node: {"images": images}
                   for node, images in self.images(prompt, json.loads(row["run_outputs"])).items()}
        ok = row["status"] == "succeeded"

        def stamp(iso: Any) -> int:
            return int(float(iso) * 1000) if iso is not None else 0

        cached = [prompt.node_ids[n] for n in json.loads(row["cached"]) if n in prompt.node_ids]
        messages: list[list[Any]] = [["execution_start", {"prompt_id": prompt.prompt_id,
                                                          "timestamp": stamp(row["started_at"])}],
                                     ["execution_cached", {"nodes": cached, "prompt_id": prompt.prompt_id,
                                                           "timestamp": stamp(row["started_at"])}]]
        end = {"prompt_id": prompt.prompt_id, "timestamp": stamp(row["finished_at"])}
        if ok:
            messages.append(["execution_success", end])
        elif row["status"] == "failed":
            node = prompt.node_ids.get(row["failed_node"] or "") or self._owner(prompt, row["failed_node"])
            messages.append(["execution_error", {**end, "node_id": node,
                                                 "node_type": prompt.prompt.get(node or "", {}).get("class_type"),
                                                 "exception_message": row["error"],
                                                 "exception_type": "diffgraph.RunFailed", "traceback": []}])
        else:
            messages.append(["execution_interrupted", end])
        meta = {node: {"node_id": node, "display_node": node, "parent_node": None, "real_node_id": node}
                for node in outputs}
        return {"prompt": prompt.entry(), "outputs": outputs,
                "status": {"status_str": "success" if ok else "error", "completed": ok, "messages": messages},
                "meta": meta}


COMFY = web.AppKey("comfy", Comfy)


def _text_to_image(folder: Path) -> bool:
    """A bundled model CheckpointLoaderSimple + KSampler can drive: text-conditioned, and a UNet that
    takes the VAE's latent (or the inpainting 2c+1 channels), not a depth UNet."""
    try:
        unet = json.loads((folder / "unet" / "config.json").read_text())
        vae = json.loads((folder / "vae" / "config.json").read_text())
    except (OSError, ValueError):
        return False
    latent = vae.get("latent_channels", 4)
    return (folder / "text_encoder").is_dir() and unet.get("in_channels") in (latent, 2 * latent + 1)


# ---------------------------------------------------------------------------------------------
# errors in ComfyUI's shape


def prompt_error(kind: str, message: str, details: str = "", node_errors: Any = None, status: int = 400,
                 **extra: Any) -> web.Response:
    body = {"error": {"type": kind, "message": message, "details": details, "extra_info": extra},
            "node_errors": node_errors if node_errors is not None else {}}
    return web.json_response(body, status=status)


def node_errors(problems: list[Problem], prompt: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """ComfyUI's node_errors: {node id: {errors: [{type, message, details, extra_info}], class_type,
    dependent_outputs}}; problems about the whole prompt come back separately."""
    by_node: dict[str, Any] = {}
    general: list[str] = []
    for problem in problems:
        if problem.node is None:
            general.append(str(problem))
            continue
        entry = by_node.setdefault(problem.node, {"errors": [], "dependent_outputs": [],
                                                  "class_type": problem.class_type})
        entry["errors"].append({"type": problem.kind, "message": str(problem), "details": problem.message,
                                "extra_info": {"input_name": problem.field}})
    return by_node, general


# ---------------------------------------------------------------------------------------------
# routes

routes = web.RouteTableDef()


def both(method: str, path: str):
    """Register a handler at `path` and at `/api{path}`, as ComfyUI does."""

    def register(handler):
        routes.route(method, path)(handler)
        routes.route(method, f"/api{path}")(handler)
        return handler

    return register


def _translate_and_check(app: web.Application, prompt: Any, targets: list[str] | None) -> Translation:
    comfy = app[COMFY]
    translation = translate_prompt(prompt, comfy.resolvers(), targets)
    try:
        server.compile_checked(app, translation.document, {})
    except WorkflowError as exc:
        reverse = translation.node_ids
        problems = []
        for issue in exc.issues:
            node = reverse.get(issue.node or "") or (Comfy._owner(_as_prompt(translation), issue.node)
                                                      if issue.node else None)
            problems.append(Problem(node, translation.class_types.get(node or ""), issue.field, issue.message))
        raise ComfyError(problems) from None
    return translation


def _as_prompt(translation: Translation) -> Prompt:
    return Prompt("", "", None, {}, {}, [], translation.node_ids)


@both("POST", "/prompt")
async def post_prompt(request: web.Request) -> web.Response:
    app = request.app
    try:
        body = await server.read_json_object(request)
    except RequestError as exc:
        return prompt_error("invalid_prompt", exc.message, status=exc.status)
    prompt = body.get("prompt")
    if not isinstance(prompt, dict) or not prompt:
        return prompt_error("no_prompt", "No prompt provided",
                            "'prompt' must be an object of node id -> {class_type, inputs} (ComfyUI's API format)")
    client_id = body.get("client_id")
    if client_id is not None and (not isinstance(client_id, str) or len(client_id) > MAX_CLIENT_ID):
        return prompt_error("invalid_prompt", "client_id must be a string of at most 200 characters")
    prompt_id = body.get("prompt_id") or str(uuid.uuid4())
    if not isinstance(prompt_id, str) or len(prompt_id) > MAX_CLIENT_ID:
        return prompt_error("invalid_prompt", "prompt_id must be a string of at most 200 characters")
    extra_data = body.get("extra_data") or {}
    if not isinstance(extra_data, dict):
        return prompt_error("invalid_prompt", "extra_data must be an object")
    targets = body.get("partial_execution_targets")
    if targets is not None and (not isinstance(targets, list) or not all(isinstance(t, str) for t in targets)):
        return prompt_error("invalid_prompt", "partial_execution_targets must be a list of output node ids")
    comfy = app[COMFY]
    if comfy.store.by_prompt(prompt_id) is not None:
        return prompt_error("invalid_prompt", f"prompt_id {prompt_id!r} is already used; send another or none")
    loop = asyncio.get_running_loop()
    try:
        translation = await loop.run_in_executor(app[server.VALIDATOR], _translate_and_check, app, prompt, targets)
    except ComfyError as exc:
        errors, general = node_errors(exc.problems, prompt)
        whole = [p for p in exc.problems if p.kind in ("invalid_prompt", "prompt_no_outputs")]
        kind = whole[0].kind if whole else "prompt_outputs_failed_validation"
        message = str(whole[0]) if whole else general[0] if general else "Prompt outputs failed validation"
        return prompt_error(kind, message, "; ".join(str(p) for p in exc.problems), errors)
    if comfy.store.by_prompt(prompt_id) is not None:  # again: another request may have taken it meanwhile
        return prompt_error("invalid_prompt", f"prompt_id {prompt_id!r} is already used; send another or none")
    loop = asyncio.get_running_loop()

    def announce(run: dict[str, Any]) -> None:  # on the store thread, before a worker can take the run
        record = Prompt(prompt_id, run["id"], client_id, prompt, extra_data, translation.outputs,
                        translation.node_ids, run["seq"])
        comfy.store.add(record)
        comfy.prompts[run["id"]] = record  # the prompt is known before any of its run's events
        app[server.HUB].publish_event_threadsafe(loop, {"type": "run_queued", "run_id": run["id"], "seq": run["seq"],
                                                        "name": run["name"]})

    run = await server.in_store(app, app[server.STORE].add_run, translation.document, {}, None, announce)
    app[server.WORKER].wake()
    return web.json_response({"prompt_id": prompt_id, "number": run["seq"], "node_errors": {}})


@both("GET", "/prompt")
async def get_prompt(request: web.Request) -> web.Response:
    return web.json_response({"exec_info": {"queue_remaining": request.app[COMFY].store.remaining()}})


@both("GET", "/queue")
async def get_queue(request: web.Request) -> web.Response:
    store = request.app[COMFY].store
    return web.json_response({"queue_running": [p.entry() for p, _ in store.with_status(("running",))],
                              "queue_pending": [p.entry() for p, _ in store.with_status(("queued",))]})


async def _optional_json(request: web.Request) -> dict[str, Any]:
    if not request.can_read_body:
        return {}
    if request.content_length is not None and request.content_length > MAX_FIELD_BYTES:
        raise RequestError(413, f"request body too large (limit {MAX_FIELD_BYTES} bytes)")
    raw = await request.read()  # bounded by the application's client_max_size too
    if len(raw) > MAX_FIELD_BYTES:
        raise RequestError(413, f"request body too large (limit {MAX_FIELD_BYTES} bytes)")
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except ValueError as exc:
        raise RequestError(400, f"request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise RequestError(400, "request body must be a JSON object")
    return body


def _id_list(body: dict[str, Any], name: str) -> list[str]:
    ids = body.get(name, [])
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise RequestError(400, f"'{name}' must be a list of prompt ids", field=name)
    return ids


@both("POST", "/queue")
async def post_queue(request: web.Request) -> web.Response:
    """{"clear": true} cancels every pending ComfyUI prompt; {"delete": [ids]} those pending ones."""
    body = await _optional_json(request)
    comfy, worker = request.app[COMFY], request.app[server.WORKER]
    pending = {p.prompt_id: p for p, _ in comfy.store.with_status(("queued",))}
    chosen = list(pending) if body.get("clear") is True else [i for i in _id_list(body, "delete") if i in pending]
    for prompt_id in chosen:
        if worker.cancel(pending[prompt_id].run_id) == "cancelled":
            request.app[server.HUB].publish_event({"type": "run_cancelled", "run_id": pending[prompt_id].run_id,
                                                   "status": "cancelled"})
    comfy.store.forget(chosen)  # ComfyUI drops deleted prompts: they appear in no history
    return web.json_response({})


@both("GET", "/history")
async def get_history(request: web.Request) -> web.Response:
    text = request.query.get("max_items", "")
    limit = 10_000
    if text:
        if not text.isdigit() or not 1 <= int(text) <= 10_000:
            raise RequestError(400, "max_items must be an integer between 1 and 10000", field="max_items")
        limit = int(text)
    comfy = request.app[COMFY]
    found = comfy.store.with_status(("succeeded", "failed", "cancelled"), limit)
    return web.json_response({p.prompt_id: comfy.history_entry(p, row) for p, row in found})


@both("GET", "/history/{prompt_id}")
async def get_history_item(request: web.Request) -> web.Response:
    comfy = request.app[COMFY]
    found = comfy.store.by_prompt(request.match_info["prompt_id"])
    if found is None or found[1]["status"] not in ("succeeded", "failed", "cancelled"):
        return web.json_response({})  # ComfyUI answers {} for prompts not finished (or unknown)
    return web.json_response({found[0].prompt_id: comfy.history_entry(*found)})


@both("GET", "/view")
async def view(request: web.Request) -> web.StreamResponse:
    filename = request.query.get("filename", "")
    subfolder = request.query.get("subfolder", "")
    kind = request.query.get("type", "output") or "output"
    if kind not in FOLDER_TYPES:
        raise RequestError(400, f"type must be one of {', '.join(FOLDER_TYPES)}", field="type")
    if not filename or "/" in filename:
        raise RequestError(400, "filename must be a file name (put folders in subfolder)", field="filename")
    name = f"{subfolder.strip('/')}/{filename}" if subfolder.strip("/") else filename
    path = contained(request.app[COMFY].roots()[kind], name)
    if any(part.startswith(".") for part in name.split("/")) or not path.is_file():
        raise RequestError(404, f"no {kind} file {name!r}")
    content_type = server.IMAGE_TYPES.get(path.suffix.lower())
    headers = {"Content-Security-Policy": server.USER_CONTENT_CSP, "X-Content-Type-Options": "nosniff",
               "Content-Disposition": f'{"inline" if content_type else "attachment"}; '
                                      f'filename="{server._ascii_name(path.name)}"'}
    response = web.FileResponse(path, headers=headers)
    response.content_type = content_type or "application/octet-stream"
    return response


async def _read_form(request: web.Request) -> tuple[bytes | None, str, dict[str, str]]:
    """The multipart form: the `image` file's bytes and name, and the small text fields."""
    if not request.content_type.startswith("multipart/"):
        raise RequestError(415, "send the image as multipart/form-data (field 'image')")
    max_upload_bytes = request.app[server.CONFIG].max_upload_bytes
    if request.content_length is not None and request.content_length > max_upload_bytes + 256 * 1024:
        raise RequestError(413, f"upload too large (limit {max_upload_bytes} bytes)")
    data, filename, fields = None, "", {}
    try:
        reader = await request.multipart()
        for _ in range(16):
            part = await reader.next()
            if part is None:
                break
            if not isinstance(part, BodyPartReader):
                raise RequestError(400, "nested multipart bodies are not accepted")
            if part.name == "image" and data is None:
                filename = part.filename or ""
                data = await server._read_limited(part, max_upload_bytes)
            elif part.name:
                raw = await part.read_chunk(MAX_FIELD_BYTES)
                if await part.read_chunk(1):
                    raise RequestError(413, f"form field {part.name!r} is too long", field=part.name)
                fields[part.name] = raw.decode("utf-8", errors="replace")
            else:
                await part.release()
    except (ValueError, AssertionError, LookupError, HttpProcessingError, asyncio.IncompleteReadError) as exc:
        raise RequestError(400, f"malformed multipart body: {exc}") from None
    return data, filename, fields


def _target(comfy: Comfy, fields: dict[str, str], filename: str) -> tuple[Path, str, str, str]:
    kind = fields.get("type") or "input"
    if kind not in ("input", "temp"):
        raise RequestError(400, "type must be input or temp (uploads never go into the output folder)", field="type")
    name = Path(filename.replace("\\", "/")).name
    if not UPLOAD_NAME.match(name):
        raise RequestError(400, f"file name {filename!r}: use 1-200 letters, digits, spaces and . _ ( ) + -, "
                                "starting with a letter or digit", field="image")
    subfolder = fields.get("subfolder", "").strip("/")
    if subfolder and (len(subfolder) > 200 or not all(UPLOAD_NAME.match(p) for p in subfolder.split("/"))):
        raise RequestError(400, f"subfolder {subfolder!r}: folder names of letters, digits, spaces and . _ ( ) + -",
                           field="subfolder")
    root = comfy.roots()[kind]
    folder = contained(root, subfolder) if subfolder else root.resolve()
    overwrite = fields.get("overwrite", "").lower() in ("true", "1")
    path = folder / name
    stem, suffix = Path(name).stem, Path(name).suffix
    counter = 1
    while not overwrite and path.exists():
        path = folder / f"{stem} ({counter}){suffix}"
        counter += 1
    if path.is_symlink() or (path.exists() and not path.is_file()):
        raise RequestError(409, f"{path.name!r} exists and is not a regular file", field="image")
    return path, path.name, subfolder, kind


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    server.write_atomically(path, data)


@both("POST", "/upload/image")
async def upload_image(request: web.Request) -> web.Response:
    data, filename, fields = await _read_form(request)
    if data is None:
        raise RequestError(400, "no file part named 'image' in the form", field="image")
    server._sniff_image(data, request.app[server.CONFIG].access.max_image_pixels)
    path, name, subfolder, kind = _target(request.app[COMFY], fields, filename or "upload.png")
    _write(path, data)
    return web.json_response({"name": name, "subfolder": subfolder, "type": kind})


@both("POST", "/upload/mask")
async def upload_mask(request: web.Request) -> web.Response:
    """ComfyUI's mask editor upload: the mask's alpha becomes the alpha of `original_ref`'s picture,
    saved as a PNG under the uploaded name."""
    from PIL import Image

    data, filename, fields = await _read_form(request)
    if data is None:
        raise RequestError(400, "no file part named 'image' in the form", field="image")
    config = request.app[server.CONFIG]
    server._sniff_image(data, config.access.max_image_pixels)
    try:
        ref = json.loads(fields.get("original_ref", ""))
        assert isinstance(ref, dict) and isinstance(ref.get("filename"), str)
    except (ValueError, AssertionError):
        raise RequestError(400, "original_ref must be JSON {filename, subfolder, type} of an uploaded image",
                           field="original_ref") from None
    comfy = request.app[COMFY]
    kind = ref.get("type") or "input"
    if kind not in FOLDER_TYPES:
        raise RequestError(400, f"original_ref.type must be one of {', '.join(FOLDER_TYPES)}", field="original_ref")
    sub = str(ref.get("subfolder") or "").strip("/")
    original = comfy.image_path(f"{sub}/{ref['filename']}" if sub else ref["filename"]) if kind == "input" else None
    if kind != "input":
        original = comfy.image_path(f"{sub}/{ref['filename']} [{kind}]" if sub else f"{ref['filename']} [{kind}]")
    if original is None:
        raise RequestError(404, f"no {kind} image {ref['filename']!r} to apply the mask to", field="original_ref")
    try:
        server._sniff_image(read_regular(original, config.max_upload_bytes), config.access.max_image_pixels)
    except (OSError, ValueError) as exc:  # not a regular file, or larger than an upload may be
        raise RequestError(400, f"the {kind} image {ref['filename']!r} cannot be used: {exc}",
                           field="original_ref") from None
    with Image.open(original) as picture, Image.open(io.BytesIO(data)) as mask:
        result = picture.convert("RGBA")
        alpha = mask.convert("RGBA").getchannel("A").resize(result.size)
        result.putalpha(alpha)
    buffer = io.BytesIO()
    result.save(buffer, format="PNG")
    path, name, subfolder, kind = _target(comfy, fields, Path(filename or "mask.png").stem + ".png")
    _write(path, buffer.getvalue())
    return web.json_response({"name": name, "subfolder": subfolder, "type": kind})


def _class_info(comfy: Comfy, class_type: str) -> dict[str, Any]:
    spec = CLASSES[class_type]
    required: dict[str, Any] = {}
    for name, input_spec in spec["inputs"].items():
        entry = [list(x) if isinstance(x, list) else x for x in input_spec]
        if class_type == "CheckpointLoaderSimple" and name == "ckpt_name":
            entry[0] = list(comfy.models())
        elif name == "lora_name":
            entry[0] = list(comfy.loras())
        elif class_type == "ControlNetLoader" and name == "control_net_name":
            entry[0] = list(comfy.controlnets())
        elif class_type in ("LoadImage", "LoadImageMask") and name == "image":
            entry[0] = comfy.input_files()
        required[name] = entry
    outputs = spec["outputs"]
    return {"input": {"required": required, "optional": {}, "hidden": {}},
            "input_order": {"required": list(required), "optional": []},
            "output": outputs, "output_is_list": [False] * len(outputs), "output_name": outputs,
            "name": class_type, "display_name": class_type, "description": spec.get("description", ""),
            "python_module": "diffgraph", "category": spec["category"],
            "output_node": bool(spec.get("output_node")), "deprecated": False, "experimental": False}


@both("GET", "/object_info")
async def object_info(request: web.Request) -> web.Response:
    comfy = request.app[COMFY]
    return web.json_response({name: _class_info(comfy, name) for name in CLASSES})


@both("GET", "/object_info/{class_type}")
async def object_info_one(request: web.Request) -> web.Response:
    class_type = request.match_info["class_type"]
    if class_type not in CLASSES:
        raise RequestError(404, f"no node class {class_type!r}; supported: {', '.join(CLASSES)}")
    return web.json_response({class_type: _class_info(request.app[COMFY], class_type)})


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


@both("GET", "/system_stats")
async def system_stats(request: web.Request) -> web.Response:
    page = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 0
    total = page * os.sysconf("SC_PHYS_PAGES") if page else 0
    free = page * os.sysconf("SC_AVPHYS_PAGES") if page else 0
    device = request.app[server.CONFIG].device
    vram_total = vram_free = 0
    torch = sys.modules.get("torch")  # only when already loaded: a stats request must not import torch
    if torch is not None and device.startswith("cuda") and torch.cuda.is_available():
        vram_free, vram_total = torch.cuda.mem_get_info()
    return web.json_response({
        "system": {"os": platform.system().lower(), "ram_total": total, "ram_free": free,
                   "comfyui_version": f"diffgraph {server.VERSION}", "diffgraph_version": server.VERSION,
                   "python_version": sys.version, "pytorch_version": _version("torch"), "embedded_python": False,
                   "argv": []},
        "devices": [{"name": device, "type": device.split(":")[0], "index": 0, "vram_total": vram_total,
                     "vram_free": vram_free, "torch_vram_total": vram_total, "torch_vram_free": vram_free}]})


@both("GET", "/embeddings")
async def embeddings(request: web.Request) -> web.Response:
    return web.json_response([])  # diffgraph loads no textual-inversion embeddings


@both("POST", "/interrupt")
async def interrupt(request: web.Request) -> web.Response:
    """Cancel the running run (only if it is `prompt_id`'s, when the body names one)."""
    body = await _optional_json(request)
    worker = request.app[server.WORKER]
    running = worker.current_run
    wanted = body.get("prompt_id")
    if running is not None:
        prompt = request.app[COMFY].prompt_of(running)
        if wanted is None or (prompt is not None and prompt.prompt_id == wanted):
            worker.cancel(running)
    return web.json_response({})


@both("POST", "/free")
async def free(request: web.Request) -> web.Response:
    """`unload_models`: drop the loaded models; `free_memory`: also empty the in-memory result cache.
    The disk cache stays (it is what makes a re-run cheap)."""
    body = await _optional_json(request)
    executor = request.app[server.WORKER].executor
    if body.get("unload_models") is True or body.get("free_memory") is True:
        executor.services.pop("models", None)
    if body.get("free_memory") is True:
        executor.cache.memory.clear()
    return web.json_response({})


async def websocket(request: web.Request) -> web.StreamResponse:
    """GET /ws?clientId=: ComfyUI's message stream for that client id (status first)."""
    client_id = request.query.get("clientId") or uuid.uuid4().hex
    if len(client_id) > MAX_CLIENT_ID:
        raise RequestError(400, "clientId is longer than 200 characters", field="clientId")
    ws = web.WebSocketResponse(heartbeat=30, max_msg_size=64 * 1024, compress=False)
    if not ws.can_prepare(request).ok:
        raise RequestError(400, "this route is a WebSocket: connect with a WebSocket client")
    comfy = request.app[COMFY]
    subscriber = Subscriber(None, request.app[server.HUB].max_pending)
    comfy.clients.setdefault(client_id, set()).add(subscriber)

    def leave() -> None:
        subscribers = comfy.clients.get(client_id)
        if subscribers is not None:
            subscribers.discard(subscriber)
            if not subscribers:
                comfy.clients.pop(client_id, None)

    try:
        await ws.prepare(request)
    except BaseException:
        leave()
        raise
    comfy.status(client_id, sid=client_id)
    transport = request.transport
    if transport is None:
        leave()
        return ws

    return await server.stream_frames(ws, transport, subscriber, leave)


def setup(app: web.Application) -> None:
    """Add the ComfyUI routes and listen to the Hub's events (called by make_app)."""
    comfy = Comfy(app)
    app[COMFY] = comfy
    app.add_routes(routes)
    app[server.HUB].listeners.append(comfy.on_event)
    app[server.HUB].binary_listeners.append(comfy.on_preview)

    async def close_clients(app: web.Application) -> None:
        for subscribers in list(comfy.clients.values()):
            for subscriber in list(subscribers):
                subscriber.close()
        comfy.clients.clear()

    app.on_shutdown.insert(0, close_clients)
