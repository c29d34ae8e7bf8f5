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
HEAVY = ("torch", "diffusers", "transformers")

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
    assert again["code"] == 0 and again["imported"] == []
    result = json.loads(again["stdout"])
    assert result["executed"] == ["save"] and result["cached"] == ["decode"]
    from PIL import Image as PILImage
    (old,), (new,) = json.loads(first["stdout"])["outputs"]["save"], result["outputs"]["save"]
    assert old != new and PILImage.open(old).tobytes() == PILImage.open(new).tobytes()


def test_restored_tensors_reach_nodes_as_torch_tensors(tmp_path):
    latent = {"samples": torch.randn(1, 4, 8, 8), "noise": torch.randn(1, 4, 8, 8)}
    stored = Latent.load(tmp_path, Latent.save(latent, tmp_path, "f32"))
    assert all(isinstance(v, np.ndarray) for v in stored.values())  # the light form: no torch needed
    # both arrays are views of the one buffer read from the file: counted once, header included
    assert 2 * 4 * 4 * 8 * 8 <= Latent.nbytes(stored) < 2 * 4 * 4 * 8 * 8 + 1024
    restored = Latent.materialize(stored)
    assert all(isinstance(v, torch.Tensor) and torch.equal(v, latent[k]) for k, v in restored.items())

    half = {"samples": torch.randn(1, 4, 8, 8).to(torch.bfloat16)}  # numpy has no bfloat16: torch reads it
    stored_half = Latent.load(tmp_path, Latent.save(half, tmp_path, "bf16"))
    assert torch.equal(Latent.materialize(stored_half)["samples"], half["samples"])

    picture = torch.rand(1, 3, 4, 4)
    assert torch.equal(Image.materialize(Image.load(tmp_path, Image.save(picture, tmp_path, "image"))), picture)
