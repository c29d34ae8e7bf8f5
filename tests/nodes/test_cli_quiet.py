"""A run from the command line prints diffgraph's own progress and result, and nothing of its
dependencies' (no weight-loading bars, no advice such as transformers' "accelerate was not found")."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

OURS = re.compile(r"^(  (done|cached) +\S+ \(\w+\)( [\d.]+s)?|sample: .*|\d+ executed, \d+ cached)$")


def test_a_template_run_prints_only_our_own_lines(tmp_path: Path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "XDG_CACHE_HOME": str(tmp_path / "xdg")}
    done = subprocess.run(
        [sys.executable, "-m", "diffgraph.cli", "run", "txt2img", "--set", "steps=2", "--no-cache",
         "--output-dir", tmp_path / "out"],  # the bundled model, as in the README's quickstart
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    lines = [line.strip("\n") for line in re.split(r"[\r\n]", done.stderr) if line.strip()]
    foreign = [line for line in lines if not OURS.match(line)]
    assert foreign == [], done.stderr
    assert any(line.startswith("  done   sample (SampleLoop)") for line in lines)
    [saved] = done.stdout.splitlines()
    assert saved.startswith("save: ") and Path(saved.removeprefix("save: ")).is_file()
