"""Each shipped template computes the picture the matching diffusers pipeline computes from the same
components, seed and scheduler (a CPU torch.Generator), within 2/255 per pixel in float32 on CPU."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from diffgraph.nodes.sampling import SCHEDULERS

TOLERANCE = 2 / 255
STEPS = 4
SEED = 7


def generator() -> torch.Generator:
    return torch.Generator("cpu").manual_seed(SEED)


def use_scheduler(pipe, name: str) -> None:
    import diffusers

    class_name, overrides = SCHEDULERS[name]
    pipe.scheduler = getattr(diffusers, class_name).from_config(pipe.scheduler.config, **overrides)


def assert_same_picture(ours: torch.Tensor, theirs: torch.Tensor, saved_png) -> None:
    """Compare the decoded tensors, then the PNG SaveImage wrote against the pipeline's 8-bit picture."""
    assert ours.shape == theirs.shape
    difference = (ours - theirs).abs().max().item()
    assert difference <= TOLERANCE, f"max difference {difference * 255:.2f}/255"
    ours_png = np.asarray(Image.open(saved_png).convert("RGB"), dtype=np.int16)
    theirs_png = (theirs[0].permute(1, 2, 0).numpy() * 255).round().astype(np.int16)
    assert np.abs(ours_png - theirs_png).max() <= 2
    assert theirs.std() > 0.01  # a real picture, not a flat one that anything would match


def pipeline(cls, path):
    return cls.from_pretrained(str(path), safety_checker=None, requires_safety_checker=False).to("cpu")


@pytest.mark.parametrize("scheduler", ["euler", "ddim", "dpmpp_2m", "euler_a"])
def test_txt2img_matches_stable_diffusion_pipeline(tiny, run_template, scheduler):
    from diffusers import StableDiffusionPipeline

    run = run_template("txt2img", model=str(tiny["sd"]), prompt="a red circle", seed=SEED, steps=STEPS,
                       scheduler=scheduler)
    pipe = pipeline(StableDiffusionPipeline, tiny["sd"])
    use_scheduler(pipe, scheduler)
    expected = pipe("a red circle", num_inference_steps=STEPS, guidance_scale=7.5, generator=generator(),
                    output_type="pt").images
    assert_same_picture(run.value("decode", "image"), expected, run.result.outputs["save"][0])


def test_txt2img_batch_and_size_match_the_pipeline(tiny, run_template):
    from diffusers import StableDiffusionPipeline

    run = run_template("txt2img", model=str(tiny["sd"]), prompt="blue", negative_prompt="green", seed=SEED,
                       steps=3, scheduler="dpmpp_2m_karras", width=48, height=32, cfg=5.0)
    pipe = pipeline(StableDiffusionPipeline, tiny["sd"])
    use_scheduler(pipe, "dpmpp_2m_karras")
    expected = pipe("blue", negative_prompt="green", num_inference_steps=3, guidance_scale=5.0, width=48,
                    height=32, generator=generator(), output_type="pt").images
    assert_same_picture(run.value("decode", "image"), expected, run.result.outputs["save"][0])


@pytest.mark.parametrize("scheduler", ["euler", "ddim"])
def test_img2img_matches_img2img_pipeline(tiny, pictures, run_template, scheduler):
    from diffusers import StableDiffusionImg2ImgPipeline

    run = run_template("img2img", model=str(tiny["sd"]), image=str(pictures["image"]), prompt="a red circle",
                       strength=0.75, seed=SEED, steps=STEPS, scheduler=scheduler)
    pipe = pipeline(StableDiffusionImg2ImgPipeline, tiny["sd"])
    use_scheduler(pipe, scheduler)
    expected = pipe("a red circle", image=Image.open(pictures["image"]), strength=0.75,
                    num_inference_steps=STEPS, guidance_scale=7.5, generator=generator(), output_type="pt").images
    assert_same_picture(run.value("decode", "image"), expected, run.result.outputs["save"][0])


@pytest.mark.parametrize("model", ["sd", "inpaint"], ids=["4-channel-blending", "9-channel-native"])
def test_inpaint_matches_inpaint_pipeline(tiny, pictures, run_template, model):
    from diffusers import StableDiffusionInpaintPipeline

    run = run_template("inpaint", model=str(tiny[model]), image=str(pictures["image"]),
                       mask=str(pictures["mask"]), prompt="a red circle", seed=SEED, steps=STEPS, scheduler="ddim")
    pipe = pipeline(StableDiffusionInpaintPipeline, tiny[model])
    use_scheduler(pipe, "ddim")
    expected = pipe("a red circle", image=Image.open(pictures["image"]), mask_image=Image.open(pictures["mask"]),
                    height=64, width=64, num_inference_steps=STEPS, guidance_scale=7.5, generator=generator(),
                    output_type="pt").images
    assert_same_picture(run.value("decode", "image"), expected, run.result.outputs["save"][0])


@pytest.mark.parametrize("model", ["sd", "inpaint"], ids=["4-channel-blending", "9-channel-native"])
def test_inpaint_strength_and_size_match_the_inpaint_pipeline(tiny, pictures, run_template, model):
    """strength < 1 starts from the noised picture; width and height resize the picture and the mask."""
    from diffusers import StableDiffusionInpaintPipeline

    run = run_template("inpaint", model=str(tiny[model]), image=str(pictures["image"]),
                       mask=str(pictures["mask"]), prompt="a red circle", seed=SEED, steps=STEPS, scheduler="euler",
                       strength=0.6, width=48, height=32)
    pipe = pipeline(StableDiffusionInpaintPipeline, tiny[model])
    use_scheduler(pipe, "euler")
    expected = pipe("a red circle", image=Image.open(pictures["image"]), mask_image=Image.open(pictures["mask"]),
                    strength=0.6, height=32, width=48, num_inference_steps=STEPS, guidance_scale=7.5,
                    generator=generator(), output_type="pt").images
    assert expected.shape[2:] == (32, 48)
    assert_same_picture(run.value("decode", "image"), expected, run.result.outputs["save"][0])


