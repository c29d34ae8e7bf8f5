"""Primitive nodes: constants that feed params of other nodes through links."""

from __future__ import annotations

from diffgraph.engine import Float, Int, Node, Output, Param, String, node


@node("Int", category="primitive", disk_cache=False)
class IntValue(Node):
    """A whole number."""

    value: int = Param(0)
    number: Int = Output()

    def run(self, ctx):
        return {"number": self.value}


@node("Float", category="primitive", disk_cache=False)
class FloatValue(Node):
    """A decimal number."""

    value: float = Param(0.0)
    number: Float = Output()

    def run(self, ctx):
        return {"number": self.value}


@node("String", category="primitive", disk_cache=False)
class StringValue(Node):
    """A piece of text, such as a prompt."""

    value: str = Param("", multiline=True)
    text: String = Output()

    def run(self, ctx):
        return {"text": self.value}


@node("Seed", category="primitive", disk_cache=False)
class SeedValue(Node):
    """A random seed: the same seed gives the same picture on every device."""

    value: int = Param(0, ge=0, le=2**64 - 1, widget="seed")
    seed: Int = Output()

    def run(self, ctx):
        return {"seed": self.value}


NODES = [IntValue, FloatValue, StringValue, SeedValue]
