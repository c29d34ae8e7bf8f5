"""Template params (`$name`, `$$`, typed `--set`) and `workflow:<name or path>` subgraph nodes."""

from __future__ import annotations

import json

import pytest

from diffgraph.engine import WorkflowError, compile_workflow, dump_document, load_plan

PARAMS = {
    "count": {"type": "INT", "default": 3, "min": 1, "max": 100},
    "scale": {"type": "FLOAT", "default": 0.5, "min": 0, "max": 10},
    "label": {"type": "STRING", "default": "plain"},
    "flag": {"type": "BOOLEAN", "default": False},
    "mode": {"type": "STRING", "default": "fast", "choices": ["fast", "slow"]},
    "size": {"type": "INT", "default": 512, "choices": [256, 512, 768]},
}

TEMPLATED = {
    "format": "diffgraph/v1",
    "params": PARAMS,
    "nodes": {
        "count": {"type": "Int", "params": {"value": "$count"}},
        "scale": {"type": "TestAdd", "params": {"a": "$scale", "b": "$count"}},  # an INT feeds a FLOAT param
        "label": {"type": "String", "params": {"value": "$label"}},
        "price": {"type": "String", "params": {"value": "$$5 and $$label"}},
        "flag": {"type": "TestFail", "params": {"bug": "$flag", "message": "$mode"}},
    },
    "outputs": {"count": "count.number", "scaled": "scale.total", "label": "label.text", "price": "price.text"},
}


def test_defaults_fill_template_params(registry):
    plan = compile_workflow(TEMPLATED, registry)
    assert plan.template_params == {"count": 3, "scale": 0.5, "label": "plain", "flag": False, "mode": "fast",
                                    "size": 512}
    assert plan.nodes["count"].params == {"value": 3}
    assert plan.nodes["scale"].params == {"a": 0.5, "b": 3.0}
    assert plan.nodes["label"].params == {"value": "plain"}
    assert plan.nodes["flag"].params["bug"] is False


def test_double_dollar_escapes_a_literal_dollar(registry):
    plan = compile_workflow(TEMPLATED, registry)
    assert plan.nodes["price"].params == {"value": "$5 and $$label"}  # only a leading $$ is an escape


@pytest.mark.parametrize(("name", "text", "expected"), [
    ("count", "42", 42), ("count", " 7 ", 7), ("count", "-0", None), ("scale", "2.5", 2.5), ("scale", "3", 3.0),
    ("scale", "1e-3", 0.001), ("label", "a=b $c", "a=b $c"), ("label", "", ""), ("flag", "true", True),
    ("flag", "Yes", True), ("flag", "0", False), ("flag", "off", False), ("mode", "slow", "slow"),
    ("size", "768", 768),
])
def test_set_values_are_parsed_by_the_declared_type(registry, name, text, expected):
    if expected is None:
        with pytest.raises(WorkflowError):  # -0 is below the minimum 1
            compile_workflow(TEMPLATED, registry, {name: text})
        return
    plan = compile_workflow(TEMPLATED, registry, {name: text})
    assert plan.template_params[name] == expected
    assert type(plan.template_params[name]) is type(expected)


@pytest.mark.parametrize(("name", "text", "message"), [
    ("count", "abc", "'abc' is not a valid INT"), ("count", "1.5", "is not a valid INT"),
    ("count", "101", "above the maximum 100"), ("count", "0", "below the minimum 1"),
    ("count", str(2**64), "does not fit in 64 bits"), ("scale", "nan", "not a valid FLOAT"),
    ("scale", "inf", "not a valid FLOAT"), ("scale", "-1", "below the minimum 0"),
    ("flag", "maybe", "not a valid BOOLEAN"), ("mode", "medium", "not one of ['fast', 'slow']"),
    ("size", "500", "500 is not one of [256, 512, 768]"),
])
def test_bad_set_values_name_the_param(registry, name, text, message):
    with pytest.raises(WorkflowError) as caught:
        compile_workflow(TEMPLATED, registry, {name: text})
    [issue] = caught.value.issues
    assert issue.field == f"params.{name}" and message in issue.message


