"""The Ray backend of sweeps: the local backend's batches, run by actors on a Ray cluster.

One actor per GPU (per `cpus_per_worker` CPUs on a cluster without GPUs) keeps its models and its
result cache warm across batches; a batch goes to an idle actor that already ran a batch with the
same models when there is one. A batch whose actor is lost (its node died) goes back to the queue
and runs on another actor; only the submitting process writes the manifest, when a batch comes
back, so a run is never lost nor recorded twice. Files travel back as bytes and are written in the
submitter's output folder (no shared file system is assumed). Workers need diffgraph installed.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from diffgraph.engine import CancelToken, Plan
from diffgraph.sweep import RunRecord, Sweep, SweepOutcome, start_sweep


def ray_available() -> bool:
    try:
        import ray  # noqa: F401
    except ImportError:
        return False
    return True


class SweepWorker:
    """Lives in a Ray actor: one executor, one in-memory cache and the models it loaded."""

    def __init__(self, threads: int, batch_invariant: bool = True) -> None:
        import torch

        from diffgraph.engine import Cache, Executor, MemoryCache, default_registry
        from diffgraph.sweep import sweep_executor

        torch.set_num_threads(threads)
        self.registry = default_registry()
        # a sweep's runs sample batch-invariantly; the server's runs as its local worker would
        self.executor = sweep_executor(Cache(MemoryCache())) if batch_invariant else Executor(Cache(MemoryCache()))

    def run_group(self, document: dict[str, Any], base: str | None, overrides: dict[str, Any],
                  rows: list[dict[str, Any]], device: str, dtype: str) -> list[dict[str, Any]]:
        """Run the combinations `rows` (one group_by_seed group); each result with its files' bytes."""
        from diffgraph.engine import compile_workflow
        from diffgraph.sweep import run_group

        runs = [(row, compile_workflow(document, self.registry, {**overrides, **row},
                                       base=Path(base) if base else None)) for row in rows]
        with tempfile.TemporaryDirectory(prefix="diffgraph-sweep-") as folder:
            output_dir = Path(folder)
            records = run_group(self.executor, runs, device=device, dtype=dtype, output_dir=output_dir,
                                cancel=CancelToken())
            results = []
            for record in records:
                files = [(name, (output_dir / name).read_bytes()) for name in record.files]
                results.append({"line": record.line(), "files": files})
        return results


    def run_one(self, document: dict[str, Any], params: dict[str, Any], device: str, dtype: str,
                run_id: str) -> dict[str, Any]:
        """One server run: its RunResult as JSON, with its files' bytes by the node that wrote them."""
        from diffgraph.engine import compile_workflow

        plan = compile_workflow(document, self.registry, params)
        with tempfile.TemporaryDirectory(prefix="diffgraph-run-") as folder:
            result = self.executor.run(plan, device=device, dtype=dtype, output_dir=Path(folder), run_id=run_id)
            files = {node: [(Path(path).name, Path(path).read_bytes()) for path in paths]
                     for node, paths in result.outputs.items()}
        return {"result": result.to_json(), "files": files}


def _model_key(plan: Plan) -> str:
    """The loaders' cache keys: batches with the same key use the same models."""
    return json.dumps(sorted(n.key for n in plan.nodes.values() if n.type.startswith("Load")))


def take_group(queue: deque[list[int]], warm: str | None, model_key: Callable[[list[int]], str]) -> list[int]:
    """The first queued group whose models an actor already holds (`warm`: the model key of its
    last group), else the first group."""
    for position, group in enumerate(queue):
        if warm is not None and model_key(group) == warm:
            del queue[position]
            return group
    return queue.popleft()


_NUMBERED = re.compile(r"^(.*_)(\d+)(\.[A-Za-z0-9]+)$")


