"""Adapters by Hugging Face reference, from a hub cache laid out as huggingface_hub lays one out
(built offline in a temporary cache, HF_HUB_OFFLINE=1): a ControlNet repo id whose weights sit at
the repo's root (lllyasviel/sd-controlnet-canny's layout), an IP-Adapter file inside a repo
(`org/name/path/in/repo.safetensors`, h94/IP-Adapter's layout with image_encoder/ beside it). Each
gives the picture of the same files given as local paths; what the cache lacks is refused naming
the node, the field and why (offline, or a server without --allow-downloads)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from support import tiny_controlnets, tiny_ipadapter, tiny_single_files
from support.templates import TEMPLATES, run_plan, template_plan
from test_ipadapter import document as ip_document
from test_ipadapter import params as ip_params

from diffgraph.engine import (
    FileAccess,
    ModelRoot,
    WorkflowError,
    compile_workflow,
    default_registry,
    read_document,
)

CONTROLNET_REPO = "tiny-org/sd-controlnet-canny"
IP_REPO = "tiny-org/IP-Adapter"


@pytest.fixture(scope="module")
def hub(tiny, tmp_path_factory):
    """A hub cache holding a ControlNet repo (config.json and weights at its root, plus a pickle the
    loader must not read) and an IP-Adapter repo (models/ip-adapter_sd15.safetensors, models/image_encoder/)."""
    from diffusers import UNet2DConditionModel

    root = tmp_path_factory.mktemp("hub-adapters")
    controlnet = tiny_controlnets.build_sd_controlnet(root / "controlnet")
    (root / "controlnet" / "diffusion_pytorch_model.bin").write_bytes(b"\x80\x04\x95" + b"\x00" * 64)
    ip_repo = root / "ip-repo"
    weights = tiny_ipadapter.build(ip_repo / "models", UNet2DConditionModel.from_pretrained(str(tiny["sd"] / "unet")))
    weights = weights.rename(weights.with_name("ip-adapter_sd15.safetensors"))
    cache = root / "cache"
    tiny_single_files.add_to_hub_cache(cache, CONTROLNET_REPO, controlnet)
    tiny_single_files.add_to_hub_cache(cache, IP_REPO, ip_repo)
    return {"cache": cache, "controlnet": controlnet, "ip_adapter": weights}


@pytest.fixture
def offline(hub, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(hub["cache"]))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def edges(tmp_path_factory):
    pixels = np.zeros((32, 32, 3), np.uint8)
    pixels[8:24, 14:18] = 255
    path = tmp_path_factory.mktemp("edges") / "edges.png"
    Image.fromarray(pixels).save(path)
    return path


def controlnet_params(tiny, controlnet: str, edges: Path) -> dict:
    return {"model": str(tiny["sd"]), "controlnet": controlnet, "control_image": str(edges), "steps": 2,
            "width": 32, "height": 32, "seed": 7}


def test_a_controlnet_repo_id_with_weights_at_its_root_gives_the_folders_picture(tiny, hub, edges, offline, services,
                                                                                 tmp_path):
    by_id = run_plan(template_plan("controlnet", controlnet_params(tiny, CONTROLNET_REPO, edges)), services=services,
                     output_dir=tmp_path / "id")
    by_folder = run_plan(template_plan("controlnet", controlnet_params(tiny, str(hub["controlnet"]), edges)),
                         services=services, output_dir=tmp_path / "folder")
    ours = by_id.executor.cached_outputs(by_id.plan, "decode")["image"]
    assert torch.equal(ours, by_folder.executor.cached_outputs(by_folder.plan, "decode")["image"])
    plain = run_plan(template_plan("txt2img", {k: v for k, v in controlnet_params(tiny, "", edges).items()
                                               if k not in ("controlnet", "control_image")}),
                     services=services, output_dir=tmp_path / "plain")
    assert (ours - plain.executor.cached_outputs(plain.plan, "decode")["image"]).abs().max() > 2 / 255  # it steers
    ref = by_id.executor.cached_outputs(by_id.plan, "load_controlnet")["control_net"]
    assert Path(ref.path).is_relative_to(hub["cache"]) and ref.subfolder == ""
    # its weights file alone, as a single file in the repo with the folder's config: the same ControlNet
    document = read_document(TEMPLATES / "controlnet.yaml")
    document["nodes"]["load_controlnet"]["params"]["config"] = str(hub["controlnet"])
    single = run_plan(compile_workflow(document, default_registry(), controlnet_params(
        tiny, f"{CONTROLNET_REPO}/diffusion_pytorch_model.safetensors", edges), base=TEMPLATES),
        services=services, output_dir=tmp_path / "single")
    torch.testing.assert_close(single.executor.cached_outputs(single.plan, "decode")["image"], ours)


def test_a_controlnet_repo_id_for_another_family_is_invalid_before_anything_runs(controlnets_sdxl_repo, edges, tiny):
    with pytest.raises(WorkflowError) as raised:
        template_plan("controlnet", controlnet_params(tiny, controlnets_sdxl_repo, edges))
    found = {(issue.node, issue.field): issue.message for issue in raised.value.issues}
    assert f"the ControlNet {controlnets_sdxl_repo} (LoadControlNet 'load_controlnet'" in found["sample", "positive"]
    assert "is a SDXL ControlNet, but the model sampling is Stable Diffusion 1.x/2.x" in found["sample", "positive"]


@pytest.fixture
def controlnets_sdxl_repo(hub, offline, tmp_path):
    from support import tiny_families

    sdxl = tiny_families.build_sdxl(tmp_path / "sdxl")
    net = tiny_controlnets.build_sdxl_controlnet(sdxl, tmp_path / "sdxl-cn")
    tiny_single_files.add_to_hub_cache(hub["cache"], "tiny-org/sdxl-controlnet", net)
    yield "tiny-org/sdxl-controlnet"
    shutil.rmtree(hub["cache"] / "models--tiny-org--sdxl-controlnet")


def test_an_ip_adapter_file_in_a_repo_gives_the_local_files_picture(tiny, hub, offline, services, tmp_path):
    picture = tmp_path / "reference.png"
    Image.fromarray(np.arange(32 * 32 * 3, dtype=np.uint8).reshape(32, 32, 3)).save(picture)
    runs = {}
    for name, adapter in (("hub", f"{IP_REPO}/models/ip-adapter_sd15.safetensors"),
                          ("hf_url", f"hf://{IP_REPO}/models/ip-adapter_sd15.safetensors"),
                          ("local", str(hub["ip_adapter"]))):
        plan = compile_workflow(ip_document(adapter, picture), default_registry(), ip_params(tiny["sd"]),
                                base=TEMPLATES)
        runs[name] = run_plan(plan, services=services, output_dir=tmp_path / name)
    images = {name: run.executor.cached_outputs(run.plan, "decode")["image"] for name, run in runs.items()}
    assert torch.equal(images["hub"], images["local"]) and torch.equal(images["hf_url"], images["local"])
    ref = runs["hub"].executor.cached_outputs(runs["hub"].plan, "ip")["ip_adapter"]
    assert Path(ref.path).is_relative_to(hub["cache"]) and Path(ref.config).name == "image_encoder"


def test_a_repo_file_the_cache_lacks_offline_is_invalid_naming_node_field_and_why(tiny, hub, offline,
                                                                                 tmp_path):
    picture = tmp_path / "reference.png"
    Image.new("RGB", (32, 32)).save(picture)
    with pytest.raises(WorkflowError) as raised:  # before anything runs
        compile_workflow(ip_document(f"{IP_REPO}/models/ip-adapter_sdxl.safetensors", picture),
                         default_registry(), ip_params(tiny["sd"]), base=TEMPLATES)
    found = {(issue.node, issue.field): issue.message for issue in raised.value.issues}
    assert "models/ip-adapter_sdxl.safetensors of the Hugging Face repo tiny-org/IP-Adapter is not in the Hugging " \
           "Face cache (HF_HUB_OFFLINE is set)" in found["ip", "ip_adapter"]


def test_on_a_server_without_downloads_only_cached_repo_files_validate(tiny, hub, tmp_path, monkeypatch):
    """The contained policy (`diffgraph serve` without --allow-downloads) looks repo files up in the
    cache only: one it holds validates, one it lacks is a validation error saying how to allow it."""
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(hub["cache"]))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)  # the server's own rule, not the environment's
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    Image.new("RGB", (32, 32)).save(inputs / "reference.png")
    access = FileAccess.contained(inputs, [ModelRoot(tiny["sd"].parent, tiny["sd"].parent)])

    def issues(adapter: str) -> dict:
        document = ip_document(adapter, Path("reference.png"))
        try:
            compile_workflow(document, default_registry(), ip_params(Path(tiny["sd"].name)), base=TEMPLATES,
                             access=access)
        except WorkflowError as error:
            return {(issue.node, issue.field): issue.message for issue in error.issues}
        return {}

    assert issues(f"{IP_REPO}/models/ip-adapter_sd15.safetensors") == {}
    found = issues(f"{IP_REPO}/models/ip-adapter_sdxl.safetensors")
    assert "downloads are off on this server: start it with `diffgraph serve --allow-downloads`" in found["ip",
                                                                                                          "ip_adapter"]


def test_a_controlnet_repo_is_fetched_with_its_root_weights_and_nothing_else():
    """What snapshot_download would fetch of a ControlNet repo (huggingface_hub's own filter, the one it
    applies to the repo's file list): the root layout's config and safetensors weights, a pipeline's
    controlnet/; never the pickle, half-precision or other variants beside them."""
    from huggingface_hub.utils import filter_repo_objects

    from diffgraph.nodes import models

    def fetched(files: list[str]) -> list[str]:
        return list(filter_repo_objects(files, allow_patterns=list(models.CONTROLNET_HUB_PATTERNS),
                                        ignore_patterns=list(models.HUB_IGNORE_PATTERNS)))

    root_layout = [".gitattributes", "README.md", "config.json", "diffusion_pytorch_model.bin",
                   "diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.fp16.safetensors",
                   "diffusion_pytorch_model_promax.safetensors", "images/bird_canny.png"]
    assert fetched(root_layout) == ["config.json", "diffusion_pytorch_model.safetensors"]
    sharded = ["config.json", "diffusion_pytorch_model.safetensors.index.json",
               "diffusion_pytorch_model-00001-of-00002.safetensors", "diffusion_pytorch_model-00002-of-00002.safetensors"]
    assert fetched(sharded) == sharded
    pipeline = ["model_index.json", "controlnet/config.json", "controlnet/diffusion_pytorch_model.safetensors",
                "unet/diffusion_pytorch_model.safetensors", "v1-5-pruned.safetensors"]
    assert fetched(pipeline) == ["model_index.json", "controlnet/config.json",
                                 "controlnet/diffusion_pytorch_model.safetensors"]
    # the default (a pipeline's components) would have skipped the root layout's weights: the reason for the above
    default = filter_repo_objects(root_layout, allow_patterns=list(models.PIPELINE_HUB_PATTERNS),
                                  ignore_patterns=list(models.HUB_IGNORE_PATTERNS))
    assert "diffusion_pytorch_model.safetensors" not in list(default)


def test_a_lora_file_in_a_repo_gives_the_local_files_picture_and_validates_against_the_family(
        tiny, hub, offline, services, tmp_path):
    from support import tiny_loras

    repo = tmp_path / "lora-repo"
    local = tiny_loras.diffusers_lora(tiny["sd"], "sd", repo / "sd15" / "pytorch_lora_weights.safetensors", seed=3)
    tiny_single_files.add_to_hub_cache(hub["cache"], "tiny-org/loras", repo)
    params = {"model": str(tiny["sd"]), "steps": 2, "width": 32, "height": 32, "seed": 7, "lora_scale": 0.8}
    by_ref = run_plan(template_plan("txt2img_lora", {**params, "lora": "tiny-org/loras/sd15/pytorch_lora_weights.safetensors"}),
                      services=services, output_dir=tmp_path / "ref")
    by_path = run_plan(template_plan("txt2img_lora", {**params, "lora": str(local)}), services=services,
                       output_dir=tmp_path / "path")
    assert torch.equal(by_ref.executor.cached_outputs(by_ref.plan, "decode")["image"],
                       by_path.executor.cached_outputs(by_path.plan, "decode")["image"])
    with pytest.raises(WorkflowError) as raised:  # not in the cache, offline: refused before anything runs
        template_plan("txt2img_lora", {**params, "lora": "tiny-org/loras/sdxl/pytorch_lora_weights.safetensors"})
    found = {(issue.node, issue.field): issue.message for issue in raised.value.issues}
    assert "sdxl/pytorch_lora_weights.safetensors of the Hugging Face repo tiny-org/loras is not in the Hugging " \
           "Face cache (HF_HUB_OFFLINE is set)" in found["lora", "lora"]


def test_diffgraph_run_takes_a_controlnet_repo_id_from_hf_home_offline(tiny, hub, edges, services, tmp_path):
    """The command line, in a fresh process with HF_HOME and HF_HUB_OFFLINE=1: the picture of the folder."""
    from test_templates_cli import run_json

    home = tmp_path / "hf-home"
    tiny_single_files.add_to_hub_cache(home / "hub", CONTROLNET_REPO, hub["controlnet"])
    sets = [f"{name}={value}" for name, value in controlnet_params(tiny, CONTROLNET_REPO, edges).items()]
    done = run_json(TEMPLATES / "controlnet.yaml", *sets, cwd=tmp_path, cache=tmp_path / "cache",
                    env={"HF_HOME": str(home), "HF_HUB_OFFLINE": "1"})
    assert done["status"] == "succeeded"
    by_folder = run_plan(template_plan("controlnet", controlnet_params(tiny, str(hub["controlnet"]), edges)),
                         services=services, output_dir=tmp_path / "folder")
    pictures = [np.asarray(Image.open(path)) for path in (done["outputs"]["save"][0],
                                                          by_folder.result.outputs["save"][0])]
    assert np.array_equal(pictures[0], pictures[1])
