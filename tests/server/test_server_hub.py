"""The event hub in-process: per-run filtering, order, and dropping a client that stops reading."""

from __future__ import annotations

import json

from diffgraph.server.worker import Hub, websocket_frame


def payload(frame: bytes) -> dict:
    """The JSON of one short unmasked text frame."""
    assert frame[0] == 0x81 and frame[1] < 126
    return json.loads(frame[2:])


async def test_a_subscriber_gets_its_runs_events_in_order_and_nothing_else():
    hub = Hub()
    everything, one = hub.subscribe(None), hub.subscribe("a")
    for index, run_id in enumerate(["a", "b", "a", "b", "a"]):
        hub.publish_event({"type": "progress", "run_id": run_id, "step": index})
    assert [payload(frame)["step"] for frame in await everything.take()] == [0, 1, 2, 3, 4]
    assert [payload(frame)["step"] for frame in await one.take()] == [0, 2, 4]
    assert not everything.frames and not one.frames


async def test_a_client_that_stops_reading_is_dropped_not_buffered_forever():
    hub = Hub(max_pending=3)
    slow, fast = hub.subscribe(None), hub.subscribe(None)
    for step in range(4):
        hub.publish_event({"type": "progress", "run_id": "r", "step": step})
        await fast.take()
    assert await slow.take() is None and not slow.frames  # dropped, its backlog freed
    assert len(hub) == 1
    hub.publish_event({"type": "run_finished", "run_id": "r"})
    assert [payload(frame)["type"] for frame in await fast.take()] == ["run_finished"]


async def test_stopping_the_server_closes_every_subscriber():
    hub = Hub()
    subscribers = [hub.subscribe(None), hub.subscribe("x")]
    hub.close_all()
    assert len(hub) == 0
    assert [await s.take() for s in subscribers] == [None, None]


def test_frames_follow_rfc6455_length_encodings():
    assert websocket_frame("hi") == b"\x81\x02hi"
    medium, large = websocket_frame(b"x" * 300), websocket_frame(b"y" * 70_000)
    assert medium[:4] == b"\x82\x7e\x01\x2c" and medium[4:] == b"x" * 300
    assert large[:2] == b"\x82\x7f" and int.from_bytes(large[2:10], "big") == 70_000 and len(large) == 70_010
