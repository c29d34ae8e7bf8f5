"""Tiny random-weight diffusion models built offline, saved as diffusers folders (safetensors).

The configs follow diffusers' own test "dummy components" (block_out_channels (32, 64),
sample_size 32, a 5-layer CLIP text encoder of width 32), so every template runs in a second or
two on a CPU with `--set model=DIR`. The CLIP tokenizer is written by hand (byte-level vocab,
no merges) and loaded with `CLIPTokenizer.from_pretrained(dir, local_files_only=True)`.

    python tests/support/tiny_models.py OUT_DIR     # writes sd/, inpaint/, depth/, ddpm/
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

TEXT_WIDTH = 32


def _bytes_to_unicode() -> list[str]:
    """The byte -> printable character table of GPT-2/CLIP byte-level BPE."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    chars, extra = [], 0
    for b in range(256):
        if b in printable:
            chars.append(chr(b))
        else:
            chars.append(chr(256 + extra))
            extra += 1
    return chars


def write_tokenizer(directory: Path) -> None:
    """A CLIP tokenizer whose vocab is the 256 byte characters, with and without `</w>`."""
    directory.mkdir(parents=True, exist_ok=True)
    vocab: dict[str, int] = {}
    for char in _bytes_to_unicode():
        vocab[char] = len(vocab)
    for char in _bytes_to_unicode():
        vocab[char + "</w>"] = len(vocab)
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    (directory / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (directory / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
    config = {
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": 77,
        "bos_token": "<|startoftext|>",
        "eos_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>",
        "pad_token": "<|endoftext|>",
        "do_lower_case": True,
    }
    (directory / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")


def load_tokenizer(directory: Path):
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(str(directory), local_files_only=True)


def text_encoder():
    import torch
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    config = CLIPTextConfig(
        bos_token_id=514, eos_token_id=515, pad_token_id=515, hidden_size=TEXT_WIDTH, intermediate_size=37,
        layer_norm_eps=1e-05, num_attention_heads=4, num_hidden_layers=5, vocab_size=1000,
        max_position_embeddings=77,
    )
    return CLIPTextModel(config).eval()


def unet(in_channels: int = 4, seed: int = 0):
    import torch
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    return UNet2DConditionModel(
        block_out_channels=(32, 64), layers_per_block=2, sample_size=32, in_channels=in_channels,
        out_channels=4, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=TEXT_WIDTH,
    ).eval()


def vae():
    import torch
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    return AutoencoderKL(
        block_out_channels=[32, 64], in_channels=3, out_channels=3,
        down_block_types=["DownEncoderBlock2D", "DownEncoderBlock2D"],
        up_block_types=["UpDecoderBlock2D", "UpDecoderBlock2D"], latent_channels=4,
    ).eval()


def scheduler():
    from diffusers import PNDMScheduler

    # SD 1.x's own scheduler config (PNDM, scaled_linear betas)
    return PNDMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                         skip_prk_steps=True, set_alpha_to_one=False, steps_offset=1)


def depth_estimator():
    import torch
    from transformers import DPTConfig, DPTForDepthEstimation

    torch.manual_seed(0)
    config = DPTConfig(
        image_size=32, patch_size=16, num_channels=3, hidden_size=32, num_hidden_layers=4,
        backbone_out_indices=[0, 1, 2, 3], num_attention_heads=4, intermediate_size=37,
        neck_hidden_sizes=[16, 16, 32, 32], fusion_hidden_size=16, head_in_index=-1,
        reassemble_factors=[4, 2, 1, 0.5], is_hybrid=False,
    )
    return DPTForDepthEstimation(config).eval()


def depth_processor():
    from transformers import DPTImageProcessor

    return DPTImageProcessor(size={"height": 32, "width": 32}, keep_aspect_ratio=False, ensure_multiple_of=1)


def _components(directory: Path, in_channels: int) -> dict:
    write_tokenizer(directory / "_tokenizer")
    return {
        "unet": unet(in_channels),
        "vae": vae(),
        "text_encoder": text_encoder(),
        "tokenizer": load_tokenizer(directory / "_tokenizer"),
        "scheduler": scheduler(),
    }


def build_sd(directory: Path, in_channels: int = 4) -> Path:
    """txt2img/img2img model (4-channel UNet) or inpaint model (9-channel UNet)."""
    import shutil

    from diffusers import StableDiffusionInpaintPipeline, StableDiffusionPipeline

    directory = Path(directory)
    parts = _components(directory, in_channels)
    cls = StableDiffusionPipeline if in_channels == 4 else StableDiffusionInpaintPipeline
    pipe = cls(**parts, safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(str(directory), safe_serialization=True)
    shutil.rmtree(directory / "_tokenizer")
    return directory


def build_depth(directory: Path) -> Path:
    """A depth-conditioned model (5-channel UNet) with its depth estimator and image processor."""
    import shutil

    from diffusers import StableDiffusionDepth2ImgPipeline

    directory = Path(directory)
    parts = _components(directory, 5)
    pipe = StableDiffusionDepth2ImgPipeline(**parts, depth_estimator=depth_estimator(),
                                            feature_extractor=depth_processor())
    pipe.save_pretrained(str(directory), safe_serialization=True)
    shutil.rmtree(directory / "_tokenizer")
    return directory


def build_ddpm(directory: Path) -> Path:
    """A pixel-space UNet2DModel with a DDPMScheduler, as in diffusers' quicktour."""
    import torch
    from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel

    torch.manual_seed(0)
    model = UNet2DModel(
        block_out_channels=(8, 16), layers_per_block=1, norm_num_groups=4, sample_size=16, in_channels=3,
        out_channels=3, down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D"),
    ).eval()
    DDPMPipeline(unet=model, scheduler=DDPMScheduler(num_train_timesteps=1000)).save_pretrained(
        str(directory), safe_serialization=True)
    return Path(directory)


def build_all(root: Path) -> dict[str, Path]:
    root = Path(root)
    return {
        "sd": build_sd(root / "sd"),
        "inpaint": build_sd(root / "inpaint", in_channels=9),
        "depth": build_depth(root / "depth"),
        "ddpm": build_ddpm(root / "ddpm"),
    }


if __name__ == "__main__":
    for name, path in build_all(Path(sys.argv[1] if len(sys.argv) > 1 else "tiny-models")).items():
        print(f"{name}: {path}")
