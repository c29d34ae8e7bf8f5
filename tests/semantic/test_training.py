"""tools/train_tiny_models.py: the same seed gives the same weights, and what it writes the engine loads.

The full recipe takes most of an hour; here every stage runs a few steps on a small dataset, which
exercises the same code paths (dataset, every stage, every save) in well under a minute.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import scenes
from judge import to_rgb
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
QUICK = ["--scenes", "256", "--scale", "0.002"]


def train(out: Path, *args: str) -> None:
    done = subprocess.run([sys.executable, str(REPO / "tools" / "train_tiny_models.py"), "--out", str(out), *args],
                          capture_output=True, text=True, timeout=600,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]


def weights(folder: Path) -> dict[str, str]:
    """Every safetensors file under `folder` -> its SHA-256."""
    return {str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(folder.rglob("*.safetensors"))}


def test_scenes_are_a_pure_function_of_the_seed():
    first, again, other = scenes.dataset(64, 7), scenes.dataset(64, 7), scenes.dataset(64, 8)
    assert np.array_equal(first["images"], again["images"]) and first["captions"] == again["captions"]
    assert np.array_equal(first["depths"], again["depths"])
    assert not np.array_equal(first["images"], other["images"])


def test_training_is_deterministic_and_its_models_run_in_the_templates(tmp_path, run_template):
    train(tmp_path / "a", *QUICK)
    train(tmp_path / "b", *QUICK)
    produced = weights(tmp_path / "a")
    folders = {name.split("/")[0] for name in produced}
    assert folders == {"tiny-sd", "tiny-sd-depth", "tiny-depth", "tiny-ddpm"}
    assert produced == weights(tmp_path / "b")  # bit for bit, every file

    train(tmp_path / "c", *QUICK, "--seed", "1", "--stages", "depth_estimator")
    assert weights(tmp_path / "c") != {name: digest for name, digest in produced.items()
                                       if name.startswith("tiny-depth/")}

    # what the script writes is what the templates load (2 steps: only the plumbing is judged here)
    run = run_template("txt2img", model=str(tmp_path / "a" / "tiny-sd"), steps=2)
    image = to_rgb(run.value("decode", "image"))
    assert image.shape == (scenes.SIZE, scenes.SIZE, 3) and np.isfinite(image).all()
    picture = tmp_path / "scene.png"
    Image.fromarray(scenes.render(scenes.random_scene(np.random.default_rng(0)))[0]).save(picture)
    trained = str(tmp_path / "a" / "tiny-sd-depth")
    depth_run = run_template("depth2img", model=trained, depth_model=trained, image=str(picture), steps=2)
    depth = depth_run.value("depth", "depth")
    assert depth.ndim == 4 and bool(depth.isfinite().all())
    unconditional = run_template("unconditional", model=str(tmp_path / "a" / "tiny-ddpm"), steps=2, batch_size=1)
    assert unconditional.value("pixels", "image").shape[-2:] == (scenes.SIZE, scenes.SIZE)
