"""From a workflow document to a runnable plan: template params, subgraphs, validation,
topological order and Merkle cache keys. Every problem is collected before anything runs."""

from __future__ import annotations

import difflib
import hashlib
import os
import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import networkx as nx
import pydantic

from .access import FileAccess
from .document import gc_paused, read_document
from .errors import Issue, NodeError, WorkflowError
from .node import INT_MAX, INT_MIN, Node, NodeSpec
from .registry import NodeRegistry
from .types import TEMPLATE_PARAM_TYPES

FORMAT = "diffgraph/v1"
TOP_LEVEL_KEYS = ("format", "name", "description", "params", "nodes", "outputs", "metadata")
NODE_KEYS = ("type", "inputs", "params", "metadata")
TEMPLATE_PARAM_KEYS = ("type", "default", "min", "max", "choices", "description")
SUBGRAPH_PREFIX = "workflow:"
#: subgraph instances one plan may expand (two inclusions per level, 25 levels deep is 33 million)
MAX_SUBGRAPHS = 10_000
#: subgraph inner ids are "outer/inner"; user ids may not contain these
RESERVED_ID_CHARS = "./$"
_BAD_ID = re.compile(r"[./$]|^\s|\s$")
_NODE_KEY_SET = frozenset(NODE_KEYS)

#: resolves `workflow:<ref>` seen in the file at `base` to (document, resolved path)
SubgraphResolver = Callable[[str, "Path | None"], "tuple[dict[str, Any], Path]"]


_UNSET: dict[str, Any] = {}  # replaced by the validated params of every node


@dataclass(slots=True)
class PlannedNode:
    id: str
    type: str
    spec: NodeSpec
    #: validated literal params, defaults filled in
    params: dict[str, Any]
    #: port or param -> (source node id, source output)
    links: dict[str, tuple[str, str]]
    key: str = ""


@dataclass
class Plan:
    """A validated, flattened workflow ready for the executor."""

    document: dict[str, Any]
    template_params: dict[str, Any]
    nodes: dict[str, PlannedNode]
    order: list[str]
    #: workflow `outputs:` name -> (node id, output)
    outputs: dict[str, tuple[str, str]]
    #: where its file and model params may point, checked when planning and again when running
    access: FileAccess = field(default_factory=FileAccess)

    def default_targets(self) -> list[str]:
        """Nodes a run computes when no outputs are named: output nodes, `outputs:`, else every sink."""
        targets = {nid for nid, n in self.nodes.items() if n.spec.output_node}
        targets.update(node_id for node_id, _ in self.outputs.values())
        if not targets:
            fed = {source for node in self.nodes.values() for source, _ in node.links.values()}
            targets = {nid for nid in self.nodes if nid not in fed}
        return [nid for nid in self.order if nid in targets]


# ---------------------------------------------------------------------------------------------
# template params


def parse_override(text: str) -> tuple[str, str]:
    """`name=value` from `--set`; the value is typed later against the declared param."""
    name, sep, value = text.partition("=")
    if not sep or not name.strip():
        raise WorkflowError([Issue(None, "--set", f"{text!r} is not NAME=VALUE")])
    return name.strip(), value


def _coerce_template_value(name: str, declared: str, value: Any) -> Any:
    """Type a template value; strings from the command line are parsed, others checked."""
    python_type = TEMPLATE_PARAM_TYPES[declared]
    if isinstance(value, str) and python_type is not str:
        text = value.strip()
        try:
            if python_type is bool:
                lowered = text.lower()
                if lowered in ("true", "1", "yes", "on"):
                    return True
                if lowered in ("false", "0", "no", "off"):
                    return False
                raise ValueError
            if python_type is int:
                return int(text)
            parsed = float(text)
            if parsed != parsed or parsed in (float("inf"), float("-inf")):
                raise ValueError
            return parsed
        except ValueError:
            raise ValueError(f"{value!r} is not a valid {declared}") from None
    if python_type is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if type(value) is not python_type:
        raise ValueError(f"{value!r} is not a valid {declared}")
    return value


