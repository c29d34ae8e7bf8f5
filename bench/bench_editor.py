"""Editor benchmark (issue 5): time from navigation to an interactive 500-node workflow, and frame
time while panning it, in Debian's Chromium (headless, software rendering) against a real server.

    python bench/bench_editor.py [--nodes 500] [--pan-ms 3000]

Starts `diffgraph serve` on a free loopback port with a temporary data directory, saves a
generated workflow (groups of LoadImage -> Mask <- Seed, Float, String, with links and positions)
into its library, then runs web/e2e/bench_500.mjs, which opens `/?library=NAME`. Prints the
measurements and their ratio to the targets (under 2 s to interactive, under 33 ms a frame).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from e2e.test_editor_e2e import EditorServer  # noqa: E402

TARGET_INTERACTIVE_MS = 2000
TARGET_FRAME_MS = 33


def generated_workflow(count: int) -> dict:
    """`count` nodes in groups of five, laid out on a grid as the editor would save them."""
    nodes: dict[str, dict] = {}
    per_row = 8
    for group in range(count // 5 + 1):
        row, column = divmod(group, per_row)
        x, y = column * 1500, row * 620
        members = {
            f"load{group}": {"type": "LoadImage", "params": {"image": f"input_{group}.png"},
                             "metadata": {"position": {"x": x, "y": y}}},
            f"seed{group}": {"type": "Seed", "params": {"value": group},
                             "metadata": {"position": {"x": x, "y": y + 160}}},
            f"threshold{group}": {"type": "Float", "params": {"value": 0.5},
                                  "metadata": {"position": {"x": x, "y": y + 300}}},
            f"mask{group}": {"type": "Mask",
                             "inputs": {"image": f"load{group}.image", "x": f"seed{group}.seed",
                                        "threshold": f"threshold{group}.number"},
                             "params": {"grow": 4, "feather": 2},
                             "metadata": {"position": {"x": x + 380, "y": y}}},
            f"note{group}": {"type": "String", "params": {"value": f"group {group}\nsecond line"},
                             "metadata": {"position": {"x": x + 760, "y": y}}},
        }
        for node_id, spec in members.items():
            if len(nodes) < count:
                nodes[node_id] = spec
    return {"format": "diffgraph/v1", "name": f"bench{count}", "nodes": nodes}


def put_workflow(url: str, name: str, document: dict) -> None:
    request = urllib.request.Request(
        f"{url}/api/workflows/{name}", method="PUT", data=json.dumps({"workflow": document}).encode(),
        headers={"Content-Type": "application/json", "Origin": url},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        response.read()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=500)
    parser.add_argument("--pan-ms", type=int, default=3000)
    parser.add_argument("--artifacts", default=str(ROOT / "artifacts"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as data:
        server = EditorServer(Path(data))
        try:
            name = f"bench{args.nodes}"
            put_workflow(server.url or "", name, generated_workflow(args.nodes))
            result = subprocess.run(
                ["node", str(ROOT / "web" / "e2e" / "bench_500.mjs"), server.url or "", name,
                 "--artifacts", args.artifacts, "--pan-ms", str(args.pan_ms)],
                capture_output=True, text=True, timeout=300, cwd=ROOT,
            )
        finally:
            server.stop()
    if result.returncode != 0:
        print(result.stdout + result.stderr, file=sys.stderr)
        return 1
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    print(json.dumps(figures, indent=2))
    # browser timings on a shared machine depend on what else runs: say how busy it was
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} during the run")
    print(f"time to interactive: {figures['interactive_ms']} ms for {figures['nodes']} nodes "
          f"= {figures['interactive_ms'] / TARGET_INTERACTIVE_MS:.2f} x the {TARGET_INTERACTIVE_MS} ms target")
    print(f"pan frame time: mean {figures['frame_ms_mean']} ms, p95 {figures['frame_ms_p95']} ms "
          f"= {figures['frame_ms_mean'] / TARGET_FRAME_MS:.2f} (mean) and {figures['frame_ms_p95'] / TARGET_FRAME_MS:.2f} (p95) "
          f"x the {TARGET_FRAME_MS} ms target")
    print(f"during the pan: {figures['pan_dom_mutations']} DOM changes inside nodes and links (zoomed in: "
          f"{figures['zoomed_pan_dom_mutations']}, nodes entering and leaving the view); main thread ms "
          f"{figures['pan_main_thread_ms']}")
    print(f"zoomed in to reading size: {figures['zoom_in_ms']} ms, {figures['zoomed_rendered_nodes']} nodes drawn, "
          f"pan mean {figures['zoomed_frame_ms_mean']} ms = {figures['zoomed_frame_ms_mean'] / TARGET_FRAME_MS:.2f} x target, "
          f"p95 {figures['zoomed_frame_ms_p95']} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
