"""ControlNet on the tiny model: the shipped controlnet template through diffgraph's executor against
diffusers' StableDiffusionControlNetPipeline (--family sd, 64x64) or StableDiffusionXLControlNetPipeline
(--family sdxl, the tiny SDXL model at 32x32, run through the modular blocks) on the same components,
ControlNet, control picture, scheduler, seed and steps, in one run.

    python bench/bench_controlnet_cpu.py [--family sd|sdxl] [--steps 25] [--repeats 5] [--threads 1]

Models are loaded once for both sides before timing; each diffgraph run gets a fresh result cache,
so every node really runs. Both sides write the picture as a PNG. Runs alternate who goes first.
Prints the median and best seconds (wall and CPU) of each and the ratio diffgraph / diffusers.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--scheduler", default="euler")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--family", choices=("sd", "sdxl"), default="sd",
                        help="sd: the tiny SD model, 64x64; sdxl: the tiny SDXL model, 32x32")
    args = parser.parse_args()

    import diffusers
    import numpy as np
    import torch
    from interleaved import print_ratios, time_interleaved
    from PIL import Image
    from support import tiny_controlnets, tiny_families, tiny_models
    from support.templates import template_plan

    from diffgraph.engine import Cache, Executor, MemoryCache
    from diffgraph.nodes.sampling import SCHEDULERS

    if args.threads:
        torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="diffgraph-bench-"))
    sdxl = args.family == "sdxl"
    size = 32 if sdxl else 64
    if sdxl:
        model = tiny_families.build_sdxl(work / "sdxl")
        controlnet = tiny_controlnets.build_sdxl_controlnet(model, work / "cn")
    else:
        model = tiny_models.build_sd(work / "sd")
        controlnet = tiny_controlnets.build_sd_controlnet(work / "cn")
    edges = np.zeros((size, size, 3), np.uint8)
    low, high = size // 4, size * 3 // 4 - 1
    edges[low:high + 1, low] = edges[low:high + 1, high] = edges[low, low:high + 1] = edges[high, low:high + 1] = 255
    Image.fromarray(edges).save(work / "edges.png")
    plan = template_plan("controlnet", {"model": str(model), "controlnet": str(controlnet),
                                        "control_image": str(work / "edges.png"), "control_scale": 0.8,
                                        "steps": args.steps, "seed": 0, "scheduler": args.scheduler,
                                        "width": size, "height": size})
    services: dict = {}

    def run_diffgraph() -> None:
        result = Executor(Cache(MemoryCache()), services=services).run(plan, output_dir=work / "ours")
        assert result.status == "succeeded", result.error

    net = diffusers.ControlNetModel.from_pretrained(str(controlnet))
    if sdxl:
        pipe = diffusers.StableDiffusionXLControlNetPipeline.from_pretrained(str(model), controlnet=net)
    else:
        pipe = diffusers.StableDiffusionControlNetPipeline.from_pretrained(
            str(model), controlnet=net, safety_checker=None, requires_safety_checker=False)
    class_name, overrides = SCHEDULERS[args.scheduler]
    pipe.scheduler = getattr(diffusers, class_name).from_config(pipe.scheduler.config, **overrides)
    pipe.set_progress_bar_config(disable=True)
    (work / "theirs").mkdir()
    control = Image.open(work / "edges.png").convert("RGB")

    def run_diffusers() -> None:
        image = pipe(plan.template_params["prompt"], image=control, num_inference_steps=args.steps,
                     guidance_scale=7.5, controlnet_conditioning_scale=0.8, width=size, height=size,
                     generator=torch.Generator("cpu").manual_seed(0)).images[0]
        image.save(work / "theirs" / "out.png")

    # warm-up (loads the models into the model cache), then interleaved, alternating who goes first
    wall, cpu = time_interleaved({"diffgraph": run_diffgraph, "diffusers": run_diffusers}, args.repeats)
    print(f"tiny {args.family} controlnet, {args.steps} steps ({args.scheduler}), {size}x{size}, CPU float32, "
          f"{torch.get_num_threads()} threads, {args.repeats} runs each")
    print_ratios(wall, cpu)


if __name__ == "__main__":
    main()
