"""Helpers for the server tests: a real `diffgraph serve` subprocess on a loopback port with a real
SQLite file, and small aiohttp client helpers. The server sees the test node pack in
tests/server/pack (TestSleep, TestWriteFile, TestFail, TestExit)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import aiohttp

PACK = Path(__file__).resolve().parent / "pack"
READY = re.compile(r"diffgraph serving on http://(\S+):(\d+)")


class Server:
    """One server process. `url` is its base URL; `stop()` is SIGTERM, `kill()` is SIGKILL."""

    def __init__(self, data_dir: Path, *args: str, env: dict[str, str] | None = None, wait: bool = True):
        self.data_dir = data_dir
        self.log_path = data_dir.parent / f"{data_dir.name}-server-{time.monotonic_ns()}.log"
        environment = dict(os.environ)
        environment["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PACK), environment.get("PYTHONPATH")]))
        environment.pop("DIFFGRAPH_TOKEN", None)
        # one torch thread: the CPUs free at each run ("auto") vary with the load, and with them the
        # float rounding, so two servers' pictures of one prompt could differ in a bit
        environment.setdefault("DIFFGRAPH_THREADS", "1")
        environment.update(env or {})
        command = [sys.executable, "-m", "diffgraph.cli", "serve", "--data-dir", str(data_dir)]
        if "--port" not in args:
            command += ["--port", "0"]
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop/kill
        self.proc = subprocess.Popen([*command, *args], stdout=subprocess.PIPE, stderr=self._log, env=environment)
        self.lines: list[str] = []
        self._ready = threading.Event()
        self.host = self.port = None
        threading.Thread(target=self._read_stdout, daemon=True).start()
        if wait:
            self.wait_ready()

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            line = raw.decode(errors="replace").rstrip()
            self.lines.append(line)
            match = READY.search(line)
            if match:
                self.host, self.port = match.group(1), int(match.group(2))
                self._ready.set()
        self._ready.set()

    def wait_ready(self, timeout: float = 60) -> None:
        if not self._ready.wait(timeout) or self.port is None:
            self.kill()
            raise RuntimeError(f"server did not start: {self.log()}")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(30)
        self._log.close()
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(30)
        self._log.close()


def workflow(nodes: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"format": "diffgraph/v1", "name": extra.pop("name", "test"), "nodes": nodes, **extra}


def sleep_workflow(seconds: float = 0.1, steps: int = 1, preview: bool = False, label: str = "") -> dict[str, Any]:
    return workflow({"sleep": {"type": "TestSleep",
                               "params": {"seconds": seconds, "steps": steps, "preview": preview, "label": label}}})


async def submit(session: aiohttp.ClientSession, url: str, document: dict[str, Any],
                 params: dict[str, Any] | None = None) -> str:
    body: dict[str, Any] = {"workflow": document}
    if params is not None:
        body["params"] = params
    async with session.post(f"{url}/api/runs", json=body) as response:
        payload = await response.json()
        assert response.status == 202, payload
        return payload["id"]


async def get_run(session: aiohttp.ClientSession, url: str, run_id: str) -> dict[str, Any]:
    async with session.get(f"{url}/api/runs/{run_id}") as response:
        assert response.status == 200
        return await response.json()


async def wait_status(session: aiohttp.ClientSession, url: str, run_id: str, statuses: tuple[str, ...],
                      timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        run = await get_run(session, url, run_id)
        if run["status"] in statuses:
            return run
        if time.monotonic() > deadline:
            raise AssertionError(f"run {run_id} stayed {run['status']}, wanted {statuses}")
        await asyncio.sleep(0.05)


async def next_json(ws: aiohttp.ClientWebSocketResponse, timeout: float = 30) -> dict[str, Any]:
    """The next text frame (binary preview frames are skipped)."""
    while True:
        message = await ws.receive(timeout=timeout)
        if message.type == aiohttp.WSMsgType.TEXT:
            return json.loads(message.data)
        if message.type != aiohttp.WSMsgType.BINARY:
            raise AssertionError(f"websocket closed: {message}")
