"""Validation reports every problem at once, each naming the node id and the field."""

from __future__ import annotations

import json

import pytest

from diffgraph.engine import Issue, NodeRegistry, WorkflowError, compile_workflow, dump_document, load_plan


def workflow(nodes: dict, **top) -> dict:
    return {"format": "diffgraph/v1", **top, "nodes": nodes}


def issues_of(document: dict, registry: NodeRegistry, **kwargs) -> list[Issue]:
    with pytest.raises(WorkflowError) as caught:
        compile_workflow(document, registry, **kwargs)
    return caught.value.issues


def issue_at(issues: list[Issue], node: str | None, field: str | None) -> Issue:
    found = [i for i in issues if i.node == node and i.field == field]
    assert found, f"no issue for node {node!r} field {field!r} in {[str(i) for i in issues]}"
    return found[0]


def test_a_valid_workflow_compiles(registry):
    plan = compile_workflow(workflow({
        "one": {"type": "Float", "params": {"value": 1.0}},
        "sum": {"type": "TestAdd", "inputs": {"a": "one.number"}, "params": {"b": 2}},
    }), registry)
    assert plan.order == ["one", "sum"]
    assert plan.nodes["sum"].params == {"b": 2.0}
    assert plan.nodes["sum"].links == {"a": ("one", "number")}


