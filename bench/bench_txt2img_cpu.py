"""txt2img on the tiny model: the shipped template through diffgraph's executor against diffusers'
StableDiffusionPipeline on the same components, scheduler, seed and steps, in one run.

    python bench/bench_txt2img_cpu.py [--steps 25] [--repeats 5]

Models are loaded once for both sides before timing; each diffgraph run gets a fresh result cache,
so every node really runs. Both sides write the picture as a PNG. Prints the median seconds of each
and the ratio diffgraph / diffusers (target: at most 1.05).
"""

from __future__ import annotations

import argparse
import statistics
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
    args = parser.parse_args()

    import diffusers
    import torch
    from interleaved import print_ratios, time_interleaved
    from support import tiny_models
    from support.templates import template_plan

    from diffgraph.engine import Cache, Executor, MemoryCache
    from diffgraph.nodes.sampling import SCHEDULERS

    if args.threads:
        torch.set_num_threads(args.threads)

    work = Path(tempfile.mkdtemp(prefix="diffgraph-bench-"))
    model = tiny_models.build_sd(work / "sd")
    plan = template_plan("txt2img", {"model": str(model), "steps": args.steps, "seed": 0, "scheduler": args.scheduler})
    services: dict = {}

    node_seconds: dict[str, list[float]] = {}

    def run_diffgraph() -> None:
        result = Executor(Cache(MemoryCache()), services=services).run(plan, output_dir=work / "ours")
        assert result.status == "succeeded", result.error
        for node_id, seconds in result.seconds.items():
            node_seconds.setdefault(node_id, []).append(seconds)

    pipe = diffusers.StableDiffusionPipeline.from_pretrained(str(model), safety_checker=None,
                                                            requires_safety_checker=False)
    class_name, overrides = SCHEDULERS[args.scheduler]
    pipe.scheduler = getattr(diffusers, class_name).from_config(pipe.scheduler.config, **overrides)
    pipe.set_progress_bar_config(disable=True)
    (work / "theirs").mkdir()

    def run_diffusers() -> None:
        image = pipe(plan.template_params["prompt"], num_inference_steps=args.steps, guidance_scale=7.5,
                     generator=torch.Generator("cpu").manual_seed(0)).images[0]
        image.save(work / "theirs" / "out.png")

    # warm-up (loads the models into the model cache), then interleaved, alternating who goes first
    wall, cpu = time_interleaved({"diffgraph": run_diffgraph, "diffusers": run_diffusers}, args.repeats)
    print(f"tiny txt2img, {args.steps} steps ({args.scheduler}), 64x64, CPU float32, "
          f"{torch.get_num_threads()} threads, {args.repeats} runs each")
    print("diffgraph median seconds per node: "
          + ", ".join(f"{node} {statistics.median(values):.3f}" for node, values in node_seconds.items()))
    print_ratios(wall, cpu, target=" (target <= 1.05)")


if __name__ == "__main__":
    main()
