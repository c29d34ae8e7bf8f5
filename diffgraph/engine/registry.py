"""The registry of node types. Node packs (ours included) register through the
`diffgraph.nodes` entry-point group: the entry point names a callable `register(registry)`."""

from __future__ import annotations

from collections.abc import Iterable
from importlib.metadata import entry_points
from typing import Any

from .node import Node, NodeSpec

ENTRY_POINT_GROUP = "diffgraph.nodes"


class NodeRegistry:
    def __init__(self) -> None:
        self._specs: dict[str, NodeSpec] = {}
        #: problems met while loading node packs (a broken pack must not take the others down)
        self.load_errors: list[str] = []

    def add(self, *classes: type[Node]) -> None:
        for cls in classes:
            spec = getattr(cls, "__node_spec__", None)
            if spec is None or spec.cls is not cls:
                raise TypeError(f"{cls.__name__} is not decorated with @node")
            existing = self._specs.get(spec.type_name)
            if existing is not None and existing.cls is not cls:
                raise ValueError(f"node type {spec.type_name!r} is registered twice")
            self._specs[spec.type_name] = spec

    def get(self, type_name: str) -> NodeSpec | None:
        return self._specs.get(type_name)

    def __contains__(self, type_name: object) -> bool:
        return type_name in self._specs

    def __iter__(self):
        return iter(self._specs.values())

    def __len__(self) -> int:
        return len(self._specs)

    def names(self) -> list[str]:
        return sorted(self._specs)

    def catalog(self) -> list[dict[str, Any]]:
        return [self._specs[name].to_json() for name in self.names()]

    def load_entry_points(self, group: str = ENTRY_POINT_GROUP) -> None:
        for entry_point in entry_points(group=group):
            try:
                register = entry_point.load()
                register(self)
            except Exception as exc:  # noqa: BLE001 - report the broken pack, keep the others
                self.load_errors.append(f"node pack {entry_point.name!r} ({entry_point.value}): {exc}")


def default_registry(extra: Iterable[type[Node]] = ()) -> NodeRegistry:
    """A registry holding every installed node pack, plus `extra` classes."""
    registry = NodeRegistry()
    registry.load_entry_points()
    registry.add(*extra)
    return registry