CASES = {
    "unknown node type": (
        {"n": {"type": "TestAdd2"}}, "n", "type", "unknown node type 'TestAdd2'; did you mean TestAdd"),
    "unknown port": (
        {"s": {"type": "String"}, "n": {"type": "TestConcat", "inputs": {"left": "s.text", "middle": "s.text"}}},
        "n", "middle", "TestConcat has no input 'middle'; its inputs: left, right"),
    "unknown param": ({"n": {"type": "TestAdd", "params": {"c": 1}}}, "n", "c", "TestAdd has no param 'c'"),
    "link to missing node": (
        {"n": {"type": "TestAdd", "inputs": {"a": "ghost.number"}}}, "n", "a", "links to missing node 'ghost'"),
    "link to missing output": (
        {"f": {"type": "Float"}, "n": {"type": "TestAdd", "inputs": {"a": "f.numbr"}}},
        "n", "a", "node 'f' (Float) has no output 'numbr'; its outputs: number"),
    "type mismatch": (
        {"s": {"type": "String"}, "n": {"type": "TestAdd", "inputs": {"a": "s.text"}}},
        "n", "a", "type mismatch: s.text is STRING, 'a' takes FLOAT"),
    "model type fed by a number": (
        {"f": {"type": "Float"}, "n": {"type": "TestOpenBox", "inputs": {"box": "f.number"}}},
        "n", "box", "f.number is FLOAT, 'box' takes TEST_BOX"),
    "missing required input": ({"n": {"type": "TestConcat"}}, "n", "left", "missing required input 'left' (STRING)"),
    "param above maximum": ({"n": {"type": "TestSlow", "params": {"steps": 100_001}}}, "n", "steps", "less than or equal"),
    "param below minimum": ({"n": {"type": "TestAdd", "params": {"a": -2e6}}}, "n", "a", "greater than or equal"),
    "param of wrong type": ({"n": {"type": "TestAdd", "params": {"a": "three"}}}, "n", "a", "valid number, got 'three'"),
    "bool is not an int": ({"n": {"type": "TestSlow", "params": {"steps": True}}}, "n", "steps", "valid integer"),
    "int beyond 64 bits": ({"n": {"type": "Int", "params": {"value": 2**70}}}, "n", "value", "less than or equal"),
    "unknown template param": (
        {"n": {"type": "TestAdd", "params": {"a": "$nope"}}}, "n", "a", "unknown template param '$nope'"),
    "input that is not a link": ({"n": {"type": "TestAdd", "inputs": {"a": 3}}}, "n", "a", "is a link `node.output`"),
    "linked and set": (
        {"f": {"type": "Float"}, "n": {"type": "TestAdd", "inputs": {"a": "f.number"}, "params": {"a": 1}}},
        "n", "a", "both linked"),
    "unknown node key": ({"n": {"type": "Int", "param": {}}}, "n", "param", "unknown key"),
    "reserved character in id": ({"a.b": {"type": "Int"}}, "a.b", "id", "may not"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_each_problem_names_node_and_field(case, registry):
    nodes, node_id, field, message = CASES[case]
    issue = issue_at(issues_of(workflow(nodes), registry), node_id, field)
    assert message in issue.message
    assert repr(node_id) in str(issue) and repr(field) in str(issue)


def test_unknown_top_level_key_and_bad_format(registry):
    issues = issues_of({"format": "diffgraph/v2", "nodes": {}, "nodez": {}}, registry)
    assert "unknown top-level key" in issue_at(issues, None, "nodez").message
    assert "'diffgraph/v1'" in issue_at(issues, None, "format").message
    assert "must be" in issue_at(issues_of({"nodes": {}}, registry), None, "format").message


def test_cycle_lists_the_ids_on_it(registry):
    issues = issues_of(workflow({
        "start": {"type": "Float"},
        "a": {"type": "TestAdd", "inputs": {"a": "start.number", "b": "c.total"}},
        "b": {"type": "TestAdd", "inputs": {"a": "a.total"}},
        "c": {"type": "TestAdd", "inputs": {"a": "b.total"}},
        "off": {"type": "TestAdd", "inputs": {"a": "c.total"}},
    }), registry)
    assert {i.node for i in issues} == {"a", "b", "c"}
    for issue in issues:
        assert "a -> b -> c -> a" in issue.message


def test_a_node_linked_to_itself_is_a_cycle(registry):
    issues = issues_of(workflow({"loop": {"type": "TestAdd", "inputs": {"a": "loop.total"}}}), registry)
    assert "loop -> loop" in issue_at(issues, "loop", None).message


def test_subgraph_that_includes_itself(tmp_path, registry):
    (tmp_path / "outer.yaml").write_text(dump_document(workflow({"inner": {"type": "workflow:inner"}})))
    (tmp_path / "inner.yaml").write_text(dump_document(workflow({"again": {"type": "workflow:outer.yaml"}})))
    with pytest.raises(WorkflowError) as caught:
        load_plan(tmp_path / "outer.yaml", registry)
    [issue] = caught.value.issues
    assert issue.field == "type" and issue.node is not None and issue.node.endswith("again")
    assert "includes itself" in issue.message and "inner.yaml -> outer.yaml" in issue.message


def test_template_params_declarations_are_checked(registry):
    issues = issues_of(workflow({}, params={
        "kind": {"type": "COMPLEX", "default": 1},
        "listed": {"type": ["INT"]},
        "bounds": {"type": "INT", "default": 1, "min": "zero"},
        "picks": {"type": "STRING", "default": "a", "choices": "abc"},
        "nodefault": {"type": "INT"},
        "extra": {"type": "INT", "default": 1, "unit": "px"},
        "flat": 3,
    }), registry)
    assert "not one of" in issue_at(issues, None, "params.kind").message
    assert "not one of" in issue_at(issues, None, "params.listed").message
    assert "min must be a number" in issue_at(issues, None, "params.bounds").message
    assert "choices must be a list" in issue_at(issues, None, "params.picks").message
    assert "no default" in issue_at(issues, None, "params.nodefault").message
    assert "unknown keys ['unit']" in issue_at(issues, None, "params.extra").message
    assert "is a mapping" in issue_at(issues, None, "params.flat").message


EVERYTHING_WRONG = {
    "format": "diffgraph/v1",
    "colour": "blue",
    "params": {"steps": {"type": "INT", "default": 5, "min": 1, "max": 10}},
    "nodes": {
        "ok": {"type": "Float", "params": {"value": 1.0}},
        "typo": {"type": "TestAd"},
        "port": {"type": "TestConcat", "inputs": {"left": "ok.number", "middle": "ok.number"}},
        "param": {"type": "TestAdd", "params": {"a": 2e6, "z": 1, "b": "$missing"}},
        "ghost": {"type": "TestAdd", "inputs": {"a": "nobody.total", "b": "ok.nothing"}},
        "cyc1": {"type": "TestAdd", "inputs": {"a": "cyc2.total"}},
        "cyc2": {"type": "TestAdd", "inputs": {"a": "cyc1.total"}},
        "steps": {"type": "TestSlow", "params": {"steps": "$steps", "delay": "slow"}},
    },
    "outputs": {"result": "ok.nothing"},
}

EXPECTED_EVERYWHERE = [
    (None, "colour"), ("typo", "type"), ("port", "left"), ("port", "middle"), ("param", "a"), ("param", "z"),
    ("param", "b"), ("ghost", "a"), ("ghost", "b"), ("steps", "delay"), (None, "outputs.result"),
]


def test_every_problem_is_reported_at_once(registry):
    issues = issues_of(EVERYTHING_WRONG, registry)
    for node_id, field in EXPECTED_EVERYWHERE:
        issue_at(issues, node_id, field)
    # the cycle is found even with the other problems around
    assert {i.node for i in issues if i.field is None} >= {"cyc1", "cyc2"}


def test_cli_validate_exit_codes_and_json_shape(cli, tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text(dump_document(workflow({"one": {"type": "TestAdd", "params": {"a": 1}}})))
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(EVERYTHING_WRONG))

    done = cli.run("validate", good, "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"valid": True, "errors": [], "nodes": 1}

    done = cli.run("validate", good)
    assert done.returncode == 0 and "valid (1 nodes)" in done.stdout

    done = cli.run("validate", bad, "--json")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    report = json.loads(done.stdout)
    assert report["valid"] is False
    assert all(set(error) == {"node", "field", "message"} for error in report["errors"])
    pairs = {(error["node"], error["field"]) for error in report["errors"]}
    assert set(EXPECTED_EVERYWHERE) <= pairs

    done = cli.run("validate", bad)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert f"invalid workflow ({len(report['errors'])} problems)" in done.stderr
    assert "node 'typo', field 'type': unknown node type 'TestAd'" in done.stderr


def test_int_feeds_float_but_float_does_not_feed_int(registry):
    plan = compile_workflow(workflow({
        "count": {"type": "Int", "params": {"value": 3}},
        "sum": {"type": "TestAdd", "inputs": {"a": "count.number"}},
    }), registry)
    assert plan.nodes["sum"].links == {"a": ("count", "number")}
    issues = issues_of(workflow({
        "half": {"type": "Float", "params": {"value": 0.5}},
        "slow": {"type": "TestSlow", "inputs": {"steps": "half.number"}},
    }), registry)
    assert "half.number is FLOAT, 'steps' takes INT" in issue_at(issues, "slow", "steps").message


def test_a_linked_required_param_leaves_the_other_params_their_defaults():
    from diffgraph.engine import default_registry

    document = {"format": "diffgraph/v1", "nodes": {
        "name": {"type": "String", "params": {"value": "someone/some-model"}},
        "load": {"type": "LoadPipeline", "inputs": {"model": "name.text"}}}}
    plan = compile_workflow(document, default_registry())
    assert plan.nodes["load"].params == {"revision": "", "config": "", "allow_pickle": False}
