"""Train the tiny model family shipped in diffgraph/models/, deterministically, on the CPU.

    nice -n 10 python tools/train_tiny_models.py --out diffgraph/models --seed 0

Trains on the procedural scenes of tools/scenes.py (32x32, "a red circle on a white background"):
  1. vae            AutoencoderKL, 32x32 pixels <-> 4x8x8 latents (reconstruction + small KL)
  2. tiny-sd        CLIP text encoder + word-level CLIP tokenizer + UNet2DConditionModel on frozen
                    VAE latents (epsilon prediction, Stable Diffusion's DDPM noise schedule)
  3. tiny-sd-depth  the same UNet widened to 5 input channels (latents + depth), fine-tuned
  4. tiny-depth     DPTForDepthEstimation + DPTImageProcessor predicting the scenes' depth
  5. tiny-ddpm      pixel-space UNet2DModel + DDPMScheduler for unconditional generation
tiny-sd gets two more passes (sd_more) before the depth UNet is widened from it, then a short
fine-tune (sd_prompt_over_residue) that teaches its UNet to follow the prompt where the remains of an
img2img input at strength 1 contradict it; tiny-ddpm gets one more pass (ddpm_more). Every random
draw comes from `--seed`; with the same seed, thread count and machine the weights are the same.
`--scale 0.01` runs every stage with 1% of its steps, to try the script.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import scenes  # noqa: E402

SD_SCHEDULER = {  # Stable Diffusion 1.x's scheduler_config.json
    "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear", "num_train_timesteps": 1000,
    "set_alpha_to_one": False, "skip_prk_steps": True, "steps_offset": 1, "clip_sample": False,
    "prediction_type": "epsilon", "trained_betas": None,
}
MAX_TOKENS = 77


@dataclass(frozen=True)
class Draws:
    """A stage's random draws: made on the CPU from the stage's seed, then moved to the training
    device, so a seed gives the same batches and noise whichever device trains."""

    generator: torch.Generator
    device: torch.device

    def randint(self, high: int, size: tuple[int, ...]) -> torch.Tensor:
        return torch.randint(high, size, generator=self.generator).to(self.device)

    def randn(self, shape) -> torch.Tensor:
        return torch.randn(shape, generator=self.generator).to(self.device)

    def rand(self, size: int) -> torch.Tensor:
        return torch.rand(size, generator=self.generator).to(self.device)


def log(stage: str, step: int, total: int, loss: float, started: float) -> None:
    print(f"[{stage}] step {step}/{total} loss {loss:.5f} ({time.time() - started:.0f} s)", flush=True)


def to_pixels(images: np.ndarray, device: torch.device) -> torch.Tensor:
    """uint8 [N, H, W, 3] -> float [N, 3, H, W] in [-1, 1], the range diffusers' models work in."""
    return (torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1.0).to(device)


def lr_at(step: int, total: int, peak: float) -> float:
    """Short linear warm-up, then cosine decay to a tenth of the peak."""
    warmup = max(1, total // 20)
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def optimise(stage: str, params, steps: int, peak_lr: float, loss_at: Callable[[], torch.Tensor]) -> None:
    """`steps` steps of AdamW (no weight decay) at lr_at's schedule; `loss_at()` draws a batch and
    returns its loss. Logs every 100 steps and the last."""
    optimizer = torch.optim.AdamW(params, lr=peak_lr, weight_decay=0.0)
    started = time.time()
    for step in range(steps):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, steps, peak_lr)
        loss = loss_at()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 100 == 0 or step == steps - 1:
            log(stage, step, steps, loss.item(), started)


# ---------------------------------------------------------------- tokenizer and model configs