def test_depth2img_matches_depth2img_pipeline(tiny, pictures, run_template):
    from diffusers import StableDiffusionDepth2ImgPipeline

    run = run_template("depth2img", model=str(tiny["depth"]), depth_model=str(tiny["depth"]),
                       image=str(pictures["image"]), prompt="a red circle", strength=0.8, seed=SEED, steps=STEPS,
                       scheduler="euler")
    pipe = StableDiffusionDepth2ImgPipeline.from_pretrained(str(tiny["depth"]))
    use_scheduler(pipe, "euler")
    expected = pipe("a red circle", image=Image.open(pictures["image"]), strength=0.8,
                    num_inference_steps=STEPS, guidance_scale=7.5, generator=generator(), output_type="pt").images
    assert_same_picture(run.value("decode", "image"), expected, run.result.outputs["save"][0])


def test_unconditional_matches_ddpm_pipeline(tiny, run_template):
    from diffusers import DDPMPipeline

    run = run_template("unconditional", model=str(tiny["ddpm"]), seed=SEED, steps=10, batch_size=2)
    pipe = DDPMPipeline.from_pretrained(str(tiny["ddpm"]))
    expected = pipe(batch_size=2, num_inference_steps=10, generator=generator(), output_type="np").images
    expected = torch.from_numpy(expected).permute(0, 3, 1, 2)
    ours = run.value("pixels", "image")
    assert ours.shape == expected.shape
    assert (ours - expected).abs().max().item() <= TOLERANCE
    assert len(run.result.outputs["save"]) == 2


def test_every_other_scheduler_matches_the_pipeline_too(tiny, run_template):
    from diffusers import StableDiffusionPipeline

    pipe = pipeline(StableDiffusionPipeline, tiny["sd"])
    original = pipe.scheduler
    tested = {"euler", "ddim", "dpmpp_2m", "euler_a", "dpmpp_2m_karras"}
    for name in sorted(set(SCHEDULERS) - tested):
        run = run_template("txt2img", model=str(tiny["sd"]), prompt="a red circle", seed=SEED, steps=2,
                           scheduler=name)
        pipe.scheduler = original
        use_scheduler(pipe, name)
        expected = pipe("a red circle", num_inference_steps=2, guidance_scale=7.5, generator=generator(),
                        output_type="pt").images
        difference = (run.value("decode", "image") - expected).abs().max().item()
        assert difference <= TOLERANCE, f"{name}: max difference {difference * 255:.2f}/255"


def test_depth_unet_can_also_inpaint_by_blending(tiny, pictures, services, tmp_path):
    """No pipeline does this, but the nodes compose: a masked VAEEncode feeding a depth UNet."""
    from support.templates import run_plan

    from diffgraph.engine import compile_workflow, default_registry, read_document
    from diffgraph.nodes.models import PACKAGE_DIR

    templates = PACKAGE_DIR / "workflows"
    document = read_document(templates / "depth2img.yaml")
    document["nodes"]["mask_picture"] = {"type": "LoadImage", "params": {"image": str(pictures["mask"])}}
    document["nodes"]["mask"] = {"type": "Mask", "inputs": {"image": "mask_picture.image"}}
    document["nodes"]["encode"]["inputs"]["mask"] = "mask.mask"
    plan = compile_workflow(document, default_registry(), {"model": str(tiny["depth"]), "steps": 3,
                            "depth_model": str(tiny["depth"]), "image": str(pictures["image"])}, base=templates)
    assert run_plan(plan, services=services, output_dir=tmp_path).value("decode", "image").shape == (1, 3, 64, 64)


def test_separate_loaders_compose_into_the_same_picture(tiny, run_template, services, tmp_path):
    """LoadUNet + LoadVAE + LoadTextEncoder and a Scheduler with SD 1.x's default config give the
    picture LoadPipeline gives (the tiny model carries SD 1.x's scheduler config)."""
    from support.templates import run_plan

    from diffgraph.engine import compile_workflow, default_registry, read_document
    from diffgraph.nodes.models import PACKAGE_DIR

    reference = run_template("txt2img", model=str(tiny["sd"]), steps=3, seed=SEED)
    document = read_document(PACKAGE_DIR / "workflows" / "txt2img.yaml")
    nodes = document["nodes"]
    del nodes["load"]
    nodes["unet"] = {"type": "LoadUNet", "params": {"model": str(tiny["sd"] / "unet")}}
    nodes["vae"] = {"type": "LoadVAE", "params": {"model": str(tiny["sd"])}}
    nodes["text"] = {"type": "LoadTextEncoder", "params": {"model": str(tiny["sd"])}}
    nodes["sampler"]["inputs"] = {}
    for node in nodes.values():
        for port, link in node.get("inputs", {}).items():
            node["inputs"][port] = {"load.unet": "unet.unet", "load.vae": "vae.vae",
                                    "load.text_encoder": "text.text_encoder"}.get(link, link)
    plan = compile_workflow(document, default_registry(), {"steps": 3, "seed": SEED})
    ours = run_plan(plan, services=services, output_dir=tmp_path).value("decode", "image")
    assert (ours - reference.value("decode", "image")).abs().max().item() <= TOLERANCE
