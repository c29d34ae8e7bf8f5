"""The executor: runs the nodes a plan needs whose keys miss the cache, in topological order.

Events (dicts with a "type") go to one callback; the CLI draws progress bars from them and the
server forwards them to WebSocket clients:
  run_started, node_cached, node_started, progress, node_stage, node_finished, node_failed,
  run_finished, run_failed, run_cancelled
(node_stage: a node's work that is not a sampling step, such as compiling the denoiser: `stage`, `message`)
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydantic

from .cache import Cache
from .errors import Cancelled, NodeError, RunFailed
from .node import CancelToken, RunContext, input_problem
from .options import RunOptions
from .plan import Plan, PlannedNode
from .threads import ThreadPolicy

log = logging.getLogger(__name__)

EventSink = Callable[[dict[str, Any]], None]
DEVICES = ("cpu", "cuda", "mps")
DTYPES = ("fp32", "fp16", "bf16")


@dataclass
class RunResult:
    run_id: str
    status: str  # succeeded | failed | cancelled
    executed: list[str] = field(default_factory=list)
    cached: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    #: node id -> files it wrote (outputs of type FILES)
    outputs: dict[str, list[str]] = field(default_factory=dict)
    #: the workflow's `outputs:` name -> value, for values that are plain JSON
    values: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    failed_node: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "status": self.status,
            "outputs": self.outputs,
            "values": self.values,
            "executed": self.executed,
            "cached": self.cached,
            "seconds": {k: round(v, 6) for k, v in self.seconds.items()},
            "error": self.error,
            "failed_node": self.failed_node,
        }


def check_device(device: str, dtype: str) -> None:
    """Reject device/dtype names we do not know; availability is the nodes' business."""
    if device.split(":", 1)[0] not in DEVICES:
        raise ValueError(f"device {device!r} is not one of {', '.join(DEVICES)} (optionally cuda:N)")
    if dtype not in DTYPES:
        raise ValueError(f"dtype {dtype!r} is not one of {', '.join(DTYPES)}")


