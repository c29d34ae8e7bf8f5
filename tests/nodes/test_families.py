"""Model families beyond SD 1.x/2.x (SDXL, SD3, Flux.1) through diffusers' Modular Diffusers: the
shipped templates with `--set model=<tiny folder>` compute the picture of the family's classic
diffusers pipeline (same components, seed, CPU generator) within 2/255 per pixel in float32; the
family is detected from the model's files; progress, previews and cancellation work per step; a
task a family lacks is an error naming node, field and family."""

from __future__ import annotations

import json
import logging

import pytest
import torch
from support import tiny_families
from test_parity import SEED, assert_same_picture, generator

from diffgraph.engine import CancelToken

STEPS = 3
CLASSIC = {
    ("sdxl", "txt2img"): "StableDiffusionXLPipeline",
    ("sdxl", "img2img"): "StableDiffusionXLImg2ImgPipeline",
    ("sdxl", "inpaint"): "StableDiffusionXLInpaintPipeline",
    ("sdxl-inpaint", "inpaint"): "StableDiffusionXLInpaintPipeline",
    ("sd3", "txt2img"): "StableDiffusion3Pipeline",
    ("sd3", "img2img"): "StableDiffusion3Img2ImgPipeline",
    ("flux", "txt2img"): "FluxPipeline",
    ("flux", "img2img"): "FluxImg2ImgPipeline",
    ("zimage", "txt2img"): "ZImagePipeline",
    ("zimage", "img2img"): "ZImageImg2ImgPipeline",
    ("qwenimage", "txt2img"): "QwenImagePipeline",
    ("qwenimage", "img2img"): "QwenImageImg2ImgPipeline",
    ("qwenimage", "inpaint"): "QwenImageInpaintPipeline",
    ("flux2", "txt2img"): "Flux2KleinPipeline",
}
#: what the template's `cfg` is called by each classic pipeline
GUIDANCE = {"qwenimage": "true_cfg_scale"}


@pytest.fixture(scope="session")
def family_models(tmp_path_factory: pytest.TempPathFactory):
    """Tiny sdxl/, sdxl-inpaint/ (9-channel UNet), sd3/, flux/, zimage/, qwenimage/ and flux2/ diffusers folders (diffusers' own dummy configs, random weights)."""
    return tiny_families.build_all(tmp_path_factory.mktemp("tiny-families"))


def classic(family_models, family: str, task: str):
    import diffusers

    return getattr(diffusers, CLASSIC[family, task]).from_pretrained(str(family_models[family])).to("cpu")


def picture(path):
    from PIL import Image

    return Image.open(path).convert("RGB")


@pytest.mark.parametrize("family", ["sdxl", "sd3", "flux", "zimage", "qwenimage", "flux2"])
def test_txt2img_template_matches_the_family_pipeline(family_models, run_template, family):
    cfg = 3.5
    run = run_template("txt2img", model=str(family_models[family]), prompt="a red circle", seed=SEED,
                       steps=STEPS, cfg=cfg, width=32, height=32)
    assert run.value("load", "family") == family
    negative = {"negative_prompt": ""} if family == "qwenimage" else {}  # its CFG needs a negative prompt
    expected = classic(family_models, family, "txt2img")(
        prompt="a red circle", num_inference_steps=STEPS, **{GUIDANCE.get(family, "guidance_scale"): cfg}, height=32,
        width=32, generator=generator(), output_type="pt", **negative).images
    assert_same_picture(run.value("decode", "image"), expected, run.result.outputs["save"][0])


@pytest.mark.parametrize("family", ["sdxl", "sd3", "flux", "zimage", "qwenimage"])
def test_img2img_template_matches_the_family_pipeline(family_models, run_template, pictures, family, tmp_path):
    small = tmp_path / "small.png"
    picture(pictures["image"]).resize((32, 32)).save(small)
    cfg, strength = 3.0, 0.7
    run = run_template("img2img", model=str(family_models[family]), image=str(small), prompt="a blue square",
                       seed=SEED, steps=STEPS, cfg=cfg, strength=strength)
    negative = {"negative_prompt": ""} if family == "qwenimage" else {}  # its CFG needs a negative prompt
    expected = classic(family_models, family, "img2img")(
        prompt="a blue square", image=picture(small), strength=strength, num_inference_steps=STEPS,
        **{GUIDANCE.get(family, "guidance_scale"): cfg}, height=32, width=32, generator=generator(),
        output_type="pt", **negative).images
    assert_same_picture(run.value("decode", "image"), expected, run.result.outputs["save"][0])