def resolve_template_params(
    document: Mapping[str, Any],
    overrides: Mapping[str, Any],
    issues: list[Issue],
    node: str | None = None,
    linked: Collection[str] = (),
) -> tuple[dict[str, Any], dict[str, str]]:
    """Template param values (defaults, then overrides) and their declared types."""
    declared = document.get("params") or {}
    values: dict[str, Any] = {}
    types: dict[str, str] = {}
    if not isinstance(declared, dict):
        issues.append(Issue(node, "params", "template params are a mapping of name -> {type, default}"))
        declared = {}
    for name, decl in declared.items():
        where = f"params.{name}" if node is None else name
        if not isinstance(decl, dict):
            issues.append(Issue(node, where, "a template param is a mapping {type, default, min, max}"))
            continue
        unknown = [k for k in decl if k not in TEMPLATE_PARAM_KEYS]
        if unknown:
            issues.append(Issue(node, where, f"unknown keys {unknown}; valid: {list(TEMPLATE_PARAM_KEYS)}"))
        type_name = decl.get("type")
        if not isinstance(type_name, str) or type_name not in TEMPLATE_PARAM_TYPES:
            issues.append(Issue(node, where, f"type {type_name!r} is not one of {list(TEMPLATE_PARAM_TYPES)}"))
            continue
        types[name] = type_name
        if name in linked:
            continue
        raw = overrides[name] if name in overrides else decl.get("default")
        if raw is None:
            issues.append(Issue(node, where, "has no default and no value was given"))
            continue
        try:
            value = _coerce_template_value(name, type_name, raw)
            _check_template_bounds(decl, value)
        except ValueError as exc:
            issues.append(Issue(node, where, str(exc)))
            continue
        values[name] = value
    for name in overrides:
        if name not in declared:
            known = ", ".join(declared) or "none"
            issues.append(Issue(node, f"params.{name}" if node is None else name,
                                f"unknown template param {name!r}; this workflow's params: {known}"))
    return values, types


def _check_template_bounds(decl: Mapping[str, Any], value: Any) -> None:
    for bound in ("min", "max"):
        limit = decl.get(bound)
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, (int, float))):
            raise ValueError(f"{bound} must be a number, got {limit!r}")
    choices = decl.get("choices")
    if choices is not None and not isinstance(choices, list):
        raise ValueError(f"choices must be a list, got {choices!r}")
    if choices is not None and value not in choices:
        raise ValueError(f"{value!r} is not one of {choices}")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return
    low, high = decl.get("min"), decl.get("max")
    if isinstance(value, int) and not (INT_MIN <= value <= INT_MAX):
        raise ValueError(f"{value} does not fit in 64 bits")
    if low is not None and value < low:
        raise ValueError(f"{value} is below the minimum {low}")
    if high is not None and value > high:
        raise ValueError(f"{value} is above the maximum {high}")


# ---------------------------------------------------------------------------------------------
# subgraphs


def templates_dir() -> Path:
    """The shipped templates (diffgraph/workflows, also reachable as ./workflows in a checkout)."""
    return Path(__file__).resolve().parent.parent / "workflows"


def default_resolver(ref: str, base: Path | None) -> tuple[dict[str, Any], Path]:
    """`workflow:<path>` relative to the including file, or `workflow:<name>` among the templates."""
    roots = [base] if base is not None else [Path.cwd()]
    candidates: list[Path] = []
    for root in roots:
        candidates.append(root / ref)
        if not Path(ref).suffix:
            candidates += [root / f"{ref}.yaml", root / f"{ref}.yml", root / f"{ref}.json"]
    if not Path(ref).suffix and "/" not in ref:
        candidates += [templates_dir() / f"{ref}.yaml", templates_dir() / f"{ref}.json"]
    for path in candidates:
        try:
            found = path.is_file()
        except (OSError, ValueError):  # a name too long for the file system, or one holding NUL
            found = False
        if found:
            return read_document(path), path.resolve()
    raise WorkflowError([Issue(None, None, f"no workflow named {ref!r} (looked for {', '.join(map(str, candidates))})")])


