"""How many CPU threads torch uses, chosen per run from the CPUs that are free right now.

Why: torch's default is one OpenMP thread per core. When other processes keep those cores busy,
the threads wait on each other at every operation, and a small model runs many times slower (the
quickstart's sampling: 28 s instead of 0.76 s with two busy processes on two cores).

The policy (`DIFFGRAPH_THREADS`, default `auto`):
  auto    threads = the CPUs this process may use (affinity and cgroup quota) minus the CPUs other
          processes keep busy (the larger of the 1-minute load average, less this process's own
          share, and the processes runnable right now), at least 1. Idle threads then sleep
          (OMP_WAIT_POLICY=PASSIVE) instead of spinning, so load arriving mid-run costs little.
          Without DIFFGRAPH_THREADS, an OMP_NUM_THREADS the user set is taken as N; an
          OMP_WAIT_POLICY the user set is kept.
  N       exactly N threads (a positive integer).
  torch   leave torch's own defaults alone.
Applied before each run, by setting the OpenMP variables (torch reads them when it loads) and,
once torch is loaded, with `torch.set_num_threads`. Never imports torch itself.
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

SETTING = "DIFFGRAPH_THREADS"


def usable_cpus() -> int:
    """CPUs this process may run on: its affinity mask, capped by a cgroup v2 CPU quota."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text(encoding="ascii").split()[:2]
        if quota != "max":
            cpus = min(cpus, max(1, math.floor(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cpus)


def runnable_now() -> int:
    """Processes runnable at this instant, this one excluded (0 where /proc is not there)."""
    try:
        running = Path("/proc/loadavg").read_text(encoding="ascii").split()[3].split("/")[0]
        return max(0, int(running) - 1)
    except (OSError, ValueError, IndexError):
        return 0


@dataclass
class ThreadPolicy:
    """`mode` is "auto", "torch" or a fixed count; see the module's docstring."""

    mode: str | int = "auto"
    #: (wall time, this process's CPU time) at the last choice, to take its own share off the load
    _last: tuple[float, float] | None = field(default=None, repr=False)

    @classmethod
    def from_environment(cls, environ: Mapping[str, str]) -> ThreadPolicy:
        """At an entry point: DIFFGRAPH_THREADS, else an OMP_NUM_THREADS the user set, else auto."""
        if SETTING not in environ and environ.get("OMP_NUM_THREADS", "").strip().isdigit():
            return cls(max(1, int(environ["OMP_NUM_THREADS"])))
        return cls.parse(environ.get(SETTING))

    @classmethod
    def parse(cls, text: str | None) -> ThreadPolicy:
        """From the setting's text; a ValueError says what would be valid."""
        value = (text or "auto").strip().lower()
        if value in ("auto", "torch"):
            return cls(value)
        if value.isdigit() and 0 < int(value) <= 4096:
            return cls(int(value))
        raise ValueError(f"{SETTING}={text!r} is not valid: use auto (the default), torch (torch's own "
                         "defaults) or a number of threads such as 1 or 4")

    def choose(self, usable: int | None = None, load: float | None = None, running: int | None = None) -> int | None:
        """The thread count for the next run, or None for torch's defaults."""
        if self.mode == "torch":
            return None
        if isinstance(self.mode, int):
            return self.mode
        usable = usable_cpus() if usable is None else usable
        load = os.getloadavg()[0] if load is None else load
        running = runnable_now() if running is None else running
        others = max(load - self._own_share(), float(running))
        return max(1, min(usable, math.floor(usable - others + 0.5)))

    def _own_share(self) -> float:
        """CPUs this process kept busy since the last choice (its own previous runs count in the load)."""
        now, cpu = time.monotonic(), time.process_time()
        last, self._last = self._last, (now, cpu)
        if last is None or now - last[0] < 1.0:
            return 0.0
        return max(0.0, (cpu - last[1]) / (now - last[0]))

    def apply(self) -> int | None:
        """Choose and set the thread count; returns it (None: torch's defaults untouched)."""
        threads = self.choose()
        if threads is None:
            return None
        torch = sys.modules.get("torch")
        if torch is None:  # OpenMP reads these once, when torch loads
            os.environ["OMP_NUM_THREADS"] = str(threads)
            os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        elif torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
        return threads