def write_tokenizer(directory: Path):
    """A word-level CLIP BPE tokenizer: every caption word is one token (merges build each word)."""
    from transformers import CLIPTokenizer

    vocab: dict[str, int] = {}
    merges: list[str] = []

    def add(token: str) -> None:
        vocab.setdefault(token, len(vocab))

    for letter in "abcdefghijklmnopqrstuvwxyz":  # unknown words fall back to letters
        add(letter)
        add(letter + "</w>")
    for word in scenes.caption_words():
        pieces = [*word[:-1], word[-1] + "</w>"]
        merged = pieces[0]
        for piece in pieces[1:]:
            merges.append(f"{merged} {piece}")
            merged += piece
            add(merged)
    add("<|startoftext|>")
    add("<|endoftext|>")
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "vocab.json").write_text(json.dumps(vocab, indent=0))
    (directory / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    tokenizer = CLIPTokenizer(str(directory / "vocab.json"), str(directory / "merges.txt"),
                              model_max_length=MAX_TOKENS, pad_token="<|endoftext|>")
    tokenizer.save_pretrained(str(directory))
    return CLIPTokenizer.from_pretrained(str(directory), local_files_only=True)


def make_vae():
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, sample_size=scenes.SIZE,
        down_block_types=["DownEncoderBlock2D"] * 3, up_block_types=["UpDecoderBlock2D"] * 3,
        block_out_channels=[16, 32, 64], layers_per_block=1, norm_num_groups=8,
    )


def make_text_encoder(tokenizer):
    from transformers import CLIPTextConfig, CLIPTextModel

    config = CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=MAX_TOKENS, projection_dim=32,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return CLIPTextModel(config)


def make_unet(in_channels: int = 4):
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=scenes.SIZE // 4, in_channels=in_channels, out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        block_out_channels=(32, 64), layers_per_block=1, cross_attention_dim=32,
        attention_head_dim=8, norm_num_groups=16,
    )


def make_depth_estimator():
    from transformers import DPTConfig, DPTForDepthEstimation, DPTImageProcessor

    config = DPTConfig(
        image_size=scenes.SIZE, patch_size=8, num_channels=3, hidden_size=48, num_hidden_layers=4,
        backbone_out_indices=[0, 1, 2, 3], num_attention_heads=4, intermediate_size=96,
        neck_hidden_sizes=[16, 16, 32, 32], fusion_hidden_size=16, head_in_index=-1,
        reassemble_factors=[4, 2, 1, 0.5], is_hybrid=False,
    )
    processor = DPTImageProcessor(size={"height": scenes.SIZE, "width": scenes.SIZE},
                                  keep_aspect_ratio=False, ensure_multiple_of=1)
    return DPTForDepthEstimation(config), processor


def make_pixel_unet():
    from diffusers import UNet2DModel

    return UNet2DModel(
        sample_size=scenes.SIZE, in_channels=3, out_channels=3, layers_per_block=1,
        block_out_channels=(16, 32, 64), norm_num_groups=8,
        down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
    )


# ---------------------------------------------------------------- training stages


def train_vae(data: dict, steps: int, draws: Draws, batch: int = 16):
    vae = make_vae().to(draws.device).train()
    pixels = to_pixels(data["images"], draws.device)

    def loss_at() -> torch.Tensor:
        picked = pixels[draws.randint(len(pixels), (batch,))]
        posterior = vae.encode(picked).latent_dist
        latents = posterior.sample(generator=draws.generator)  # diffusers draws on the CPU, then moves
        reconstruction = vae.decode(latents).sample
        return F.mse_loss(reconstruction, picked) + 1e-5 * posterior.kl().mean()

    optimise("vae", vae.parameters(), steps, 1e-3, loss_at)
    vae.eval().requires_grad_(False)
    with torch.no_grad():
        means = torch.cat([vae.encode(chunk).latent_dist.mean for chunk in pixels[:2048].split(256)])
    vae.register_to_config(scaling_factor=float(1.0 / means.std()))
    print(f"[vae] latent std {means.std():.4f} -> scaling_factor {vae.config.scaling_factor:.5f}", flush=True)
    return vae


