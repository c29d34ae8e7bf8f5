"""Primitive nodes: constants that feed params of other nodes through links."""

from __future__ import annotations

from typing import Any

from diffgraph.engine import Float, Int, Node, Output, Param, RunContext, String, node


@node("Int", category="primitive", disk_cache=False)
class IntValue(Node):
    """A whole number."""

    value: int = Param(0)
    outputs = {"number": Output(Int)}

    def run(self, ctx: RunContext) -> dict[str, Any]:
        return {"number": self.value}


@node("Float", category="primitive", disk_cache=False)
class FloatValue(Node):
    """A decimal number."""

    value: float = Param(0.0)
    outputs = {"number": Output(Float)}

    def run(self, ctx: RunContext) -> dict[str, Any]:
        return {"number": self.value}


@node("String", category="primitive", disk_cache=False)
class StringValue(Node):
    """A piece of text, such as a prompt."""

    value: str = Param("", multiline=True)
    outputs = {"text": Output(String)}

    def run(self, ctx: RunContext) -> dict[str, Any]:
        return {"text": self.value}


@node("Seed", category="primitive", disk_cache=False)
class SeedValue(Node):
    """A random seed: the same seed gives the same picture on every device."""

    value: int = Param(0, ge=0, le=2**64 - 1, widget="seed")
    outputs = {"seed": Output(Int)}

    def run(self, ctx: RunContext) -> dict[str, Any]:
        return {"seed": self.value}


NODES = [IntValue, FloatValue, StringValue, SeedValue]
