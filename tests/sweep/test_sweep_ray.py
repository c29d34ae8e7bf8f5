"""Sweeps on a real Ray cluster: three simulated one-CPU nodes on this machine, started once."""

from __future__ import annotations

import io
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from support.sweeps import TXT2IMG, fresh_executor, pixels, txt2img_sweep

from diffgraph.engine import Cache, Executor, MemoryCache, compile_workflow, default_registry, read_document
from diffgraph.sweep import MANIFEST, combination_key, run_local

ray = pytest.importorskip("ray")
from ray.cluster_utils import Cluster  # noqa: E402

from diffgraph.ray_backend import run_ray  # noqa: E402


@pytest.fixture(scope="session")
def cluster():
    """A head and two worker nodes, one CPU each; node deaths are noticed within about a second."""
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "include_dashboard": False,
        "_system_config": {"health_check_initial_delay_ms": 0, "health_check_period_ms": 300,
                           "health_check_failure_threshold": 3},
    })
    workers = [cluster.add_node(num_cpus=1) for _ in range(2)]
    ray.init(address=cluster.address, log_to_driver=False)
    cluster.wait_for_nodes()
    yield cluster, workers
    ray.shutdown()
    cluster.shutdown()


def manifest_lines(output_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (output_dir / MANIFEST).read_text().splitlines()]


def pictures_by_key(output_dir: Path) -> dict[str, np.ndarray]:
    return {combination_key(line["params"]): pixels(output_dir / line["files"][0]) for line in manifest_lines(output_dir)}


def test_a_16_run_sweep_on_ray_gives_the_local_pictures_bit_for_bit(cluster, tmp_path: Path):
    sweep = txt2img_sweep(["seed=0..7", "scheduler=euler_a,ddim"], steps=2)
    outcome = run_ray(sweep, output_dir=tmp_path / "ray", batch=4)
    assert (outcome.succeeded, outcome.failed) == (16, 0)
    run_local(sweep, fresh_executor(), output_dir=tmp_path / "local", batch=1)
    on_ray, local = pictures_by_key(tmp_path / "ray"), pictures_by_key(tmp_path / "local")
    assert len(on_ray) == len(manifest_lines(tmp_path / "ray")) == 16  # each combination once
    assert sorted(on_ray) == sorted(local)
    for key, picture in on_ray.items():
        assert np.array_equal(picture, local[key]), key
    assert len({line["files"][0] for line in manifest_lines(tmp_path / "ray")}) == 16  # no file overwritten


def kill_a_worker_running_a_server_run(timeout: float = 120) -> int:
    """SIGKILL the first Ray worker process seen executing a server run (Ray titles it
    `ray::SweepWorker.run_one` while it does); returns its pid."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        listing = subprocess.run(["ps", "-eo", "pid=,args="], capture_output=True, text=True).stdout
        for line in listing.splitlines():
            pid, _, command = line.strip().partition(" ")
            if command.startswith("ray::SweepWorker.run_one"):
                os.kill(int(pid), signal.SIGKILL)
                return int(pid)
        time.sleep(0.05)
    raise AssertionError("no Ray worker ever ran a server run")


def test_serve_backend_ray_runs_a_queued_sweep_on_the_cluster_with_the_local_pictures(cluster, tmp_path: Path):
    """`diffgraph serve --backend ray`: the queue's runs execute on the actors; the pictures come
    back into the server's outputs folder, bit for bit what an in-process (local worker) run draws;
    a run whose worker dies goes back to the queue and runs again, none lost."""
    head, _ = cluster
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    environment.pop("DIFFGRAPH_TOKEN", None)
    log = (tmp_path / "server.log").open("wb")
    server = subprocess.Popen([sys.executable, "-m", "diffgraph.cli", "serve", "--port", "0", "--data-dir",
                               str(tmp_path / "data"), "--backend", "ray", "--address", head.address],
                              stdout=subprocess.PIPE, stderr=log, env=environment, text=True)
    try:
        url = None
        for line in server.stdout:  # type: ignore[union-attr]
            match = re.search(r"serving on (http://\S+)", line)
            if match:
                url = match.group(1)
                break
        assert url, "the server did not start"
        document = read_document(TXT2IMG)
        body = {"workflow": document, "params": {"steps": 2}, "sweep": ["seed=0..5"]}
        with urllib.request.urlopen(urllib.request.Request(f"{url}/api/runs", json.dumps(body).encode(),
                                                           {"Content-Type": "application/json"})) as response:
            queued = json.load(response)
        kill_a_worker_running_a_server_run()
        deadline = time.monotonic() + 240
        finished = []
        for run in queued["runs"]:
            while True:
                with urllib.request.urlopen(f"{url}/api/runs/{run['id']}") as response:
                    record = json.load(response)
                if record["status"] not in ("queued", "running"):
                    break
                assert time.monotonic() < deadline, record
                time.sleep(0.2)
            finished.append(record)
        assert [r["status"] for r in finished] == ["succeeded"] * 6, [r["error"] for r in finished]
        assert "lost its Ray worker; queued again" in (tmp_path / "server.log").read_text()
        with urllib.request.urlopen(f"{url}/api/runs?sweep={queued['sweep']}") as response:
            assert len(json.load(response)["runs"]) == 6  # the lost run was not queued twice
        services: dict = {}
        for record in finished:
            [name] = record["outputs"]["save"]
            with urllib.request.urlopen(f"{url}/api/outputs/{name}") as response:
                served = np.asarray(Image.open(io.BytesIO(response.read())).convert("RGB"))
            plan = compile_workflow(document, default_registry(), record["params"], base=TXT2IMG.parent)
            local = Executor(Cache(MemoryCache()), services=services).run(plan, output_dir=tmp_path / "local")
            assert np.array_equal(served, pixels(Path(local.outputs["save"][0]))), record["params"]
    finally:
        server.terminate()
        server.wait(60)
        log.close()


def test_a_worker_node_removed_mid_sweep_loses_nothing(cluster, tmp_path: Path):
    head_and_workers, workers = cluster
    sweep = txt2img_sweep(["seed=100..111"], steps=2)
    removed = []

    def remove_a_node_after_the_first_run(record) -> None:
        if not removed:
            removed.append(workers[-1])
            head_and_workers.remove_node(workers[-1])

    outcome = run_ray(sweep, output_dir=tmp_path, batch=1, on_record=remove_a_node_after_the_first_run)
    assert removed and outcome.lost_workers >= 1
    assert (outcome.succeeded, outcome.failed, outcome.cancelled) == (12, 0, False)
    lines = manifest_lines(tmp_path)
    assert sorted(combination_key(line["params"]) for line in lines) == sorted(
        combination_key(params) for params, _ in sweep.runs)
    assert all((tmp_path / line["files"][0]).is_file() for line in lines)


def test_the_command_line_sweeps_on_ray_and_skips_what_is_done(cluster, tmp_path: Path, capsys: pytest.CaptureFixture):
    from diffgraph.cli import main

    head, _ = cluster
    argv = ["run", str(TXT2IMG), "--set", "steps=1", "--sweep", "seed=0..2", "--backend", "ray", "--address",
            head.address, "--no-cache", "--json", "--output-dir", str(tmp_path)]
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["succeeded"], summary["failed"], summary["skipped"]) == (3, 0, 0)
    assert len(manifest_lines(tmp_path)) == 3 and len(list(tmp_path.glob("*.png"))) == 3
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["succeeded"], summary["skipped"]) == (0, 3)
