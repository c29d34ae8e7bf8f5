"""What kind of model a file or folder is, told from its own files (what GET /api/models?kind= lists)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from safetensors.numpy import save_file

from diffgraph.engine.node import MODEL_KINDS
from diffgraph.nodes.model_kinds import kinds_of, known_models


def weights(path, *names: str):
    save_file({name: np.zeros((1,), np.float32) for name in names}, str(path))
    return path


@pytest.mark.parametrize(("names", "kinds"), [
    # a whole SD checkpoint (original layout) holds its unet, VAE and text encoder
    (("model.diffusion_model.input_blocks.0.0.weight", "first_stage_model.encoder.conv_in.weight",
      "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight"),
     ["pipeline", "unet", "vae", "text_encoder"]),
    (("model.diffusion_model.double_blocks.0.img_attn.qkv.weight",), ["pipeline", "transformer"]),
    (("lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight",), ["lora"]),
    (("unet.down_blocks.0.attn.to_q.lora_A.weight",), ["lora"]),
    (("image_proj.proj.weight", "ip_adapter.1.to_k_ip.weight"), ["ip_adapter"]),
    (("control_model.input_hint_block.0.weight",), ["controlnet"]),
    (("controlnet_cond_embedding.conv_in.weight", "down_blocks.0.resnets.0.conv1.weight"), ["controlnet"]),
    (("encoder.down.0.block.0.conv1.weight", "decoder.up.0.block.0.conv1.weight"), ["vae"]),
    (("double_blocks.0.img_attn.qkv.weight",), ["transformer"]),
    (("text_model.encoder.layers.0.mlp.fc1.weight",), ["text_encoder"]),
    (("some.other.tensor",), []),
])
def test_a_single_file_is_told_by_its_tensor_names(tmp_path, names, kinds):
    assert kinds_of(weights(tmp_path / "m.safetensors", *names)) == kinds


def test_folders_are_told_by_their_configs(tmp_path):
    pipeline = tmp_path / "pipe"
    pipeline.mkdir()
    (pipeline / "model_index.json").write_text(json.dumps(
        {"_class_name": "StableDiffusionPipeline", "unet": ["diffusers", "UNet2DConditionModel"],
         "vae": ["diffusers", "AutoencoderKL"], "safety_checker": [None, None], "image_encoder": [None, None]}))
    assert kinds_of(pipeline) == ["pipeline", "unet", "vae"]  # [null, null]: a part this folder lacks
    for class_name, kind in (("ControlNetModel", "controlnet"), ("AutoencoderKL", "vae"),
                             ("UNet2DConditionModel", "unet"), ("FluxTransformer2DModel", "transformer")):
        folder = tmp_path / class_name
        folder.mkdir()
        (folder / "config.json").write_text(json.dumps({"_class_name": class_name}))
        assert kinds_of(folder) == [kind]
    encoder = tmp_path / "clip"
    encoder.mkdir()
    (encoder / "config.json").write_text(json.dumps({"architectures": ["CLIPTextModel"]}))
    assert kinds_of(encoder) == ["text_encoder"]
    # a repo of loose weights (a LoRA on the hub) is what its weights are
    loose = tmp_path / "lora-repo"
    loose.mkdir()
    weights(loose / "pytorch_lora_weights.safetensors", "unet.to_q.lora_B.weight")
    assert kinds_of(loose) == ["lora"]


def test_what_is_no_model_file_is_no_kind_and_is_read_no_further(tmp_path):
    (tmp_path / "truncated.safetensors").write_bytes(b"\x10\x00")
    (tmp_path / "huge-header.safetensors").write_bytes((2**40).to_bytes(8, "little") + b"{}")
    (tmp_path / "not-json.safetensors").write_bytes((4).to_bytes(8, "little") + b"nope")
    os.mkfifo(tmp_path / "pipe.safetensors")  # opening it for reading would block: never opened
    for name in ("truncated", "huge-header", "not-json", "pipe"):
        assert kinds_of(tmp_path / f"{name}.safetensors") == []


def test_a_models_folder_lists_model_folders_and_files_one_subfolder_deep(tmp_path):
    (tmp_path / "loras").mkdir()
    weights(tmp_path / "loras" / "style.safetensors", "x.lora_A.weight")
    (tmp_path / "my-vae").mkdir()
    (tmp_path / "my-vae" / "config.json").write_text(json.dumps({"_class_name": "AutoencoderKL"}))
    (tmp_path / ".hidden.safetensors").write_bytes(b"")
    (tmp_path / "link.safetensors").symlink_to(tmp_path / "loras" / "style.safetensors")
    listed = {m["name"]: m for m in known_models([(tmp_path, "data dir")]) if m["source"] == "data dir"}
    assert set(listed) == {"loras/style.safetensors", "my-vae"}
    assert [m["name"] for m in known_models([(tmp_path, "data dir")], kind="lora") if m["source"] == "data dir"] == \
        ["loras/style.safetensors"]
    with pytest.raises(ValueError, match="unknown model kind 'lroa'; use one of pipeline"):
        known_models([], kind="lroa")
    assert "lora" in MODEL_KINDS
