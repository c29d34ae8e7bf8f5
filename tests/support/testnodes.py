"""Test-only nodes, shipped to `diffgraph` subprocesses as a third-party node pack (see nodepack.py).

Every node appends "<node id>\\n" to the file named by $DIFFGRAPH_TEST_LOG (when set) each time it
really runs, so tests count executions across processes from the outside.
"""

from __future__ import annotations

import os
import random
import time
from pathlib import Path

from diffgraph.engine import Files, Float, Input, Node, NodeError, Output, Param, PortType, String, node

LOG_ENV = "DIFFGRAPH_TEST_LOG"


def record(ctx) -> None:
    log = os.environ.get(LOG_ENV)
    if log:
        with open(log, "a", encoding="utf-8") as handle:
            handle.write(ctx.node_id + "\n")


class Box(PortType):
    """A live object that only lives in memory, like a model."""

    name = "TEST_BOX"
    disk_cacheable = False


class BoxValue:
    """A weakref-able value, so tests can see when the executor lets go of it."""

    def __init__(self, number: float):
        self.number = number


@node("TestAdd", category="test")
class Add(Node):
    """Add two numbers; either may be linked from another node's FLOAT or INT output."""

    a: float = Param(0.0, ge=-1e6, le=1e6, doc="first term")
    b: float = Param(0.0, doc="second term")
    total: Float = Output(doc="a + b")

    def run(self, ctx):
        record(ctx)
        return {"total": self.a + self.b}


@node("TestConcat", category="test")
class Concat(Node):
    """Join two texts: a tensor-free output that the disk cache stores as JSON."""

    left: String = Input()
    right: str = Param("")
    text: String = Output()

    def run(self, ctx):
        record(ctx)
        return {"text": self.left + self.right}


@node("TestSlow", category="test")
class Slow(Node):
    """Count to `steps`, sleeping `delay` seconds per step, polling the cancel token each step."""

    steps: int = Param(10, ge=1, le=100_000)
    delay: float = Param(0.01, ge=0, le=10)
    value: float = Param(0.0)
    out: Float = Output()

    def run(self, ctx):
        record(ctx)
        for step in range(1, self.steps + 1):
            ctx.check_cancelled()
            time.sleep(self.delay)
            ctx.progress(step, self.steps)
        return {"out": self.value}


@node("TestFail", category="test")
class Fail(Node):
    """Fail on purpose: `bug` raises a plain exception, otherwise a NodeError naming `field`."""

    value: float = Param(0.0)
    message: str = Param("this node always fails")
    bug: bool = Param(False)
    out: Float = Output()

    def run(self, ctx):
        record(ctx)
        if self.bug:
            raise ZeroDivisionError(self.message)
        raise NodeError(self.message, field="message")


@node("TestRandom", category="test", deterministic=False)
class RandomNumber(Node):
    """A different number on every run: never served from the cache."""

    number: Float = Output()

    def run(self, ctx):
        record(ctx)
        return {"number": random.random()}


@node("TestWriteText", category="test", output_node=True)
class WriteText(Node):
    """Write `text` to <output dir>/<name>.txt; its FILES output is what `run --json` lists."""

    text: String = Input()
    name: str = Param("out")
    files: Files = Output()

    def run(self, ctx):
        record(ctx)
        path = Path(ctx.output_dir) / f"{self.name}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.text, encoding="utf-8")
        return {"files": [str(path)]}


@node("TestMakeBox", category="test")
class MakeBox(Node):
    """Make a live, memory-only object; the run's `services["boxes"]` list gets a weakref to it."""

    number: float = Param(1.0)
    box: Box = Output()

    def run(self, ctx):
        import weakref

        record(ctx)
        value = BoxValue(self.number)
        ctx.services.setdefault("boxes", []).append(weakref.ref(value))
        return {"box": value}


@node("TestOpenBox", category="test")
class OpenBox(Node):
    """Read the number out of a box."""

    box: Box = Input()
    extra: float = Param(0.0)
    number: Float = Output()

    def run(self, ctx):
        record(ctx)
        return {"number": self.box.number + self.extra}


NODES = [Add, Concat, Slow, Fail, RandomNumber, WriteText, MakeBox, OpenBox]


def register(registry) -> None:
    registry.add(*NODES)
