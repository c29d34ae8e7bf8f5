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
        "sdxl_union": tiny_controlnets.build_sdxl_controlnet(sdxl, root / "sdxl-union", union=True),
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
    assert (plain.value("decode", "image") - expected).abs().max() > 0.03  # several times the tolerance


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
    assert (plain.value("decode", "image") - expected).abs().max() > 0.03  # several times the tolerance


def test_an_sdxl_controlnet_union_matches_the_union_pipeline(controlnets, edges_picture, services, tmp_path):
    from diffusers import ControlNetUnionModel, StableDiffusionXLControlNetUnionPipeline

    small = tmp_path / "control.png"
    Image.open(edges_picture["full"]).convert("RGB").resize((32, 32)).save(small)
    overrides = {"model": str(controlnets["sdxl_model"]), "controlnet": str(controlnets["sdxl_union"]),
                 "control_image": str(small), "control_scale": 0.9, "control_end": 0.7, "prompt": "a red circle",
                 "seed": SEED, "steps": 3, "cfg": 3.5, "width": 32, "height": 32}

    def run(mode: int, expect: str = "succeeded"):
        document = read_document(TEMPLATES / "controlnet.yaml")
        document["nodes"]["control"]["params"]["union_mode"] = mode
        plan = compile_workflow(document, default_registry(), overrides, base=TEMPLATES)
        return run_plan(plan, services=services, output_dir=tmp_path / "out", expect=expect)

    ours = run(3)
    pipe = StableDiffusionXLControlNetUnionPipeline.from_pretrained(
        str(controlnets["sdxl_model"]), controlnet=ControlNetUnionModel.from_pretrained(str(controlnets["sdxl_union"])))
    expected = pipe(prompt="a red circle", control_image=[Image.open(small).convert("RGB")], control_mode=[3],
                    num_inference_steps=3, guidance_scale=3.5, height=32, width=32, controlnet_conditioning_scale=0.9,
                    control_guidance_end=0.7, generator=generator(), output_type="pt").images
    assert_same_picture(ours.executor.cached_outputs(ours.plan, "decode")["image"], expected,
                        ours.result.outputs["save"][0])
    other_mode = run(1)  # the control type matters: another one gives another picture
    assert (other_mode.executor.cached_outputs(other_mode.plan, "decode")["image"] - expected).abs().max() > 2 / 255
    with pytest.raises(WorkflowError) as raised:  # the ControlNet's config.json tells at validation time
        run(-1)
    (issue,) = raised.value.issues
    assert (issue.node, issue.field) == ("control", "union_mode")
    assert "is a ControlNet-Union: set union_mode to its control type, 0..5 (got -1)" in issue.message


# ---------------------------------------------------------------------------------------------
# bad input


def error_of(run_template, **overrides) -> str:
    return str(run_template("controlnet", expect="failed", **overrides).result.error)


def test_start_after_end_is_invalid_before_anything_runs(tiny, controlnets, edges_picture):
    with pytest.raises(WorkflowError) as raised:
        template_plan("controlnet", {"model": str(tiny["sd"]), "controlnet": str(controlnets["sd"]),
                                     "control_image": str(edges_picture["full"]), "control_start": 0.8,
                                     "control_end": 0.3})
    (issue,) = raised.value.issues
    assert (issue.node, issue.field) == ("control", "end")
    assert "before start 0.8" in issue.message and "0 <= start <= end <= 1" in issue.message


def test_strength_out_of_range_and_a_mask_as_control_picture_are_invalid(tiny, controlnets, edges_picture):
    document = read_document(TEMPLATES / "controlnet.yaml")
    document["nodes"]["control"]["params"]["strength"] = 12.0
    document["nodes"]["control"]["inputs"]["image"] = "control_picture.mask"  # a mask is no picture
    with pytest.raises(WorkflowError) as raised:
        compile_workflow(document, default_registry(), {"model": str(tiny["sd"]), "controlnet": str(controlnets["sd"]),
                                                        "control_image": str(edges_picture["full"])}, base=TEMPLATES)
    found = {(issue.node, issue.field): issue.message for issue in raised.value.issues}
    assert "less than or equal to 10" in found["control", "strength"]
    assert "MASK" in found["control", "image"] and "IMAGE" in found["control", "image"]


