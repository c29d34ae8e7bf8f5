"""The `diffgraph` command: run, validate, nodes, serve.

Exit codes: 0 success, 1 the run failed, 2 the workflow or the command line is invalid,
130 cancelled (Ctrl+C).
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import sys
import threading
from pathlib import Path
from typing import Any

from diffgraph import __version__
from diffgraph.engine import (
    DEFAULT_MAX_IMAGE_PIXELS,
    Cache,
    CancelToken,
    DiskCache,
    Executor,
    FileAccess,
    Issue,
    MemoryCache,
    OptionError,
    Plan,
    RunOptions,
    WorkflowError,
    compile_workflow,
    default_registry,
    load_plan,
    parse_override,
)
from diffgraph.engine.executor import DTYPES, check_device
from diffgraph.engine.options import vram_budget_gb
from diffgraph.engine.plan import templates_dir
from diffgraph.nodes.devices import device_problem
from diffgraph.settings import Settings, SettingsError

EXIT_FAILED, EXIT_INVALID, EXIT_CANCELLED = 1, 2, 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="diffgraph", description="Node-graph workflows for diffusion models.")
    parser.add_argument("--version", action="version", version=f"diffgraph {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="run a workflow file headless")
    run.add_argument("workflow", help="a workflow file (.yaml, .yml or .json), or the name of a saved "
                                      "workflow or a shipped template (txt2img)")
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="NAME=VALUE",
                     help="set a template param (typed by its declaration); repeatable")
    run.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or mps (default cpu)")
    run.add_argument("--dtype", default="fp32", choices=DTYPES, help="default fp32")
    run.add_argument("--output-dir", default="outputs", help="where output nodes write files (default ./outputs)")
    cache = run.add_mutually_exclusive_group()
    cache.add_argument("--cache-dir", help="disk cache folder (default $XDG_CACHE_HOME/diffgraph, "
                                           "i.e. ~/.cache/diffgraph)")
    cache.add_argument("--no-cache", action="store_true", help="use no disk cache")
    run.add_argument("--json", action="store_true", help="print one JSON summary instead of progress")
    from diffgraph.sweep_command import add_sweep_options

    add_sweep_options(run)
    run.add_argument("--max-image-pixels", type=_pixels, default=DEFAULT_MAX_IMAGE_PIXELS, metavar="N",
                     help=f"the largest picture LoadImage decodes (default {DEFAULT_MAX_IMAGE_PIXELS} = 4096x4096)")
    _add_speed_options(run)

    validate = commands.add_parser("validate", help="check a workflow without running it")
    validate.add_argument("workflow", help="a workflow file, or a saved workflow's or template's name")
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
    serve.add_argument("--keep-previews", type=_non_negative_int, default=500, metavar="N",
                       help="keep the newest N PreviewImage files in outputs/previews (and at most 512 MB); "
                            "older ones are deleted (default 500)")
    serve.add_argument("--backend", choices=("local", "ray"), default="local",
                       help="ray: run the queue on the Ray cluster at --address instead of in this process")
    serve.add_argument("--address", default=None, help="a Ray cluster's address (default: start a local one)")
    serve.add_argument("--cpus-per-worker", type=float, default=1.0, help="CPUs per Ray worker (default 1)")
    serve.add_argument("--model-dir", action="append", default=[], metavar="DIR",
                       help="a folder of models that workflows may name (besides the bundled models, "
                            "<data dir>/models and the Hugging Face cache); repeatable")
    serve.add_argument("--allow-downloads", action="store_true",
                       help="let workflows download Hugging Face repos missing from the hub cache "
                            "(off: only what is already in the cache)")
    serve.add_argument("--max-image-pixels", type=_pixels, default=DEFAULT_MAX_IMAGE_PIXELS, metavar="N",
                       help=f"the largest picture uploaded or loaded (default {DEFAULT_MAX_IMAGE_PIXELS} = 4096x4096)")
    _add_speed_options(serve, "every run's default (a request's options may say otherwise)")
    comfy = commands.add_parser("import", help="convert a ComfyUI workflow (API or UI format) into a workflow file")
    comfy.add_argument("file", help="a ComfyUI workflow .json: the API format or the editor's saved format")
    comfy.add_argument("-o", "--output", default=None, help="the workflow file to write (default: print YAML)")
    return parser


def _add_speed_options(command: argparse.ArgumentParser, default: str = "") -> None:
    """--compile and --vram-budget (DESIGN.md, "Speed and memory options"); off by default."""
    suffix = f"; {default}" if default else ""
    command.add_argument("--compile", action="store_true",
                         help="torch.compile the denoiser (its repeated blocks; static shapes, CUDA graphs on CUDA); "
                              f"the first run of each size compiles, later ones in the process reuse it{suffix}")
    command.add_argument("--vram-budget", type=_vram_budget, default=None, metavar="GB",
                         help="CUDA: keep the GPU's peak memory under GB gibibytes by offloading what does not fit "
                              f"(no effect on the CPU){suffix}")


def _vram_budget(text: str) -> float:
    try:
        return vram_budget_gb(text)
    except OptionError as exc:
        raise argparse.ArgumentTypeError(exc.message) from None


def _run_options(args: argparse.Namespace) -> RunOptions:
    """The run's speed and memory options, parsed once; a budget on the CPU is said to do nothing."""
    options = RunOptions(compile=args.compile, vram_budget_gb=args.vram_budget)
    if (note := options.budget_note(args.device)) is not None:
        print(note, file=sys.stderr)
    return options


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text} is negative; give 0 or more")
    return value


