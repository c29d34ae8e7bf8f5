"""The image nodes end to end: `diffgraph run --json` in real processes sharing a cache folder, and
the planner's fingerprint hook that makes LoadImage's cache key follow the file's content."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from PIL import Image

from diffgraph.engine import Node, NodeRegistry, Output, Param, String, compile_workflow, node
from diffgraph.nodes import images

WORKFLOW = """\
format: diffgraph/v1
name: load, mask and save
params:
  prefix: {type: STRING, default: shot}
nodes:
  load:
    type: LoadImage
    params: {image: in.png}
  mask:
    type: Mask
    inputs: {mask: load.mask}
    params: {grow: 1, feather: 1}
  save:
    type: SaveImage
    inputs: {images: load.image}
    params: {prefix: $prefix}
outputs: {mask: mask.mask}
"""


def write_picture(path: Path, colour: tuple[int, int, int, int]) -> None:
    picture = Image.new("RGBA", (8, 6), colour)
    picture.putpixel((2, 2), (0, 0, 0, 0))
    picture.save(path)


def diffgraph(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "XDG_CACHE_HOME": str(cwd / "xdg")}
    return subprocess.run([sys.executable, "-m", "diffgraph.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def run_json(cwd: Path, *args: str) -> tuple[int, dict]:
    done = diffgraph(cwd, "run", "workflow.yaml", "--json", "--cache-dir", "cache", "--output-dir", "out", *args)
    assert "Traceback" not in done.stderr, done.stderr
    return done.returncode, json.loads(done.stdout)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "workflow.yaml").write_text(WORKFLOW)
    write_picture(tmp_path / "in.png", (200, 100, 50, 255))
    return tmp_path


def test_run_saves_a_png_carrying_its_recipe_and_reuses_the_cache(project):
    code, first = run_json(project)
    assert code == 0, first
    saved = project / "out" / "shot_00001.png"
    assert first["outputs"] == {"save": [str(saved.resolve())]}
    assert first["executed"] == ["load", "mask", "save"] and first["cached"] == []
    recipe = json.loads(Image.open(saved).text["diffgraph"])
    assert recipe == {"workflow": yaml.safe_load(WORKFLOW), "params": {"prefix": "shot"}}

    code, second = run_json(project)  # a new process: LoadImage and Mask come from the disk cache
    assert code == 0, second
    assert second["cached"] == ["load", "mask"]
    # saved files are cached in memory only: another process writes its own file
    assert second["executed"] == ["save"]
    assert second["outputs"] == {"save": [str((project / "out" / "shot_00002.png").resolve())]}
    assert saved.read_bytes() == (project / "out" / "shot_00002.png").read_bytes()

    code, renamed = run_json(project, "--set", "prefix=other")
    assert code == 0, renamed
    assert renamed["cached"] == ["load", "mask"] and renamed["executed"] == ["save"]
    assert renamed["outputs"] == {"save": [str((project / "out" / "other_00001.png").resolve())]}


def test_new_content_at_the_same_path_is_loaded_again(project):
    code, first = run_json(project)
    assert code == 0, first
    write_picture(project / "in.png", (10, 20, 30, 255))  # same path, same size, other pixels
    code, second = run_json(project)
    assert code == 0, second
    assert second["executed"] == ["load", "mask", "save"] and second["cached"] == []
    pixel = Image.open(project / "out" / "shot_00002.png").getpixel((0, 0))
    assert pixel == (10, 20, 30)
    write_picture(project / "in.png", (10, 20, 30, 255))  # rewritten with identical bytes: still a hit
    code, third = run_json(project)
    assert code == 0, third
    assert third["cached"] == ["load", "mask"]


def test_a_corrupt_image_fails_the_run_naming_node_and_field(project):
    (project / "in.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 100)
    code, result = run_json(project)
    assert code == 1
    assert result["status"] == "failed" and result["failed_node"] == "load"
    assert "field 'image'" in result["error"] and "in.png" in result["error"]
    assert not (project / "out").exists()


def test_a_missing_image_fails_the_run_without_a_traceback(project):
    (project / "in.png").unlink()
    done = diffgraph(project, "run", "workflow.yaml", "--no-cache")
    assert done.returncode == 1
    assert "node 'load' (LoadImage), field 'image': no such file" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_prefix_leaving_the_output_folder_is_refused(project):
    code, result = run_json(project, "--set", "prefix=../escape")
    assert code == 1
    assert result["failed_node"] == "save" and "field 'prefix'" in result["error"]
    assert sorted(p.name for p in project.iterdir()) == ["cache", "in.png", "workflow.yaml"]


def test_validate_reports_a_load_image_without_a_path(tmp_path):
    (tmp_path / "workflow.yaml").write_text("format: diffgraph/v1\nnodes:\n  load: {type: LoadImage}\n")
    done = diffgraph(tmp_path, "validate", "workflow.yaml", "--json")
    assert done.returncode == 2
    errors = json.loads(done.stdout)["errors"]
    assert [(e["node"], e["field"]) for e in errors] == [("load", "image")]


def test_processes_saving_at_once_never_share_a_name(project):
    nodes = ""
    for n in range(4):  # four different pictures: identical nodes would share one result
        write_picture(project / f"in{n}.png", (n, 0, 0, 255))
        nodes += (f"  load{n}: {{type: LoadImage, params: {{image: in{n}.png}}}}\n"
                  f"  save{n}: {{type: SaveImage, inputs: {{images: load{n}.image}}, params: {{prefix: shot}}}}\n")
    (project / "workflow.yaml").write_text(f"format: diffgraph/v1\nnodes:\n{nodes}")
    command = [sys.executable, "-m", "diffgraph.cli", "run", "workflow.yaml", "--json", "--no-cache",
               "--output-dir", "out"]
    running = [subprocess.Popen(command, cwd=project, stdout=subprocess.PIPE, text=True) for _ in range(3)]
    written = []
    for process in running:
        out, _ = process.communicate(timeout=300)
        assert process.returncode == 0
        written += [path for files in json.loads(out)["outputs"].values() for path in files]
    assert len(written) == len(set(written)) == 12
    assert sorted(os.listdir(project / "out")) == [f"shot_{n:05d}.png" for n in range(1, 13)]


# ---------------------------------------------------------------------------------------------
# the planner's fingerprint hook


def registry(*extra: type[Node]) -> NodeRegistry:
    result = NodeRegistry()
    result.add(*images.NODES, *extra)
    return result


def keys(document: dict, nodes: NodeRegistry) -> dict[str, str]:
    return {node_id: planned.key for node_id, planned in compile_workflow(document, nodes).nodes.items()}


def test_load_image_keys_follow_file_content(tmp_path):
    document = yaml.safe_load(WORKFLOW.replace("in.png", str(tmp_path / "in.png")))
    nodes = registry()
    write_picture(tmp_path / "in.png", (1, 2, 3, 255))
    first = keys(document, nodes)
    assert keys(document, nodes) == first
    write_picture(tmp_path / "in.png", (1, 2, 4, 255))
    second = keys(document, nodes)
    assert second["load"] != first["load"]
    assert second["mask"] != first["mask"] and second["save"] != first["save"]  # Merkle: downstream follows
    (tmp_path / "in.png").unlink()
    missing = keys(document, nodes)  # planning still succeeds; the run reports the missing file
    assert missing["load"] not in (first["load"], second["load"])


@node("Flaky", category="test")
class Flaky(Node):
    """A node whose fingerprint fails."""

    name: str = Param("x")
    text: String = Output()

    @classmethod
    def fingerprint(cls, params):
        raise RuntimeError("cannot read")

    def run(self, ctx):
        return {"text": self.name}


@node("Plain", category="test")
class Plain(Node):
    """A node without a fingerprint."""

    name: str = Param("x")
    text: String = Output()

    def run(self, ctx):
        return {"text": self.name}


def test_a_failing_fingerprint_never_hits_and_does_not_stop_planning():
    document = {"format": "diffgraph/v1", "nodes": {"flaky": {"type": "Flaky"}, "plain": {"type": "Plain"}}}
    nodes = registry(Flaky, Plain)
    first, second = keys(document, nodes), keys(document, nodes)
    assert first["flaky"] != second["flaky"]
    assert first["plain"] == second["plain"]


def test_an_output_may_share_its_name_with_a_param():
    spec = images.LoadImage.__node_spec__
    assert list(spec.params) == ["image"] and list(spec.outputs) == ["image", "mask"]
    mask_spec = images.MaskNode.__node_spec__
    assert "mask" in mask_spec.inputs and list(mask_spec.outputs) == ["mask"]
    with pytest.raises(TypeError, match="two outputs named 'text'"):
        @node("Twice")
        class Twice(Node):
            a: String = Output(name="text")
            text: String = Output()
