"""Errors a user can cause, each naming the node id and the field."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Issue:
    """One problem found in a workflow. `node` is None for document-level problems."""

    node: str | None
    field: str | None
    message: str

    def __str__(self) -> str:
        where = []
        if self.node is not None:
            where.append(f"node {self.node!r}")
        if self.field is not None:
            where.append(f"field {self.field!r}")
        return f"{', '.join(where)}: {self.message}" if where else self.message

    def to_dict(self) -> dict[str, str | None]:
        return asdict(self)


class WorkflowError(Exception):
    """A workflow that cannot run; carries every problem found, not just the first."""

    def __init__(self, issues: list[Issue]):
        self.issues = list(issues)
        super().__init__("\n".join(str(i) for i in self.issues))


class NodeError(Exception):
    """Raised by a node for a problem the user caused (bad path, bad image); names the field."""

    def __init__(self, message: str, field: str | None = None):
        self.field = field
        super().__init__(message)


class Cancelled(Exception):
    """The run was cancelled; raised from `CancelToken.check()` between nodes and steps."""


class RunFailed(Exception):
    """A node failed; the run stops, what was computed before stays cached."""

    def __init__(self, node: str, node_type: str, message: str, field: str | None = None):
        self.node = node
        self.node_type = node_type
        self.field = field
        self.message = message
        where = f"node {node!r} ({node_type})" + (f", field {field!r}" if field else "")
        super().__init__(f"{where}: {message}")
