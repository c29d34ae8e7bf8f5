"""Tiny IP-Adapters built offline: a random CLIP vision encoder with projection (saved as a
transformers folder with its CLIPImageProcessor config) and random IP-Adapter weights for a given
UNet, in the single-file layout diffusers' `load_ip_adapter` reads (`image_proj.*` for the image
projection, `ip_adapter.{1,3,5...}.to_k_ip/to_v_ip.weight` for each cross-attention layer).

    folder/ip-adapter.safetensors
    folder/image_encoder/            (config.json, model.safetensors, preprocessor_config.json)

which is where diffusers (and LoadIPAdapter) look for the encoder by default.
"""

from __future__ import annotations

from pathlib import Path

#: the tiny encoder's picture size, embedding width and projection width
IMAGE_SIZE = 32
HIDDEN = 32
PROJECTION = 24


def image_encoder(directory: Path) -> Path:
    """A 2-layer CLIPVisionModelWithProjection on 32x32 pictures, with the CLIPImageProcessor
    diffusers builds for it (size and crop size = the encoder's image size)."""
    import torch
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(0)
    config = CLIPVisionConfig(hidden_size=HIDDEN, projection_dim=PROJECTION, num_hidden_layers=2,
                              num_attention_heads=4, intermediate_size=37, image_size=IMAGE_SIZE, patch_size=8)
    CLIPVisionModelWithProjection(config).eval().save_pretrained(str(directory), safe_serialization=True)
    CLIPImageProcessor(size=IMAGE_SIZE, crop_size=IMAGE_SIZE).save_pretrained(str(directory))
    return Path(directory)


def adapter_weights(unet, seed: int = 0, image_embed_dim: int = PROJECTION, tokens: int = 4) -> dict:
    """Random IP-Adapter weights (the plain ImageProjection kind) for `unet`'s cross-attention layers,
    large enough that the image visibly changes the picture."""
    import torch

    generator = torch.Generator("cpu").manual_seed(seed)
    cross = unet.config.cross_attention_dim

    def random(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=generator) * 0.3

    weights = {
        "image_proj.proj.weight": random(cross * tokens, image_embed_dim),
        "image_proj.proj.bias": random(cross * tokens),
        "image_proj.norm.weight": torch.ones(cross) + random(cross),
        "image_proj.norm.bias": random(cross),
    }
    cross_attention = [name for name in unet.attn_processors if name.endswith("attn2.processor")]
    for index, name in enumerate(cross_attention):
        attention = unet.get_submodule(name.removesuffix(".processor"))
        hidden = attention.to_k.weight.shape[0]
        weights[f"ip_adapter.{2 * index + 1}.to_k_ip.weight"] = random(hidden, cross)
        weights[f"ip_adapter.{2 * index + 1}.to_v_ip.weight"] = random(hidden, cross)
    return weights


def plus_adapter_weights(unet, seed: int = 0, queries: int = 4) -> dict:
    """Random IP-Adapter Plus weights (a perceiver resampler over the encoder's penultimate hidden
    states) for `unet`, in the original repo's tensor names that diffusers converts on loading."""
    import torch
    from diffusers.models.embeddings import IPAdapterPlusImageProjection

    torch.manual_seed(seed)
    resampler = IPAdapterPlusImageProjection(embed_dims=HIDDEN, output_dims=unet.config.cross_attention_dim,
                                             hidden_dims=64, heads=1, num_queries=queries)  # depth 4, as diffusers builds it
    renames = (("ln0", "0.norm1"), ("ln1", "0.norm2"), ("attn.to_q", "0.to_q"), ("attn.to_out.0", "0.to_out"),
               ("ff.0", "1.0"), ("ff.1.net.0.proj", "1.1"), ("ff.1.net.2", "1.3"))
    weights: dict = {}
    for name, value in resampler.state_dict().items():
        if ".attn.to_k." in name or ".attn.to_v." in name:
            continue
        for new, old in renames:
            name = name.replace(f".{new}.", f".{old}.")
        weights[f"image_proj.{name}"] = value * 3 if name.endswith("proj_out.weight") else value
    for index in range(4):  # the original keeps keys and values in one projection
        keys_values = [resampler.state_dict()[f"layers.{index}.attn.{part}.weight"] for part in ("to_k", "to_v")]
        weights[f"image_proj.layers.{index}.0.to_kv.weight"] = torch.cat(keys_values)
    plain = adapter_weights(unet, seed)
    weights.update({k: v for k, v in plain.items() if k.startswith("ip_adapter.")})
    return weights


def build(directory: Path, unet, seed: int = 0) -> Path:
    """folder/ip-adapter.safetensors for `unet`, with the tiny encoder in folder/image_encoder."""
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    image_encoder(directory / "image_encoder")
    path = directory / "ip-adapter.safetensors"
    save_file({k: v.contiguous() for k, v in adapter_weights(unet, seed).items()}, str(path))
    return path
