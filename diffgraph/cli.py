"""The `diffgraph` command: run, validate, nodes, serve.

Exit codes: 0 success, 1 the run failed, 2 the workflow or the command line is invalid,
130 cancelled (Ctrl+C).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
from pathlib import Path
from typing import Any

from diffgraph.engine import (
    Cache,
    CancelToken,
    DiskCache,
    Executor,
    Issue,
    MemoryCache,
    ThreadPolicy,
    WorkflowError,
    default_cache_dir,
    default_registry,
    load_plan,
    parse_override,
)
from diffgraph.engine.executor import DTYPES, check_device

EXIT_FAILED, EXIT_INVALID, EXIT_CANCELLED = 1, 2, 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="diffgraph", description="Node-graph workflows for diffusion models.")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="run a workflow file headless")
    run.add_argument("workflow", help="a workflow file (.yaml, .yml or .json)")
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="NAME=VALUE",
                     help="set a template param (typed by its declaration); repeatable")
    run.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or mps (default cpu)")
    run.add_argument("--dtype", default="fp32", choices=DTYPES, help="default fp32")
    run.add_argument("--output-dir", default="outputs", help="where output nodes write files (default ./outputs)")
    cache = run.add_mutually_exclusive_group()
    cache.add_argument("--cache-dir", help=f"disk cache folder (default {default_cache_dir()})")
    cache.add_argument("--no-cache", action="store_true", help="use no disk cache")
    run.add_argument("--json", action="store_true", help="print one JSON summary instead of progress")

    validate = commands.add_parser("validate", help="check a workflow without running it")
    validate.add_argument("workflow")
    validate.add_argument("--json", action="store_true")

    nodes = commands.add_parser("nodes", help="list the node catalog")
    nodes.add_argument("--json", action="store_true")

    serve = commands.add_parser("serve", help="start the server and the browser editor")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8188)
    serve.add_argument("--token", default=None, help="required when binding beyond loopback "
                                                     "(or set DIFFGRAPH_TOKEN)")
    serve.add_argument("--data-dir", default=None, help="where the database, uploads and outputs live")
    serve.add_argument("--device", default="cpu")
    serve.add_argument("--dtype", default="fp32", choices=DTYPES)
    serve.add_argument("--allow-host", action="append", default=[], metavar="NAME",
                       help="another Host name the server answers to (besides the bound address and "
                            "localhost); repeatable")
    return parser


def _print_json(document: Any, indent: int | None = None) -> None:
    """One JSON document on stdout; non-ASCII text stays readable where stdout speaks UTF-8."""
    utf8 = (sys.stdout.encoding or "").lower().replace("-", "").replace("_", "") == "utf8"
    print(json.dumps(document, indent=indent, ensure_ascii=not utf8, default=str))


def _report_invalid(issues: list[Issue], as_json: bool) -> int:
    if as_json:
        _print_json({"valid": False, "errors": [i.to_dict() for i in issues]})
    else:
        print(f"invalid workflow ({len(issues)} problem{'s' if len(issues) != 1 else ''}):", file=sys.stderr)
        for issue in issues:
            print(f"  - {issue}", file=sys.stderr)
    return EXIT_INVALID


def _registry():
    registry = default_registry()
    for problem in registry.load_errors:
        print(f"warning: {problem}", file=sys.stderr)
    return registry


def cmd_validate(args: argparse.Namespace) -> int:
    try:
        plan = load_plan(args.workflow, _registry())
    except WorkflowError as exc:
        return _report_invalid(exc.issues, args.json)
    if args.json:
        _print_json({"valid": True, "errors": [], "nodes": len(plan.nodes)})
    else:
        print(f"{args.workflow}: valid ({len(plan.nodes)} nodes)")
    return 0


def cmd_nodes(args: argparse.Namespace) -> int:
    catalog = _registry().catalog()
    if args.json:
        _print_json(catalog, indent=2)
        return 0
    for entry in catalog:
        ports = ", ".join(f"{p['name']}: {p['type']}" for p in entry["inputs"])
        params = ", ".join(f"{p['name']}={p['default']!r}" for p in entry["params"])
        outs = ", ".join(f"{p['name']}: {p['type']}" for p in entry["outputs"])
        print(f"{entry['type']} [{entry['category']}] ({ports}) [{params}] -> ({outs})")
        if entry["doc"]:
            print(f"    {entry['doc'].splitlines()[0]}")
    return 0


class _Progress:
    """Draws one tqdm bar per sampling loop and a line per finished node, on stderr."""

    def __init__(self) -> None:
        from tqdm import tqdm

        self._tqdm = tqdm
        self._bars: dict[str, Any] = {}

    def __call__(self, event: dict[str, Any]) -> None:
        kind = event["type"]
        if kind == "progress":
            bar = self._bars.get(event["node"])
            if bar is None:
                bar = self._bars[event["node"]] = self._tqdm(total=event["total"], desc=event["node"], file=sys.stderr)
            bar.update(event["step"] - bar.n)  # tqdm redraws at most ten times a second
        elif kind == "node_finished":
            bar = self._bars.pop(event["node"], None)
            if bar is not None:
                bar.close()
            print(f"  done   {event['node']} ({event['node_type']}) {event['seconds']:.2f}s", file=sys.stderr)
        elif kind == "node_cached":
            print(f"  cached {event['node']} ({event['node_type']})", file=sys.stderr)
        elif kind in ("run_failed", "run_cancelled"):  # end a half-drawn bar before the message
            for bar in self._bars.values():
                bar.close()
            self._bars.clear()


def cmd_run(args: argparse.Namespace) -> int:
    try:
        check_device(args.device, args.dtype)
        overrides = dict(parse_override(text) for text in args.overrides)
    except ValueError as exc:
        return _report_invalid([Issue(None, "--device", str(exc))], args.json)
    except WorkflowError as exc:
        return _report_invalid(exc.issues, args.json)
    try:
        threads = ThreadPolicy.from_environment(os.environ)
    except ValueError as exc:
        return _report_invalid([Issue(None, "DIFFGRAPH_THREADS", str(exc))], args.json)
    try:
        plan = load_plan(args.workflow, _registry(), overrides)
    except WorkflowError as exc:
        return _report_invalid(exc.issues, args.json)

    disk = None
    if not args.no_cache:
        try:
            max_gb = float(os.environ.get("DIFFGRAPH_CACHE_MAX_GB", "20"))
        except ValueError:
            max_gb = -1.0
        if not max_gb >= 0:
            issue = Issue(None, "DIFFGRAPH_CACHE_MAX_GB", "must be a number of gigabytes, such as 20 or 0.5")
            return _report_invalid([issue], args.json)
        cache_dir = Path(args.cache_dir) if args.cache_dir else default_cache_dir()
        if cache_dir.exists() and not cache_dir.is_dir():
            return _report_invalid([Issue(None, "--cache-dir", f"{cache_dir} is not a directory")], args.json)
        disk = DiskCache(cache_dir, max_bytes=int(max_gb * 1024**3))
    executor = Executor(Cache(MemoryCache(), disk), threads=threads)
    cancel = CancelToken()
    outcome: dict[str, Any] = {}
    finished = threading.Event()

    def work() -> None:
        try:
            outcome["result"] = executor.run(plan, device=args.device, dtype=args.dtype,
                                             output_dir=Path(args.output_dir), cancel=cancel,
                                             on_event=None if args.json else _Progress())
        except Exception as exc:  # noqa: BLE001 - reported below as a failed run, not a traceback
            outcome["error"] = exc
        finally:
            finished.set()

    # the run works in a thread so that Ctrl+C reaches this one, which turns it into a cancel;
    # an Event, not Thread.join: an interrupted join can report a live thread as finished (3.11)
    threading.Thread(target=work, name="diffgraph-run", daemon=True).start()
    while not finished.is_set():
        try:
            finished.wait(0.2)
        except KeyboardInterrupt:
            if cancel.cancelled:  # a second Ctrl+C: stop waiting for the node to notice
                print("stopped", file=sys.stderr)
                return EXIT_CANCELLED
            cancel.cancel()
            print("cancelling...", file=sys.stderr)
    if "error" in outcome:
        message = f"{type(outcome['error']).__name__}: {outcome['error']}"
        if args.json:
            _print_json({"status": "failed", "error": message})
        print(f"run failed: {message}", file=sys.stderr)
        return EXIT_FAILED
    result = outcome["result"]
    if args.json:
        _print_json(result.to_json())
    elif result.status == "succeeded":
        for node_id, files in result.outputs.items():
            for path in files:
                print(f"{node_id}: {path}")
        for name, value in result.values.items():
            print(f"{name} = {value!r}")
        print(f"{len(result.executed)} executed, {len(result.cached)} cached", file=sys.stderr)
    elif result.status == "failed":
        print(f"run failed: {result.error}", file=sys.stderr)
    if result.status == "cancelled":
        if not args.json:
            print("run cancelled", file=sys.stderr)
        return EXIT_CANCELLED
    return 0 if result.status == "succeeded" else EXIT_FAILED


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        ThreadPolicy.from_environment(os.environ)  # the server's worker reads it the same way
    except ValueError as exc:
        print(f"diffgraph serve: {exc}", file=sys.stderr)
        return EXIT_INVALID
    try:
        from diffgraph.server.app import serve
    except ImportError as exc:
        print(f"the server is not available: {exc}", file=sys.stderr)
        return EXIT_FAILED
    return serve(args)


def main(argv: list[str] | None = None) -> int:
    for stream in (sys.stdout, sys.stderr):  # a message with a character the terminal lacks is no crash
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    args = _parser().parse_args(argv)
    handler = {"run": cmd_run, "validate": cmd_validate, "nodes": cmd_nodes, "serve": cmd_serve}[args.command]
    try:
        return handler(args)
    except KeyboardInterrupt:  # Ctrl+C outside a run (loading, validating): quietly, no traceback
        print("interrupted", file=sys.stderr)
        return EXIT_CANCELLED
    except BrokenPipeError:  # `diffgraph nodes | head`: the reader left, nothing more to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
