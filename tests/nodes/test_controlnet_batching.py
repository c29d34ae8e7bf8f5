"""SDXL with ControlNets batches the guider's passes as StableDiffusionXLControlNetPipeline does: one
ControlNet call and one UNet call per step at twice the batch, for a plain ControlNet, a
ControlNet-Union and a chain of two (MultiControlNet); with guess mode the ControlNet sees the
conditional pass only and the UNet still runs once; img2img and inpaint with a ControlNet batch too
and give the unbatched picture. The pictures' parity with the pipelines is tested in
test_controlnet.py; guess mode's (which diffgraph's nodes do not set) here."""

from __future__ import annotations

import contextlib
from typing import Any

import pytest
from PIL import Image
from support import tiny_controlnets, tiny_families
from support.templates import TEMPLATES, run_plan
from test_parity import SEED, assert_same_picture, generator

from diffgraph.engine import compile_workflow, default_registry, read_document
from diffgraph.nodes import controlnet as controlnet_nodes
from diffgraph.nodes import modular

STEPS = 2
SIZE = 32


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("tiny-controlnet-batching")
    sdxl = tiny_families.build_sdxl(root / "sdxl")
    square = Image.new("RGB", (SIZE, SIZE))  # a white square outline: the control picture
    square.paste((255, 255, 255), (8, 8, 24, 24))
    square.paste((0, 0, 0), (10, 10, 22, 22))
    square.save(root / "control.png")
    Image.radial_gradient("L").resize((SIZE, SIZE)).convert("RGB").save(root / "picture.png")
    mask = Image.new("L", (SIZE, SIZE))
    mask.paste(255, (4, 12, 28, 28))
    mask.save(root / "mask.png")
    return {"model": sdxl, "plain": tiny_controlnets.build_sdxl_controlnet(sdxl, root / "cn"),
            "union": tiny_controlnets.build_sdxl_controlnet(sdxl, root / "union", union=True),
            "picture": root / "control.png", "image": root / "picture.png", "mask": root / "mask.png"}


def controlnet_plan(models: dict[str, Any], kind: str, task: str = "txt2img", **overrides: Any):
    """The controlnet template with a plain ControlNet, a ControlNet-Union (mode 3) or two chained
    plain ones (the second at strength 0.4 from 30% of the steps: a MultiControlNet); for img2img and
    inpaint, sampling from a VAEEncode of a picture (and a mask) at strength 0.7."""
    document = read_document(TEMPLATES / "controlnet.yaml")
    nodes = document["nodes"]
    if task != "txt2img":
        del nodes["empty"]
        nodes["picture"] = {"type": "LoadImage", "params": {"image": str(models["image"])}}
        nodes["encode"] = {"type": "VAEEncode", "inputs": {"vae": "load.vae", "image": "picture.image"}}
        nodes["sample"]["inputs"]["latent"] = "encode.latent"
        nodes["sample"]["params"]["strength"] = 0.7
    if task == "inpaint":
        nodes["mask_picture"] = {"type": "LoadImage", "params": {"image": str(models["mask"])}}
        nodes["mask"] = {"type": "Mask", "inputs": {"image": "mask_picture.image"}}
        nodes["encode"]["inputs"]["mask"] = "mask.mask"
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


def model_batches(services: dict[str, Any], models: dict[str, Any], kind: str, tmp_path, task: str = "txt2img",
                  **overrides: Any):
    """The batch size of every UNet and ControlNet call during one run (after a run that loads the
    models), as (class name, batch) in call order."""
    warm_steps = 1 if task == "txt2img" else 2  # at strength 0.7, 2 steps run 1
    run_plan(controlnet_plan(models, kind, task, steps=warm_steps), services=services, output_dir=tmp_path / "warm")
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
        run = run_plan(controlnet_plan(models, kind, task, **overrides), services=services,
                       output_dir=tmp_path / "out")
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


@pytest.mark.parametrize("task", ["img2img", "inpaint"])
def test_img2img_and_inpaint_with_a_controlnet_batch_too_and_give_the_unbatched_picture(
        models, services, tmp_path, monkeypatch, task):
    calls, batched = model_batches(services, models, "plain", tmp_path / "batched", task, steps=3)
    assert calls == [("ControlNetModel", 2), ("UNet2DConditionModel", 2)] * 2  # strength 0.7 of 3 steps: 2 run
    monkeypatch.setattr(modular, "_batched_denoiser", lambda pipeline, family: contextlib.nullcontext())
    calls, unbatched = model_batches(services, models, "plain", tmp_path / "unbatched", task, steps=3)
    assert calls == [("ControlNetModel", 1), ("UNet2DConditionModel", 1)] * 4  # one of each per pass
    ours, theirs = (run.executor.cached_outputs(run.plan, "decode")["image"] for run in (batched, unbatched))
    assert (ours - theirs).abs().max() < 1e-4  # float noise of a batched matmul
    assert theirs.std() > 0.01


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


def test_an_image_start_that_leaves_no_step_is_refused_naming_strength(models, services, tmp_path):
    run = run_plan(controlnet_plan(models, "plain", "img2img", steps=1), services=services, output_dir=tmp_path,
                   expect="failed")
    error = str(run.result.error)
    assert "node 'sample' (SampleLoop), field 'strength'" in error
    assert "strength 0.7 with 1 steps leaves no step to run; raise strength or steps" in error
