"""ComfyUI's HTTP API on a real `diffgraph serve`: the two ComfyUI clients from PyPI, unchanged, and
ComfyUI's default API prompt drive the bundled tiny-sd model; what the picture shows is judged."""

from __future__ import annotations

import asyncio
import copy
import importlib
import io
import json
import sys
import time
import types
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
import requests
from PIL import Image
from server_support import Server

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tools"))  # the palette the tiny models were trained on (judge imports it)
sys.path.insert(0, str(REPO / "tests" / "semantic"))
from judge import judge  # noqa: E402

DEFAULT_PROMPT = json.loads((Path(__file__).parent / "comfy" / "default_api_prompt.json").read_text())
RED = "a red circle on a white background"


def tiny_prompt(text: str = RED, seed: int = 1, steps: int = 12, sampler: str = "euler",
                scheduler: str = "normal", cfg: float = 7.5) -> dict[str, Any]:
    """ComfyUI's default prompt with only the checkpoint, the size, the steps (and here the text) changed."""
    prompt = copy.deepcopy(DEFAULT_PROMPT)
    prompt["4"]["inputs"]["ckpt_name"] = "tiny-sd"
    prompt["5"]["inputs"].update(width=32, height=32)
    prompt["3"]["inputs"].update(steps=steps, seed=seed, sampler_name=sampler, scheduler=scheduler, cfg=cfg)
    prompt["6"]["inputs"]["text"] = text
    prompt["7"]["inputs"]["text"] = ""
    return prompt


def colour_of(png: bytes) -> str | None:
    with Image.open(io.BytesIO(png)) as picture:
        return judge(np.asarray(picture.convert("RGB"), np.float32)).colour


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    process = Server(tmp_path_factory.mktemp("comfy") / "data")
    yield process
    process.stop()


async def post_prompt(session: aiohttp.ClientSession, url: str, prompt: dict[str, Any],
                      **extra: Any) -> tuple[int, dict[str, Any]]:
    async with session.post(f"{url}/prompt", json={"prompt": prompt, **extra}) as response:
        return response.status, await response.json()


async def history_entry(session: aiohttp.ClientSession, url: str, prompt_id: str, polls: int) -> dict[str, Any]:
    """The prompt's /history entry, asked for every 0.1 s until it has one (at most `polls` times)."""
    for _ in range(polls):
        async with session.get(f"{url}/history/{prompt_id}") as response:
            history = await response.json()
        if history:
            break
        await asyncio.sleep(0.1)
    return history[prompt_id]


async def messages_until_done(ws: aiohttp.ClientWebSocketResponse, prompt_id: str) -> list[dict[str, Any]]:
    """ComfyUI messages up to `executing` with node null for this prompt (binary frames as {'binary': n})."""
    seen: list[dict[str, Any]] = []
    while True:
        message = await ws.receive(timeout=120)
        if message.type == aiohttp.WSMsgType.BINARY:
            seen.append({"type": "binary", "data": message.data})
            continue
        assert message.type == aiohttp.WSMsgType.TEXT, message
        data = json.loads(message.data)
        seen.append(data)
        if data["type"] == "executing" and data["data"]["node"] is None and data["data"]["prompt_id"] == prompt_id:
            return seen


# ---------------------------------------------------------------------------------------------
# the default prompt, /history, /view, the message stream and the cache


