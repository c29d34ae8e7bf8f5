"""The server's event fan-out alone, in one process: a worker thread publishes run events as fast as a
run of cheap workflows makes them while 500 WebSocket-like clients (real sockets, read by another
process) receive every event, and a probe on the event loop measures how late a 1 ms timer fires
(what /api/health waits for). Compares this checkout's Hub with the one of another source tree.

    python bench/bench_hub_fanout.py [--clients 500] [--events 1400] --before DIR
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import multiprocessing
import os
import socket
import sys
import threading
import time
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
WS_WRITE_BUFFER = 1024 * 1024  # as the server's


def load_worker_module(tree: Path, name: str) -> ModuleType:
    """diffgraph/server/worker.py of `tree`, importing its engine from this checkout."""
    spec = importlib.util.spec_from_file_location(name, tree / "diffgraph" / "server" / "worker.py",
                                                  submodule_search_locations=[])
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    module.__package__ = "diffgraph.server"  # its `from .store import ...` resolves in this checkout
    spec.loader.exec_module(module)
    return module


def drain(sockets: list[socket.socket], stop) -> None:
    """In another process: read every client socket until told to stop (a fast reader)."""
    import selectors

    selector = selectors.DefaultSelector()
    for sock in sockets:
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ)
    while not stop.is_set():
        for key, _ in selector.select(0.1):
            try:
                key.fileobj.recv(1 << 20)  # type: ignore[union-attr]
            except BlockingIOError:
                pass


async def measure(worker_module: ModuleType, clients: int, events: int) -> dict[str, float]:
    loop = asyncio.get_running_loop()
    hub = worker_module.Hub()
    pairs = [socket.socketpair() for _ in range(clients)]
    context = multiprocessing.get_context("fork")
    stop = context.Event()
    reader = context.Process(target=drain, args=([b for _, b in pairs], stop))
    reader.start()
    senders = []
    for server_side, _ in pairs:
        server_side.setblocking(False)
        _, writer = await asyncio.open_connection(sock=server_side)
        subscriber = hub.subscribe(None)
        if hasattr(subscriber, "attach"):
            subscriber.attach(writer.transport, WS_WRITE_BUFFER)
        senders.append(asyncio.create_task(forward(subscriber, writer.transport)))

    lateness: list[float] = []
    done = threading.Event()

    async def probe() -> None:
        while not done.is_set():
            started = time.perf_counter()
            await asyncio.sleep(0.001)
            lateness.append(time.perf_counter() - started - 0.001)

    def worker() -> None:  # a run's events: queued, started, 2 x (node started, finished), finished
        for index in range(events):
            event = {"type": "node_finished", "run_id": f"run-{index // 7}", "node": "n", "node_type": "Int",
                     "seconds": 0.000123}
            if hasattr(hub, "publish_threadsafe"):
                hub.publish_threadsafe(loop, event["run_id"], json.dumps(event))
            else:
                loop.call_soon_threadsafe(hub.publish_event, event)
            if index % 7 == 6:
                time.sleep(0.003)  # the run's own work: a cheap run takes a few ms
        done.set()

    prober = asyncio.create_task(probe())
    cpu, started = time.thread_time(), time.perf_counter()
    thread = threading.Thread(target=worker)
    thread.start()
    await asyncio.to_thread(thread.join)
    await asyncio.sleep(0.2)  # let the last batch go out
    elapsed, loop_cpu = time.perf_counter() - started, time.thread_time() - cpu
    await prober
    for task in senders:
        task.cancel()
    hub.close_all()
    stop.set()
    reader.join(10)
    for a, b in pairs:
        a.close()
        b.close()
    ordered = sorted(lateness)
    def rank(fraction: float) -> float:  # nearest-rank percentile, in ms
        return ordered[min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))] * 1000

    return {"p50": rank(0.5), "p99": rank(0.99), "samples": len(ordered),
            "max": ordered[-1] * 1000, "elapsed": elapsed, "loop_cpu": loop_cpu}


async def forward(subscriber: Any, transport: asyncio.WriteTransport) -> None:
    """What the server's WebSocket handler does with a subscriber's queued frames."""
    while True:
        frames = await subscriber.take()
        if frames is None:
            return
        if not transport.is_closing():
            transport.write(b"".join(frames))
        while transport.get_write_buffer_size() > WS_WRITE_BUFFER and not transport.is_closing():
            await asyncio.sleep(0.05)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=500)
    parser.add_argument("--events", type=int, default=1400, help="events published (7 per run; default 200 runs)")
    parser.add_argument("--before", required=True, help="another source tree whose Hub to compare with")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    results = {}
    modules = {label: load_worker_module(tree, f"hub_{label}")
               for label, tree in (("before", Path(args.before)), ("after", ROOT))}
    for round_ in (1, 2):  # the first round warms up; the ratio is the second's
        for label, module in modules.items():
            results[label] = r = asyncio.run(measure(module, args.clients, args.events))
            print(f"round {round_} {label:6}: loop timer lateness p50 {r['p50']:.1f} ms, p99 {r['p99']:.1f} ms, "
                  f"max {r['max']:.1f} ms; {args.events} events to {args.clients} clients in {r['elapsed']:.2f} s, "
                  f"event-loop CPU {r['loop_cpu']:.2f} s; {r['samples']} probes", flush=True)
    print(f"p99 before/after: {results['before']['p99'] / results['after']['p99']:.1f}x; event-loop CPU "
          f"before/after: {results['before']['loop_cpu'] / results['after']['loop_cpu']:.1f}x; "
          f"load average {os.getloadavg()[0]:.1f} on {len(os.sched_getaffinity(0))} CPUs")


if __name__ == "__main__":
    main()
