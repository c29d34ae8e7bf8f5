"""The CPU thread policy: as many torch threads as there are free CPUs, never fewer than one;
explicit settings win; a bad setting is a clear error naming DIFFGRAPH_THREADS."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from diffgraph.engine import ThreadPolicy

ROOT = Path(__file__).resolve().parents[2]


def test_auto_uses_the_cpus_other_processes_leave_free():
    auto = ThreadPolicy("auto")
    assert auto.choose(usable=2, load=0.1, running=0) == 2  # idle
    assert auto.choose(usable=2, load=0.3, running=2) == 1  # two busy processes just started
    assert auto.choose(usable=2, load=2.4, running=0) == 1  # busy for a while, at least one thread
    assert auto.choose(usable=8, load=3.2, running=1) == 5
    assert auto.choose(usable=1, load=0.0, running=0) == 1


def test_explicit_counts_and_torch_defaults():
    assert ThreadPolicy.parse("3").choose(usable=2, load=9.0, running=9) == 3
    assert ThreadPolicy.parse("torch").choose() is None
    assert ThreadPolicy.parse(None).mode == "auto" and ThreadPolicy.parse(" Auto ").mode == "auto"
    assert ThreadPolicy.from_environment({"OMP_NUM_THREADS": "2"}).mode == 2  # the user's own choice
    assert ThreadPolicy.from_environment({"OMP_NUM_THREADS": "2", "DIFFGRAPH_THREADS": "auto"}).mode == "auto"
    for bad in ("0", "-1", "many", "1.5"):
        with pytest.raises(ValueError, match="DIFFGRAPH_THREADS=.*auto.*torch.*number"):
            ThreadPolicy.parse(bad)


def test_the_chosen_count_reaches_torch_loaded_after_and_before():
    script = (
        "import sys\n"
        "from diffgraph.engine import ThreadPolicy\n"
        "ThreadPolicy(1).apply()\n"
        "assert 'torch' not in sys.modules\n"
        "import torch\n"
        "first = torch.get_num_threads()\n"
        "ThreadPolicy(2).apply()\n"
        "print(first, torch.get_num_threads())\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OMP_", "DIFFGRAPH_"))}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=ROOT,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["1", "2"]


def test_a_bad_setting_is_a_clear_cli_error(tmp_path):
    env = {**os.environ, "DIFFGRAPH_THREADS": "lots"}
    done = subprocess.run([sys.executable, "-m", "diffgraph.cli", "run", ROOT / "workflows" / "txt2img.yaml",
                           "--no-cache", "--output-dir", tmp_path], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=120)
    assert done.returncode == 2
    assert "DIFFGRAPH_THREADS='lots' is not valid" in done.stderr and "Traceback" not in done.stderr


def test_a_bad_setting_stops_the_server_with_a_clear_line(tmp_path):
    env = {**os.environ, "DIFFGRAPH_THREADS": "0"}
    done = subprocess.run([sys.executable, "-m", "diffgraph.cli", "serve", "--port", "0", "--data-dir", tmp_path],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    assert done.returncode == 2
    assert "DIFFGRAPH_THREADS='0' is not valid" in done.stderr and "Traceback" not in done.stderr
