"""The server answers the catalog and validation without loading torch (the port declarations do
not need it): its process maps no libtorch until a node that needs torch runs."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest
import yaml

TEMPLATE = Path(__file__).resolve().parents[2] / "diffgraph" / "workflows" / "txt2img.yaml"


def maps_torch(pid: int) -> bool:
    return "libtorch" in Path(f"/proc/{pid}/maps").read_text()


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs Linux /proc")
async def test_the_catalog_and_validation_load_no_torch(server):
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{server.url}/api/nodes") as response:
            catalog = {entry["type"]: entry for entry in await response.json()}
        document = yaml.safe_load(TEMPLATE.read_text(encoding="utf-8"))
        async with session.post(f"{server.url}/api/validate", json={"workflow": document}) as response:
            verdict = await response.json()
    assert [port["type"] for port in catalog["SampleLoop"]["inputs"]][:2] == ["UNET", "SCHEDULER"]
    assert verdict == {"valid": True, "errors": [], "families": {"load": "sd"}}
    assert not maps_torch(server.proc.pid)
