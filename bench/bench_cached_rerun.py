"""A fully cached re-run of workflows/txt2img.yaml in a new process against `diffgraph validate` on the
same file: wall time of each, new processes, interleaved, median of --repeats; prints the ratio
(target at most 1.5) and whether the re-run imported torch or numpy.

Both run from compiled bytecode, as an installed package does: the script gives them a bytecode
folder of their own (PYTHONPYCACHEPREFIX, filled by the first run) even where the environment says
PYTHONDONTWRITEBYTECODE, which would make every process compile diffgraph's modules again.

    python bench/bench_cached_rerun.py [--repeats 7]
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
WORKFLOW = "workflows/txt2img.yaml"


def timed(args: list[str], env: dict[str, str]) -> tuple[float, str, str]:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=ROOT, env=env, timeout=900)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{done.stderr[-2000:]}")
    return seconds, done.stdout, done.stderr


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="diffgraph-bench-rerun-") as tmp:
        env = dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1", PYTHONPYCACHEPREFIX=f"{tmp}/bytecode")
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        run = ["-m", "diffgraph.cli", "run", WORKFLOW, "--json", "--cache-dir", f"{tmp}/cache",
               "--output-dir", f"{tmp}/out"]
        validate = ["-m", "diffgraph.cli", "validate", WORKFLOW]
        timed(validate, env)  # compiles what validate imports; the first run compiles the rest
        first, _, _ = timed(run, env)
        validations, reruns = [], []
        for _ in range(args.repeats):
            validations.append(timed(validate, env)[0])
            seconds, stdout, _ = timed(run, env)
            reruns.append(seconds)
        result = json.loads(stdout)
        # one more re-run, asking Python which heavy modules it imported
        _, _, imports = timed(["-X", "importtime", *run], env)
    heavy = sorted({line.split("|")[-1].strip().split(".")[0] for line in imports.splitlines()
                    if line.startswith("import time:")} & {"torch", "diffusers", "transformers", "numpy"})
    validate_s, rerun_s = statistics.median(validations), statistics.median(reruns)
    print(f"first run (fills the cache): {first:.2f} s")
    print(f"validate:        median {validate_s:.3f} s  ({', '.join(f'{s:.2f}' for s in validations)})")
    print(f"cached re-run:   median {rerun_s:.3f} s  ({', '.join(f'{s:.2f}' for s in reruns)}); "
          f"executed {result['executed']}, cached {result['cached']}")
    print(f"heavy modules the re-run imported: {', '.join(heavy) or 'none'}")
    print(f"re-run / validate: {rerun_s / validate_s:.2f}x (target at most 1.5x); load average "
          f"{os.getloadavg()[0]:.1f} on {len(os.sched_getaffinity(0))} CPUs")


if __name__ == "__main__":
    main()
