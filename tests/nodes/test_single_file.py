"""Family models from single files and Hugging Face repo ids, offline: an SDXL checkpoint in
Stability's original layout and a Flux.1 transformer file (with the rest of the model from a
`config` folder) draw the picture of the diffusers folder they were written from; configs come from
`config` or the Hugging Face cache, never from a download; a non-empty Flux.1 negative prompt is a
validation error."""

from __future__ import annotations

import pytest
import torch
from support import tiny_families, tiny_single_files
from support.templates import TEMPLATES, run_plan, template_plan
from test_parity import SEED, assert_same_picture, generator

from diffgraph.engine import WorkflowError, compile_workflow, default_registry, read_document

STEPS = 2


@pytest.fixture(scope="session")
def single_files(tmp_path_factory: pytest.TempPathFactory):
    """sdxl/ (a diffusers folder) and sdxl.safetensors (the same weights in one file); flux/ and
    flux-transformer.safetensors (its transformer alone)."""
    root = tmp_path_factory.mktemp("single-files")
    sdxl = tiny_single_files.build_sdxl(root / "sdxl")
    flux = tiny_families.build_flux(root / "flux")
    return {"sdxl": sdxl, "sdxl_file": tiny_single_files.write_sdxl_checkpoint(sdxl, root / "sdxl.safetensors"),
            "flux": flux, "flux_file": tiny_single_files.write_flux_transformer_file(flux, root / "flux-t.safetensors")}


def txt2img(model, config: str = "", **overrides):
    document = read_document(TEMPLATES / "txt2img.yaml")
    document["nodes"]["load"]["params"]["config"] = config
    values = {"model": str(model), "prompt": "a red circle", "seed": SEED, "steps": STEPS, "width": 32, "height": 32}
    return compile_workflow(document, default_registry(), {**values, **overrides}, base=TEMPLATES)


def test_sdxl_single_file_draws_the_folder_pipelines_picture(single_files, services, tmp_path):
    run = run_plan(txt2img(single_files["sdxl_file"], config=str(single_files["sdxl"]), cfg=3.0), services=services,
                   output_dir=tmp_path)
    assert run.value("load", "family") == "sdxl"
    from diffusers import StableDiffusionXLPipeline

    expected = StableDiffusionXLPipeline.from_pretrained(str(single_files["sdxl"]))(
        prompt="a red circle", num_inference_steps=STEPS, guidance_scale=3.0, height=32, width=32,
        generator=generator(), output_type="pt").images
    assert_same_picture(run.value("decode", "image"), expected, run.result.outputs["save"][0])


def test_flux_transformer_file_with_the_rest_from_config_draws_the_folder_pipelines_picture(single_files, services,
                                                                                            tmp_path):
    run = run_plan(txt2img(single_files["flux_file"], config=str(single_files["flux"]), cfg=3.5), services=services,
                   output_dir=tmp_path)
    assert run.value("load", "family") == "flux"
    from diffusers import FluxPipeline

    expected = FluxPipeline.from_pretrained(str(single_files["flux"]))(
        prompt="a red circle", num_inference_steps=STEPS, guidance_scale=3.5, height=32, width=32,
        generator=generator(), output_type="pt").images
    assert_same_picture(run.value("decode", "image"), expected, run.result.outputs["save"][0])


def test_a_whole_flux_file_with_a_transformer_in_diffusers_names_is_refused_naming_the_layout(single_files,
                                                                                              services, tmp_path):
    """diffusers converts a whole Flux.1 checkpoint (transformer, VAE, text encoders) only from Black
    Forest Labs' layout; with the transformer in diffusers' names its converter failed on an index."""
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(single_files["flux_file"]))
    vae = load_file(str(single_files["flux"] / "vae" / "diffusion_pytorch_model.safetensors"))
    whole = tmp_path / "flux-whole-diffusers-names.safetensors"
    save_file({**tensors, **{f"vae.{name}": value for name, value in vae.items()}}, str(whole))
    run = run_plan(txt2img(whole, config=str(single_files["flux"]), cfg=3.5), services=services,
                   output_dir=tmp_path, expect="failed")
    error = str(run.result.error)
    assert error.startswith("node 'load' (LoadPipeline), field 'model': flux-whole-diffusers-names.safetensors holds "
                            "a Flux.1 transformer in diffusers' own tensor names together with its vae"), error
    assert "double_blocks.*" in error and "a file of its own" in error


