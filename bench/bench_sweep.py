"""Sweep throughput (issue 14): a 64-seed sweep of the txt2img template on the bundled tiny-sd,
local unbatched, local batched and on Ray with two workers, runs per second each, in one run.

    python bench/bench_sweep.py [--seeds 64] [--steps 25] [--batch 8] [--threads 1] [--no-ray]

Local: one process, models loaded by a warm-up run before timing, a fresh result cache and output
folder per measurement, no disk cache. Ray: a local Ray instance with two CPUs and two one-CPU
workers, batched like the local batched run; its time includes starting the actors and their
model loads, as a real sweep's does. Prints runs/s of each and the ratios to local unbatched.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=64)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the local runs and each worker")
    parser.add_argument("--no-ray", action="store_true")
    args = parser.parse_args()

    import torch

    from diffgraph.engine import Cache, MemoryCache, default_registry, read_document
    from diffgraph.sweep import plan_sweep, run_local, sweep_executor

    torch.set_num_threads(args.threads)
    template = REPO / "diffgraph" / "workflows" / "txt2img.yaml"
    sweep = plan_sweep(read_document(template), default_registry(), [f"seed=0..{args.seeds - 1}"], False,
                       {"steps": args.steps}, base=template.parent)
    work = Path(tempfile.mkdtemp(prefix="diffgraph-bench-sweep-"))
    services: dict = {}
    warm_up = plan_sweep(read_document(template), default_registry(), ["seed=999"], False, {"steps": 1},
                         base=template.parent)
    run_local(warm_up, sweep_executor(Cache(MemoryCache()), services), output_dir=work / "warm")

    rates: dict[str, float] = {}

    def measure(name: str, run) -> None:
        started = time.perf_counter()
        outcome = run(work / name)
        seconds = time.perf_counter() - started
        assert outcome.succeeded == args.seeds, outcome
        rates[name] = args.seeds / seconds
        print(f"{name:>16}: {args.seeds} runs in {seconds:7.2f} s = {rates[name]:6.2f} runs/s", flush=True)

    print(f"txt2img, bundled tiny-sd 32x32, {args.steps} steps, {args.seeds} seeds, torch threads {args.threads}")
    measure("local unbatched", lambda out: run_local(sweep, sweep_executor(Cache(MemoryCache()), services),
                                                     output_dir=out, batch=1))
    measure("local batched", lambda out: run_local(sweep, sweep_executor(Cache(MemoryCache()), services),
                                                   output_dir=out, batch=args.batch))
    if not args.no_ray:
        import ray

        from diffgraph.ray_backend import run_ray

        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        try:
            measure("ray, 2 workers", lambda out: run_ray(sweep, output_dir=out, batch=args.batch,
                                                          cpus_per_worker=1, workers=2))
        finally:
            ray.shutdown()
    base = rates["local unbatched"]
    for name, rate in rates.items():
        print(f"{name:>16} / local unbatched: {rate / base:5.2f}x")


if __name__ == "__main__":
    main()