async def test_default_api_prompt_returns_its_picture_through_history_and_view(server) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(f"{server.url}/ws?clientId=default-test") as ws:
            first = json.loads((await ws.receive(timeout=10)).data)
            assert first["type"] == "status" and first["data"]["sid"] == "default-test"
            status, body = await post_prompt(session, server.url, tiny_prompt(), client_id="default-test")
            assert status == 200, body
            assert body["node_errors"] == {} and isinstance(body["number"], int)
            messages = await messages_until_done(ws, body["prompt_id"])
        async with session.get(f"{server.url}/history/{body['prompt_id']}") as response:
            history = (await response.json())[body["prompt_id"]]
        assert history["status"]["status_str"] == "success" and history["status"]["completed"] is True
        assert history["prompt"][1] == body["prompt_id"] and history["prompt"][4] == ["9"]
        [image] = history["outputs"]["9"]["images"]
        assert image["type"] == "output" and image["filename"].endswith(".png")
        async with session.get(f"{server.url}/view", params=image) as response:
            assert response.status == 200 and response.content_type == "image/png"
            png = await response.read()
    assert colour_of(png) == "red"
    kinds = [m["type"] for m in messages if m["type"] != "status"]
    assert kinds[0] == "execution_start" and kinds[1] == "execution_cached"
    assert kinds[-3:] == ["executed", "execution_success", "executing"]
    executing = [m["data"]["node"] for m in messages if m["type"] == "executing"]
    assert executing[-1] is None and sorted(executing[:-1]) == ["3", "4", "5", "6", "7", "8", "9"]
    assert executing.index("3") > max(executing.index(n) for n in "4567") and executing[-3:-1] == ["8", "9"]
    progress = [m["data"] for m in messages if m["type"] == "progress"]
    assert [p["value"] for p in progress] == list(range(1, 13)) and {p["max"] for p in progress} == {12}
    assert {p["node"] for p in progress} == {"3"}
    executed = next(m["data"] for m in messages if m["type"] == "executed")
    assert executed["node"] == "9" and executed["output"]["images"] == [image]
    assert not [m for m in messages if m["type"] == "binary"]  # previews only when asked for, as in ComfyUI


async def test_a_new_seed_reruns_only_the_sampler_onward(server) -> None:
    async with aiohttp.ClientSession() as session, \
            session.ws_connect(f"{server.url}/ws?clientId=seed-test") as ws:
        runs = []
        for seed in (21, 22):
            status, body = await post_prompt(session, server.url, tiny_prompt(seed=seed, steps=4),
                                             client_id="seed-test")
            assert status == 200, body
            runs.append(await messages_until_done(ws, body["prompt_id"]))
    second = runs[1]
    cached = [m["data"]["nodes"] for m in second if m["type"] == "execution_cached"]
    assert len(cached) == 1 and sorted(cached[0]) == ["4", "5", "6", "7"]
    executing = [m["data"]["node"] for m in second if m["type"] == "executing"]
    assert executing == ["3", "8", "9", None]


async def test_previews_come_as_comfyui_binary_frames_when_asked_for(server) -> None:
    async with aiohttp.ClientSession() as session, \
            session.ws_connect(f"{server.url}/ws?clientId=preview-test") as ws:
        status, body = await post_prompt(session, server.url, tiny_prompt(seed=5, steps=3), client_id="preview-test",
                                         extra_data={"preview_method": "auto"})
        assert status == 200, body
        messages = await messages_until_done(ws, body["prompt_id"])
    frames = [m["data"] for m in messages if m["type"] == "binary"]
    assert frames, "no preview frames"
    for frame in frames:
        assert frame[:8] == b"\x00\x00\x00\x01\x00\x00\x00\x01"  # PREVIEW_IMAGE, JPEG
        with Image.open(io.BytesIO(frame[8:])) as preview:
            assert preview.format == "JPEG"


async def test_other_clients_do_not_hear_a_prompts_messages(server) -> None:
    async with aiohttp.ClientSession() as session, \
            session.ws_connect(f"{server.url}/ws?clientId=owner") as owner, \
            session.ws_connect(f"{server.url}/ws?clientId=bystander") as bystander:
        status, body = await post_prompt(session, server.url, tiny_prompt(seed=7, steps=2), client_id="owner")
        assert status == 200, body
        await messages_until_done(owner, body["prompt_id"])
        heard = []
        while True:
            try:
                message = await bystander.receive(timeout=1)
            except asyncio.TimeoutError:
                break
            heard.append(json.loads(message.data)["type"])
    assert heard and set(heard) == {"status"}  # queue changes are for everyone, prompt messages are not


# ---------------------------------------------------------------------------------------------
# the real clients, unchanged


def test_comfy_api_simplified_client_gets_the_prompted_picture(server) -> None:
    from comfy_api_simplified import ComfyApiWrapper, ComfyWorkflowWrapper

    api = ComfyApiWrapper(server.url)
    workflow = ComfyWorkflowWrapper(tiny_prompt(text="a blue square on a white background", seed=3))
    images = api.queue_and_wait_images(workflow, "Save Image")
    [png] = images.values()
    assert colour_of(png) == "blue"
    assert "CheckpointLoaderSimple" in api.get_object_info()
    assert api.get_queue() == {"queue_running": [], "queue_pending": []}
    assert api.get_embeddings() == []
    assert api.get_system_stats()["devices"][0]["type"] == "cpu"


