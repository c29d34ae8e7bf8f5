"""Semantic tests: the shipped templates with the bundled models (diffgraph/models), judged by what the
pictures show. Run with `-s` to see the measured rates."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from diffgraph.engine import (
    Cache,
    Executor,
    MemoryCache,
    RunResult,
    compile_workflow,
    default_registry,
    read_document,
)

REPO = Path(__file__).resolve().parents[2]
TEMPLATES = REPO / "diffgraph" / "workflows"
sys.path.insert(0, str(REPO / "tools"))  # the scene renderer and palette the models were trained on


@pytest.fixture(scope="session")
def services() -> dict[str, Any]:
    """One model cache for the whole session: the bundled models load once."""
    return {}


@pytest.fixture(scope="session")
def registry():
    return default_registry()


@dataclass
class TemplateRun:
    result: RunResult
    executor: Executor
    plan: Any

    def value(self, node_id: str, output: str) -> Any:
        """A node's output, read back from the run's memory cache."""
        return self.executor.cached_outputs(self.plan, node_id)[output]


@pytest.fixture
def run_template(services: dict[str, Any], registry, tmp_path: Path):
    """Run a shipped template as it is (its default models), with some params overridden."""

    def run(name: str, **overrides: Any) -> TemplateRun:
        plan = compile_workflow(read_document(TEMPLATES / f"{name}.yaml"), registry, overrides, base=TEMPLATES)
        executor = Executor(Cache(MemoryCache()), services=services)
        result = executor.run(plan, output_dir=tmp_path / "out")
        assert result.status == "succeeded", result.error
        return TemplateRun(result, executor, plan)

    return run
