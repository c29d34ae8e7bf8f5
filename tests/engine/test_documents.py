"""Workflow documents: YAML and JSON are one format, and malformed bytes only ever give WorkflowError."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from diffgraph.engine import (
    NodeRegistry,
    WorkflowError,
    compile_workflow,
    dump_document,
    parse_document,
    read_document,
)

HAND_WRITTEN = """\
format: diffgraph/v1
name: sums
description: "Zwei Zahlen addieren — 足し算 ✓"
params:
  zeta: {type: FLOAT, default: 1.5, min: 0, max: 10}
  alpha: {type: STRING, default: "ünïcødé $ text"}
nodes:
  zweite:
    type: TestAdd
    inputs: {a: erste.total}
    params: {b: $zeta}
  erste:
    type: TestAdd
    params: {b: 2, a: 0.25}
  größe:
    type: String
    params: {value: $alpha}
outputs: {summe: zweite.total, text: größe.text}
metadata: {editor: {positions: {erste: [10, 20], zweite: [200, 20]}}, note: null, flag: true}
"""


def key_paths(value: Any, where: str = "") -> list[str]:
    """Every key path in document order: equal lists mean equal key order at every level."""
    if isinstance(value, dict):
        paths = []
        for key, item in value.items():
            paths.append(f"{where}/{key}")
            paths += key_paths(item, f"{where}/{key}")
        return paths
    if isinstance(value, list):
        return [p for index, item in enumerate(value) for p in key_paths(item, f"{where}[{index}]")]
    return []


def test_yaml_to_json_to_yaml_round_trip_keeps_values_key_order_and_unicode(tmp_path):
    original = parse_document(HAND_WRITTEN)
    assert list(original["nodes"]) == ["zweite", "erste", "größe"]  # not sorted

    json_file = tmp_path / "sums.json"
    json_file.write_text(dump_document(original, "json"), encoding="utf-8")
    assert "足し算" in json_file.read_text(encoding="utf-8")  # unicode kept as text, not \\u escapes
    from_json = read_document(json_file)
    assert from_json == original
    assert key_paths(from_json) == key_paths(original)

    yaml_file = tmp_path / "sums.yaml"
    yaml_file.write_text(dump_document(from_json, "yaml"), encoding="utf-8")
    assert "größe" in yaml_file.read_text(encoding="utf-8")
    back = read_document(yaml_file)
    assert back == original
    assert key_paths(back) == key_paths(original)
    assert isinstance(back["params"]["zeta"]["default"], float) and back["metadata"]["note"] is None


def test_yaml_scalars_that_look_like_dates_stay_strings_so_json_can_hold_them():
    document = parse_document("format: diffgraph/v1\nnodes: {}\nmetadata: {day: 2024-01-31, at: 2024-01-31 10:00:00}\n")
    assert document["metadata"] == {"day": "2024-01-31", "at": "2024-01-31 10:00:00"}
    assert parse_document(dump_document(document, "json")) == document


def test_yaml_anchors_work_and_merge_keys_are_refused_clearly():
    document = parse_document(
        "format: diffgraph/v1\n"
        "metadata: {defaults: &params {a: 5, b: 1}}\n"
        "nodes:\n"
        "  one: {type: TestAdd, params: *params}\n"
    )
    assert document["nodes"] == {"one": {"type": "TestAdd", "params": {"a": 5, "b": 1}}}
    with pytest.raises(WorkflowError, match="merge keys"):
        parse_document("a: &x {k: 1}\nb:\n  <<: *x\n  j: 2\n")


def merge_key_bomb() -> str:
    """Nine levels each merging the previous one ten times: 10**9 merged pairs if expanded."""
    lines = ["l0: &l0 {" + ", ".join(f"k{i}: 1" for i in range(10)) + "}"]
    lines += [f"l{n}: &l{n} {{<<: [{', '.join([f'*l{n - 1}'] * 10)}]}}" for n in range(1, 9)]
    return "\n".join(lines) + "\n"


def test_a_json_document_parses_the_same_as_yaml_or_json():
    text = json.dumps({"format": "diffgraph/v1", "nodes": {"n": {"type": "Int", "params": {"value": 3}}}})
    assert parse_document(text) == parse_document(text, "json") == parse_document(text, "yaml")


def billion_laughs() -> str:
    lines = ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    for level in range(1, 9):
        ref = chr(ord("a") + level - 1)
        lines.append(f"{chr(ord('a') + level)}: &{chr(ord('a') + level)} [{', '.join(['*' + ref] * 10)}]")
    return "\n".join(lines) + "\n"


BAD_DOCUMENTS: dict[str, tuple[bytes, str]] = {
    "empty": (b"", "empty"),
    "only whitespace": (b"  \n\n", "empty"),
    "a list": (b"- a\n- b\n", "not a list"),
    "a scalar": (b"just text\n", "not a string"),
    "broken yaml": (b"nodes: {a: [1, 2\n", "not valid YAML"),
    "broken json": (b'{"nodes": ', "not valid JSON"),
    "not utf-8": (b"format: diffgraph/v1\nname: \xff\xfe caf\xe9\n", "UTF-8"),
    "yaml bomb": (billion_laughs().encode(), "too large"),
    "yaml merge-key bomb": (merge_key_bomb().encode(), "merge keys"),
    "deep yaml flow": (b"nodes: " + b"[" * 200_000 + b"]" * 200_000, "nested too deeply"),
    "deep yaml block": (("a:\n" + "".join(" " * i + "b:\n" for i in range(1, 100))).encode(), "nested too deeply"),
    "deep json": (b'{"nodes": ' + b"[" * 200_000 + b"]" * 200_000 + b"}", "nested too deeply"),
    "duplicate yaml id": (b"nodes:\n  a: {type: Int}\n  a: {type: Float}\n", "duplicate key 'a'"),
    "duplicate json id": (b'{"nodes": {"a": {"type": "Int"}, "a": {"type": "Int"}}}', "duplicate key 'a'"),
    "json infinity": (b'{"format": "diffgraph/v1", "nodes": {"n": {"type": "Float", "params": {"value": 1e999}}}}',
                      "not a finite number"),
    "json NaN": (b'{"format": "diffgraph/v1", "nodes": {}, "name": NaN}', "not a number"),
    "yaml infinity": (b"format: diffgraph/v1\nnodes: {n: {type: Float, params: {value: .inf}}}\n", "finite"),
    "int beyond python's digit limit": (b"nodes: {n: {type: Int, params: {value: " + b"9" * 5000 + b"}}}\n",
                                        "not valid YAML"),
    "non-string key": (b"nodes: {1: {type: Int}}\n", "not a string"),
    "lone surrogate escape in json": (b'{"nodes": {"\\udc80": {"type": "Int"}}}', "unpaired surrogate"),
    "binary tag": (b"name: !!binary aGVsbG8=\n", "not allowed"),
    "python tag": (b"name: !!python/object/apply:os.system [echo hi]\n", "not valid YAML"),
}


@pytest.mark.parametrize("case", list(BAD_DOCUMENTS))
def test_malformed_bytes_give_one_clear_workflow_error(case):
    data, expected = BAD_DOCUMENTS[case]
    with pytest.raises(WorkflowError) as caught:
        parse_document(data, "json" if "json" in case else None)
    assert expected in str(caught.value)
    assert len(caught.value.issues) == 1


def _nested(levels: int, style: str) -> str:
    if style == "flow":
        return "nodes: " + "[" * (levels - 1) + "]" * (levels - 1) + "\n"
    return "".join(" " * i + "k:\n" for i in range(levels)) + " " * levels + "v\n"


@pytest.mark.parametrize("style", ["flow", "block"])
def test_nesting_limit_is_exact_and_our_own_whatever_the_parser_allows(style):
    """64 levels load; 65 get our message, and so do 1,500 (past libyaml's own nesting limit of 1,000)."""
    assert parse_document(_nested(64, style))
    for levels in (65, 1_500):
        with pytest.raises(WorkflowError, match=r"nested too deeply \(the limit is 64 levels\)"):
            parse_document(_nested(levels, style))


def test_brackets_inside_strings_are_no_nesting():
    text = 'format: diffgraph/v1\nname: "' + "[" * 5000 + '"\ndescription: a ' + "{[" * 300 + "\nnodes: {}\n"
    document = parse_document(text)
    assert document["name"] == "[" * 5000 and document["description"].startswith("a {[{[")


def test_a_yaml_error_names_the_file_it_is_in(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("format: diffgraph/v1\nnodes: {a: [1, 2\n")
    with pytest.raises(WorkflowError) as caught:
        read_document(path)
    message = str(caught.value)
    assert str(path) in message and "<unicode string>" not in message and "line 3" in message


# ---------------------------------------------------------------------------------------------
# property-based: whatever comes in, only WorkflowError comes out

KEYS = ["format", "name", "nodes", "params", "outputs", "inputs", "type", "default", "min", "max",
        "choices", "a", "b", "n", "value", "total", "TestAdd", "Int", "workflow:x", "$a", "metadata", ""]
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from(KEYS + ["diffgraph/v1", "n.total", "$$x",
                                                                           "a.b", ".", "$", "INT", "FLOAT"]),
    st.text(max_size=20),
)
DOCUMENTS = st.recursive(
    SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.one_of(st.sampled_from(KEYS), st.text(max_size=8)), children, max_size=5),
    ),
    max_leaves=40,
)


