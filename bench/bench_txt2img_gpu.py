"""txt2img at Stable Diffusion 1.5 and SDXL size: diffgraph eager and --compile against diffusers eager
and diffusers + torch.compile, and SDXL under --vram-budget 8, in one run.

    python bench/bench_txt2img_gpu.py                         # both sizes: 512x512 SD1.5, 1024x1024 SDXL; cuda, fp16
    python bench/bench_txt2img_gpu.py --family sdxl           # one of them (sd, sdxl, adapters)
    python bench/bench_txt2img_gpu.py --cpu-tiny              # no GPU: the tiny test models on the CPU, float32
    python bench/bench_txt2img_gpu.py --tiny --device cpu     # one tiny family on the CPU (smoke mode)

The components are random-weight models built offline with the real architectures' configs
(SD 1.5: its UNet, VAE and 12-layer CLIP text encoder; SDXL base: its UNet, VAE and both CLIP
text encoders), saved once as diffusers folders. Every row runs the same folder, scheduler, seed
and steps (30); models are loaded before timing. Rows: diffgraph eager, diffgraph --compile,
diffusers eager, diffusers + torch.compile (the whole UNet, the usual recipe; CUDA graphs on CUDA);
then SDXL through diffgraph under --vram-budget 8. The adapters row (issue 12): the SDXL-sized model with
one ControlNet (ControlNetModel.from_unet of its UNet) and two random rank-32 denoiser LoRAs made with peft,
the controlnet template + two LoadLoRA against StableDiffusionXLControlNetPipeline after
load_lora_weights + set_adapters; without CUDA it says "not measured". Prints it/s (steps / seconds of a whole
generation, text encoding and decoding included), compile seconds (the first generation less a
steady one), peak accelerator memory (torch.cuda.max_memory_allocated) and the ratios (targets:
eager it/s >= 0.97 of diffusers; --compile >= 150 it/s at SD1.5 size and >= 25 it/s at SDXL size on
an H100-class GPU; SDXL under an 8 GB budget peaks below 8 GB). Without CUDA it says so and exits
0 unless --cpu-tiny (or --tiny --device cpu) asks for the CPU figures.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))


def build_sd15(directory: Path, dtype) -> Path:
    """Random-weight components with SD 1.5's architecture (about 1 B parameters)."""
    import torch
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from support import tiny_models
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=64, in_channels=4, out_channels=4, layers_per_block=2, cross_attention_dim=768,
        block_out_channels=(320, 640, 1280, 1280), attention_head_dim=8,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    )
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, sample_size=512, layers_per_block=2,
        block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
    )
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
        max_position_embeddings=77, hidden_act="quick_gelu", bos_token_id=514, eos_token_id=515, pad_token_id=515,
    ))
    tiny_models.write_tokenizer(directory / "_tokenizer")
    scheduler = PNDMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                              skip_prk_steps=True, set_alpha_to_one=False, steps_offset=1)
    pipe = StableDiffusionPipeline(vae=vae.to(dtype), text_encoder=text_encoder.to(dtype), unet=unet.to(dtype),
                                   tokenizer=tiny_models.load_tokenizer(directory / "_tokenizer"),
                                   scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.save_pretrained(str(directory), safe_serialization=True)
    return directory


def build_sdxl(directory: Path, dtype) -> Path:
    """Random-weight components with SDXL base's architecture (UNet about 2.6 B parameters, CLIP ViT-L
    and ViT-bigG text encoders, the SDXL VAE)."""
    import torch
    from diffusers import (
        AutoencoderKL,
        EulerDiscreteScheduler,
        StableDiffusionXLPipeline,
        UNet2DConditionModel,
    )
    from support import tiny_models
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=128, in_channels=4, out_channels=4, layers_per_block=2, cross_attention_dim=2048,
        block_out_channels=(320, 640, 1280), attention_head_dim=(5, 10, 20), transformer_layers_per_block=(1, 2, 10),
        use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=256,
        projection_class_embeddings_input_dim=2816,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    ).to(dtype)
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, sample_size=1024, layers_per_block=2,
        block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4, scaling_factor=0.13025, force_upcast=False,
    ).to(dtype)
    common = dict(vocab_size=49408, max_position_embeddings=77, bos_token_id=512, eos_token_id=513,
                  pad_token_id=513)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
        hidden_act="quick_gelu", **common)).to(dtype)
    text_encoder_2 = CLIPTextModelWithProjection(CLIPTextConfig(
        hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=20,
        hidden_act="gelu", projection_dim=1280, **common)).to(dtype)
    tiny_models.write_tokenizer(directory / "_tokenizer")
    tokenizer = tiny_models.load_tokenizer(directory / "_tokenizer")
    scheduler = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                       steps_offset=1, timestep_spacing="leading")
    pipe = StableDiffusionXLPipeline(vae=vae, text_encoder=text_encoder, text_encoder_2=text_encoder_2,
                                     tokenizer=tokenizer, tokenizer_2=tokenizer, unet=unet, scheduler=scheduler)
    pipe.save_pretrained(str(directory), safe_serialization=True)
    return directory