def test_single_file_without_a_known_config_names_the_config_param(single_files, services, tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty-hub"))
    for model in ("sdxl_file", "flux_file"):
        run = run_plan(txt2img(single_files[model]), services=services, output_dir=tmp_path, expect="failed")
        assert run.result.failed_node == "load" and "field 'config'" in run.result.error
        assert "needs `config`" in run.result.error
    # an SDXL file names the model diffusers would take its configs from
    assert "stabilityai/stable-diffusion-xl-base-1.0" in run_plan(
        txt2img(single_files["sdxl_file"]), services=services, output_dir=tmp_path, expect="failed").result.error


def test_single_file_with_a_config_of_another_family_is_refused(single_files, services, tmp_path):
    run = run_plan(txt2img(single_files["sdxl_file"], config=str(single_files["flux"])), services=services,
                   output_dir=tmp_path, expect="failed")
    assert run.result.failed_node == "load" and "field 'config'" in run.result.error
    assert "Stable Diffusion XL checkpoint" in run.result.error and "family flux" in run.result.error


def test_sdxl_single_file_takes_its_configs_from_the_hub_cache(single_files, services, tmp_path, monkeypatch):
    """No `config`: the model diffusers names for an SDXL base checkpoint, found in the Hugging Face
    cache (offline), provides the configs."""
    import huggingface_hub.constants

    hub = tmp_path / "hub"
    tiny_single_files.add_to_hub_cache(hub, "stabilityai/stable-diffusion-xl-base-1.0", single_files["sdxl"])
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(hub))
    from_file = run_plan(txt2img(single_files["sdxl_file"]), services=services, output_dir=tmp_path / "file")
    from_folder = run_plan(txt2img(single_files["sdxl"]), services=services, output_dir=tmp_path / "folder")
    torch.testing.assert_close(from_file.value("decode", "image"), from_folder.value("decode", "image"))


