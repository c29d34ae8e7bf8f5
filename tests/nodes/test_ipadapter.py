"""LoadIPAdapter + ApplyIPAdapter: the txt2img template with an image prompt computes the picture of
diffusers' pipelines after `load_ip_adapter` + `set_ip_adapter_scale` with `ip_adapter_image=`
(SD 1.x and SDXL, within 2/255, CPU float32, CPU generator); the shared UNet is never left changed;
bad input is named by node and field. The adapters are tiny random ones built offline."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image
from support import tiny_families, tiny_ipadapter
from support.templates import TEMPLATES, run_plan
from test_parity import SEED, assert_same_picture, generator, use_scheduler

from diffgraph.engine import CancelToken, WorkflowError, compile_workflow, default_registry, read_document

STEPS = 3


@pytest.fixture(scope="session")
def sdxl(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_families.build_sdxl(tmp_path_factory.mktemp("tiny-sdxl") / "sdxl")


def _unet(model: Path):
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel.from_pretrained(str(model), subfolder="unet")


@pytest.fixture(scope="session")
def adapters(tiny, sdxl, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """ip-adapter.safetensors (with image_encoder/ beside it) for the tiny SD and SDXL UNets."""
    root = tmp_path_factory.mktemp("ip-adapters")
    return {"sd": tiny_ipadapter.build(root / "sd", _unet(tiny["sd"])),
            "sdxl": tiny_ipadapter.build(root / "sdxl", _unet(sdxl), seed=1)}


@pytest.fixture(scope="session")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The image prompt: a 40x48 picture (the processor resizes and crops it to the encoder's 32)."""
    import numpy as np

    y, x = np.mgrid[0:40, 0:48]
    rgb = np.stack([x * 5, 255 - y * 6, (x * y) % 256], axis=-1).astype(np.uint8)
    path = tmp_path_factory.mktemp("reference") / "reference.png"
    Image.fromarray(rgb).save(path)
    return path


def document(adapter: Path | None, image: Path, strength: float = 0.8, linked_model: bool = False) -> dict:
    """txt2img with ApplyIPAdapter between the loader's unet and the sampler (none: plain txt2img).
    `linked_model`: the model's name reaches the loader through a link, so validation cannot read it."""
    document = read_document(TEMPLATES / "txt2img.yaml")
    if linked_model:
        document["nodes"]["name"] = {"type": "String", "params": {"value": "$model"}}
        document["nodes"]["load"] = {"type": "LoadPipeline", "inputs": {"model": "name.text"}}
    if adapter is not None:
        document["nodes"]["reference"] = {"type": "LoadImage", "params": {"image": str(image)}}
        document["nodes"]["ip"] = {"type": "LoadIPAdapter", "params": {"ip_adapter": str(adapter)}}
        document["nodes"]["apply"] = {"type": "ApplyIPAdapter", "params": {"strength": strength}, "inputs": {
            "unet": "load.unet", "ip_adapter": "ip.ip_adapter", "image": "reference.image"}}
        document["nodes"]["sample"]["inputs"]["unet"] = "apply.unet"
    return document


def params(model: Path, **overrides) -> dict:
    return {"model": str(model), "prompt": "a red circle", "seed": SEED, "steps": STEPS, "cfg": 5.0, "width": 32,
            "height": 32, **overrides}


def workflow(model: Path, adapter: Path | None, image: Path, strength: float = 0.8, linked_model: bool = False,
             **overrides):
    return compile_workflow(document(adapter, image, strength, linked_model), default_registry(),
                            params(model, **overrides), base=TEMPLATES)


def run(plan, services, output_dir, expect: str = "succeeded"):
    return run_plan(plan, services=services, output_dir=output_dir, expect=expect)


def pipeline_with_adapter(cls, model: Path, adapter: Path, strength: float):
    pipe = cls.from_pretrained(str(model)).to("cpu")
    pipe.load_ip_adapter(str(adapter.parent), subfolder="", weight_name=adapter.name, local_files_only=True)
    pipe.set_ip_adapter_scale(strength)
    if cls.__name__ == "StableDiffusionPipeline":  # the template's sampler (SDXL's own is euler already)
        use_scheduler(pipe, "euler")
    return pipe