def _comfyui_api_client():
    """comfyui-api-client 0.1.0 imports its own modules as a top-level `api` package (a packaging slip
    of the release); an alias for that package name is the only thing added, its code runs as published."""
    spec = importlib.util.find_spec("comfyui_api_client")
    assert spec is not None and spec.submodule_search_locations
    alias = types.ModuleType("api")
    alias.__path__ = list(spec.submodule_search_locations)
    sys.modules.setdefault("api", alias)
    return importlib.import_module("api.api_helpers")


def test_comfyui_api_client_gets_the_prompted_picture(server) -> None:
    helpers = _comfyui_api_client()
    address = f"127.0.0.1:{server.port}"
    [picture] = helpers.generate_image_by_prompt(tiny_prompt(text="a green triangle on a white background", seed=4),
                                                 address)
    assert judge(np.asarray(picture.convert("RGB"), np.float32)).colour == "green"


# ---------------------------------------------------------------------------------------------
# what a client can get wrong: 4xx in ComfyUI's error shape, naming the node and the input


def _with(change) -> dict[str, Any]:
    prompt = tiny_prompt()
    change(prompt)
    return prompt


BAD_PROMPTS = {
    "LoRA the server does not know": (lambda p: p.update({"10": {"class_type": "LoraLoader", "inputs": {
        "model": ["4", 0], "clip": ["4", 1], "lora_name": "x.safetensors", "strength_model": 1,
        "strength_clip": 1}}}), "10", "lora_name", "not a LoRA this server knows"),
    "ControlNet the server does not know": (lambda p: p.update({"11": {"class_type": "ControlNetLoader", "inputs": {
        "control_net_name": "../c.safetensors"}}}), "11", "control_net_name", "not a ControlNet this server knows"),
    "unknown class": (lambda p: p.update({"12": {"class_type": "UpscaleModelLoader", "inputs": {}}}), "12",
                      "class_type", "supported: CheckpointLoaderSimple"),
    "unknown sampler": (lambda p: p["3"]["inputs"].update(sampler_name="dpmpp_3m"), "3", "sampler_name", "uni_pc"),
    "sampler without that schedule": (lambda p: p["3"]["inputs"].update(sampler_name="euler_ancestral",
                                                                         scheduler="karras"),
                                      "3", "scheduler", "it takes default"),
    "unknown checkpoint": (lambda p: p["4"]["inputs"].update(ckpt_name="../../etc/passwd"), "4", "ckpt_name",
                           "tiny-sd"),
    "steps out of range": (lambda p: p["3"]["inputs"].update(steps=0), "3", "steps", "1..1000"),
    "seed not a number": (lambda p: p["3"]["inputs"].update(seed="x"), "3", "seed", "integer"),
    "wrong link type": (lambda p: p["8"]["inputs"].update(vae=["4", 1]), "8", "vae", "is CLIP"),
    "link to a missing node": (lambda p: p["6"]["inputs"].update(clip=["99", 1]), "6", "clip", "not in the prompt"),
    "prefix with a folder": (lambda p: p["9"]["inputs"].update(filename_prefix="../x"), "9", "filename_prefix",
                             "path separators"),
    "image never uploaded": (lambda p: p.update({"13": {"class_type": "LoadImage", "inputs": {
        "image": "../../diffgraph.db"}}}), "13", "image", "upload"),
    "size the VAE cannot take": (lambda p: p["5"]["inputs"].update(width=36), "5", "width", "36"),
}


@pytest.mark.parametrize("case", list(BAD_PROMPTS))
def test_a_bad_prompt_is_a_400_naming_the_node_and_input(server, case: str) -> None:
    change, node, field, words = BAD_PROMPTS[case]
    response = requests.post(f"{server.url}/prompt", json={"prompt": _with(change)}, timeout=60)
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["error"]["type"] == "prompt_outputs_failed_validation"
    assert node in body["node_errors"], body
    [error] = [e for e in body["node_errors"][node]["errors"] if e["extra_info"]["input_name"] == field]
    assert words in error["message"], error["message"]


