"""A tiny SDXL refiner, built offline: SDXL img2img with the aesthetic-score conditioning
(`requires_aesthetics_score`) and the second text encoder only, as stabilityai's refiner is made.
Its CLIP width matches `tiny_families.build_sdxl`'s, so a workflow runs it on that base's picture."""

from __future__ import annotations

import shutil
from pathlib import Path

from support import tiny_families


def build_sdxl_refiner(directory: Path) -> Path:
    import torch
    from diffusers import (
        AutoencoderKL,
        EulerDiscreteScheduler,
        StableDiffusionXLImg2ImgPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextModelWithProjection

    directory = Path(directory)
    torch.manual_seed(2)
    # time ids: original size, crop, aesthetic score (5 x 8) + the pooled projection (32)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64), layers_per_block=2, sample_size=32, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4), use_linear_projection=True, addition_embed_type="text_time",
        addition_time_embed_dim=8, transformer_layers_per_block=(1, 2), projection_class_embeddings_input_dim=72,
        cross_attention_dim=32, norm_num_groups=1).eval()
    torch.manual_seed(0)  # the base's VAE (the refiner shares SDXL's latent space)
    vae = AutoencoderKL(block_out_channels=[32, 64], in_channels=3, out_channels=3,
                        down_block_types=["DownEncoderBlock2D", "DownEncoderBlock2D"],
                        up_block_types=["UpDecoderBlock2D", "UpDecoderBlock2D"], latent_channels=4,
                        sample_size=128).eval()
    torch.manual_seed(3)
    text_encoder_2 = CLIPTextModelWithProjection(tiny_families.clip_config()).eval()
    scheduler = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, steps_offset=1,
                                       beta_schedule="scaled_linear", timestep_spacing="leading")
    tokenizer = tiny_families.clip_tokenizer(directory / "_clip")
    pipe = StableDiffusionXLImg2ImgPipeline(vae=vae, text_encoder=None, text_encoder_2=text_encoder_2, tokenizer=None,
                                            tokenizer_2=tokenizer, unet=unet, scheduler=scheduler,
                                            requires_aesthetics_score=True, force_zeros_for_empty_prompt=False)
    pipe.save_pretrained(str(directory), safe_serialization=True)
    shutil.rmtree(directory / "_clip")
    return directory
