"""Merkle cache keys: content, not ids; non-deterministic nodes never hit; deep graphs plan without recursion."""

from __future__ import annotations

from diffgraph.engine import (
    Cache,
    DiskCache,
    Executor,
    Float,
    Node,
    NodeRegistry,
    Output,
    Param,
    compile_workflow,
    node,
)
from diffgraph.nodes import primitives


def chain(prefix: str, length: int, first_value: float = 1.0) -> dict:
    nodes = {f"{prefix}0": {"type": "TestAdd", "params": {"a": first_value, "b": 1}}}
    for i in range(1, length):
        nodes[f"{prefix}{i}"] = {"type": "TestAdd", "inputs": {"a": f"{prefix}{i - 1}.total"}, "params": {"b": 1}}
    return nodes


def keys(plan, prefix: str, length: int) -> list[str]:
    return [plan.nodes[f"{prefix}{i}"].key for i in range(length)]


def test_identical_subgraphs_under_different_ids_share_keys(registry):
    plan = compile_workflow({"format": "diffgraph/v1", "nodes": {**chain("left", 5), **chain("right", 5)}}, registry)
    assert keys(plan, "left", 5) == keys(plan, "right", 5)
    assert len(set(keys(plan, "left", 5))) == 5


def test_a_changed_param_changes_that_key_and_every_key_downstream_only(registry):
    nodes = chain("n", 4)
    nodes["other"] = {"type": "TestAdd", "params": {"a": 3}}
    before = compile_workflow({"format": "diffgraph/v1", "nodes": nodes}, registry)
    nodes["n2"] = {**nodes["n2"], "params": {"b": 2}}
    after = compile_workflow({"format": "diffgraph/v1", "nodes": nodes}, registry)
    assert keys(before, "n", 2) == keys(after, "n", 2)
    assert all(b != a for b, a in zip(keys(before, "n", 4)[2:], keys(after, "n", 4)[2:], strict=True))
    assert before.nodes["other"].key == after.nodes["other"].key


def test_keys_ignore_key_order_and_defaults_written_out(registry):
    first = compile_workflow({"format": "diffgraph/v1", "nodes": {"x": {"type": "TestAdd", "params": {"a": 1}}}},
                             registry)
    second = compile_workflow({"format": "diffgraph/v1", "nodes": {
        "y": {"params": {"b": 0.0, "a": 1.0}, "type": "TestAdd"}}}, registry)
    assert first.nodes["x"].key == second.nodes["y"].key


def test_the_node_version_is_part_of_the_key(registry):
    @node("TestAdd", category="test", version=2)
    class AddV2(Node):
        a: float = Param(0.0, ge=-1e6, le=1e6)
        b: float = Param(0.0)
        total: Float = Output()

        def run(self, ctx):
            return {"total": self.a + self.b}

    newer = NodeRegistry()
    newer.add(AddV2)
    document = {"format": "diffgraph/v1", "nodes": {"x": {"type": "TestAdd", "params": {"a": 1}}}}
    assert compile_workflow(document, registry).nodes["x"].key != compile_workflow(document, newer).nodes["x"].key


def test_a_non_deterministic_node_and_its_descendants_never_hit(registry, tmp_path):
    document = {"format": "diffgraph/v1", "nodes": {
        "dice": {"type": "TestRandom"},
        "plus": {"type": "TestAdd", "inputs": {"a": "dice.number"}, "params": {"b": 1}},
        "fixed": {"type": "TestAdd", "params": {"a": 1}},
    }}
    executor = Executor(Cache(disk=DiskCache(tmp_path)))
    first = executor.run(compile_workflow(document, registry))
    second = executor.run(compile_workflow(document, registry))
    assert sorted(first.executed) == ["dice", "fixed", "plus"]
    assert sorted(second.executed) == ["dice", "plus"] and second.cached == ["fixed"]
    # even the very same plan object re-run does not serve the random node from the cache
    plan = compile_workflow(document, registry)
    executor.run(plan)
    again = executor.run(plan)
    assert sorted(again.executed) == ["dice", "plus"] and again.cached == ["fixed"]
    # nothing random was written to disk: only `fixed` has an entry
    assert len(list(tmp_path.glob("*/*/manifest.json"))) == 1


def float_chain(depth: int) -> dict:
    nodes = {"n0": {"type": "Float", "params": {"value": 1.0}}}
    for i in range(1, depth):
        nodes[f"n{i}"] = {"type": "Float", "inputs": {"value": f"n{i - 1}.number"}}
    return {"format": "diffgraph/v1", "nodes": nodes}


def primitives_registry() -> NodeRegistry:
    registry = NodeRegistry()
    registry.add(*primitives.NODES)
    return registry


def test_a_100000_deep_chain_plans_without_recursion():
    depth = 100_000
    plan = compile_workflow(float_chain(depth), primitives_registry())
    assert plan.order == [f"n{i}" for i in range(depth)]
    assert len({n.key for n in plan.nodes.values()}) == depth


def test_a_10000_deep_chain_runs_without_recursion():
    depth = 10_000  # ComfyUI-style recursive executors overflow near 1,000
    plan = compile_workflow(float_chain(depth), primitives_registry())
    result = Executor(Cache()).run(plan, targets=[f"n{depth - 1}"])
    assert result.status == "succeeded" and len(result.executed) == depth