def validation_issues(**overrides) -> dict[tuple[str | None, str], str]:
    with pytest.raises(WorkflowError) as raised:
        template_plan("controlnet", overrides)
    return {(issue.node, issue.field): issue.message for issue in raised.value.issues}


def test_a_controlnet_for_another_family_is_invalid_naming_sampleloop_the_nodes_and_what_fits(tiny, controlnets,
                                                                                              edges_picture):
    found = validation_issues(model=str(tiny["sd"]), controlnet=str(controlnets["sdxl"]),
                              control_image=str(edges_picture["full"]))
    message = found.pop(("sample", "positive"))
    assert not found
    assert "(LoadControlNet 'load_controlnet', applied by 'control')" in message
    assert "is a SDXL ControlNet, but the model sampling is Stable Diffusion 1.x/2.x" in message
    assert "load a Stable Diffusion 1.x/2.x ControlNet of text width 32" in message
    found = validation_issues(model=str(controlnets["sdxl_model"]), controlnet=str(controlnets["sd"]),
                              control_image=str(edges_picture["full"]))  # and the other way round
    assert "is a Stable Diffusion 1.x/2.x ControlNet, but the model sampling is SDXL" in found["sample", "positive"]


def test_a_single_file_controlnet_for_another_family_is_invalid_by_its_tensor_names(tiny, controlnets,
                                                                                     edges_picture, tmp_path):
    import shutil

    single = tmp_path / "sdxl-controlnet.safetensors"  # no config: its tensor names and shapes tell
    shutil.copy(controlnets["sdxl"] / "diffusion_pytorch_model.safetensors", single)
    found = validation_issues(model=str(tiny["sd"]), controlnet=str(single), control_image=str(edges_picture["full"]))
    assert "is a SDXL ControlNet, but the model sampling is Stable Diffusion 1.x/2.x" in found["sample", "positive"]


def test_a_controlnet_union_for_stable_diffusion_is_invalid(tiny, controlnets, edges_picture):
    found = validation_issues(model=str(tiny["sd"]), controlnet=str(controlnets["sdxl_union"]),
                              control_image=str(edges_picture["full"]))
    assert "ControlNet-Union is SDXL only" in found["sample", "positive"]


def test_a_controlnet_for_another_text_width_is_invalid(tiny, edges_picture, run_template, tmp_path):
    from diffusers import UNet2DConditionModel

    config = {**dict(UNet2DConditionModel.load_config(str(tiny["sd"] / "unet"))), "cross_attention_dim": 64}
    wide = UNet2DConditionModel.from_config(config)
    tiny_controlnets.controlnet_from_unet(wide).save_pretrained(str(tmp_path / "wide"), safe_serialization=True)
    found = validation_issues(model=str(tiny["sd"]), controlnet=str(tmp_path / "wide"),
                              control_image=str(edges_picture["full"]))
    assert "text of width 64, but this Stable Diffusion 1.x/2.x UNet's is 32" in found["sample", "positive"]
    # the run refuses it with the same check on the live models, where validation cannot tell (a hub id)
    from diffgraph.nodes import controlnet as controlnet_nodes

    assert controlnet_nodes._family_problem(load_net(tmp_path / "wide").config,
                                            UNet2DConditionModel.from_pretrained(str(tiny["sd"] / "unet")).config)


def test_a_controlnet_for_a_family_without_controlnets_is_invalid(controlnets, edges_picture, tmp_path):
    flux = tmp_path / "flux"  # what validation reads of a model: its model_index.json
    flux.mkdir()
    (flux / "model_index.json").write_text('{"_class_name": "FluxPipeline"}')
    found = validation_issues(model=str(flux), controlnet=str(controlnets["sdxl"]),
                              control_image=str(edges_picture["full"]))
    message = found["sample", "positive"]
    assert "ApplyControlNet 'control' applies a ControlNet, but Flux.1 dev / schnell models take no ControlNet" in message
    assert "sample a Stable Diffusion 1.x/2.x or SDXL model" in message