def test_unknown_set_name_lists_the_workflows_params(registry):
    with pytest.raises(WorkflowError) as caught:
        compile_workflow(TEMPLATED, registry, {"steps": "3"})
    [issue] = caught.value.issues
    assert issue.field == "params.steps" and "count, scale, label, flag, mode, size" in issue.message


def test_cli_set_types_values_and_rejects_bad_ones(cli, tmp_path):
    path = tmp_path / "templated.yaml"
    path.write_text(dump_document({**TEMPLATED, "nodes": {k: v for k, v in TEMPLATED["nodes"].items() if k != "flag"}}))
    summary = cli.run_json("run", path, "--no-cache", "--set", "count=7", "--set", "scale=1.25",
                           "--set", "label=ünï = code")
    assert summary["status"] == "succeeded"
    assert summary["values"] == {"count": 7, "scaled": 8.25, "label": "ünï = code", "price": "$5 and $$label"}

    done = cli.run("run", path, "--set", "count=many", "--set", "scale=11", "--set", "bogus=1", "--set", "noequals")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "'noequals' is not NAME=VALUE" in done.stderr  # the command line is checked first

    done = cli.run("run", path, "--set", "count=many", "--set", "scale=11", "--set", "bogus=1", "--json")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    errors = {(e["field"], e["message"]) for e in json.loads(done.stdout)["errors"]}
    assert ("params.count", "'many' is not a valid INT") in errors
    assert ("params.scale", "11.0 is above the maximum 10") in errors
    assert any(field == "params.bogus" for field, _ in errors)


# ---------------------------------------------------------------------------------------------
# subgraphs

SUB = {
    "format": "diffgraph/v1",
    "params": {"x": {"type": "FLOAT", "default": 1.0}, "y": {"type": "FLOAT", "default": 2.0, "max": 1000}},
    "nodes": {"add": {"type": "TestAdd", "params": {"a": "$x", "b": "$y"}}},
    "outputs": {"sum": "add.total"},
}

NESTED = {
    "format": "diffgraph/v1",
    "params": {"z": {"type": "FLOAT", "default": 5.0}},
    "nodes": {
        "inner": {"type": "workflow:sub", "params": {"x": "$z"}},
        "twice": {"type": "TestAdd", "inputs": {"a": "inner.sum", "b": "inner.sum"}},
    },
    "outputs": {"deep": "twice.total", "raw": "inner.sum"},
}

MAIN = {
    "format": "diffgraph/v1",
    "nodes": {
        "first": {"type": "workflow:sub", "params": {"x": 10}},
        "second": {"type": "workflow:sub.yaml", "params": {"x": 10}},
        "use": {"type": "TestAdd", "inputs": {"a": "first.sum"}, "params": {"b": 0.5}},
        "fed": {"type": "workflow:sub", "inputs": {"y": "use.total"}},
        "nest": {"type": "workflow:lib/nested", "params": {"z": 1.5}},
    },
    "outputs": {"first": "first.sum", "second": "second.sum", "fed": "fed.sum", "deep": "nest.deep",
                "raw": "nest.raw"},
}


@pytest.fixture
def subgraph_files(tmp_path):
    (tmp_path / "sub.yaml").write_text(dump_document(SUB))
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "sub.json").write_text(dump_document(SUB, "json"))  # found next to nested.yaml
    (tmp_path / "lib" / "nested.yaml").write_text(dump_document(NESTED))
    (tmp_path / "main.yaml").write_text(dump_document(MAIN))
    return tmp_path


