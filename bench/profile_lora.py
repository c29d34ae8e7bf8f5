"""Where a re-run with a LoRA spends its time: the tiny SDXL model's txt2img_lora, run once to warm
up, then `--runs` times with new seeds under cProfile (each run with a fresh result cache, so every
node runs; one model cache, as in a server). Prints the seconds inside `lora.try_on` (LoadLoRA's
fit check) and `lora.applied` (TextEncode's and SampleLoop's LoRA scope, body excluded) against the
runs' total, and how many times peft injected LoRA layers.

    python bench/profile_lora.py [--runs 3] [--steps 10]
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()

    import torch
    from peft_injections import counting_injections
    from support import tiny_families, tiny_loras
    from support.templates import run_plan, template_plan

    from diffgraph.nodes import lora

    torch.set_num_threads(1)
    work = Path(tempfile.mkdtemp(prefix="diffgraph-profile-lora-"))
    model = tiny_families.build_sdxl(work / "sdxl")
    path = tiny_loras.diffusers_lora(model, "sdxl", work / "a.safetensors", seed=1)
    services: dict = {}

    def generate(seed: int) -> None:
        settings = {"model": str(model), "lora": str(path), "lora_scale": 0.7, "steps": args.steps, "seed": seed,
                    "width": 32, "height": 32, "cfg": 5.0}
        run_plan(template_plan("txt2img_lora", settings), services=services, output_dir=work / "out")

    generate(0)  # the model's load and the first LoRA load
    with counting_injections() as injections:
        profile = cProfile.Profile()
        start = time.perf_counter()
        profile.enable()
        for seed in range(1, args.runs + 1):
            generate(seed)
        profile.disable()
        total = time.perf_counter() - start
    stats = pstats.Stats(profile).stats  # type: ignore[attr-defined]

    def inside(function: str) -> tuple[int, float]:  # calls and cumulative seconds of lora.py's `function`
        found = [entry for (file, _, name), entry in stats.items()
                 if name == function and Path(file).resolve() == Path(lora.__file__).resolve()]
        return sum(entry[1] for entry in found), sum(entry[3] for entry in found)

    print(f"tiny SDXL txt2img_lora, {args.steps} steps, {args.runs} runs after a warm-up, one thread, under cProfile")
    print(f"  all {args.runs} runs       {total:7.3f} s")
    calls, seconds = inside("try_on")
    print(f"  lora.try_on     {seconds:7.3f} s in {calls} calls (LoadLoRA's fit check)")
    calls, seconds = inside("applied")  # a generator: cProfile counts its entry and its exit
    print(f"  lora.applied    {seconds:7.3f} s in {calls // 2} uses (the LoRA scope of TextEncode and SampleLoop)")
    print(f"  peft injections    {injections['count']:7d}")


if __name__ == "__main__":
    main()
