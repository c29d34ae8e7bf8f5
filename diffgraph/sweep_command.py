"""`diffgraph run WORKFLOW --sweep NAME=VALUES ...`: the command-line side of diffgraph.sweep."""

from __future__ import annotations

import argparse
import sys
import threading
from pathlib import Path
from typing import Any

from diffgraph.engine import CancelToken, Executor, WorkflowError, read_document
from diffgraph.sweep import (
    DEFAULT_BATCH,
    MANIFEST,
    RunRecord,
    SweepOutcome,
    plan_sweep,
    run_local,
    sweep_executor,
)

EXIT_FAILED, EXIT_INVALID, EXIT_CANCELLED = 1, 2, 130
RAY_MISSING = "the ray backend needs Ray: pip install 'diffgraph[ray]' (or pip install 'ray>=2.9')"


def add_sweep_options(run: argparse.ArgumentParser) -> None:
    run.add_argument("--sweep", action="append", default=[], metavar="NAME=VALUES",
                     help="run once per value: 0..99, a,b,c or @file.txt (one a line); several make "
                          "their product")
    run.add_argument("--zip", action="store_true", help="pair the --sweep values instead of their product")
    run.add_argument("--backend", choices=("local", "ray"), default="local",
                     help="local: this process (default); ray: the Ray cluster at --address")
    run.add_argument("--address", default=None, help="a Ray cluster's address (default: start a local one)")
    run.add_argument("--cpus-per-worker", type=float, default=1.0,
                     help="CPUs per Ray worker on a cluster without GPUs (default 1)")
    run.add_argument("--batch", type=int, default=DEFAULT_BATCH,
                     help=f"runs that differ only in seed denoised together (default {DEFAULT_BATCH}; 1 = none)")


def run_sweep_command(args: argparse.Namespace, executor: Executor, overrides: dict[str, Any]) -> int:
    from diffgraph.cli import _print_json, _registry, _report_invalid

    if args.batch < 1:
        return _report_invalid([_issue("--batch", f"{args.batch} is not a batch size; give 1 or more")], args.json)
    if args.cpus_per_worker <= 0:
        return _report_invalid([_issue("--cpus-per-worker", f"{args.cpus_per_worker} must be above 0")], args.json)
    path = Path(args.workflow)
    try:
        sweep = plan_sweep(read_document(path), _registry(), args.sweep, args.zip, overrides,
                           base=path.resolve().parent)
    except WorkflowError as exc:
        return _report_invalid(exc.issues, args.json)
    output_dir = Path(args.output_dir)
    if args.backend == "ray":
        from diffgraph.ray_backend import ray_available

        if not ray_available():
            print(RAY_MISSING, file=sys.stderr)
            return EXIT_INVALID

    from tqdm import tqdm

    bar = tqdm(total=len(sweep.runs), desc="sweep", unit="run", file=sys.stderr, disable=args.json)
    cancel = CancelToken()
    outcome: dict[str, Any] = {}
    finished = threading.Event()

    def on_record(record: RunRecord) -> None:
        bar.update(1)
        if record.status != "succeeded":
            bar.write(f"failed {record.params}: {record.error}", file=sys.stderr)

    def work() -> None:
        try:
            if args.backend == "ray":
                from diffgraph.ray_backend import run_ray

                result: SweepOutcome = run_ray(
                    sweep, output_dir=output_dir, device=args.device, dtype=args.dtype, batch=args.batch,
                    address=args.address, cpus_per_worker=args.cpus_per_worker, cancel=cancel,
                    on_record=on_record, on_start=lambda skipped: bar.update(skipped))
            else:
                result = run_local(sweep, sweep_executor(executor.cache, executor.services), output_dir=output_dir, device=args.device, dtype=args.dtype,
                                   batch=args.batch, cancel=cancel, on_record=on_record,
                                   on_start=lambda skipped: bar.update(skipped))
            outcome["result"] = result
        except Exception as exc:  # noqa: BLE001 - reported as a failed sweep, not a traceback
            outcome["error"] = exc
        finally:
            finished.set()

    # the sweep works in a thread so that Ctrl+C reaches this one, which turns it into a cancel
    threading.Thread(target=work, name="diffgraph-sweep", daemon=True).start()
    while not finished.is_set():
        try:
            finished.wait(0.2)
        except KeyboardInterrupt:
            if cancel.cancelled:
                print("stopped", file=sys.stderr)
                return EXIT_CANCELLED
            cancel.cancel()
            bar.write("cancelling: the runs finished so far stay recorded...", file=sys.stderr)
    bar.close()
    if "error" in outcome:
        message = f"{type(outcome['error']).__name__}: {outcome['error']}"
        if args.json:
            _print_json({"status": "failed", "error": message})
        print(f"sweep failed: {message}", file=sys.stderr)
        return EXIT_FAILED
    result = outcome["result"]
    summary = {"status": "cancelled" if result.cancelled else "failed" if result.failed else "succeeded",
               "total": result.total, "skipped": result.skipped, "succeeded": result.succeeded,
               "failed": result.failed, "manifest": str(output_dir / MANIFEST)}
    if args.json:
        _print_json(summary)
    else:
        print(f"{result.succeeded} succeeded, {result.failed} failed, {result.skipped} already done; "
              f"{output_dir / MANIFEST}", file=sys.stderr)
    if result.cancelled:
        return EXIT_CANCELLED
    return EXIT_FAILED if result.failed else 0


def _issue(field: str, message: str) -> Any:
    from diffgraph.engine import Issue

    return Issue(None, field, message)