def test_subgraph_nodes_flatten_with_their_params_and_outputs(subgraph_files, registry):
    plan = load_plan(subgraph_files / "main.yaml", registry)
    assert set(plan.nodes) == {"first/add", "second/add", "use", "fed/add", "nest/inner/add", "nest/twice"}
    assert plan.nodes["first/add"].params == {"a": 10.0, "b": 2.0}  # params set the subworkflow's params
    assert plan.nodes["use"].links == {"a": ("first/add", "total")}  # its outputs are the node's outputs
    assert plan.nodes["fed/add"].links == {"b": ("use", "total")}  # a link into a subgraph param
    assert plan.nodes["fed/add"].params == {"a": 1.0}
    assert plan.nodes["nest/inner/add"].params == {"a": 1.5, "b": 2.0}  # nested, through $z
    assert plan.nodes["nest/twice"].links == {"a": ("nest/inner/add", "total"), "b": ("nest/inner/add", "total")}
    assert plan.outputs == {"first": ("first/add", "total"), "second": ("second/add", "total"),
                            "fed": ("fed/add", "total"), "deep": ("nest/twice", "total"),
                            "raw": ("nest/inner/add", "total")}
    assert plan.nodes["first/add"].key == plan.nodes["second/add"].key  # same content, other id


def test_subgraph_problems_name_the_subgraph_node(subgraph_files, registry):
    document = {"format": "diffgraph/v1", "nodes": {
        "missing": {"type": "workflow:nowhere"},
        "badparam": {"type": "workflow:sub", "params": {"w": 1, "y": 5000}},
        "badlink": {"type": "workflow:sub", "inputs": {"w": "use.total"}},
        "use": {"type": "TestAdd", "inputs": {"a": "badparam.nothing"}},
    }}
    with pytest.raises(WorkflowError) as caught:
        compile_workflow(document, registry, base=subgraph_files)
    issues = {(i.node, i.field): i.message for i in caught.value.issues}
    assert "no workflow named 'nowhere'" in issues[("missing", "type")]
    assert "unknown template param 'w'" in issues[("badparam", "w")]
    assert "above the maximum 1000" in issues[("badparam", "y")]
    assert "has no param 'w'" in issues[("badlink", "w")]
    assert "subgraph 'badparam' has no output 'nothing'" in issues[("use", "a")]


def test_cli_runs_subgraphs_and_shares_cache_entries_between_identical_ones(cli, subgraph_files):
    summary = cli.run_json("run", subgraph_files / "main.yaml", "--cache-dir", subgraph_files / "cache")
    assert summary["status"] == "succeeded"
    assert summary["values"] == {"first": 12.0, "second": 12.0, "fed": 13.5, "deep": 7.0, "raw": 3.5}
    # first/add and second/add share one key: one of them is computed, the other served from it
    executions = cli.executions()
    assert executions["first/add"] + executions["second/add"] == 1
    assert set(summary["executed"]) | set(summary["cached"]) == {"first/add", "second/add", "use", "fed/add",
                                                                 "nest/inner/add", "nest/twice"}


def test_subgraphs_that_multiply_are_cut_off_not_expanded_forever(tmp_path, registry):
    """Each level includes the next twice: 2**25 instances if nothing stopped it."""
    levels = 25
    for level in range(levels):
        nodes = {"a": {"type": f"workflow:l{level + 1}"}, "b": {"type": f"workflow:l{level + 1}"}}
        (tmp_path / f"l{level}.yaml").write_text(dump_document({"format": "diffgraph/v1", "nodes": nodes}))
    (tmp_path / f"l{levels}.yaml").write_text(dump_document({"format": "diffgraph/v1", "nodes": {"n": {"type": "Int"}}}))
    with pytest.raises(WorkflowError) as caught:
        load_plan(tmp_path / "l0.yaml", registry)
    assert all("too many subgraph instances" in i.message and i.field == "type" for i in caught.value.issues)


def test_a_subgraph_file_with_a_bad_format_or_unknown_keys_is_reported_on_the_including_node(tmp_path, registry):
    (tmp_path / "odd.yaml").write_text(dump_document({"format": "diffgraph/v0", "nodez": {}, "nodes": {}}))
    document = {"format": "diffgraph/v1", "nodes": {"odd": {"type": "workflow:odd"}}}
    with pytest.raises(WorkflowError) as caught:
        compile_workflow(document, registry, base=tmp_path)
    messages = [i.message for i in caught.value.issues if (i.node, i.field) == ("odd", "type")]
    assert "odd.yaml: format must be 'diffgraph/v1', got 'diffgraph/v0'" in messages
    assert "odd.yaml: unknown top-level key 'nodez'" in messages
