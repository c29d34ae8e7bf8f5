"""The README quickstart's sampling on an idle CPU and with busy neighbours, with torch's own thread
defaults (the behaviour before the thread policy) and with diffgraph's policy (DIFFGRAPH_THREADS=auto).

Each measurement is one `diffgraph run workflows/txt2img.yaml --set prompt=... --json --no-cache` in a
new process; the figure is SampleLoop's seconds from --json (median of --repeats). "Busy" starts
`--busy` (default 2) processes spinning `while True: pass` a few seconds before the run.

    python bench/bench_threads.py [--repeats 3] [--busy 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROMPT = "prompt=a red circle on a white background"


def sampling_seconds(policy: str, output_dir: Path) -> float:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OMP_", "MKL_", "DIFFGRAPH_THREADS"))}
    env.update(DIFFGRAPH_THREADS=policy, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1")
    done = subprocess.run([sys.executable, "-m", "diffgraph.cli", "run", "workflows/txt2img.yaml", "--set", PROMPT,
                           "--json", "--no-cache", "--output-dir", str(output_dir)],
                          capture_output=True, text=True, cwd=ROOT, env=env, timeout=1800)
    if done.returncode != 0:
        raise SystemExit(f"the run failed:\n{done.stderr[-2000:]}")
    return float(json.loads(done.stdout)["seconds"]["sample"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--busy", type=int, default=2, help="busy background processes (default 2)")
    args = parser.parse_args()
    policies = {"torch defaults": "torch", "policy (auto)": "auto"}
    seconds: dict[tuple[str, str], float] = {}
    with tempfile.TemporaryDirectory(prefix="diffgraph-bench-threads-") as tmp:
        for condition in ("idle", "busy"):
            spinners = []
            if condition == "busy":
                spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.busy)]
                time.sleep(3)
            try:
                load = os.getloadavg()[0]
                for label, policy in policies.items():
                    runs = [sampling_seconds(policy, Path(tmp)) for _ in range(args.repeats)]
                    seconds[(condition, label)] = statistics.median(runs)
                    print(f"{condition:5} {label:15} SampleLoop {statistics.median(runs):7.3f} s (median; runs "
                          f"{', '.join(f'{r:.3f}' for r in runs)}; load average {load:.1f})", flush=True)
            finally:
                for spinner in spinners:
                    spinner.kill()
                    spinner.wait()
    print(f"\nmachine: {len(os.sched_getaffinity(0))} usable CPUs; busy = {args.busy} spinning processes")
    for label in policies:
        ratio = seconds[("busy", label)] / seconds[("idle", label)]
        print(f"{label:15} busy/idle ratio {ratio:6.2f}")
    print(f"busy, torch defaults / policy: {seconds[('busy', 'torch defaults')] / seconds[('busy', 'policy (auto)')]:.1f}x")


if __name__ == "__main__":
    main()
