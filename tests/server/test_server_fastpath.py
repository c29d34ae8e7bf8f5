"""A run's speed and memory options through the API (issue 15): `POST /api/runs` takes
`options: {compile, vram_budget}` over the server's own `--compile` / `--vram-budget` flags; a bad
value is a 400 naming the field; the run keeps what it was submitted with."""

from __future__ import annotations

import aiohttp
import pytest
from server_support import Server, sleep_workflow, wait_status


@pytest.fixture(scope="module")
def budget_server(tmp_path_factory):
    """A server started with --vram-budget 4 on the CPU (a budget there does nothing, and it says so)."""
    instance = Server(tmp_path_factory.mktemp("fastpath") / "data", "--vram-budget", "4")
    yield instance
    instance.stop()
    assert "Traceback" not in instance.log() and "unhandled error" not in instance.log()


@pytest.mark.parametrize(("options", "field"), [
    ({"vram_budget": -1}, "options.vram_budget"),
    ({"vram_budget": 0}, "options.vram_budget"),
    ({"vram_budget": "eight"}, "options.vram_budget"),
    ({"compile": "yes"}, "options.compile"),
    ({"compile": 1}, "options.compile"),
    ({"speed": "max"}, "options.speed"),
    ("fast", "options"),
])
async def test_a_bad_option_is_a_400_naming_the_field(budget_server, options, field):
    async with aiohttp.ClientSession() as session, session.post(
            f"{budget_server.url}/api/runs", json={"workflow": sleep_workflow(), "options": options}) as response:
        assert response.status == 400
        answer = await response.json()
    assert answer["field"] == field
    assert answer["error"].startswith(f"field '{field}': ")


async def test_good_options_are_accepted_and_kept_with_the_run(budget_server):
    async with aiohttp.ClientSession() as session:
        body = {"workflow": sleep_workflow(), "options": {"compile": False, "vram_budget": 8}}
        async with session.post(f"{budget_server.url}/api/runs", json=body) as response:
            assert response.status == 202, await response.text()
            run_id = (await response.json())["id"]
        run = await wait_status(session, budget_server.url, run_id, ("succeeded", "failed"))
        assert run["status"] == "succeeded", run["error"]
        assert run["options"] == {"compile": False, "vram_budget": 8}

        async with session.post(f"{budget_server.url}/api/runs", json={"workflow": sleep_workflow()}) as response:
            assert response.status == 202
            plain = (await response.json())["id"]
        run = await wait_status(session, budget_server.url, plain, ("succeeded", "failed"))
        assert run["options"] == {"compile": False, "vram_budget": 4}  # the server's flags
    assert "note: --vram-budget 4 has no effect on cpu" in budget_server.log()


async def test_options_do_not_apply_to_a_sweep_yet(budget_server):
    body = {"workflow": sleep_workflow(), "sweep": ["seed=0..1"], "options": {"compile": True}}
    async with aiohttp.ClientSession() as session, \
            session.post(f"{budget_server.url}/api/runs", json=body) as response:
        assert response.status == 400
        assert (await response.json())["field"] == "options"


async def test_the_openapi_document_describes_the_options(budget_server):
    async with aiohttp.ClientSession() as session, \
            session.get(f"{budget_server.url}/api/openapi.json") as response:
        document = await response.json()
    options = document["components"]["schemas"]["WorkflowRequest"]["properties"]["options"]
    assert set(options["properties"]) == {"compile", "vram_budget"}
    assert options["additionalProperties"] is False