# ---------------------------------------------------------------------------------------------
# flattening


@dataclass(slots=True)
class _FlatNode:
    id: str
    type: str
    links: dict[str, tuple[str, str]]
    params: dict[str, Any]
    #: param name -> the template reference it came from ("$steps"), for messages
    origins: dict[str, str]


class _Flattener:
    """Turns the document (and any subgraphs) into one flat node list, collecting issues."""

    def __init__(self, registry: NodeRegistry, resolver: SubgraphResolver):
        self.registry = registry
        self.resolver = resolver
        self.issues: list[Issue] = []
        self.nodes: dict[str, _FlatNode] = {}
        #: (subgraph node id, output) -> link inside it, for links that point at a subgraph node
        self.aliases: dict[tuple[str, str], str] = {}
        self.subgraphs: set[str] = set()
        #: (ref, including folder) -> resolved document: a subgraph used many times is read once
        self.resolved: dict[tuple[str, Path | None], tuple[dict[str, Any], Path]] = {}

    def flatten(
        self,
        document: Mapping[str, Any],
        values: dict[str, Any],
        types: dict[str, str],
        prefix: str,
        base: Path | None,
        stack: tuple[Path, ...],
        fed: Mapping[str, tuple[str, str]] | None = None,
    ) -> None:
        nodes = document.get("nodes")
        if not isinstance(nodes, dict):
            self.issues.append(Issue(prefix.rstrip("/") or None, "nodes", "`nodes` is a mapping of id -> node"))
            return
        fed = fed or {}
        for raw_id, decl in nodes.items():
            node_id = prefix + raw_id
            if not raw_id or _BAD_ID.search(raw_id):
                self.issues.append(Issue(node_id, "id", f"node ids may not be empty, contain {list(RESERVED_ID_CHARS)} "
                                                        "or start/end with spaces"))
                continue
            if not isinstance(decl, dict):
                self.issues.append(Issue(node_id, None, "a node is a mapping {type, inputs, params}"))
                continue
            if not decl.keys() <= _NODE_KEY_SET:
                for key in decl:
                    if key not in _NODE_KEY_SET:
                        self.issues.append(Issue(node_id, key, f"unknown key; a node has {list(NODE_KEYS)}"))
            type_name = decl.get("type")
            inputs = decl.get("inputs") or {}
            params = decl.get("params") or {}
            if not isinstance(type_name, str) or not type_name:
                self.issues.append(Issue(node_id, "type", "every node needs a `type` (a node type name)"))
                continue
            if not isinstance(inputs, dict):
                self.issues.append(Issue(node_id, "inputs", "`inputs` is a mapping of port -> node.output"))
                inputs = {}
            if not isinstance(params, dict):
                self.issues.append(Issue(node_id, "params", "`params` is a mapping of name -> value"))
                params = {}
            links: dict[str, tuple[str, str]] = {}
            for port, link in inputs.items():
                if not isinstance(link, str) or "." not in link or link.startswith("$"):
                    self.issues.append(Issue(node_id, port, f"an input is a link `node.output`, got {link!r}"
                                             " (literal values go under params)"))
                    continue
                source, _, output = link.partition(".")
                links[port] = (prefix + source, output)
            literal: dict[str, Any] = {}
            origins: dict[str, str] = {}
            for name, value in params.items():
                if name in links:
                    self.issues.append(Issue(node_id, name, "is both linked under inputs and set under params"))
                    continue
                if isinstance(value, str) and value.startswith("$"):
                    if value.startswith("$$"):
                        literal[name] = value[1:]
                        continue
                    ref = value[1:]
                    origins[name] = value
                    if ref in fed:
                        links[name] = fed[ref]
                    elif ref in values:
                        literal[name] = values[ref]
                    elif ref not in types:
                        known = ", ".join(types) or "none"
                        self.issues.append(Issue(node_id, name, f"unknown template param {value!r}; declared: {known}"))
                    continue
                literal[name] = value
            if type_name.startswith(SUBGRAPH_PREFIX):
                self._subgraph(node_id, type_name[len(SUBGRAPH_PREFIX):], links, literal, base, stack)
            else:
                self.nodes[node_id] = _FlatNode(node_id, type_name, links, literal, origins)
        outputs = document.get("outputs") or {}
        if prefix and isinstance(outputs, dict):
            for name, link in outputs.items():
                if isinstance(link, str) and "." in link:
                    source, _, output = link.partition(".")
                    self.aliases[(prefix.rstrip("/"), name)] = f"{prefix}{source}.{output}"

    def _subgraph(
        self,
        node_id: str,
        ref: str,
        links: dict[str, tuple[str, str]],
        params: dict[str, Any],
        base: Path | None,
        stack: tuple[Path, ...],
    ) -> None:
        if len(self.subgraphs) >= MAX_SUBGRAPHS:
            self.issues.append(Issue(node_id, "type", f"too many subgraph instances (the limit is {MAX_SUBGRAPHS}); "
                                                      "do the subgraphs include each other over and over?"))
            return
        try:
            if (ref, base) not in self.resolved:
                self.resolved[(ref, base)] = self.resolver(ref, base)
            document, path = self.resolved[(ref, base)]
        except WorkflowError as exc:
            self.issues.append(Issue(node_id, "type", "; ".join(i.message for i in exc.issues)))
            return
        if path in stack:
            chain = " -> ".join(p.name for p in (*stack, path))
            self.issues.append(Issue(node_id, "type", f"subgraph includes itself: {chain}"))
            return
        if document.get("format") != FORMAT:
            self.issues.append(Issue(node_id, "type", f"{path.name}: format must be {FORMAT!r}, "
                                                      f"got {document.get('format')!r}"))
        for key in document:
            if key not in TOP_LEVEL_KEYS:
                self.issues.append(Issue(node_id, "type", f"{path.name}: unknown top-level key {key!r}"))
        self.subgraphs.add(node_id)
        declared = document.get("params") or {}
        fed: dict[str, tuple[str, str]] = {}
        for port, link in links.items():
            if isinstance(declared, dict) and port not in declared:
                self.issues.append(Issue(node_id, port, f"workflow {ref!r} has no param {port!r}"))
            elif isinstance(link, tuple):
                fed[port] = link
        values, types = resolve_template_params(document, params, self.issues, node=node_id, linked=fed)
        self.flatten(document, values, types, prefix=f"{node_id}/", base=path.parent, stack=(*stack, path), fed=fed)