def test_each_controlnet_of_a_chain_is_checked_through_an_ip_adapter_and_a_lora(tiny, controlnets, edges_picture, tmp_path):
    from diffusers import UNet2DConditionModel
    from support import tiny_ipadapter

    adapter = tiny_ipadapter.build(tmp_path / "ip", UNet2DConditionModel.from_pretrained(str(tiny["sd"] / "unet")))
    document = read_document(TEMPLATES / "controlnet.yaml")
    nodes = document["nodes"]
    nodes["ip"] = {"type": "LoadIPAdapter", "params": {"ip_adapter": str(adapter)}}
    nodes["apply_ip"] = {"type": "ApplyIPAdapter", "inputs": {
        "unet": "load.unet", "ip_adapter": "ip.ip_adapter", "image": "control_picture.image"}}
    nodes["lora"] = {"type": "LoadLoRA", "inputs": {"unet": "apply_ip.unet"}}  # no file: its unet is its input
    nodes["sample"]["inputs"]["unet"] = "lora.unet"
    nodes["load_controlnet_2"] = {"type": "LoadControlNet", "params": {"model": str(controlnets["sdxl"])}}
    nodes["control_2"] = {"type": "ApplyControlNet", "inputs": {
        "conditioning": "control.conditioning", "control_net": "load_controlnet_2.control_net",
        "image": "control_picture.image"}}
    nodes["sample"]["inputs"]["positive"] = "control_2.conditioning"
    with pytest.raises(WorkflowError) as raised:
        compile_workflow(document, default_registry(), {"model": str(tiny["sd"]), "controlnet": str(controlnets["sd"]),
                                                        "control_image": str(edges_picture["full"])}, base=TEMPLATES)
    (issue,) = raised.value.issues  # the first ControlNet fits; the second, for SDXL, does not
    assert (issue.node, issue.field) == ("sample", "positive")
    assert "LoadControlNet 'load_controlnet_2', applied by 'control_2'" in issue.message


def test_a_folder_that_is_no_controlnet_and_a_pickle_file_are_refused(tiny, edges_picture, run_template, tmp_path):
    error = error_of(run_template, model=str(tiny["sd"]), controlnet=str(tiny["sd"] / "unet"),
                     control_image=str(edges_picture["full"]))
    assert "node 'load_controlnet' (LoadControlNet), field 'model'" in error
    assert "holds a UNet2DConditionModel; expected one of ControlNetModel, ControlNetUnionModel" in error
    pickled = tmp_path / "controlnet.safetensors"  # named like safetensors, pickle inside
    pickled.write_bytes(b"\x80\x04\x95" + b"\x00" * 64)
    error = error_of(run_template, model=str(tiny["sd"]), controlnet=str(pickled), control_image=str(edges_picture["full"]))
    assert "field 'model'" in error and "is a pickle file" in error


def test_the_negative_with_other_controlnets_than_the_positive_is_refused(tiny, controlnets, edges_picture, services,
                                                                          tmp_path):
    document = read_document(TEMPLATES / "controlnet.yaml")
    document["nodes"]["control_negative"] = {"type": "ApplyControlNet", "inputs": {
        "conditioning": "negative.conditioning", "control_net": "load_controlnet.control_net",
        "image": "control_picture.image"}, "params": {"strength": 0.5}}
    document["nodes"]["sample"]["inputs"]["negative"] = "control_negative.conditioning"
    plan = compile_workflow(document, default_registry(), {"model": str(tiny["sd"]), "controlnet": str(controlnets["sd"]),
                                                           "control_image": str(edges_picture["full"]), "steps": 1},
                            base=TEMPLATES)
    run = run_plan(plan, services=services, output_dir=tmp_path, expect="failed")
    error = str(run.result.error)
    assert "node 'sample' (SampleLoop), field 'negative'" in error and "other ControlNets than the positive" in error


# ---------------------------------------------------------------------------------------------
# the conditioning keeps its controls through the disk cache; the catalog


