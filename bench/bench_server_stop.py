"""How fast a real `diffgraph serve` answers a validation naming a FIFO and stops on SIGTERM with a
run in progress: one run whose node checks cancellation every 0.1 s, one whose node never does.

    python bench/bench_server_stop.py
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "server"))
from server_support import Server, sleep_workflow, submit, wait_status  # noqa: E402


async def measure(steps: int) -> tuple[float, float, int]:
    data = Path(tempfile.mkdtemp()) / "data"
    server = Server(data)
    try:
        fifo = data / "uploads" / "pipe.png"
        os.mkfifo(fifo)
        document = {"format": "diffgraph/v1", "name": "fifo",
                    "nodes": {"load": {"type": "LoadImage", "params": {"image": "pipe.png"}}}}
        async with aiohttp.ClientSession() as session:
            run_id = await submit(session, server.url, sleep_workflow(seconds=600, steps=steps))
            await wait_status(session, server.url, run_id, ("running",))
            started = time.monotonic()
            async with session.post(f"{server.url}/api/validate", json={"workflow": document}) as response:
                await response.read()
            validated = time.monotonic() - started
        started = time.monotonic()
        code = server.stop()
        return validated, time.monotonic() - started, code
    finally:
        server.kill()


def main() -> int:
    for steps, what in ((6000, "checks cancellation every 0.1 s"), (1, "never checks cancellation")):
        validated, stopped, code = asyncio.run(measure(steps))
        print(f"run in progress that {what}: FIFO validation answered in {validated:.3f} s; "
              f"SIGTERM -> exit {code} in {stopped:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
