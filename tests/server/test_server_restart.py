"""Persistence: the queue, history and library live in the SQLite file and survive a SIGKILL."""

from __future__ import annotations

import sqlite3

import aiohttp
from server_support import Server, get_run, sleep_workflow, submit, wait_status, workflow


async def test_after_sigkill_queued_runs_run_and_the_interrupted_one_failed(tmp_path):
    data = tmp_path / "data"
    first = Server(data)
    try:
        async with aiohttp.ClientSession() as session:
            async with session.put(f"{first.url}/api/workflows/kept", json={"workflow": sleep_workflow()}) as response:
                assert response.status == 201
            done = await submit(session, first.url, workflow({"n": {"type": "Int", "params": {"value": 5}}}))
            await wait_status(session, first.url, done, ("succeeded",))
            interrupted = await submit(session, first.url, sleep_workflow(120, steps=1200, label="interrupted"))
            queued = [await submit(session, first.url, sleep_workflow(0.05, label=f"queued-{i}")) for i in range(3)]
            await wait_status(session, first.url, interrupted, ("running",))
    finally:
        first.kill()  # SIGKILL: no shutdown handler runs
    assert first.proc.returncode == -9

    with sqlite3.connect(data / "diffgraph.db") as db:  # the file itself says what was going on
        states = dict(db.execute("SELECT id, status FROM runs").fetchall())
    assert states[interrupted] == "running" and all(states[q] == "queued" for q in queued)

    second = Server(data)
    try:
        async with aiohttp.ClientSession() as session:
            run = await get_run(session, second.url, interrupted)
            assert run["status"] == "failed" and run["error"] == "server stopped"
            finished = [await wait_status(session, second.url, q, ("succeeded", "failed", "cancelled")) for q in queued]
            assert [r["status"] for r in finished] == ["succeeded"] * 3
            assert [r["started_at"] for r in finished] == sorted(r["started_at"] for r in finished)  # in order
            assert (await get_run(session, second.url, done))["status"] == "succeeded"
            async with session.get(f"{second.url}/api/workflows/kept") as response:
                assert (await response.json())["document"] == sleep_workflow()
            async with session.get(f"{second.url}/api/runs?limit=500") as response:
                history = [r["id"] for r in (await response.json())["runs"]]
            assert history == [*queued[::-1], interrupted, done]
    finally:
        second.stop()


async def test_a_clean_stop_marks_the_executing_run_failed_and_keeps_the_queue(tmp_path):
    data = tmp_path / "data"
    first = Server(data)
    async with aiohttp.ClientSession() as session:
        running = await submit(session, first.url, sleep_workflow(120, steps=1200, label="stopped"))
        queued = await submit(session, first.url, sleep_workflow(0.01, label="after-stop"))
        await wait_status(session, first.url, running, ("running",))
    assert first.stop() == 0  # SIGTERM
    second = Server(data)
    try:
        async with aiohttp.ClientSession() as session:
            run = await get_run(session, second.url, running)
            assert (run["status"], run["error"]) == ("failed", "server stopped")
            assert (await wait_status(session, second.url, queued, ("succeeded",)))["status"] == "succeeded"
    finally:
        second.stop()


def test_the_database_is_sqlite_in_wal_mode_in_the_data_dir(tmp_path):
    server = Server(tmp_path / "data")
    server.stop()
    with sqlite3.connect(tmp_path / "data" / "diffgraph.db") as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert {p.name for p in (tmp_path / "data").iterdir()} >= {"diffgraph.db", "uploads", "outputs", "cache"}


def test_a_second_server_on_the_same_data_dir_refuses_to_start(tmp_path):
    first = Server(tmp_path / "data")
    try:
        second = Server(tmp_path / "data", wait=False)
        assert second.proc.wait(60) == 1
        second.kill()
        assert "another diffgraph server" in second.log()
    finally:
        first.stop()
    third = Server(tmp_path / "data")  # the lock went with the first process
    third.stop()
