"""Sweeps: one workflow run once per combination of template param values.

`--sweep NAME=VALUES` (VALUES: `0..999`, `a,b,c` or `@file.txt`), several of them making the
product (or, with `--zip`, pairs). Each finished combination appends one line to `sweep.jsonl` in
the output folder (params, files, status, seconds, error); a sweep started again skips the
combinations that line says succeeded and whose files are still there.

The local backend runs everything in one process on one cache, models loaded once; runs that
differ only in a SampleLoop's seed are denoised as one batch (`SampleLoop.sample(seeds=...)`), and
the batch's latents go into the cache under each run's own key, so each run then only decodes and
saves. The Ray backend (diffgraph.ray_backend) runs the same batches on actors.
"""

from __future__ import annotations

import itertools
import json
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from diffgraph.engine import (
    Cache,
    Cancelled,
    CancelToken,
    Executor,
    Issue,
    Plan,
    RunContext,
    WorkflowError,
    compile_workflow,
)

MANIFEST = "sweep.jsonl"
MAX_VALUES_FILE_BYTES = 4 * 1024 * 1024
MAX_COMBINATIONS = 1_000_000
#: how many runs that differ only in seed go through the denoiser as one batch
DEFAULT_BATCH = 8


def _invalid(argument: str, message: str, field: str = "--sweep") -> WorkflowError:
    return WorkflowError([Issue(None, field, f"{argument!r}: {message}")])


def parse_sweep(argument: str, base: Path | None = None, *, files: bool = True,
                limit: int = MAX_COMBINATIONS, field: str = "--sweep") -> tuple[str, list[str]]:
    """`NAME=VALUES` -> (name, the values as text); raises WorkflowError naming the argument.
    `files=False` (the server) refuses `@file` values."""
    name, sep, values = argument.partition("=")
    name = name.strip()
    if not sep or not name:
        raise _invalid(argument, "is not NAME=VALUES (VALUES: 0..9, a,b,c or @file.txt)", field)
    if values.startswith("@"):
        if not files:
            raise _invalid(argument, "@file values are read on the command line only; list the values: a,b,c", field)
        return name, _values_file(argument, Path(values[1:]) if base is None else base / values[1:])
    if ".." in values:
        low, _, high = values.partition("..")
        try:
            if len(low) > 30 or len(high) > 30:
                raise ValueError
            first, last = int(low), int(high)
        except ValueError:
            raise _invalid(argument, f"{values!r} is not a range of integers like 0..99", field) from None
        if last < first:
            raise _invalid(argument, f"the range {values} is empty: it must count up, like {last}..{first}", field)
        if last - first + 1 > limit:
            raise _invalid(argument, f"the range {values} has more than {limit} values", field)
        return name, [str(v) for v in range(first, last + 1)]
    items = values.split(",")
    if any(not item.strip() for item in items):
        raise _invalid(argument, "has an empty value; write a,b,c with no empty item", field)
    if len(items) > limit:
        raise _invalid(argument, f"has more than {limit} values", field)
    return name, items


