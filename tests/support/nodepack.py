"""A third-party node pack installed for real (a dist-info with a `diffgraph.nodes` entry point on
PYTHONPATH) and a runner for `diffgraph` subprocesses that see it."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from support import testnodes

PACK_MODULE = "mypack"


def write_node_pack(directory: Path) -> Path:
    """Write `mypack.py` (the test nodes) and its dist-info into `directory`; return it."""
    directory.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(testnodes.__file__, directory / f"{PACK_MODULE}.py")
    info = directory / f"{PACK_MODULE}-0.1.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {PACK_MODULE}\nVersion: 0.1\n", encoding="utf-8")
    (info / "entry_points.txt").write_text(f"[diffgraph.nodes]\ntestpack = {PACK_MODULE}:register\n",
                                           encoding="utf-8")
    return directory


def diffgraph_command() -> list[str]:
    """The installed `diffgraph` console script next to this interpreter (or the module as a fallback)."""
    script = shutil.which("diffgraph", path=str(Path(sys.executable).parent))
    return [script] if script else [sys.executable, "-m", "diffgraph.cli"]


@dataclass
class Cli:
    """Runs `diffgraph` in a subprocess with the node pack importable and a private cache home."""

    pack_dir: Path
    home: Path

    @property
    def log(self) -> Path:
        """The file test nodes append their id to each time they really run."""
        return self.home / "executions.log"

    def env(self, **extra: str) -> dict[str, str]:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(self.pack_dir), env.get("PYTHONPATH")]))
        env["XDG_CACHE_HOME"] = str(self.home / "xdg-cache")
        env[testnodes.LOG_ENV] = str(self.log)
        env.update(extra)
        return env

    def run(self, *args: Any, timeout: float = 60, env: dict[str, str] | None = None
            ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*diffgraph_command(), *map(str, args)], capture_output=True, text=True, encoding="utf-8",
            errors="replace", timeout=timeout, env=env or self.env(), cwd=self.home,
        )

    def run_json(self, *args: Any, expect: int = 0, **kwargs: Any) -> dict[str, Any]:
        """Run with --json and return the parsed summary, asserting the exit code."""
        done = self.run(*args, "--json", **kwargs)
        assert done.returncode == expect, (done.returncode, done.stdout, done.stderr)
        assert "Traceback" not in done.stderr, done.stderr
        return json.loads(done.stdout)

    def popen(self, *args: Any, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [*diffgraph_command(), *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, encoding="utf-8", errors="replace", env=env or self.env(), cwd=self.home,
        )

    def executions(self) -> Counter[str]:
        """How many times each node id really ran, over every process so far."""
        if not self.log.exists():
            return Counter()
        return Counter(self.log.read_text(encoding="utf-8").splitlines())

    def clear_log(self) -> None:
        self.log.unlink(missing_ok=True)

    def wait_for_execution(self, node_id: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while self.executions()[node_id] == 0:
            assert time.monotonic() < deadline, f"{node_id} never started"
            time.sleep(0.05)


def interrupt(process: subprocess.Popen[str], timeout: float = 30) -> tuple[int, str, str]:
    """Send Ctrl+C (SIGINT) and collect the exit code and output."""
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=timeout)
    return process.returncode, out, err
