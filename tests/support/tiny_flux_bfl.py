"""The smallest Flux.1 transformer diffusers 0.42 converts from Black Forest Labs' layout, with the
rest of a tiny Flux.1 model, written offline twice: as a diffusers folder and as the transformer
file alone in BFL's tensor names (`double_blocks.N.img_attn.qkv.weight`, `single_blocks.N.linear1`,
`img_in`, `txt_in`, `time_in`, `vector_in`, `guidance_in`, `final_layer`), as `flux1-dev.safetensors`
is shared.

diffusers' converter (`convert_flux_transformer_checkpoint_to_diffusers`) fixes the width at 3072
and the MLP ratio at 4 (it splits `single_blocks.N.linear1` by those sizes), and needs at least one
double and one single block, so this transformer is Flux.1 [dev]'s width (24 heads of 128) with one
block of each kind and the tiny family's small input and text widths: about 550 million float32
weights (2.2 GB per copy). The weights are drawn straight into a state dict by one seeded generator
(the model is never initialized), and the BFL file is that state dict with the converter's renaming
inverted: q, k and v fused in one `qkv` (and with the MLP input in `linear1` for single blocks), the
final norm's modulation stored shift before scale (the converter swaps it to diffusers' scale, shift).

    python tests/support/tiny_flux_bfl.py OUT_DIR     # writes OUT_DIR/flux-bfl/ and flux1-bfl.safetensors

The files ComfyUI users have are written from those two by `write_variant` (the BFL file in bf16,
as `flux1-dev.safetensors` ships, or float8_e4m3fn, as `flux1-dev-fp8` files, with or without
ComfyUI's `model.diffusion_model.` prefix) and `write_whole_checkpoint` (ComfyUI's all-in-one
layout: that transformer, the VAE under `vae.` in the original autoencoder's names, CLIP-L and T5
under `text_encoders.clip_l.` / `text_encoders.t5xxl.`, as ComfyUI's Flux model config saves them).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from support import tiny_families, tiny_single_files

#: the width diffusers' converter takes for granted (Flux.1's): 24 heads of 128
HEADS, HEAD_DIM = 24, 128
TRANSFORMER_CONFIG = dict(patch_size=1, in_channels=16, num_layers=1, num_single_layers=1,
                          attention_head_dim=HEAD_DIM, num_attention_heads=HEADS, joint_attention_dim=32,
                          pooled_projection_dim=32, axes_dims_rope=[16, 56, 56], guidance_embeds=True)


def _transformer_state(seed: int = 0) -> tuple[dict, dict]:
    """(config, state dict) of the wide Flux.1 transformer: shapes from a model built on the meta
    device (no memory, no initialization), values from one seeded generator. Linear weights have the
    spread of a 1/sqrt(fan_in) initialization, so activations stay of order one; norms start at 1."""
    import torch
    from diffusers import FluxTransformer2DModel

    with torch.device("meta"):
        model = FluxTransformer2DModel(**TRANSFORMER_CONFIG)
    config = dict(model.config, _class_name=type(model).__name__)
    generator = torch.Generator("cpu").manual_seed(seed)
    state = {}
    for name, meta in model.state_dict().items():
        value = torch.empty(meta.shape, dtype=torch.float32)
        if name.endswith("norm_q.weight") or name.endswith("norm_k.weight") or "norm_added_" in name:
            value.fill_(1.0)
        elif meta.ndim == 2:
            value.normal_(0.0, meta.shape[1] ** -0.5, generator=generator)
        else:
            value.normal_(0.0, 0.02, generator=generator)
        state[name] = value
    return config, state


def bfl_layout(state: dict, num_layers: int, num_single_layers: int) -> dict:
    """A diffusers-named Flux.1 transformer state dict in Black Forest Labs' names and fusions: the
    inverse of diffusers' `convert_flux_transformer_checkpoint_to_diffusers` (written from its
    mapping, tensor by tensor). Consumes nothing: the result shares unfused tensors with `state`."""
    import torch

    found = {}
    for bfl, ours in (("time_in", "time_text_embed.timestep_embedder"), ("vector_in", "time_text_embed.text_embedder"),
                      ("guidance_in", "time_text_embed.guidance_embedder")):
        for layer, linear in (("in_layer", "linear_1"), ("out_layer", "linear_2")):
            for kind in ("weight", "bias"):
                key = f"{ours}.{linear}.{kind}"
                if key in state:
                    found[f"{bfl}.{layer}.{kind}"] = state[key]
    for kind in ("weight", "bias"):
        found[f"txt_in.{kind}"] = state[f"context_embedder.{kind}"]
        found[f"img_in.{kind}"] = state[f"x_embedder.{kind}"]
        found[f"final_layer.linear.{kind}"] = state[f"proj_out.{kind}"]
        found[f"final_layer.adaLN_modulation.1.{kind}"] = tiny_single_files._swap_halves(state[f"norm_out.linear.{kind}"])
    for i in range(num_layers):
        ours, bfl = f"transformer_blocks.{i}.", f"double_blocks.{i}."
        renamed = {"norm1.linear": "img_mod.lin", "norm1_context.linear": "txt_mod.lin", "ff.net.0.proj": "img_mlp.0",
                   "ff.net.2": "img_mlp.2", "ff_context.net.0.proj": "txt_mlp.0", "ff_context.net.2": "txt_mlp.2",
                   "attn.to_out.0": "img_attn.proj", "attn.to_add_out": "txt_attn.proj"}
        for kind in ("weight", "bias"):
            for diffusers_name, bfl_name in renamed.items():
                found[f"{bfl}{bfl_name}.{kind}"] = state[f"{ours}{diffusers_name}.{kind}"]
            found[f"{bfl}img_attn.qkv.{kind}"] = torch.cat([state[f"{ours}attn.to_{x}.{kind}"] for x in "qkv"])
            found[f"{bfl}txt_attn.qkv.{kind}"] = torch.cat([state[f"{ours}attn.add_{x}_proj.{kind}"] for x in "qkv"])
        for diffusers_name, bfl_name in (("norm_q", "img_attn.norm.query_norm"), ("norm_k", "img_attn.norm.key_norm"),
                                         ("norm_added_q", "txt_attn.norm.query_norm"),
                                         ("norm_added_k", "txt_attn.norm.key_norm")):
            found[f"{bfl}{bfl_name}.scale"] = state[f"{ours}attn.{diffusers_name}.weight"]
    for i in range(num_single_layers):
        ours, bfl = f"single_transformer_blocks.{i}.", f"single_blocks.{i}."
        for kind in ("weight", "bias"):
            found[f"{bfl}modulation.lin.{kind}"] = state[f"{ours}norm.linear.{kind}"]
            found[f"{bfl}linear1.{kind}"] = torch.cat([state[f"{ours}attn.to_{x}.{kind}"] for x in "qkv"]
                                                      + [state[f"{ours}proj_mlp.{kind}"]])
            found[f"{bfl}linear2.{kind}"] = state[f"{ours}proj_out.{kind}"]
        found[f"{bfl}norm.query_norm.scale"] = state[f"{ours}attn.norm_q.weight"]
        found[f"{bfl}norm.key_norm.scale"] = state[f"{ours}attn.norm_k.weight"]
    return found


def build(root: Path, seed: int = 0) -> tuple[Path, Path]:
    """(the diffusers folder, the BFL-layout transformer file) under `root`: the tiny Flux.1 family
    folder (`tiny_families.build_flux`) with its transformer replaced by the wide one, and that
    transformer alone in Black Forest Labs' layout."""
    from safetensors.torch import save_file

    root = Path(root)
    folder = tiny_families.build_flux(root / "flux-bfl")
    config, state = _transformer_state(seed)
    transformer = folder / "transformer"
    for old in transformer.iterdir():
        old.unlink()
    (transformer / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True), encoding="utf-8")
    save_file(state, str(transformer / "diffusion_pytorch_model.safetensors"))
    target = root / "flux1-bfl.safetensors"
    save_file(bfl_layout(state, config["num_layers"], config["num_single_layers"]), str(target))
    return folder, target


