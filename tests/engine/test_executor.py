"""The executor in-process: events, cancellation from another thread, failures, freeing intermediates."""

from __future__ import annotations

import gc
import threading

import pytest

from diffgraph.engine import (
    Cache,
    CancelToken,
    Executor,
    MemoryCache,
    Node,
    Output,
    String,
    compile_workflow,
    node,
)


def plan_of(nodes: dict, registry, **top):
    return compile_workflow({"format": "diffgraph/v1", **top, "nodes": nodes}, registry)


def test_events_of_a_run_then_of_a_cached_re_run(registry):
    plan = plan_of({
        "one": {"type": "TestAdd", "params": {"a": 1}},
        "slow": {"type": "TestSlow", "inputs": {"value": "one.total"}, "params": {"steps": 3, "delay": 0}},
    }, registry)
    executor = Executor(Cache())
    events: list[dict] = []
    result = executor.run(plan, on_event=events.append)
    assert result.status == "succeeded" and result.executed == ["one", "slow"]
    assert [e["type"] for e in events] == [
        "run_started", "node_started", "node_finished", "node_started",
        "progress", "progress", "progress", "node_finished", "run_finished"]
    assert [(e["step"], e["total"]) for e in events if e["type"] == "progress"] == [(1, 3), (2, 3), (3, 3)]
    assert {e["run_id"] for e in events} == {result.run_id}

    events.clear()
    again = executor.run(plan, on_event=events.append)
    assert again.executed == [] and again.cached == ["slow"]
    assert [e["type"] for e in events] == ["run_started", "node_cached", "run_finished"]


def test_only_nodes_the_targets_need_run(registry):
    plan = plan_of({
        "a": {"type": "TestAdd", "params": {"a": 1}},
        "b": {"type": "TestAdd", "inputs": {"a": "a.total"}},
        "unrelated": {"type": "TestAdd", "params": {"a": 2}},
    }, registry)
    result = Executor(Cache()).run(plan, targets=["b"])
    assert result.executed == ["a", "b"]
    with pytest.raises(ValueError, match="no such nodes to run: 'c'"):
        Executor(Cache()).run(plan, targets=["b", "c"])


def test_cancel_from_another_thread_stops_a_long_node(registry):
    plan = plan_of({
        "slow": {"type": "TestSlow", "params": {"steps": 100_000, "delay": 0.001}},
        "after": {"type": "TestAdd", "inputs": {"a": "slow.out"}},
    }, registry)
    cancel = CancelToken()
    steps: list[int] = []
    canceller = threading.Timer(0.3, cancel.cancel)

    def on_event(event):
        if event["type"] == "progress":
            steps.append(event["step"])
            if event["step"] == 1:
                canceller.start()

    executor = Executor(Cache())
    events: list[str] = []
    result = executor.run(plan, cancel=cancel, on_event=lambda e: (events.append(e["type"]), on_event(e)))
    assert result.status == "cancelled"
    assert 1 < len(steps) < 100_000  # the node polled the token while it ran
    assert events[-1] == "run_cancelled" and "node_finished" not in events
    assert result.executed == [] and len(executor.cache.memory) == 0  # nothing half-done was stored


def test_cancel_between_nodes(registry):
    plan = plan_of({
        "a": {"type": "TestAdd", "params": {"a": 1}},
        "b": {"type": "TestAdd", "inputs": {"a": "a.total"}},
    }, registry)
    cancel = CancelToken()

    def on_event(event):
        if event["type"] == "node_finished":
            cancel.cancel()

    result = Executor(Cache()).run(plan, cancel=cancel, on_event=on_event)
    assert result.status == "cancelled" and result.executed == ["a"]


def test_a_failing_node_fails_the_run_and_what_ran_before_stays_cached(registry):
    plan = plan_of({
        "a": {"type": "TestAdd", "params": {"a": 1}},
        "bad": {"type": "TestFail", "inputs": {"value": "a.total"}, "params": {"message": "no good"}},
    }, registry)
    executor = Executor(Cache())
    events: list[dict] = []
    result = executor.run(plan, on_event=events.append)
    assert result.status == "failed" and result.failed_node == "bad"
    assert result.error == "node 'bad' (TestFail), field 'message': no good"
    failed = [e for e in events if e["type"] == "node_failed"][0]
    assert failed["node"] == "bad" and failed["node_type"] == "TestFail" and failed["error"] == "no good"
    assert events[-1]["type"] == "run_failed"
    again = executor.run(plan)
    assert again.cached == ["a"] and again.status == "failed"