def build_controlnet(model: Path, directory: Path, dtype, tiny: bool) -> Path:
    """A ControlNet built from the model's UNet config and weights (ControlNetModel.from_unet: the UNet's
    encoder and SDXL's conditioning embedding), its zero-initialized output convolutions given random
    weights so that it steers (tests/support/tiny_controlnets for the tiny model)."""
    import torch
    from diffusers import ControlNetModel, UNet2DConditionModel
    from support import tiny_controlnets

    unet = UNet2DConditionModel.from_pretrained(str(model), subfolder="unet")
    if tiny:
        net = tiny_controlnets.controlnet_from_unet(unet)
    else:
        net = ControlNetModel.from_unet(unet)  # the real conditioning embedding (16, 32, 96, 256): factor 8
        generator = torch.Generator("cpu").manual_seed(0)
        with torch.no_grad():
            for module in [*net.controlnet_down_blocks, net.controlnet_mid_block, net.controlnet_cond_embedding.conv_out]:
                for parameter in module.parameters():
                    parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.02)
    net.to(dtype).save_pretrained(str(directory), safe_serialization=True)
    del unet, net
    gc.collect()
    return directory


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="smoke mode: the tiny test model")
    parser.add_argument("--cpu-tiny", action="store_true", help="the tiny models on the CPU, float32 (no GPU here)")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtype", choices=("fp16", "bf16", "fp32"), default=None,
                        help="default fp16 on cuda, fp32 elsewhere")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--size", type=int, default=None, help="pixels (default 512 / 1024; native with --tiny)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--scheduler", default="euler")
    parser.add_argument("--model", default=None, help="reuse a folder built by an earlier run (one --family)")
    parser.add_argument("--family", choices=("sd", "sdxl", "adapters", "both"), default="both",
                        help="sd: SD1.5-sized (512 px); sdxl: SDXL-sized (1024 px), through the modular blocks; "
                             "adapters: SDXL-sized + one ControlNet + two LoRAs against StableDiffusionXLControlNetPipeline; "
                             "both: all three")
    parser.add_argument("--budget", type=float, default=8.0, help="the SDXL --vram-budget row's GiB (default 8)")
    parser.add_argument("--no-compile", action="store_true", help="eager rows only")
    args = parser.parse_args()
    if args.cpu_tiny:
        args.tiny, args.device = True, "cpu"

    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print(f"no CUDA device here (torch {torch.__version__}): the GPU figures need one; --cpu-tiny gives "
              "the tiny models' CPU figures")
        if args.family in ("adapters", "both"):
            print(f"  adapters row (SDXL-sized + one ControlNet + two LoRAs, 1024x1024, {args.steps} steps, fp16): "
                  "not measured")
        return
    families = ("sd", "sdxl", "adapters") if args.family == "both" else (args.family,)
    for family in families:
        if family == "adapters":
            bench_adapters(args)
        else:
            bench_family(args, family)


