"""`diffgraph serve` takes its settings from the environment parsed once by the CLI: a fractional upload
limit works (it crashed the server at import), and a bad value is a clear exit 2 (tested with the CLI's)."""

from __future__ import annotations

import io
import os

import aiohttp
import pytest
from PIL import Image
from server_support import Server


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    instance = Server(tmp_path_factory.mktemp("settings") / "data", env={"DIFFGRAPH_MAX_UPLOAD_MB": "1.5"})
    yield instance
    instance.stop()


def noise_png(side: int) -> bytes:
    """A PNG of random pixels: it does not compress, so its size is about side * side * 3 bytes."""
    buffer = io.BytesIO()
    Image.frombytes("RGB", (side, side), os.urandom(side * side * 3)).save(buffer, format="PNG")
    return buffer.getvalue()


async def upload(server: Server, data: bytes) -> tuple[int, dict]:
    form = aiohttp.FormData()
    form.add_field("image", data, filename="noise.png", content_type="image/png")
    async with aiohttp.ClientSession() as session, session.post(f"{server.url}/api/uploads", data=form) as response:
        return response.status, await response.json()


async def test_a_fractional_upload_limit_is_one_and_a_half_megabytes(server):
    under, over = noise_png(600), noise_png(750)
    assert 1024**2 < len(under) < 1.5 * 1024**2 < len(over)
    status, body = await upload(server, under)
    assert status == 201, body
    status, body = await upload(server, over)
    assert status == 413 and f"limit {int(1.5 * 1024**2)} bytes" in body["error"], body
