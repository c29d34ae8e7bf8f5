"""The REST + WebSocket API against a real server process: submit, watch, fetch, cancel, history."""

from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import sys

import aiohttp
from openapi_spec_validator import validate as validate_openapi
from PIL import Image
from server_support import PACK, get_run, next_json, sleep_workflow, submit, wait_status, workflow

from diffgraph.engine.plan import templates_dir

PRIMITIVE = workflow({"n": {"type": "Int", "params": {"value": 3}}}, outputs={"number": "n.number"})


async def test_health_answers_without_anything_queued(server):
    async with aiohttp.ClientSession() as session, session.get(f"{server.url}/api/health") as response:
        assert response.status == 200
        assert (await response.json())["status"] == "ok"


async def test_openapi_document_is_valid_and_lists_every_route(server):
    async with aiohttp.ClientSession() as session, session.get(f"{server.url}/api/openapi.json") as response:
        document = await response.json()
    validate_openapi(document)
    expected = {"/api/health", "/api/openapi.json", "/api/nodes", "/api/validate", "/api/runs", "/api/runs/{id}",
                "/api/runs/{id}/cancel", "/api/outputs/{name}", "/api/uploads", "/api/templates", "/api/workflows",
                "/api/workflows/{name}", "/ws"}
    assert expected <= set(document["paths"])
    assert set(document["paths"]["/api/workflows/{name}"]) == {"get", "put", "delete"}


async def test_nodes_route_serves_the_same_catalog_as_the_cli(server):
    async with aiohttp.ClientSession() as session, session.get(f"{server.url}/api/nodes") as response:
        served = await response.json()
    printed = subprocess.run([sys.executable, "-m", "diffgraph.cli", "nodes", "--json"], capture_output=True,
                             check=True, env={**os.environ, "PYTHONPATH": str(PACK)}).stdout
    assert served == json.loads(printed)
    sleep = next(entry for entry in served if entry["type"] == "TestSleep")
    assert sleep["schema"]["properties"]["steps"]["minimum"] == 1


async def test_validate_reports_every_problem_with_node_and_field(server):
    broken = workflow({"a": {"type": "Nope"}, "b": {"type": "TestSleep", "params": {"steps": 0}}})
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{server.url}/api/validate", json={"workflow": broken}) as response:
            assert response.status == 200
            report = await response.json()
        async with session.post(f"{server.url}/api/validate", json={"workflow": PRIMITIVE}) as response:
            assert await response.json() == {"valid": True, "errors": [], "families": {}}
    assert report["valid"] is False
    assert {(e["node"], e["field"]) for e in report["errors"]} == {("a", "type"), ("b", "steps")}


async def test_invalid_workflow_is_refused_with_the_same_errors_and_not_queued(server):
    broken = workflow({"b": {"type": "TestSleep", "params": {"steps": "many"}}})
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{server.url}/api/runs", json={"workflow": broken}) as response:
            assert response.status == 400
            body = await response.json()
        async with session.get(f"{server.url}/api/runs?limit=500") as response:
            history = await response.json()
    assert body["error"] == "invalid workflow"
    assert [(e["node"], e["field"]) for e in body["errors"]] == [("b", "steps")]
    assert all(run["name"] != "never" for run in history["runs"])


async def test_a_run_succeeds_and_its_record_holds_the_whole_story(server):
    document = workflow({"n": {"type": "Int", "params": {"value": 41}},
                         "sleep": {"type": "TestSleep", "inputs": {"value": "n.number"}, "params": {"label": "story"}},
                         "write": {"type": "TestWriteFile", "inputs": {"value": "sleep.out"}}},
                        name="story", outputs={"answer": "sleep.out"})
    async with aiohttp.ClientSession() as session:
        run_id = await submit(session, server.url, document)
        run = await wait_status(session, server.url, run_id, ("succeeded", "failed"))
        assert run["status"] == "succeeded", run
        assert run["workflow"] == document and run["name"] == "story"
        assert set(run["executed"]) == {"n", "sleep", "write"}
        assert set(run["seconds"]) == {"n", "sleep", "write"} and run["seconds"]["sleep"] >= 0.09
        assert run["values"] == {"answer": 42}
        assert run["created_at"] <= run["started_at"] <= run["finished_at"]
        [name] = run["outputs"]["write"]
        assert "/" not in name and not name.startswith(".")
        async with session.get(f"{server.url}/api/outputs/{name}") as response:
            assert response.status == 200
            assert response.content_type == "image/png"
            assert response.headers["X-Content-Type-Options"] == "nosniff"
            image = Image.open(io.BytesIO(await response.read()))
            assert image.size == (8, 8) and image.getpixel((0, 0)) == (42, 128, 255)
    assert (server.data_dir / "outputs" / name).is_file()