@pytest.mark.parametrize("body, kind", [
    ({}, "no_prompt"), ({"prompt": []}, "no_prompt"),
    ({"prompt": {"1": {"inputs": {}}}}, "invalid_prompt"),
    ({"prompt": {"1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny-sd"}}}},
     "prompt_no_outputs"),
])
def test_a_prompt_that_is_not_one_is_a_400(server, body: dict[str, Any], kind: str) -> None:
    response = requests.post(f"{server.url}/api/prompt", json=body, timeout=30)
    assert response.status_code == 400 and response.json()["error"]["type"] == kind, response.text


def test_unparsable_body_and_cross_origin_are_refused(server) -> None:
    assert requests.post(f"{server.url}/prompt", data=b"{", timeout=30).status_code == 400
    foreign = requests.post(f"{server.url}/prompt", json={"prompt": tiny_prompt()},
                            headers={"Origin": "http://evil.example"}, timeout=30)
    assert foreign.status_code == 403


# ---------------------------------------------------------------------------------------------
# uploads and /view


def _png(colour: tuple[int, int, int, int] = (255, 0, 0, 255), size: int = 32) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGBA", (size, size), colour).save(buffer, format="PNG")
    return buffer.getvalue()


def test_upload_then_view_and_a_second_upload_does_not_overwrite(server) -> None:
    names = []
    for _ in range(2):
        response = requests.post(f"{server.url}/upload/image", files={"image": ("in.png", _png(), "image/png")},
                                 data={"subfolder": "tests", "type": "input"}, timeout=30)
        assert response.status_code == 200, response.text
        names.append(response.json())
    assert names == [{"name": "in.png", "subfolder": "tests", "type": "input"},
                     {"name": "in (1).png", "subfolder": "tests", "type": "input"}]
    viewed = requests.get(f"{server.url}/view", params={"filename": "in.png", "subfolder": "tests", "type": "input"},
                          timeout=30)
    assert viewed.status_code == 200 and viewed.content == _png()
    info = requests.get(f"{server.url}/object_info/LoadImage", timeout=30).json()
    assert "tests/in.png" in info["LoadImage"]["input"]["required"]["image"][0]


def test_upload_mask_puts_the_masks_alpha_on_the_original(server) -> None:
    requests.post(f"{server.url}/upload/image", files={"image": ("base.png", _png((0, 0, 255, 255)), "image/png")},
                  timeout=30).raise_for_status()
    response = requests.post(f"{server.url}/upload/mask", files={"image": ("base-mask.png", _png((0, 0, 0, 0)))},
                             data={"original_ref": json.dumps({"filename": "base.png", "subfolder": "",
                                                               "type": "input"})}, timeout=30)
    assert response.status_code == 200, response.text
    stored = requests.get(f"{server.url}/view", params={"filename": response.json()["name"], "type": "input"},
                          timeout=30)
    with Image.open(io.BytesIO(stored.content)) as picture:
        assert picture.getpixel((3, 3)) == (0, 0, 255, 0)


@pytest.mark.parametrize("files, data, status", [
    ({"image": ("x.png", b"not an image", "image/png")}, {}, 415),
    ({"image": ("../x.png", _png(), "image/png")}, {"subfolder": "../.."}, 400),
    ({"image": (".hidden.png", _png(), "image/png")}, {}, 400),
    ({"image": ("x.png", _png(), "image/png")}, {"type": "output"}, 400),
    ({"other": ("x.png", _png(), "image/png")}, {}, 400),
])
def test_bad_uploads_are_4xx(server, files, data, status) -> None:
    response = requests.post(f"{server.url}/upload/image", files=files, data=data, timeout=30)
    assert response.status_code == status, response.text
    assert "error" in response.json()


@pytest.mark.parametrize("params", [
    {"filename": "diffgraph.db", "subfolder": "..", "type": "output"},
    {"filename": "passwd", "subfolder": "/etc", "type": "input"},
    {"filename": "x.png", "type": "secret"},
    {"filename": "missing.png", "type": "output"},
])
def test_view_stays_inside_its_folders(server, params) -> None:
    response = requests.get(f"{server.url}/view", params=params, timeout=30)
    assert 400 <= response.status_code < 500 and "error" in response.json()