@pytest.mark.parametrize(("strength", "cfg"), [(0.8, 5.0), (1.5, 1.0)])
def test_sd_matches_the_pipeline_after_load_ip_adapter(tiny, adapters, reference, services, tmp_path, strength, cfg):
    from diffusers import StableDiffusionPipeline

    ours = run(workflow(tiny["sd"], adapters["sd"], reference, strength, cfg=cfg), services, tmp_path)
    pipe = pipeline_with_adapter(StableDiffusionPipeline, tiny["sd"], adapters["sd"], strength)
    expected = pipe("a red circle", ip_adapter_image=Image.open(reference), num_inference_steps=STEPS,
                    guidance_scale=cfg, width=32, height=32, generator=generator(), output_type="pt").images
    assert_same_picture(ours.value("decode", "image"), expected, ours.result.outputs["save"][0])
    plain = pipe("a red circle", num_inference_steps=STEPS, guidance_scale=cfg, width=32, height=32,
                 generator=generator(), output_type="pt", ip_adapter_image=Image.new("RGB", (40, 48))).images
    assert (plain - expected).abs().max() > 4 / 255  # the image prompt matters: another picture, another result


@pytest.mark.parametrize(("strength", "cfg"), [(0.7, 5.0), (1.2, 1.0)])
def test_sdxl_matches_the_pipeline_after_load_ip_adapter(sdxl, adapters, reference, services, tmp_path, strength, cfg):
    from diffusers import StableDiffusionXLPipeline

    ours = run(workflow(sdxl, adapters["sdxl"], reference, strength, cfg=cfg), services, tmp_path)
    pipe = pipeline_with_adapter(StableDiffusionXLPipeline, sdxl, adapters["sdxl"], strength)
    expected = pipe("a red circle", ip_adapter_image=Image.open(reference), num_inference_steps=STEPS,
                    guidance_scale=cfg, width=32, height=32, generator=generator(), output_type="pt").images
    assert_same_picture(ours.value("decode", "image"), expected, ours.result.outputs["save"][0])


def test_an_ip_adapter_plus_matches_the_pipeline(tiny, adapters, reference, services, tmp_path):
    """The Plus kind reads the encoder's penultimate hidden states, and its negative is the encoder's
    view of a black picture (not zeros)."""
    from diffusers import StableDiffusionPipeline
    from safetensors.torch import save_file

    plus = adapters["sd"].parent / "plus.safetensors"
    if not plus.exists():
        save_file({k: v.contiguous() for k, v in tiny_ipadapter.plus_adapter_weights(_unet(tiny["sd"])).items()},
                  str(plus))
    ours = run(workflow(tiny["sd"], plus, reference, 0.9), services, tmp_path)
    pipe = pipeline_with_adapter(StableDiffusionPipeline, tiny["sd"], plus, 0.9)
    assert type(pipe.unet.encoder_hid_proj.image_projection_layers[0]).__name__ == "IPAdapterPlusImageProjection"
    expected = pipe("a red circle", ip_adapter_image=Image.open(reference), num_inference_steps=STEPS,
                    guidance_scale=5.0, width=32, height=32, generator=generator(), output_type="pt").images
    assert_same_picture(ours.value("decode", "image"), expected, ours.result.outputs["save"][0])
    plain = workflow(tiny["sd"], None, reference)
    assert torch.equal(run(plain, services, tmp_path / "after").value("decode", "image"),
                       run(plain, {}, tmp_path / "fresh").value("decode", "image"))  # the UNet is restored