def _values_file(argument: str, path: Path) -> list[str]:
    try:
        if not path.is_file():
            raise _invalid(argument, f"{path} is not a regular file")
        with path.open("rb") as handle:
            data = handle.read(MAX_VALUES_FILE_BYTES + 1)
    except OSError as exc:
        raise _invalid(argument, f"{path} cannot be read ({exc.strerror})") from None
    if len(data) > MAX_VALUES_FILE_BYTES:
        raise _invalid(argument, f"{path} is larger than {MAX_VALUES_FILE_BYTES} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise _invalid(argument, f"{path} is not UTF-8 text") from None
    values = [line.strip() for line in text.splitlines() if line.strip()]
    if not values:
        raise _invalid(argument, f"{path} holds no value (one value a line)")
    return values


def combinations(sweeps: Sequence[tuple[str, list[str]]], zipped: bool, arguments: Sequence[str], *,
                 limit: int = MAX_COMBINATIONS, field: str = "--sweep") -> list[dict[str, str]]:
    """Every combination of the sweeps' values: their product, or with `zipped` the i-th of each."""
    names = [name for name, _ in sweeps]
    for i, name in enumerate(names):
        if name in names[:i]:
            raise _invalid(arguments[i], f"{name} is swept twice; sweep it once", field)
    if zipped:
        lengths = {len(values) for _, values in sweeps}
        if len(lengths) > 1:
            counts = ", ".join(f"{name}: {len(values)}" for name, values in sweeps)
            raise _invalid(arguments[0], f"zip pairs values, so every sweep needs as many ({counts})", field)
        return [dict(zip(names, row, strict=False)) for row in zip(*(values for _, values in sweeps), strict=False)]
    total = 1
    for _, values in sweeps:
        total *= len(values)
    if total > limit:
        raise _invalid(arguments[0], f"the sweeps make {total} combinations; the limit is {limit}", field)
    return [dict(zip(names, row, strict=False)) for row in itertools.product(*(values for _, values in sweeps))]


@dataclass
class Sweep:
    """A workflow document and the plans of its combinations, each validated."""

    document: dict[str, Any]
    base: Path | None
    names: list[str]
    overrides: dict[str, Any]
    #: one per combination: (the swept params, typed; the plan)
    runs: list[tuple[dict[str, Any], Plan]] = field(default_factory=list)


def plan_sweep(document: dict[str, Any], registry: Any, arguments: Sequence[str], zipped: bool,
               overrides: Mapping[str, Any] | None = None, base: Path | None = None,
               values_base: Path | None = None, *, files: bool = True, limit: int = MAX_COMBINATIONS,
               field: str = "--sweep", compile_one: Callable[[dict[str, Any]], Plan] | None = None) -> Sweep:
    """Parse the `--sweep` arguments and plan every combination; raises WorkflowError (each issue
    naming the `--sweep` argument) for a bad argument, a name that is not a param or a bad value.
    The server passes `files=False`, a lower `limit`, its `field` name and its own `compile_one`."""
    sweeps = [parse_sweep(argument, values_base, files=files, limit=limit, field=field) for argument in arguments]
    declared = document.get("params") or {}
    for argument, (name, _) in zip(arguments, sweeps, strict=False):
        if not isinstance(declared, dict) or name not in declared:
            valid = ", ".join(declared) if isinstance(declared, dict) and declared else "none"
            raise _invalid(argument, f"{name!r} is not a param of this workflow; its params: {valid}", field)
    rows = combinations(sweeps, zipped, arguments, limit=limit, field=field)
    names = [name for name, _ in sweeps]
    sweep = Sweep(document, base, names, dict(overrides or {}))
    checked: set[tuple[str, str]] = set()
    for row in rows:
        try:
            values = {**sweep.overrides, **row}
            plan = (compile_one(values) if compile_one is not None
                    else compile_workflow(document, registry, values, base=base))
        except WorkflowError as exc:  # name the --sweep argument whose value this is
            bad = [(n, v) for n, v in row.items() if (n, v) not in checked]
            argument = arguments[names.index(bad[0][0])] if bad else arguments[0]
            raise WorkflowError([Issue(None, field, f"{argument!r}: with {_describe(row)}: {issue}")
                                 for issue in exc.issues]) from None
        checked.update(row.items())
        sweep.runs.append(({name: plan.template_params[name] for name in names}, plan))
    return sweep


def _describe(row: Mapping[str, Any]) -> str:
    return ", ".join(f"{name}={value}" for name, value in row.items())


def combination_key(params: Mapping[str, Any]) -> str:
    return json.dumps(params, sort_keys=True, default=str)


def sweep_executor(cache: Cache, services: dict[str, Any] | None = None) -> Executor:
    """The executor of a sweep's runs, batched or not, here or on a Ray worker: SampleLoop samples
    batch-invariantly (the same picture whatever the batch), cached apart from plain runs."""
    services = {} if services is None else services
    services["batch_invariant"] = True  # diffgraph.nodes.sampling.BATCH_INVARIANT; engine code imports no nodes
    return Executor(cache, services=services, variant="-sweep")


# ---------------------------------------------------------------------------------------------
# the manifest


class Manifest:
    """`sweep.jsonl` in the output folder: one line per finished run, appended and flushed."""

    def __init__(self, output_dir: Path):
        self.output_dir = output_dir
        self.path = output_dir / MANIFEST

    def done(self) -> set[str]:
        """Keys of the combinations recorded as succeeded whose files are all still there."""
        done: set[str] = set()
        if not self.path.is_file():
            return done
        with self.path.open("r", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue  # a line cut short by a crash: that run counts as not done
                if not isinstance(entry, dict) or entry.get("status") != "succeeded":
                    continue
                files = entry.get("files") or []
                if all(isinstance(f, str) and (self.output_dir / f).is_file() for f in files):
                    done.add(combination_key(entry.get("params") or {}))
        return done

    def record(self, entry: dict[str, Any]) -> None:
        self.output_dir.mkdir(parents=True, exist_ok=True)
        line = json.dumps(entry, sort_keys=True, default=str) + "\n"
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(line)
            handle.flush()
            os.fsync(handle.fileno())


def relative_files(outputs: Mapping[str, list[str]], output_dir: Path) -> list[str]:
    root = output_dir.resolve()
    files = []
    for paths in outputs.values():
        for path in paths:
            resolved = Path(path).resolve()
            files.append(str(resolved.relative_to(root)) if resolved.is_relative_to(root) else str(resolved))
    return files


# ---------------------------------------------------------------------------------------------
# batching: runs that differ only in a SampleLoop's seed


def seed_batch_signature(plan: Plan) -> tuple[str, str] | None:
    """(the SampleLoop's id, what its key would be without the seed) when `plan` has exactly one
    SampleLoop with a literal seed; plans with the same signature can share one denoiser batch."""
    loops = [n for n in plan.nodes.values() if n.type == "SampleLoop"]
    if len(loops) != 1 or "seed" in loops[0].links:
        return None
    loop = loops[0]
    params = {k: v for k, v in loop.params.items() if k != "seed"}
    links = {port: plan.nodes[source].key + "." + output for port, (source, output) in loop.links.items()}
    return loop.id, json.dumps([params, links], sort_keys=True, default=str)


def group_by_seed(indices: Iterable[int], plans: Sequence[Plan], batch: int) -> list[list[int]]:
    """Split `indices` into groups of at most `batch` runs that can share a denoiser batch, in order
    of first appearance; a run that can share with none is a group of its own."""
    groups: dict[Any, list[list[int]]] = {}
    order: list[list[int]] = []
    for i in indices:
        signature = seed_batch_signature(plans[i]) if batch > 1 else None
        if signature is None:
            order.append([i])
            continue
        chunks = groups.setdefault(signature, [])
        if not chunks or len(chunks[-1]) >= batch:
            chunks.append([])
            order.append(chunks[-1])
        chunks[-1].append(i)
    return order


def denoise_together(executor: Executor, plans: Sequence[Plan], *, device: str, dtype: str, output_dir: Path,
                     cancel: CancelToken, on_event: Callable[[dict[str, Any]], None] | None = None) -> bool:
    """Run the shared SampleLoop of `plans` (one seed_batch_signature) as one batch and cache each
    item as that plan's result. False when it cannot (an input is not cacheable): run them one by one."""
    import torch

    first = plans[0]
    signature = seed_batch_signature(first)
    assert signature is not None
    loop_id = signature[0]
    loop = first.nodes[loop_id]
    missing = [p for p in plans if executor.cached_outputs(p, loop_id, device=device, dtype=dtype) is None]
    if len(missing) < 2:
        return True  # nothing (or one run) left to denoise: the ordinary run does it
    sources = sorted({source for source, _ in loop.links.values()})
    result = executor.run(first, targets=sources, device=device, dtype=dtype, output_dir=output_dir,
                          cancel=cancel, on_event=on_event)
    if result.status == "cancelled":
        raise Cancelled()
    if result.status != "succeeded":
        return False  # the ordinary runs fail the same way and record why
    arguments: dict[str, Any] = dict(loop.params)
    for port, (source, output) in loop.links.items():
        outputs = executor.cached_outputs(first, source, device=device, dtype=dtype)
        if outputs is None:
            return False
        arguments[port] = outputs[output]
    for name in loop.spec.inputs:
        arguments.setdefault(name, None)
    instance = loop.spec.cls.instantiate(arguments)
    seeds = [p.nodes[loop_id].params["seed"] for p in missing]

    def progress(node_id: str, step: int, total: int, preview: Any = None) -> None:
        if on_event is not None:
            on_event({"type": "progress", "node": node_id, "step": step, "total": total, "batch": len(seeds)})

    ctx = RunContext(node_id=loop_id, device=device, dtype=dtype, output_dir=output_dir, cancel=cancel,
                     workflow=first.document, template_params=first.template_params, services=executor.services,
                     on_progress=progress)
    try:
        with torch.inference_mode():
            latents = instance.sample(ctx, seeds=seeds).float().cpu()  # type: ignore[attr-defined]
    except Cancelled:
        raise
    except Exception:  # noqa: BLE001 - the ordinary runs meet the same error and report it per run
        return False
    for i, plan in enumerate(missing):
        executor.store_outputs(plan, loop_id, {"latent": {"samples": latents[i:i + 1].clone()}},
                               device=device, dtype=dtype)
    return True


@dataclass
class RunRecord:
    """What one combination left: the manifest line, and (Ray) the files' bytes to write here."""

    params: dict[str, Any]
    status: str
    seconds: float
    files: list[str] = field(default_factory=list)
    error: str | None = None
    batch: int = 1

    def line(self) -> dict[str, Any]:
        return {"params": self.params, "files": self.files, "status": self.status,
                "seconds": round(self.seconds, 4), "error": self.error, "batch": self.batch}


def run_group(executor: Executor, runs: Sequence[tuple[dict[str, Any], Plan]], *, device: str, dtype: str,
              output_dir: Path, cancel: CancelToken,
              on_event: Callable[[dict[str, Any]], None] | None = None) -> list[RunRecord]:
    """Run a group from group_by_seed: one denoiser batch when it has several runs, then each run
    (decode, save). Returns a record per run finished; stops early (fewer records) when cancelled."""
    started = time.perf_counter()
    plans = [plan for _, plan in runs]
    if len(plans) > 1:  # when it cannot batch, each run below denoises on its own
        denoise_together(executor, plans, device=device, dtype=dtype, output_dir=output_dir, cancel=cancel,
                         on_event=on_event)
    shared = (time.perf_counter() - started) / len(plans)
    records = []
    for params, plan in runs:
        begun = time.perf_counter()
        result = executor.run(plan, device=device, dtype=dtype, output_dir=output_dir, cancel=cancel,
                              on_event=on_event)
        if result.status == "cancelled":
            break
        records.append(RunRecord(params=params, status=result.status,
                                 seconds=shared + time.perf_counter() - begun,
                                 files=relative_files(result.outputs, output_dir), error=result.error,
                                 batch=len(plans)))
    return records


# ---------------------------------------------------------------------------------------------
# the local backend


@dataclass
class SweepOutcome:
    total: int
    skipped: int
    succeeded: int = 0
    failed: int = 0
    cancelled: bool = False
    #: Ray: batches whose worker was lost and that ran again on another one
    lost_workers: int = 0


def pending_runs(sweep: Sweep, manifest: Manifest) -> tuple[list[int], int]:
    """Indices of the combinations still to run (first occurrence of each), and how many are done."""
    done = manifest.done()
    seen: set[str] = set()
    pending = []
    for i, (params, _) in enumerate(sweep.runs):
        key = combination_key(params)
        if key in done or key in seen:
            continue
        seen.add(key)
        pending.append(i)
    return pending, len(sweep.runs) - len(pending)


def start_sweep(sweep: Sweep, output_dir: Path, batch: int,
                on_start: Callable[[int], None] | None) -> tuple[Manifest, SweepOutcome, list[list[int]]]:
    """What every backend does first: read the manifest, count what is done (told to `on_start`) and
    group the missing combinations into seed batches."""
    output_dir.mkdir(parents=True, exist_ok=True)
    manifest = Manifest(output_dir)
    pending, skipped = pending_runs(sweep, manifest)
    if on_start is not None:
        on_start(skipped)
    groups = group_by_seed(pending, [plan for _, plan in sweep.runs], batch)
    return manifest, SweepOutcome(total=len(sweep.runs), skipped=skipped), groups


def run_local(sweep: Sweep, executor: Executor, *, output_dir: Path, device: str = "cpu", dtype: str = "fp32",
              batch: int = DEFAULT_BATCH, cancel: CancelToken | None = None,
              on_record: Callable[[RunRecord], None] | None = None,
              on_event: Callable[[dict[str, Any]], None] | None = None,
              on_start: Callable[[int], None] | None = None) -> SweepOutcome:
    """Run the sweep's missing combinations in this process, recording each in the manifest."""
    cancel = cancel or CancelToken()
    manifest, outcome, groups = start_sweep(sweep, output_dir, batch, on_start)
    for group in groups:
        try:
            records = run_group(executor, [sweep.runs[i] for i in group], device=device, dtype=dtype,
                                output_dir=output_dir, cancel=cancel, on_event=on_event)
        except Cancelled:
            records = []
        for record in records:
            manifest.record(record.line())
            outcome.succeeded += record.status == "succeeded"
            outcome.failed += record.status != "succeeded"
            if on_record is not None:
                on_record(record)
        if cancel.cancelled:
            outcome.cancelled = True
            break
    return outcome
