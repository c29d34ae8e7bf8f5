"""A run nobody listens to (no event sink) gives its nodes no progress callback, so that a sampling
loop skips the per-step preview pictures nobody would see; a listened run gets every step."""

from __future__ import annotations

from diffgraph.engine import Cache, Executor, Float, Node, NodeRegistry, Output, Param, compile_workflow, node


@node("TestPreviewing", category="test")
class Previewing(Node):
    """Report each step with a preview only when someone listens; output how many were made."""

    steps: int = Param(3, ge=1, le=100)
    previews: Float = Output()

    def run(self, ctx):
        made = 0
        for step in range(1, self.steps + 1):
            preview = None
            if ctx.on_progress is not None:  # as SampleLoop does: no listener, no preview picture
                preview, made = f"picture {step}", made + 1
            ctx.progress(step, self.steps, preview)
        return {"previews": float(made)}


def plan():
    registry = NodeRegistry()
    registry.add(Previewing)
    return compile_workflow({"format": "diffgraph/v1", "nodes": {"loop": {"type": "TestPreviewing"}},
                             "outputs": {"previews": "loop.previews"}}, registry)


def test_a_run_nobody_listens_to_makes_no_previews():
    result = Executor(Cache()).run(plan(), targets=["loop"])
    assert result.status == "succeeded"
    assert result.values["previews"] == 0.0


def test_a_listened_run_gets_every_step_with_its_preview():
    events: list[dict] = []
    result = Executor(Cache()).run(plan(), targets=["loop"], on_event=events.append)
    assert result.status == "succeeded" and result.values["previews"] == 3.0
    assert [(e["step"], e["preview"]) for e in events if e["type"] == "progress"] == [
        (1, "picture 1"), (2, "picture 2"), (3, "picture 3")]
