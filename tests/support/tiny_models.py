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


# ---------------------------------------------------------------------------------------------
# the original Stable Diffusion (LDM) single-file layout, for testing `from_single_file` loading

_LDM_RESNET = (("norm1.", "in_layers.0."), ("conv1.", "in_layers.2."), ("norm2.", "out_layers.0."),
               ("conv2.", "out_layers.3."), ("time_emb_proj.", "emb_layers.1."), ("conv_shortcut.", "skip_connection."))
_LDM_VAE_ATTENTION = (("group_norm.", "norm."), ("to_q.", "q."), ("to_k.", "k."), ("to_v.", "v."),
                      ("to_out.0.", "proj_out."))


def _rename(key: str, prefixes: list[tuple[str, str, tuple]]) -> str:
    """Replace the longest matching diffusers prefix; rename inside the block with its own table."""
    for old, new, inner in sorted(prefixes, key=lambda entry: -len(entry[0])):
        if key.startswith(old):
            rest = key[len(old):]
            for inner_old, inner_new in inner:
                if rest.startswith(inner_old):
                    rest = inner_new + rest[len(inner_old):]
                    break
            return new + rest
    return key


def _unet_prefixes(config: dict) -> list[tuple[str, str, tuple]]:
    blocks, per = len(config["block_out_channels"]), config["layers_per_block"]
    prefixes = [("time_embedding.linear_1.", "time_embed.0.", ()), ("time_embedding.linear_2.", "time_embed.2.", ()),
                ("conv_in.", "input_blocks.0.0.", ()), ("conv_norm_out.", "out.0.", ()), ("conv_out.", "out.2.", ()),
                ("mid_block.resnets.0.", "middle_block.0.", _LDM_RESNET),
                ("mid_block.attentions.0.", "middle_block.1.", ()),
                ("mid_block.resnets.1.", "middle_block.2.", _LDM_RESNET)]
    for i in range(blocks):
        for j in range(per):  # each down block: `per` resnets (+ attentions), then a downsampler
            index = i * (per + 1) + j + 1
            prefixes.append((f"down_blocks.{i}.resnets.{j}.", f"input_blocks.{index}.0.", _LDM_RESNET))
            prefixes.append((f"down_blocks.{i}.attentions.{j}.", f"input_blocks.{index}.1.", ()))
        if i < blocks - 1:
            prefixes.append((f"down_blocks.{i}.downsamplers.0.conv.", f"input_blocks.{(i + 1) * (per + 1)}.0.op.", ()))
        for j in range(per + 1):  # each up block: `per + 1` resnets (+ attentions), the last one upsamples
            index = i * (per + 1) + j
            prefixes.append((f"up_blocks.{i}.resnets.{j}.", f"output_blocks.{index}.0.", _LDM_RESNET))
            prefixes.append((f"up_blocks.{i}.attentions.{j}.", f"output_blocks.{index}.1.", ()))
        if i < blocks - 1:
            slot = 2 if "Attn" in config["up_block_types"][i] else 1
            prefixes.append((f"up_blocks.{i}.upsamplers.0.", f"output_blocks.{i * (per + 1) + per}.{slot}.", ()))
    return prefixes


def _vae_prefixes(config: dict) -> list[tuple[str, str, tuple]]:
    blocks, per = len(config["block_out_channels"]), config["layers_per_block"]
    shortcut = (("conv_shortcut.", "nin_shortcut."),)
    prefixes = []
    for part in ("encoder", "decoder"):
        prefixes += [(f"{part}.mid_block.resnets.0.", f"{part}.mid.block_1.", shortcut),
                     (f"{part}.mid_block.resnets.1.", f"{part}.mid.block_2.", shortcut),
                     (f"{part}.mid_block.attentions.0.", f"{part}.mid.attn_1.", _LDM_VAE_ATTENTION),
                     (f"{part}.conv_norm_out.", f"{part}.norm_out.", ())]
    for i in range(blocks):
        for j in range(per):
            prefixes.append((f"encoder.down_blocks.{i}.resnets.{j}.", f"encoder.down.{i}.block.{j}.", shortcut))
        for j in range(per + 1):  # decoder blocks count the other way round in the original layout
            prefixes.append((f"decoder.up_blocks.{i}.resnets.{j}.", f"decoder.up.{blocks - 1 - i}.block.{j}.",
                             shortcut))
        prefixes.append((f"encoder.down_blocks.{i}.downsamplers.0.", f"encoder.down.{i}.downsample.", ()))
        prefixes.append((f"decoder.up_blocks.{i}.upsamplers.0.", f"decoder.up.{blocks - 1 - i}.upsample.", ()))
    return prefixes


def original_vae_state(folder: Path) -> dict:
    """The VAE of the diffusers folder `folder` in the original autoencoder's tensor names (those a
    single-file checkpoint keeps under `first_stage_model.`)."""
    from safetensors.torch import load_file

    config = json.loads((Path(folder) / "vae" / "config.json").read_text())
    state = {}
    for key, value in load_file(str(Path(folder) / "vae" / "diffusion_pytorch_model.safetensors")).items():
        renamed = _rename(key, _vae_prefixes(config))
        if ".mid.attn_1." in renamed and renamed.endswith(".weight") and value.ndim == 2:
            value = value[:, :, None, None]  # linear -> 1x1 convolution
        state[renamed] = value
    return state


def write_original_checkpoint(folder: Path, target: Path) -> Path:
    """Convert a diffusers SD folder (UNet, VAE, CLIP text encoder) into one `.safetensors` file
    in the original Stable Diffusion layout (model.diffusion_model.*, first_stage_model.*,
    cond_stage_model.transformer.*), as single-file checkpoints are shared."""
    from safetensors.torch import load_file, save_file

    folder = Path(folder)
    state: dict = {}
    unet_config = json.loads((folder / "unet" / "config.json").read_text())
    for key, value in load_file(str(folder / "unet" / "diffusion_pytorch_model.safetensors")).items():
        state["model.diffusion_model." + _rename(key, _unet_prefixes(unet_config))] = value
    for key, value in original_vae_state(folder).items():
        state["first_stage_model." + key] = value
    for key, value in load_file(str(folder / "text_encoder" / "model.safetensors")).items():
        key = key if key.startswith("text_model.") else "text_model." + key
        state["cond_stage_model.transformer." + key] = value
    save_file({k: v.contiguous() for k, v in state.items()}, str(target))
    return Path(target)


if __name__ == "__main__":
    for name, path in build_all(Path(sys.argv[1] if len(sys.argv) > 1 else "tiny-models")).items():
        print(f"{name}: {path}")