def test_a_node_bug_is_reported_with_its_exception_type(registry):
    plan = plan_of({"bad": {"type": "TestFail", "params": {"bug": True, "message": "oops"}}}, registry)
    result = Executor(Cache()).run(plan)
    assert result.error == "node 'bad' (TestFail): ZeroDivisionError: oops"


def test_a_linked_value_out_of_bounds_fails_at_run_time_naming_the_field(registry):
    plan = plan_of({
        "big": {"type": "Float", "params": {"value": 5e6}},
        "add": {"type": "TestAdd", "inputs": {"a": "big.number"}},
    }, registry)
    result = Executor(Cache()).run(plan)
    assert result.status == "failed" and result.failed_node == "add"
    assert "field 'a'" in result.error and "less than or equal to 1000000" in result.error


def test_intermediates_nothing_downstream_needs_are_freed(registry):
    """`early` is read only by `open_early`; by the time `late_use` starts it must be gone, while
    `kept` (read again by the last node) must still be alive."""
    plan = plan_of({
        "early": {"type": "TestMakeBox", "params": {"number": 1}},
        "open_early": {"type": "TestOpenBox", "inputs": {"box": "early.box"}},
        "kept": {"type": "TestMakeBox", "params": {"number": 2}},
        "open_kept": {"type": "TestOpenBox", "inputs": {"box": "kept.box"}},
        "late_use": {"type": "TestAdd", "inputs": {"a": "open_early.number", "b": "open_kept.number"}},
        "last": {"type": "TestOpenBox", "inputs": {"box": "kept.box"}, "params": {"extra": 0.5}},
    }, registry)
    assert plan.order.index("late_use") < plan.order.index("last")
    services: dict = {}
    alive_at_late_use: dict[str, bool] = {}

    def on_event(event):
        if event["type"] == "node_started" and event["node"] == "late_use":
            gc.collect()
            early, kept = services["boxes"]
            alive_at_late_use.update(early=early() is not None, kept=kept() is not None)

    # a memory cache with no room: the executor's own bookkeeping is all that could hold a value
    executor = Executor(Cache(MemoryCache(max_bytes=0)), services=services)
    result = executor.run(plan, targets=["late_use", "last"], on_event=on_event)
    assert result.status == "succeeded"
    assert alive_at_late_use == {"early": False, "kept": True}


@pytest.mark.parametrize(("device", "dtype"), [("tpu", "fp32"), ("cpu", "fp8")])
def test_unknown_device_or_dtype_is_refused(registry, device, dtype):
    plan = plan_of({"a": {"type": "TestAdd"}}, registry)
    with pytest.raises(ValueError):
        Executor(Cache()).run(plan, device=device, dtype=dtype)


def test_device_dtype_and_output_dir_are_chosen_per_run(registry, tmp_path):
    @node("TestWhere", category="test", deterministic=False)
    class Where(Node):
        """Report the run settings the node sees."""

        where: String = Output()

        def run(self, ctx):
            return {"where": f"{ctx.device} {ctx.dtype} {ctx.output_dir}"}

    registry.add(Where)
    plan = plan_of({"w": {"type": "TestWhere"}}, registry, outputs={"where": "w.where"})
    executor = Executor(Cache())
    assert executor.run(plan).values == {"where": "cpu fp32 outputs"}  # float32 on the CPU unless asked
    chosen = executor.run(plan, device="cuda:1", dtype="bf16", output_dir=tmp_path)
    assert chosen.values == {"where": f"cuda:1 bf16 {tmp_path}"}


def test_another_dtype_or_device_kind_never_reuses_a_result(registry):
    """A picture computed in fp32 is no answer for a bf16 run; each (dtype, device kind) has its entries."""
    plan = plan_of({"one": {"type": "TestAdd", "params": {"a": 1}}}, registry)
    executor = Executor(Cache())
    assert executor.run(plan).executed == ["one"]
    assert executor.run(plan).cached == ["one"]
    assert executor.run(plan, dtype="bf16").executed == ["one"]
    assert executor.run(plan, dtype="bf16").cached == ["one"]
    assert executor.run(plan, device="cuda:1").executed == ["one"]  # nodes decide availability; TestAdd runs
    assert executor.run(plan, device="cuda:0").cached == ["one"]
    fp32 = executor.cached_outputs(plan, "one")
    assert fp32 is not None and executor.cached_outputs(plan, "one", dtype="bf16") == fp32
    assert executor.cached_outputs(plan, "one", dtype="fp16") is None
