"""The editor learns each loader's model family from `POST /api/validate`: told from the model's own
files (model_index.json) under the server's model roots, before anything runs or loads."""

from __future__ import annotations

import json

import aiohttp
import pytest
from server_support import Server


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("families")
    models = root / "models"
    for name, pipeline in (("flux-like", "FluxPipeline"), ("sdxl-like", "StableDiffusionXLPipeline")):
        (models / name).mkdir(parents=True)
        (models / name / "model_index.json").write_text(json.dumps({"_class_name": pipeline}), encoding="utf-8")
    instance = Server(root / "data", "--model-dir", str(models))
    yield instance
    instance.stop()
    assert "Traceback" not in instance.log()


def loaders(models: dict[str, str]) -> dict:
    return {"format": "diffgraph/v1", "name": "loaders",
            "nodes": {node_id: {"type": "LoadPipeline", "params": {"model": model}} for node_id, model in models.items()}}


async def test_validate_reports_the_family_of_each_loader(server):
    workflow = loaders({"flux": "flux-like", "xl": "sdxl-like", "sd": "models/tiny-sd"})
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{server.url}/api/validate", json={"workflow": workflow}) as response:
            assert response.status == 200
            report = await response.json()
    assert report["valid"] is True, report["errors"]
    assert report["families"] == {"flux": "flux", "xl": "sdxl", "sd": "sd"}
