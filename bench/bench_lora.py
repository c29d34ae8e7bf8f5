"""What applying LoRAs costs: txt2img_lora with one and two stacked LoRAs against plain txt2img,
all through diffgraph's executor in one process, and against diffusers' pipeline with the same
LoRAs loaded once (`load_lora_weights` + `set_adapters`).

    python bench/bench_lora.py [--family sd|sdxl] [--steps 25] [--repeats 5] [--rank 4]

The models and the LoRA files are built offline (tiny models: loading LoRA layers weighs far more
here than on a real model, whose denoiser steps are 100x slower). Each diffgraph run gets a fresh
result cache, so every node really runs; the model cache is shared, and with it the LoRA layers
resting in the models between runs. Prints the median seconds of each, the ratios to plain
txt2img and to diffusers, and how many times peft injected LoRA layers during the timed runs.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", choices=("sd", "sdxl"), default="sd")
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--rank", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args()

    import torch
    import transformers.integrations.peft as transformers_peft
    from support import tiny_families, tiny_loras, tiny_models

    from diffgraph.engine import (
        Cache,
        Executor,
        MemoryCache,
        compile_workflow,
        default_registry,
        read_document,
    )

    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="diffgraph-bench-lora-"))
    model = tiny_models.build_sd(work / "sd") if args.family == "sd" else tiny_families.build_sdxl(work / "sdxl")
    loras = [tiny_loras.diffusers_lora(model, args.family, work / f"{name}.safetensors", seed=seed, rank=args.rank)
             for name, seed in (("a", 1), ("b", 2))]
    templates = REPO / "diffgraph" / "workflows"
    size = 64 if args.family == "sd" else 32
    settings = {"model": str(model), "steps": args.steps, "seed": 0, "width": size, "height": size}

    def plan(name: str, stacked: bool = False):
        document = copy.deepcopy(read_document(templates / f"{name}.yaml"))
        overrides = dict(settings)
        if name == "txt2img_lora":
            overrides.update(lora=str(loras[0]), lora_scale=0.7)
        if stacked:
            nodes = document["nodes"]
            nodes["lora2"] = {"type": "LoadLoRA", "inputs": {"unet": "lora.unet", "text_encoder": "lora.text_encoder"},
                              "params": {"lora": str(loras[1]), "strength_model": 0.5, "strength_text": 0.5}}
            for node_id in ("positive", "negative"):
                nodes[node_id]["inputs"]["text_encoder"] = "lora2.text_encoder"
            nodes["sample"]["inputs"]["unet"] = "lora2.unet"
        return compile_workflow(document, default_registry(), overrides, base=templates)

    plans = {"txt2img": plan("txt2img"), "one LoRA": plan("txt2img_lora"), "two LoRAs": plan("txt2img_lora", True)}
    services: dict = {}

    def run(which: str) -> float:
        start = time.perf_counter()
        result = Executor(Cache(MemoryCache()), services=services).run(plans[which], output_dir=work / "out")
        assert result.status == "succeeded", result.error
        return time.perf_counter() - start

    import diffusers
    from peft_injections import counting_injections

    transformers_peft.MIN_PEFT_VERSION = "0.17.0"  # the reference's text-encoder LoRAs (see tests/nodes/test_lora.py)
    cls = diffusers.StableDiffusionPipeline if args.family == "sd" else diffusers.StableDiffusionXLPipeline
    extra = {"safety_checker": None, "requires_safety_checker": False} if args.family == "sd" else {}
    pipe = cls.from_pretrained(str(model), **extra)
    pipe.set_progress_bar_config(disable=True)
    for index, path in enumerate(loras):
        pipe.load_lora_weights(str(path.parent), weight_name=path.name, adapter_name=f"l{index}")

    def run_pipeline(adapters: int) -> float:
        start = time.perf_counter()
        if adapters:
            pipe.set_adapters([f"l{i}" for i in range(adapters)], [0.7, 0.5][:adapters])
        else:
            pipe.disable_lora()
        pipe("a red circle on a white background", num_inference_steps=args.steps, height=size, width=size,
             generator=torch.Generator().manual_seed(0), output_type="pt")
        if not adapters:
            pipe.enable_lora()
        return time.perf_counter() - start

    for which in plans:  # warm up: model loads, first-call costs
        run(which)
    run_pipeline(1)
    seconds: dict[str, list[float]] = {name: [] for name in [*plans, "diffusers, LoRAs loaded once: none",
                                                             "diffusers, LoRAs loaded once: one",
                                                             "diffusers, LoRAs loaded once: two"]}
    with counting_injections() as injections:
        for _ in range(args.repeats):  # interleaved, so that a busy machine slows every side alike
            for which in plans:
                seconds[which].append(run(which))
            for adapters, label in enumerate(("none", "one", "two")):
                seconds[f"diffusers, LoRAs loaded once: {label}"].append(run_pipeline(adapters))
    medians = {name: statistics.median(values) for name, values in seconds.items()}
    print(f"{args.family}, {args.steps} steps, rank {args.rank}, {args.repeats} repeats, {args.threads} thread(s)")
    for name, value in medians.items():
        print(f"  {name:38s} {value:7.3f} s   x{value / medians['txt2img']:.2f} of diffgraph's txt2img")
    for label, count in (("one LoRA", 1), ("two LoRAs", 2)):
        base = medians[f"diffusers, LoRAs loaded once: {'one' if count == 1 else 'two'}"]
        print(f"  diffgraph {label} / diffusers with them loaded once: x{medians[label] / base:.2f}")
    print(f"  peft injections during the {args.repeats} timed rounds (diffgraph and diffusers): {injections['count']}")


if __name__ == "__main__":
    main()