def test_controls_survive_the_disk_cache_as_one_safetensors_file(tiny, controlnets, edges_picture, tmp_path):
    from diffgraph.nodes.controlnet import ApplyControlNet, controls_of
    from diffgraph.nodes.models import ModelRef
    from diffgraph.nodes.types import Conditioning

    ref = ModelRef(kind="controlnet", path=str(controlnets["sd"]), fingerprint="abc")
    node = ApplyControlNet.instantiate({"conditioning": {"embeds": torch.ones(1, 77, 32)}, "control_net": ref,
                                        "image": torch.rand(1, 3, 8, 8), "strength": 0.7, "start": 0.1, "end": 0.9,
                                        "union_mode": -1})
    once = node.run(None)["conditioning"]
    twice = ApplyControlNet.instantiate({**node.__dict__, "conditioning": once, "strength": 0.3}).run(None)["conditioning"]
    files = Conditioning.save(twice, tmp_path, "entry")
    assert files == ["entry.safetensors"]
    restored = Conditioning.materialize(Conditioning.load(tmp_path, files))
    controls = controls_of(restored)
    assert [(c.ref, c.strength, c.start, c.end) for c in controls] == [(ref, 0.7, 0.1, 0.9), (ref, 0.3, 0.1, 0.9)]
    assert torch.equal(controls[0].image, node.image) and torch.equal(restored["embeds"], torch.ones(1, 77, 32))


def test_the_catalog_shows_the_controlnet_nodes_and_the_template_uploads_the_control_picture():
    catalog = {spec["type"]: spec for spec in default_registry().catalog()}
    load, apply, canny = catalog["LoadControlNet"], catalog["ApplyControlNet"], catalog["Canny"]
    assert next(p for p in load["params"] if p["name"] == "model")["widget"] == "model:controlnet"
    assert [o["type"] for o in load["outputs"]] == ["CONTROL_NET"]
    assert {i["name"]: i["type"] for i in apply["inputs"]} == {"conditioning": "CONDITIONING",
                                                               "control_net": "CONTROL_NET", "image": "IMAGE"}
    bounds = {p["name"]: (p["min"], p["max"], p["default"]) for p in apply["params"]}
    assert bounds == {"strength": (0.0, 10.0, 1.0), "start": (0.0, 1.0, 0.0), "end": (0.0, 1.0, 1.0),
                      "union_mode": (-1, 63, -1)}
    assert [o["type"] for o in canny["outputs"]] == ["IMAGE"]
    # the template's control_image param is a LoadImage's `image`: the editor shows an upload widget
    document = read_document(TEMPLATES / "controlnet.yaml")
    feeds = [(node["type"], name) for node in document["nodes"].values()
             for name, value in (node.get("params") or {}).items() if value == "$control_image"]
    assert feeds == [("LoadImage", "image")]
    assert next(p for p in catalog["LoadImage"]["params"] if p["name"] == "image")["widget"] == "upload"
    assert set(document["params"]) >= {"controlnet", "control_image", "control_scale"}


# ---------------------------------------------------------------------------------------------
# Canny


def run_canny(pixels: np.ndarray, low: float = 100.0, high: float = 200.0) -> np.ndarray:
    from diffgraph.nodes.controlnet import Canny

    image = torch.from_numpy(pixels).permute(2, 0, 1).float().unsqueeze(0) / 255.0
    edges = Canny.instantiate({"image": image, "low": low, "high": high}).run(None)["edges"]
    assert edges.shape == (1, 3, *pixels.shape[:2])
    assert torch.equal(edges[0, 0], edges[0, 1]) and torch.equal(edges[0, 0], edges[0, 2])
    return edges[0, 0].numpy() > 0.5


def square(value: int) -> np.ndarray:
    pixels = np.zeros((64, 64, 3), np.uint8)
    pixels[16:48, 16:48] = value
    return pixels