# ---------------------------------------------------------------------------------------------
# the queue


async def test_queue_lists_delete_and_interrupt(server) -> None:
    async with aiohttp.ClientSession() as session, \
            session.ws_connect(f"{server.url}/ws?clientId=queue-test") as ws:
        long, queued = tiny_prompt(seed=30, steps=1000), tiny_prompt(seed=31, steps=2)
        _, first = await post_prompt(session, server.url, long, client_id="queue-test")
        _, second = await post_prompt(session, server.url, queued, client_id="queue-test")
        while True:  # wait until the long one is sampling
            message = json.loads((await ws.receive(timeout=60)).data)
            if message["type"] == "progress":
                break
        async with session.get(f"{server.url}/queue") as response:
            queue = await response.json()
        assert [item[1] for item in queue["queue_running"]] == [first["prompt_id"]]
        assert [item[1] for item in queue["queue_pending"]] == [second["prompt_id"]]
        async with session.get(f"{server.url}/api/prompt") as response:
            assert (await response.json())["exec_info"]["queue_remaining"] == 2
        async with session.post(f"{server.url}/queue", json={"delete": [second["prompt_id"]]}) as response:
            assert response.status == 200
        async with session.post(f"{server.url}/interrupt", json={}) as response:
            assert response.status == 200
        messages = await messages_until_done(ws, first["prompt_id"])
        assert "execution_interrupted" in [m["type"] for m in messages]
        async with session.get(f"{server.url}/history/{first['prompt_id']}") as response:
            entry = (await response.json())[first["prompt_id"]]
        assert entry["status"]["status_str"] == "error" and entry["status"]["messages"][-1][0] == \
            "execution_interrupted"
        async with session.get(f"{server.url}/history/{second['prompt_id']}") as response:
            assert await response.json() == {}  # deleted before it ran: in no history, as in ComfyUI
        async with session.post(f"{server.url}/free", json={"unload_models": True}) as response:
            assert response.status == 200


@pytest.mark.parametrize("sampler, scheduler", [("dpmpp_2m_sde", "karras"), ("heun", "exponential"),
                                                ("uni_pc", "sgm_uniform"), ("ddim", "ddim_uniform")])
async def test_other_samplers_and_schedules_run(server, sampler: str, scheduler: str) -> None:
    async with aiohttp.ClientSession() as session:
        status, body = await post_prompt(session, server.url, tiny_prompt(steps=3, sampler=sampler,
                                                                          scheduler=scheduler))
        assert status == 200, body
        entry = await history_entry(session, server.url, body["prompt_id"], polls=600)
    assert entry["status"]["status_str"] == "success", entry["status"]
    assert len(entry["outputs"]["9"]["images"]) == 1


async def test_latent_upscale_then_sample_again_and_image_scale(server) -> None:
    """ComfyUI's hires fix: KSampler, LatentUpscale to twice the size, KSampler at denoise 0.5; and an
    ImageScale of the first picture into a PreviewImage."""
    prompt = tiny_prompt(steps=12)
    prompt["10"] = {"class_type": "LatentUpscale", "inputs": {"samples": ["3", 0], "upscale_method": "bilinear",
                                                             "width": 64, "height": 64, "crop": "disabled"}}
    prompt["11"] = {"class_type": "KSampler", "inputs": {**prompt["3"]["inputs"], "latent_image": ["10", 0],
                                                        "denoise": 0.5}}
    prompt["12"] = {"class_type": "VAEDecode", "inputs": {"samples": ["11", 0], "vae": ["4", 2]}}
    prompt["13"] = {"class_type": "SaveImage", "inputs": {"images": ["12", 0], "filename_prefix": "hires"}}
    prompt["14"] = {"class_type": "ImageScale", "inputs": {"image": ["8", 0], "upscale_method": "nearest-exact",
                                                          "width": 48, "height": 0, "crop": "disabled"}}
    prompt["15"] = {"class_type": "PreviewImage", "inputs": {"images": ["14", 0]}}
    async with aiohttp.ClientSession() as session, \
            session.ws_connect(f"{server.url}/ws?clientId=hires") as ws:
        status, body = await post_prompt(session, server.url, prompt, client_id="hires")
        assert status == 200, body
        await messages_until_done(ws, body["prompt_id"])
        async with session.get(f"{server.url}/history/{body['prompt_id']}") as response:
            entry = (await response.json())[body["prompt_id"]]
        pictures = {}
        for node in ("9", "13", "15"):
            [image] = entry["outputs"][node]["images"]
            async with session.get(f"{server.url}/view", params=image) as response:
                pictures[node] = Image.open(io.BytesIO(await response.read()))
    assert entry["outputs"]["15"]["images"][0]["type"] == "temp"
    assert pictures["9"].size == (32, 32) and pictures["13"].size == (64, 64) and pictures["15"].size == (48, 48)
    assert judge(np.asarray(pictures["13"].convert("RGB"), np.float32)).colour == "red"
    nearest = np.asarray(pictures["15"].convert("RGB"))[::3, ::3]  # 48 = 32 * 1.5: every 3rd pixel is a 2nd's
    assert np.array_equal(nearest, np.asarray(pictures["9"].convert("RGB"))[::2, ::2])