async def test_a_failing_node_fails_the_run_naming_node_and_field(server):
    document = workflow({"boom": {"type": "TestFail", "params": {"reason": "the reason"}}})
    async with aiohttp.ClientSession() as session:
        run_id = await submit(session, server.url, document)
        run = await wait_status(session, server.url, run_id, ("succeeded", "failed"))
    assert run["status"] == "failed"
    assert run["failed_node"] == "boom"
    assert "boom" in run["error"] and "reason" in run["error"] and "the reason" in run["error"]


async def test_events_stream_in_order_for_all_runs_and_for_one(server):
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(f"{server.url}/ws") as everything:
            run_id = await submit(session, server.url, sleep_workflow(0.2, steps=4, label="events"))
            async with session.ws_connect(f"{server.url}/ws?run={run_id}") as one:
                first = await next_json(one)
                assert first["type"] == "run_status" and first["run"]["id"] == run_id
                seen_one = [first["run"]["status"]]
                while True:
                    event = await next_json(one)
                    assert event["run_id"] == run_id
                    seen_one.append(event["type"])
                    if event["type"] == "run_finished":
                        break
            seen_all = []
            while not seen_all or seen_all[-1]["type"] != "run_finished":
                event = await next_json(everything)
                if event["run_id"] == run_id:
                    seen_all.append(event)
    types = [e["type"] for e in seen_all]
    assert types == ["run_queued", "run_started", "node_started", "progress", "progress", "progress", "progress",
                     "node_finished", "run_finished"]
    assert [(e["step"], e["total"]) for e in seen_all if e["type"] == "progress"] == [(1, 4), (2, 4), (3, 4), (4, 4)]
    assert seen_all[-1]["status"] == "succeeded" and seen_all[-1]["executed"] == ["sleep"]
    assert seen_one[-1] == "run_finished" and "node_finished" in seen_one


async def test_previews_arrive_as_binary_frames_naming_run_and_node(server):
    async with aiohttp.ClientSession() as session:
        run_id = await submit(session, server.url, sleep_workflow(0.6, steps=3, preview=True, label="preview"))
        async with session.ws_connect(f"{server.url}/ws?run={run_id}") as ws:
            frames = []
            while True:
                message = await ws.receive(timeout=30)
                if message.type == aiohttp.WSMsgType.BINARY:
                    frames.append(message.data)
                elif json.loads(message.data)["type"] in ("run_finished", "run_failed"):
                    break
    assert frames, "no preview frame arrived"
    (length,) = struct.unpack(">I", frames[-1][:4])
    header = json.loads(frames[-1][4:4 + length])
    assert header["type"] == "preview" and header["run_id"] == run_id and header["node"] == "sleep"
    assert header["format"] == "jpeg"
    image = Image.open(io.BytesIO(frames[-1][4 + length:]))
    assert image.format == "JPEG" and image.size == (64, 48)


async def test_changing_one_param_reruns_only_what_changed(server):
    document = workflow({"slow": {"type": "TestSleep", "params": {"seconds": 0.05, "label": "cache-test"}},
                         "after": {"type": "TestSleep", "inputs": {"value": "slow.out"},
                                   "params": {"seconds": 0.0, "label": "$label"}}},
                        params={"label": {"type": "STRING", "default": "first"}})
    async with aiohttp.ClientSession() as session:
        first = await submit(session, server.url, document)
        run = await wait_status(session, server.url, first, ("succeeded", "failed"))
        assert set(run["executed"]) == {"slow", "after"}
        second = await submit(session, server.url, document, params={"label": "second"})
        run = await wait_status(session, server.url, second, ("succeeded", "failed"))
    assert run["status"] == "succeeded" and run["params"] == {"label": "second"}
    assert run["executed"] == ["after"] and run["cached"] == ["slow"]


async def test_cancel_a_running_run_and_a_queued_one(server):
    async with aiohttp.ClientSession() as session:
        running = await submit(session, server.url, sleep_workflow(60, steps=600, label="cancel-running"))
        queued = await submit(session, server.url, sleep_workflow(0.01, label="cancel-queued"))
        await wait_status(session, server.url, running, ("running",))
        async with session.post(f"{server.url}/api/runs/{queued}/cancel") as response:
            assert response.status == 200 and (await response.json())["status"] == "cancelled"
        async with session.post(f"{server.url}/api/runs/{running}/cancel") as response:
            assert response.status == 202 and (await response.json())["status"] == "cancelling"
        run = await wait_status(session, server.url, running, ("cancelled", "succeeded", "failed"), timeout=10)
        assert run["status"] == "cancelled"
        assert (await get_run(session, server.url, queued))["status"] == "cancelled"
        async with session.post(f"{server.url}/api/runs/{running}/cancel") as response:
            assert response.status == 409 and "already cancelled" in (await response.json())["error"]
        # the worker goes on with the next run
        after = await submit(session, server.url, PRIMITIVE)
        assert (await wait_status(session, server.url, after, ("succeeded", "failed")))["status"] == "succeeded"


