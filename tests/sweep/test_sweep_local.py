"""Sweeps on the local backend: batching over seeds, the manifest, resume, bad `--sweep` input."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from support.nodepack import interrupt
from support.sweeps import TXT2IMG, fresh_executor, pixels, txt2img_sweep

from diffgraph.cli import main
from diffgraph.engine import CancelToken
from diffgraph.sweep import MANIFEST, combination_key, run_local


def manifest_lines(output_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (output_dir / MANIFEST).read_text().splitlines()]


def pictures_by_seed(output_dir: Path) -> dict[int, np.ndarray]:
    return {line["params"]["seed"]: pixels(output_dir / line["files"][0]) for line in manifest_lines(output_dir)}


@pytest.mark.parametrize("scheduler", ["euler_a", "ddpm"])
def test_seeds_denoised_as_one_batch_give_the_unbatched_pictures_bit_for_bit(scheduler: str, tmp_path: Path):
    """euler_a and ddpm draw noise at every step too: each item has its own seed's generator."""
    sweep = txt2img_sweep(["seed=0..3"], scheduler=scheduler)
    import torch

    services: dict = {}
    together, alone = fresh_executor(services), fresh_executor(services)
    run_local(sweep, together, output_dir=tmp_path / "batched", batch=4)
    run_local(sweep, alone, output_dir=tmp_path / "one_by_one", batch=1)
    for _, plan in sweep.runs:  # the denoised latents themselves, not only the 8-bit pictures
        assert torch.equal(together.cached_outputs(plan, "sample")["latent"]["samples"],
                           alone.cached_outputs(plan, "sample")["latent"]["samples"])
    batched, one_by_one = pictures_by_seed(tmp_path / "batched"), pictures_by_seed(tmp_path / "one_by_one")
    assert [line["batch"] for line in manifest_lines(tmp_path / "batched")] == [4, 4, 4, 4]
    assert [line["batch"] for line in manifest_lines(tmp_path / "one_by_one")] == [1, 1, 1, 1]
    assert sorted(batched) == sorted(one_by_one) == [0, 1, 2, 3]
    for seed in batched:
        assert np.array_equal(batched[seed], one_by_one[seed]), f"seed {seed} differs when batched"
    assert not np.array_equal(batched[0], batched[1])  # the seeds did draw different pictures


def test_an_interrupted_sweep_started_again_runs_only_what_is_missing(tmp_path: Path):
    sweep = txt2img_sweep(["seed=0..2", "prompt=a red circle on a white background,a blue square on a black background"],
                          steps=2)
    out = tmp_path / "out"
    cancel = CancelToken()
    first: list[dict] = []

    def stop_after_three(record) -> None:
        first.append(record.params)
        if len(first) == 3:
            cancel.cancel()

    outcome = run_local(sweep, fresh_executor(), output_dir=out, batch=1, cancel=cancel, on_record=stop_after_three)
    assert outcome.cancelled and outcome.succeeded == 3
    second: list[dict] = []
    outcome = run_local(sweep, fresh_executor(), output_dir=out, on_record=lambda r: second.append(r.params))
    assert (outcome.skipped, outcome.succeeded, outcome.cancelled) == (3, 3, False)
    keys = [combination_key(params) for params, _ in sweep.runs]
    assert sorted(map(combination_key, first + second)) == sorted(keys)
    lines = manifest_lines(out)
    assert sorted(combination_key(line["params"]) for line in lines) == sorted(keys)  # each once
    assert all(line["status"] == "succeeded" and (out / line["files"][0]).is_file() for line in lines)
    outcome = run_local(sweep, fresh_executor(), output_dir=out)
    assert (outcome.skipped, outcome.succeeded) == (6, 0)


def test_a_deleted_picture_is_made_again(tmp_path: Path):
    sweep = txt2img_sweep(["seed=5,6"], steps=1)
    run_local(sweep, fresh_executor(), output_dir=tmp_path)
    (tmp_path / manifest_lines(tmp_path)[0]["files"][0]).unlink()
    outcome = run_local(sweep, fresh_executor(), output_dir=tmp_path)
    assert (outcome.skipped, outcome.succeeded) == (1, 1)


def test_zip_pairs_values_and_the_manifest_names_params_files_status_seconds(tmp_path: Path):
    sweep = txt2img_sweep(["seed=1,2", "cfg=1,3.5"], zipped=True, steps=1)
    assert [params for params, _ in sweep.runs] == [{"seed": 1, "cfg": 1.0}, {"seed": 2, "cfg": 3.5}]
    run_local(sweep, fresh_executor(), output_dir=tmp_path)
    for line in manifest_lines(tmp_path):
        assert set(line) >= {"params", "files", "status", "seconds", "error"}
        assert line["status"] == "succeeded" and line["seconds"] > 0 and line["error"] is None
        assert line["files"][0].endswith(".png")