def test_two_chained_adapters_match_the_pipeline_with_both(tiny, adapters, reference, services, tmp_path):
    """ApplyIPAdapter twice, one picture each: load_ip_adapter with both files, one scale and one
    picture per adapter."""
    from diffusers import StableDiffusionPipeline

    second = adapters["sd"].parent / "second.safetensors"
    if not second.exists():
        from safetensors.torch import save_file

        save_file(tiny_ipadapter.adapter_weights(_unet(tiny["sd"]), seed=5), str(second))
    flipped = tmp_path / "flipped.png"
    Image.open(reference).transpose(Image.Transpose.FLIP_TOP_BOTTOM).save(flipped)
    doc = document(adapters["sd"], reference, 0.6)
    doc["nodes"]["reference2"] = {"type": "LoadImage", "params": {"image": str(flipped)}}
    doc["nodes"]["ip2"] = {"type": "LoadIPAdapter", "params": {"ip_adapter": str(second)}}
    doc["nodes"]["apply2"] = {"type": "ApplyIPAdapter", "params": {"strength": 1.3}, "inputs": {
        "unet": "apply.unet", "ip_adapter": "ip2.ip_adapter", "image": "reference2.image"}}
    doc["nodes"]["sample"]["inputs"]["unet"] = "apply2.unet"
    ours = run(compile_workflow(doc, default_registry(), params(tiny["sd"]), base=TEMPLATES), services, tmp_path)
    pipe = StableDiffusionPipeline.from_pretrained(str(tiny["sd"])).to("cpu")
    pipe.load_ip_adapter([str(adapters["sd"].parent)] * 2, subfolder=["", ""],
                         weight_name=[adapters["sd"].name, second.name], local_files_only=True)
    pipe.set_ip_adapter_scale([0.6, 1.3])
    use_scheduler(pipe, "euler")
    expected = pipe("a red circle", ip_adapter_image=[Image.open(reference), Image.open(flipped)],
                    num_inference_steps=STEPS, guidance_scale=5.0, width=32, height=32, generator=generator(),
                    output_type="pt").images
    assert_same_picture(ours.value("decode", "image"), expected, ours.result.outputs["save"][0])


def test_a_second_process_reuses_the_applied_adapter_from_the_disk_cache(tiny, adapters, reference, tmp_path):
    """The embeds travel in the unet reference, which the disk cache keeps: a new process (fresh model
    and result caches, the same disk cache) re-samples with a new seed without re-encoding the picture,
    and gets the picture a run from scratch gets."""
    from diffgraph.engine import Cache, DiskCache, Executor, MemoryCache

    def process(plan, disk: bool):
        executor = Executor(Cache(MemoryCache(), DiskCache(tmp_path / "cache") if disk else None), services={})
        result = executor.run(plan, output_dir=tmp_path / "out")
        assert result.status == "succeeded", result.error
        return result, executor.cached_outputs(plan, "decode")["image"]

    process(workflow(tiny["sd"], adapters["sd"], reference), disk=True)
    reseeded = workflow(tiny["sd"], adapters["sd"], reference, seed=SEED + 1)
    second, picture = process(reseeded, disk=True)
    assert "apply" in second.cached and "sample" in second.executed
    assert not {"ip", "reference", "apply"} & set(second.executed)  # nothing re-read or re-encoded
    _, scratch = process(reseeded, disk=False)
    assert torch.equal(torch.as_tensor(picture), torch.as_tensor(scratch))


@pytest.mark.parametrize("family", ["sd", "sdxl"])
def test_the_shared_model_is_never_left_changed(tiny, sdxl, adapters, reference, services, tmp_path, family):
    """One process, one model cache: without, with, without again -> the first and last pictures are
    the same, and the adapter's picture differs from both."""
    model = {"sd": tiny["sd"], "sdxl": sdxl}[family]
    before = run(workflow(model, None, reference), services, tmp_path / "1").value("decode", "image")
    adapted = run(workflow(model, adapters[family], reference), services, tmp_path / "2").value("decode", "image")
    after = run(workflow(model, None, reference), services, tmp_path / "3").value("decode", "image")
    assert torch.equal(before, after)
    assert (adapted - before).abs().max() > 4 / 255


@pytest.mark.parametrize("family", ["sd", "sdxl"])
def test_a_cancelled_run_leaves_the_model_unchanged_too(tiny, sdxl, adapters, reference, services, tmp_path, family):
    model = {"sd": tiny["sd"], "sdxl": sdxl}[family]
    token = CancelToken()

    def cancel_after_the_first_step(event):
        if event["type"] == "progress" and event["step"] == 1:
            token.cancel()

    before = run(workflow(model, None, reference), services, tmp_path / "1").value("decode", "image")
    run_plan(workflow(model, adapters[family], reference, steps=4), services=services, output_dir=tmp_path / "2",
             expect="cancelled", on_event=cancel_after_the_first_step, cancel=token)
    after = run(workflow(model, None, reference), services, tmp_path / "3").value("decode", "image")
    assert torch.equal(before, after)