def test_canny_traces_a_square_as_one_thin_closed_line():
    from scipy import ndimage

    edges = run_canny(square(255))
    # one pixel wide along each side: on the dark side above and left of the step, on the bright
    # side below and right (where the gradient peaks are equal, the first one is kept, as in OpenCV)
    assert edges[15, 18:46].all() and edges[47, 18:46].all() and edges[18:46, 15].all() and edges[18:46, 47].all()
    sides = np.zeros((64, 64), bool)
    sides[15:48, 15] = sides[15:48, 47] = sides[15, 15:48] = sides[47, 15:48] = True
    near_corner = np.zeros((64, 64), bool)
    for y in (15, 47):
        for x in (15, 47):
            near_corner[y - 2:y + 3, x - 2:x + 3] = True
    assert not (edges & ~sides & ~near_corner).any()  # nothing off the contour but the corners' diagonal cuts
    assert not edges[[14, 16, 46, 48], 18:46].any() and not edges[18:46, [14, 16, 46, 48]].any()  # thin
    _, pieces = ndimage.label(edges, structure=np.ones((3, 3), bool))
    assert pieces == 1  # closed around the corners too
    assert not run_canny(np.full((64, 64, 3), 200, np.uint8)).any()  # a flat picture has no edges


def test_canny_hysteresis_keeps_faint_edges_only_with_a_low_high_threshold():
    faint = square(30)  # a Sobel magnitude of 120 across the straight sides
    assert not run_canny(faint, low=100, high=200).any()
    assert run_canny(faint, low=100, high=110)[15, 20:40].all()
    assert not run_canny(faint, low=130, high=140)[15, 20:40].any()  # the sides' 120 is below low
    with pytest.raises(Exception, match="high 50.0 is below low 100.0"):
        run_canny(faint, low=100.0, high=50.0)


def test_a_single_file_controlnet_loads_with_the_config_of_a_folder(tiny, controlnets, edges_picture, services,
                                                                    tmp_path):
    import shutil

    single = tmp_path / "controlnet.safetensors"  # the diffusers weights as one file, as many are shared
    shutil.copy(controlnets["sd"] / "diffusion_pytorch_model.safetensors", single)
    overrides = {"model": str(tiny["sd"]), "controlnet": str(single), "control_image": str(edges_picture["full"]),
                 "control_scale": 0.8, "steps": 2, "seed": SEED}

    def run(config: str, expect: str = "succeeded"):
        document = read_document(TEMPLATES / "controlnet.yaml")
        document["nodes"]["load_controlnet"]["params"]["config"] = config
        plan = compile_workflow(document, default_registry(), overrides, base=TEMPLATES)
        return run_plan(plan, services=services, output_dir=tmp_path / "out", expect=expect)

    file_run = run(str(controlnets["sd"]))
    folder_run = run_plan(template_plan("controlnet", {**overrides, "controlnet": str(controlnets["sd"])}),
                          services=services, output_dir=tmp_path / "out")
    ours = file_run.executor.cached_outputs(file_run.plan, "decode")["image"]
    assert torch.equal(ours, folder_run.executor.cached_outputs(folder_run.plan, "decode")["image"])
    error = str(run(str(tiny["sd"]), expect="failed").result.error)
    assert "node 'load_controlnet' (LoadControlNet), field 'config'" in error and "not a ControlNet folder" in error
    error = str(run("", expect="failed").result.error)  # no config: the guessed one is not in the hub cache
    assert "field 'model'" in error and "set config to a diffusers ControlNet folder" in error


# ---------------------------------------------------------------------------------------------
# ComfyUI prompts