class Executor:
    """Runs plans against a shared cache. Holds no global state; one instance per process is usual."""

    def __init__(self, cache: Cache | None = None, services: dict[str, Any] | None = None, variant: str = "",
                 threads: ThreadPolicy | None = None):
        self.cache = cache if cache is not None else Cache()
        self.services = services if services is not None else {}
        #: appended to every cache key: an executor whose nodes compute differently (a sweep's
        #: batch-invariant sampling) keeps its results apart from the others'
        self.variant = variant
        #: torch's CPU thread count, chosen before each run (None: leave it alone, as in tests)
        self.threads = threads

    def run(
        self,
        plan: Plan,
        *,
        targets: Iterable[str] | None = None,
        device: str = "cpu",
        dtype: str = "fp32",
        output_dir: str | Path = "outputs",
        cancel: CancelToken | None = None,
        on_event: EventSink | None = None,
        run_id: str | None = None,
        options: RunOptions | None = None,
    ) -> RunResult:
        check_device(device, dtype)
        options = options or RunOptions()
        if self.threads is not None:
            self.threads.apply()
        cancel = cancel or CancelToken()
        result = RunResult(run_id=run_id or uuid.uuid4().hex, status="running")
        emit = _emitter(on_event, result.run_id)
        wanted = list(targets) if targets is not None else plan.default_targets()
        unknown = [t for t in wanted if t not in plan.nodes]
        if unknown:
            raise ValueError(f"no such nodes to run: {', '.join(map(repr, unknown))}")
        emit("run_started", targets=wanted)

        output_dir = Path(output_dir)
        # the same graph in another dtype or on another kind of device computes other numbers
        variant = _variant(device, dtype) + options.cache_variant(device) + self.variant
        values, to_execute = self._resolve(plan, wanted, result, emit, output_dir, variant)
        remaining = {nid: 0 for nid in to_execute}
        for nid in to_execute:
            for source, _ in plan.nodes[nid].links.values():
                remaining[source] = remaining.get(source, 0) + 1
        keep = set(wanted)

        def progress(node_id: str, step: int, total: int, preview: Any = None) -> None:
            emit("progress", node=node_id, step=step, total=total, preview=preview)

        def stage(node_id: str, name: str, message: str) -> None:
            emit("node_stage", node=node_id, stage=name, message=message)

        produced: set[str] = set()  # keys computed in this run: an identical node later reads the cache
        #: non-deterministic nodes and everything downstream of them: never stored, so never served
        volatile: set[str] = set()
        try:
            for node_id in plan.order:
                if node_id not in to_execute:
                    continue
                cancel.check()
                node = plan.nodes[node_id]
                key = node.key + variant
                hit = self.cache.get(key, node.spec) if key in produced else None
                if hit is not None:
                    values[node_id] = hit
                    result.cached.append(node_id)
                    emit("node_cached", node=node_id, node_type=node.type)
                else:
                    ctx = RunContext(node_id=node_id, device=device, dtype=dtype, output_dir=output_dir,
                                     cancel=cancel, workflow=plan.document, template_params=plan.template_params,
                                     services=self.services, access=plan.access,
                                     # nobody listens: the nodes then skip their step previews
                                     on_progress=progress if on_event is not None else None,
                                     options=options, on_stage=stage)
                    emit("node_started", node=node_id, node_type=node.type)
                    started = time.perf_counter()
                    outputs = self._execute(plan, node, values, ctx)
                    result.seconds[node_id] = time.perf_counter() - started
                    if not node.spec.deterministic or (volatile and any(src in volatile for src, _ in
                                                                          node.links.values())):
                        volatile.add(node_id)
                    else:
                        self.cache.put(key, node.spec, outputs)
                        produced.add(key)
                    values[node_id] = outputs
                    result.executed.append(node_id)
                    emit("node_finished", node=node_id, node_type=node.type, seconds=result.seconds[node_id])
                for source, _ in node.links.values():  # free what nothing downstream needs any more
                    remaining[source] -= 1
                    if remaining[source] == 0 and source not in keep:
                        values.pop(source, None)
        except Cancelled:
            result.status = "cancelled"
            emit("run_cancelled")
            return result
        except RunFailed as failure:
            result.status = "failed"
            result.error = str(failure)
            result.failed_node = failure.node
            emit("node_failed", node=failure.node, node_type=failure.node_type, error=failure.message,
                 field=failure.field)
            emit("run_failed", error=result.error, node=failure.node)
            return result

        result.status = "succeeded"
        self._collect_outputs(plan, wanted, values, result)
        emit("run_finished", executed=result.executed, cached=result.cached, outputs=result.outputs)
        return result

    def cached_outputs(self, plan: Plan, node_id: str, *, device: str = "cpu", dtype: str = "fp32") -> dict | None:
        """The outputs a run on `device`/`dtype` stored for `node_id`, or None when not cached."""
        node = plan.nodes[node_id]
        outputs = self.cache.get(node.key + _variant(device, dtype) + self.variant, node.spec)
        if outputs is None:
            return None
        return {name: port.port_type.materialize(outputs[name]) for name, port in node.spec.outputs.items()}

    def store_outputs(self, plan: Plan, node_id: str, outputs: dict[str, Any], *, device: str = "cpu",
                      dtype: str = "fp32") -> None:
        """Cache `outputs` as what `node_id` of `plan` computes on `device`/`dtype`, so that a run of
        the plan takes them from there (a sweep computes one node for several plans at once)."""
        node = plan.nodes[node_id]
        self.cache.put(node.key + _variant(device, dtype) + self.variant, node.spec, outputs)

    def _resolve(
        self,
        plan: Plan,
        wanted: list[str],
        result: RunResult,
        emit: Callable[..., None],
        output_dir: Path,
        variant: str,
    ) -> tuple[dict[str, dict[str, Any]], set[str]]:
        """Walk back from the targets: a hit stops the walk, a miss needs its inputs too."""
        needed = set(wanted)
        values: dict[str, dict[str, Any]] = {}
        to_execute: set[str] = set()
        cached: list[str] = []
        for node_id in reversed(plan.order):
            if node_id not in needed:
                continue
            node = plan.nodes[node_id]
            hit = self.cache.get(node.key + variant, node.spec) if node.spec.deterministic else None
            if hit is not None and not _files_still_there(node, hit, output_dir):
                hit = None
            if hit is not None:
                values[node_id] = hit
                cached.append(node_id)
            else:
                to_execute.add(node_id)
                needed.update(source for source, _ in node.links.values())
        cached.reverse()
        result.cached = cached
        for node_id in cached:
            emit("node_cached", node=node_id, node_type=plan.nodes[node_id].type)
        return values, to_execute

    @staticmethod
    def _execute(plan: Plan, node: PlannedNode, values: dict[str, dict[str, Any]], ctx: RunContext) -> dict[str, Any]:
        spec = node.spec
        arguments = dict(node.params)
        for port, (source, output) in node.links.items():
            value = values[source][output]
            declared = spec.inputs.get(port)
            if declared is None or not declared.stored_form:  # as the source's type computes on it
                value = plan.nodes[source].spec.outputs[output].port_type.materialize(value)
            problem = input_problem(declared, value) if declared is not None else None
            if problem is not None:  # the node boundary: never run a node on a value it does not take
                raise RunFailed(node.id, node.type, ctx.access.redact(f"{problem} from {source}.{output}"), port)
            arguments[port] = value
        for name in spec.inputs:
            arguments.setdefault(name, None)
        linked_params = [p for p in node.links if p in spec.params]
        if linked_params:
            try:  # values that arrive through links meet the same bounds as literals
                checked = spec.params_model.model_validate({k: arguments[k] for k in spec.params if k in arguments})
            except pydantic.ValidationError as exc:
                error = exc.errors(include_url=False)[0]
                field_name = str(error["loc"][0]) if error["loc"] else None
                raise RunFailed(node.id, node.type, error["msg"], field_name) from None
            # linked values as validated; params left at their defaults get them too (planning
            # could not fill them in while a linked required param was still missing)
            arguments.update({p: getattr(checked, p) for p in spec.params if p in linked_params or p not in arguments})
        instance = spec.cls.instantiate(arguments)
        try:
            outputs = instance.run(ctx)
        except (Cancelled, RunFailed):
            raise
        except NodeError as exc:
            raise RunFailed(node.id, node.type, ctx.access.redact(str(exc)), exc.field) from None
        except Exception as exc:  # noqa: BLE001 - a node's own bug still fails only this run
            log.debug("node %s failed", node.id, exc_info=True)
            raise RunFailed(node.id, node.type, ctx.access.redact(f"{type(exc).__name__}: {exc}")) from None
        if not isinstance(outputs, dict) or not spec.outputs.keys() <= outputs.keys():
            missing = [n for n in spec.outputs if not isinstance(outputs, dict) or n not in outputs]
            raise RunFailed(node.id, node.type, f"returned no value for outputs {missing}")
        return outputs

    @staticmethod
    def _collect_outputs(plan: Plan, wanted: list[str], values: dict[str, dict[str, Any]], result: RunResult) -> None:
        for node_id in wanted:
            node = plan.nodes[node_id]
            files = [
                path
                for name, port in node.spec.outputs.items()
                if port.port_type.name == "FILES"
                for path in values.get(node_id, {}).get(name) or []
            ]
            if files:
                result.outputs[node_id] = files
        for name, (node_id, output) in plan.outputs.items():
            value = values.get(node_id, {}).get(output)
            if value is None or isinstance(value, (int, float, str, bool, list)):
                result.values[name] = value


def _variant(device: str, dtype: str) -> str:
    return f"-{dtype}-{device.split(':', 1)[0]}"


def _files_still_there(node: PlannedNode, outputs: dict[str, Any], output_dir: Path) -> bool:
    """A cached FILES output counts only while its files exist in this run's output folder
    (deleted outputs, or another --output-dir, mean the node must write them again)."""
    root: Path | None = None
    for name, port in node.spec.outputs.items():
        if port.port_type.name != "FILES":
            continue
        root = root or output_dir.resolve()
        for path in outputs.get(name) or []:
            resolved = Path(path).resolve()
            if not resolved.is_file() or not resolved.is_relative_to(root):
                return False
    return True


def _emitter(on_event: EventSink | None, run_id: str) -> Callable[..., None]:
    if on_event is None:
        return lambda kind, **data: None

    def emit(kind: str, **data: Any) -> None:
        on_event({"type": kind, "run_id": run_id, **data})

    return emit
