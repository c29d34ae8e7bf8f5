"""The catalog tells the editor what it used to guess: which types feed a port, the colour of each
type, and which widget a param wants (issue 16)."""

from __future__ import annotations

import pytest

from diffgraph.engine import Input, Node, NodeRegistry, Output, Param, PortType, compile_workflow, node
from diffgraph.engine.registry import default_registry


class Picture(PortType):
    name = "TEST_PICTURE"


class Canvas(PortType):
    """A node pack's new type that takes pictures: the engine links them, so the editor must too."""

    name = "TEST_CANVAS"
    accepts = ("TEST_PICTURE",)
    colour = "#123456"


@node("TestPaint", category="test")
class TestPaint(Node):
    canvas: Canvas = Input(optional=True)
    seed: int = Param(0, widget="seed")
    picture: Picture = Output()

    def run(self, ctx):
        return {"picture": None}


def entry(catalog: list[dict], type_name: str) -> dict:
    return next(e for e in catalog if e["type"] == type_name)


def test_a_port_lists_the_types_the_engine_links_into_it():
    registry = NodeRegistry()
    registry.add(TestPaint)
    canvas = entry(registry.catalog(), "TestPaint")["inputs"][0]
    assert canvas["accepts"] == ["TEST_CANVAS", "TEST_PICTURE"]
    # the rule the catalog states is the one validation applies
    plan = compile_workflow({"format": "diffgraph/v1", "nodes": {
        "a": {"type": "TestPaint"},
        "b": {"type": "TestPaint", "inputs": {"canvas": "a.picture"}},
    }}, registry)
    assert plan.nodes["b"].links == {"canvas": ("a", "picture")}
    float_value = entry(default_registry().catalog(), "Float")["params"][0]
    assert float_value["accepts"] == ["FLOAT", "INT"]


def test_every_type_has_a_colour_and_a_new_type_gets_its_own():
    catalog = default_registry().catalog()
    image = entry(catalog, "SaveImage")["inputs"][0]
    assert image["type"] == "IMAGE" and image["colour"] == "#64dfdf"
    registry = NodeRegistry()
    registry.add(TestPaint)
    paint = entry(registry.catalog(), "TestPaint")
    assert paint["inputs"][0]["colour"] == "#123456"
    derived = paint["outputs"][0]["colour"]
    assert derived.startswith("hsl(") and derived == Picture.display_colour()
    for spec in catalog:
        for port in [*spec["inputs"], *spec["params"], *spec["outputs"]]:
            assert port["colour"], f"{spec['type']}.{port['name']} has no colour"


def test_params_say_which_widget_they_want():
    catalog = default_registry().catalog()
    widgets = {(spec["type"], p["name"]): p["widget"] for spec in catalog for p in spec["params"] if p["widget"]}
    assert widgets[("LoadImage", "image")] == "upload"
    assert widgets[("Seed", "value")] == "seed"
    assert widgets[("SampleLoop", "seed")] == "seed"
    # a model param says which kind of model it takes: the editor lists only those (GET /api/models?kind=)
    assert widgets[("LoadPipeline", "model")] == "model:pipeline"
    assert widgets[("LoadVAE", "model")] == "model:vae"
    assert ("SaveImage", "prefix") not in widgets
    assert entry(catalog, "String")["params"][0]["multiline"] is True


def test_an_unknown_widget_is_refused_when_the_node_is_declared():
    with pytest.raises(TypeError, match="widget 'slider' is not one of"):
        @node("TestBadWidget")
        class TestBadWidget(Node):
            value: int = Param(0, widget="slider")


def test_a_model_widget_of_an_unknown_kind_is_refused_when_the_node_is_declared():
    with pytest.raises(TypeError, match=r"widget 'model:lroa' is not one of .* model:<kind> with a kind in .*'lora'"):
        @node("TestBadModelKind")
        class TestBadModelKind(Node):
            model: str = Param("", widget="model:lroa")
