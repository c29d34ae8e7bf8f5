"""POST /api/runs with `sweep`: one history entry per combination, grouped; bad sweeps are 400s."""

from __future__ import annotations

import aiohttp
import pytest
from server_support import wait_status, workflow

NUMBER = workflow({"n": {"type": "Int", "params": {"value": "$value"}},
                   "sleep": {"type": "TestSleep", "inputs": {"value": "n.number"}, "params": {"label": "$label"}}},
                  name="numbers", params={"value": {"type": "INT", "default": 0, "min": 0, "max": 100},
                                          "label": {"type": "STRING", "default": ""}},
                  outputs={"answer": "sleep.out"})


async def runs_of(session: aiohttp.ClientSession, url: str, **query: str) -> list[dict]:
    async with session.get(f"{url}/api/runs", params={"limit": "500", **query}) as response:
        assert response.status == 200
        return (await response.json())["runs"]


async def test_a_sweep_queues_each_combination_as_its_own_run_grouped(server):
    async with aiohttp.ClientSession() as session:
        body = {"workflow": NUMBER, "params": {"label": "x"}, "sweep": ["value=1..3", "label=a,b"]}
        async with session.post(f"{server.url}/api/runs", json=body) as response:
            assert response.status == 202
            queued = await response.json()
        assert [run["params"] for run in queued["runs"]] == [
            {"label": label, "value": value} for value in (1, 2, 3) for label in ("a", "b")]
        finished = [await wait_status(session, server.url, run["id"], ("succeeded", "failed")) for run in queued["runs"]]
        assert [run["status"] for run in finished] == ["succeeded"] * 6
        assert [run["values"]["answer"] for run in finished] == [2, 2, 3, 3, 4, 4]  # TestSleep adds one
        assert {run["sweep"] for run in finished} == {queued["sweep"]}
        listed = await runs_of(session, server.url, sweep=queued["sweep"])
        assert sorted(run["id"] for run in listed) == sorted(run["id"] for run in queued["runs"])

        body = {"workflow": NUMBER, "sweep": ["value=7,8", "label=p,q"], "zip": True}
        async with session.post(f"{server.url}/api/runs", json=body) as response:
            paired = await response.json()
        assert [run["params"] for run in paired["runs"]] == [{"value": 7, "label": "p"}, {"value": 8, "label": "q"}]


@pytest.mark.parametrize(("body", "field", "message"), [
    ({"sweep": ["value=@/etc/passwd"]}, "sweep", "@file values are read on the command line only"),
    ({"sweep": ["value=0..x"]}, "sweep", "'value=0..x': '0..x' is not a range of integers"),
    ({"sweep": ["valeu=1,2"]}, "sweep", "'valeu' is not a param of this workflow; its params: value, label"),
    ({"sweep": ["value=1,500"]}, "sweep", "'value=1,500': with value=500: "),
    ({"sweep": ["value=0..5000"]}, "sweep", "has more than 1000 values"),
    ({"sweep": ["value=0..99", "label=" + ",".join("abcdefghijklmnop")]}, "sweep", "1600 combinations"),
    ({"sweep": "value=1,2"}, "sweep", "must be a list of 1 to 16 'NAME=VALUES' strings"),
    ({"sweep": []}, "sweep", "must be a list"),
    ({"sweep": ["value=1,2"], "zip": "yes"}, "zip", "must be true or false"),
    ({"zip": True}, "zip", "give a sweep too"),
])
async def test_a_bad_sweep_is_a_400_naming_the_field_and_queues_nothing(server, body, field, message):
    async with aiohttp.ClientSession() as session:
        before = len(await runs_of(session, server.url))
        async with session.post(f"{server.url}/api/runs", json={"workflow": NUMBER, **body}) as response:
            assert response.status == 400
            error = await response.json()
        text = " ".join([error["error"], str(error.get("field"))]
                        + [f"{issue['field']} {issue['message']}" for issue in error.get("errors", [])])
        assert message in text and field in text, error
        assert len(await runs_of(session, server.url)) == before
