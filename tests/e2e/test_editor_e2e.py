"""The browser editor end to end: Debian's Chromium (playwright-core) drives the built editor
served by a real `diffgraph serve` subprocess on a loopback port with its own data directory.

Each scenario is a script in web/e2e/editor.mjs that prints one line per check and saves a
screenshot of its end state under artifacts/.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
WEB = ROOT / "web"
ARTIFACTS = ROOT / "artifacts"
CHROMIUM = os.environ.get("DIFFGRAPH_CHROMIUM", "/usr/bin/chromium")
READY = re.compile(r"diffgraph serving on (http://\S+)")

pytestmark = pytest.mark.skipif(
    not (shutil.which("node") and Path(CHROMIUM).exists() and (WEB / "node_modules" / "playwright-core").is_dir()),
    reason="needs node, Debian's chromium and `npm ci` in web/ (scripts/setup installs them)",
)


class EditorServer:
    """`diffgraph serve --port 0` in a fresh data directory; `url` once it says it is serving."""

    def __init__(self, data_dir: Path):
        self.data_dir = data_dir
        self.log_path = data_dir / "server.log"
        data_dir.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "DIFFGRAPH_CACHE_MAX_GB": "1"}
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "diffgraph.cli", "serve", "--port", "0", "--data-dir", str(data_dir)],
            stdout=subprocess.PIPE, stderr=self._log, env=env, cwd=data_dir,
        )
        self.url: str | None = None
        ready = threading.Event()

        def read() -> None:
            assert self.proc.stdout is not None
            for raw in self.proc.stdout:
                match = READY.search(raw.decode(errors="replace"))
                if match:
                    self.url = match.group(1).rstrip("/")
                    ready.set()
            ready.set()

        threading.Thread(target=read, daemon=True).start()
        if not ready.wait(90) or self.url is None:
            self.stop()
            raise RuntimeError(f"diffgraph serve did not start: {self.log_path.read_text(errors='replace')}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EditorServer]:
    server = EditorServer(tmp_path_factory.mktemp("editor-data"))
    yield server
    server.stop()


def run_scenario(server: EditorServer, scenario: str, *args: str, timeout: float = 300) -> str:
    command = ["node", str(WEB / "e2e" / "editor.mjs"), server.url or "", scenario, "--artifacts", str(ARTIFACTS), *args]
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"scenario {scenario} failed:\n{output}\nserver log:\n" + (
        server.log_path.read_text(errors="replace")[-4000:]
    )
    assert "all checks passed" in output
    return output


def test_palette_adds_nodes_and_undo_copy_paste_delete_work(server: EditorServer) -> None:
    output = run_scenario(server, "palette")
    assert "ok: Ctrl+Z removes the last added node" in output


def test_incompatible_ports_are_refused_while_dragging(server: EditorServer, tmp_path: Path) -> None:
    workflow = tmp_path / "ports.yaml"
    workflow.write_text(
        "format: diffgraph/v1\nname: ports\nnodes:\n"
        "  seed: {type: Seed, params: {value: 3}, metadata: {position: {x: 0, y: 0}}}\n"
        "  scale: {type: Float, metadata: {position: {x: 0, y: 260}}}\n"
        "  save: {type: SaveImage, metadata: {position: {x: 420, y: 0}}}\n"
    )
    output = run_scenario(server, "incompatible", "--file", str(workflow))
    assert "ok: INT seed -> IMAGE images is refused while dragging" in output


def test_broken_workflow_shows_errors_on_its_nodes(server: EditorServer, tmp_path: Path) -> None:
    workflow = tmp_path / "broken.yaml"
    workflow.write_text(
        "format: diffgraph/v1\nname: broken\nnodes:\n"
        "  seed: {type: Seed, params: {value: -5}}\n"
        "  save: {type: SaveImage, inputs: {images: nowhere.image}}\n"
        "  mystery: {type: NoSuchNode}\n"
    )
    output = run_scenario(server, "broken", "--file", str(workflow))
    assert "ok: nothing ran" in output


@pytest.fixture(scope="module")
def tiny_sd(server: EditorServer) -> str:
    """A tiny model in the server's `<data dir>/models`, where a workflow may name it ("e2e-sd")."""
    from support.tiny_models import build_sd

    build_sd(server.data_dir / "models" / "e2e-sd")
    return "e2e-sd"


@pytest.mark.skipif(not (ROOT / "diffgraph" / "workflows" / "txt2img.yaml").exists(), reason="txt2img template missing")
def test_txt2img_runs_shows_image_and_reruns_from_cache(server: EditorServer, tiny_sd: str) -> None:
    output = run_scenario(  # past its timeout the scenario fails by itself
        server, "txt2img",
        "--set", f"model={tiny_sd}", "--set", "steps=2", "--set", "width=64", "--set", "height=64",
        timeout=600,
    )
    assert "ok: every other node is cached" in output, output


