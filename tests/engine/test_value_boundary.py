"""The node boundary: before a node runs, the engine checks every linked value against its port type
(`PortType.check`), and a value that is not one fails the run with one message shape naming the
node, the field, the type expected and what came from where. The wrong values come from a node
pack's node that declares one output type and returns something else."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from diffgraph.engine import (
    Cache,
    Executor,
    Input,
    Int,
    Node,
    NodeRegistry,
    Output,
    PortType,
    RunContext,
    compile_workflow,
    node,
)
from diffgraph.nodes import images, latents, primitives, sampling
from diffgraph.nodes import types as port_types
from diffgraph.nodes.models import ModelRef

#: what the nodes under test saw: a node that runs after a refused value would be a failed check
RAN: list[str] = []


def emitter(port_type: type[PortType], value: Any, prefix: str = "Emit") -> type[Node]:
    """A node pack's node that promises `port_type` and returns `value`."""

    @node(f"{prefix}{port_type.name.title().replace('_', '')}", category="test")
    class Emit(Node):
        outputs = {"value": Output(port_type)}

        def run(self, ctx: RunContext) -> dict[str, Any]:
            return {"value": value}

    return Emit


@node("TakeInt", category="test")
class TakeInt(Node):
    number: int = Input(Int)
    outputs = {"number": Output(Int)}

    def run(self, ctx: RunContext) -> dict[str, Any]:
        RAN.append(ctx.node_id)
        return {"number": self.number}


def run_failing(nodes: dict[str, Any], *emitters: type[Node]) -> tuple[str | None, str | None]:
    """Run the workflow; return (failed node, error) after checking the consumer never ran."""
    registry = NodeRegistry()
    registry.add(*primitives.NODES, *images.NODES, *latents.NODES, *sampling.NODES, TakeInt, *emitters)
    plan = compile_workflow({"format": "diffgraph/v1", "nodes": nodes}, registry)
    RAN.clear()
    result = Executor(Cache()).run(plan)
    assert result.status == "failed", result
    assert RAN == []
    return result.failed_node, result.error


VAE_REF = ModelRef(kind="vae", path="/nowhere/model", subfolder="vae")


def test_a_latent_that_is_not_one_names_node_field_type_and_what_came():
    bad = emitter(port_types.Latent, {"sample": torch.zeros(1, 4, 8, 8)})
    vae = emitter(port_types.VAE, VAE_REF)
    failed, error = run_failing({
        "bad": {"type": bad.__node_spec__.type_name},
        "vae": {"type": vae.__node_spec__.type_name},
        "decode": {"type": "VAEDecode", "inputs": {"vae": "vae.value", "latent": "bad.value"}},
    }, bad, vae)
    assert failed == "decode"
    assert error == ("node 'decode' (VAEDecode), field 'latent': expected LATENT (a dict of tensors with "
                     "\"samples\" [B, C, h, w], as EmptyLatent and VAEEncode make), got a dict with keys sample "
                     "from bad.value")