def test_a_family_model_loads_by_hub_id_from_the_cache_offline(single_files, services, tmp_path, monkeypatch):
    """`diffgraph run --set model=org/name` from a hub cache laid out as huggingface_hub lays it out,
    in a temporary HF_HOME, with HF_HUB_OFFLINE=1: the picture of the folder itself."""
    import json

    import huggingface_hub.constants
    import numpy as np
    from PIL import Image
    from test_templates_cli import diffgraph

    home = tmp_path / "hf-home"
    tiny_single_files.add_to_hub_cache(home / "hub", "tiny-org/tiny-sdxl", single_files["sdxl"])
    done = diffgraph("run", TEMPLATES / "txt2img.yaml", "--json", "--no-cache", "--output-dir", tmp_path / "out",
                     *[item for pair in (("--set", f"{name}={value}") for name, value in (
                         ("model", "tiny-org/tiny-sdxl"), ("steps", 2), ("width", 32), ("height", 32), ("seed", SEED),
                         ("prompt", "a red circle"))) for item in pair],
                     cwd=tmp_path, env={"HF_HOME": str(home), "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stderr.strip() == ""  # nothing of the libraries' (no guider notices, no loading bars)
    by_id = json.loads(done.stdout)
    assert by_id["status"] == "succeeded"
    by_folder = run_plan(txt2img(single_files["sdxl"]), services=services, output_dir=tmp_path / "folder")
    pictures = [np.asarray(Image.open(path)) for path in (by_id["outputs"]["save"][0],
                                                          by_folder.result.outputs["save"][0])]
    assert np.array_equal(pictures[0], pictures[1])
    # a repo the cache lacks, offline: the loader says so (in this process, the same cache)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(home / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    missing = run_plan(txt2img("tiny-org/not-cached"), services=services, output_dir=tmp_path, expect="failed")
    assert missing.result.failed_node == "load" and "HF_HUB_OFFLINE is set" in missing.result.error


def test_flux_negative_prompt_is_a_validation_error_naming_node_field_and_family(single_files):
    with pytest.raises(WorkflowError) as raised:
        template_plan("txt2img", {"model": str(single_files["flux"]), "negative_prompt": "blurry"})
    (issue,) = raised.value.issues
    assert (issue.node, issue.field) == ("sample", "negative")
    assert "family flux" in issue.message and "no negative prompt" in issue.message and "'blurry'" in issue.message
    template_plan("txt2img", {"model": str(single_files["flux"]), "negative_prompt": ""})  # empty stays valid
    template_plan("txt2img", {"model": str(single_files["sdxl"]), "negative_prompt": "blurry"})  # others take one


def test_sdxl_refiner_workflow_matches_base_then_refiner_pipelines(tmp_path_factory, services, tmp_path):
    """workflows/sdxl_refiner.yaml: the base model's picture, refined as img2img by a second model
    (text_encoder_2 only, aesthetic-score conditioning), is StableDiffusionXLPipeline's picture fed to
    StableDiffusionXLImg2ImgPipeline with the refiner's components."""
    from diffusers import StableDiffusionXLImg2ImgPipeline, StableDiffusionXLPipeline
    from support import tiny_refiner

    root = tmp_path_factory.mktemp("refiner")
    base, refiner = tiny_families.build_sdxl(root / "base"), tiny_refiner.build_sdxl_refiner(root / "refiner")
    plan = compile_workflow(read_document(TEMPLATES / "sdxl_refiner.yaml"), default_registry(), {
        "model": str(base), "refiner": str(refiner), "prompt": "a red circle", "negative_prompt": "blurry",
        "seed": SEED, "steps": 3, "refiner_steps": 4, "strength": 0.5, "cfg": 3.0, "width": 32, "height": 32},
        base=TEMPLATES)
    run = run_plan(plan, services=services, output_dir=tmp_path)
    assert (run.value("load", "family"), run.value("refiner_load", "family")) == ("sdxl", "sdxl")
    base_picture = StableDiffusionXLPipeline.from_pretrained(str(base))(
        prompt="a red circle", negative_prompt="blurry", num_inference_steps=3, guidance_scale=3.0, height=32,
        width=32, generator=generator(), output_type="pt").images
    torch.testing.assert_close(run.value("decode", "image"), base_picture, atol=2 / 255, rtol=0)
    expected = StableDiffusionXLImg2ImgPipeline.from_pretrained(str(refiner))(
        prompt="a red circle", negative_prompt="blurry", image=base_picture, strength=0.5, num_inference_steps=4,
        guidance_scale=3.0, generator=generator(), output_type="pt").images
    assert_same_picture(run.value("refiner_decode", "image"), expected, run.result.outputs["save"][0])


@pytest.mark.parametrize("text_encoders", [True, False], ids=["with-text-encoders", "without"])
def test_sd3_single_file_draws_the_folder_pipelines_picture(tmp_path_factory, services, tmp_path, text_encoders):
    """An SD3 checkpoint in Stability's layout, with its three text encoders or without them (then
    they come from `config`, as diffusers loads such files)."""
    from diffusers import StableDiffusion3Pipeline

    root = tmp_path_factory.mktemp("sd3-single")
    folder = tiny_single_files.build_sd3(root / "sd3")
    checkpoint = tiny_single_files.write_sd3_checkpoint(folder, root / "sd3.safetensors", text_encoders)
    run = run_plan(txt2img(checkpoint, config=str(folder), cfg=3.0), services=services, output_dir=tmp_path)
    assert run.value("load", "family") == "sd3"
    expected = StableDiffusion3Pipeline.from_pretrained(str(folder))(
        prompt="a red circle", num_inference_steps=STEPS, guidance_scale=3.0, height=32, width=32,
        generator=generator(), output_type="pt").images
    assert_same_picture(run.value("decode", "image"), expected, run.result.outputs["save"][0])


def test_single_component_loaders_take_their_part_of_a_single_file(single_files, services):
    """LoadUNet / LoadVAE / LoadTextEncoder on an SDXL file: refs into the one pipeline the file and
    its `config` make, the same objects LoadPipeline's outputs load."""
    from test_loading import run_node

    from diffgraph.engine import RunContext
    from diffgraph.nodes.loaders import LoadTextEncoder, LoadUNet, LoadVAE

    ctx = RunContext(node_id="n", services=services)
    values = {"model": str(single_files["sdxl_file"]), "config": str(single_files["sdxl"])}
    unet = run_node(LoadUNet, ctx, **values)["unet"]
    vae = run_node(LoadVAE, ctx, **values)["vae"]
    text = run_node(LoadTextEncoder, ctx, **values)["text_encoder"]
    assert (unet.family, unet.path, unet.config) == ("sdxl", str(single_files["sdxl_file"]), str(single_files["sdxl"]))
    pipeline = services["models"].pipeline(unet)
    assert services["models"].load(vae) is pipeline.vae and services["models"].load(unet) is pipeline.unet
    assert services["models"].load(text) is pipeline