def test_upload_library_and_download_give_a_workflow_diffgraph_runs(server: EditorServer, tmp_path: Path) -> None:
    from PIL import Image

    picture = tmp_path / "red.png"
    Image.new("RGB", (64, 48), (200, 30, 30)).save(picture)
    saved = tmp_path / "saved.yaml"
    run_scenario(server, "library", "--image", str(picture), "--out", str(saved))
    # what the editor downloads is the workflow format `diffgraph run` takes unchanged; its LoadImage
    # names the upload as the server knows it, so the command line runs it from the uploads folder
    result = subprocess.run(
        [sys.executable, "-m", "diffgraph.cli", "run", str(saved), "--json", "--no-cache", "--output-dir", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=120, cwd=server.data_dir / "uploads",
    )
    assert result.returncode == 0, result.stderr
    written = list((tmp_path / "out").rglob("*.png"))
    assert len(written) == 1
    assert Image.open(written[0]).size == (64, 48)


def test_new_user_landing_palette_notifications_reload_images_and_history(server: EditorServer, tmp_path: Path) -> None:
    """Issue 16's new-user fixes, one browser session: txt2img on landing, favicon, palette in view,
    overlay notifications, the working graph across reloads and the unsaved warning, the inpaint
    template's upload/preview/paint widgets feeding its mask, a dropped plain picture, per-node
    time and local times in the history."""
    from PIL import Image

    picture = tmp_path / "red.png"
    Image.new("RGB", (64, 48), (200, 30, 30)).save(picture)
    output = run_scenario(server, "newuser", "--image", str(picture))
    assert "ok: the painter sets the template's mask param" in output


def test_comfyui_habits_search_link_drop_collapse_queue_models_shortcuts(server: EditorServer) -> None:
    output = run_scenario(server, "comfy")
    assert "ok: the three runs used seeds 5, 6, 7" in output


def test_upload_thumbnail_survives_a_reload_groups_delete_and_models_by_kind(server: EditorServer, tmp_path: Path) -> None:
    """Issue 16's leftovers: an upload read back after a reload, Delete on a selected group, and model
    params that list only the models of the kind they declare (`model:vae`, `model:pipeline`)."""
    import json

    import numpy as np
    from PIL import Image
    from safetensors.numpy import save_file

    picture = tmp_path / "red.png"
    Image.new("RGB", (64, 48), (200, 30, 30)).save(picture)
    models = server.data_dir / "models"
    (models / "e2e-vae").mkdir(parents=True, exist_ok=True)
    (models / "e2e-vae" / "config.json").write_text(json.dumps({"_class_name": "AutoencoderKL"}))
    (models / "loras").mkdir(exist_ok=True)
    save_file({"unet.to_q.lora_A.weight": np.zeros((2, 4), np.float32)}, str(models / "loras" / "e2e-style.safetensors"))
    output = run_scenario(server, "widgets", "--image", str(picture))
    assert "ok: after a reload the thumbnail still shows" in output
    assert "ok: Delete removes the selected group and keeps its nodes" in output
    assert "ok: LoadVAE offers VAEs and pipelines holding one" in output


def test_compile_toggle_shows_the_compile_stage_on_the_sampler(server: EditorServer, tiny_sd: str) -> None:
    """Issue 15 in the editor: a run with compile on asks for it and shows "compiling… N s", then the seconds."""
    output = run_scenario(
        server, "compile",
        "--set", f"model={tiny_sd}", "--set", "steps=2", "--set", "width=64", "--set", "height=64",
        timeout=500,
    )
    assert "ok: the run was submitted with options.compile" in output
    assert re.search(r"ok: then it says how long compiling took \(compiled the unet in [\d.]+s", output), output


def test_controlnet_template_upload_model_choices_and_run(server: EditorServer, tiny_sd: str, tmp_path: Path) -> None:
    """Issue 12 in the editor: the controlnet template's control image is an upload, its controlnet
    param lists the server's ControlNets (GET /api/models?kind=controlnet), and it runs."""
    from PIL import Image
    from support.tiny_controlnets import build_sd_controlnet

    build_sd_controlnet(server.data_dir / "models" / "e2e-controlnet")
    picture = tmp_path / "edges.png"
    Image.new("RGB", (64, 64), (255, 255, 255)).save(picture)
    output = run_scenario(
        server, "controlnet", "--image", str(picture),
        "--set", f"model={tiny_sd}", "--set", "steps=2", "--set", "width=64", "--set", "height=64",
        timeout=400,
    )
    assert "ok: the controlnet param offers the server's ControlNets only" in output
    assert "ok: the controlnet template ran and shows its picture" in output