def comfy_prompt(strength: float = 0.8, start: float = 0.25, end: float = 1.0, advanced: bool = True) -> dict:
    prompt = {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny"}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a red circle", "clip": ["4", 1]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["4", 1]}},
        "10": {"class_type": "ControlNetLoader", "inputs": {"control_net_name": "edges-cn"}},
        "11": {"class_type": "LoadImage", "inputs": {"image": "edges.png"}},
        "12": {"class_type": "ControlNetApplyAdvanced", "inputs": {
            "positive": ["6", 0], "negative": ["7", 0], "control_net": ["10", 0], "image": ["11", 0],
            "strength": strength, "start_percent": start, "end_percent": end}},
        "3": {"class_type": "KSampler", "inputs": {
            "model": ["4", 0], "positive": ["12", 0], "negative": ["12", 1], "latent_image": ["5", 0], "seed": SEED,
            "steps": STEPS, "cfg": 7.5, "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {"class_type": "SaveImage", "inputs": {"images": ["8", 0], "filename_prefix": "cn"}},
    }
    if not advanced:
        prompt["12"] = {"class_type": "ControlNetApply", "inputs": {
            "conditioning": ["6", 0], "control_net": ["10", 0], "image": ["11", 0], "strength": strength}}
        prompt["3"]["inputs"]["negative"] = ["7", 0]
    return prompt


def comfy_resolvers(tiny, controlnets, edges_picture):
    from diffgraph.comfy_import import Resolvers

    return Resolvers({"tiny": str(tiny["sd"])}.get, lambda: ["tiny"], {"edges.png": str(edges_picture["full"])}.get,
                     controlnet={"edges-cn": str(controlnets["sd"])}.get, controlnet_choices=lambda: ["edges-cn"])


@pytest.mark.parametrize("advanced", [True, False])
def test_a_comfyui_controlnet_prompt_matches_the_pipeline(tiny, controlnets, edges_picture, services, tmp_path,
                                                          advanced):
    from diffusers import EulerDiscreteScheduler

    from diffgraph.comfy_import import translate_prompt

    start = 0.25 if advanced else 0.0
    translation = translate_prompt(comfy_prompt(start=start, advanced=advanced),
                                   comfy_resolvers(tiny, controlnets, edges_picture))
    plan = compile_workflow(translation.document, default_registry(), {})
    run = run_plan(plan, services=services, output_dir=tmp_path)
    pipe = sd_controlnet_pipeline(tiny, load_net(controlnets["sd"]))
    # ComfyUI's euler with the "normal" schedule: diffusers' Euler with linspace spacing (see README)
    pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config, timestep_spacing="linspace")
    expected = pipe("a red circle", image=Image.open(edges_picture["full"]).convert("RGB"), height=64, width=64,
                    num_inference_steps=STEPS, guidance_scale=7.5, controlnet_conditioning_scale=0.8,
                    control_guidance_start=start, generator=generator(), output_type="pt").images
    assert_same_picture(run.executor.cached_outputs(plan, "8")["image"], expected, run.result.outputs["9"][0])


def test_comfyui_controlnet_problems_name_the_prompt_node_and_input(tiny, controlnets, edges_picture):
    from diffgraph.comfy_import import ComfyError, translate_prompt

    prompt = comfy_prompt(start=0.9, end=0.2)
    prompt["10"]["inputs"]["control_net_name"] = "../../secret"
    prompt["12"]["inputs"]["image"] = ["10", 0]  # a ControlNet where a picture goes
    with pytest.raises(ComfyError) as raised:
        translate_prompt(prompt, comfy_resolvers(tiny, controlnets, edges_picture))
    found = {(p.node, p.field): p.message for p in raised.value.problems}
    assert "not a ControlNet this server knows; choose one of edges-cn" in found["10", "control_net_name"]
    assert "before start_percent 0.9" in found["12", "end_percent"]
    assert "takes IMAGE; output 0 of node '10' (ControlNetLoader) is CONTROL_NET" in found["12", "image"]


def test_the_template_from_the_command_line_matches_the_pipeline_and_reruns_only_what_changed(
        tiny, controlnets, edges_picture, tmp_path):
    from test_templates_cli import run_json

    sets = [f"model={tiny['sd']}", f"controlnet={controlnets['sd']}", f"control_image={edges_picture['full']}",
            "control_scale=0.6", "control_start=0.25", "control_end=0.75", "prompt=a red circle", f"seed={SEED}",
            f"steps={STEPS}", "scheduler=euler"]
    first = run_json(TEMPLATES / "controlnet.yaml", *sets, cwd=tmp_path, cache=tmp_path / "cache")
    pipe = sd_controlnet_pipeline(tiny, load_net(controlnets["sd"]))
    use_scheduler(pipe, "euler")
    expected = pipe("a red circle", image=Image.open(edges_picture["full"]).convert("RGB"), height=64, width=64,
                    num_inference_steps=STEPS, guidance_scale=7.5, controlnet_conditioning_scale=0.6,
                    control_guidance_start=0.25, control_guidance_end=0.75, generator=generator(),
                    output_type="np").images[0]
    saved = np.asarray(Image.open(first["outputs"]["save"][0]).convert("RGB"), np.int16)
    assert np.abs(saved - (expected * 255).round().astype(np.int16)).max() <= 2
    # a second process with another scale: the controlled conditioning and what follows run again, the
    # rest (models, prompts, the control picture) comes from the disk cache
    second = run_json(TEMPLATES / "controlnet.yaml", *sets, "control_scale=0.9", cwd=tmp_path, cache=tmp_path / "cache")
    assert set(second["executed"]) == {"control", "sample", "decode", "save"}


