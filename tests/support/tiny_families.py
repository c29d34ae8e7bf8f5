"""Tiny random-weight models of the families beyond Stable Diffusion 1.x/2.x (SDXL, SD3, Flux.1,
Z-Image, Qwen-Image, Flux.2 [klein]),
built offline and saved as diffusers folders (safetensors) with each family's classic pipeline.

The configs are those of diffusers' own test suites' "dummy components"; the CLIP tokenizer is the
hand-written one of `tiny_models`, the T5 tokenizer a small WordLevel model of the `tokenizers`
library wrapped by `T5TokenizerFast`. Pictures are 32-64 px; a run takes well under a second.

    python tests/support/tiny_families.py OUT_DIR     # writes sdxl/, sd3/, flux/, zimage/, qwenimage/, flux2/
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from support import tiny_models

T5_WORDS = ("a red blue green circle square on white black background of the and with cat dog lighthouse "
            "at dusk picture big small").split()


def clip_config(**overrides):
    from transformers import CLIPTextConfig

    settings = dict(bos_token_id=512, eos_token_id=513, pad_token_id=513, hidden_size=32, intermediate_size=37,
                    layer_norm_eps=1e-05, num_attention_heads=4, num_hidden_layers=5, vocab_size=1000,
                    hidden_act="gelu", projection_dim=32, max_position_embeddings=77)
    settings.update(overrides)
    return CLIPTextConfig(**settings)


def clip_tokenizer(directory: Path):
    tiny_models.write_tokenizer(directory)
    return tiny_models.load_tokenizer(directory)


def t5_tokenizer(directory: Path):
    """A T5TokenizerFast over a small Unigram vocabulary (the `tokenizers` model T5 uses): whole
    words, then single letters so any text tokenizes; </s> is appended as T5's tokenizer does."""
    from transformers import T5TokenizerFast

    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)]
    pieces += [("\u2581" + word, -1.0) for word in T5_WORDS]
    pieces += [(letter, -5.0) for letter in "abcdefghijklmnopqrstuvwxyz"]
    tokenizer = T5TokenizerFast(vocab=pieces, extra_ids=0, model_max_length=512)
    tokenizer.save_pretrained(str(directory))
    return T5TokenizerFast.from_pretrained(str(directory), local_files_only=True)


def t5_encoder(d_model: int = 32):
    import torch
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(0)
    config = T5Config(vocab_size=64, d_model=d_model, d_kv=8, d_ff=37, num_layers=2, num_heads=4,
                      relative_attention_num_buckets=8, dropout_rate=0.0, decoder_start_token_id=0,
                      pad_token_id=0, eos_token_id=1)
    return T5EncoderModel(config).eval()


def sdxl_unet(in_channels: int = 4, cross_attention_dim: int = 64, time_ids_width: int = 80):
    """The tiny SDXL UNet (text-time conditioning; `time_ids_width`: the time ids' embeddings plus the
    pooled projection); the caller seeds torch."""
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        block_out_channels=(32, 64), layers_per_block=2, sample_size=32, in_channels=in_channels, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4), use_linear_projection=True, addition_embed_type="text_time",
        addition_time_embed_dim=8, transformer_layers_per_block=(1, 2),
        projection_class_embeddings_input_dim=time_ids_width, cross_attention_dim=cross_attention_dim,
        norm_num_groups=1).eval()


def sdxl_vae():
    """The tiny SDXL VAE (seed 0), which the base and the refiner share."""
    import torch
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    return AutoencoderKL(block_out_channels=[32, 64], in_channels=3, out_channels=3,
                         down_block_types=["DownEncoderBlock2D", "DownEncoderBlock2D"],
                         up_block_types=["UpDecoderBlock2D", "UpDecoderBlock2D"], latent_channels=4,
                         sample_size=128).eval()


def sdxl_scheduler():
    from diffusers import EulerDiscreteScheduler

    return EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, steps_offset=1,
                                  beta_schedule="scaled_linear", timestep_spacing="leading")


