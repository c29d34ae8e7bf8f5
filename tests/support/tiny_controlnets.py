"""Tiny random ControlNets for the tiny models, saved as diffusers folders (safetensors).

`ControlNetModel.from_unet` copies the UNet's encoder and zero-initializes the ControlNet's
output convolutions (its "zero convs"), so a fresh ControlNet changes nothing; here those are
given random weights, so that a ControlNet visibly steers the picture and parity tests can fail.
"""

from __future__ import annotations

from pathlib import Path


def controlnet_from_unet(unet, seed: int = 0, downscale: int = 2):
    """`downscale`: the VAE's factor, which the conditioning embedding's stride-2 convs must match."""
    import torch
    from diffusers import ControlNetModel

    channels = {2: (16, 32), 4: (16, 32, 32), 8: (16, 32, 32, 32)}[downscale]
    net = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=channels)
    generator = torch.Generator("cpu").manual_seed(seed)
    with torch.no_grad():
        for module in [*net.controlnet_down_blocks, net.controlnet_mid_block, net.controlnet_cond_embedding.conv_out]:
            for parameter in module.parameters():
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.2)
    return net.eval()


def build_sd_controlnet(directory: Path, seed: int = 0) -> Path:
    """A ControlNet for tests/support/tiny_models' SD model (its UNet's config and weights)."""
    from support import tiny_models

    controlnet_from_unet(tiny_models.unet(), seed).save_pretrained(str(directory), safe_serialization=True)
    return Path(directory)


def build_sdxl_controlnet(sdxl_folder: Path, directory: Path, seed: int = 0) -> Path:
    """A ControlNet for a tiny SDXL model folder (tests/support/tiny_families.build_sdxl)."""
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel.from_pretrained(str(sdxl_folder), subfolder="unet")
    controlnet_from_unet(unet, seed).save_pretrained(str(directory), safe_serialization=True)
    return Path(directory)


def build_bundled_controlnet(directory: Path, seed: int = 0) -> Path:
    """A ControlNet for the bundled diffgraph/models/tiny-sd (its VAE downscales by 4)."""
    from diffusers import UNet2DConditionModel

    bundled = Path(__file__).resolve().parents[2] / "diffgraph" / "models" / "tiny-sd"
    unet = UNet2DConditionModel.from_pretrained(str(bundled), subfolder="unet")
    controlnet_from_unet(unet, seed, downscale=4).save_pretrained(str(directory), safe_serialization=True)
    return Path(directory)
