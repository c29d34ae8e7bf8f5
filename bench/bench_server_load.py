"""Load on a real `diffgraph serve`: 200 run submissions from 20 concurrent clients while 50
WebSocket listeners follow every run and a prober measures /api/health latency. `--heavy` is the
load of issue 10 (item 3.11): 500 WebSocket listeners and 200 submissions.

Checks (exit 1 when one fails): no run lost (every listener hears every run queued and finished),
all finish (succeeded), the order kept (runs start in submission order, each client's runs in the
order it sent them). Prints the /api/health latency percentiles measured while the load runs.

    python bench/bench_server_load.py [--runs 200] [--clients 20] [--listeners 50]
    python bench/bench_server_load.py --heavy                # 500 listeners
    python bench/bench_server_load.py --heavy --server-code DIR   # the server from another checkout
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp


def start_server(data_dir: Path, code: str | None, loop_debug: bool, loop_stalls: bool = False
                 ) -> tuple[subprocess.Popen, str]:
    env = dict(os.environ, PYTHONPATH=str(Path(code or Path(__file__).resolve().parents[1]).resolve()))
    stderr: Any = subprocess.DEVNULL
    if loop_debug:  # asyncio's debug mode logs every callback that holds the loop over 100 ms
        env["PYTHONASYNCIODEBUG"] = "1"
        stderr = open(data_dir / "server.log", "w")  # noqa: SIM115 - closed with the process
    # --loop-stalls: a sampler thread in the server records what its loop thread does when busy
    sampler = [str(Path(__file__).with_name("loop_stalls.py")), str(data_dir / "stalls.txt")] if loop_stalls else []
    # cwd: `python -m` puts the working directory first on sys.path, which would shadow PYTHONPATH
    # (a --server-code run would serve this checkout instead)
    process = subprocess.Popen([sys.executable, *sampler, "-m", "diffgraph.cli", "serve", "--port", "0", "--data-dir",
                                str(data_dir)], stdout=subprocess.PIPE, stderr=stderr, env=env, cwd=data_dir)
    assert process.stdout is not None
    for raw in process.stdout:
        match = re.search(r"serving on (http://\S+)", raw.decode())
        if match:
            return process, match.group(1)
    raise SystemExit("the server did not start")


def cheap_workflow(client: int, index: int) -> dict:
    return {"format": "diffgraph/v1", "name": f"load-{client}-{index}",
            "nodes": {"n": {"type": "Int", "params": {"value": client * 1000 + index}},
                      "f": {"type": "Float", "inputs": {"value": "n.number"}}},
            "outputs": {"value": "f.number"}}


async def listener(session: aiohttp.ClientSession, url: str, ready: asyncio.Event, connected: list,
                   total: int) -> dict[str, list[str]]:
    seen: dict[str, list[str]] = {"run_queued": [], "run_started": [], "run_finished": [], "other": []}
    async with session.ws_connect(f"{url}/ws", max_msg_size=0) as ws:
        connected.append(1)
        await ready.wait()
        while len(seen["run_finished"]) < total:
            message = await ws.receive(timeout=300)
            if message.type != aiohttp.WSMsgType.TEXT:
                if message.type == aiohttp.WSMsgType.BINARY:
                    continue
                raise RuntimeError(f"listener closed: {message}")
            event = json.loads(message.data)
            seen.get(event["type"], seen["other"]).append(event["run_id"])
    return seen


async def client(session: aiohttp.ClientSession, url: str, number: int, count: int) -> list[tuple[str, int]]:
    submitted = []
    for index in range(count):
        async with session.post(f"{url}/api/runs", json={"workflow": cheap_workflow(number, index)}) as response:
            body = await response.json()
            if response.status != 202:
                raise RuntimeError(f"submission refused: {response.status} {body}")
            submitted.append((body["id"], body["seq"]))
    return submitted


def probe_health(url: str, ready, stop, results) -> None:
    """In its own process, so the latency measured is the server's, not this script's busy loop.
    Returns (wall-clock time, seconds) per probe."""

    async def probe() -> list[tuple[float, float]]:
        samples = []
        async with aiohttp.ClientSession() as session:
            while not stop.is_set():
                started = time.perf_counter()
                async with session.get(f"{url}/api/health") as response:
                    await response.read()
                    assert response.status == 200
                samples.append((time.time(), time.perf_counter() - started))
                ready.set()
                await asyncio.sleep(0.01)
        return samples

    results.put(asyncio.run(probe()))


def cpu_seconds(pid: int) -> float:
    """User + system CPU time the server process has used (Linux /proc), or NaN."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return float("nan")


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


