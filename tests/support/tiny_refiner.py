"""A tiny SDXL refiner, built offline: SDXL img2img with the aesthetic-score conditioning
(`requires_aesthetics_score`) and the second text encoder only, as stabilityai's refiner is made.
Its CLIP width matches `tiny_families.build_sdxl`'s, so a workflow runs it on that base's picture."""

from __future__ import annotations

import shutil
from pathlib import Path

from support import tiny_families


def build_sdxl_refiner(directory: Path) -> Path:
    import torch
    from diffusers import StableDiffusionXLImg2ImgPipeline
    from transformers import CLIPTextModelWithProjection

    directory = Path(directory)
    torch.manual_seed(2)
    # time ids: original size, crop, aesthetic score (5 x 8) + the pooled projection (32)
    unet = tiny_families.sdxl_unet(cross_attention_dim=32, time_ids_width=72)
    vae = tiny_families.sdxl_vae()  # the base's VAE (the refiner shares SDXL's latent space)
    torch.manual_seed(3)
    text_encoder_2 = CLIPTextModelWithProjection(tiny_families.clip_config()).eval()
    tokenizer = tiny_families.clip_tokenizer(directory / "_clip")
    pipe = StableDiffusionXLImg2ImgPipeline(vae=vae, text_encoder=None, text_encoder_2=text_encoder_2, tokenizer=None,
                                            tokenizer_2=tokenizer, unet=unet, scheduler=tiny_families.sdxl_scheduler(),
                                            requires_aesthetics_score=True, force_zeros_for_empty_prompt=False)
    pipe.save_pretrained(str(directory), safe_serialization=True)
    shutil.rmtree(directory / "_clip")
    return directory