def test_seeds_batched_with_an_image_prompt_give_the_unbatched_pictures(tiny, adapters, reference, tmp_path):
    """A seed sweep denoises its seeds as one batch: the image embeds are repeated per picture."""
    from support.sweeps import fresh_executor

    from diffgraph.sweep import MANIFEST, plan_sweep, run_local

    sweep = plan_sweep(document(adapters["sd"], reference), default_registry(), ["seed=1..2"], False,
                       params(tiny["sd"]), base=TEMPLATES)
    services: dict = {}
    together, alone = fresh_executor(services), fresh_executor(services)
    run_local(sweep, together, output_dir=tmp_path / "batched", batch=2)
    run_local(sweep, alone, output_dir=tmp_path / "one_by_one", batch=1)
    latents = [[executor.cached_outputs(plan, "sample")["latent"]["samples"] for _, plan in sweep.runs]
               for executor in (together, alone)]
    assert all(torch.equal(batched, single) for batched, single in zip(*latents, strict=True))
    assert not torch.equal(latents[0][0], latents[0][1])
    manifest = (tmp_path / "batched" / MANIFEST).read_text().splitlines()
    assert [json.loads(line)["batch"] for line in manifest] == [2, 2]  # they did run as one batch


def test_cache_keys_follow_strength_image_and_adapter_file(tiny, adapters, reference, services, tmp_path):
    first = run(workflow(tiny["sd"], adapters["sd"], reference, 0.8), services, tmp_path / "a")
    stronger = workflow(tiny["sd"], adapters["sd"], reference, 1.2)
    assert stronger.nodes["apply"].key != first.plan.nodes["apply"].key
    assert stronger.nodes["sample"].key != first.plan.nodes["sample"].key
    other = tmp_path / "other.png"
    Image.open(reference).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(other)
    assert workflow(tiny["sd"], adapters["sd"], other, 0.8).nodes["apply"].key != first.plan.nodes["apply"].key
    copy = tmp_path / "copy" / adapters["sd"].name
    copy.parent.mkdir()
    copy.write_bytes(adapters["sd"].read_bytes())
    (copy.parent / "image_encoder").symlink_to(adapters["sd"].parent / "image_encoder")
    again = workflow(tiny["sd"], copy, reference, 0.8).nodes["ip"].key
    copy.write_bytes(copy.read_bytes()[:-4] + b"\0\0\0\0")  # the same file, new content
    changed = workflow(tiny["sd"], copy, reference, 0.8).nodes["ip"].key
    assert changed != again
    (copy.parent / "image_encoder").unlink()  # another encoder beside the file
    shutil.copytree(adapters["sd"].parent / "image_encoder", copy.parent / "image_encoder")
    (copy.parent / "image_encoder" / "config.json").write_text(
        (copy.parent / "image_encoder" / "config.json").read_text() + "\n")
    assert workflow(tiny["sd"], copy, reference, 0.8).nodes["ip"].key != changed


def test_adapter_for_another_cross_attention_size_is_invalid(tiny, adapters, reference):
    with pytest.raises(WorkflowError) as raised:
        workflow(tiny["sd"], adapters["sdxl"], reference)
    (issue,) = raised.value.issues
    assert (issue.node, issue.field) == ("apply", "ip_adapter")
    assert "width of 64" in issue.message and "has 32" in issue.message
    assert "use an IP-Adapter made for this model" in issue.message


def test_adapter_for_another_unet_fails_at_run_time_too(tiny, sdxl, adapters, reference, services, tmp_path):
    """What validation cannot see (the model named through a link) the run still refuses, layer by layer."""
    plan = workflow(tiny["sd"], adapters["sdxl"], reference, linked_model=True)
    failed = run(plan, services, tmp_path, expect="failed")
    assert failed.result.failed_node == "apply" and "field 'ip_adapter'" in failed.result.error
    assert "width 64" in failed.result.error and "width 32" in failed.result.error
    assert "use an IP-Adapter made for this model" in failed.result.error


def test_a_model_of_another_family_is_named(tiny, tmp_path, services, reference):
    flux = tiny_families.build_flux(tmp_path / "flux")
    adapter = tiny_ipadapter.build(tmp_path / "ip", _unet(tiny["sd"]))
    with pytest.raises(WorkflowError) as raised:
        workflow(flux, adapter, reference)
    (issue,) = raised.value.issues
    assert (issue.node, issue.field) == ("apply", "unet")
    assert "Stable Diffusion 1.x/2.x and SDXL" in issue.message and "family is flux" in issue.message
    failed = run(workflow(flux, adapter, reference, linked_model=True), services, tmp_path / "out", expect="failed")
    assert failed.result.failed_node == "apply" and "field 'unet'" in failed.result.error
    assert "family is flux" in failed.result.error