def write_new_file(output_dir: Path, name: str, data: bytes) -> str:
    """Write `data` under `name` in `output_dir`, or under the next free number (prefix_00002.png),
    never over an existing file; returns the name used."""
    name = Path(name).name  # a worker names files; they land in this folder only
    match = _NUMBERED.match(name)
    stem, number, suffix = (match.group(1), int(match.group(2)), match.group(3)) if match else (name + "_", 0, "")
    candidate = name
    while True:
        try:
            fd = os.open(output_dir / candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            number += 1
            candidate = f"{stem}{number:05d}{suffix}"
            continue
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        return candidate


def run_ray(sweep: Sweep, *, output_dir: Path, device: str = "cpu", dtype: str = "fp32", batch: int = 8,
            address: str | None = None, cpus_per_worker: float = 1.0, cancel: CancelToken | None = None,
            on_record: Callable[[RunRecord], None] | None = None,
            on_start: Callable[[int], None] | None = None, workers: int | None = None) -> SweepOutcome:
    """Run the sweep's missing combinations on the Ray cluster at `address` (a local one if None,
    or the one this process is already connected to), recording each in the manifest here."""
    import ray
    from ray.exceptions import RayError, RayTaskError

    cancel = cancel or CancelToken()
    if not ray.is_initialized():
        ray.init(address=address, log_to_driver=False)
    manifest, outcome, groups = start_sweep(sweep, output_dir, batch, on_start)
    plans = [plan for _, plan in sweep.runs]
    queue = deque(groups)
    if not queue:
        return outcome

    gpu = device.startswith("cuda")
    resource, per_worker = ("GPU", 1.0) if gpu else ("CPU", cpus_per_worker)
    actor_class = ray.remote(SweepWorker).options(num_cpus=0 if gpu else cpus_per_worker, num_gpus=1 if gpu else 0,
                                                  max_restarts=0)
    threads = max(1, int(cpus_per_worker))

    def start_actors(count: int) -> list[Any]:
        return [actor_class.remote(threads) for _ in range(count)]

    slots = int(ray.cluster_resources().get(resource, 0) // per_worker)
    if slots < 1:
        raise RuntimeError(f"the Ray cluster has no {resource} slot of {per_worker} for a worker "
                           f"(it has {ray.cluster_resources().get(resource, 0)} {resource}); "
                           "lower --cpus-per-worker or add nodes")
    idle = start_actors(min(workers or slots, len(queue)))
    holds: dict[Any, str] = {}  # actor -> model key of its last batch
    in_flight: dict[Any, tuple[Any, list[int]]] = {}
    document, base = sweep.document, str(sweep.base) if sweep.base else None
    overrides = {k: v for k, v in sweep.overrides.items() if k not in sweep.names}

    def next_group(actor: Any) -> list[int]:
        return take_group(queue, holds.get(actor), lambda group: _model_key(plans[group[0]]))

    while (queue and not cancel.cancelled) or in_flight:
        while idle and queue and not cancel.cancelled:
            actor = idle.pop()
            group = next_group(actor)
            rows = [sweep.runs[i][0] for i in group]
            ref = actor.run_group.remote(document, base, overrides, rows, device, dtype)
            in_flight[ref] = (actor, group)
            holds[actor] = _model_key(plans[group[0]])
        if not in_flight:
            break
        ready, _ = ray.wait(list(in_flight), num_returns=1, timeout=0.5)
        for ref in ready:
            actor, group = in_flight.pop(ref)
            try:
                results = ray.get(ref)
            except RayTaskError:
                raise  # our own code failed on the worker: the same would fail here
            except RayError:  # the actor or its node is gone: the batch runs again elsewhere
                queue.appendleft(group)
                holds.pop(actor, None)
                outcome.lost_workers += 1
                spare = int(ray.available_resources().get(resource, 0) // per_worker)
                idle.extend(start_actors(min(spare, 1)))
                if not idle and not in_flight:
                    raise RuntimeError("every Ray worker was lost and the cluster has no room for a new one") from None
                continue
            for result in results:
                line = result["line"]
                line["files"] = [write_new_file(output_dir, name, data) for name, data in result["files"]]
                manifest.record(line)
                record = RunRecord(params=line["params"], status=line["status"], seconds=line["seconds"],
                                   files=line["files"], error=line["error"], batch=line["batch"])
                outcome.succeeded += record.status == "succeeded"
                outcome.failed += record.status != "succeeded"
                if on_record is not None:
                    on_record(record)
            idle.append(actor)
    outcome.cancelled = cancel.cancelled and bool(queue)
    for actor in idle:
        ray.kill(actor)
    return outcome
