"""Adapter checks at validation time see through the adapters stacked on a model: a LoRA or an
IP-Adapter applied after another LoRA or IP-Adapter is still checked against the model's family."""

from __future__ import annotations

import pytest
from support.templates import TEMPLATES

from diffgraph.engine import WorkflowError, compile_workflow, default_registry, read_document


def issues(document: dict, overrides: dict) -> dict[tuple[str | None, str], str]:
    with pytest.raises(WorkflowError) as raised:
        compile_workflow(document, default_registry(), overrides, base=TEMPLATES)
    return {(issue.node, issue.field): issue.message for issue in raised.value.issues}


def test_the_second_of_two_stacked_loras_is_checked_against_the_models_family(tiny, tmp_path):
    import torch
    from safetensors.torch import save_file

    # an SDXL-style LoRA by its tensor names (kohya's lora_te1_/lora_te2_: two text encoders)
    sdxl_lora = tmp_path / "sdxl_lora.safetensors"
    save_file({"lora_te1_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight": torch.zeros(4, 8),
               "lora_te1_text_model_encoder_layers_0_self_attn_q_proj.lora_up.weight": torch.zeros(8, 4)},
              str(sdxl_lora))
    document = read_document(TEMPLATES / "txt2img_lora.yaml")
    document["nodes"]["lora_2"] = {"type": "LoadLoRA", "inputs": {"unet": "lora.unet",
                                                                  "text_encoder": "lora.text_encoder"},
                                   "params": {"lora": str(sdxl_lora)}}
    found = issues(document, {"model": str(tiny["sd"]), "lora": ""})
    assert "a model with two text encoders (SDXL or SD3)" in found["lora_2", "lora"]
    assert "the model it is applied to is Stable Diffusion 1.x/2.x" in found["lora_2", "lora"]


def test_an_ip_adapter_behind_a_lora_is_checked_against_the_models_family(tmp_path):
    flux = tmp_path / "flux"  # what validation reads of a model: its model_index.json
    flux.mkdir()
    (flux / "model_index.json").write_text('{"_class_name": "FluxPipeline"}')
    document = read_document(TEMPLATES / "txt2img.yaml")
    nodes = document["nodes"]
    nodes["lora"] = {"type": "LoadLoRA", "inputs": {"unet": "load.unet"}}  # no file: passes the model on
    nodes["reference"] = {"type": "LoadImage", "params": {"image": str(tmp_path / "missing.png")}}
    nodes["ip"] = {"type": "LoadIPAdapter", "params": {"ip_adapter": str(tmp_path / "ip.safetensors")}}
    nodes["apply"] = {"type": "ApplyIPAdapter", "inputs": {"unet": "lora.unet", "ip_adapter": "ip.ip_adapter",
                                                           "image": "reference.image"}}
    nodes["sample"]["inputs"]["unet"] = "apply.unet"
    found = issues(document, {"model": str(flux)})
    assert "IP-Adapters apply to Stable Diffusion 1.x/2.x and SDXL models" in found["apply", "unet"]
    assert "this model's family is flux" in found["apply", "unet"]