#: where ComfyUI keeps a Flux.1 transformer in a checkpoint it saves
COMFY_PREFIX = "model.diffusion_model."


def write_variant(bfl_file: Path, target: Path, dtype, prefix: str = "") -> Path:
    """The BFL-layout file `bfl_file` with every tensor rounded to `dtype` (a torch dtype) and named
    `prefix` + its name, at `target`. Read a tensor at a time; the rounded copy is held until written."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(bfl_file), "pt") as source:
        state = {prefix + name: source.get_tensor(name).to(dtype) for name in source.keys()}  # noqa: SIM118
    save_file(state, str(target))
    return Path(target)


#: each component's dtype in the whole checkpoint: float8_e4m3fn for the transformer and T5 (what fp8
#: all-in-one files quantize), another dtype each for CLIP-L and the VAE, so every conversion is checked
WHOLE_CHECKPOINT_DTYPES = {"transformer": "float8_e4m3fn", "text_encoder_2": "float8_e4m3fn",
                           "text_encoder": "float16", "vae": "bfloat16"}


def write_whole_checkpoint(folder: Path, bfl_file: Path, target: Path) -> Path:
    """A whole Flux.1 checkpoint as ComfyUI saves one (its Flux model config's key prefixes): the
    transformer of `bfl_file` under `model.diffusion_model.`, and `folder`'s VAE under `vae.` (the
    original autoencoder's names), CLIP-L under `text_encoders.clip_l.transformer.` (with the
    `text_projection` and `logit_scale` ComfyUI's CLIP keeps) and T5 under
    `text_encoders.t5xxl.transformer.` (`shared` and `encoder.*`, with `logit_scale`), each in
    `WHOLE_CHECKPOINT_DTYPES`."""
    import torch
    from safetensors import safe_open
    from safetensors.torch import save_file
    from support import tiny_models

    folder = Path(folder)
    dtypes = {part: getattr(torch, name) for part, name in WHOLE_CHECKPOINT_DTYPES.items()}
    with safe_open(str(bfl_file), "pt") as source:
        state = {COMFY_PREFIX + name: source.get_tensor(name).to(dtypes["transformer"])
                 for name in source.keys()}  # noqa: SIM118
    for key, value in tiny_models.original_vae_state(folder).items():
        state["vae." + key] = value.to(dtypes["vae"])
    clip = tiny_single_files._text_model_keys(tiny_single_files._load(folder / "text_encoder" / "model.safetensors"))
    width = clip["text_model.final_layer_norm.weight"].shape[0]
    clip.setdefault("text_projection.weight", torch.eye(width))
    for key, value in clip.items():
        state["text_encoders.clip_l.transformer." + key] = value.to(dtypes["text_encoder"])
    t5 = tiny_single_files._load(folder / "text_encoder_2" / "model.safetensors")
    if "shared.weight" not in t5:  # ComfyUI's T5 keeps the token embeddings as `shared` only
        t5["shared.weight"] = t5.pop("encoder.embed_tokens.weight")
    for key, value in t5.items():
        state["text_encoders.t5xxl.transformer." + key] = value.to(dtypes["text_encoder_2"])
    for name in ("clip_l", "t5xxl"):
        state[f"text_encoders.{name}.logit_scale"] = torch.tensor(4.6055)
    save_file({key: value.contiguous() for key, value in state.items()}, str(target))
    return Path(target)


if __name__ == "__main__":
    print(*build(Path(sys.argv[1])))
