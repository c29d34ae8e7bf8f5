"""ComfyUI's ControlNet classes on a real `diffgraph serve`: /object_info lists the ControlNets of
<data dir>/models/controlnet, and a /prompt with ControlNetLoader + ControlNetApplyAdvanced runs
the ControlNet (at strength 0 the picture is the plain prompt's, at 1.5 another one)."""

from __future__ import annotations

import io
from typing import Any

import aiohttp
import numpy as np
import pytest
from PIL import Image
from server_support import Server
from support import tiny_controlnets
from test_comfy_api import history_entry, post_prompt, tiny_prompt


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    data = tmp_path_factory.mktemp("comfy-controlnet") / "data"
    tiny_controlnets.build_bundled_controlnet(data / "models" / "controlnet" / "edges-cn")
    process = Server(data)
    yield process
    process.stop()


def with_controlnet(strength: float) -> dict[str, Any]:
    prompt = tiny_prompt(steps=4)
    prompt["10"] = {"class_type": "ControlNetLoader", "inputs": {"control_net_name": "edges-cn"}}
    prompt["11"] = {"class_type": "LoadImage", "inputs": {"image": "edges.png"}}
    prompt["12"] = {"class_type": "ControlNetApplyAdvanced", "inputs": {
        "positive": ["6", 0], "negative": ["7", 0], "control_net": ["10", 0], "image": ["11", 0],
        "strength": strength, "start_percent": 0.0, "end_percent": 1.0}}
    prompt["3"]["inputs"].update(positive=["12", 0], negative=["12", 1])
    return prompt


async def picture_of(session: aiohttp.ClientSession, url: str, prompt: dict[str, Any]) -> np.ndarray:
    status, body = await post_prompt(session, url, prompt)
    assert status == 200, str(body)[-1500:]
    entry = await history_entry(session, url, body["prompt_id"], polls=1200)
    assert entry["status"]["status_str"] == "success", entry["status"]
    [image] = entry["outputs"]["9"]["images"]
    async with session.get(f"{url}/view", params=image) as response:
        return np.asarray(Image.open(io.BytesIO(await response.read())).convert("RGB"), np.int16)


async def test_object_info_lists_the_servers_controlnets(server) -> None:
    async with aiohttp.ClientSession() as session, session.get(f"{server.url}/object_info/ControlNetLoader") as response:
        info = (await response.json())["ControlNetLoader"]
    assert info["input"]["required"]["control_net_name"][0] == ["edges-cn"]
    assert info["output"] == ["CONTROL_NET"]


async def test_a_controlnet_prompt_runs_the_controlnet(server) -> None:
    edges = np.zeros((32, 32, 3), np.uint8)
    edges[8:24, 8] = edges[8:24, 23] = edges[8, 8:24] = edges[23, 8:24] = 255
    buffer = io.BytesIO()
    Image.fromarray(edges).save(buffer, format="PNG")
    async with aiohttp.ClientSession() as session:
        form = aiohttp.FormData()
        form.add_field("image", buffer.getvalue(), filename="edges.png", content_type="image/png")
        async with session.post(f"{server.url}/upload/image", data=form) as response:
            assert response.status == 200, await response.text()
            assert (await response.json())["name"] == "edges.png"
        plain = await picture_of(session, server.url, tiny_prompt(steps=4))
        off = await picture_of(session, server.url, with_controlnet(0.0))
        on = await picture_of(session, server.url, with_controlnet(1.5))
    assert np.array_equal(off, plain)
    assert np.abs(on - plain).max() > 8
