"""A node's validation-time check (`check_links`) sees what feeds it and, through `upstream`, what
feeds that, with each source's node id: how SampleLoop finds the LoadControlNet behind a chain of
ApplyControlNet before anything runs."""

from __future__ import annotations

import pytest
from support import testnodes

from diffgraph.engine import Float, Node, NodeRegistry, Output, Param, WorkflowError, compile_workflow, node
from diffgraph.nodes import primitives


@node("TestChainEnd", category="test")
class ChainEnd(Node):
    """At validation, reports the chain of nodes feeding `a` (id, type and param b of each)."""

    a: float = Param(0.0)
    total: Float = Output()

    @classmethod
    def check_links(cls, params, linked, access):
        chain, source = [], linked.get("a")
        while source is not None:
            node_type, source_params, output = source  # still the (type, params, output) of before
            chain.append(f"{source.node_id}:{node_type}.{output}(b={source_params['b']})")
            source = source.upstream.get("a")
        return [("a", " <- ".join(chain))]

    def run(self, ctx):
        return {"total": self.a}


def test_check_links_follows_the_sources_upstream_with_their_node_ids():
    registry = NodeRegistry()
    registry.add(*primitives.NODES, *testnodes.NODES, ChainEnd)
    document = {"format": "diffgraph/v1", "nodes": {
        "first": {"type": "TestAdd", "params": {"a": 1.0, "b": 1.0}},
        "second": {"type": "TestAdd", "inputs": {"a": "first.total"}, "params": {"b": 2.0}},
        "end": {"type": "TestChainEnd", "inputs": {"a": "second.total"}},
    }}
    with pytest.raises(WorkflowError) as raised:
        compile_workflow(document, registry)
    (issue,) = raised.value.issues
    assert (issue.node, issue.field) == ("end", "a")
    assert issue.message == "second:TestAdd.total(b=2.0) <- first:TestAdd.total(b=1.0)"