@pytest.mark.parametrize("family", ["sdxl", "sdxl-inpaint", "qwenimage"])
def test_inpaint_template_matches_the_family_inpaint_pipeline(family_models, run_template, pictures, tmp_path,
                                                              family):
    small, mask = tmp_path / "small.png", tmp_path / "mask.png"
    picture(pictures["image"]).resize((32, 32)).save(small)
    picture(pictures["mask"]).resize((32, 32)).save(mask)
    run = run_template("inpaint", model=str(family_models[family]), image=str(small), mask=str(mask),
                       prompt="a red circle", seed=SEED, steps=STEPS, cfg=3.0)
    negative = {"negative_prompt": ""} if family == "qwenimage" else {}  # its CFG needs a negative prompt
    expected = classic(family_models, family, "inpaint")(
        prompt="a red circle", image=picture(small), mask_image=picture(mask), strength=1.0, num_inference_steps=STEPS,
        **{GUIDANCE.get(family, "guidance_scale"): 3.0}, height=32, width=32, generator=generator(),
        output_type="pt", **negative).images
    assert_same_picture(run.value("decode", "image"), expected, run.result.outputs["save"][0])


@pytest.mark.parametrize("family", ["sd3", "flux", "zimage", "flux2"])
def test_inpaint_with_a_family_without_it_is_invalid_naming_node_field_and_family(family_models, pictures, family):
    from support.templates import template_plan

    from diffgraph.engine import WorkflowError

    with pytest.raises(WorkflowError) as raised:
        template_plan("inpaint", {"model": str(family_models[family]), "image": str(pictures["image"]),
                                  "mask": str(pictures["mask"])})
    (issue,) = raised.value.issues
    assert (issue.node, issue.field) == ("encode", "mask")
    assert f"family {family}" in issue.message and "inpaint" in issue.message


def test_img2img_with_a_family_without_it_is_invalid_naming_node_field_and_family(family_models, pictures):
    from support.templates import template_plan

    from diffgraph.engine import WorkflowError

    with pytest.raises(WorkflowError) as raised:
        template_plan("img2img", {"model": str(family_models["flux2"]), "image": str(pictures["image"])})
    (issue,) = raised.value.issues
    assert (issue.node, issue.field) == ("encode", "image")
    assert "family flux2" in issue.message and "img2img" in issue.message


def test_inpaint_with_a_family_without_it_fails_at_run_time_too(family_models, services, pictures, tmp_path):
    """What validation cannot see (the model named through a link) the run still refuses."""
    from support.templates import TEMPLATES, run_plan

    from diffgraph.engine import compile_workflow, default_registry, read_document

    document = read_document(TEMPLATES / "inpaint.yaml")
    document["nodes"]["name"] = {"type": "String", "params": {"value": "$model"}}
    document["nodes"]["load"] = {"type": "LoadPipeline", "inputs": {"model": "name.text"}}
    overrides = {"model": str(family_models["flux"]), "image": str(pictures["image"]), "mask": str(pictures["mask"])}
    plan = compile_workflow(document, default_registry(), overrides, base=TEMPLATES)
    run = run_plan(plan, services=services, output_dir=tmp_path, expect="failed")
    assert run.result.failed_node == "encode" and "field 'mask'" in run.result.error
    assert "family flux" in run.result.error and "inpaint" in run.result.error


