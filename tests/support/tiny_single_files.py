"""Single-file checkpoints of tiny models, written offline from diffusers folders with the same
weights, for testing `from_single_file` loading of the families beyond SD 1.x/2.x.

- SDXL: the original (LDM / Stability) layout of one `.safetensors` file, `model.diffusion_model.*`,
  `first_stage_model.*`, `conditioner.embedders.0.transformer.*` (CLIP ViT-L, transformers' names)
  and `conditioner.embedders.1.model.*` (OpenCLIP ViT-bigG's names): diffusers' single_file_utils
  key names, inverted for the tiny configs. diffusers tells the two text encoders of a file apart by
  their widths, so the tiny SDXL model here gives them different widths (32 and 48), and by the
  OpenCLIP encoder's tenth block, so it has ten.
- Flux.1: the transformer alone, as one file (how Flux.1 transformers are shared), with every other
  component from a diffusers folder. diffusers 0.42 converts Black Forest Labs' layout for Flux.1's
  real width only (its converter fixes the inner width at 3072), so the tiny file keeps diffusers'
  own tensor names, which `from_single_file` loads as they are (a BFL-layout file at that width:
  `tiny_flux_bfl`).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from support import tiny_families, tiny_models

#: the second text encoder's width (the first is 32): diffusers tells them apart by width
WIDTH_2 = 48


def build_sdxl(directory: Path) -> Path:
    """A tiny SDXL base model whose two text encoders differ in width (a single file can hold it);
    ten layers in the second: diffusers recognizes an SDXL base checkpoint by its OpenCLIP encoder's
    tenth block."""
    return tiny_families.build_sdxl(directory, width_2=WIDTH_2, layers_2=10)


def _load(path: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(path))


def _text_model_keys(state: dict) -> dict:
    """transformers' CLIP names with the `text_model.` prefix (newer releases drop it in CLIPTextModel)."""
    return {key if key.startswith(("text_model.", "text_projection.")) else "text_model." + key: value
            for key, value in state.items()}


def _unet_state(folder: Path) -> dict:
    config = json.loads((folder / "unet" / "config.json").read_text())
    prefixes = tiny_models._unet_prefixes(config) + [("add_embedding.linear_1.", "label_emb.0.0.", ()),
                                                     ("add_embedding.linear_2.", "label_emb.0.2.", ())]
    state = _load(folder / "unet" / "diffusion_pytorch_model.safetensors")
    return {"model.diffusion_model." + tiny_models._rename(key, prefixes): value for key, value in state.items()}


def _vae_state(folder: Path) -> dict:
    return {"first_stage_model." + key: value for key, value in tiny_models.original_vae_state(folder).items()}


_OPEN_CLIP_NAMES = (("layer_norm1.", "ln_1."), ("layer_norm2.", "ln_2."), ("mlp.fc1.", "mlp.c_fc."),
                    ("mlp.fc2.", "mlp.c_proj."), ("self_attn.out_proj.", "attn.out_proj."))


def _open_clip_state(state: dict, prefix: str) -> dict:
    """transformers' CLIPTextModelWithProjection as OpenCLIP names it: q/k/v in one in_proj, the
    projection transposed."""
    import torch

    state = _text_model_keys(state)
    found = {prefix + "positional_embedding": state.pop("text_model.embeddings.position_embedding.weight"),
             prefix + "token_embedding.weight": state.pop("text_model.embeddings.token_embedding.weight"),
             prefix + "ln_final.weight": state.pop("text_model.final_layer_norm.weight"),
             prefix + "ln_final.bias": state.pop("text_model.final_layer_norm.bias"),
             prefix + "text_projection": state.pop("text_projection.weight").T.contiguous()}
    state.pop("text_model.embeddings.position_ids", None)
    layers = sorted({int(key.split(".")[3]) for key in state if key.startswith("text_model.encoder.layers.")})
    for i in layers:
        old, new = f"text_model.encoder.layers.{i}.", f"{prefix}transformer.resblocks.{i}."
        for kind in ("weight", "bias"):
            found[f"{new}attn.in_proj_{kind}"] = torch.cat(
                [state.pop(f"{old}self_attn.{name}_proj.{kind}") for name in ("q", "k", "v")])
        for key in [key for key in state if key.startswith(old)]:
            rest = key[len(old):]
            for diffusers_name, open_clip_name in _OPEN_CLIP_NAMES:
                if rest.startswith(diffusers_name):
                    rest = open_clip_name + rest[len(diffusers_name):]
                    break
            found[new + rest] = state.pop(key)
    assert not state, f"tensors left unconverted: {sorted(state)[:5]}"
    return found


