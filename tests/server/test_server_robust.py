"""Robustness: what runs is what was validated, bounded YAML, damaged databases, a full disk, odd requests,
bounded previews. Each test drives a real `diffgraph serve` subprocess on a real SQLite file."""

from __future__ import annotations

import asyncio
import gzip
import io
import json
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import urllib.request

import aiohttp
import pytest
from server_support import PACK, Server, sleep_workflow, submit, wait_status, workflow

FINISHED = ("succeeded", "failed", "cancelled")


def subgraph_value(value: int) -> dict:
    return workflow({"n": {"type": "Int", "params": {"value": value}}}, outputs={"v": "n.number"})


async def test_a_run_executes_the_subgraph_it_was_validated_with(server):
    async with aiohttp.ClientSession() as session:
        async with session.put(f"{server.url}/api/workflows/sub1", json={"workflow": subgraph_value(5)}) as response:
            assert response.status in (200, 201)
        busy = await submit(session, server.url, sleep_workflow(1.0, label="keeps the worker busy"))
        await wait_status(session, server.url, busy, ("running",))
        run_id = await submit(session, server.url, workflow({"s": {"type": "workflow:sub1"}}, outputs={"v": "s.v"}))
        # replaced while the run waits: the new document would fail (and was never validated with this run)
        replacement = workflow({"f": {"type": "TestFail", "params": {"reason": "the replaced sub1 ran"}}},
                               outputs={"v": "f.out"})
        async with session.put(f"{server.url}/api/workflows/sub1", json={"workflow": replacement}) as response:
            assert response.status == 200
        assert (await wait_status(session, server.url, busy, FINISHED))["status"] == "succeeded"
        run = await wait_status(session, server.url, run_id, FINISHED)
        assert run["status"] == "succeeded", run["error"]
        assert run["values"] == {"v": 5}
        # a new submission validates (and runs) the library as it is now
        later = await submit(session, server.url, workflow({"s": {"type": "workflow:sub1"}}, outputs={"v": "s.v"}))
        run = await wait_status(session, server.url, later, FINISHED)
        assert run["status"] == "failed" and "the replaced sub1 ran" in run["error"]


def alias_bomb(levels: int = 4) -> str:
    """About 1.3 KB of YAML whose aliases expand to 1,000 x 10**levels characters (100 MB at 5 levels)."""
    lines = [f"s: &s {'x' * 1000}", "l0: &l0 [" + ", ".join(["*s"] * 10) + "]"]
    lines += [f"l{n}: &l{n} [" + ", ".join([f"*l{n - 1}"] * 10) + "]" for n in range(1, levels + 1)]
    lines += ["format: diffgraph/v1", "nodes: {}"]
    return "\n".join(lines) + "\n"


async def test_a_small_yaml_document_cannot_expand_to_megabytes(server):
    bomb = alias_bomb(4)  # 10 MB once expanded
    assert len(bomb) < 1400
    async with aiohttp.ClientSession() as session:
        async with session.put(f"{server.url}/api/workflows/bomb", json={"workflow": bomb}) as response:
            body = await response.json()
            assert response.status == 400, body
            assert "too large once its YAML aliases are expanded" in body["errors"][0]["message"]
        async with session.get(f"{server.url}/api/workflows/bomb") as response:
            assert response.status == 404  # nothing was stored
        async with session.post(f"{server.url}/api/runs", json={"workflow": alias_bomb(5)}) as response:
            body = await response.json()
            assert response.status == 400 and "aliases" in body["errors"][0]["message"], body
        async with session.post(f"{server.url}/api/validate", json={"workflow": alias_bomb(5)}) as response:
            body = await response.json()
            assert response.status == 200 and body["valid"] is False and "aliases" in body["errors"][0]["message"]
    with sqlite3.connect(server.data_dir / "diffgraph.db") as db:
        assert (db.execute("SELECT max(length(workflow)) FROM runs").fetchone()[0] or 0) < 100_000


# ---------------------------------------------------------------------------------------------
# a damaged database


def serve_once(data_dir, timeout: float = 60) -> subprocess.CompletedProcess:
    """`diffgraph serve` that is expected to refuse to start."""
    return subprocess.run([sys.executable, "-m", "diffgraph.cli", "serve", "--port", "0", "--data-dir", str(data_dir)],
                          capture_output=True, text=True, timeout=timeout, env={**os.environ, "PYTHONPATH": os.pathsep.join(
                              filter(None, [str(PACK), os.environ.get("PYTHONPATH")]))})


