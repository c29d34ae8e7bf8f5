"""Find what holds a server's event loop: run a Python module with a thread that samples the main
thread's stack every millisecond or so, and report every stretch in which the loop was busy (not
waiting in the selector) for longer than a threshold, with the stacks seen most in that stretch.

    python bench/loop_stalls.py OUT.txt [--min-ms 50] -m diffgraph.cli serve ...

bench_server_load.py --loop-stalls uses it. Stalls are appended to OUT.txt as they end, so a
server stopped by a signal leaves its report. Sampling needs the GIL, so a stall's length is
measured to the first sample after it; a stall that is the loop waiting for the GIL shows the
loop's stack where it waited.
"""

from __future__ import annotations

import collections
import os
import runpy
import sys
import threading
import time
import traceback


def _idle(frame) -> bool:
    """True when the main thread waits in the event loop's selector (the loop is free)."""
    code = frame.f_code
    return code.co_name in ("select", "poll") and code.co_filename.endswith("selectors.py")


def _describe(frame) -> str:
    """The stack from the innermost frame outwards, the loop's own frames left out."""
    lines = []
    for summary in traceback.extract_stack(frame)[::-1]:
        if "asyncio" in summary.filename and summary.name in ("_run_once", "run_forever", "_run"):
            break
        lines.append(f"{os.path.relpath(summary.filename) if 'site-packages' not in summary.filename else summary.filename.split('site-packages/')[1]}:{summary.lineno} {summary.name}")
    return " < ".join(lines[:12])


def sample(main_id: int, out_path: str, min_seconds: float, interval: float) -> None:
    started = None
    stacks: collections.Counter[str] = collections.Counter()
    with open(out_path, "a", encoding="utf-8") as out:
        while True:
            time.sleep(interval)
            frame = sys._current_frames().get(main_id)
            now = time.perf_counter()
            if frame is None:
                return
            if _idle(frame):
                if started is not None and now - started >= min_seconds:
                    out.write(f"stall {1000 * (now - started):.0f} ms, {sum(stacks.values())} samples\n")
                    for stack, count in stacks.most_common(4):
                        out.write(f"  {count:4d} x {stack}\n")
                    out.flush()
                started = None
                stacks.clear()
                continue
            if started is None:
                started = now
            stacks[_describe(frame)] += 1
            del frame


def main() -> None:
    args = sys.argv[1:]
    if len(args) < 3 or "-m" not in args:
        raise SystemExit(__doc__)
    out_path, rest = args[0], args[1:]
    min_ms = 50.0
    if rest[0] == "--min-ms":
        min_ms, rest = float(rest[1]), rest[2:]
    if rest[0] != "-m":
        raise SystemExit(__doc__)
    module = rest[1]
    sys.argv = [module, *rest[2:]]
    thread = threading.Thread(target=sample, args=(threading.main_thread().ident, out_path, min_ms / 1000, 0.001),
                              name="loop-stall-sampler", daemon=True)
    thread.start()
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