@pytest.mark.parametrize("strength", [-1.5, 3.5])
def test_strength_out_of_range_is_invalid(tiny, adapters, reference, strength):
    with pytest.raises(WorkflowError) as raised:
        workflow(tiny["sd"], adapters["sd"], reference, strength)
    (issue,) = raised.value.issues
    assert (issue.node, issue.field) == ("apply", "strength")


def test_a_non_image_linked_is_invalid(tiny, adapters, reference):
    document = read_document(TEMPLATES / "txt2img.yaml")
    document["nodes"]["ip"] = {"type": "LoadIPAdapter", "params": {"ip_adapter": str(adapters["sd"])}}
    document["nodes"]["apply"] = {"type": "ApplyIPAdapter", "inputs": {
        "unet": "load.unet", "ip_adapter": "ip.ip_adapter", "image": "empty.latent"}}
    document["nodes"]["sample"]["inputs"]["unet"] = "apply.unet"
    with pytest.raises(WorkflowError) as raised:
        compile_workflow(document, default_registry(), {"model": str(tiny["sd"])}, base=TEMPLATES)
    (issue,) = raised.value.issues
    assert (issue.node, issue.field) == ("apply", "image") and "IMAGE" in issue.message


def test_a_pickle_adapter_file_is_refused_by_content(tiny, reference, services, tmp_path):
    disguised = tmp_path / "ip-adapter.safetensors"
    disguised.write_bytes(b"\x80\x04\x95" + b"\0" * 64)  # a pickle stream, whatever the name says
    failed = run(workflow(tiny["sd"], disguised, reference), services, tmp_path / "out", expect="failed")
    assert failed.result.failed_node == "ip" and "field 'ip_adapter'" in failed.result.error
    assert "pickle" in failed.result.error


@pytest.mark.parametrize(("tensors", "said"), [
    (["lora_unet_down.weight"], "image_proj.* and ip_adapter.*"),
    (["image_proj.proj.0.weight", "image_proj.norm.weight", "ip_adapter.1.to_k_lora.down.weight"], "FaceID"),
])
def test_a_file_that_is_not_an_image_prompt_adapter_is_named(tiny, reference, services, tmp_path, tensors, said):
    from safetensors.torch import save_file

    path = tmp_path / "adapter.safetensors"
    save_file({name: torch.zeros(2, 2) for name in tensors}, str(path))
    (tmp_path / "image_encoder").mkdir()
    failed = run(workflow(tiny["sd"], path, reference), services, tmp_path / "out", expect="failed")
    assert failed.result.failed_node == "ip" and "field 'ip_adapter'" in failed.result.error
    assert said in failed.result.error


def test_the_image_encoder_beside_the_file_or_named(tiny, adapters, reference, services, tmp_path):
    alone = tmp_path / adapters["sd"].name
    alone.write_bytes(adapters["sd"].read_bytes())
    failed = run(workflow(tiny["sd"], alone, reference), services, tmp_path / "out", expect="failed")
    assert failed.result.failed_node == "ip" and "field 'image_encoder'" in failed.result.error
    named = document(alone, reference)
    named["nodes"]["ip"]["params"]["image_encoder"] = str(adapters["sd"].parent / "image_encoder")
    plan = compile_workflow(named, default_registry(), params(tiny["sd"]), base=TEMPLATES)
    beside = run(workflow(tiny["sd"], adapters["sd"], reference), services, tmp_path / "beside")
    assert torch.equal(run(plan, services, tmp_path / "named").value("decode", "image"),
                       beside.value("decode", "image"))  # the encoder named in the param is the one used
    named["nodes"]["ip"]["params"]["image_encoder"] = str(tiny["sd"] / "unet")
    plan = compile_workflow(named, default_registry(), params(tiny["sd"]), base=TEMPLATES)
    failed = run(plan, services, tmp_path / "out", expect="failed")
    assert "field 'image_encoder'" in failed.result.error and "CLIPVisionModelWithProjection" in failed.result.error