async def test_health_and_status_answer_while_a_run_executes(server):
    """A blocked event loop would answer only after the run, when nothing is running any more."""
    async with aiohttp.ClientSession() as session:
        run_id = await submit(session, server.url, sleep_workflow(3, steps=30, label="busy"))
        await wait_status(session, server.url, run_id, ("running",))
        for _ in range(5):
            async with session.get(f"{server.url}/api/health") as response:
                assert (await response.json())["running"] == run_id
            assert (await get_run(session, server.url, run_id))["status"] == "running"
        async with session.post(f"{server.url}/api/runs/{run_id}/cancel") as response:
            assert response.status == 202


async def test_history_is_paginated_newest_first_with_a_cursor_and_a_status_filter(server):
    async with aiohttp.ClientSession() as session:
        ids = [await submit(session, server.url, workflow({"n": {"type": "Int", "params": {"value": i}}},
                                                          name=f"page-{i}")) for i in range(7)]
        for run_id in ids:
            await wait_status(session, server.url, run_id, ("succeeded",))
        pages, cursor = [], None
        while True:
            url = f"{server.url}/api/runs?limit=3&status=succeeded" + (f"&before={cursor}" if cursor else "")
            async with session.get(url) as response:
                page = await response.json()
            assert len(page["runs"]) <= 3
            pages.append(page["runs"])
            cursor = page["next"]
            if cursor is None:
                break
        listed = [run["id"] for page in pages for run in page]
        assert all(run["status"] == "succeeded" for page in pages for run in page)
        seqs = [run["seq"] for page in pages for run in page]
        assert seqs == sorted(seqs, reverse=True) and len(set(listed)) == len(listed)
        assert listed[:7] == ids[::-1]  # the newest seven are ours, newest first
        async with session.get(f"{server.url}/api/runs?status=cancelled&limit=500") as response:
            assert all(run["status"] == "cancelled" for run in (await response.json())["runs"])


async def test_unknown_run_is_a_404_with_a_json_error(server):
    async with aiohttp.ClientSession() as session:
        for method, path in (("GET", "/api/runs/nope"), ("POST", "/api/runs/nope/cancel")):
            async with session.request(method, f"{server.url}{path}") as response:
                assert response.status == 404
                assert "nope" in (await response.json())["error"]


async def test_saved_workflow_library_put_get_list_delete(server):
    async with aiohttp.ClientSession() as session:
        url = f"{server.url}/api/workflows/my flow"
        async with session.put(url, json={"workflow": PRIMITIVE}) as response:
            assert response.status == 201 and (await response.json())["created"] is True
        changed = {**PRIMITIVE, "description": "changed"}
        async with session.put(url, json={"workflow": changed}) as response:
            assert response.status == 200 and (await response.json())["created"] is False
        async with session.get(url) as response:
            assert (await response.json()) == {"name": "my flow", "document": changed}
        async with session.get(f"{server.url}/api/workflows") as response:
            listed = {w["name"]: w for w in await response.json()}
        assert listed["my flow"]["description"] == "changed"
        # a saved workflow is usable as a subgraph by name
        outer = workflow({"inner": {"type": "workflow:my flow"}})
        async with session.post(f"{server.url}/api/validate", json={"workflow": outer}) as response:
            assert (await response.json())["valid"] is True
        async with session.delete(url) as response:
            assert response.status == 200
        async with session.get(url) as response:
            assert response.status == 404
        async with session.delete(url) as response:
            assert response.status == 404


async def test_templates_lists_the_shipped_workflows_folder(server):
    async with aiohttp.ClientSession() as session, session.get(f"{server.url}/api/templates") as response:
        assert response.status == 200
        served = await response.json()
    shipped = sorted(p.stem for p in templates_dir().glob("*") if p.suffix in (".yaml", ".yml", ".json"))
    assert sorted(t["name"] for t in served) == shipped
    for template in served:
        assert template["document"]["format"] == "diffgraph/v1"
        assert template["params"] == (template["document"].get("params") or {})


async def test_upload_returns_a_server_chosen_name_for_loadimage_and_no_server_path(server):
    buffer = io.BytesIO()
    Image.new("RGB", (5, 7), (1, 2, 3)).save(buffer, format="PNG")
    form = aiohttp.FormData()
    form.add_field("image", buffer.getvalue(), filename="../../../etc/evil.html", content_type="text/html")
    async with aiohttp.ClientSession() as session, session.post(f"{server.url}/api/uploads", data=form) as response:
        assert response.status == 201
        body = await response.json()
    assert body["name"].endswith(".png") and "evil" not in body["name"]
    assert (body["format"], body["width"], body["height"]) == ("PNG", 5, 7)
    stored = server.data_dir.resolve() / "uploads" / body["name"]
    assert "path" not in body and str(server.data_dir.resolve()) not in json.dumps(body)
    assert stored.read_bytes() == buffer.getvalue()
