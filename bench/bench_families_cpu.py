"""txt2img with the tiny SDXL, SD3 and Flux.1 test models: the shipped template through diffgraph's
executor (the families' Modular Diffusers blocks) against each family's classic diffusers pipeline
on the same components, seed, cfg and steps, in one run.

    python bench/bench_families_cpu.py [--steps 30] [--repeats 5] [--threads 1] [--family sdxl ...]

Models are built offline (tests/support/tiny_families.py) and loaded once for every side before
timing; each diffgraph run gets a fresh result cache, so every node really runs. Three sides per
family, interleaved in a rotating order so that load drift hits all of them: diffgraph as it is,
diffgraph with the guider's passes unbatched (one denoiser call per pass, as before the family table's
`batched_guidance`; the same as today for families without it) and the classic pipeline. Prints
the CPU-time and wall medians of whole generations (text encoding and decoding included) and the
it/s ratio diffgraph / diffusers (target >= 0.97), with the load average before and after.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

#: family -> (tiny model builder, classic pipeline, cfg the template and the pipeline get)
FAMILIES = {
    "sdxl": ("build_sdxl", "StableDiffusionXLPipeline", 7.5),
    "sd3": ("build_sd3", "StableDiffusion3Pipeline", 7.5),
    "flux": ("build_flux", "FluxPipeline", 3.5),  # its distilled guidance: one pass per step either way
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--size", type=int, default=32, help="pixels (default 32)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads for every side (default 1)")
    parser.add_argument("--family", action="append", choices=tuple(FAMILIES), help="default: all three")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="diffgraph-families-bench-"))
    print(f"tiny models, txt2img, {args.size} px, {args.steps} steps, CPU float32, {args.threads} torch "
          f"thread(s), median of {args.repeats} interleaved runs; load average {os.getloadavg()[0]:.2f}")
    for family in args.family or tuple(FAMILIES):
        bench_family(args, family, work)
    print(f"load average after: {os.getloadavg()[0]:.2f}")


def bench_family(args: argparse.Namespace, family: str, work: Path) -> None:
    import diffusers
    import torch
    from interleaved import time_interleaved
    from support import tiny_families
    from support.templates import template_plan

    from diffgraph.engine import Cache, Executor, MemoryCache
    from diffgraph.nodes import families

    builder, classic_name, cfg = FAMILIES[family]
    model = getattr(tiny_families, builder)(work / family)
    plan = template_plan("txt2img", {"model": str(model), "steps": args.steps, "seed": 0, "cfg": cfg,
                                     "width": args.size, "height": args.size})
    services: dict = {}
    table = families.FAMILIES[family]

    def run_diffgraph(variant: families.Family) -> None:
        families.FAMILIES[family] = variant
        try:
            result = Executor(Cache(MemoryCache()), services=services).run(plan, output_dir=work / "ours")
        finally:
            families.FAMILIES[family] = table
        assert result.status == "succeeded", result.error

    classic = getattr(diffusers, classic_name).from_pretrained(str(model))
    if family == "sdxl":  # the template's `euler`; SD3's and Flux's own scheduler is their euler
        classic.scheduler = diffusers.EulerDiscreteScheduler.from_config(classic.scheduler.config)
    classic.set_progress_bar_config(disable=True)

    def run_classic() -> None:
        classic(plan.template_params["prompt"], num_inference_steps=args.steps, guidance_scale=cfg,
                generator=torch.Generator("cpu").manual_seed(0), width=args.size, height=args.size,
                output_type="pil").images[0].save(work / f"{family}-classic.png")

    sides = {"diffgraph": lambda: run_diffgraph(table)}
    if "batched_guidance" in {field.name for field in dataclasses.fields(table)}:  # not before it existed
        unbatched = dataclasses.replace(table, batched_guidance=False)
        sides["diffgraph, passes unbatched"] = lambda: run_diffgraph(unbatched)
    sides["diffusers"] = run_classic
    wall, cpu = time_interleaved(sides, args.repeats)
    names = list(sides)
    print(f"{family} ({classic_name}, cfg {cfg:g}):")
    for name in names:
        seconds = statistics.median(cpu[name])
        print(f"  {name:<28} CPU {seconds:.3f} s ({args.steps / seconds:.2f} it/s), "
              f"wall {statistics.median(wall[name]):.3f} s")
    for name in names[:-1]:
        print(f"  it/s ratio {name} / diffusers: CPU {statistics.median(cpu['diffusers']) / statistics.median(cpu[name]):.3f}, "
              f"wall {statistics.median(wall['diffusers']) / statistics.median(wall[name]):.3f} (target >= 0.97)")


if __name__ == "__main__":
    main()
