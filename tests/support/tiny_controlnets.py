"""Tiny random ControlNets for the tiny models, saved as diffusers folders (safetensors).

`ControlNetModel.from_unet` copies the UNet's encoder and zero-initializes the ControlNet's
output convolutions (its "zero convs"), so a fresh ControlNet changes nothing; here those are
given random weights, so that a ControlNet visibly steers the picture and parity tests can fail.
"""

from __future__ import annotations

from pathlib import Path


def controlnet_from_unet(unet, seed: int = 0, downscale: int = 2, union: bool = False):
    """`downscale`: the VAE's factor, which the conditioning embedding's stride-2 convs must match;
    `union`: a ControlNet-Union (ControlNetUnionModel, SDXL)."""
    import torch
    from diffusers import ControlNetModel, ControlNetUnionModel

    channels = {2: (16, 32), 4: (16, 32, 32), 8: (16, 32, 32, 32)}[downscale]
    cls = ControlNetUnionModel if union else ControlNetModel
    torch.manual_seed(seed)  # the union's task embeddings are drawn when it is built
    net = cls.from_unet(unet, conditioning_embedding_out_channels=channels)
    if union:  # its control-type transformer is as wide as the UNet's first block (320 in SDXL)
        width = unet.config.block_out_channels[0]
        config = {k: v for k, v in net.config.items() if k != "_use_default_values"}  # else defaults win again
        tiny = cls.from_config({**config, "num_trans_channel": width, "num_proj_channel": width, "num_trans_head": 2})
        shared = {k: v for k, v in net.state_dict().items() if tiny.state_dict()[k].shape == v.shape}
        tiny.load_state_dict(shared, strict=False)
        net = tiny
    generator = torch.Generator("cpu").manual_seed(seed)
    with torch.no_grad():
        zero_convs = [*net.controlnet_down_blocks, net.controlnet_mid_block, net.controlnet_cond_embedding.conv_out]
        for module in zero_convs + ([net.spatial_ch_projs] if union else []):  # the union's control-type path too
            for parameter in module.parameters():
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.2)
    return net.eval()


def build_sd_controlnet(directory: Path, seed: int = 0) -> Path:
    """A ControlNet for tests/support/tiny_models' SD model (its UNet's config and weights)."""
    from support import tiny_models

    controlnet_from_unet(tiny_models.unet(), seed).save_pretrained(str(directory), safe_serialization=True)
    return Path(directory)


def build_sdxl_controlnet(sdxl_folder: Path, directory: Path, seed: int = 0, union: bool = False) -> Path:
    """A ControlNet (or ControlNet-Union) for a tiny SDXL model folder (tests/support/tiny_families.build_sdxl)."""
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel.from_pretrained(str(sdxl_folder), subfolder="unet")
    controlnet_from_unet(unet, seed, union=union).save_pretrained(str(directory), safe_serialization=True)
    return Path(directory)


def build_bundled_controlnet(directory: Path, seed: int = 0) -> Path:
    """A ControlNet for the bundled diffgraph/models/tiny-sd (its VAE downscales by 4)."""
    from diffusers import UNet2DConditionModel

    bundled = Path(__file__).resolve().parents[2] / "diffgraph" / "models" / "tiny-sd"
    unet = UNet2DConditionModel.from_pretrained(str(bundled), subfolder="unet")
    controlnet_from_unet(unet, seed, downscale=4).save_pretrained(str(directory), safe_serialization=True)
    return Path(directory)
