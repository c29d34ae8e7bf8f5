"""ControlNet: the controlnet template (and chains of ApplyControlNet) compute the picture of
diffusers' ControlNet pipelines with the same ControlNet(s), conditioning scale and guidance
start/end, within 2/255 per pixel on CPU in float32; bad input is refused naming node and field;
Canny finds the edges of a known picture."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from support import tiny_controlnets, tiny_families
from support.templates import TEMPLATES, run_plan, template_plan
from test_parity import SEED, assert_same_picture, generator, use_scheduler

from diffgraph.engine import WorkflowError, compile_workflow, default_registry, read_document

STEPS = 4


@pytest.fixture(scope="session")
def controlnets(tiny, tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny-controlnets")
    sdxl = tiny_families.build_sdxl(root / "sdxl")
    return {
        "sd": tiny_controlnets.build_sd_controlnet(root / "sd-cn", seed=0),
        "sd2": tiny_controlnets.build_sd_controlnet(root / "sd-cn-2", seed=1),
        "sdxl_model": sdxl,
        "sdxl": tiny_controlnets.build_sdxl_controlnet(sdxl, root / "sdxl-cn"),
    }


@pytest.fixture(scope="session")
def edges_picture(tmp_path_factory):
    """A 64x64 black picture with a white ring and a bar: a control picture with structure."""
    root = tmp_path_factory.mktemp("control")
    y, x = np.mgrid[0:64, 0:64]
    ring = np.abs(np.hypot(x - 32, y - 30) - 18) < 2
    pixels = np.zeros((64, 64, 3), np.uint8)
    pixels[ring] = 255
    pixels[50:54, 8:56] = 255
    Image.fromarray(pixels).save(root / "edges.png")
    Image.fromarray(pixels).resize((48, 40)).save(root / "edges_small.png")
    return {"full": root / "edges.png", "small": root / "edges_small.png"}


def sd_controlnet_pipeline(tiny, controlnet):
    from diffusers import StableDiffusionControlNetPipeline

    return StableDiffusionControlNetPipeline.from_pretrained(
        str(tiny["sd"]), controlnet=controlnet, safety_checker=None, requires_safety_checker=False).to("cpu")


def load_net(path):
    from diffusers import ControlNetModel

    return ControlNetModel.from_pretrained(str(path))


@pytest.mark.parametrize(("scale", "start", "end", "picture"), [(1.0, 0.0, 1.0, "full"), (0.7, 0.25, 0.75, "small")])
def test_controlnet_template_matches_stable_diffusion_controlnet_pipeline(tiny, controlnets, edges_picture, run_template,
                                                                          scale, start, end, picture):
    run = run_template("controlnet", model=str(tiny["sd"]), controlnet=str(controlnets["sd"]),
                       control_image=str(edges_picture[picture]), control_scale=scale, control_start=start,
                       control_end=end, prompt="a red circle", seed=SEED, steps=STEPS, scheduler="euler")
    pipe = sd_controlnet_pipeline(tiny, load_net(controlnets["sd"]))
    use_scheduler(pipe, "euler")
    expected = pipe("a red circle", image=Image.open(edges_picture[picture]).convert("RGB"), height=64, width=64,
                    num_inference_steps=STEPS, guidance_scale=7.5, controlnet_conditioning_scale=scale,
                    control_guidance_start=start, control_guidance_end=end, generator=generator(),
                    output_type="pt").images
    assert_same_picture(run.value("decode", "image"), expected, run.result.outputs["save"][0])
    # the ControlNet steers the picture: without it the picture is another one
    plain = run_template("txt2img", model=str(tiny["sd"]), prompt="a red circle", seed=SEED, steps=STEPS,
                         scheduler="euler")
    assert (plain.value("decode", "image") - expected).abs().max() > 0.05


def chained_document(tiny, controlnets, edges_picture):
    document = read_document(TEMPLATES / "controlnet.yaml")
    nodes = document["nodes"]
    nodes["load_controlnet_2"] = {"type": "LoadControlNet", "params": {"model": str(controlnets["sd2"])}}
    nodes["picture_2"] = {"type": "LoadImage", "params": {"image": str(edges_picture["small"])}}
    nodes["control_2"] = {"type": "ApplyControlNet", "inputs": {
        "conditioning": "control.conditioning", "control_net": "load_controlnet_2.control_net",
        "image": "picture_2.image"}, "params": {"strength": 0.5, "start": 0.5, "end": 1.0}}
    nodes["sample"]["inputs"]["positive"] = "control_2.conditioning"
    return document


def test_two_chained_controlnets_match_the_pipelines_multi_controlnet(tiny, controlnets, edges_picture, services,
                                                                      tmp_path):
    from diffusers import MultiControlNetModel

    overrides = {"model": str(tiny["sd"]), "controlnet": str(controlnets["sd"]),
                 "control_image": str(edges_picture["full"]), "control_scale": 1.2, "control_end": 0.75,
                 "prompt": "a red circle", "seed": SEED, "steps": STEPS, "scheduler": "ddim"}
    plan = compile_workflow(chained_document(tiny, controlnets, edges_picture), default_registry(), overrides,
                            base=TEMPLATES)
    run = run_plan(plan, services=services, output_dir=tmp_path)
    pipe = sd_controlnet_pipeline(tiny, MultiControlNetModel([load_net(controlnets["sd"]), load_net(controlnets["sd2"])]))
    use_scheduler(pipe, "ddim")
    images = [Image.open(edges_picture[name]).convert("RGB") for name in ("full", "small")]
    expected = pipe("a red circle", image=images, height=64, width=64, num_inference_steps=STEPS,
                    guidance_scale=7.5, controlnet_conditioning_scale=[1.2, 0.5], control_guidance_start=[0.0, 0.5],
                    control_guidance_end=[0.75, 1.0], generator=generator(), output_type="pt").images
    assert_same_picture(run.executor.cached_outputs(run.plan, "decode")["image"], expected, run.result.outputs["save"][0])


def test_sdxl_controlnet_template_matches_the_sdxl_controlnet_pipeline(controlnets, edges_picture, run_template,
                                                                       tmp_path):
    from diffusers import StableDiffusionXLControlNetPipeline

    small = tmp_path / "control.png"
    Image.open(edges_picture["full"]).convert("RGB").resize((32, 32)).save(small)
    run = run_template("controlnet", model=str(controlnets["sdxl_model"]), controlnet=str(controlnets["sdxl"]),
                       control_image=str(small), control_scale=0.8, control_start=0.2, control_end=0.9,
                       prompt="a red circle", seed=SEED, steps=3, cfg=3.5, width=32, height=32)
    pipe = StableDiffusionXLControlNetPipeline.from_pretrained(str(controlnets["sdxl_model"]),
                                                               controlnet=load_net(controlnets["sdxl"])).to("cpu")
    expected = pipe(prompt="a red circle", image=Image.open(small).convert("RGB"), num_inference_steps=3,
                    guidance_scale=3.5, height=32, width=32, controlnet_conditioning_scale=0.8,
                    control_guidance_start=0.2, control_guidance_end=0.9, generator=generator(),
                    output_type="pt").images
    assert_same_picture(run.value("decode", "image"), expected, run.result.outputs["save"][0])
    plain = run_template("txt2img", model=str(controlnets["sdxl_model"]), prompt="a red circle", seed=SEED, steps=3,
                         cfg=3.5, width=32, height=32)
    assert (plain.value("decode", "image") - expected).abs().max() > 0.05
