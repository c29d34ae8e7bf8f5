"""The command line's entry points as a new user meets them: --version, devices that are not there,
workflows by name, the node catalog in full, and settings from the environment."""

from __future__ import annotations

import json
from importlib.metadata import version

import pytest

from diffgraph.engine import dump_document
from diffgraph.server.store import Store

SUMS = {
    "format": "diffgraph/v1",
    "params": {"a": {"type": "FLOAT", "default": 1.0}},
    "nodes": {"add": {"type": "TestAdd", "params": {"a": "$a", "b": 2}}},
    "outputs": {"total": "add.total"},
}


def test_version_prints_the_installed_version(cli):
    done = cli.run("--version")
    assert done.returncode == 0 and done.stdout.strip() == f"diffgraph {version('diffgraph')}"


def _cuda_present() -> bool:
    import torch

    return torch.cuda.is_available()


@pytest.mark.parametrize("device", ["cuda", "cuda:1"])
def test_a_cuda_device_on_a_machine_without_one_is_a_clear_exit_2(cli, tmp_path, device):
    if _cuda_present():
        pytest.skip("this machine has CUDA")
    workflow = tmp_path / "sums.yaml"
    workflow.write_text(dump_document(SUMS))
    done = cli.run("run", workflow, "--device", device, "--no-cache")
    assert done.returncode == 2, done.stderr
    assert f"field '--device': device '{device}' is not available" in done.stderr
    assert "use --device cpu" in done.stderr and "Traceback" not in done.stderr
    served = cli.run("serve", "--device", device, "--port", "0", "--data-dir", tmp_path / "data")
    assert served.returncode == 2 and "is not available" in served.stderr and "Traceback" not in served.stderr


def test_templates_are_found_by_name(cli):
    done = cli.run("validate", "txt2img")
    assert done.returncode == 0 and "txt2img: valid" in done.stdout, done.stderr


def test_a_workflow_saved_in_the_library_runs_by_name(cli, tmp_path):
    data_home = tmp_path / "data-home"
    store = Store(data_home / "diffgraph" / "diffgraph.db")  # where `diffgraph serve` keeps its library
    store.put_workflow("sums", SUMS)
    store.close()
    summary = cli.run_json("run", "sums", "--set", "a=40", "--no-cache", env=cli.env(XDG_DATA_HOME=str(data_home)))
    assert summary["values"] == {"total": 42.0}


def test_a_file_in_the_working_directory_wins_over_a_template_of_that_name(cli):
    (cli.home / "txt2img.yaml").write_text(dump_document(SUMS))
    done = cli.run("validate", "txt2img", "--json")
    assert done.returncode == 0 and json.loads(done.stdout)["nodes"] == 1


def test_an_unknown_name_says_where_it_looked(cli, tmp_path):
    done = cli.run("run", "txt2im", env=cli.env(XDG_DATA_HOME=str(tmp_path / "nowhere")))
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "no workflow 'txt2im'" in done.stderr and "txt2img" in done.stderr
    assert str(tmp_path / "nowhere" / "diffgraph" / "diffgraph.db") in done.stderr
    assert not (tmp_path / "nowhere").exists()  # looking created nothing


def test_nodes_lists_whole_docs_optional_ports_bounds_and_choices(cli):
    done = cli.run("nodes")
    assert done.returncode == 0, done.stderr
    text = done.stdout
    catalog = {entry["type"]: entry for entry in json.loads(cli.run("nodes", "--json").stdout)}
    sample_loop = text[text.index("\nSampleLoop "):]
    assert "positive?: CONDITIONING" in sample_loop.splitlines()[1]
    for line in catalog["SampleLoop"]["doc"].splitlines():  # every line of the doc, the last one too
        assert line.strip() in sample_loop
    assert "positive: CONDITIONING (optional): required by text-conditioned UNets" in sample_loop
    assert "steps: INT (default 25, 1..1000)" in sample_loop
    assert "cfg: FLOAT (default 7.5, 0.0..100.0, step 0.5): guidance scale" in sample_loop
    assert "name: STRING (default 'euler', one of ddim, ddpm, pndm," in text
    assert "image: STRING (required): the picture: a local path on the command line" in text


BAD_SETTINGS = {
    "DIFFGRAPH_CACHE_MAX_GB": ("lots", "'lots' is not a number of gigabytes; use 0 or more, such as 20 or 0.5"),
    "DIFFGRAPH_MODEL_CACHE_GB": ("abc", "'abc' is not a number of gigabytes; use 0 or more, such as 16 or 2.5"),
    "DIFFGRAPH_MAX_UPLOAD_MB": ("0", "'0' is not a number of megabytes; use more than 0, such as 32 or 1.5"),
}


@pytest.mark.parametrize("name", list(BAD_SETTINGS))
@pytest.mark.parametrize("command", ["run", "validate", "serve"])
def test_a_bad_setting_is_a_clear_exit_2_for_every_command(cli, tmp_path, name, command):
    value, message = BAD_SETTINGS[name]
    workflow = tmp_path / "sums.yaml"
    workflow.write_text(dump_document(SUMS))
    args = {"run": ["run", workflow, "--no-cache"], "validate": ["validate", workflow],
            "serve": ["serve", "--port", "0", "--data-dir", tmp_path / "data"]}[command]
    done = cli.run(*args, env=cli.env(**{name: value}), timeout=30)
    assert done.returncode == 2, done.stderr
    assert f"field '{name}': {message}" in done.stderr and "Traceback" not in done.stderr