def _split(link: str) -> tuple[str, str]:
    source, _, output = link.rpartition(".")
    return source, output


# ---------------------------------------------------------------------------------------------
# validation and keys


def compile_workflow(
    document: Mapping[str, Any],
    registry: NodeRegistry,
    overrides: Mapping[str, Any] | None = None,
    *,
    base: Path | None = None,
    resolver: SubgraphResolver = default_resolver,
    source: Path | None = None,
    access: FileAccess | None = None,
) -> Plan:
    """Validate `document` against `registry` and plan it, or raise WorkflowError with every issue.

    `source` is the file the document came from, so a subgraph that includes it is caught at once.
    `access` is where file and model params may point (default: the CLI's permissive policy).
    """
    with gc_paused():
        return _compile(document, registry, overrides, base, resolver, source, access or FileAccess())


def _compile(
    document: Mapping[str, Any],
    registry: NodeRegistry,
    overrides: Mapping[str, Any] | None,
    base: Path | None,
    resolver: SubgraphResolver,
    source_file: Path | None,
    access: FileAccess,
) -> Plan:
    issues: list[Issue] = []
    for key in document:
        if key not in TOP_LEVEL_KEYS:
            issues.append(Issue(None, key, f"unknown top-level key; valid keys: {', '.join(TOP_LEVEL_KEYS)}"))
    if document.get("format") != FORMAT:
        issues.append(Issue(None, "format", f"must be {FORMAT!r}, got {document.get('format')!r}"))
    for text_key in ("name", "description"):
        if text_key in document and not isinstance(document[text_key], str):
            issues.append(Issue(None, text_key, "must be a string"))
    values, types = resolve_template_params(document, overrides or {}, issues)
    flattener = _Flattener(registry, resolver)
    flattener.issues = issues
    flattener.flatten(document, values, types, prefix="", base=base, stack=(source_file,) if source_file else ())
    flat = flattener.nodes

    planned: dict[str, PlannedNode] = {}
    for node in flat.values():
        spec = registry.get(node.type)
        if spec is None:
            close = difflib.get_close_matches(node.type, registry.names(), n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            issues.append(Issue(node.id, "type", f"unknown node type {node.type!r}{hint}"))
            continue
        planned[node.id] = PlannedNode(node.id, node.type, spec, _UNSET, node.links)

    for node in flat.values():
        target = planned.get(node.id)
        if target is not None:
            _check_node(node, target, flat, planned, flattener.aliases, flattener.subgraphs, issues)

    if not issues:
        _check_links(planned, issues, access)

    outputs: dict[str, tuple[str, str]] = {}
    declared_outputs = document.get("outputs") or {}
    if not isinstance(declared_outputs, dict):
        issues.append(Issue(None, "outputs", "`outputs` is a mapping of name -> node.output"))
        declared_outputs = {}
    for name, link in declared_outputs.items():
        resolved = _resolve_link(link, flattener.aliases) if isinstance(link, str) and "." in link else None
        if resolved is None or resolved[0] not in planned:
            issues.append(Issue(None, f"outputs.{name}", f"{link!r} is not a link to an existing node.output"))
        elif resolved[1] not in planned[resolved[0]].spec.outputs:
            issues.append(Issue(None, f"outputs.{name}", f"node {resolved[0]!r} has no output {resolved[1]!r}"))
        else:
            outputs[name] = resolved

    order = _document_order_if_topological(planned) if not issues else None
    if order is None:
        consumers = _consumers(planned, known_only=bool(issues))
        indegree = dict.fromkeys(planned, 0)
        for fed in consumers.values():
            for consumer in fed:
                indegree[consumer] += 1
        order = _topological_order(consumers, indegree)
        if len(order) < len(planned):
            issues.extend(_cycle_issues(planned, consumers, set(order)))
    if issues:
        raise WorkflowError(issues)

    issues.extend(_assign_keys(planned, order, access))
    if issues:
        raise WorkflowError(issues)
    return Plan(dict(document), values, planned, order, outputs, access)


def _document_order_if_topological(planned: Mapping[str, PlannedNode]) -> list[str] | None:
    """The nodes as written when every link points back to an earlier node (the usual case, and
    what the editor writes): then no sort is needed. None otherwise."""
    position = {nid: index for index, nid in enumerate(planned)}
    for index, node in enumerate(planned.values()):
        for source, _ in node.links.values():
            if position[source] >= index:
                return None
    return list(planned)


def _consumers(planned: Mapping[str, PlannedNode], known_only: bool = False) -> dict[str, list[str]]:
    """Node id -> the ids of the nodes its outputs feed (links to unknown nodes skipped if asked)."""
    consumers: dict[str, list[str]] = {nid: [] for nid in planned}
    for nid, node in planned.items():
        for source, _ in node.links.values():
            if not known_only or source in consumers:
                consumers[source].append(nid)
    return consumers


def _topological_order(consumers: Mapping[str, list[str]], indegree: dict[str, int]) -> list[str]:
    """Kahn's algorithm, iterative: O(nodes + edges), no recursion however deep the graph.
    Ties keep document order. Nodes on a cycle are left out of the result. Consumes `indegree`."""
    ready = [nid for nid, degree in indegree.items() if degree == 0]
    ready.reverse()
    order: list[str] = []
    while ready:
        nid = ready.pop()
        order.append(nid)
        for target in reversed(consumers[nid]):
            indegree[target] -= 1
            if indegree[target] == 0:
                ready.append(target)
    return order


def _cycle_issues(
    planned: Mapping[str, PlannedNode], consumers: Mapping[str, list[str]], ordered: set[str]
) -> list[Issue]:
    """One issue per node on a cycle, each listing the ids on its cycle (networkx finds them)."""
    graph = nx.DiGraph()
    graph.add_edges_from((nid, target) for nid, targets in consumers.items() if nid not in ordered
                         for target in targets if target not in ordered)
    issues = []
    for component in nx.strongly_connected_components(graph):
        if len(component) > 1 or any(graph.has_edge(n, n) for n in component):
            ids = [nid for nid in planned if nid in component]
            issues += [Issue(nid, None, f"is on a cycle: {' -> '.join([*ids, ids[0]])}") for nid in ids]
    return issues


def _resolve_link(link: str, aliases: Mapping[tuple[str, str], str]) -> tuple[str, str]:
    source, output = _split(link)
    seen = 0
    while (source, output) in aliases and seen < 1000:  # a subgraph output may point into another
        source, output = _split(aliases[(source, output)])
        seen += 1
    return source, output


class Linked(tuple[str, dict[str, Any], str]):
    """What feeds one port at validation time: (source node type, source params, source output),
    plus the source's `node_id` and its own `upstream` links, so a check can follow a chain of
    nodes (SampleLoop <- ApplyControlNet <- LoadControlNet). Built lazily: walking is the check's
    choice, never a cost of planning."""

    node_id: str
    _planned: Mapping[str, PlannedNode]

    def __new__(cls, planned: Mapping[str, PlannedNode], node_id: str, output: str) -> Linked:
        source = planned[node_id]
        linked = super().__new__(cls, (source.type, source.params, output))
        linked.node_id, linked._planned = node_id, planned
        return linked

    @property
    def upstream(self) -> dict[str, Linked]:
        """The source node's own linked ports, alike."""
        return Linked.links_of(self._planned, self.node_id)

    @staticmethod
    def links_of(planned: Mapping[str, PlannedNode], node_id: str) -> dict[str, Linked]:
        return {port: Linked(planned, source, output)
                for port, (source, output) in planned[node_id].links.items() if source in planned}


def _check_links(planned: Mapping[str, PlannedNode], issues: list[Issue], access: FileAccess) -> None:
    """Each node type's own checks of what feeds it (`Node.check_links`), such as a task the linked
    model's family cannot do."""
    for node in planned.values():
        if node.spec.cls.check_links.__func__ is Node.check_links.__func__:  # type: ignore[attr-defined]
            continue
        check = node.spec.cls.check_links
        linked: dict[str, tuple[str, dict[str, Any], str]] = dict(Linked.links_of(planned, node.id))
        try:
            problems = check(node.params, linked, access)
        except Exception:  # noqa: BLE001 - a check that cannot decide leaves it to the run
            continue
        issues.extend(Issue(node.id, field, message) for field, message in problems)


def _check_node(
    node: _FlatNode,
    target: PlannedNode,
    flat: Mapping[str, _FlatNode],
    planned: Mapping[str, PlannedNode],
    aliases: Mapping[tuple[str, str], str],
    subgraphs: Collection[str],
    issues: list[Issue],
) -> None:
    spec = target.spec
    port_types = spec.port_types
    # links pointing at subgraph nodes are rewritten to the node inside; otherwise kept as written
    resolved: dict[str, tuple[str, str]] | None = {} if aliases else None
    for port, link in node.links.items():
        source, output = _resolve_link(f"{link[0]}.{link[1]}", aliases) if aliases else link
        port_type = port_types.get(port)
        if port_type is None:
            valid = ", ".join(port_types) or "none"
            issues.append(Issue(node.id, port, f"{spec.type_name} has no input {port!r}; its inputs: {valid}"))
            continue
        source_node = planned.get(source)
        if source_node is None:
            if source in subgraphs:
                issues.append(Issue(node.id, port, f"subgraph {source!r} has no output {output!r}"))
            elif source not in flat:
                issues.append(Issue(node.id, port, f"links to missing node {source!r}"))
            continue  # otherwise the source's own problem is reported on it
        out = source_node.spec.outputs.get(output)
        if out is None:
            valid = ", ".join(source_node.spec.outputs) or "none"
            issues.append(Issue(node.id, port, f"node {source!r} ({source_node.type}) has no output {output!r}; "
                                               f"its outputs: {valid}"))
            continue
        if out.port_type is not port_type and not out.port_type.feeds(port_type):
            issues.append(Issue(node.id, port, f"type mismatch: {source}.{output} is {out.port_type.name}, "
                                               f"{port!r} takes {port_type.name}"))
            continue
        if resolved is not None:
            resolved[port] = (source, output)
    if resolved is not None:
        target.links = resolved
    for name, input_port in spec.inputs.items():
        if not input_port.optional and name not in node.links:
            issues.append(Issue(node.id, name, f"missing required input {name!r} ({input_port.port_type.name})"))
    literal = node.params
    if not literal.keys() <= spec.params.keys():
        for name in literal:
            if name not in spec.params:
                valid = ", ".join(spec.params) or "none"
                issues.append(Issue(node.id, name, f"{spec.type_name} has no param {name!r}; its params: {valid}"))
        literal = {k: v for k, v in literal.items() if k in spec.params}
    try:
        # the throwaway model's __dict__ holds exactly the (flat, primitive) validated values
        target.params = spec.params_model.__pydantic_validator__.validate_python(literal).__dict__
    except pydantic.ValidationError as exc:
        validated = dict(literal)
        for error in exc.errors(include_url=False):
            name = str(error["loc"][0]) if error["loc"] else ""
            if error["type"] == "missing" and name in node.links:
                continue
            origin = f" (from {node.origins[name]})" if name in node.origins else ""
            got = f", got {literal[name]!r}" if name in literal else ""
            issues.append(Issue(node.id, name or None, f"{error['msg']}{got}{origin}"))
            validated.pop(name, None)
        for name, declared in spec.params.items():  # a linked required param: the others keep their defaults
            if name not in validated and name not in node.links and not declared.required:
                validated[name] = declared.default
        target.params = {name: validated[name] for name in spec.params if name in validated}  # the spec's order
    for name in node.links:
        target.params.pop(name, None)


def _assign_keys(planned: dict[str, PlannedNode], order: list[str], access: FileAccess) -> list[Issue]:
    """Merkle keys in topological order: each node's key hashes its own content and its inputs' keys.
    Returns the paths `access` refused, as issues."""
    issues: list[Issue] = []
    for node_id in order:
        node = planned[node_id]
        # validated params come in the spec's field order and repr of primitives is canonical
        # (1, 1.0 and True stay distinct), so repr(params) is a canonical text of them
        parts = [node.spec.key_prefix, repr(node.params)]
        links = node.links
        for port in sorted(links) if len(links) > 1 else links:
            source, output = links[port]
            parts += (port, planned[source].key, output)
        text = "\x1f".join(parts)
        if node.spec.has_fingerprint:
            try:  # content the params only name (a file's bytes)
                fingerprint = node.spec.cls.fingerprint(node.params, access)
            except NodeError as exc:
                issues.append(Issue(node_id, exc.field, str(exc)))
                fingerprint = None
            except Exception:  # noqa: BLE001 - a failing fingerprint must not stop planning: that node never hits
                fingerprint = os.urandom(16).hex()
            if fingerprint is not None:
                text += f"|{fingerprint}"
        if not node.spec.deterministic:
            text += os.urandom(16).hex()  # never hits, nor does anything downstream
        node.key = hashlib.blake2b(text.encode("utf-8"), digest_size=20).hexdigest()
    return issues


def load_plan(
    path: str | Path,
    registry: NodeRegistry,
    overrides: Mapping[str, Any] | None = None,
    access: FileAccess | None = None,
) -> Plan:
    """Read, validate and plan a workflow file."""
    path = Path(path)
    return compile_workflow(read_document(path), registry, overrides, base=path.resolve().parent,
                            source=path.resolve(), access=access)


__all__ = ["Plan", "PlannedNode", "compile_workflow", "load_plan", "parse_override"]
