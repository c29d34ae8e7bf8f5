"""Fixtures shared by the engine tests: the test node pack, a CLI runner, an in-process registry."""

from __future__ import annotations

from pathlib import Path

import pytest
from support import testnodes
from support.nodepack import Cli, write_node_pack

from diffgraph.engine import NodeRegistry
from diffgraph.nodes import primitives


@pytest.fixture(scope="session")
def node_pack_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding `mypack` and its dist-info: put it on PYTHONPATH to install the pack."""
    return write_node_pack(tmp_path_factory.mktemp("site"))


@pytest.fixture
def cli(node_pack_dir: Path, tmp_path: Path) -> Cli:
    """`diffgraph` subprocesses run in `tmp_path` with the test node pack installed."""
    return Cli(node_pack_dir, tmp_path)


@pytest.fixture
def registry() -> NodeRegistry:
    """The primitives plus the test nodes, in-process."""
    registry = NodeRegistry()
    registry.add(*primitives.NODES, *testnodes.NODES)
    return registry
