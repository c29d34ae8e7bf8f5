"""Sweeps on a real Ray cluster: three simulated one-CPU nodes on this machine, started once."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from support.sweeps import fresh_executor, pixels, txt2img_sweep

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