def test_on_the_server_adapters_resolve_under_the_model_roots_only(tiny, adapters, reference, services, tmp_path):
    """The server's policy: the adapter and its encoder are models under its model roots; an encoder
    beside the file that links out of the roots is not read."""
    from diffgraph.engine import FileAccess, ModelRoot

    uploads, root = tmp_path / "uploads", tmp_path / "models"
    uploads.mkdir()
    (uploads / "reference.png").write_bytes(reference.read_bytes())
    (root / "ip").mkdir(parents=True)
    (root / "ip" / "ip-adapter.safetensors").write_bytes(adapters["sd"].read_bytes())
    (root / "ip" / "image_encoder").symlink_to(adapters["sd"].parent / "image_encoder")  # out of the roots
    access = FileAccess.contained(uploads, [ModelRoot(root, root), ModelRoot(tiny["sd"].parent, tiny["sd"].parent)])

    def plan(adapter: str):
        doc = document(Path(adapter), Path("reference.png"))
        return compile_workflow(doc, default_registry(), params(Path(tiny["sd"].name)), base=TEMPLATES, access=access)

    with pytest.raises(WorkflowError) as raised:
        plan(str(adapters["sd"]))  # a path outside the roots
    assert [(issue.node, issue.field) for issue in raised.value.issues] == [("ip", "ip_adapter")]
    assert "is not a model this server knows" in str(raised.value)
    failed = run(plan("ip/ip-adapter.safetensors"), services, tmp_path / "out", expect="failed")
    assert failed.result.failed_node == "ip" and "field 'image_encoder'" in failed.result.error
    (root / "ip" / "image_encoder").unlink()
    shutil.copytree(adapters["sd"].parent / "image_encoder", root / "ip" / "image_encoder")
    run(plan("ip/ip-adapter.safetensors"), services, tmp_path / "out")


def test_an_unconditional_model_is_named(tiny, adapters, reference, services, tmp_path):
    doc = read_document(TEMPLATES / "unconditional.yaml")
    doc["nodes"]["reference"] = {"type": "LoadImage", "params": {"image": str(reference)}}
    doc["nodes"]["ip"] = {"type": "LoadIPAdapter", "params": {"ip_adapter": str(adapters["sd"])}}
    doc["nodes"]["apply"] = {"type": "ApplyIPAdapter", "inputs": {
        "unet": "load.unet", "ip_adapter": "ip.ip_adapter", "image": "reference.image"}}
    doc["nodes"]["sample"]["inputs"]["unet"] = "apply.unet"
    plan = compile_workflow(doc, default_registry(), {"model": str(tiny["ddpm"]), "steps": 2}, base=TEMPLATES)
    failed = run(plan, services, tmp_path, expect="failed")
    assert failed.result.failed_node == "apply" and "field 'unet'" in failed.result.error
    assert "no cross-attention" in failed.result.error


def test_the_example_workflow_runs_with_an_image_prompt(tiny, adapters, reference, services, tmp_path):
    """examples/txt2img_ipadapter.yaml (the README's example, whole): the image prompt changes the picture."""
    from support.templates import run_workflow_file

    example = TEMPLATES.parents[1] / "examples" / "txt2img_ipadapter.yaml"
    common = {"model": str(tiny["sd"]), "ip_adapter": str(adapters["sd"]), "steps": 2, "width": 32, "height": 32}
    black = tmp_path / "black.png"
    Image.new("RGB", (32, 32)).save(black)
    pictures = [run_workflow_file(example, {**common, "image": str(image)}, services=services,
                                  output_dir=tmp_path / "out").value("decode", "image")
                for image in (reference, black)]
    assert (pictures[0] - pictures[1]).abs().max() > 4 / 255


@pytest.mark.parametrize("header", [b"[1, 2]", b'{"ip_adapter.1.to_k_ip.weight": {"shape": 7}}', b"{not json"])
def test_a_damaged_adapter_file_is_named_at_validation_or_run_never_crashes(tiny, reference, services, tmp_path,
                                                                              header):
    path = tmp_path / "ip-adapter.safetensors"
    path.write_bytes(len(header).to_bytes(8, "little") + header)
    (tmp_path / "image_encoder").mkdir()
    failed = run(workflow(tiny["sd"], path, reference), services, tmp_path / "out", expect="failed")
    assert failed.result.failed_node == "ip" and "field 'ip_adapter'" in failed.result.error