def write_sdxl_checkpoint(folder: Path, target: Path) -> Path:
    """An SDXL diffusers folder (built by `build_sdxl`) as one file in Stability's original layout."""
    from safetensors.torch import save_file

    folder = Path(folder)
    state = {**_unet_state(folder), **_vae_state(folder)}
    for key, value in _text_model_keys(_load(folder / "text_encoder" / "model.safetensors")).items():
        state["conditioner.embedders.0.transformer." + key] = value
    state.update(_open_clip_state(_load(folder / "text_encoder_2" / "model.safetensors"),
                                  "conditioner.embedders.1.model."))
    save_file({key: value.contiguous() for key, value in state.items()}, str(target))
    return Path(target)


def build_sd3(directory: Path) -> Path:
    """A tiny SD3 model a single file can hold: CLIP-L (width 32, identity projection, as SD3 files
    imply), CLIP-G (width 48) and a T5 wide enough (96) for the two CLIP widths side by side."""
    import torch
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline
    from transformers import CLIPTextModelWithProjection

    directory = Path(directory)
    torch.manual_seed(0)
    transformer = SD3Transformer2DModel(sample_size=16, patch_size=1, in_channels=4, num_layers=2,
                                        attention_head_dim=8, num_attention_heads=4, caption_projection_dim=32,
                                        joint_attention_dim=96, pooled_projection_dim=64, out_channels=4).eval()
    vae = tiny_families.flow_vae()
    torch.manual_seed(0)
    text_encoder = CLIPTextModelWithProjection(tiny_families.clip_config()).eval()
    with torch.no_grad():  # diffusers gives a single file's CLIP-L the identity projection
        text_encoder.text_projection.weight.copy_(torch.eye(32))
    torch.manual_seed(1)
    text_encoder_2 = CLIPTextModelWithProjection(tiny_families.clip_config(hidden_size=WIDTH_2)).eval()
    t5 = tiny_families.t5_encoder(d_model=96)
    tokenizer = tiny_families.clip_tokenizer(directory / "_clip")
    pipe = StableDiffusion3Pipeline(
        transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler(), vae=vae, text_encoder=text_encoder,
        tokenizer=tokenizer, text_encoder_2=text_encoder_2, tokenizer_2=tokenizer, text_encoder_3=t5,
        tokenizer_3=tiny_families.t5_tokenizer(directory / "_t5"), image_encoder=None, feature_extractor=None)
    pipe.save_pretrained(str(directory), safe_serialization=True)
    shutil.rmtree(directory / "_clip")
    shutil.rmtree(directory / "_t5")
    return directory


def _swap_halves(weight):
    """diffusers' (scale, shift) modulation as the original SD3 and Flux.1 files store it, (shift, scale);
    its own inverse."""
    import torch

    first, second = weight.chunk(2, dim=0)
    return torch.cat([second, first], dim=0)


