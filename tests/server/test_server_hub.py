"""The event hub in-process: per-run filtering, order, and dropping a client that stops reading."""

from __future__ import annotations

import json

from diffgraph.server.worker import Hub


async def test_a_subscriber_gets_its_runs_events_in_order_and_nothing_else():
    hub = Hub()
    everything, one = hub.subscribe(None), hub.subscribe("a")
    for index, run_id in enumerate(["a", "b", "a", "b", "a"]):
        hub.publish_event({"type": "progress", "run_id": run_id, "step": index})
    assert [json.loads(everything.get_nowait())["step"] for _ in range(5)] == [0, 1, 2, 3, 4]
    assert [json.loads(one.get_nowait())["step"] for _ in range(3)] == [0, 2, 4]
    assert one.empty() and everything.empty()


async def test_a_client_that_stops_reading_is_dropped_not_buffered_forever():
    hub = Hub(max_pending=3)
    slow, fast = hub.subscribe(None), hub.subscribe(None)
    for step in range(4):
        hub.publish_event({"type": "progress", "run_id": "r", "step": step})
        while not fast.empty():
            fast.get_nowait()
    assert slow.get_nowait() is None and slow.empty()  # the goodbye, then nothing
    assert len(hub) == 1
    hub.publish_event({"type": "run_finished", "run_id": "r"})
    assert json.loads(fast.get_nowait())["type"] == "run_finished"