def encode_all(vae, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The VAE posterior (mean, std) of every picture, so UNet training samples latents cheaply."""
    means, stds = [], []
    with torch.no_grad():
        for chunk in pixels.split(256):
            posterior = vae.encode(chunk).latent_dist
            means.append(posterior.mean)
            stds.append(posterior.std)
    return torch.cat(means), torch.cat(stds)


def depth_for_unet(depths: torch.Tensor, latent_size: int) -> torch.Tensor:
    """The depth channel as StableDiffusionDepth2ImgPipeline builds it: bicubic to latent size, [-1, 1]."""
    depth = F.interpolate(depths.unsqueeze(1), size=(latent_size, latent_size), mode="bicubic",
                          align_corners=False)
    low = torch.amin(depth, dim=[1, 2, 3], keepdim=True)
    high = torch.amax(depth, dim=[1, 2, 3], keepdim=True)
    return 2.0 * (depth - low) / (high - low) - 1.0


def train_unet(unet, text_encoder, tokenizer, latents: tuple, captions: list[str], steps: int,
               draws: Draws, stage: str, scaling: float, depth: torch.Tensor | None = None,
               batch: int = 32, peak_lr: float = 1e-3, swap_from: int | None = None):
    """Epsilon-prediction training with caption dropout (10% empty prompts) so CFG works.

    With `swap_from`, half the samples noised at timesteps >= swap_from start from another scene's
    latents, and the target is the noise that makes the model's x0 estimate the captioned scene: the
    UNet learns to follow the prompt where the little that is left of a picture contradicts it, so
    img2img at strength 1 (which starts from the input noised at t=999, 7% of it still there) draws
    what the prompt says. Where prompt and residual agree nothing tells the two cases apart, so
    img2img at lower strengths keeps the input's layout.
    """
    from diffusers import DDPMScheduler

    noise_scheduler = DDPMScheduler.from_config(SD_SCHEDULER)
    means, stds = latents
    ids = tokenizer(captions, padding="max_length", max_length=MAX_TOKENS, truncation=True,
                    return_tensors="pt").input_ids.to(draws.device)
    empty = tokenizer([""], padding="max_length", max_length=MAX_TOKENS, return_tensors="pt").input_ids
    empty = empty.to(draws.device)
    alphas_cumprod = noise_scheduler.alphas_cumprod.to(draws.device)
    params = list(unet.parameters()) + (list(text_encoder.parameters()) if text_encoder.training else [])

    def loss_at() -> torch.Tensor:
        picked = draws.randint(len(means), (batch,))
        clean = means[picked] + stds[picked] * draws.randn(means[picked].shape)
        clean = clean * scaling
        noise = draws.randn(clean.shape)
        timesteps = draws.randint(noise_scheduler.config.num_train_timesteps, (batch,))
        noisy = noise_scheduler.add_noise(clean, noise, timesteps)
        target = noise
        if swap_from is not None:
            swapped = (timesteps >= swap_from) & (draws.rand(batch) < 0.5)
            others = draws.randint(len(means), (batch,))
            other = (means[others] + stds[others] * draws.randn(clean.shape)) * scaling
            alpha = alphas_cumprod[timesteps].view(-1, 1, 1, 1)
            shifted = noisy + alpha.sqrt() * (other - clean)  # the same noise over another scene
            target = torch.where(swapped.view(-1, 1, 1, 1), (shifted - alpha.sqrt() * clean) / (1 - alpha).sqrt(),
                                 noise)
            noisy = torch.where(swapped.view(-1, 1, 1, 1), shifted, noisy)
        if depth is not None:
            noisy = torch.cat([noisy, depth[picked]], dim=1)
        tokens = ids[picked].clone()
        dropped = draws.rand(batch) < 0.1
        tokens[dropped] = empty
        embeds = text_encoder(tokens)[0]
        prediction = unet(noisy, timesteps, encoder_hidden_states=embeds).sample
        return F.mse_loss(prediction, target)

    optimise(stage, params, steps, peak_lr, loss_at)
    return unet.eval().requires_grad_(False), text_encoder.eval().requires_grad_(False)


def widen_to_depth(unet):
    """A 5-channel copy of the UNet: the extra (depth) input channel starts at zero, as SD 2 depth did."""
    depth_unet = make_unet(in_channels=5).to(unet.device)
    state = {key: value.clone() for key, value in unet.state_dict().items()}
    weight = state["conv_in.weight"]
    state["conv_in.weight"] = torch.cat([weight, torch.zeros_like(weight[:, :1])], dim=1)
    depth_unet.load_state_dict(state)
    return depth_unet.train().requires_grad_(True)


def train_depth_estimator(data: dict, steps: int, draws: Draws, batch: int = 32):
    model, processor = make_depth_estimator()
    model.to(draws.device).train()
    pixel_values = processor(images=list(data["images"]), return_tensors="pt").pixel_values.to(draws.device)
    depths = torch.from_numpy(data["depths"]).unsqueeze(1).to(draws.device)

    def loss_at() -> torch.Tensor:
        picked = draws.randint(len(pixel_values), (batch,))
        predicted = model(pixel_values[picked]).predicted_depth.unsqueeze(1)
        target = F.interpolate(depths[picked], size=predicted.shape[-2:], mode="bilinear", align_corners=False)
        return F.mse_loss(predicted, target)

    optimise("depth_estimator", model.parameters(), steps, 1e-3, loss_at)
    return model.eval().requires_grad_(False), processor


def train_pixel_unet(data: dict, steps: int, draws: Draws, batch: int = 16, unet=None,
                     peak_lr: float = 1e-3):
    from diffusers import DDPMScheduler

    unet = (unet or make_pixel_unet()).to(draws.device).train().requires_grad_(True)
    noise_scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear")
    pixels = to_pixels(data["images"], draws.device)

    def loss_at() -> torch.Tensor:
        clean = pixels[draws.randint(len(pixels), (batch,))]
        noise = draws.randn(clean.shape)
        timesteps = draws.randint(1000, (batch,))
        prediction = unet(noise_scheduler.add_noise(clean, noise, timesteps), timesteps).sample
        return F.mse_loss(prediction, noise)

    optimise("ddpm", unet.parameters(), steps, peak_lr, loss_at)
    return unet.eval().requires_grad_(False), noise_scheduler


# ---------------------------------------------------------------- stages: each saves its folder


def forget_training_paths(out: Path) -> None:
    """diffusers records where a model was loaded from (`_name_or_path`) in the configs it saves:
    drop it, so the shipped folders do not carry this machine's scratch paths."""
    for path in sorted(out.rglob("*.json")):
        config = json.loads(path.read_text())
        if isinstance(config, dict) and "_name_or_path" in config:
            del config["_name_or_path"]
            path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def stage_depth_estimator(out: Path, data: dict, steps: int, draws: Draws) -> None:
    model, processor = train_depth_estimator(data, steps, draws)
    shutil.rmtree(out / "tiny-depth", ignore_errors=True)
    model.save_pretrained(out / "tiny-depth", safe_serialization=True)
    processor.save_pretrained(out / "tiny-depth")


def stage_vae(out: Path, data: dict, steps: int, draws: Draws) -> None:
    shutil.rmtree(out / "_vae", ignore_errors=True)
    train_vae(data, steps, draws).save_pretrained(out / "_vae", safe_serialization=True)


def stage_sd(out: Path, data: dict, steps: int, draws: Draws) -> None:
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline

    vae = AutoencoderKL.from_pretrained(out / "_vae").to(draws.device).eval().requires_grad_(False)
    latents = encode_all(vae, to_pixels(data["images"], draws.device))
    with tempfile.TemporaryDirectory() as scratch:
        tokenizer = write_tokenizer(Path(scratch) / "tokenizer")
        text_encoder = make_text_encoder(tokenizer).to(draws.device).train()
        unet, text_encoder = train_unet(make_unet().to(draws.device).train(), text_encoder, tokenizer, latents,
                                        data["captions"], steps, draws, "unet", vae.config.scaling_factor)
        shutil.rmtree(out / "tiny-sd", ignore_errors=True)
        StableDiffusionPipeline(
            vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
            scheduler=PNDMScheduler.from_config(SD_SCHEDULER), safety_checker=None, feature_extractor=None,
            requires_safety_checker=False,
        ).save_pretrained(out / "tiny-sd", safe_serialization=True)
        copy_vocab(Path(scratch) / "tokenizer", out / "tiny-sd")
    shutil.rmtree(out / "_vae")


def copy_vocab(tokenizer_dir: Path, model_dir: Path) -> None:
    """transformers 5 saves only tokenizer.json: ship vocab.json + merges.txt too, for older readers."""
    for name in ("vocab.json", "merges.txt"):
        shutil.copy(tokenizer_dir / name, model_dir / "tokenizer" / name)


def load_tiny_sd(out: Path, data: dict, draws: Draws):
    """tiny-sd as the stages so far left it, on the training device, with every scene's VAE posterior."""
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(out / "tiny-sd", local_files_only=True).to(draws.device)
    return pipe, encode_all(pipe.vae, to_pixels(data["images"], draws.device))


def stage_sd_depth(out: Path, data: dict, steps: int, draws: Draws) -> None:
    """Fine-tune a 5-channel copy of tiny-sd's UNet on (latents, depth); ship it with tiny-depth."""
    from diffusers import StableDiffusionDepth2ImgPipeline
    from transformers import DPTForDepthEstimation, DPTImageProcessor

    base, latents = load_tiny_sd(out, data, draws)
    depth = depth_for_unet(torch.from_numpy(data["depths"]), scenes.SIZE // 4).to(draws.device)
    unet, _ = train_unet(widen_to_depth(base.unet), base.text_encoder.eval(), base.tokenizer, latents,
                         data["captions"], steps, draws, "depth_unet", base.vae.config.scaling_factor,
                         depth=depth, peak_lr=5e-4)
    shutil.rmtree(out / "tiny-sd-depth", ignore_errors=True)
    StableDiffusionDepth2ImgPipeline(
        vae=base.vae, text_encoder=base.text_encoder, tokenizer=base.tokenizer, unet=unet,
        scheduler=base.scheduler, depth_estimator=DPTForDepthEstimation.from_pretrained(out / "tiny-depth"),
        feature_extractor=DPTImageProcessor.from_pretrained(out / "tiny-depth"),
    ).save_pretrained(out / "tiny-sd-depth", safe_serialization=True)
    with tempfile.TemporaryDirectory() as scratch:
        write_tokenizer(Path(scratch))
        copy_vocab(Path(scratch), out / "tiny-sd-depth")


def stage_sd_more(out: Path, data: dict, steps: int, draws: Draws) -> None:
    """A second pass over tiny-sd (UNet and text encoder) at half the learning rate."""
    pipe, latents = load_tiny_sd(out, data, draws)
    pipe.unet, pipe.text_encoder = train_unet(
        pipe.unet.train().requires_grad_(True), pipe.text_encoder.train().requires_grad_(True), pipe.tokenizer,
        latents, data["captions"], steps, draws, "unet", pipe.vae.config.scaling_factor, peak_lr=5e-4)
    pipe.save_pretrained(out / "tiny-sd", safe_serialization=True)  # keeps vocab.json and merges.txt


def stage_sd_prompt_over_residue(out: Path, data: dict, steps: int, draws: Draws) -> None:
    """Fine-tune tiny-sd's UNet so the prompt wins over what is left of a picture at the last timesteps
    (train_unet's `swap_from`): img2img at strength 1 then follows the prompt."""
    pipe, latents = load_tiny_sd(out, data, draws)
    pipe.unet, _ = train_unet(
        pipe.unet.train().requires_grad_(True), pipe.text_encoder.eval().requires_grad_(False), pipe.tokenizer,
        latents, data["captions"], steps, draws, "unet_residue", pipe.vae.config.scaling_factor, peak_lr=2.5e-4,
        swap_from=900)
    pipe.save_pretrained(out / "tiny-sd", safe_serialization=True)


def stage_ddpm(out: Path, data: dict, steps: int, draws: Draws) -> None:
    from diffusers import DDPMPipeline

    unet, scheduler = train_pixel_unet(data, steps, draws)
    shutil.rmtree(out / "tiny-ddpm", ignore_errors=True)
    DDPMPipeline(unet=unet, scheduler=scheduler).save_pretrained(out / "tiny-ddpm", safe_serialization=True)


def stage_ddpm_more(out: Path, data: dict, steps: int, draws: Draws) -> None:
    """A second pass over tiny-ddpm at half the learning rate (pixel space needs the most training)."""
    from diffusers import DDPMPipeline, UNet2DModel

    unet = UNet2DModel.from_pretrained(out / "tiny-ddpm" / "unet")
    unet, scheduler = train_pixel_unet(data, steps, draws, unet=unet, peak_lr=5e-4)
    DDPMPipeline(unet=unet, scheduler=scheduler).save_pretrained(out / "tiny-ddpm", safe_serialization=True)


# stage name -> (function, training steps, seed offset); later stages read the folders earlier ones
# wrote. The offsets are the ones the bundled weights were trained with (ddpm shares sd_more's: they
# draw from separate generators in separate processes).
STAGES = {
    "depth_estimator": (stage_depth_estimator, 300, 0),
    "vae": (stage_vae, 1000, 1),
    "sd": (stage_sd, 1500, 2),
    "sd_depth": (stage_sd_depth, 600, 3),
    "sd_more": (stage_sd_more, 1500, 4),
    "sd_prompt_over_residue": (stage_sd_prompt_over_residue, 600, 6),
    "ddpm": (stage_ddpm, 1200, 4),
    "ddpm_more": (stage_ddpm_more, 1800, 5),
}

# the bundled models: sd_more runs twice (two passes of 1500 steps, each with its own warm-up and decay)
DEFAULT_STAGES = ["depth_estimator", "vae", "sd", "sd_more", "sd_more", "sd_depth", "sd_prompt_over_residue",
                  "ddpm", "ddpm_more"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("diffgraph/models"), help="where the model folders go")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--stages", default=",".join(DEFAULT_STAGES),
                        help="comma-separated, in order (each stage is seeded on its own, so stages can run "
                             "in separate processes and give the same weights)")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every stage's step count")
    parser.add_argument("--scenes", type=int, default=20000, help="size of the procedural dataset")
    parser.add_argument("--device", default="cpu",
                        help="where to train (cuda on a GPU machine; random draws stay on the CPU, but GPU "
                             "arithmetic differs from the CPU's, so the weights do too)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (1 is fastest on a busy 2-core machine: no spinning threads)")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    data = scenes.dataset(args.scenes, args.seed)
    for name in args.stages.split(","):
        function, steps, index = STAGES[name]
        started = time.time()
        torch.manual_seed(args.seed * 1000 + index)  # model initialisation
        generator = torch.Generator().manual_seed(args.seed * 1000 + 100 + index)  # batches and noise
        function(args.out, data, max(1, int(steps * args.scale)), Draws(generator, torch.device(args.device)))
        forget_training_paths(args.out)
        print(f"[{name}] done in {time.time() - started:.0f} s", flush=True)


if __name__ == "__main__":
    main()