def test_a_sweep_on_the_command_line_skips_what_is_done(tmp_path: Path, capsys: pytest.CaptureFixture):
    argv = ["run", str(TXT2IMG), "--set", "steps=1", "--sweep", "seed=0..1", "--no-cache", "--json",
            "--output-dir", str(tmp_path)]
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out)["succeeded"] == 2
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["skipped"], summary["succeeded"], summary["total"]) == (2, 0, 2)


@pytest.mark.parametrize(("sweep", "message"), [
    ("seed=0..x", "'seed=0..x': '0..x' is not a range of integers like 0..99"),
    ("seed=9..2", "'seed=9..2': the range 9..2 is empty"),
    ("seed=1,,2", "'seed=1,,2': has an empty value"),
    ("seed", "'seed': is not NAME=VALUES"),
    ("sed=1,2", "'sed=1,2': 'sed' is not a param of this workflow; its params: model, prompt"),
    ("seed=@empty.txt", "holds no value (one value a line)"),
    ("seed=@missing.txt", "missing.txt is not a regular file"),
    ("seed=1,two", "'seed=1,two': with seed=two: "),
    ("steps=1,5000", "'steps=1,5000': with steps=5000: "),
])
def test_bad_sweep_arguments_exit_2_naming_the_argument(sweep: str, message: str, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture,
                                                         monkeypatch: pytest.MonkeyPatch):
    (tmp_path / "empty.txt").write_text("\n  \n")
    monkeypatch.chdir(tmp_path)
    assert main(["run", str(TXT2IMG), "--sweep", sweep, "--no-cache", "--output-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "--sweep" in err and message in err, err
    assert not (tmp_path / MANIFEST).exists()


def test_zip_of_unequal_lengths_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture):
    argv = ["run", str(TXT2IMG), "--sweep", "seed=1,2,3", "--sweep", "cfg=1,2", "--zip", "--no-cache",
            "--output-dir", str(tmp_path)]
    assert main(argv) == 2
    assert "zip pairs values, so every sweep needs as many (seed: 3, cfg: 2)" in capsys.readouterr().err


def test_backend_ray_without_ray_installed_says_how_to_install_it(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                                   monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # what `import ray` meets where it is not installed
    argv = ["run", str(TXT2IMG), "--sweep", "seed=0,1", "--backend", "ray", "--no-cache", "--output-dir", str(tmp_path)]
    assert main(argv) == 2
    assert "pip install 'diffgraph[ray]'" in capsys.readouterr().err
    assert not (tmp_path / MANIFEST).exists()


def test_ctrl_c_stops_a_sweep_and_what_finished_stays_recorded(cli, tmp_path: Path):
    out = tmp_path / "out"
    process = cli.popen("run", TXT2IMG, "--set", "steps=2", "--sweep", "seed=0..59", "--batch", "1", "--no-cache",
                        "--output-dir", out, env=cli.env(OMP_NUM_THREADS="1"))
    deadline = time.monotonic() + 120
    while not ((out / MANIFEST).is_file() and len((out / MANIFEST).read_text().splitlines()) >= 2):
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.1)
    code, _, err = interrupt(process)
    assert code == 130, err
    assert "Traceback" not in err
    lines = manifest_lines(out)  # every line whole: each parses
    assert 2 <= len(lines) < 60
    assert all(line["status"] == "succeeded" and (out / line["files"][0]).is_file() for line in lines)
    assert len(list(out.glob("*.png"))) == len(lines)  # no picture without its line


def test_an_actor_is_given_work_for_the_models_it_holds_first(tmp_path: Path):
    from collections import deque

    from diffgraph.ray_backend import _model_key, take_group

    sweep = txt2img_sweep(["model=models/tiny-sd," + str(TXT2IMG.parents[1] / "models" / "tiny-sd"), "seed=0,1"],
                          steps=1)
    plans = [plan for _, plan in sweep.runs]
    key_of = lambda group: _model_key(plans[group[0]])  # noqa: E731
    assert key_of([0]) == key_of([1]) != key_of([2]) == key_of([3])  # two spellings, two model keys
    queue = deque([[0], [2], [1], [3]])
    assert take_group(queue, key_of([2]), key_of) == [2]  # an actor warm with the second model skips ahead
    assert take_group(queue, key_of([2]), key_of) == [3]
    assert take_group(queue, None, key_of) == [0]  # a fresh actor takes the oldest
    assert list(queue) == [[1]]