def test_two_chained_controlnets_on_sdxl_match_the_pipelines_multi_controlnet(controlnets, edges_picture, services,
                                                                              tmp_path):
    from diffusers import MultiControlNetModel, StableDiffusionXLControlNetPipeline

    small = tmp_path / "control.png"
    Image.open(edges_picture["full"]).convert("RGB").resize((32, 32)).save(small)
    document = read_document(TEMPLATES / "controlnet.yaml")
    document["nodes"]["control_2"] = {"type": "ApplyControlNet", "inputs": {
        "conditioning": "control.conditioning", "control_net": "load_controlnet.control_net",
        "image": "control_picture.image"}, "params": {"strength": 0.4, "start": 0.3}}
    document["nodes"]["sample"]["inputs"]["positive"] = "control_2.conditioning"
    overrides = {"model": str(controlnets["sdxl_model"]), "controlnet": str(controlnets["sdxl"]),
                 "control_image": str(small), "control_scale": 0.8, "control_end": 0.6, "prompt": "a red circle",
                 "seed": SEED, "steps": 3, "cfg": 3.5, "width": 32, "height": 32}
    plan = compile_workflow(document, default_registry(), overrides, base=TEMPLATES)
    run = run_plan(plan, services=services, output_dir=tmp_path / "out")
    net = load_net(controlnets["sdxl"])
    pipe = StableDiffusionXLControlNetPipeline.from_pretrained(str(controlnets["sdxl_model"]),
                                                               controlnet=MultiControlNetModel([net, net]))
    picture = Image.open(small).convert("RGB")
    expected = pipe(prompt="a red circle", image=[picture, picture], num_inference_steps=3, guidance_scale=3.5,
                    height=32, width=32, controlnet_conditioning_scale=[0.8, 0.4], control_guidance_start=[0.0, 0.3],
                    control_guidance_end=[0.6, 1.0], generator=generator(), output_type="pt").images
    assert_same_picture(run.executor.cached_outputs(plan, "decode")["image"], expected, run.result.outputs["save"][0])


def test_diffgraph_import_makes_the_controlnet_a_template_param(tiny, controlnets, edges_picture):
    import json

    from diffgraph.comfy_import import import_file

    document = import_file(json.dumps(comfy_prompt()), {"tiny": str(tiny["sd"])}, None)
    assert document["params"]["controlnet"] == {"type": "STRING", "default": "edges-cn"}
    assert document["nodes"]["10"] == {"type": "LoadControlNet", "params": {"model": "$controlnet"}}
    assert {document["nodes"][f"12_{half}"]["type"] for half in ("positive", "negative")} == {"ApplyControlNet"}
    assert document["nodes"]["3"]["inputs"]["positive"] == "12_positive.conditioning"
    plan = compile_workflow(document, default_registry(), {"controlnet": str(controlnets["sd"]),
                                                           "image": str(edges_picture["full"])})
    assert plan.nodes["10"].params["model"] == str(controlnets["sd"])


def test_a_pipeline_folder_without_a_controlnet_is_refused_saying_so(tiny, edges_picture, run_template):
    error = error_of(run_template, model=str(tiny["sd"]), controlnet=str(tiny["sd"]),
                     control_image=str(edges_picture["full"]))
    assert "field 'model'" in error and "is not a ControlNet: it holds a diffusers pipeline without a controlnet/" in error