def dtype_of(args: argparse.Namespace):
    """(name, torch dtype) of the run: --dtype, else fp16 on cuda and fp32 elsewhere."""
    import torch

    name = args.dtype or ("fp16" if args.device.startswith("cuda") else "fp32")
    return name, {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[name]


def sync(cuda: bool) -> None:
    import torch

    if cuda:
        torch.cuda.synchronize()


def timed(run, repeats: int, cuda: bool, peak_from_start: bool = False) -> tuple[float, float, float]:
    """(median seconds of `repeats` generations after a warm-up, the warm-up's seconds, peak GiB: of
    the timed generations, or from the warm-up on with `peak_from_start`; NaN off CUDA)."""
    import torch

    def reset_peak() -> None:
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()

    if peak_from_start:
        reset_peak()
    sync(cuda)
    started = time.perf_counter()
    run()  # warm-up: loading, and compiling where asked
    sync(cuda)
    first = time.perf_counter() - started
    seconds = []
    if not peak_from_start:
        reset_peak()
    for _ in range(repeats):
        sync(cuda)
        started = time.perf_counter()
        run()
        sync(cuda)
        seconds.append(time.perf_counter() - started)
    return statistics.median(seconds), first, torch.cuda.max_memory_allocated() / 1024**3 if cuda else float("nan")


def bench_family(args: argparse.Namespace, family: str) -> None:
    import diffusers
    import torch
    from support import tiny_models
    from support.templates import template_plan

    from diffgraph.engine import Cache, Executor, MemoryCache, RunOptions
    from diffgraph.nodes.fastpath import compile_mode
    from diffgraph.nodes.sampling import SCHEDULERS

    dtype_name, dtype = dtype_of(args)
    sdxl = family == "sdxl"
    size = args.size or (32 if args.tiny else 1024 if sdxl else 512)
    work = Path(tempfile.mkdtemp(prefix="diffgraph-gpu-bench-"))
    if args.model:
        model = Path(args.model)
    elif args.tiny:
        from support import tiny_families

        model = tiny_families.build_sdxl(work / "tiny-sdxl") if sdxl else tiny_models.build_sd(work / "tiny")
    else:
        started = time.perf_counter()
        model = build_sdxl(work / "sdxl", dtype) if sdxl else build_sd15(work / "sd15", dtype)
        print(f"built {family}-sized random components in {time.perf_counter() - started:.0f} s: {model}")
    cuda = args.device.startswith("cuda")

    def unload(holder: dict) -> None:
        holder.clear()
        gc.collect()
        if cuda:
            torch.cuda.empty_cache()

    # diffgraph: the shipped template through the executor, a fresh result cache per generation
    plan = template_plan("txt2img", {"model": str(model), "steps": args.steps, "seed": 0, "scheduler": args.scheduler,
                                     "width": size, "height": size})
    rows: dict[str, tuple[float, float, float]] = {}

    def diffgraph_row(name: str, options, peak_from_start: bool = False) -> None:
        services: dict = {}

        def run() -> None:
            result = Executor(Cache(MemoryCache()), services=services).run(
                plan, device=args.device, dtype=dtype_name, output_dir=work / "ours", options=options)
            assert result.status == "succeeded", result.error

        rows[name] = timed(run, args.repeats, cuda, peak_from_start)
        unload(services)

    diffgraph_row("diffgraph eager", RunOptions())
    if not args.no_compile:
        diffgraph_row("diffgraph --compile", RunOptions(compile=True))

    def diffusers_row(name: str, compiled: bool) -> None:
        if sdxl:
            pipe = diffusers.StableDiffusionXLPipeline.from_pretrained(str(model), dtype=dtype).to(args.device)
        else:
            pipe = diffusers.StableDiffusionPipeline.from_pretrained(str(model), dtype=dtype, safety_checker=None,
                                                                    requires_safety_checker=False).to(args.device)
        class_name, overrides = SCHEDULERS[args.scheduler]
        pipe.scheduler = getattr(diffusers, class_name).from_config(pipe.scheduler.config, **overrides)
        pipe.set_progress_bar_config(disable=True)
        if compiled:
            pipe.unet = torch.compile(pipe.unet, mode=compile_mode(args.device), fullgraph=True, dynamic=False)
        (work / "theirs").mkdir(exist_ok=True)
        holder = {"pipe": pipe}
        del pipe

        def run() -> None:
            image = holder["pipe"](plan.template_params["prompt"], num_inference_steps=args.steps, guidance_scale=7.5,
                         generator=torch.Generator("cpu").manual_seed(0), width=size, height=size).images[0]
            image.save(work / "theirs" / "out.png")

        rows[name] = timed(run, args.repeats, cuda)
        unload(holder)

    diffusers_row("diffusers eager", False)
    if not args.no_compile:
        diffusers_row("diffusers + torch.compile", True)
    if sdxl and cuda:
        diffgraph_row(f"diffgraph --vram-budget {args.budget:g}", RunOptions(vram_budget_gb=args.budget),
                      peak_from_start=True)

    device_name = torch.cuda.get_device_name() if cuda else args.device
    label = ("tiny " if args.tiny else "") + ("SDXL" if sdxl else "SD1.5") + "-sized model" + \
        ("" if args.tiny else ", random weights")
    print(f"{label}, {size} px, {args.steps} steps ({args.scheduler}), {dtype_name}, {device_name}, "
          f"median of {args.repeats}")
    eager = rows["diffgraph eager"][0]
    for name, (seconds, first, peak) in rows.items():
        compiling = f", compile {first - seconds:.1f} s" if "compile" in name else ""
        memory = f", peak {peak:.2f} GiB" if cuda else ", peak memory not measured off CUDA"
        print(f"  {name:<28} {args.steps / seconds:8.2f} it/s ({seconds:.3f} s){compiling}{memory}")
    theirs = rows["diffusers eager"][0]
    print(f"  eager it/s ratio diffgraph / diffusers: {theirs / eager:.3f} (target >= 0.97)")
    if "diffgraph --compile" in rows:
        print(f"  --compile speed-up over diffgraph eager: {eager / rows['diffgraph --compile'][0]:.2f}x; "
              f"over diffusers + torch.compile: {rows['diffusers + torch.compile'][0] / rows['diffgraph --compile'][0]:.3f}")
    budget = f"diffgraph --vram-budget {args.budget:g}"
    if budget in rows:
        print(f"  peak under --vram-budget {args.budget:g}: {rows[budget][2]:.2f} GiB (target < {args.budget:g})")



def bench_adapters(args: argparse.Namespace) -> None:
    """The adapters row: the controlnet template with two LoadLoRA (denoiser LoRAs made with peft, strengths
    0.8 and 0.5) on an SDXL-sized model against StableDiffusionXLControlNetPipeline after
    load_lora_weights + set_adapters with the same files and strengths; same ControlNet, control picture
    (scale 0.8), scheduler, seed and steps."""
    import diffusers
    import numpy as np
    import torch
    from PIL import Image
    from support import tiny_families, tiny_loras

    from diffgraph.engine import (
        Cache,
        Executor,
        MemoryCache,
        compile_workflow,
        default_registry,
        read_document,
    )
    from diffgraph.nodes.sampling import SCHEDULERS

    dtype_name, dtype = dtype_of(args)
    cuda = args.device.startswith("cuda")
    size = args.size or (32 if args.tiny else 1024)
    work = Path(tempfile.mkdtemp(prefix="diffgraph-gpu-bench-adapters-"))
    started = time.perf_counter()
    if args.model:
        model = Path(args.model)
    elif args.tiny:
        model = tiny_families.build_sdxl(work / "tiny-sdxl")
    else:
        model = build_sdxl(work / "sdxl", dtype)
    controlnet = build_controlnet(model, work / "controlnet", dtype, args.tiny)
    rank = 4 if args.tiny else 32
    strengths = (0.8, 0.5)
    loras = [tiny_loras.diffusers_lora(model, "sdxl", work / "loras" / f"lora_{name}.safetensors", seed=seed,
                                       rank=rank, alpha=rank, text=False, scale=0.3 if args.tiny else 0.01)
             for seed, name in enumerate("ab")]
    y, x = np.mgrid[0:size, 0:size]
    edges = np.zeros((size, size, 3), np.uint8)
    edges[np.abs(np.hypot(x - size / 2, y - size / 2) - size / 3) < max(1, size / 64)] = 255
    control_image = work / "edges.png"
    Image.fromarray(edges).save(control_image)
    print(f"built the adapters row's model, ControlNet and two rank-{rank} LoRAs in "
          f"{time.perf_counter() - started:.0f} s: {work}")

    templates = REPO / "diffgraph" / "workflows"
    document = read_document(templates / "controlnet.yaml")
    nodes = document["nodes"]
    nodes["lora_a"] = {"type": "LoadLoRA", "inputs": {"unet": "load.unet"},
                       "params": {"lora": str(loras[0]), "strength_model": strengths[0]}}
    nodes["lora_b"] = {"type": "LoadLoRA", "inputs": {"unet": "lora_a.unet"},
                       "params": {"lora": str(loras[1]), "strength_model": strengths[1]}}
    nodes["sample"]["inputs"]["unet"] = "lora_b.unet"
    plan = compile_workflow(document, default_registry(), {
        "model": str(model), "controlnet": str(controlnet), "control_image": str(control_image),
        "control_scale": 0.8, "steps": args.steps, "seed": 0, "scheduler": args.scheduler, "width": size,
        "height": size}, base=templates)
    services: dict = {}
    pictures: dict[str, np.ndarray] = {}
    node_seconds: list[dict[str, float]] = []

    def ours() -> None:
        result = Executor(Cache(MemoryCache()), services=services).run(plan, device=args.device, dtype=dtype_name,
                                                                      output_dir=work / "ours")
        assert result.status == "succeeded", result.error
        pictures["diffgraph"] = np.asarray(Image.open(result.outputs["save"][0]).convert("RGB"))
        node_seconds.append(result.seconds)

    rows = {"diffgraph (controlnet template + 2 LoadLoRA)": timed(ours, args.repeats, cuda)[0]}
    services.clear()
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()

    pipe = diffusers.StableDiffusionXLControlNetPipeline.from_pretrained(
        str(model), controlnet=diffusers.ControlNetModel.from_pretrained(str(controlnet), dtype=dtype),
        dtype=dtype).to(args.device)
    class_name, overrides = SCHEDULERS[args.scheduler]
    pipe.scheduler = getattr(diffusers, class_name).from_config(pipe.scheduler.config, **overrides)
    pipe.set_progress_bar_config(disable=True)
    for name, path in zip("ab", loras, strict=True):
        pipe.load_lora_weights(str(path.parent), weight_name=path.name, adapter_name=name)
    pipe.set_adapters(["a", "b"], adapter_weights=list(strengths))
    control = Image.open(control_image).convert("RGB")

    def theirs() -> None:
        image = pipe(plan.template_params["prompt"], image=control, controlnet_conditioning_scale=0.8,
                     num_inference_steps=args.steps, guidance_scale=7.5, width=size, height=size,
                     generator=torch.Generator("cpu").manual_seed(0)).images[0]
        pictures["diffusers"] = np.asarray(image.convert("RGB"))

    rows["diffusers StableDiffusionXLControlNetPipeline + 2 LoRAs"] = timed(theirs, args.repeats, cuda)[0]
    device_name = torch.cuda.get_device_name() if cuda else args.device
    label = "tiny SDXL-sized model" if args.tiny else "SDXL-sized model, random weights"
    print(f"{label} + one ControlNet (scale 0.8) + two rank-{rank} LoRAs (0.8, 0.5), {size} px, {args.steps} steps "
          f"({args.scheduler}), {dtype_name}, {device_name}, median of {args.repeats}")
    for name, seconds in rows.items():
        print(f"  {name:<56} {args.steps / seconds:8.2f} it/s ({seconds:.3f} s)")
    slowest = sorted(node_seconds[-1].items(), key=lambda item: -item[1])[:4]
    print("  diffgraph's last generation by node: " + ", ".join(f"{node} {sec:.3f} s" for node, sec in slowest))
    ratio = rows["diffusers StableDiffusionXLControlNetPipeline + 2 LoRAs"] / rows[
        "diffgraph (controlnet template + 2 LoadLoRA)"]
    difference = np.abs(pictures["diffgraph"].astype(int) - pictures["diffusers"].astype(int)).max()
    print(f"  it/s ratio diffgraph / diffusers: {ratio:.3f}; largest pixel difference of the two pictures: "
          f"{difference}/255")


if __name__ == "__main__":
    main()
