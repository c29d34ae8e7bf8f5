"""Engine benchmark (issue 2): plan time and executor overhead on synthetic graphs.

    python bench/bench_engine.py [--sizes 1000 10000 100000]

Plan time = parse the JSON document + validate + Merkle keys + topological order, per node, for
chain and ladder graphs. Executor overhead = a run of no-op nodes with the memory cache (per node),
and a fully cached re-run of a 10k-node graph. Everything is measured in this one process.
"""

from __future__ import annotations

import argparse
import gc
import json
import time

from diffgraph.engine import (
    Cache,
    Executor,
    Float,
    Input,
    MemoryCache,
    Node,
    NodeRegistry,
    Output,
    Param,
    compile_workflow,
    dump_document,
    node,
    parse_document,
)


@node("BenchNoop", category="bench")
class BenchNoop(Node):
    """Passes a number through; the cheapest node there is."""

    a: Float = Input(optional=True)
    b: Float = Input(optional=True)
    scale: float = Param(1.0)
    out: Float = Output()

    def run(self, ctx):
        return {"out": self.scale}


def chain(n: int) -> dict:
    nodes: dict = {"n0": {"type": "BenchNoop", "params": {"scale": 0.5}}}
    for i in range(1, n):
        nodes[f"n{i}"] = {"type": "BenchNoop", "inputs": {"a": f"n{i - 1}.out"}}
    return {"format": "diffgraph/v1", "name": f"chain{n}", "nodes": nodes}


def ladder(n: int) -> dict:
    nodes: dict = {"l0": {"type": "BenchNoop"}, "r0": {"type": "BenchNoop", "params": {"scale": 2.0}}}
    for i in range(1, n // 2):
        nodes[f"l{i}"] = {"type": "BenchNoop", "inputs": {"a": f"l{i - 1}.out", "b": f"r{i - 1}.out"}}
        nodes[f"r{i}"] = {"type": "BenchNoop", "inputs": {"a": f"r{i - 1}.out", "b": f"l{i - 1}.out"}}
    return {"format": "diffgraph/v1", "name": f"ladder{n}", "nodes": nodes}


def best_of(repeats: int, fn) -> float:
    times = []
    for _ in range(repeats):
        gc.collect()
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000])
    args = parser.parse_args()
    registry = NodeRegistry()
    registry.add(BenchNoop)

    print("plan time (parse JSON + validate + keys + order)")
    per_node: dict[tuple[str, int], float] = {}
    for shape, build in (("chain", chain), ("ladder", ladder)):
        for n in args.sizes:
            text = dump_document(build(n), "json")
            repeats = 3  # the same for every size, so the best-of figures compare
            seconds = best_of(repeats, lambda text=text: compile_workflow(parse_document(text, "json"), registry))
            per_node[(shape, n)] = seconds / n
            print(f"  {shape:6s} {n:>7d} nodes: {seconds * 1000:9.1f} ms  {seconds / n * 1e6:6.2f} us/node")
    for shape in ("chain", "ladder"):
        if (shape, 10000) in per_node and (shape, 100000) in per_node:
            total_10k = per_node[(shape, 10000)] * 10000
            total_100k = per_node[(shape, 100000)] * 100000
            print(f"  {shape}: 100k / 10k total time = {total_100k / total_10k:.2f}x (linear is 10x)")

    print("executor (memory cache only, no-op nodes)")
    for shape, build in (("chain", chain), ("ladder", ladder)):
        n = 10000
        plan = compile_workflow(build(n), registry)
        executor = Executor(Cache(MemoryCache(max_bytes=1 << 30)))
        started = time.perf_counter()
        result = executor.run(plan, targets=plan.order)
        cold = time.perf_counter() - started
        assert len(result.executed) == n, result.error
        started = time.perf_counter()
        again = executor.run(plan, targets=plan.order)
        all_targets_cached = time.perf_counter() - started
        assert not again.executed
        started = time.perf_counter()
        sinks = executor.run(plan)
        cached_rerun = time.perf_counter() - started
        assert not sinks.executed
        print(f"  {shape} {n} nodes: cold run {cold * 1000:.1f} ms = {cold / n * 1e6:.2f} us/node; "
              f"fully cached re-run {cached_rerun * 1000:.2f} ms (asking for every node: "
              f"{all_targets_cached * 1000:.1f} ms)")
    print(json.dumps({f"{s}_{n}_us_per_node": round(v * 1e6, 3) for (s, n), v in per_node.items()}))


if __name__ == "__main__":
    main()