def test_flux_refuses_a_negative_prompt_at_run_time_too(family_models, services, tmp_path):
    """What validation cannot see (the model named through a link) the run still refuses."""
    from support.templates import TEMPLATES, run_plan

    from diffgraph.engine import compile_workflow, default_registry, read_document

    document = read_document(TEMPLATES / "txt2img.yaml")
    document["nodes"]["name"] = {"type": "String", "params": {"value": "$model"}}
    document["nodes"]["load"] = {"type": "LoadPipeline", "inputs": {"model": "name.text"}}
    plan = compile_workflow(document, default_registry(), {"model": str(family_models["flux"]), "negative_prompt":
                                                           "blurry", "steps": STEPS, "width": 32, "height": 32},
                            base=TEMPLATES)
    run = run_plan(plan, services=services, output_dir=tmp_path, expect="failed")
    assert run.result.failed_node == "sample" and "field 'negative'" in run.result.error
    assert "no negative prompt" in run.result.error


def test_flow_matching_models_refuse_other_samplers(family_models, run_template):
    run = run_template("txt2img", expect="failed", model=str(family_models["sd3"]), scheduler="dpmpp_2m",
                       steps=STEPS, width=32, height=32)
    assert run.result.failed_node == "sampler" and "field 'name'" in run.result.error
    assert "only name euler" in run.result.error


@pytest.mark.parametrize("family", ["sdxl", "sd3", "flux", "zimage", "qwenimage", "flux2"])
def test_progress_every_step_with_a_preview(family_models, run_template, family):
    events = []
    run = run_template("txt2img", model=str(family_models[family]), steps=STEPS, width=32, height=32,
                       on_event=lambda event: events.append(event))
    steps = [e for e in events if e["type"] == "progress"]
    assert [(e["node"], e["step"], e["total"]) for e in steps] == [("sample", i, STEPS) for i in range(1, STEPS + 1)]
    assert all(e["preview"] is not None for e in steps)
    height, width = run.value("empty", "latent")["samples"].shape[2:]
    assert steps[0]["preview"].size == (width, height)  # the latent, unpacked (Flux, Qwen-Image pack 2x2 patches)
    assert (width, height) in ((16, 16), (8, 8))


@pytest.mark.parametrize("family", ["sdxl", "sd3", "flux", "zimage", "qwenimage", "flux2"])
def test_cancel_between_steps(family_models, services, tmp_path, family):
    from support.templates import run_plan, template_plan

    token = CancelToken()
    seen = []

    def on_event(event):
        if event["type"] == "progress":
            seen.append(event["step"])
            if event["step"] == 1:
                token.cancel()

    records: list[logging.LogRecord] = []
    listener = logging.Handler()
    listener.emit = records.append  # type: ignore[method-assign]
    logging.getLogger("diffusers").addHandler(listener)  # diffusers' loggers do not propagate to the root
    try:
        plan = template_plan("txt2img", {"model": str(family_models[family]), "steps": 4, "width": 32, "height": 32})
        run_plan(plan, services=services, output_dir=tmp_path, expect="cancelled", on_event=on_event, cancel=token)
    finally:
        logging.getLogger("diffusers").removeHandler(listener)
    assert seen == [1]
    assert not [r for r in records if "Error in block" in r.getMessage()]  # the user sees "cancelled", no traceback


def test_family_is_detected_from_the_model_files(family_models, tiny):
    from diffgraph.nodes import families

    for name, folder in family_models.items():
        assert families.family_of_folder(folder).name == name.removesuffix("-inpaint")
    assert families.family_of_folder(tiny["sd"]).name == "sd"
    assert torch.is_tensor(torch.zeros(1))


def test_rerun_across_processes_keeps_loaders_and_text_encodings(family_models, tmp_path):
    """Every family's txt2img as a subgraph of one workflow, run by three `diffgraph run` processes
    sharing a disk cache (what survives between processes is only the disk cache)."""
    import yaml
    from test_templates_cli import run_json

    document = {"format": "diffgraph/v1", "name": "all families",
                "params": {"seed": {"type": "INT", "default": 1}, "prompt": {"type": "STRING", "default": "red"}},
                "nodes": {family: {"type": "workflow:txt2img",
                                   "params": {"model": str(folder), "seed": "$seed", "prompt": "$prompt", "steps": 2,
                                              "width": 32, "height": 32}}
                          for family, folder in family_models.items() if family != "sdxl-inpaint"}}
    workflow = tmp_path / "families.yaml"
    workflow.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    cache = tmp_path / "cache"

    def nodes(*names: str) -> set[str]:
        return {f"{family}/{name}" for family in document["nodes"] for name in names}

    first = run_json(workflow, cwd=tmp_path, cache=cache)
    assert first["status"] == "succeeded" and first["cached"] == []

    # a new seed re-samples; the loader and both TextEncodes come from the disk cache (Z-Image's
    # prompt embeddings, a list of variable-length tensors, and Qwen-Image's integer masks included)
    reseeded = run_json(workflow, "seed=2", cwd=tmp_path, cache=cache)
    assert set(reseeded["executed"]) == nodes("sample", "decode", "save")
    assert nodes("load", "sampler", "positive", "negative", "empty") <= set(reseeded["cached"])

    # a new prompt re-encodes it and re-samples; the loader stays cached
    reprompted = run_json(workflow, "seed=2", "prompt=a blue square", cwd=tmp_path, cache=cache)
    assert set(reprompted["executed"]) == nodes("positive", "sample", "decode", "save")
    assert nodes("load", "sampler", "negative", "empty") <= set(reprompted["cached"])


