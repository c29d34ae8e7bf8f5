"""Routes the editor needs beyond the workflow API: the models it offers for model params, and its icon."""

from __future__ import annotations

import aiohttp


async def test_models_lists_the_bundled_models_by_the_name_a_model_param_takes(server):
    async with aiohttp.ClientSession() as session, session.get(f"{server.url}/api/models") as response:
        assert response.status == 200
        models = (await response.json())["models"]
    by_name = {m["name"]: m for m in models}
    assert by_name["models/tiny-sd"] == {"name": "models/tiny-sd", "source": "bundled", "kind": "pipeline",
                                         "kinds": ["pipeline", "unet", "vae", "text_encoder"]}
    assert by_name["models/tiny-depth"]["kind"] == "depth"
    # what it lists is what a workflow can name: the template's default model is among them
    async with aiohttp.ClientSession() as session, session.get(f"{server.url}/api/templates") as response:
        templates = await response.json()
    txt2img = next(t for t in (templates["templates"] if isinstance(templates, dict) else templates)
                   if t["name"] == "txt2img")
    document = txt2img.get("workflow") or txt2img.get("document")
    assert document["params"]["model"]["default"] in by_name


async def test_favicon_is_served(server):
    async with aiohttp.ClientSession() as session, session.get(f"{server.url}/favicon.ico") as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("image/svg+xml")
        assert (await response.read()).startswith(b"<svg")