def workflow_like(nodes: dict[str, Any], params: Any, outputs: Any) -> dict[str, Any]:
    return {"format": "diffgraph/v1", "params": params, "nodes": nodes, "outputs": outputs}


WORKFLOW_LIKE = st.builds(
    workflow_like,
    st.dictionaries(st.sampled_from(["a", "b", "n", "ü", "x/y", ""]), st.one_of(
        DOCUMENTS,
        st.fixed_dictionaries({"type": st.sampled_from(["TestAdd", "Int", "TestConcat", "Nope", "workflow:" + "x" * 300,
                                                        "workflow:sub", "workflow:loop", "workflow:broken.yaml"]),
                               "inputs": DOCUMENTS, "params": DOCUMENTS}),
    ), max_size=4),
    DOCUMENTS, DOCUMENTS,
)


def check_only_workflow_errors(document: Any, registry: NodeRegistry, base) -> None:
    try:
        text = json.dumps(document, allow_nan=True)
    except (ValueError, TypeError):
        text = repr(document)
    for fmt in ("json", "yaml"):
        try:
            parsed = parse_document(text, fmt)
        except WorkflowError:
            continue
        try:
            compile_workflow(parsed, registry, base=base)
        except WorkflowError as exc:
            assert exc.issues and all(str(issue) for issue in exc.issues)
    if isinstance(document, dict):
        try:
            compile_workflow(document, registry, base=base)
        except WorkflowError:
            pass