def flow_vae():
    """The tiny VAE (seed 0) of the flow-matching families SD3, Flux.1 and Z-Image."""
    import torch
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    return AutoencoderKL(sample_size=32, in_channels=3, out_channels=3, block_out_channels=(4, 8),
                         down_block_types=["DownEncoderBlock2D", "DownEncoderBlock2D"],
                         up_block_types=["UpDecoderBlock2D", "UpDecoderBlock2D"], layers_per_block=1,
                         latent_channels=4, norm_num_groups=1, use_quant_conv=False, use_post_quant_conv=False,
                         shift_factor=0.0609, scaling_factor=1.5035).eval()


def build_sdxl(directory: Path, in_channels: int = 4, width_2: int = 32, layers_2: int = 5) -> Path:
    """An SDXL base model: two CLIP text encoders (the second with projection, `width_2` wide with
    `layers_2` layers), a text-time UNet; with in_channels=9 an SDXL inpainting model (mask and masked
    image as extra UNet channels)."""
    import torch
    from diffusers import StableDiffusionXLInpaintPipeline, StableDiffusionXLPipeline
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    directory = Path(directory)
    torch.manual_seed(0)
    unet = sdxl_unet(in_channels, cross_attention_dim=32 + width_2)
    vae = sdxl_vae()
    torch.manual_seed(0)
    text_encoder = CLIPTextModel(clip_config()).eval()
    torch.manual_seed(1)
    text_encoder_2 = CLIPTextModelWithProjection(clip_config(hidden_size=width_2, num_hidden_layers=layers_2)).eval()
    tokenizer = clip_tokenizer(directory / "_clip")
    cls = StableDiffusionXLPipeline if in_channels == 4 else StableDiffusionXLInpaintPipeline
    pipe = cls(vae=vae, text_encoder=text_encoder, text_encoder_2=text_encoder_2, tokenizer=tokenizer,
               tokenizer_2=tokenizer, unet=unet, scheduler=sdxl_scheduler(), image_encoder=None,
               feature_extractor=None)
    pipe.save_pretrained(str(directory), safe_serialization=True)
    shutil.rmtree(directory / "_clip")
    return directory


def build_sd3(directory: Path) -> Path:
    """An SD3 model: two CLIP encoders with projection, a T5 encoder, an MMDiT transformer."""
    import torch
    from diffusers import (
        FlowMatchEulerDiscreteScheduler,
        SD3Transformer2DModel,
        StableDiffusion3Pipeline,
    )
    from transformers import CLIPTextModelWithProjection

    directory = Path(directory)
    torch.manual_seed(0)
    transformer = SD3Transformer2DModel(sample_size=16, patch_size=1, in_channels=4, num_layers=1,
                                        attention_head_dim=8, num_attention_heads=4, caption_projection_dim=32,
                                        joint_attention_dim=32, pooled_projection_dim=64, out_channels=4).eval()
    vae = flow_vae()
    torch.manual_seed(0)
    text_encoder = CLIPTextModelWithProjection(clip_config()).eval()
    torch.manual_seed(1)
    text_encoder_2 = CLIPTextModelWithProjection(clip_config()).eval()
    tokenizer = clip_tokenizer(directory / "_clip")
    pipe = StableDiffusion3Pipeline(
        transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler(), vae=vae, text_encoder=text_encoder,
        tokenizer=tokenizer, text_encoder_2=text_encoder_2, tokenizer_2=tokenizer, text_encoder_3=t5_encoder(),
        tokenizer_3=t5_tokenizer(directory / "_t5"), image_encoder=None, feature_extractor=None)
    pipe.save_pretrained(str(directory), safe_serialization=True)
    shutil.rmtree(directory / "_clip")
    shutil.rmtree(directory / "_t5")
    return directory


