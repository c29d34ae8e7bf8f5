"""Routes the editor's widgets use: an upload read back (thumbnails that survive a reload) and the
models of one kind for a model param (`GET /api/models?kind=`), against a real server."""

from __future__ import annotations

import io
import json
import os

import aiohttp
import numpy as np
from PIL import Image
from safetensors.numpy import save_file


def png(colour=(200, 30, 60)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (6, 4), colour).save(buffer, format="PNG")
    return buffer.getvalue()


async def upload(session: aiohttp.ClientSession, url: str, data: bytes) -> str:
    form = aiohttp.FormData()
    form.add_field("image", data, filename="x.png", content_type="image/png")
    async with session.post(f"{url}/api/uploads", data=form) as response:
        assert response.status == 201
        return (await response.json())["name"]


async def get(session: aiohttp.ClientSession, url: str) -> tuple[int, dict[str, str], bytes]:
    async with session.get(url) as response:
        return response.status, dict(response.headers), await response.read()


# -- GET /api/uploads/{name} ----------------------------------------------------------------------


async def test_an_upload_reads_back_as_the_same_image_sandboxed(server):
    picture = png()
    async with aiohttp.ClientSession() as session:
        name = await upload(session, server.url, picture)
        status, headers, body = await get(session, f"{server.url}/api/uploads/{name}")
    assert status == 200
    assert body == picture
    assert headers["Content-Type"] == "image/png"
    assert headers["Content-Security-Policy"] == "default-src 'none'; sandbox"
    assert headers["X-Content-Type-Options"] == "nosniff"


async def test_a_missing_upload_and_anything_not_a_regular_file_get_the_same_404(server, tmp_path):
    uploads = server.data_dir / "uploads"
    (uploads / "folder.png").mkdir()
    os.mkfifo(uploads / "pipe.png")  # no writer ever comes: reading it would hang
    (uploads / ".partial.png").write_bytes(png())  # hidden: a file still being written
    # bigger than the server's upload limit (1 MB here): nothing an upload can have made
    (uploads / "huge.png").write_bytes(png() + b"\0" * (1024 * 1024 + 1))
    answers = {}
    async with aiohttp.ClientSession() as session:
        for name in ("nothing.png", "folder.png", "pipe.png", ".partial.png", "huge.png"):
            status, headers, body = await get(session, f"{server.url}/api/uploads/{name}")
            assert status == 404, name
            assert headers["Content-Type"].startswith("application/json")
            answers[name] = json.loads(body)["error"].replace(name, "NAME")
    assert set(answers.values()) == {"no upload named 'NAME'"}


async def test_an_upload_name_cannot_leave_the_uploads_folder(server, tmp_path):
    secret = tmp_path / "secret.png"
    secret.write_bytes(png())
    (server.data_dir / "uploads" / "link.png").symlink_to(secret)
    async with aiohttp.ClientSession() as session:
        for name, expected in (("link.png", 403), ("..%2F..%2Fetc%2Fpasswd", 400), ("a%5Cb.png", 400)):
            status, _, body = await get(session, f"{server.url}/api/uploads/{name}")
            assert status == expected, (name, body)
            assert secret.read_bytes() != body
            assert str(tmp_path) not in body.decode(errors="replace")


# -- GET /api/models?kind= -------------------------------------------------------------------------


def lora_file(path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({"unet.down_blocks.0.attn.to_q.lora_A.weight": np.zeros((4, 8), np.float32),
               "unet.down_blocks.0.attn.to_q.lora_B.weight": np.zeros((8, 4), np.float32)}, str(path))


def component_folder(path, class_name: str) -> None:
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps({"_class_name": class_name}))


async def models(session: aiohttp.ClientSession, url: str, kind: str | None = None) -> dict[str, dict]:
    query = f"?kind={kind}" if kind else ""
    async with session.get(f"{url}/api/models{query}") as response:
        assert response.status == 200
        return {m["name"]: m for m in (await response.json())["models"]}


async def test_models_of_one_kind_are_those_that_are_or_hold_it(server):
    folder = server.data_dir / "models"
    lora_file(folder / "loras" / "style.safetensors")
    component_folder(folder / "my-vae", "AutoencoderKL")
    component_folder(folder / "canny-controlnet", "ControlNetModel")
    async with aiohttp.ClientSession() as session:
        everything = await models(session, server.url)
        loras = await models(session, server.url, "lora")
        vaes = await models(session, server.url, "vae")
        pipelines = await models(session, server.url, "pipeline")
        controlnets = await models(session, server.url, "controlnet")
    # the names are what a model param takes on this server: relative to <data dir>/models
    assert everything["loras/style.safetensors"] == {"name": "loras/style.safetensors", "source": "data dir",
                                                      "kind": "lora", "kinds": ["lora"]}
    assert everything["models/tiny-sd"]["kinds"] == ["pipeline", "unet", "vae", "text_encoder"]
    assert set(loras) == {"loras/style.safetensors"}
    # a pipeline holds a VAE: LoadVAE may take either
    assert {"my-vae", "models/tiny-sd"} <= set(vaes) and "loras/style.safetensors" not in vaes
    assert "models/tiny-sd" in pipelines and "my-vae" not in pipelines and "canny-controlnet" not in pipelines
    assert set(controlnets) == {"canny-controlnet"}


async def test_an_unknown_kind_is_a_400_naming_the_valid_ones(server):
    async with aiohttp.ClientSession() as session, session.get(f"{server.url}/api/models?kind=lroa") as response:
        assert response.status == 400
        error = await response.json()
    assert error["field"] == "kind"
    assert error["error"].startswith("unknown model kind 'lroa'; use one of pipeline, unet,")
    assert "lora" in error["error"] and "controlnet" in error["error"]


async def test_model_params_declare_the_kind_their_list_comes_from(server):
    async with aiohttp.ClientSession() as session, session.get(f"{server.url}/api/nodes") as response:
        catalog = {entry["type"]: entry for entry in await response.json()}
    widget = {name: next(p["widget"] for p in catalog[name]["params"] if p["name"] == "model")
              for name in ("LoadPipeline", "LoadUNet", "LoadVAE", "LoadTextEncoder")}
    assert widget == {"LoadPipeline": "model:pipeline", "LoadUNet": "model:unet", "LoadVAE": "model:vae",
                      "LoadTextEncoder": "model:text_encoder"}