async def main(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory() as data:
        process, url = start_server(Path(data), args.server_code, args.loop_debug, args.loop_stalls)
        try:
            connector = aiohttp.TCPConnector(limit=0)
            async with aiohttp.ClientSession(connector=connector) as session:
                ready, connected = asyncio.Event(), []
                total = args.runs
                listeners = [asyncio.create_task(listener(session, url, ready, connected, total))
                             for _ in range(args.listeners)]
                while len(connected) < args.listeners:
                    await asyncio.sleep(0.01)
                ready.set()
                context = multiprocessing.get_context("spawn")
                probe_ready, stop, results = context.Event(), context.Event(), context.Queue()
                probe = context.Process(target=probe_health, args=(url, probe_ready, stop, results))
                probe.start()
                while not probe_ready.is_set():
                    await asyncio.sleep(0.05)
                await asyncio.sleep(args.baseline)  # health latency with the server idle, for comparison
                load_started = time.time()
                started = time.perf_counter()
                per_client = [total // args.clients + (1 if i < total % args.clients else 0)
                              for i in range(args.clients)]
                submissions = await asyncio.gather(*(client(session, url, i, n) for i, n in enumerate(per_client)))
                submitted_at = time.perf_counter() - started
                heard = await asyncio.gather(*listeners)
                elapsed = time.perf_counter() - started
                load_ended = time.time()
                stop.set()
                samples = results.get(timeout=60)
                idle = [seconds for when, seconds in samples if when < load_started]
                latencies = [seconds for when, seconds in samples if load_started <= when <= load_ended]
                probe.join(30)
                server_cpu = cpu_seconds(process.pid)
                records = {}
                async with session.get(f"{url}/api/runs?limit=500") as response:
                    for run in (await response.json())["runs"]:
                        records[run["id"]] = run
        finally:
            process.terminate()
            process.wait(30)
            stalls = ""
            if args.loop_stalls and (Path(data) / "stalls.txt").exists():
                stalls = (Path(data) / "stalls.txt").read_text(errors="replace")
            slow: list[float] = []
            slow_lines: list[tuple[str, str]] = []
            if args.loop_debug:
                log_text = (Path(data) / "server.log").read_text(errors="replace")
                slow_lines = re.findall(r"Executing (.*) took (\d+\.\d+) seconds", log_text)
                slow = [float(seconds) for _, seconds in slow_lines]

    ids = [run_id for batch in submissions for run_id, _ in batch]
    by_seq = [run_id for run_id, _ in sorted((pair for batch in submissions for pair in batch), key=lambda p: p[1])]
    problems = []
    if len(set(ids)) != total:
        problems.append(f"{total - len(set(ids))} submissions lost")
    for index, seen in enumerate(heard):
        for kind in ("run_queued", "run_started", "run_finished"):
            if sorted(seen[kind]) != sorted(ids):
                problems.append(f"listener {index} heard {len(set(seen[kind]))}/{total} {kind}")
        if seen["run_started"] != by_seq:
            problems.append(f"listener {index}: runs did not start in submission order")
    not_succeeded = [run_id for run_id in ids if records.get(run_id, {}).get("status") != "succeeded"]
    if not_succeeded:
        problems.append(f"{len(not_succeeded)} runs did not succeed")
    for batch in submissions:
        starts = [records[run_id]["started_at"] for run_id, _ in batch if run_id in records]
        if starts != sorted(starts):
            problems.append("a client's runs started out of the order it sent them")
            break
    messages = sum(len(v) for seen in heard for v in seen.values())

    if not latencies:  # the load was over before the first probe came back
        latencies = [seconds for _, seconds in samples[-1:]] or [float("nan")]
    p50, p99 = percentile(latencies, 0.50) * 1000, percentile(latencies, 0.99) * 1000
    print(f"runs: {total} from {args.clients} clients, {args.listeners} WebSocket listeners; server code: "
          f"{args.server_code or 'this checkout'}")
    print(f"submitted in {submitted_at:.2f} s; all finished and heard in {elapsed:.2f} s "
          f"({total / elapsed:.1f} runs/s); {messages} JSON events delivered")
    print(f"CPU: server {server_cpu:.2f} s, this script {time.process_time():.2f} s, over {elapsed:.2f} s wall; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(f"/api/health under load: {len(latencies)} probes, p50 {p50:.1f} ms, p99 {p99:.1f} ms, "
          f"max {max(latencies) * 1000:.1f} ms, mean {statistics.mean(latencies) * 1000:.1f} ms "
          f"(target p99 < 100 ms: {'met' if p99 < 100 else 'MISSED'})")
    if idle:
        print(f"/api/health idle (before the load): {len(idle)} probes, p50 {percentile(idle, 0.5) * 1000:.1f} ms, "
              f"p99 {percentile(idle, 0.99) * 1000:.1f} ms")
    if args.loop_debug:
        print(f"event loop (asyncio debug mode, which slows the server): {len(slow)} callbacks held it over 100 ms"
              + (f", longest {max(slow) * 1000:.0f} ms, together {sum(slow):.2f} s" if slow else ""))
        for callback, seconds in sorted(slow_lines, key=lambda line: -float(line[1]))[:10]:
            print(f"  {float(seconds) * 1000:.0f} ms: {callback[:300]}")
    if args.loop_stalls:
        blocks = re.split(r"\n(?=stall )", stalls.strip()) if stalls.strip() else []
        blocks.sort(key=lambda block: -float(block.split()[1]))
        print(f"event loop busy over 50 ms at a stretch (sampled): {len(blocks)} times; the longest:")
        for block in blocks[:args.show_stalls]:
            print("  " + block.replace("\n", "\n  "))
    print("none lost, all succeeded, order kept" if not problems else "PROBLEMS:\n  " + "\n  ".join(problems[:20]))
    return 1 if problems else 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--listeners", type=int, default=50)
    parser.add_argument("--baseline", type=float, default=2.0, help="seconds of idle health probes first")
    parser.add_argument("--heavy", action="store_true", help="issue 10's load: 500 listeners (overrides --listeners)")
    parser.add_argument("--loop-debug", action="store_true",
                        help="run the server in asyncio debug mode and count callbacks that block its loop")
    parser.add_argument("--loop-stalls", action="store_true",
                        help="sample the server's loop thread; list the stretches it was busy over 50 ms, with stacks")
    parser.add_argument("--show-stalls", type=int, default=8, help="how many of the longest stalls to print")
    parser.add_argument("--server-code", default=None, metavar="DIR",
                        help="run the server from this source tree (default: this checkout), to compare versions")
    arguments = parser.parse_args()
    if arguments.heavy:
        arguments.listeners = 500
    sys.exit(asyncio.run(main(arguments)))
