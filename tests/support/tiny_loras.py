"""Tiny random LoRAs for the tiny models, made offline.

`diffusers_lora` adds peft LoRA adapters to a model's denoiser and CLIP text encoders (random
weights, so the LoRA changes the picture) and saves them with the family's own
`save_lora_weights`, as diffusers' training scripts do. `kohya_lora` writes the same kind of
low-rank weights under kohya-ss names (`lora_unet_...`, `lora_te_...`, `.lora_down` / `.lora_up`
/ `.alpha`), the format most shared SD 1.x LoRAs have, which diffusers' `lora_state_dict` converts (for SDXL with the
original block names, `kohya_sdxl_lora`).
"""

from __future__ import annotations

import re
from pathlib import Path

#: the family's classic pipeline and its LoRA mixin (which saves the file)
PIPELINES = {
    "sd": ("StableDiffusionPipeline", "StableDiffusionLoraLoaderMixin"),
    "sdxl": ("StableDiffusionXLPipeline", "StableDiffusionXLLoraLoaderMixin"),
    "sd3": ("StableDiffusion3Pipeline", "SD3LoraLoaderMixin"),
    "flux": ("FluxPipeline", "FluxLoraLoaderMixin"),
    "zimage": ("ZImagePipeline", "ZImageLoraLoaderMixin"),
    "qwenimage": ("QwenImagePipeline", "QwenImageLoraLoaderMixin"),
    "flux2": ("Flux2KleinPipeline", "Flux2LoraLoaderMixin"),
}
DENOISER_TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]
TEXT_TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj"]


def _randomize(model, seed: int, scale: float) -> None:
    """peft starts lora_B at zero (a no-op LoRA): give every LoRA matrix small random values."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * scale)


def diffusers_lora(model: Path, family: str, target: Path, seed: int = 0, rank: int = 4, alpha: float = 8.0,
                   text: bool = True, scale: float = 0.3) -> Path:
    """A LoRA for the denoiser (and, with `text`, the CLIP text encoders) of the tiny model at `model`,
    saved as diffusers saves LoRAs: one .safetensors file with adapter metadata (rank, alpha)."""
    import diffusers
    from peft import LoraConfig, inject_adapter_in_model
    from peft.utils import get_peft_model_state_dict

    pipeline_class, mixin_name = PIPELINES[family]
    pipe = getattr(diffusers, pipeline_class).from_pretrained(str(model))
    denoiser_name = "unet" if hasattr(pipe, "unet") and pipe.unet is not None else "transformer"
    layers, metadata = {}, {}
    parts = [(denoiser_name, DENOISER_TARGETS)]
    if text:
        parts += [(name, TEXT_TARGETS) for name in ("text_encoder", "text_encoder_2")
                  if name in getattr(diffusers.loaders, mixin_name)._lora_loadable_modules and getattr(pipe, name, None) is not None]
    for index, (name, targets) in enumerate(parts):
        component = getattr(pipe, name)
        config = LoraConfig(r=rank, lora_alpha=alpha, target_modules=targets, init_lora_weights=True)
        if name == denoiser_name:
            component.add_adapter(config)
        else:  # peft itself: transformers' add_adapter asks for a newer peft than PyPI has
            inject_adapter_in_model(config, component, adapter_name="default")
        _randomize(component, seed * 10 + index, scale)
        state = get_peft_model_state_dict(component, adapter_name="default")
        if name != denoiser_name:
            from diffusers.utils import convert_state_dict_to_diffusers

            state = convert_state_dict_to_diffusers(state)
        layers[f"{name}_lora_layers"] = state
        metadata[f"{name}_lora_adapter_metadata"] = config.to_dict()
    target.parent.mkdir(parents=True, exist_ok=True)
    getattr(diffusers.loaders, mixin_name).save_lora_weights(str(target.parent), weight_name=target.name, **layers, **metadata)
    return target


def _kohya_layer(key: str, layer, generator, rank: int, alpha: float, scale: float) -> dict:
    """One Linear layer's kohya-ss LoRA tensors: lora_down [rank, in], lora_up [out, rank] (drawn in
    that order from `generator`) and alpha."""
    import torch

    return {f"{key}.lora_down.weight": torch.randn(rank, layer.in_features, generator=generator) * scale,
            f"{key}.lora_up.weight": torch.randn(layer.out_features, rank, generator=generator) * scale,
            f"{key}.alpha": torch.tensor(alpha)}


def kohya_lora(model: Path, target: Path, seed: int = 0, rank: int = 4, alpha: float = 2.0, scale: float = 0.3) -> Path:
    """A kohya-ss LoRA for a tiny SD 1.x model: `lora_unet_<module path with _>` and
    `lora_te_text_model_<...>`, each with lora_down [rank, in], lora_up [out, rank] and alpha."""
    import torch
    from diffusers import StableDiffusionPipeline
    from safetensors.torch import save_file

    pipe = StableDiffusionPipeline.from_pretrained(str(model), safety_checker=None, requires_safety_checker=False)
    generator = torch.Generator().manual_seed(seed)
    tensors = {}
    parts = [("lora_unet_", "", pipe.unet, DENOISER_TARGETS), ("lora_te_", "text_model_", pipe.text_encoder, TEXT_TARGETS)]
    for prefix, inner, module, targets in parts:
        for name, layer in module.named_modules():
            if isinstance(layer, torch.nn.Linear) and any(name.endswith(t) for t in targets):
                tensors.update(_kohya_layer(prefix + inner + name.replace(".", "_"), layer, generator, rank, alpha,
                                            scale))
    target.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(target))
    return target


def _sgm_name(name: str) -> str:
    """A tiny SDXL UNet's attention module under its original (SGM) name, as kohya-ss names SDXL LoRAs:
    input_blocks.N.1 for down_blocks.1's attentions (after conv_in, two resnets, a downsampler),
    middle_block.1, output_blocks.N.1 for up_blocks.0's attentions (the tiny config's layout only)."""
    name = re.sub(r"^down_blocks\.1\.attentions\.(\d)", lambda m: f"input_blocks.{4 + int(m.group(1))}.1", name)
    name = re.sub(r"^mid_block\.attentions\.0", "middle_block.1", name)
    return re.sub(r"^up_blocks\.0\.attentions\.(\d)", lambda m: f"output_blocks.{m.group(1)}.1", name)


def kohya_sdxl_lora(model: Path, target: Path, seed: int = 0, rank: int = 4, alpha: float = 2.0,
                    scale: float = 0.3) -> Path:
    """A kohya-ss LoRA for the tiny SDXL model: `lora_unet_input_blocks_...` (original block names,
    which diffusers maps with the UNet's config), `lora_te1_...` and `lora_te2_...`."""
    import torch
    from diffusers import StableDiffusionXLPipeline
    from safetensors.torch import save_file

    pipe = StableDiffusionXLPipeline.from_pretrained(str(model))
    generator = torch.Generator().manual_seed(seed)
    tensors = {}
    for prefix, module in (("lora_unet_", pipe.unet), ("lora_te1_text_model_", pipe.text_encoder),
                           ("lora_te2_text_model_", pipe.text_encoder_2)):
        for name, layer in module.named_modules():
            if isinstance(layer, torch.nn.Linear) and any(name.endswith(t) for t in (*DENOISER_TARGETS, *TEXT_TARGETS)):
                path = _sgm_name(name) if prefix == "lora_unet_" else name.removeprefix("text_model.")
                tensors.update(_kohya_layer(prefix + path.replace(".", "_"), layer, generator, rank, alpha, scale))
    target.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(target))
    return target