def _pixels(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number of pixels (such as 16777216 for 4096x4096)")
    return value


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


def _load_plan(workflow: str, settings: Settings, overrides: dict[str, Any] | None = None,
               access: FileAccess | None = None) -> Plan:
    """A workflow file, or by name (no suffix, no folder): NAME.yaml/.yml/.json here, else a workflow
    saved in the server's library (the default data dir), else a shipped template."""
    path = Path(workflow)
    if path.exists() or path.suffix or "/" in workflow or os.sep in workflow:
        return load_plan(path, _registry(), overrides, access)
    for local in (path.with_suffix(suffix) for suffix in (".yaml", ".yml", ".json")):
        if local.is_file():
            return load_plan(local, _registry(), overrides, access)
    from diffgraph.server.store import read_saved_workflow

    library = settings.data_dir / "diffgraph.db"
    saved = read_saved_workflow(library, workflow)
    if saved is not None:
        return compile_workflow(saved, _registry(), overrides, base=Path.cwd(), access=access)
    template = templates_dir() / f"{workflow}.yaml"
    if template.is_file():
        return load_plan(template, _registry(), overrides, access)
    names = ", ".join(sorted(p.stem for p in templates_dir().glob("*.yaml")))
    raise WorkflowError([Issue(None, None, (
        f"no workflow {workflow!r}: no such file (nor {workflow}.yaml, .yml or .json here), no saved workflow "
        f"of that name in {library}, and no such template (the templates: {names})"))])


def cmd_validate(args: argparse.Namespace, settings: Settings) -> int:
    try:
        plan = _load_plan(args.workflow, settings)
    except WorkflowError as exc:
        return _report_invalid(exc.issues, args.json)
    if args.json:
        _print_json({"valid": True, "errors": [], "nodes": len(plan.nodes)})
    else:
        print(f"{args.workflow}: valid ({len(plan.nodes)} nodes)")
    return 0


def cmd_nodes(args: argparse.Namespace, settings: Settings) -> int:
    catalog = _registry().catalog()
    if args.json:
        _print_json(catalog, indent=2)
        return 0
    for number, entry in enumerate(catalog):
        if number:
            print()
        for line in _describe_node(entry):
            print(line)
    return 0


def _describe_node(entry: dict[str, Any]) -> list[str]:
    """A node for `diffgraph nodes`: its signature (optional inputs marked `?`), its whole doc, and a line
    per input, param and output with its type, default, bounds or choices and doc."""
    ports = ", ".join(f"{p['name']}{'?' if p['optional'] else ''}: {p['type']}" for p in entry["inputs"])
    params = ", ".join(f"{p['name']}={p['default']!r}" for p in entry["params"])
    outs = ", ".join(f"{p['name']}: {p['type']}" for p in entry["outputs"])
    lines = [f"{entry['type']} [{entry['category']}] ({ports}) [{params}] -> ({outs})"]
    lines += [f"    {line}".rstrip() for line in inspect.cleandoc(entry["doc"] or "").splitlines()]

    def described(head: str, doc: str) -> str:
        return f"      {head}: {doc}" if doc else f"      {head}"

    if entry["inputs"]:
        lines.append("    inputs:")
        for port in entry["inputs"]:
            optional = " (optional)" if port["optional"] else ""
            lines.append(described(f"{port['name']}: {port['type']}{optional}", port["doc"]))
    if entry["params"]:
        lines.append("    params:")
        for param in entry["params"]:
            facts = ["required" if param["required"] else f"default {param['default']!r}"]
            if param["min"] is not None or param["max"] is not None:
                low = "" if param["min"] is None else repr(param["min"])
                high = "" if param["max"] is None else repr(param["max"])
                facts.append(f"{low}..{high}")
            if param["step"] is not None:
                facts.append(f"step {param['step']!r}")
            if param["choices"]:
                facts.append("one of " + ", ".join(map(str, param["choices"])))
            head = f"{param['name']}: {param['type']} ({', '.join(facts)})"
            lines.append(described(head, param["doc"]))
    lines.append("    outputs:")
    for port in entry["outputs"]:
        lines.append(described(f"{port['name']}: {port['type']}", port["doc"]))
    return lines


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
        elif kind == "node_stage":  # compiling the denoiser: a line, not a silent pause
            print(f"  {event['stage']:<6} {event['node']}: {event['message']}", file=sys.stderr, flush=True)
        elif kind in ("run_failed", "run_cancelled"):  # end a half-drawn bar before the message
            for bar in self._bars.values():
                bar.close()
            self._bars.clear()


def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    try:
        check_device(args.device, args.dtype)
        overrides = dict(parse_override(text) for text in args.overrides)
    except ValueError as exc:
        return _report_invalid([Issue(None, "--device", str(exc))], args.json)
    except WorkflowError as exc:
        return _report_invalid(exc.issues, args.json)
    if problem := device_problem(args.device):
        return _report_invalid([Issue(None, "--device", problem)], args.json)
    try:
        plan = _load_plan(args.workflow, settings, overrides, FileAccess(max_image_pixels=args.max_image_pixels))
    except WorkflowError as exc:
        return _report_invalid(exc.issues, args.json)

    disk = None
    if not args.no_cache:
        cache_dir = Path(args.cache_dir) if args.cache_dir else settings.cache_dir
        if cache_dir.exists() and not cache_dir.is_dir():
            return _report_invalid([Issue(None, "--cache-dir", f"{cache_dir} is not a directory")], args.json)
        disk = DiskCache(cache_dir, max_bytes=settings.cache_max_bytes)
    executor = Executor(Cache(MemoryCache(), disk), services={"settings": settings}, threads=settings.threads)
    if args.sweep and (args.compile or args.vram_budget is not None):
        flag = "--compile" if args.compile else "--vram-budget"
        return _report_invalid([Issue(None, flag, f"{flag} does not apply to --sweep yet (sweeps sample "
                                                  "batch-invariantly, eager); drop one of them")], args.json)
    options = _run_options(args)
    if args.sweep:
        from diffgraph.sweep_command import run_sweep_command

        return run_sweep_command(args, executor, overrides)
    cancel = CancelToken()
    outcome: dict[str, Any] = {}
    finished = threading.Event()

    def work() -> None:
        try:
            outcome["result"] = executor.run(plan, device=args.device, dtype=args.dtype,
                                             output_dir=Path(args.output_dir), cancel=cancel,
                                             on_event=None if args.json else _Progress(), options=options)
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


def cmd_import(args: argparse.Namespace, settings: Settings) -> int:
    """`diffgraph import FILE [-o OUT]`: exit 0 written, 2 when something cannot be converted (each named)."""
    from diffgraph.comfy_import import MAX_FILE_BYTES, ComfyError, import_file
    from diffgraph.engine.document import dump_document, guess_format
    from diffgraph.nodes.sampling import scheduler_overrides

    path = Path(args.file)
    if not path.is_file() or path.stat().st_size > MAX_FILE_BYTES:
        print(f"{args.file}: not a regular file of at most {MAX_FILE_BYTES} bytes", file=sys.stderr)
        return EXIT_INVALID
    models = Path(__file__).resolve().parent / "models"
    bundled = {p.name: f"models/{p.name}" for p in models.iterdir() if (p / "model_index.json").is_file()}

    def check_sampler(name: str, sigmas: str, spacing: str) -> str | None:
        try:
            scheduler_overrides(name, sigmas, spacing)
        except ValueError as exc:
            return str(exc)
        return None

    try:
        document = import_file(path.read_text(encoding="utf-8", errors="replace"), bundled, check_sampler,
                               name=path.stem)
    except ComfyError as exc:
        print(f"{args.file}: cannot convert:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return EXIT_INVALID
    fmt = guess_format(args.output) if args.output else "yaml"
    text = dump_document(document, fmt)
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
        print(f"wrote {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    if problem := device_problem(args.device):
        print(f"invalid --device: {problem}", file=sys.stderr)
        return EXIT_INVALID
    try:
        from diffgraph.server.app import serve
    except ImportError as exc:
        print(f"the server is not available: {exc}", file=sys.stderr)
        return EXIT_FAILED
    return serve(args, settings)


def main(argv: list[str] | None = None) -> int:
    for stream in (sys.stdout, sys.stderr):  # a message with a character the terminal lacks is no crash
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    args = _parser().parse_args(argv)
    handler = {"run": cmd_run, "validate": cmd_validate, "nodes": cmd_nodes, "serve": cmd_serve,
               "import": cmd_import}[args.command]
    try:
        settings = Settings.from_environ()  # the one place the environment is read
    except SettingsError as exc:
        issues = [Issue(None, name, message) for name, message in exc.problems]
        return _report_invalid(issues, getattr(args, "json", False))
    try:
        return handler(args, settings)
    except KeyboardInterrupt:  # Ctrl+C outside a run (loading, validating): quietly, no traceback
        print("interrupted", file=sys.stderr)
        return EXIT_CANCELLED
    except BrokenPipeError:  # `diffgraph nodes | head`: the reader left, nothing more to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