@pytest.mark.parametrize(("port_type", "value", "consumer", "field", "links", "got"), [
    (port_types.Latent, {"samples": torch.zeros(4, 8, 8)}, "VAEDecode", "latent", {"vae": "vae.value"},
     "got a dict with keys samples"),
    (port_types.Conditioning, torch.zeros(1, 77, 32), "SampleLoop", "positive",
     {"unet": "unet.value", "scheduler": "scheduler.value", "latent": "latent.value"},
     "got a Tensor of shape [1, 77, 32]"),
    (port_types.Conditioning, {}, "SampleLoop", "negative",
     {"unet": "unet.value", "scheduler": "scheduler.value", "latent": "latent.value"}, "got an empty dict"),
    (port_types.Image, torch.zeros(1, 1, 8, 8), "PasteBack", "image",
     {"original": "image.value", "mask": "mask.value"}, "got a Tensor of shape [1, 1, 8, 8]"),
    (port_types.Image, "picture.png", "SaveImage", "images", {}, "got a str"),
    (port_types.Mask, torch.zeros(1, 3, 8, 8), "PasteBack", "mask",
     {"image": "image.value", "original": "image.value"}, "got a Tensor of shape [1, 3, 8, 8]"),
    (port_types.Depth, [1.0, 2.0], "SampleLoop", "depth",
     {"unet": "unet.value", "scheduler": "scheduler.value", "latent": "latent.value"}, "got a list of 2 items"),
    (port_types.UNet, VAE_REF, "SampleLoop", "unet",
     {"scheduler": "scheduler.value", "latent": "latent.value"}, "got a reference to a vae"),
    (port_types.VAE, None, "VAEDecode", "vae", {"latent": "latent.value"},
     "got nothing: the model loaded upstream has none"),
    (port_types.TextEncoder, {"path": "/models/x"}, "TextEncode", "text_encoder", {}, "got a dict with keys path"),
    (port_types.Scheduler, "euler", "SampleLoop", "scheduler",
     {"unet": "unet.value", "latent": "latent.value"}, "got a str"),
])
def test_each_port_family_refuses_what_it_does_not_carry(port_type, value, consumer, field, links, got):
    good = {  # valid values for the consumer's other inputs
        "vae": emitter(port_types.VAE, VAE_REF),
        "unet": emitter(port_types.UNet, ModelRef(kind="unet", path="/nowhere/model", subfolder="unet")),
        "scheduler": emitter(port_types.Scheduler, ModelRef(kind="scheduler", path="/nowhere/model")),
        "latent": emitter(port_types.Latent, {"samples": torch.zeros(1, 4, 8, 8)}),
        "image": emitter(port_types.Image, torch.zeros(1, 3, 8, 8)),
        "mask": emitter(port_types.Mask, torch.zeros(1, 1, 8, 8)),
    }
    bad = emitter(port_type, value, prefix="Wrong")
    used = {source.split(".")[0] for source in links.values()}
    nodes: dict[str, Any] = {name: {"type": good[name].__node_spec__.type_name} for name in used}
    nodes["bad"] = {"type": bad.__node_spec__.type_name}
    nodes["consumer"] = {"type": consumer, "inputs": {**links, field: "bad.value"}}
    failed, error = run_failing(nodes, bad, *(good[name] for name in used))
    assert failed == "consumer"
    assert error is not None
    assert error.startswith(f"node 'consumer' ({consumer}), field '{field}': expected {port_type.name} "
                            f"({port_type.description}), ")
    assert error.endswith(f", {got} from bad.value")


def test_an_engine_type_is_checked_the_same_way():
    bad = emitter(Int, "3")
    failed, error = run_failing({
        "bad": {"type": bad.__node_spec__.type_name},
        "take": {"type": "TakeInt", "inputs": {"number": "bad.value"}},
    }, bad)
    assert (failed, error) == ("take", "node 'take' (TakeInt), field 'number': expected INT (a whole number), "
                                       "got a str from bad.value")


def test_true_is_not_a_number():
    bad = emitter(Int, True)
    _, error = run_failing({
        "bad": {"type": bad.__node_spec__.type_name},
        "take": {"type": "TakeInt", "inputs": {"number": "bad.value"}},
    }, bad)
    assert error is not None and error.endswith("got a bool from bad.value")


def test_values_of_the_right_type_pass_the_boundary():
    good = emitter(Int, 3)
    registry = NodeRegistry()
    registry.add(TakeInt, good)
    plan = compile_workflow({"format": "diffgraph/v1", "nodes": {
        "good": {"type": good.__node_spec__.type_name},
        "take": {"type": "TakeInt", "inputs": {"number": "good.value"}},
    }}, registry)
    RAN.clear()
    result = Executor(Cache()).run(plan)
    assert result.status == "succeeded" and RAN == ["take"]


def test_each_port_type_accepts_what_its_nodes_make():
    ref = ModelRef(kind="unet", path="/nowhere")
    accepted = [
        (port_types.Latent, {"samples": torch.zeros(1, 4, 8, 8), "std": torch.ones(1, 4, 8, 8)}),
        (port_types.Conditioning, {"embeds": torch.zeros(1, 77, 32)}),
        (port_types.Image, torch.zeros(2, 3, 8, 8)),
        (port_types.Image, torch.zeros(2, 3, 8, 8).numpy()),  # the disk cache's form (SaveImage takes it)
        (port_types.Mask, torch.zeros(1, 1, 8, 8)),
        (port_types.Depth, torch.zeros(1, 1, 4, 4)),
        (port_types.UNet, ref),
    ]
    for port_type, value in accepted:
        assert port_type.check(value) is None, port_type.name


def test_an_output_declared_apart_may_share_a_name_with_an_input():
    @node("Same", category="test")
    class Same(Node):
        number: int = Input(Int)
        outputs = {"number": Output(Int)}

        def run(self, ctx: RunContext) -> dict[str, Any]:
            return {"number": self.number + 1}

    spec = Same.__node_spec__
    assert list(spec.inputs) == ["number"] and list(spec.outputs) == ["number"]
    assert spec.inputs["number"].port_type is Int and spec.outputs["number"].port_type is Int


def test_an_outputs_entry_must_name_a_port_type():
    with pytest.raises(TypeError, match=r"Broken.outputs\['x'\]: declare it as Output\(<a PortType>\)"):
        @node("Broken", category="test")
        class Broken(Node):
            outputs = {"x": Output()}
