"""Timing shared by the CPU benches that set diffgraph against diffusers in one run: every side runs
once to warm up (loading), then `repeats` rounds, each starting with the next side in turn, so that
load drift on a busy machine hits all of them alike."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def time_interleaved(sides: dict[str, Callable[[], None]], repeats: int
                     ) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """(wall seconds, CPU seconds) of each side's timed runs, by side name."""
    for run in sides.values():  # warm-up: loading
        run()
    wall: dict[str, list[float]] = {name: [] for name in sides}
    cpu: dict[str, list[float]] = {name: [] for name in sides}
    names = list(sides)
    for repeat in range(repeats):
        shift = repeat % len(names)
        for name in names[shift:] + names[:shift]:
            started, started_cpu = time.perf_counter(), time.process_time()
            sides[name]()
            wall[name].append(time.perf_counter() - started)
            cpu[name].append(time.process_time() - started_cpu)
    return wall, cpu


def print_ratios(wall: dict[str, list[float]], cpu: dict[str, list[float]], target: str = "") -> None:
    """Median and best seconds, wall and CPU, of the sides `diffgraph` and `diffusers`, and their ratio."""
    for name, measured in (("wall", wall), ("CPU", cpu)):  # CPU time suffers less from a busy machine
        ours, theirs = measured["diffgraph"], measured["diffusers"]
        print(f"{name} seconds: diffgraph median {statistics.median(ours):.3f} (best {min(ours):.3f}), "
              f"diffusers median {statistics.median(theirs):.3f} (best {min(theirs):.3f})")
        print(f"  ratio diffgraph / diffusers: median {statistics.median(ours) / statistics.median(theirs):.3f}, "
              f"best {min(ours) / min(theirs):.3f}{target}")
