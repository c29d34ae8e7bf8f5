"""ComfyUI's LoraLoader and LoraLoaderModelOnly: translated into LoadLoRA nodes (a MODEL through LoRA
loaders still finds its checkpoint's VAE and scheduler); on a real `diffgraph serve`, `lora_name`
choices are the .safetensors files in <data dir>/models/loras, and prompts with and without LoRAs in
one server process give the pictures a fresh server gives."""

from __future__ import annotations

import copy
import io
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
from PIL import Image
from server_support import Server

from diffgraph.comfy_import import Resolvers, translate_prompt

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO / "tests"))
from support import tiny_loras  # noqa: E402

DEFAULT_PROMPT = json.loads((HERE / "comfy" / "default_api_prompt.json").read_text())
TINY_SD = REPO / "diffgraph" / "models" / "tiny-sd"


def prompt_with_loras(seed: int, loras: list[tuple[str, float]], model_only_last: bool = False) -> dict[str, Any]:
    """ComfyUI's default prompt on tiny-sd at 32x32, with LoRA loaders chained between the checkpoint
    loader and the sampler and text encoders."""
    prompt = copy.deepcopy(DEFAULT_PROMPT)
    prompt["4"]["inputs"]["ckpt_name"] = "tiny-sd"
    prompt["5"]["inputs"].update(width=32, height=32)
    prompt["3"]["inputs"].update(steps=4, seed=seed)
    prompt["6"]["inputs"]["text"] = "a red circle on a white background"
    model, clip = ["4", 0], ["4", 1]
    for index, (name, strength) in enumerate(loras):
        cid = f"2{index}"
        if model_only_last and index == len(loras) - 1:
            prompt[cid] = {"class_type": "LoraLoaderModelOnly",
                           "inputs": {"model": model, "lora_name": name, "strength_model": strength}}
            model = [cid, 0]
        else:
            prompt[cid] = {"class_type": "LoraLoader", "inputs": {"model": model, "clip": clip, "lora_name": name,
                                                                 "strength_model": strength, "strength_clip": strength}}
            model, clip = [cid, 0], [cid, 1]
    prompt["3"]["inputs"]["model"] = model
    prompt["6"]["inputs"]["clip"] = prompt["7"]["inputs"]["clip"] = clip
    return prompt


def test_lora_loaders_translate_to_a_chain_of_load_lora():
    resolvers = Resolvers(lambda name: f"models/{name}", lambda: ["tiny-sd"], lambda image: image,
                          lora=lambda name: f"/loras/{name}", lora_choices=lambda: ["a.safetensors"])
    nodes = translate_prompt(prompt_with_loras(1, [("a.safetensors", 0.7), ("b.safetensors", 0.5)],
                                               model_only_last=True), resolvers).document["nodes"]
    assert nodes["20"] == {"type": "LoadLoRA", "inputs": {"unet": "4.unet", "text_encoder": "4.text_encoder"},
                           "params": {"lora": "/loras/a.safetensors", "strength_model": 0.7, "strength_text": 0.7}}
    assert nodes["21"] == {"type": "LoadLoRA", "inputs": {"unet": "20.unet"},
                           "params": {"lora": "/loras/b.safetensors", "strength_model": 0.5, "strength_text": 0.0}}
    assert nodes["3"]["inputs"]["unet"] == "21.unet"
    assert nodes["3"]["inputs"]["scheduler"] == "3_scheduler.scheduler"
    assert nodes["3_scheduler"]["inputs"] == {"scheduler": "4.scheduler"}  # the checkpoint's, through the LoRAs
    assert nodes["5"]["inputs"] == {"vae": "4.vae", "unet": "4.unet"}
    assert nodes["6"]["inputs"]["text_encoder"] == nodes["7"]["inputs"]["text_encoder"] == "20.text_encoder"


def test_an_unknown_lora_name_and_a_strength_out_of_range_name_node_and_input():
    from diffgraph.comfy_import import ComfyError

    resolvers = Resolvers(lambda name: name, lambda: ["tiny-sd"], lambda image: image,
                          lora=lambda name: None, lora_choices=lambda: ["a.safetensors"])
    prompt = prompt_with_loras(1, [("../x.safetensors", 11.0)])
    with pytest.raises(ComfyError) as raised:
        translate_prompt(prompt, resolvers)
    found = {(p.node, p.field): p.message for p in raised.value.problems}
    assert "not a LoRA this server knows; choose one of a.safetensors" in found["20", "lora_name"]
    assert "-10.0..10.0" in found["20", "strength_model"] and ("20", "strength_clip") in found


@pytest.fixture(scope="module")
def lora_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("comfy-loras")
    return {name: tiny_loras.diffusers_lora(TINY_SD, "sd", root / f"{name}.safetensors", seed=seed, scale=0.5)
            for name, seed in (("a", 1), ("b", 2))}


def start_server(data: Path, lora_files: dict[str, Path]) -> Server:
    folder = data / "models" / "loras"
    folder.mkdir(parents=True)
    for name, path in lora_files.items():
        (folder / f"{name}.safetensors").write_bytes(path.read_bytes())
    return Server(data)


def pixels(server: Server, prompt: dict[str, Any]) -> np.ndarray:
    response = requests.post(f"{server.url}/prompt", json={"prompt": prompt}, timeout=60)
    assert response.status_code == 200, response.text
    prompt_id = response.json()["prompt_id"]
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        history = requests.get(f"{server.url}/history/{prompt_id}", timeout=30).json()
        if history and history[prompt_id]["status"]["completed"]:
            break
        assert not history or history[prompt_id]["status"]["status_str"] != "error", history
        time.sleep(0.2)
    [image] = history[prompt_id]["outputs"]["9"]["images"]
    png = requests.get(f"{server.url}/view", params=image, timeout=30).content
    with Image.open(io.BytesIO(png)) as picture:
        return np.asarray(picture.convert("RGB"))


def test_prompts_with_and_without_loras_in_one_server_give_a_fresh_servers_pictures(tmp_path, lora_files):
    plain, with_a = prompt_with_loras(3, []), prompt_with_loras(1, [("a.safetensors", 0.7)])
    stacked = prompt_with_loras(2, [("a.safetensors", 0.7), ("b.safetensors", 0.5)], model_only_last=True)
    shared = start_server(tmp_path / "shared", lora_files)
    try:
        info = requests.get(f"{shared.url}/object_info/LoraLoader", timeout=30).json()["LoraLoader"]
        assert info["input"]["required"]["lora_name"][0] == ["a.safetensors", "b.safetensors"]
        without_before = pixels(shared, prompt_with_loras(1, []))
        ours = [pixels(shared, prompt) for prompt in (with_a, stacked, plain)]
    finally:
        shared.stop()
    assert not np.array_equal(without_before, ours[0])  # the LoRA changes the picture
    fresh = start_server(tmp_path / "fresh", lora_files)
    try:  # the other order: the plain prompt first, before any LoRA was applied in this process
        theirs = [pixels(fresh, prompt) for prompt in (plain, stacked, with_a)][::-1]
    finally:
        fresh.stop()
    for index, (a, b) in enumerate(zip(ours, theirs, strict=True)):
        assert np.array_equal(a, b), f"prompt {index} differs from a fresh server's picture"
