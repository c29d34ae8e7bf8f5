"""Running a shipped template in-process, for the node and semantic tests."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from diffgraph.engine import (
    Cache,
    CancelToken,
    Executor,
    MemoryCache,
    NodeRegistry,
    Plan,
    RunResult,
    compile_workflow,
    default_registry,
    read_document,
)

TEMPLATES = Path(__file__).resolve().parents[2] / "diffgraph" / "workflows"


@dataclass
class TemplateRun:
    result: RunResult
    executor: Executor
    plan: Plan

    def value(self, node_id: str, output: str) -> Any:
        """A node's output, read back from the run's result cache."""
        return self.executor.cached_outputs(self.plan, node_id)[output]


def template_plan(name: str, overrides: dict[str, Any], registry: NodeRegistry | None = None) -> Plan:
    """workflows/<name>.yaml planned with `overrides`."""
    return compile_workflow(read_document(TEMPLATES / f"{name}.yaml"), registry or default_registry(), overrides,
                            base=TEMPLATES)


def run_shipped_template(
    name: str,
    overrides: dict[str, Any],
    *,
    services: dict[str, Any],
    output_dir: Path,
    registry: NodeRegistry | None = None,
    expect: str = "succeeded",
    on_event=None,
) -> TemplateRun:
    """Run workflows/<name>.yaml with `overrides` on a fresh result cache (models shared through
    `services`); insist on the `expect`ed status."""
    return run_plan(template_plan(name, overrides, registry), services=services, output_dir=output_dir,
                    expect=expect, on_event=on_event)


def run_workflow_file(path: Path, overrides: dict[str, Any], *, services: dict[str, Any], output_dir: Path,
                      registry: NodeRegistry | None = None) -> TemplateRun:
    """Run the workflow document at `path` (its `workflow:` references resolved beside it, then
    among the templates) as run_shipped_template runs a template."""
    plan = compile_workflow(read_document(path), registry or default_registry(), overrides, base=path.parent)
    return run_plan(plan, services=services, output_dir=output_dir)


def run_plan(plan: Plan, *, services: dict[str, Any], output_dir: Path, expect: str = "succeeded",
             on_event=None, cancel: CancelToken | None = None) -> TemplateRun:
    executor = Executor(Cache(MemoryCache()), services=services)
    result = executor.run(plan, output_dir=output_dir, on_event=on_event, cancel=cancel)
    assert result.status == expect, result.error
    return TemplateRun(result, executor, plan)