def build_flux(directory: Path) -> Path:
    """A Flux.1-dev-like model (guidance-distilled: the transformer embeds the guidance scale)."""
    import torch
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from transformers import CLIPTextModel

    directory = Path(directory)
    torch.manual_seed(0)
    transformer = FluxTransformer2DModel(patch_size=1, in_channels=16, num_layers=1, num_single_layers=1,
                                         attention_head_dim=16, num_attention_heads=2, joint_attention_dim=32,
                                         pooled_projection_dim=32, axes_dims_rope=[4, 4, 8],
                                         guidance_embeds=True).eval()
    vae = flow_vae()
    torch.manual_seed(0)
    text_encoder = CLIPTextModel(clip_config()).eval()
    tokenizer = clip_tokenizer(directory / "_clip")
    pipe = FluxPipeline(transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler(), vae=vae,
                        text_encoder=text_encoder, tokenizer=tokenizer, text_encoder_2=t5_encoder(),
                        tokenizer_2=t5_tokenizer(directory / "_t5"))
    pipe.save_pretrained(str(directory), safe_serialization=True)
    shutil.rmtree(directory / "_clip")
    shutil.rmtree(directory / "_t5")
    return directory


QWEN_CHAT_TEMPLATE = ("{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}"
                      "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def qwen_tokenizer(directory: Path):
    """A Qwen2 byte-level BPE tokenizer over the 256 byte characters (no merges), with the chat
    template Z-Image's text encoder applies."""
    from transformers import Qwen2Tokenizer

    vocab = {char: index for index, char in enumerate(tiny_models._bytes_to_unicode())}
    for special in ("<|endoftext|>", "<|im_start|>", "<|im_end|>"):
        vocab[special] = len(vocab)
    tokenizer = Qwen2Tokenizer(vocab=vocab, merges=[], model_max_length=512)
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    tokenizer.chat_template = QWEN_CHAT_TEMPLATE
    tokenizer.save_pretrained(str(directory))
    return Qwen2Tokenizer.from_pretrained(str(directory), local_files_only=True)


def build_zimage(directory: Path) -> Path:
    """A Z-Image model: a Qwen3 text encoder (its second-to-last hidden states, one variable-length
    tensor per prompt) and a single-stream DiT."""
    import torch
    from diffusers import (
        FlowMatchEulerDiscreteScheduler,
        ZImagePipeline,
        ZImageTransformer2DModel,
    )
    from transformers import Qwen3Config, Qwen3Model

    directory = Path(directory)
    torch.manual_seed(0)
    transformer = ZImageTransformer2DModel(all_patch_size=(2,), all_f_patch_size=(1,), in_channels=4, dim=32,
                                           n_layers=2, n_refiner_layers=1, n_heads=2, n_kv_heads=2, cap_feat_dim=16,
                                           axes_dims=[8, 4, 4], axes_lens=[256, 32, 32]).eval()
    vae = flow_vae()
    torch.manual_seed(0)
    text_encoder = Qwen3Model(Qwen3Config(vocab_size=300, hidden_size=16, intermediate_size=16, num_hidden_layers=2,
                                          num_attention_heads=2, num_key_value_heads=2, head_dim=8,
                                          max_position_embeddings=512)).eval()
    pipe = ZImagePipeline(scheduler=FlowMatchEulerDiscreteScheduler(), vae=vae, text_encoder=text_encoder,
                          tokenizer=qwen_tokenizer(directory / "_qwen"), transformer=transformer)
    pipe.save_pretrained(str(directory), safe_serialization=True)
    shutil.rmtree(directory / "_qwen")
    return directory


def build_qwenimage(directory: Path) -> Path:
    """A Qwen-Image model: a Qwen2.5-VL text encoder (text only here), an MMDiT and a 3D causal VAE."""
    import torch
    from diffusers import (
        AutoencoderKLQwenImage,
        FlowMatchEulerDiscreteScheduler,
        QwenImagePipeline,
        QwenImageTransformer2DModel,
    )
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    directory = Path(directory)
    torch.manual_seed(0)
    transformer = QwenImageTransformer2DModel(patch_size=2, in_channels=16, out_channels=4, num_layers=2,
                                              attention_head_dim=16, num_attention_heads=3, joint_attention_dim=16,
                                              guidance_embeds=False, axes_dims_rope=(8, 4, 4)).eval()
    torch.manual_seed(0)
    vae = AutoencoderKLQwenImage(base_dim=4 * 6, z_dim=4, dim_mult=[1, 2, 4], num_res_blocks=1,
                                 temperal_downsample=[False, True], latents_mean=[0.0] * 4,
                                 latents_std=[1.0] * 4).eval()
    torch.manual_seed(0)
    config = Qwen2_5_VLConfig(
        text_config={"hidden_size": 16, "intermediate_size": 16, "num_hidden_layers": 2, "num_attention_heads": 2,
                     "num_key_value_heads": 2, "vocab_size": 300, "rope_theta": 1000000.0,
                     "bos_token_id": 256, "eos_token_id": 256,
                     "rope_scaling": {"mrope_section": [1, 1, 2], "rope_type": "default", "type": "default"}},
        vision_config={"depth": 2, "hidden_size": 16, "intermediate_size": 16, "num_heads": 2, "out_hidden_size": 16},
        hidden_size=16, vocab_size=300, bos_token_id=256, eos_token_id=256, vision_start_token_id=290, vision_end_token_id=291, vision_token_id=292,
        image_token_id=293, video_token_id=294)
    text_encoder = Qwen2_5_VLForConditionalGeneration(config).eval()
    pipe = QwenImagePipeline(scheduler=FlowMatchEulerDiscreteScheduler(), vae=vae, text_encoder=text_encoder,
                             tokenizer=qwen_tokenizer(directory / "_qwen"), transformer=transformer)
    pipe.save_pretrained(str(directory), safe_serialization=True)
    shutil.rmtree(directory / "_qwen")
    return directory


def build_flux2(directory: Path) -> Path:
    """A Flux.2 [klein] base model: a Qwen3 causal LM as text encoder (three of its hidden layers
    stacked), a Flux.2 transformer, the Flux.2 VAE (2x2 patches, batch-norm statistics)."""
    import torch
    from diffusers import (
        AutoencoderKLFlux2,
        FlowMatchEulerDiscreteScheduler,
        Flux2KleinPipeline,
        Flux2Transformer2DModel,
    )
    from transformers import Qwen3Config, Qwen3ForCausalLM

    directory = Path(directory)
    torch.manual_seed(0)
    transformer = Flux2Transformer2DModel(patch_size=1, in_channels=16, num_layers=1, num_single_layers=1,
                                          attention_head_dim=16, num_attention_heads=2, joint_attention_dim=48,
                                          timestep_guidance_channels=32, axes_dims_rope=(4, 4, 4, 4),
                                          guidance_embeds=False).eval()
    torch.manual_seed(0)
    vae = AutoencoderKLFlux2(block_out_channels=(4, 8), down_block_types=["DownEncoderBlock2D"] * 2,
                             up_block_types=["UpDecoderBlock2D"] * 2, layers_per_block=1, latent_channels=4,
                             norm_num_groups=1, sample_size=32, use_quant_conv=False,
                             use_post_quant_conv=False).eval()
    torch.manual_seed(0)
    text_encoder = Qwen3ForCausalLM(Qwen3Config(vocab_size=300, hidden_size=16, intermediate_size=16,
                                                num_hidden_layers=28, num_attention_heads=2, num_key_value_heads=2,
                                                head_dim=8, max_position_embeddings=512)).eval()
    pipe = Flux2KleinPipeline(scheduler=FlowMatchEulerDiscreteScheduler(), vae=vae, text_encoder=text_encoder,
                              tokenizer=qwen_tokenizer(directory / "_qwen"), transformer=transformer,
                              is_distilled=False)
    pipe.save_pretrained(str(directory), safe_serialization=True)
    shutil.rmtree(directory / "_qwen")
    return directory


BUILDERS = {"sdxl": build_sdxl, "sd3": build_sd3, "flux": build_flux, "zimage": build_zimage,
            "qwenimage": build_qwenimage, "flux2": build_flux2,
            "sdxl-inpaint": lambda directory: build_sdxl(directory, in_channels=9)}


def build_all(root: Path) -> dict[str, Path]:
    root = Path(root)
    return {name: build(root / name) for name, build in BUILDERS.items()}


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    for name, path in build_all(Path(sys.argv[1] if len(sys.argv) > 1 else "tiny-families")).items():
        print(f"{name}: {path}")
