"""Semantic tests: the shipped templates with the bundled models (diffgraph/models), judged by what the
pictures show. Run with `-s` to see the measured rates."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
from support.templates import TemplateRun, run_shipped_template, run_workflow_file

from diffgraph.engine import default_registry

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tools"))  # the scene renderer and palette the models were trained on


@pytest.fixture(scope="session")
def services() -> dict[str, Any]:
    """One model cache for the whole session: the bundled models load once."""
    return {}


@pytest.fixture(scope="session")
def registry():
    return default_registry()


@pytest.fixture
def run_template(services: dict[str, Any], registry, tmp_path: Path):
    """Run a shipped template as it is (its default models), with some params overridden."""

    def run(name: str, **overrides: Any) -> TemplateRun:
        return run_shipped_template(name, overrides, services=services, output_dir=tmp_path / "out",
                                    registry=registry)

    return run


@pytest.fixture
def run_workflow(services: dict[str, Any], registry, tmp_path: Path):
    """Run a workflow document written by the test (it may use the templates as subgraphs)."""

    def run(path: Path, **overrides: Any) -> TemplateRun:
        return run_workflow_file(path, overrides, services=services, output_dir=tmp_path / "out", registry=registry)

    return run