@pytest.fixture(scope="module")
def stored_database(tmp_path_factory):
    """A real database with history and a library entry, written by a real server and closed cleanly."""
    data = tmp_path_factory.mktemp("stored") / "data"
    server = Server(data)
    try:

        async def fill_store():
            async with aiohttp.ClientSession() as session:
                for i in range(40):
                    await session.put(f"{server.url}/api/workflows/kept{i}", json={"workflow": subgraph_value(i)})
                ids = [await submit(session, server.url, subgraph_value(i)) for i in range(20)]
                await wait_status(session, server.url, ids[-1], FINISHED)

        asyncio.run(fill_store())
    finally:
        assert server.stop() == 0
    return (data / "diffgraph.db").read_bytes()


def health(server: Server) -> dict:
    with urllib.request.urlopen(f"{server.url}/api/health", timeout=30) as response:
        return json.load(response)


def damage(kind: str, path, original: bytes) -> None:
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated":
        path.write_bytes(original[: len(original) // 2 + 100])
    elif kind == "garbage header":
        path.write_bytes(b"this is not a database at all" + original[29:])
    elif kind == "a directory":
        path.mkdir()
    elif kind == "garbage in the middle":
        middle = len(original) // 4096 // 2 * 4096
        path.write_bytes(original[:middle] + os.urandom(8192) + original[middle + 8192:])


@pytest.mark.parametrize("kind", ["empty", "truncated", "garbage header", "a directory", "garbage in the middle"])
def test_a_damaged_database_stops_the_server_with_one_clear_line_and_is_left_as_it_is(tmp_path, stored_database, kind):
    data = tmp_path / "data"
    data.mkdir()
    path = data / "diffgraph.db"
    damage(kind, path, stored_database)
    before = path.read_bytes() if path.is_file() else None
    result = serve_once(data)
    assert result.returncode == 1, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr  # one line, no traceback
    assert str(path) in lines[0] and "Move it aside" in lines[0]
    assert "damaged" in lines[0] or "not a regular file" in lines[0]
    assert "diffgraph serving" not in result.stdout
    if before is not None:
        assert path.read_bytes() == before  # never overwritten, never replaced
    else:
        assert path.is_dir()


def test_a_missing_database_is_a_fresh_start_and_a_sound_one_starts(tmp_path, stored_database):
    fresh = Server(tmp_path / "fresh")
    assert health(fresh)["status"] == "ok"
    assert fresh.stop() == 0
    assert (tmp_path / "fresh" / "diffgraph.db").read_bytes()[:16] == b"SQLite format 3\x00"
    kept = tmp_path / "kept"
    kept.mkdir()
    (kept / "diffgraph.db").write_bytes(stored_database)
    server = Server(kept)
    assert health(server)["status"] == "ok"
    assert server.stop() == 0
    with sqlite3.connect(kept / "diffgraph.db") as db:
        assert db.execute("SELECT count(*) FROM workflows").fetchone()[0] == 40


# ---------------------------------------------------------------------------------------------
# a full disk


@pytest.fixture
def small_disk(tmp_path):
    """A real 8 MB file system (tmpfs) as the data directory; needs root, as on the project's machines."""
    mount_point = tmp_path / "data"
    mount_point.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small tmpfs needs root")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mount_point)], check=True)
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def fill(folder) -> None:
    """Take every free byte of the file system `folder` is on."""
    descriptor = os.open(folder / "filler", os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        for block in (65536, 512, 1):
            try:
                while os.write(descriptor, b"\0" * block):
                    pass
            except OSError:
                pass
    finally:
        os.close(descriptor)


def noise_png(side: int = 256) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.frombytes("RGB", (side, side), os.urandom(side * side * 3)).save(buffer, format="PNG")
    return buffer.getvalue()


async def test_a_full_disk_gives_507s_and_the_worker_records_waits_and_goes_on(small_disk):
    server = Server(small_disk)
    try:
        async with aiohttp.ClientSession() as session:
            before = await submit(session, server.url, sleep_workflow(0.01, label="before"))
            assert (await wait_status(session, server.url, before, FINISHED))["status"] == "succeeded"
            busy = await submit(session, server.url, sleep_workflow(2.0, label="finishes on a full disk"))
            await wait_status(session, server.url, busy, ("running",))
            fill(small_disk)
            big = sleep_workflow(0.01, label="x" * 2_000_000)  # needs new pages whatever the WAL holds
            async with session.post(f"{server.url}/api/runs", json={"workflow": big}) as response:
                body = await response.json()
                assert response.status == 507, body
                assert "disk is full" in body["error"]
            async with session.put(f"{server.url}/api/workflows/big", json={"workflow": big}) as response:
                assert response.status == 507
            form = aiohttp.FormData()
            form.add_field("image", noise_png(), filename="in.png", content_type="image/png")
            async with session.post(f"{server.url}/api/uploads", data=form) as response:
                assert response.status == 507 and "disk is full" in (await response.json())["error"]
            assert list((small_disk / "uploads").iterdir()) == []  # no partial file left behind
            # the busy run ends while the disk is full: its result cannot be written; the worker says so
            for _ in range(300):
                async with session.get(f"{server.url}/api/health") as response:
                    state = await response.json()
                if state["worker"] == "retrying":
                    break
                await asyncio.sleep(0.05)
            assert response.status == 503 and state["status"] == "degraded", state
            assert "full" in state["problem"]
            (small_disk / "filler").unlink()  # room again: the worker writes the result and goes on
            run = await wait_status(session, server.url, busy, FINISHED)
            assert run["status"] == "succeeded"
            after = await submit(session, server.url, sleep_workflow(0.01, label="after"))
            assert (await wait_status(session, server.url, after, FINISHED))["status"] == "succeeded"
            async with session.get(f"{server.url}/api/health") as response:
                assert response.status == 200 and (await response.json())["worker"] in ("idle", "running")
            async with session.get(f"{server.url}/api/workflows/big") as response:
                assert response.status == 404
    finally:
        server.stop()
    assert "Traceback" not in server.log().split("the worker failed")[0]  # nothing but the worker's own report


async def test_a_node_that_exits_the_process_fails_its_run_and_the_worker_goes_on(tmp_path):
    server = Server(tmp_path / "data")  # its own: the node's bug is logged with its traceback, as it should be
    async with aiohttp.ClientSession() as session:
        exiting = await submit(session, server.url, workflow({"x": {"type": "TestExit", "params": {"code": 3}}}))
        run = await wait_status(session, server.url, exiting, FINISHED)
        assert run["status"] == "failed" and "SystemExit" in run["error"], run
        after = await submit(session, server.url, sleep_workflow(0.01, label="after the exit"))
        assert (await wait_status(session, server.url, after, FINISHED))["status"] == "succeeded"
        async with session.get(f"{server.url}/api/health") as response:
            assert response.status == 200 and (await response.json())["status"] == "ok"
    assert server.stop() == 0
    assert "SystemExit" in server.log()


# ---------------------------------------------------------------------------------------------
# odd requests that used to be 500s


@pytest.mark.parametrize("route", ["/api/outputs/", "/assets/", "/api/outputs/previews/"])
async def test_a_name_longer_than_the_file_system_allows_is_a_404(server, route):
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{server.url}{route}{'a' * 5000}.png") as response:
            body = await response.json()
            assert response.status == 404, body
            assert "characters)" in body["error"] and len(body["error"]) < 400  # the name is cut short


@pytest.mark.parametrize("route, content_type", [("/api/validate", "application/json"),
                                                 ("/api/runs", "application/json"),
                                                 ("/api/uploads", "multipart/form-data; boundary=xyz")])
@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
async def test_a_body_that_is_not_what_its_content_encoding_says_is_a_400(server, route, content_type, encoding):
    garbage = bytes(range(256)) * 8
    headers = {"Content-Encoding": encoding, "Content-Type": content_type}
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        async with session.post(f"{server.url}{route}", data=garbage, headers=headers) as response:
            body = await response.json()
            assert response.status == 400, body
            assert f"Content-Encoding '{encoding}'" in body["error"]


async def test_a_gzip_body_that_is_gzip_is_read(server):
    body = json.dumps({"workflow": workflow({"n": {"type": "Int", "params": {"value": 1}}})}).encode()
    headers = {"Content-Encoding": "gzip", "Content-Type": "application/json"}
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{server.url}/api/validate", data=gzip.compress(body), headers=headers) as response:
            assert response.status == 200 and (await response.json())["valid"] is True


# ---------------------------------------------------------------------------------------------
# bounded previews


def png(colour: tuple[int, int, int]) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), colour).save(buffer, format="PNG")
    return buffer.getvalue()


async def test_previews_keep_only_the_newest_files(tmp_path):
    server = Server(tmp_path / "data", "--keep-previews", "3")
    previews = tmp_path / "data" / "outputs" / "previews"
    try:
        async with aiohttp.ClientSession() as session:
            written = []
            for i in range(6):
                form = aiohttp.FormData()
                form.add_field("image", png((40 * i, 0, 255 - 40 * i)), filename="in.png", content_type="image/png")
                async with session.post(f"{server.url}/api/uploads", data=form) as response:
                    upload = await response.json()
                    assert response.status == 201, upload
                document = workflow({"load": {"type": "LoadImage", "params": {"image": upload.get("path", upload["name"])}},
                                     "show": {"type": "PreviewImage", "inputs": {"images": "load.image"}},
                                     "save": {"type": "SaveImage", "inputs": {"images": "load.image"}}})
                run = await wait_status(session, server.url, await submit(session, server.url, document), FINISHED)
                assert run["status"] == "succeeded", run["error"]
                written.append(run["outputs"]["show"][0])
                kept = sorted(path.name for path in previews.iterdir())
                assert len(kept) == min(i + 1, 3)
                assert written[-1].removeprefix("previews/") in kept  # the newest stays
            assert sorted(f"previews/{name}" for name in kept) == sorted(written[-3:])
            async with session.get(f"{server.url}/api/outputs/{written[0]}") as response:
                assert response.status == 404  # pruned
            async with session.get(f"{server.url}/api/outputs/{written[-1]}") as response:
                assert response.status == 200
            saved = [path for path in (tmp_path / "data" / "outputs").iterdir() if path.is_file()]
            assert len(saved) == 6  # SaveImage's pictures are never pruned
    finally:
        server.stop()


def test_a_malformed_http_request_is_a_400_and_one_log_line(server):
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as connection:
        connection.sendall(b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Probe: \x00\r\n\r\n")
        assert connection.recv(64).startswith(b"HTTP/1.0 400")
    # the server fixture's teardown checks that no traceback was logged for it


async def test_a_database_from_before_runs_kept_their_subgraphs_is_upgraded_and_its_queue_runs(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    with sqlite3.connect(data / "diffgraph.db") as db:  # the schema as the previous release wrote it
        db.executescript("""
            CREATE TABLE runs (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, status TEXT NOT NULL,
                name TEXT, workflow TEXT NOT NULL, params TEXT NOT NULL, created_at REAL NOT NULL, started_at REAL,
                finished_at REAL, outputs TEXT NOT NULL DEFAULT '{}', output_values TEXT NOT NULL DEFAULT '{}',
                executed TEXT NOT NULL DEFAULT '[]', cached TEXT NOT NULL DEFAULT '[]',
                seconds TEXT NOT NULL DEFAULT '{}', error TEXT, failed_node TEXT);
            CREATE TABLE workflows (name TEXT PRIMARY KEY, document TEXT NOT NULL, created_at REAL NOT NULL,
                updated_at REAL NOT NULL);
        """)
        db.execute("INSERT INTO workflows VALUES ('sub1', ?, 0, 0)", (json.dumps(subgraph_value(7)),))
        document = workflow({"s": {"type": "workflow:sub1"}}, outputs={"v": "s.v"})
        db.execute("INSERT INTO runs (id, status, workflow, params, created_at) VALUES ('old', 'queued', ?, '{}', 0)",
                   (json.dumps(document),))
    server = Server(data)
    try:
        async with aiohttp.ClientSession() as session:
            run = await wait_status(session, server.url, "old", FINISHED)
            assert run["status"] == "succeeded" and run["values"] == {"v": 7}, run
            new = await submit(session, server.url, document)
            assert (await wait_status(session, server.url, new, FINISHED))["values"] == {"v": 7}
    finally:
        server.stop()
    with sqlite3.connect(data / "diffgraph.db") as db:
        stored = dict(db.execute("SELECT id, subgraphs FROM runs").fetchall())
    assert stored["old"] is None and json.loads(stored[new])["sub1"]["document"] == subgraph_value(7)
