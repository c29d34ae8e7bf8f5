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
    assert [payload(f)["step"] for chunk in await everything.take() for f in split(chunk)] == [0, 1, 2, 3, 4]
    assert [payload(f)["step"] for chunk in await one.take() for f in split(chunk)] == [0, 2, 4]
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
    assert [payload(f)["type"] for chunk in await fast.take() for f in split(chunk)] == ["run_finished"]


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


async def test_events_from_the_worker_thread_arrive_in_order_in_few_loop_callbacks():
    import asyncio
    import threading

    loop = asyncio.get_running_loop()
    hub = Hub()
    everything, one = hub.subscribe(None), hub.subscribe("a")
    flushes = 0
    flush = hub.flush

    def counted_flush() -> None:
        nonlocal flushes
        flushes += 1
        flush()

    hub.flush = counted_flush  # type: ignore[method-assign]

    def worker() -> None:
        for step in range(1000):
            hub.publish_threadsafe(loop, "a" if step % 2 else "b", json.dumps({"run_id": "x", "step": step}))

    thread = threading.Thread(target=worker)
    thread.start()
    await asyncio.to_thread(thread.join)
    await asyncio.sleep(0)
    hub.publish_event({"type": "run_finished", "run_id": "a", "step": 1000})  # sent after what the thread queued
    assert await steps_until(everything, 1000) == list(range(1001))
    assert await steps_until(one, 1000) == list(range(1, 1000, 2)) + [1000]
    assert flushes < 1000  # batched: far fewer loop callbacks than events


async def test_an_attached_client_that_keeps_up_is_written_directly_and_a_stalled_one_queues():
    import asyncio
    import socket

    server_side, client_side = socket.socketpair()
    server_side.setblocking(False)
    client_side.setblocking(False)
    _, writer = await asyncio.open_connection(sock=server_side)
    reader, _ = await asyncio.open_connection(sock=client_side)
    hub = Hub()
    subscriber = hub.subscribe(None)
    subscriber.attach(writer.transport, write_limit=64 * 1024)
    hub.publish_event({"type": "progress", "run_id": "r", "step": 0})
    await asyncio.sleep(0)  # the batch goes out on the loop's next turn
    assert not subscriber.frames  # straight to the socket, no sender task involved
    first = websocket_frame(json.dumps({"type": "progress", "run_id": "r", "step": 0}, ensure_ascii=False))
    assert await reader.readexactly(len(first)) == first

    big = "x" * 100_000  # the peer does not read: past the write limit, frames wait in the queue
    for step in range(1, 30):
        hub.publish_event({"type": "progress", "run_id": "r", "step": step, "pad": big})
        await asyncio.sleep(0)
    assert subscriber.frames and writer.transport.get_write_buffer_size() > 64 * 1024
    queued = [payload_any(frame)["step"] for frame in await subscriber.take()]
    assert queued == list(range(queued[0], 30))  # in order, after those already written
    writer.close()
    client_side.close()


async def steps_until(subscriber, last: int) -> list[int]:
    steps: list[int] = []
    while not steps or steps[-1] != last:
        steps += [payload(frame)["step"] for chunk in await subscriber.take() for frame in split(chunk)]
    return steps


def split(chunk: bytes) -> list[bytes]:
    """The frames of a batch (short text frames only)."""
    frames = []
    while chunk:
        assert chunk[0] == 0x81 and chunk[1] < 126
        frames.append(chunk[:2 + chunk[1]])
        chunk = chunk[2 + chunk[1]:]
    return frames


def payload_any(frame: bytes) -> dict:
    """The JSON of one unmasked text frame of any length."""
    length, offset = frame[1] & 0x7F, 2
    if length == 126:
        length, offset = int.from_bytes(frame[2:4], "big"), 4
    elif length == 127:
        length, offset = int.from_bytes(frame[2:10], "big"), 10
    return json.loads(frame[offset:offset + length])