def _mmdit_state(state: dict, num_layers: int) -> dict:
    """diffusers' SD3Transformer2DModel tensors under Stability's MMDiT names (no QK norm, no
    second attention: the tiny config's)."""
    import torch

    renamed = {"pos_embed": "pos_embed.pos_embed", "x_embedder.proj.": "pos_embed.proj.",
               "t_embedder.mlp.0.": "time_text_embed.timestep_embedder.linear_1.",
               "t_embedder.mlp.2.": "time_text_embed.timestep_embedder.linear_2.",
               "y_embedder.mlp.0.": "time_text_embed.text_embedder.linear_1.",
               "y_embedder.mlp.2.": "time_text_embed.text_embedder.linear_2.",
               "context_embedder.": "context_embedder.", "final_layer.linear.": "proj_out."}
    found = {}
    for original, name in renamed.items():
        for key in [key for key in state if key.startswith(name)]:
            found[original + key[len(name):]] = state.pop(key)
    for kind in ("weight", "bias"):
        found[f"final_layer.adaLN_modulation.1.{kind}"] = _swap_halves(state.pop(f"norm_out.linear.{kind}"))
    for i in range(num_layers):
        block, x, context = f"transformer_blocks.{i}.", f"joint_blocks.{i}.x_block.", f"joint_blocks.{i}.context_block."
        last = i == num_layers - 1  # its context stream ends in the attention (no output projection, no MLP)
        for kind in ("weight", "bias"):
            found[f"{x}attn.qkv.{kind}"] = torch.cat([state.pop(f"{block}attn.to_{n}.{kind}") for n in "qkv"])
            found[f"{context}attn.qkv.{kind}"] = torch.cat([state.pop(f"{block}attn.add_{n}_proj.{kind}")
                                                           for n in "qkv"])
            found[f"{x}attn.proj.{kind}"] = state.pop(f"{block}attn.to_out.0.{kind}")
            found[f"{x}adaLN_modulation.1.{kind}"] = state.pop(f"{block}norm1.linear.{kind}")
            modulation = state.pop(f"{block}norm1_context.linear.{kind}")
            found[f"{context}adaLN_modulation.1.{kind}"] = _swap_halves(modulation) if last else modulation
            found[f"{x}mlp.fc1.{kind}"] = state.pop(f"{block}ff.net.0.proj.{kind}")
            found[f"{x}mlp.fc2.{kind}"] = state.pop(f"{block}ff.net.2.{kind}")
            if not last:
                found[f"{context}attn.proj.{kind}"] = state.pop(f"{block}attn.to_add_out.{kind}")
                found[f"{context}mlp.fc1.{kind}"] = state.pop(f"{block}ff_context.net.0.proj.{kind}")
                found[f"{context}mlp.fc2.{kind}"] = state.pop(f"{block}ff_context.net.2.{kind}")
    assert not state, f"tensors left unconverted: {sorted(state)[:5]}"
    return {"model.diffusion_model." + key: value for key, value in found.items()}


def write_sd3_checkpoint(folder: Path, target: Path, text_encoders: bool = True) -> Path:
    """An SD3 diffusers folder (built by `build_sd3`) as one file in Stability's layout, with its
    three text encoders (`text_encoders.clip_l/clip_g/t5xxl.transformer.*`) or without them."""
    from safetensors.torch import save_file

    folder = Path(folder)
    config = json.loads((folder / "transformer" / "config.json").read_text())
    state = {**_mmdit_state(_load(folder / "transformer" / "diffusion_pytorch_model.safetensors"),
                            config["num_layers"]), **_vae_state(folder)}
    if text_encoders:
        for subfolder, name in (("text_encoder", "clip_l"), ("text_encoder_2", "clip_g"), ("text_encoder_3", "t5xxl")):
            weights = _load(folder / subfolder / "model.safetensors")
            if name != "t5xxl":
                weights = _text_model_keys(weights)
            elif "shared.weight" not in weights:  # tied to the embeddings; SD3 files keep it as `shared`
                weights["shared.weight"] = weights["encoder.embed_tokens.weight"]
            state.update({f"text_encoders.{name}.transformer.{key}": value for key, value in weights.items()})
    save_file({key: value.contiguous() for key, value in state.items()}, str(target))
    return Path(target)


def write_flux_transformer_file(folder: Path, target: Path) -> Path:
    """A Flux.1 diffusers folder's transformer as one file (diffusers' tensor names; see above)."""
    shutil.copyfile(Path(folder) / "transformer" / "diffusion_pytorch_model.safetensors", target)
    return Path(target)


def add_to_hub_cache(hub_cache: Path, repo_id: str, folder: Path, revision: str = "0123456789abcdef" * 2 + "01234567") -> Path:
    """Put a model folder into a Hugging Face hub cache as huggingface_hub lays one out
    (models--org--name/blobs/<sha256>, snapshots/<revision>/<path> -> the blob, refs/main), offline."""
    import hashlib

    repo = Path(hub_cache) / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / revision
    for source in sorted(path for path in Path(folder).rglob("*") if path.is_file()):
        data = source.read_bytes()
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = snapshot / source.relative_to(folder)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(Path("../" * (len(link.relative_to(repo).parts) - 1)) / "blobs" / blob.name)
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(revision, encoding="utf-8")
    return snapshot
