"""The event loop never waits for the database: a request whose SQLite write has to wait (another
process holds the write lock, as a backup or a long checkpoint does) leaves the server answering
everyone else, and completes once the lock is free. A real server subprocess on a real SQLite file."""

from __future__ import annotations

import asyncio
import json
import sqlite3

import aiohttp
from server_support import Server, wait_status, workflow


async def test_health_and_events_go_on_while_a_submission_waits_for_the_database(tmp_path):
    server = Server(tmp_path / "data")
    try:
        async with aiohttp.ClientSession() as session, session.ws_connect(f"{server.url}/ws") as ws:
            holder = sqlite3.connect(tmp_path / "data" / "diffgraph.db", isolation_level=None)
            holder.execute("BEGIN IMMEDIATE")  # another process holds the write lock
            try:
                document = workflow({"n": {"type": "Int", "params": {"value": 7}}}, outputs={"v": "n.number"})
                submission = asyncio.ensure_future(session.post(f"{server.url}/api/runs", json={"workflow": document}))
                # the submission reaches its INSERT and waits (SQLite's busy timeout is 30 s): meanwhile the
                # server keeps answering; on the event loop the wait would hold every request behind it
                await asyncio.sleep(1.0)
                for _ in range(10):
                    async with session.get(f"{server.url}/api/health",
                                           timeout=aiohttp.ClientTimeout(total=5)) as response:
                        assert response.status == 200
                    async with session.get(f"{server.url}/api/nodes",
                                           timeout=aiohttp.ClientTimeout(total=5)) as response:
                        assert response.status == 200
                    await asyncio.sleep(0.2)
                assert not submission.done()  # it did wait for the lock
            finally:
                holder.execute("ROLLBACK")
                holder.close()
            async with await submission as response:
                assert response.status == 202
                run_id = (await response.json())["id"]
            run = await wait_status(session, server.url, run_id, ("succeeded", "failed"))
            assert run["status"] == "succeeded" and run["values"] == {"v": 7}
            heard = []
            while "run_finished" not in heard:
                message = await ws.receive(timeout=30)
                if message.type == aiohttp.WSMsgType.TEXT:
                    event = json.loads(message.data)
                    if event.get("run_id") == run_id:
                        heard.append(event["type"])
            assert heard[0] == "run_queued" and heard.index("run_started") < heard.index("run_finished")
    finally:
        server.stop()
