"""Between pixels and latents: EmptyLatent, VAEEncode, VAEDecode, PixelsToImage, DepthEstimate."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from diffgraph.engine import Input, Node, NodeError, Output, Param, RunContext, node

from . import fastpath, models, modular
from .families import Family
from .models import ModelRef
from .types import VAE, Depth, DepthModel, Image, Latent, LatentValue, Mask, UNet

if TYPE_CHECKING:
    from torch import Tensor


def vae_scale_factor(vae: Any) -> int:
    if hasattr(vae, "temperal_downsample"):  # a video VAE (Qwen-Image): 2x per temporal stage
        return 2 ** len(vae.temperal_downsample)
    return 2 ** (len(vae.config.block_out_channels) - 1)


def _check_size(value: int, factor: int, field: str) -> None:
    if value % factor:
        raise NodeError(f"{value} is not a multiple of {factor} (the VAE's downscale factor, times 2 for "
                        f"models that pack 2x2 latent patches); try {max(factor, value - value % factor)}", field)


@node("EmptyLatent", category="latent")
class EmptyLatent(Node):
    """A blank latent of the given size, to sample from pure noise (txt2img). Without a VAE it is a
    blank pixel-space sample for a UNet2DModel (unconditional generation)."""

    vae: ModelRef | None = Input(VAE, optional=True, doc="gives the latent's channels and downscale factor")
    unet: ModelRef | None = Input(UNet, optional=True, doc="gives the native size, and the channels without a VAE")
    width: int = Param(0, ge=0, le=16384, step=8, doc="pixels; 0 = the model's native size")
    height: int = Param(0, ge=0, le=16384, step=8, doc="pixels; 0 = the model's native size")
    batch_size: int = Param(1, ge=1, le=64)
    outputs = {"latent": Output(Latent)}

    def run(self, ctx: RunContext) -> dict[str, Any]:
        import torch

        if self.vae is None and self.unet is None:
            raise NodeError("link a VAE (latent models) or a UNet (pixel-space models)", "vae")
        if modular.is_modular(self.vae) or modular.is_modular(self.unet):
            channels, factor, multiple, native = modular.latent_size(ctx, self.vae, self.unet)
            sizes = []
            for field in ("width", "height"):
                value = getattr(self, field) or native
                _check_size(value, multiple, field)
                sizes.append(value // factor)
            return {"latent": {"samples": torch.zeros(self.batch_size, channels, sizes[1], sizes[0])}}
        vae = models.load(ctx, self.vae, "vae") if self.vae is not None else None
        unet = models.load(ctx, self.unet, "unet") if self.unet is not None else None
        factor = vae_scale_factor(vae) if vae is not None else 1
        if vae is not None:
            channels = vae.config.latent_channels
        else:
            assert unet is not None, "one of them is linked (checked above)"
            channels = unet.config.in_channels
        sizes = []
        for field in ("width", "height"):
            value = getattr(self, field)
            if value == 0:
                if unet is None:
                    raise NodeError("0 means the model's native size: link the UNet, or give a size", field)
                native = unet.config.sample_size
                native = native if isinstance(native, int) else native[0 if field == "height" else 1]
                value = native * factor
            _check_size(value, factor, field)
            sizes.append(value // factor)
        width, height = sizes
        return {"latent": {"samples": torch.zeros(self.batch_size, channels, height, width)}}


@node("VAEEncode", category="latent")
class VAEEncode(Node):
    """Encode an image into the VAE's latent distribution (for img2img, inpainting, depth2img).
    With a mask, also encodes the image with the masked part blanked out, for inpainting; the
    sampler draws from the distribution with its seed, as the diffusers pipelines do."""

    vae: ModelRef = Input(VAE)
    image: Tensor = Input(Image)
    mask: Tensor | None = Input(Mask, optional=True, doc="1 = repaint; the same size as the image unless resized")
    width: int = Param(0, ge=0, le=16384, step=8, doc="resize the image and the mask to this width first "
                                                      "(Lanczos, as the diffusers pipelines do); 0 = keep it")
    height: int = Param(0, ge=0, le=16384, step=8, doc="resize the image and the mask to this height first; "
                                                       "0 = keep it")
    outputs = {"latent": Output(Latent)}

    @classmethod
    def check_links(cls, params, linked, access):
        family = modular.family_of_loader(linked["vae"], access) if "vae" in linked else None
        field = "mask" if "mask" in linked else "image"
        problem = modular.task_problem(family, "inpaint" if field == "mask" else "img2img") if family else None
        return [(field, problem)] if problem else []

    def run(self, ctx: RunContext) -> dict[str, Any]:
        import torch

        family = modular.family_of(self.vae)
        if self.mask is not None:
            modular.require_task(family, "inpaint", "mask")
        modular.require_task(family, "img2img", "image")
        vae = models.load(ctx, self.vae, "vae")
        image = self.image
        mask = self.mask
        if self.width or self.height:
            size = (self.height or image.shape[2], self.width or image.shape[3])
            image = resized(image, size)
            if mask is not None:
                mask = resized(mask, size)
        factor = vae_scale_factor(vae)
        height, width = image.shape[2:]
        multiple = factor * family.size_multiple  # packed latents: 2x2 patches
        _check_size(width, multiple, "width" if self.width else "image")
        _check_size(height, multiple, "height" if self.height else "image")
        device, dtype = ctx.device, models.torch_dtype(ctx)
        pixels = (image * 2.0 - 1.0).to(device=device, dtype=dtype)
        with torch.inference_mode():
            latent = _encode(vae, pixels, "", family)
            if mask is not None:
                if tuple(mask.shape[2:]) != (height, width):
                    raise NodeError(f"the mask is {tuple(mask.shape[2:])} (H, W) but the image is "
                                    f"{(height, width)}; they must match", "mask")
                if mask.shape[0] not in (1, image.shape[0]):
                    raise NodeError(f"{mask.shape[0]} masks for {image.shape[0]} images", "mask")
                binary = (mask >= 0.5).to(dtype=pixels.dtype, device=device)  # as the pipelines binarize
                latent.update(_encode(vae, pixels * (binary < 0.5), "masked_", family))
                latent["mask"] = torch.nn.functional.interpolate(
                    binary, size=(height // factor, width // factor)).float().cpu()
        return {"latent": latent}


def resized(pictures: Tensor, size: tuple[int, int]) -> Tensor:
    """Pictures [B, C, H, W] in [0, 1] resized to size (H, W) as diffusers' VaeImageProcessor does: 8-bit
    PIL images resized with Lanczos, then back to [0, 1] (masks are binarized afterwards by the caller)."""
    import numpy as np
    import torch
    from PIL import Image as PILImage

    height, width = size
    if tuple(pictures.shape[2:]) == (height, width):
        return pictures
    out = []
    for picture in pictures.float().clamp(0, 1).cpu():
        array = (picture.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        pil = PILImage.fromarray(array[..., 0] if array.shape[2] == 1 else array)
        array = np.asarray(pil.resize((width, height), resample=PILImage.Resampling.LANCZOS), dtype=np.float32) / 255.0
        out.append(torch.from_numpy(array.reshape(height, width, -1)).permute(2, 0, 1))
    return torch.stack(out)


def _encode(vae: Any, pixels: Tensor, prefix: str, family: Family) -> dict[str, Tensor]:
    """The VAE's latent distribution (mean, std) normalized as the family's pipelines normalize a
    sample of it (see `families.Family.latent_normalization`)."""
    import torch

    if family.latent_frames:  # a video VAE: one frame
        distribution = vae.encode(pixels.unsqueeze(2)).latent_dist
        mean, std = distribution.mean.squeeze(2), distribution.std.squeeze(2)
    else:
        distribution = vae.encode(pixels).latent_dist
        mean, std = distribution.mean, distribution.std
    if family.latent_normalization == "per_channel":
        shape = (1, -1, 1, 1)
        offset = torch.tensor(vae.config.latents_mean).view(shape).to(mean)
        scale = 1.0 / torch.tensor(vae.config.latents_std).view(shape).to(mean)
        mean = mean - offset
    else:
        scale = vae.config.scaling_factor
        if family.latent_normalization == "shift_scale":
            mean = mean - (vae.config.shift_factor or 0.0)
    return {f"{prefix}samples": (mean * scale).float().cpu(), f"{prefix}std": (std * scale).float().cpu()}


@node("VAEDecode", category="latent")
class VAEDecode(Node):
    """Decode latents into images with the VAE."""

    vae: ModelRef = Input(VAE)
    latent: LatentValue = Input(Latent)
    outputs = {"image": Output(Image)}

    def run(self, ctx: RunContext) -> dict[str, Any]:
        import torch

        samples = self.latent["samples"]
        if modular.is_modular(self.vae):
            with torch.inference_mode():
                return {"image": modular.decode(ctx, self.vae, samples)}
        vae = models.load(ctx, self.vae, "vae")
        if samples.shape[1] != vae.config.latent_channels:
            raise NodeError(f"a {samples.shape[1]}-channel latent does not fit this VAE "
                            f"({vae.config.latent_channels} channels)", "latent")
        factor = 2 ** (len(vae.config.block_out_channels) - 1)  # under a VRAM budget, big pictures decode in tiles
        fastpath.vae_tiling(ctx, vae, samples.shape[2] * factor, samples.shape[3] * factor)
        with torch.inference_mode():
            scaled = samples.to(device=ctx.device, dtype=models.torch_dtype(ctx)) / vae.config.scaling_factor
            decoded = vae.decode(scaled, return_dict=False)[0]
        return {"image": (decoded / 2 + 0.5).clamp(0, 1).float().cpu()}


@node("PixelsToImage", category="latent")
class PixelsToImage(Node):
    """Turn a pixel-space sample (a UNet2DModel's output, values in [-1, 1]) into an image."""

    latent: LatentValue = Input(Latent)
    outputs = {"image": Output(Image)}

    def run(self, ctx: RunContext) -> dict[str, Any]:
        samples = self.latent["samples"]
        if samples.shape[1] != 3:
            raise NodeError(f"a {samples.shape[1]}-channel sample is not RGB pixels (decode it with VAEDecode)",
                            "latent")
        return {"image": (samples.float() / 2 + 0.5).clamp(0, 1)}


@node("DepthEstimate", category="image")
class DepthEstimate(Node):
    """Estimate a depth map (1 = nearest) with a transformers depth model such as DPT."""

    depth_model: ModelRef = Input(DepthModel)
    image: Tensor = Input(Image)
    outputs = {"depth": Output(Depth, doc="[B, 1, h, w] in [0, 1] at the estimator's resolution")}

    def run(self, ctx: RunContext) -> dict[str, Any]:
        import contextlib

        import torch
        from PIL import Image as PILImage

        pair = models.load(ctx, self.depth_model, "depth_model")
        # the processor sees 8-bit pictures, exactly as the depth2img pipeline hands it PIL images
        pictures = [PILImage.fromarray((img.permute(1, 2, 0) * 255).round().clamp(0, 255).byte().numpy())
                    for img in self.image]
        dtype = models.torch_dtype(ctx)
        pixels = pair.processor(images=pictures, return_tensors="pt").pixel_values.to(ctx.device, dtype)
        device_type = torch.device(ctx.device).type
        # DPT-Hybrid's batch norm needs autocast in half precision (as in the depth2img pipeline)
        autocast = contextlib.nullcontext() if ctx.dtype == "fp32" else torch.autocast(device_type, dtype=dtype)
        with torch.inference_mode(), autocast:
            depth = pair.model(pixels).predicted_depth.float()
        depth = depth.unsqueeze(1)
        low = torch.amin(depth, dim=[1, 2, 3], keepdim=True)
        high = torch.amax(depth, dim=[1, 2, 3], keepdim=True)
        return {"depth": ((depth - low) / (high - low).clamp_min(1e-8)).cpu()}


NODES = [EmptyLatent, VAEEncode, VAEDecode, PixelsToImage, DepthEstimate]
