"""One worker thread that executes queued runs in order, and the hub that fans events out.

The executor is synchronous, so it runs in its own thread; its events cross to the event loop
with `loop.call_soon_threadsafe`. Terminal events (run_finished/failed/cancelled) are published
only after the run's row is written, so a client that hears "finished" and then asks for the run
sees it finished.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import struct
import threading
from collections import deque
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

from diffgraph.engine import CancelToken, Executor, OptionError, RunOptions, WorkflowError
from diffgraph.engine.plan import Plan

from .store import SERVER_STOPPED, Store

log = logging.getLogger(__name__)

PREVIEW_MAX_SIDE = 512
#: outputs/previews/ (PreviewImage's files) keeps the newest this many files and bytes; older ones go
PREVIEWS_KEEP_FILES = 500
PREVIEWS_KEEP_BYTES = 512 * 1024 * 1024
RETRY_MIN_SECONDS = 0.25
RETRY_MAX_SECONDS = 5.0
TERMINAL_EVENTS = ("run_finished", "run_failed", "run_cancelled")


def websocket_frame(message: str | bytes) -> bytes:
    """One complete, unmasked server-to-client WebSocket frame (RFC 6455): text for str, binary for bytes."""
    payload, opcode = (message.encode(), 0x1) if isinstance(message, str) else (message, 0x2)
    length = len(payload)
    if length < 126:
        header = struct.pack("!BB", 0x80 | opcode, length)
    elif length < 1 << 16:
        header = struct.pack("!BBH", 0x80 | opcode, 126, length)
    else:
        header = struct.pack("!BBQ", 0x80 | opcode, 127, length)
    return header + payload


class Subscriber:
    """One WebSocket client's pending frames. Once its connection is attached, frames go straight
    to the socket while it keeps up; only a client that falls behind has frames queued for its
    sender, which takes everything that piled up at once."""

    def __init__(self, run_id: str | None, max_pending: int):
        self.run_id = run_id
        self.max_pending = max_pending
        self.frames: deque[bytes] = deque()
        self.closed = False
        self._wakeup = asyncio.Event()
        self._transport: asyncio.WriteTransport | None = None
        self._write_limit = 0

    def attach(self, transport: asyncio.WriteTransport, write_limit: int) -> None:
        """Write frames directly to `transport` while less than `write_limit` bytes wait in it."""
        self._transport, self._write_limit = transport, write_limit

    def push(self, frame: bytes) -> bool:
        """False when the client is too far behind; it is then closed."""
        transport = self._transport
        if (transport is not None and not self.frames and not self.closed and not transport.is_closing()
                and transport.get_write_buffer_size() <= self._write_limit):
            transport.write(frame)  # no sender task to wake per client and batch
            return True
        if len(self.frames) >= self.max_pending:
            self.close()
            return False
        self.frames.append(frame)
        self._wakeup.set()
        return True

    def close(self) -> None:
        self.closed = True
        self.frames.clear()
        self._wakeup.set()

    async def take(self) -> list[bytes] | None:
        """Every pending frame (waiting for one), or None once closed."""
        while not self.frames and not self.closed:
            self._wakeup.clear()
            await self._wakeup.wait()
        if self.closed:
            return None
        frames = list(self.frames)
        self.frames.clear()
        return frames


class Hub:
    """WebSocket subscribers on the event loop. A client that falls `max_pending` writes behind is
    dropped rather than letting the server's memory grow.

    The loop's share of the fan-out is kept small: the worker thread encodes its events (JSON and
    WebSocket framing) and hands them over in batches, one loop callback per batch rather than per
    event; a batch goes to every client that follows all runs as one bytes object, in one socket
    write for a client that keeps up."""

    def __init__(self, max_pending: int = 20_000):
        self.max_pending = max_pending
        self._subscribers: set[Subscriber] = set()
        #: also told every event (dict) / binary frame, on the loop: the ComfyUI API's fan-out (comfy.py)
        self.listeners: list[Callable[[dict[str, Any]], None]] = []
        self.binary_listeners: list[Callable[[str, bytes], None]] = []
        self._batch: list[tuple[str, bytes]] = []  # (run id, frame) from other threads, not yet sent
        self._batch_lock = threading.Lock()

    def subscribe(self, run_id: str | None) -> Subscriber:
        subscriber = Subscriber(run_id, self.max_pending)
        self._subscribers.add(subscriber)
        return subscriber

    def unsubscribe(self, subscriber: Subscriber) -> None:
        self._subscribers.discard(subscriber)

    def __len__(self) -> int:
        return len(self._subscribers)

    def publish(self, run_id: str, message: str | bytes) -> None:
        """Called on the event loop only: sent with the batch, after what was handed over before."""
        if isinstance(message, bytes):
            self._tell_binary_listeners(run_id, message)
        self._enqueue(run_id, websocket_frame(message), asyncio.get_running_loop().call_soon)

    def publish_event(self, event: dict[str, Any]) -> None:
        """Called on the event loop only."""
        self._tell_listeners(event)
        self.publish(event["run_id"], encode_event(event))

    def publish_threadsafe(self, loop: asyncio.AbstractEventLoop, run_id: str, message: str | bytes) -> None:
        """From another thread: encode here, send from the loop with the rest of the batch."""
        if isinstance(message, bytes) and self.binary_listeners:
            loop.call_soon_threadsafe(self._tell_binary_listeners, run_id, message)
        self._enqueue(run_id, websocket_frame(message), loop.call_soon_threadsafe)

    def publish_event_threadsafe(self, loop: asyncio.AbstractEventLoop, event: dict[str, Any]) -> None:
        """From another thread: the listeners get the event on the loop; the frame joins the batch."""
        if self.listeners:
            loop.call_soon_threadsafe(self._tell_listeners, event)
        self._enqueue(event["run_id"], websocket_frame(encode_event(event)), loop.call_soon_threadsafe)

    def _tell_listeners(self, event: dict[str, Any]) -> None:
        for listener in self.listeners:
            try:
                listener(event)
            except Exception:  # noqa: BLE001 - a listener's bug must not stop the run's own events
                log.exception("event listener failed on %s", event.get("type"))

    def _tell_binary_listeners(self, run_id: str, message: bytes) -> None:
        for listener in self.binary_listeners:
            try:
                listener(run_id, message)
            except Exception:  # noqa: BLE001
                log.exception("preview listener failed")

    def _enqueue(self, run_id: str, frame: bytes, schedule: Callable[[Callable[[], None]], Any]) -> None:
        with self._batch_lock:
            self._batch.append((run_id, frame))
            first = len(self._batch) == 1
        if first:  # one callback per batch: later events join this one until the loop runs it
            schedule(self.flush)

    def flush(self) -> None:
        """Send what other threads handed over. Called on the event loop only."""
        with self._batch_lock:
            batch, self._batch = self._batch, []
        if batch:
            self._send(batch)

    def _send(self, batch: list[tuple[str, bytes]]) -> None:
        everything: bytes | None = None
        per_run: dict[str, bytes] = {}
        for subscriber in list(self._subscribers):
            if subscriber.run_id is None:
                if everything is None:
                    everything = b"".join(frame for _, frame in batch)
                data = everything
            else:
                if subscriber.run_id not in per_run:
                    per_run[subscriber.run_id] = b"".join(f for r, f in batch if r == subscriber.run_id)
                data = per_run[subscriber.run_id]
            if data and not subscriber.push(data):
                self.unsubscribe(subscriber)

    def close_all(self) -> None:
        for subscriber in list(self._subscribers):
            self.unsubscribe(subscriber)
            subscriber.close()


def encode_event(event: dict[str, Any]) -> str:
    return json.dumps(event, ensure_ascii=False, default=str)


def preview_frame(run_id: str, node: str, step: int, total: int, image: Any) -> bytes | None:
    """A binary WebSocket frame: 4-byte big-endian header length, a JSON header, then JPEG bytes."""
    if not hasattr(image, "save") or not hasattr(image, "thumbnail"):
        return None  # previews are PIL images by convention; anything else is not sent
    image = image.copy()
    image.thumbnail((PREVIEW_MAX_SIDE, PREVIEW_MAX_SIDE))
    if image.mode not in ("RGB", "L"):
        image = image.convert("RGB")
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=80)
    header = json.dumps({"type": "preview", "run_id": run_id, "node": node, "step": step, "total": total,
                         "format": "jpeg"}).encode()
    return struct.pack(">I", len(header)) + header + buffer.getvalue()


class Worker:
    """Claims queued runs from the store one at a time and executes them on one thread."""

    def __init__(self, store: Store, executor: Executor, compile_run: Callable[[dict[str, Any]], Plan],
                 outputs_root: Path, device: str, dtype: str, *, previews_keep_files: int = PREVIEWS_KEEP_FILES,
                 previews_keep_bytes: int = PREVIEWS_KEEP_BYTES, options: RunOptions | None = None):
        #: the runs' speed and memory options where a run's request gave none (serve's flags)
        self.options = options or RunOptions()
        self.previews_keep_files = previews_keep_files
        self.previews_keep_bytes = previews_keep_bytes
        self.store = store
        self.executor = executor
        self.compile_run = compile_run
        self.outputs_root = outputs_root
        self.device = device
        self.dtype = dtype
        self.loop: asyncio.AbstractEventLoop | None = None
        self.hub: Hub | None = None
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._current: tuple[str, CancelToken] | None = None
        self._thread: threading.Thread | None = None
        #: results the database refused to store (a full disk), written before anything else runs
        self._pending_finish: list[tuple[str, dict[str, Any], dict[str, Any]]] = []
        #: why the last attempt to use the database failed; None once it works again
        self._problem: str | None = None

    # -- control, from the event loop ---------------------------------------------------------

    def start(self, loop: asyncio.AbstractEventLoop, hub: Hub) -> None:
        self.loop, self.hub = loop, hub
        self._thread = threading.Thread(target=self._main, name="diffgraph-worker", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    @property
    def current_run(self) -> str | None:
        current = self._current
        return current[0] if current else None

    def cancel(self, run_id: str) -> str | None:
        """'cancelled' when it was still queued, 'cancelling' when it is running, None otherwise."""
        with self._lock:
            if self.store.cancel_queued(run_id):
                return "cancelled"
            if self._current is not None and self._current[0] == run_id:
                self._current[1].cancel()
                return "cancelling"
        return None

    def stop(self, timeout: float = 10.0) -> bool:
        """Stop after the current run; a run still executing is cancelled and marked 'server stopped'.
        False when the thread is still busy after `timeout` (a node that never checks cancellation):
        the run then stays 'running' in the database and the next start marks it failed."""
        self._stopping.set()
        with self._lock:
            if self._current is not None:
                self._current[1].cancel()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            return not self._thread.is_alive()
        return True

    # -- the thread ---------------------------------------------------------------------------

    @property
    def state(self) -> tuple[str, str | None]:
        """("idle" | "running" | "retrying" | "stopped", the last error while retrying or stopped)."""
        if self._thread is None or not self._thread.is_alive():
            return "stopped", self._problem or "the worker thread is not running"
        if self._problem is not None:
            return "retrying", self._problem
        return ("running" if self._current is not None else "idle"), None

    def _main(self) -> None:
        """Never ends before stop(): whatever fails (a full disk, a bug in a node) is recorded and
        retried, so one bad moment cannot leave runs `running` or `queued` for good."""
        delay = RETRY_MIN_SECONDS
        while not self._stopping.is_set():
            try:
                if self._pending_finish:  # a result the database refused (full disk): write it first
                    run_id, fields, event = self._pending_finish[0]
                    self.store.finish_run(run_id, **fields)
                    self._pending_finish.pop(0)
                    self._publish(event)
                    self._problem, delay = None, RETRY_MIN_SECONDS
                    continue
                if not self._run_next():
                    self._problem, delay = None, RETRY_MIN_SECONDS
                    self._wake.wait(1.0)
                    self._wake.clear()
                else:
                    self._problem, delay = None, RETRY_MIN_SECONDS
            except BaseException as exc:  # noqa: BLE001 - the worker must survive anything
                problem = f"{type(exc).__name__}: {exc}"
                if problem != self._problem:  # the traceback once, not every few seconds
                    log.exception("the worker failed (%s); retrying", problem)
                else:
                    log.warning("the worker failed again (%s); retrying in %.1f s", problem, delay)
                self._problem = problem
                self._stopping.wait(delay)
                delay = min(delay * 2, RETRY_MAX_SECONDS)

    def _run_next(self) -> bool:
        """Claim and execute the oldest queued run; False when there is none."""
        with self._lock:
            record = self.store.claim_next()
            token = CancelToken()
            self._current = (record["id"], token) if record else None
        if record is None:
            return False
        try:
            self._execute(record, token)
        except BaseException as exc:  # noqa: BLE001 - a failing run (even sys.exit in a node) must not take the worker with it
            if any(pending[0] == record["id"] for pending in self._pending_finish):
                raise  # its result is kept and retried: the database, not the run, is what failed
            log.exception("run %s failed outside its nodes", record["id"])
            reason = f"the server could not finish the run: {type(exc).__name__}: {exc}"
            self._finish(record["id"], {"status": "failed", "error": reason},
                         {"type": "run_failed", "run_id": record["id"], "status": "failed", "error": reason})
        finally:
            with self._lock:
                self._current = None
        return True

    def _finish(self, run_id: str, fields: dict[str, Any], event: dict[str, Any]) -> None:
        """Write a run's result and then tell the listeners; a write the database refuses (disk full) is
        kept and retried by the loop before anything else runs, so the run is never left `running`."""
        try:
            self.store.finish_run(run_id, **fields)
        except Exception:
            self._pending_finish.append((run_id, fields, event))
            raise
        self._publish(event)

    def _execute(self, record: dict[str, Any], token: CancelToken) -> None:
        run_id = record["id"]
        try:
            plan = self.compile_run(record)
            options = RunOptions.from_json(record.get("options") or None, self.options)
        except OptionError as exc:  # stored at submit, checked then: only a database edited by hand
            self._finish(run_id, {"status": "failed", "error": f"invalid options: {exc}"},
                         {"type": "run_failed", "run_id": run_id, "status": "failed", "error": f"invalid options: {exc}"})
            return
        except WorkflowError as exc:
            problems = "; ".join(str(issue) for issue in exc.issues)
            self._finish(run_id, {"status": "failed", "error": f"invalid workflow: {problems}"},
                         {"type": "run_failed", "run_id": run_id, "status": "failed",
                          "error": f"invalid workflow: {problems}"})
            return

        def on_event(event: dict[str, Any]) -> None:
            if event["type"] in TERMINAL_EVENTS:
                return  # re-sent below, after the row is written
            if event["type"] == "progress":
                preview = event.pop("preview", None)
                if preview is not None:
                    frame = preview_frame(run_id, event["node"], event["step"], event["total"], preview)
                    if frame is not None:
                        self._publish_bytes(run_id, frame)
            self._publish(event)

        result = self.executor.run(plan, device=self.device, dtype=self.dtype, output_dir=self.outputs_root,
                                   cancel=token, on_event=on_event, run_id=run_id, options=options)
        outputs = {node: self._names(paths) for node, paths in result.outputs.items()}
        error: str | None = result.error
        status = result.status
        if status == "cancelled" and self._stopping.is_set():
            status, error = "failed", SERVER_STOPPED
        if any(name.startswith("previews/") for names in outputs.values() for name in names):
            protect = {self.outputs_root.resolve() / name for names in outputs.values() for name in names}
            prune_previews(self.outputs_root / "previews", self.previews_keep_files, self.previews_keep_bytes, protect)
        kind = {"succeeded": "run_finished", "failed": "run_failed", "cancelled": "run_cancelled"}[status]
        self._finish(run_id, {"status": status, "outputs": outputs, "values": result.values,
                              "executed": result.executed, "cached": result.cached, "seconds": result.seconds,
                              "error": error, "failed_node": result.failed_node},
                     {"type": kind, "run_id": run_id, "status": status, "outputs": outputs,
                      "executed": result.executed, "cached": result.cached, "error": error,
                      "node": result.failed_node})

    def _names(self, paths: list[str]) -> list[str]:
        """Output files as names relative to the outputs root; files written elsewhere are not served."""
        root = self.outputs_root.resolve()
        names = []
        for path in paths:
            resolved = Path(path).resolve()
            if resolved.is_relative_to(root):
                names.append(resolved.relative_to(root).as_posix())
            else:
                log.warning("output %s is outside the outputs folder %s; not served", path, root)
        return names

    def _publish(self, event: dict[str, Any]) -> None:
        if self.loop is None or self.hub is None:
            return
        try:
            self.hub.publish_event_threadsafe(self.loop, event)
        except RuntimeError:  # the loop closed during shutdown
            pass

    def _publish_bytes(self, run_id: str, message: str | bytes) -> None:
        if self.loop is None or self.hub is None:
            return
        try:
            self.hub.publish_threadsafe(self.loop, run_id, message)
        except RuntimeError:  # the loop closed during shutdown
            pass


def prune_previews(folder: Path, keep_files: int, keep_bytes: int, protect: Collection[Path] = ()) -> int:
    """Delete the oldest preview files until at most `keep_files` files and `keep_bytes` bytes are left
    (files in `protect`, the run that just finished, stay whatever their age). Returns how many went.

    Previews are for looking at while a workflow is being built; SaveImage's files are never pruned."""
    try:
        entries = [entry for entry in os.scandir(folder) if entry.is_file(follow_symlinks=False)
                   and not entry.name.startswith(".")]  # hidden: a file still being written
    except OSError:
        return 0
    files = []
    for entry in entries:
        try:
            info = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        files.append((info.st_mtime_ns, entry.name, info.st_size, Path(entry.path)))
    files.sort(reverse=True)  # newest first
    kept_files = kept_bytes = removed = 0
    full = False
    for _, _, size, path in files:
        full = full or kept_files >= keep_files or kept_bytes + size > keep_bytes
        if not full or path.resolve() in protect:
            kept_files += 1
            kept_bytes += size
            continue
        try:
            path.unlink()
            removed += 1
        except OSError as exc:
            log.warning("could not remove the old preview %s: %s", path, exc)
    return removed
