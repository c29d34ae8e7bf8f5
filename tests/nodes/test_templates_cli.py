"""The templates from the command line: re-run semantics across processes sharing a disk cache,
and bad input reported as a clear error naming the node and the field, never a traceback."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from diffgraph.engine import compile_workflow, default_registry, read_document

TEMPLATES = Path(__file__).resolve().parents[2] / "diffgraph" / "workflows"


def diffgraph(*args: object, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "XDG_CACHE_HOME": str(cwd / "xdg"), "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "diffgraph.cli", *map(str, args)], capture_output=True,
                          text=True, cwd=cwd, env=full_env, timeout=300)


def run_json(workflow: Path, *sets: str, cwd: Path, cache: Path, expect: int = 0, env=None) -> dict:
    args = ["run", workflow, "--json", "--cache-dir", cache, "--output-dir", cwd / "out"]
    for item in sets:
        args += ["--set", item]
    done = diffgraph(*args, cwd=cwd, env=env)
    assert done.returncode == expect, done.stderr[-3000:]
    assert "Traceback" not in done.stderr and "Traceback" not in done.stdout
    return json.loads(done.stdout)


def with_prefix(tmp_path: Path, prefix: str) -> Path:
    document = read_document(TEMPLATES / "txt2img.yaml")
    document["nodes"]["save"]["params"]["prefix"] = prefix
    path = tmp_path / f"txt2img-{prefix}.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return path


def test_rerun_recomputes_only_what_changed_across_processes(tiny, tmp_path):
    cache = tmp_path / "cache"
    model = f"model={tiny['sd']}"
    first = run_json(with_prefix(tmp_path, "one"), model, "steps=3", "seed=1", cwd=tmp_path, cache=cache)
    assert first["status"] == "succeeded" and first["cached"] == []
    assert set(first["executed"]) == {"load", "sampler", "positive", "negative", "empty", "sample", "decode", "save"}

    # only SaveImage's prefix changed: nothing but the save runs, and it writes the same picture
    renamed = run_json(with_prefix(tmp_path, "two"), model, "steps=3", "seed=1", cwd=tmp_path, cache=cache)
    assert renamed["executed"] == ["save"]
    assert "decode" in renamed["cached"]
    (old,), (new,) = first["outputs"]["save"], renamed["outputs"]["save"]
    assert Path(new).name.startswith("two_")
    from PIL import Image
    assert Image.open(old).tobytes() == Image.open(new).tobytes()

    # a new seed re-samples; loaders and both TextEncodes come from the cache
    reseeded = run_json(with_prefix(tmp_path, "two"), model, "steps=3", "seed=2", cwd=tmp_path, cache=cache)
    assert set(reseeded["executed"]) == {"sample", "decode", "save"}
    assert {"load", "sampler", "positive", "negative", "empty"} <= set(reseeded["cached"])

    # a new prompt re-encodes it and re-samples; loaders stay cached
    reprompted = run_json(with_prefix(tmp_path, "two"), model, "steps=3", "seed=2", "prompt=a blue square",
                          cwd=tmp_path, cache=cache)
    assert set(reprompted["executed"]) == {"positive", "sample", "decode", "save"}
    assert {"load", "sampler", "negative", "empty"} <= set(reprompted["cached"])


def test_bad_input_fails_the_run_with_exit_1_and_no_traceback(tmp_path):
    result = run_json(TEMPLATES / "txt2img.yaml", f"model={tmp_path / 'nowhere'}", cwd=tmp_path,
                      cache=tmp_path / "c", expect=1)
    assert result["status"] == "failed" and result["failed_node"] == "load"
    assert "node 'load' (LoadPipeline), field 'model'" in result["error"]


def test_strength_outside_unit_interval_is_invalid_before_running(tmp_path):
    for value in ("1.5", "-0.1"):
        done = diffgraph("run", TEMPLATES / "img2img.yaml", "--set", f"strength={value}", "--json", cwd=tmp_path)
        assert done.returncode == 2, done.stdout + done.stderr
        errors = json.loads(done.stdout)["errors"]
        assert any(e["field"] == "params.strength" for e in errors), errors
        assert "Traceback" not in done.stderr
    # the same bound holds on SampleLoop itself, for workflows that set it directly
    document = read_document(TEMPLATES / "img2img.yaml")
    document["nodes"]["sample"]["params"]["strength"] = 1.5
    path = tmp_path / "direct.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    done = diffgraph("validate", path, "--json", cwd=tmp_path)
    assert done.returncode == 2
    assert {"node": "sample", "field": "strength"}.items() <= json.loads(done.stdout)["errors"][0].items()


def test_hub_repo_id_is_read_from_the_huggingface_cache_offline(tiny, tmp_path):
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hf" / "hub" / "models--someone--tiny-sd"
    shutil.copytree(tiny["sd"], repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    env = {"HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"}
    result = run_json(TEMPLATES / "txt2img.yaml", "model=someone/tiny-sd", "steps=1", cwd=tmp_path,
                      cache=tmp_path / "c", env=env)
    assert result["status"] == "succeeded"
    assert Path(result["outputs"]["save"][0]).is_file()


@pytest.mark.parametrize("name", ["txt2img", "img2img", "inpaint", "depth2img", "unconditional"])
def test_templates_validate_and_declare_the_design_params(name):
    document = read_document(TEMPLATES / f"{name}.yaml")
    common = {"model", "seed", "steps", "scheduler"}
    extra = {
        "unconditional": {"batch_size"},
        "txt2img": {"prompt", "negative_prompt", "cfg", "width", "height"},
        "img2img": {"prompt", "negative_prompt", "cfg", "image", "strength"},
        "inpaint": {"prompt", "negative_prompt", "cfg", "image", "mask", "strength", "width", "height"},
        "depth2img": {"prompt", "negative_prompt", "cfg", "image", "strength", "depth_model"},
    }[name]
    assert set(document["params"]) == common | extra
    assert any(node["type"] == "SaveImage" for node in document["nodes"].values())
    compile_workflow(document, default_registry(), base=TEMPLATES)  # valid as shipped