@pytest.mark.parametrize(("marker", "title"), [("conditioner.embedders.1.model.ln_final.weight", "Stable Diffusion XL"),
                                               ("double_blocks.0.img_attn.qkv.weight", "Flux.1"),
                                               ("joint_blocks.0.x_block.attn.qkv.weight", "Stable Diffusion 3")])
def test_single_file_checkpoint_of_a_modular_family_is_named_and_needs_a_config(tmp_path, marker, title,
                                                                                 monkeypatch):
    """(Loading such files: tests/nodes/test_single_file.py.)"""
    import huggingface_hub.constants
    from safetensors.torch import save_file
    from test_loading import node_error

    from diffgraph.nodes.loaders import LoadPipeline

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty-hub"))
    path = tmp_path / "checkpoint.safetensors"
    save_file({marker: torch.zeros(2), "model.diffusion_model.input_blocks.0.0.weight": torch.zeros(2)}, str(path))
    error = node_error(LoadPipeline, model=str(path))
    assert error.field == "config" and f"single-file {title}" in str(error) and "needs `config`" in str(error)


def test_single_component_loaders_point_into_the_family_pipeline(family_models, services):
    from test_loading import run_node

    from diffgraph.engine import RunContext
    from diffgraph.nodes.loaders import LoadTextEncoder, LoadUNet, LoadVAE

    ctx = RunContext(node_id="n", services=services)
    unet = run_node(LoadUNet, ctx, model=str(family_models["flux"]))["unet"]
    vae = run_node(LoadVAE, ctx, model=str(family_models["flux"]))["vae"]
    text = run_node(LoadTextEncoder, ctx, model=str(family_models["flux"]))["text_encoder"]
    assert (unet.family, unet.subfolder, vae.subfolder, text.family) == ("flux", "transformer", "vae", "flux")
    pipeline = services["models"].pipeline(unet)
    assert services["models"].load(vae) is pipeline.vae and services["models"].load(unet) is pipeline.transformer


def test_custom_block_code_in_a_model_folder_never_runs(family_models, tmp_path):
    """A folder may ship Modular Diffusers custom blocks (modular_config.json + Python): diffgraph
    only ever uses the blocks diffusers itself ships, so that code is not imported."""
    import json
    import shutil

    from test_loading import run_node

    from diffgraph.engine import NodeError, RunContext
    from diffgraph.nodes.loaders import LoadPipeline

    folder = shutil.copytree(family_models["flux"], tmp_path / "flux-with-code")
    marker = tmp_path / "ran"
    (folder / "evil_blocks.py").write_text(f"open({str(marker)!r}, 'w').close()\n", encoding="utf-8")
    (folder / "modular_config.json").write_text(json.dumps(
        {"_class_name": "EvilBlocks", "auto_map": {"ModularPipelineBlocks": "evil_blocks.EvilBlocks"}}),
        encoding="utf-8")
    try:
        outputs = run_node(LoadPipeline, RunContext(node_id="load", services={}), model=str(folder))
        assert outputs["family"] == "flux"
    except NodeError as exc:  # refusing the folder is as good, if it says so
        assert exc.field == "model"
    assert not marker.exists()


