"""torch, diffusers and transformers load only when a node that needs them runs: validating,
listing the catalog and a fully cached re-run (which only saves cached pictures) import none."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from diffgraph.nodes.types import Image, Latent

TEMPLATE = Path(__file__).resolve().parents[2] / "diffgraph" / "workflows" / "txt2img.yaml"
HEAVY = ("torch", "diffusers", "transformers", "numpy")

# runs the CLI in-process, then reports which heavy modules it imported
PROBE = """
import contextlib, io, json, sys
from diffgraph.cli import main
out = io.StringIO()
with contextlib.redirect_stdout(out):
    code = main(sys.argv[1:])
print(json.dumps({"code": code, "stdout": out.getvalue(),
                  "imported": [m for m in HEAVY if m in sys.modules]}))
""".replace("HEAVY", repr(HEAVY))


def probe(tmp_path: Path, *args: object) -> dict:
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "xdg"), "DIFFGRAPH_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", PROBE, *map(str, args)], capture_output=True, text=True,
                          cwd=tmp_path, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_validate_and_the_catalog_import_no_torch(tmp_path):
    validated = probe(tmp_path, "validate", TEMPLATE)
    assert validated["code"] == 0 and validated["imported"] == []
    catalog = probe(tmp_path, "nodes", "--json")
    assert catalog["code"] == 0 and catalog["imported"] == []
    entries = {entry["type"]: entry for entry in json.loads(catalog["stdout"])}
    assert [port["type"] for port in entries["SampleLoop"]["inputs"]][:2] == ["UNET", "SCHEDULER"]


def test_a_fully_cached_rerun_imports_no_torch_and_saves_the_same_picture(tmp_path):
    args = ["run", TEMPLATE, "--set", "steps=2", "--json", "--cache-dir", tmp_path / "cache",
            "--output-dir", tmp_path / "out"]
    first = probe(tmp_path, *args)
    assert first["code"] == 0 and "torch" in first["imported"]
    again = probe(tmp_path, *args)
    assert again["code"] == 0 and again["imported"] == []  # numpy neither: the pixels were stored
    result = json.loads(again["stdout"])
    assert result["executed"] == ["save"] and result["cached"] == ["decode"]
    from PIL import Image as PILImage
    (old,), (new,) = json.loads(first["stdout"])["outputs"]["save"], result["outputs"]["save"]
    assert old != new and PILImage.open(old).tobytes() == PILImage.open(new).tobytes()


def test_restored_tensors_reach_nodes_as_torch_tensors(tmp_path):
    latent = {"samples": torch.randn(1, 4, 8, 8), "noise": torch.randn(1, 4, 8, 8)}
    stored = Latent.load(tmp_path, Latent.save(latent, tmp_path, "f32"))
    assert all(isinstance(v, np.ndarray) for v in stored.values())  # the light form: no torch needed
    assert 2 * 4 * 4 * 8 * 8 <= Latent.nbytes(stored) <= 2 * 4 * 4 * 8 * 8 + 256  # the arrays, plus bookkeeping
    restored = Latent.materialize(stored)
    assert all(isinstance(v, torch.Tensor) and torch.equal(v, latent[k]) for k, v in restored.items())

    half = {"samples": torch.randn(1, 4, 8, 8).to(torch.bfloat16)}  # numpy has no bfloat16: torch reads it
    stored_half = Latent.load(tmp_path, Latent.save(half, tmp_path, "bf16"))
    assert torch.equal(Latent.materialize(stored_half)["samples"], half["samples"])

    picture = torch.rand(1, 3, 4, 4)
    assert torch.equal(Image.materialize(Image.load(tmp_path, Image.save(picture, tmp_path, "image"))), picture)


def test_a_restored_image_saves_the_very_pictures_the_fresh_one_does(tmp_path):
    from diffgraph.nodes.images import _to_pictures
    from diffgraph.nodes.types import StoredImage

    # rounding ties (k + 0.5) / 255, values outside [0, 1] and NaN: the stored pixels round as a fresh save does
    ties = ((torch.arange(256, dtype=torch.float64) + 0.5) / 255).to(torch.float32)
    values = torch.cat([ties, torch.tensor([float("nan"), -0.5, 1.5, float("inf"), 0.0, 1.0]), torch.rand(3 * 2 * 8 * 8)])
    picture = values[: 2 * 3 * 8 * 8].reshape(2, 3, 8, 8)
    files = Image.save(picture, tmp_path, "image")
    stored = Image.load(tmp_path, files)
    assert isinstance(stored, StoredImage) and stored.shape == (2, 3, 8, 8)
    assert [p.tobytes() for p in _to_pictures(stored)] == [p.tobytes() for p in _to_pictures(picture)]
    torch.testing.assert_close(Image.materialize(stored), picture, equal_nan=True, rtol=0, atol=0)
    assert Image.nbytes(stored) >= 2 * 3 * 8 * 8 * 5  # the float tensor and the pixels

    older = Image.load(tmp_path, files[:1])  # an entry stored before the pixels were: numpy reads the tensor
    assert isinstance(older, np.ndarray)
    assert [p.tobytes() for p in _to_pictures(older)] == [p.tobytes() for p in _to_pictures(picture)]

    half = torch.rand(1, 3, 4, 4).to(torch.bfloat16)
    stored_half = Image.load(tmp_path, Image.save(half, tmp_path, "bf16"))
    assert torch.equal(Image.materialize(stored_half), half)
    assert [p.tobytes() for p in _to_pictures(stored_half)] == [p.tobytes() for p in _to_pictures(half)]
