"""SDXL with ControlNets batches the guider's passes as StableDiffusionXLControlNetPipeline does: one
ControlNet call and one UNet call per step at twice the batch, for a plain ControlNet, a
ControlNet-Union and a chain of two (MultiControlNet); with guess mode the ControlNet sees the
conditional pass only and the UNet still runs once. The pictures' parity with the pipelines is tested
in test_controlnet.py; guess mode's (which diffgraph's nodes do not set) here."""

from __future__ import annotations

from typing import Any

import pytest
from PIL import Image
from support import tiny_controlnets, tiny_families
from support.templates import TEMPLATES, run_plan
from test_parity import SEED, assert_same_picture, generator

from diffgraph.engine import compile_workflow, default_registry, read_document
from diffgraph.nodes import controlnet as controlnet_nodes

STEPS = 2
SIZE = 32


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("tiny-controlnet-batching")
    sdxl = tiny_families.build_sdxl(root / "sdxl")
    ring = Image.new("RGB", (SIZE, SIZE))
    ring.paste((255, 255, 255), (8, 8, 24, 24))
    ring.paste((0, 0, 0), (10, 10, 22, 22))
    ring.save(root / "control.png")
    return {"model": sdxl, "plain": tiny_controlnets.build_sdxl_controlnet(sdxl, root / "cn"),
            "union": tiny_controlnets.build_sdxl_controlnet(sdxl, root / "union", union=True),
            "picture": root / "control.png"}


def controlnet_plan(models: dict[str, Any], kind: str, **overrides: Any):
    """The controlnet template with a plain ControlNet, a ControlNet-Union (mode 3) or two chained
    plain ones (the second at strength 0.4 from 30% of the steps: a MultiControlNet)."""
    document = read_document(TEMPLATES / "controlnet.yaml")
    nodes = document["nodes"]
    if kind == "union":
        nodes["control"]["params"]["union_mode"] = 3
    if kind == "multi":
        nodes["control_2"] = {"type": "ApplyControlNet", "inputs": {
            "conditioning": "control.conditioning", "control_net": "load_controlnet.control_net",
            "image": "control_picture.image"}, "params": {"strength": 0.4, "start": 0.3}}
        nodes["sample"]["inputs"]["positive"] = "control_2.conditioning"
    params = {"model": str(models["model"]), "controlnet": str(models["union" if kind == "union" else "plain"]),
              "control_image": str(models["picture"]), "control_scale": 0.8, "control_end": 0.9,
              "prompt": "a red circle", "seed": SEED, "steps": STEPS, "cfg": 3.5, "width": SIZE, "height": SIZE,
              **overrides}
    return compile_workflow(document, default_registry(), params, base=TEMPLATES)


def model_batches(services: dict[str, Any], models: dict[str, Any], kind: str, tmp_path, **overrides: Any):
    """The batch size of every UNet and ControlNet call during one run (after a run that loads the
    models), as (class name, batch) in call order."""
    run_plan(controlnet_plan(models, kind, steps=1), services=services, output_dir=tmp_path / "warm")
    net_path = str(models["union" if kind == "union" else "plain"])
    entries = services["models"]._entries
    (pipeline,) = [entry[0] for key, entry in entries.items() if key[:2] == ("pipeline", str(models["model"]))]
    (net,) = [entry[0] for key, entry in entries.items() if key[:2] == ("controlnet", net_path)]
    watched = [pipeline.unet, net]
    assert [type(model).__name__ for model in watched] == [
        "UNet2DConditionModel", "ControlNetUnionModel" if kind == "union" else "ControlNetModel"]
    calls: list[tuple[str, int]] = []
    hooks = [model.register_forward_pre_hook(
        lambda module, args, kwargs: calls.append((type(module).__name__, (args[0] if args else kwargs["sample"])
                                                   .shape[0])), with_kwargs=True) for model in watched]
    try:
        run = run_plan(controlnet_plan(models, kind, **overrides), services=services, output_dir=tmp_path / "out")
    finally:
        for hook in hooks:
            hook.remove()
    return calls, run


@pytest.mark.parametrize("kind, controlnet_class, nets", [("plain", "ControlNetModel", 1),
                                                          ("union", "ControlNetUnionModel", 1),
                                                          ("multi", "ControlNetModel", 2)])
def test_guided_sampling_calls_each_controlnet_and_the_unet_once_per_step_at_twice_the_batch(
        models, services, tmp_path, kind, controlnet_class, nets):
    calls, _ = model_batches(services, models, kind, tmp_path)
    assert calls == ([(controlnet_class, 2)] * nets + [("UNet2DConditionModel", 2)]) * STEPS


def test_unguided_sampling_calls_the_controlnet_and_the_unet_once_per_step(models, services, tmp_path):
    calls, _ = model_batches(services, models, "plain", tmp_path, cfg=1.0)
    assert calls == [("ControlNetModel", 1), ("UNet2DConditionModel", 1)] * STEPS


def test_guess_mode_runs_the_controlnet_on_the_conditional_pass_only_and_matches_the_pipeline(
        models, services, tmp_path, monkeypatch):
    from diffusers import ControlNetModel, StableDiffusionXLControlNetPipeline

    plain_inputs = controlnet_nodes.modular_inputs
    monkeypatch.setattr(controlnet_nodes, "modular_inputs",  # no node sets it: the blocks' own input, passed through
                        lambda *args, **kwargs: {**plain_inputs(*args, **kwargs), "guess_mode": True})
    calls, run = model_batches(services, models, "plain", tmp_path, steps=3, control_end=1.0)
    assert calls == [("ControlNetModel", 1), ("UNet2DConditionModel", 2)] * 3
    pipe = StableDiffusionXLControlNetPipeline.from_pretrained(
        str(models["model"]), controlnet=ControlNetModel.from_pretrained(str(models["plain"])))
    expected = pipe(prompt="a red circle", image=Image.open(models["picture"]).convert("RGB"), guess_mode=True,
                    num_inference_steps=3, guidance_scale=3.5, height=SIZE, width=SIZE,
                    controlnet_conditioning_scale=0.8, generator=generator(), output_type="pt").images
    assert_same_picture(run.executor.cached_outputs(run.plan, "decode")["image"], expected,
                        run.result.outputs["save"][0])
