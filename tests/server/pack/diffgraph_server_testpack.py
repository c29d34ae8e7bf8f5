"""A tiny node pack for the server tests, registered through a dist-info entry point.

The tests put this folder on PYTHONPATH of the server subprocess; nothing here needs a model. It is
written in the current annotation style (the value a field gets; the port type as `Input`'s
argument; outputs declared apart); tests/support/testnodes.py keeps the deprecated one working.
"""

from __future__ import annotations

import os
import sys
import time
import uuid
from typing import Any

from diffgraph.engine import Files, Input, Int, Node, NodeError, Output, Param, RunContext, node


@node("TestSleep", category="test")
class Sleep(Node):
    """Sleep `seconds` in `steps` steps, reporting progress (and a preview image) each step."""

    value: int | None = Input(Int, optional=True)
    seconds: float = Param(0.1, ge=0, le=600)
    steps: int = Param(1, ge=1, le=10_000)
    preview: bool = Param(False)
    label: str = Param("")
    outputs = {"out": Output(Int)}

    def run(self, ctx: RunContext) -> dict[str, Any]:
        for step in range(self.steps):
            ctx.check_cancelled()
            time.sleep(self.seconds / self.steps)
            image = None
            if self.preview:
                from PIL import Image

                image = Image.new("RGB", (64, 48), (step * 10 % 256, 0, 0))
            ctx.progress(step + 1, self.steps, image)
        return {"out": (self.value or 0) + 1}


@node("TestWriteFile", category="test", output_node=True, deterministic=False)
class WriteFile(Node):
    """Write a file of the given kind into the output folder, atomically."""

    value: int | None = Input(Int, optional=True)
    kind: str = Param("png", choices=("png", "txt", "svg", "html"))
    prefix: str = Param("out")
    outputs = {"files": Output(Files)}

    def run(self, ctx: RunContext) -> dict[str, Any]:
        ctx.output_dir.mkdir(parents=True, exist_ok=True)
        target = ctx.output_dir / f"{self.prefix}-{uuid.uuid4().hex[:8]}.{self.kind}"
        temporary = target.with_name(f".{target.name}.tmp")
        if self.kind == "png":
            from PIL import Image

            Image.new("RGB", (8, 8), ((self.value or 0) % 256, 128, 255)).save(temporary, format="PNG")
        elif self.kind == "svg":
            temporary.write_text('<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>')
        elif self.kind == "html":
            temporary.write_text("<html><script>alert(1)</script></html>")
        else:
            temporary.write_text(f"value={self.value}\n")
        os.replace(temporary, target)
        return {"files": [str(target)]}


@node("TestFail", category="test")
class Fail(Node):
    """Always fails with a user-facing error naming its `reason` field."""

    value: int | None = Input(Int, optional=True)
    reason: str = Param("deliberate failure")
    outputs = {"out": Output(Int)}

    def run(self, ctx: RunContext) -> dict[str, Any]:
        raise NodeError(self.reason, field="reason")


@node("TestExit", category="test")
class Exit(Node):
    """Calls sys.exit: a node's bug that no `except Exception` catches."""

    value: int | None = Input(Int, optional=True)
    code: int = Param(3)
    outputs = {"out": Output(Int)}

    def run(self, ctx: RunContext) -> dict[str, Any]:
        sys.exit(self.code)


def register(registry):
    registry.add(Sleep, WriteFile, Fail, Exit)
