"""Resizing pictures and latents: ScaleImage and ScaleLatent (ComfyUI's ImageScale and LatentUpscale)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from diffgraph.engine import Input, Node, NodeError, Output, Param, RunContext, node

from . import models
from .latents import vae_scale_factor
from .models import ModelRef
from .types import VAE, Image, Latent, LatentValue

if TYPE_CHECKING:
    from torch import Tensor

#: torch.nn.functional.interpolate's modes (nearest-exact: ComfyUI's default)
METHODS = ("nearest-exact", "bilinear", "area", "bicubic")


def _target(height: int, width: int, new_width: int, new_height: int, field: str) -> tuple[int, int]:
    """(height, width); a 0 side keeps the aspect ratio, both 0 is an error."""
    if new_width == 0 and new_height == 0:
        raise NodeError("give a width or a height (0 keeps the aspect ratio from the other)", field)
    if new_width == 0:
        new_width = max(1, round(width * new_height / height))
    if new_height == 0:
        new_height = max(1, round(height * new_width / width))
    return new_height, new_width


def resize(tensor: Tensor, height: int, width: int, method: str, crop: str) -> Tensor:
    """[B, C, H, W] -> [B, C, height, width]; `center` crops to the target's aspect ratio first."""
    import torch

    if crop == "center":
        old_height, old_width = tensor.shape[2:]
        if old_width * height > old_height * width:  # too wide: crop the sides
            keep = round(old_height * width / height)
            left = (old_width - keep) // 2
            tensor = tensor[:, :, :, left:left + keep]
        else:
            keep = round(old_width * height / width)
            top = (old_height - keep) // 2
            tensor = tensor[:, :, top:top + keep, :]
    kwargs = {"align_corners": False} if method in ("bilinear", "bicubic") else {}
    return torch.nn.functional.interpolate(tensor.float(), size=(height, width), mode=method, **kwargs)


@node("ScaleImage", category="image")
class ScaleImage(Node):
    """Resize pictures to width x height pixels (0 keeps the aspect ratio)."""

    image: Tensor = Input(Image)
    method: str = Param("nearest-exact", choices=METHODS)
    width: int = Param(512, ge=0, le=16384)
    height: int = Param(512, ge=0, le=16384)
    crop: str = Param("disabled", choices=("disabled", "center"), doc="center: crop to the new aspect ratio first")
    outputs = {"image": Output(Image)}

    def run(self, ctx: RunContext) -> dict[str, Any]:
        image = self.image
        height, width = _target(image.shape[2], image.shape[3], self.width, self.height, "width")
        return {"image": resize(image, height, width, self.method, self.crop).clamp(0, 1)}


@node("ScaleLatent", category="latent")
class ScaleLatent(Node):
    """Resize a latent to the latent of a width x height picture (hires fix: sample again after it)."""

    latent: LatentValue = Input(Latent)
    vae: ModelRef = Input(VAE, doc="gives the downscale factor between pixels and latent cells")
    method: str = Param("nearest-exact", choices=METHODS)
    width: int = Param(512, ge=0, le=16384, step=8)
    height: int = Param(512, ge=0, le=16384, step=8)
    crop: str = Param("disabled", choices=("disabled", "center"))
    outputs = {"latent": Output(Latent)}

    def run(self, ctx: RunContext) -> dict[str, Any]:
        samples = self.latent["samples"]
        factor = vae_scale_factor(models.load(ctx, self.vae, "vae"))
        height, width = _target(samples.shape[2] * factor, samples.shape[3] * factor, self.width, self.height,
                                "width")
        for value, name in ((width, "width"), (height, "height")):
            if value % factor:
                raise NodeError(f"{value} is not a multiple of {factor} (the VAE's downscale factor)", name)
        # only the picture's latent travels on: a mask or an encoding's spread belong to the old size
        return {"latent": {"samples": resize(samples, height // factor, width // factor, self.method, self.crop)}}


NODES = [ScaleImage, ScaleLatent]
