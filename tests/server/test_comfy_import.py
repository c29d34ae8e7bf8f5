"""ComfyUI workflows -> diffgraph: the API and the UI (saved) formats, `diffgraph import`, and the
sampler_name x scheduler mapping onto diffusers' scheduler classes and config flags."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import diffusers
import numpy as np
import pytest
from PIL import Image

from diffgraph.comfy_import import SAMPLERS, SCHEDULES, Resolvers, load_comfy_file, translate_prompt
from diffgraph.nodes.sampling import scheduler_overrides

HERE = Path(__file__).parent / "comfy"
REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tools"))
sys.path.insert(0, str(REPO / "tests" / "semantic"))
from judge import judge  # noqa: E402

RESOLVERS = Resolvers(lambda name: f"models/{name}", lambda: ["tiny-sd"], lambda name: name)


def _ui_file(extra_nodes: list[dict] | None = None) -> str:
    data = json.loads((HERE / "default_ui_workflow.json").read_text())
    data["nodes"] += extra_nodes or []
    return json.dumps(data)


def test_the_ui_format_and_the_api_format_give_the_same_workflow() -> None:
    api = json.loads((HERE / "default_api_prompt.json").read_text())
    api["4"]["inputs"]["ckpt_name"] = "tiny-sd"
    api["5"]["inputs"].update(width=32, height=32)
    api["3"]["inputs"].update(seed=1, steps=12, cfg=7.5)
    api["6"]["inputs"]["text"] = "a red circle on a white background"
    api["7"]["inputs"]["text"] = ""
    from_ui, problems = load_comfy_file(_ui_file())
    assert problems == []
    assert translate_prompt(from_ui, RESOLVERS).document["nodes"] == \
        translate_prompt(api, RESOLVERS).document["nodes"]


def test_muted_nodes_and_notes_are_left_out_and_links_through_reroutes_are_reported() -> None:
    prompt, problems = load_comfy_file(_ui_file([
        {"id": 20, "type": "Note", "mode": 0, "widgets_values": ["a note"]},
        {"id": 21, "type": "PreviewImage", "mode": 2, "inputs": [{"name": "images", "type": "IMAGE", "link": None}]},
        {"id": 22, "type": "Reroute", "mode": 0, "inputs": [{"name": "", "type": "*", "link": None}]},
    ]))
    assert "20" not in prompt and "21" not in prompt
    assert [(p.node, p.class_type) for p in problems] == [("22", "Reroute")]


def test_partial_execution_targets_keep_only_those_outputs() -> None:
    prompt, _ = load_comfy_file(_ui_file())
    prompt["10"] = {"class_type": "PreviewImage", "inputs": {"images": ["8", 0]}}
    translation = translate_prompt(copy.deepcopy(prompt), RESOLVERS, targets=["10"])
    assert translation.outputs == ["10"]
    assert "9" not in translation.document["nodes"] and "10" in translation.document["nodes"]


@pytest.mark.parametrize("sampler", list(SAMPLERS))
@pytest.mark.parametrize("schedule", list(SCHEDULES))
def test_each_sampler_and_schedule_is_a_diffusers_scheduler_or_a_clear_refusal(sampler: str, schedule: str) -> None:
    sigmas, spacing = SCHEDULES[schedule]
    try:
        class_name, overrides = scheduler_overrides(SAMPLERS[sampler], sigmas, spacing)
    except ValueError as exc:
        assert sigmas != "default" and f"has no {sigmas} sigmas; it takes default" in str(exc)
        return
    config = dict(getattr(diffusers, class_name).from_config(
        {"num_train_timesteps": 1000, "beta_schedule": "scaled_linear"}, **overrides).config)
    for flag, value in overrides.items():
        assert config[flag] == value
    if schedule == "karras":
        assert config["use_karras_sigmas"] is True
    if schedule == "normal":
        assert config["timestep_spacing"] == "linspace"
    if sampler == "dpmpp_2m_sde":
        assert config["algorithm_type"] == "sde-dpmsolver++"


def _diffgraph(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "diffgraph.cli", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=300)


def test_import_writes_a_workflow_that_run_draws_the_prompt(tmp_path: Path) -> None:
    done = _diffgraph("import", str(HERE / "default_ui_workflow.json"), "-o", "comfy.yaml", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    ran = _diffgraph("run", "comfy.yaml", "--json", "--no-cache", "--output-dir", "out", cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    [png] = json.loads(ran.stdout)["outputs"]["9"]
    with Image.open(png) as picture:
        assert judge(np.asarray(picture.convert("RGB"), np.float32)).colour == "red"


def test_import_names_every_node_it_cannot_convert(tmp_path: Path) -> None:
    source = tmp_path / "with_lora.json"
    source.write_text(_ui_file([
        {"id": 10, "type": "LoraLoader", "mode": 0, "inputs": [{"name": "model", "type": "MODEL", "link": None}],
         "widgets_values": ["x.safetensors", 1, 1]},
        {"id": 11, "type": "UpscaleModelLoader", "mode": 0, "widgets_values": ["4x.pth"]},
    ]))
    done = _diffgraph("import", str(source), cwd=tmp_path)
    assert done.returncode == 2 and done.stdout == ""
    assert "node '10' (LoraLoader) input 'model'" in done.stderr  # a LoRA loader linked to no model
    assert "node '11' (UpscaleModelLoader) input 'class_type'" in done.stderr