@pytest.mark.parametrize(("sampled", "encoded"), [("sdxl", "flux"), ("sd", "sdxl"), ("flux", "sd")])
def test_conditioning_of_another_family_is_named(family_models, tiny, services, tmp_path, sampled, encoded):
    from support.templates import TEMPLATES, run_plan

    from diffgraph.engine import compile_workflow, default_registry, read_document

    models = {**family_models, "sd": tiny["sd"]}
    document = read_document(TEMPLATES / "txt2img.yaml")
    document["nodes"]["other"] = {"type": "LoadPipeline", "params": {"model": str(models[encoded])}}
    document["nodes"]["positive"]["inputs"] = {"text_encoder": "other.text_encoder"}
    plan = compile_workflow(document, default_registry(), {"model": str(models[sampled]), "steps": 2, "width": 32,
                                                           "height": 32}, base=TEMPLATES)
    run = run_plan(plan, services=services, output_dir=tmp_path, expect="failed")
    assert run.result.failed_node == "sample" and "field 'positive'" in run.result.error
    assert "link a TextEncode fed by the same model" in run.result.error


def test_a_seed_sweep_over_a_family_model_runs_each_seed_on_its_own(family_models, services, tmp_path):
    """Seed batching is diffgraph's own loop (SD 1.x/2.x); with another family the sweep runs every
    seed as an ordinary run, each the picture of that seed alone."""
    import numpy as np
    from support.sweeps import fresh_executor, pixels, txt2img_sweep

    from diffgraph.sweep import MANIFEST, run_local

    sweep = txt2img_sweep(["seed=1..2"], model=str(family_models["flux"]), steps=2, width=32, height=32)
    # a copy: a sweep executor marks its services batch-invariant, which must not leak into later tests
    run_local(sweep, fresh_executor(dict(services)), output_dir=tmp_path / "swept", batch=2)
    lines = [json.loads(line) for line in (tmp_path / "swept" / MANIFEST).read_text().splitlines()]
    assert sorted(line["params"]["seed"] for line in lines) == [1, 2]
    swept = {line["params"]["seed"]: pixels(tmp_path / "swept" / line["files"][0]) for line in lines}
    alone = run_template_plan(family_models["flux"], services, tmp_path / "alone", seed=2)
    assert np.array_equal(swept[2], pixels(alone)) and not np.array_equal(swept[1], swept[2])


def run_template_plan(model, services, output_dir, **overrides):
    from support.templates import run_shipped_template

    run = run_shipped_template("txt2img", {"model": str(model), "steps": 2, "width": 32, "height": 32, **overrides},
                               services=services, output_dir=output_dir)
    return run.result.outputs["save"][0]


@pytest.mark.parametrize("family", ["sdxl", "sd3", "zimage"])
def test_cfg_of_one_or_less_turns_guidance_off(family_models, run_template, family):
    """As for SD 1.x/2.x: no unconditional pass, so the negative prompt makes no difference."""
    pictures = [run_template("txt2img", model=str(family_models[family]), negative_prompt=negative, cfg=cfg, steps=2,
                             width=32, height=32).value("decode", "image")
                for negative, cfg in (("", 1.0), ("blurry", 1.0), ("blurry", 0.5), ("blurry", 3.0))]
    assert torch.equal(pictures[0], pictures[1]) and torch.equal(pictures[0], pictures[2])
    assert not torch.equal(pictures[0], pictures[3])


def test_sdxl_inpainting_unet_below_strength_1_is_refused_with_the_reason(family_models, pictures, services, tmp_path):
    from support.templates import TEMPLATES, run_plan

    from diffgraph.engine import compile_workflow, default_registry, read_document

    document = read_document(TEMPLATES / "inpaint.yaml")
    document["nodes"]["sample"]["params"]["strength"] = 0.5
    plan = compile_workflow(document, default_registry(), {"model": str(family_models["sdxl-inpaint"]),
                                                           "image": str(pictures["image"]), "mask": str(pictures["mask"]),
                                                           "steps": 2}, base=TEMPLATES)
    run = run_plan(plan, services=services, output_dir=tmp_path, expect="failed")
    assert run.result.failed_node == "sample" and "field 'strength'" in run.result.error
    assert "strength 1 only" in run.result.error