# ---------------------------------------------------------------------------------------------
# the server's own rules hold here too


def test_with_a_token_the_comfyui_routes_need_it_too(tmp_path: Path) -> None:
    guarded = Server(tmp_path / "data", "--token", "comfy-token")
    try:
        for method, route in (("GET", "/object_info"), ("POST", "/prompt"), ("GET", "/view?filename=a.png"),
                              ("GET", "/api/history"), ("POST", "/upload/image"), ("POST", "/interrupt")):
            response = requests.request(method, f"{guarded.url}{route}", timeout=30)
            assert response.status_code == 401, (route, response.status_code)
        allowed = requests.get(f"{guarded.url}/object_info/KSampler",
                               headers={"Authorization": "Bearer comfy-token"}, timeout=30)
        assert allowed.status_code == 200
    finally:
        guarded.stop()


def test_history_and_pictures_survive_a_restart(tmp_path: Path) -> None:
    first = Server(tmp_path / "data")
    try:
        response = requests.post(f"{first.url}/prompt", json={"prompt": tiny_prompt(steps=2, seed=9)}, timeout=60)
        prompt_id = response.json()["prompt_id"]
        for _ in range(1200):
            if requests.get(f"{first.url}/history/{prompt_id}", timeout=30).json():
                break
            time.sleep(0.1)
    finally:
        first.stop()
    second = Server(tmp_path / "data")
    try:
        entry = requests.get(f"{second.url}/history", timeout=30).json()[prompt_id]
        assert entry["status"]["status_str"] == "success"
        [image] = entry["outputs"]["9"]["images"]
        assert requests.get(f"{second.url}/view", params=image, timeout=30).status_code == 200
        again = requests.post(f"{second.url}/prompt", json={"prompt": tiny_prompt(), "prompt_id": prompt_id},
                              timeout=60)
        assert again.status_code == 400 and "already used" in again.json()["error"]["message"]
    finally:
        second.stop()


def test_comfyuis_default_prompt_runs_with_only_checkpoint_size_and_steps_changed(server) -> None:
    info = requests.get(f"{server.url}/api/object_info", timeout=30).json()
    assert info["CheckpointLoaderSimple"]["input"]["required"]["ckpt_name"][0] == ["tiny-sd"]  # not the depth UNet
    prompt = copy.deepcopy(DEFAULT_PROMPT)
    prompt["4"]["inputs"]["ckpt_name"] = "tiny-sd"
    prompt["5"]["inputs"].update(width=32, height=32)
    prompt["3"]["inputs"]["steps"] = 4
    response = requests.post(f"{server.url}/prompt", json={"prompt": prompt}, timeout=60)
    assert response.status_code == 200, response.text
    prompt_id = response.json()["prompt_id"]
    for _ in range(1200):
        history = requests.get(f"{server.url}/history/{prompt_id}", timeout=30).json()
        if history:
            break
        time.sleep(0.1)
    [image] = history[prompt_id]["outputs"]["9"]["images"]
    assert image["filename"].startswith("ComfyUI_")
    picture = requests.get(f"{server.url}/view", params=image, timeout=30)
    with Image.open(io.BytesIO(picture.content)) as png:
        assert png.size == (32, 32) and png.format == "PNG"