@pytest.fixture(scope="module")
def subgraph_dir(tmp_path_factory):
    """Subgraph files random documents may name: a good one, one that includes itself, a broken one."""
    folder = tmp_path_factory.mktemp("subgraphs")
    (folder / "sub.yaml").write_text(dump_document({
        "format": "diffgraph/v1", "params": {"a": {"type": "FLOAT", "default": 1.0}, "n": {"type": "INT", "default": 2}},
        "nodes": {"n": {"type": "TestAdd", "params": {"a": "$a", "b": "$n"}}}, "outputs": {"total": "n.total"}}))
    (folder / "loop.yaml").write_text(dump_document({"format": "diffgraph/v1", "nodes": {"a": {"type": "workflow:loop"}}}))
    (folder / "broken.yaml").write_text("nodes: [\n")
    return folder


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(document=st.one_of(DOCUMENTS, WORKFLOW_LIKE))
@example(document={"format": "diffgraph/v1", "params": {"p": {"type": ["INT"]}}, "nodes": {}})  # found by hypothesis
@example(document={"format": "diffgraph/v1", "params": {"p": {"type": "INT", "default": 1, "min": "0"}}, "nodes": {}})
@example(document={"format": "diffgraph/v1", "nodes": {"n": {"type": "workflow:" + "x" * 300}}})
def test_random_documents_only_ever_raise_workflow_error(document, registry, subgraph_dir):
    check_only_workflow_errors(document, registry, subgraph_dir)


@settings(max_examples=300, deadline=None)
@given(data=st.one_of(st.binary(max_size=200), st.text(max_size=200)))
def test_random_bytes_and_text_only_ever_raise_workflow_error(data):
    try:
        parse_document(data)
    except WorkflowError as exc:
        assert exc.issues


def test_yaml_aliases_are_bounded_in_bytes_not_only_in_values():
    """1.3 KB whose aliases name a 1,000-character string 100,000 times: 100 MB once stored or sent."""
    lines = [f"s: &s {'x' * 1000}", "l0: &l0 [" + ", ".join(["*s"] * 10) + "]"]
    lines += [f"l{n}: &l{n} [" + ", ".join([f"*l{n - 1}"] * 10) + "]" for n in range(1, 5)]
    text = "\n".join(lines) + "\n"
    assert len(text) < 1400
    with pytest.raises(WorkflowError, match="too large once its YAML aliases are expanded"):
        parse_document(text)
    digits = "n: &n " + "9" * 4000 + "\nl0: &l0 [" + ", ".join(["*n"] * 10) + "]\n"
    digits += "".join(f"l{n}: &l{n} [" + ", ".join([f"*l{n - 1}"] * 10) + "]\n" for n in range(1, 4))
    with pytest.raises(WorkflowError, match="aliases"):
        parse_document(digits)


def test_yaml_aliases_that_expand_modestly_are_fine():
    text = "defaults: &d {steps: 20, cfg: 7.5, prompt: " + "y" * 5000 + "}\n"
    text += "nodes:\n" + "".join(f"  n{i}: {{type: Int, params: *d}}\n" for i in range(150))
    assert len(parse_document(text)["nodes"]) == 150  # 750 KB expanded from 9 KB: within the 1 MiB floor
