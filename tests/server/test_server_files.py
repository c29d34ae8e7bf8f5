"""What a request may make a real `diffgraph serve` read (issue 10, items 3.1, 3.3, 3.6, 3.9): only
regular files with bounded reads, file params inside the uploads folder, model params under the model
roots, no picture past the pixel limit, no Hugging Face Hub unless started with --allow-downloads; and
SIGTERM stops it within seconds with a run in progress."""

from __future__ import annotations

import io
import json
import os
import time

import aiohttp
import pytest
from PIL import Image
from server_support import PACK, Server, get_run, sleep_workflow, submit, wait_status, workflow

pytestmark = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="FIFOs are POSIX")

#: imported by the server subprocess (first on its PYTHONPATH): records every name lookup and
#: connection to a host that is not loopback, through Python's audit hooks (no mock: real sockets)
NETWORK_WATCH = '''
import os, sys

_LOG = os.environ.get("DIFFGRAPH_TEST_NETWORK_LOG")
_LOOPBACK = {"127.0.0.1", "::1", "localhost", "None", "0.0.0.0", "::"}


def _watch(event, args):
    if event == "socket.getaddrinfo":
        host = args[0]
    elif event == "socket.connect" and isinstance(args[1], tuple):
        host = args[1][0]
    else:
        return
    host = host.decode() if isinstance(host, bytes) else str(host)
    if _LOG and host not in _LOOPBACK:
        with open(_LOG, "a") as log:
            log.write(f"{event} {host}\\n")


sys.addaudithook(_watch)
'''


def load_and_save(image: str) -> dict:
    return workflow({"load": {"type": "LoadImage", "params": {"image": image}},
                     "save": {"type": "SaveImage", "inputs": {"images": "load.image"}}})


def load_model(model: str) -> dict:
    return workflow({"load": {"type": "LoadPipeline", "params": {"model": model}}})


def png(size=(6, 4), colour=(200, 30, 60), mode="RGB") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, colour if mode == "RGB" else 0).save(buffer, format="PNG")
    return buffer.getvalue()


async def post(session: aiohttp.ClientSession, url: str, body: dict) -> tuple[int, dict]:
    async with session.post(url, json=body, timeout=aiohttp.ClientTimeout(total=30)) as response:
        return response.status, await response.json()


async def upload(session: aiohttp.ClientSession, server: Server, data: bytes) -> tuple[int, dict]:
    form = aiohttp.FormData()
    form.add_field("image", data, filename="x.png", content_type="image/png")
    async with session.post(f"{server.url}/api/uploads", data=form) as response:
        return response.status, await response.json()


# ---------------------------------------------------------------------------------------------
# 3.1: regular files only, bounded reads, blocking work off the loop


async def test_a_fifo_in_the_uploads_folder_neither_hangs_validation_nor_the_server(server):
    os.mkfifo(server.data_dir / "uploads" / "pipe.png")  # no writer ever comes
    async with aiohttp.ClientSession() as session:
        status, body = await post(session, f"{server.url}/api/validate", {"workflow": load_and_save("pipe.png")})
        assert (status, body) == (200, {"valid": True, "errors": [], "families": {}})  # what the file is, the run says
        run_id = await submit(session, server.url, load_and_save("pipe.png"))
        run = await wait_status(session, server.url, run_id, ("failed", "succeeded"), timeout=90)
        async with session.get(f"{server.url}/api/health") as response:
            assert response.status == 200 and (await response.json())["status"] == "ok"
    assert run["status"] == "failed"
    assert "node 'load' (LoadImage), field 'image'" in run["error"] and "a FIFO (named pipe)" in run["error"]


@pytest.mark.parametrize("steps", [6000, 1])  # a node that checks cancellation often, and one that never does
async def test_sigterm_stops_the_server_within_seconds_with_a_run_in_progress(tmp_path, steps):
    data_dir = tmp_path / "data"
    server = Server(data_dir)
    try:
        fifo = data_dir / "uploads" / "pipe.png"
        os.mkfifo(fifo)
        async with aiohttp.ClientSession() as session:
            run_id = await submit(session, server.url, sleep_workflow(seconds=600, steps=steps))
            await wait_status(session, server.url, run_id, ("running",))
            for image in ("pipe.png", str(fifo), "/dev/zero"):  # before issue 10: each hung the validation thread
                status, _ = await post(session, f"{server.url}/api/validate", {"workflow": load_and_save(image)})
                assert status == 200
        started = time.monotonic()
        assert server.stop() == 0
        assert time.monotonic() - started < 15
    finally:
        server.kill()
    again = Server(data_dir)
    try:
        async with aiohttp.ClientSession() as session:
            run = await get_run(session, again.url, run_id)
    finally:
        again.stop()
    assert (run["status"], run["error"]) == ("failed", "server stopped")


# ---------------------------------------------------------------------------------------------
# 3.3: file params inside the uploads folder, model params under the model roots


async def test_an_uploaded_name_is_what_loadimage_takes_and_the_picture_comes_back(server):
    async with aiohttp.ClientSession() as session:
        status, uploaded = await upload(session, server, png())
        assert status == 201 and "path" not in uploaded
        run_id = await submit(session, server.url, load_and_save(uploaded["name"]))
        run = await wait_status(session, server.url, run_id, ("failed", "succeeded"), timeout=90)
        assert run["status"] == "succeeded", run["error"]
        async with session.get(f"{server.url}/api/outputs/{run['outputs']['save'][0]}") as response:
            picture = Image.open(io.BytesIO(await response.read()))
    assert picture.size == (6, 4) and picture.convert("RGB").getpixel((0, 0)) == (200, 30, 60)


async def test_loadimage_cannot_name_a_file_outside_the_uploads_folder(server, tmp_path):
    secret = tmp_path / "secret.png"
    secret.write_bytes(png(colour=(1, 2, 3)))
    (server.data_dir / "uploads" / "link.png").symlink_to(secret)
    missing = str(tmp_path / "missing.png")
    messages = {}
    async with aiohttp.ClientSession() as session:
        for image in (str(secret), missing, "../../secret.png", "link.png"):
            status, body = await post(session, f"{server.url}/api/runs", {"workflow": load_and_save(image)})
            assert status == 400, body
            [error] = body["errors"]
            assert (error["node"], error["field"]) == ("load", "image")
            messages[image] = error["message"].replace(repr(image), "NAME")
    assert len(set(messages.values())) == 1  # the same words whether the file exists or not
    text = next(iter(messages.values()))
    assert "POST /api/uploads" in text and os.getcwd() not in text and str(server.data_dir) not in text


async def test_model_params_name_models_under_the_server_s_model_roots_only(server):
    async with aiohttp.ClientSession() as session:
        status, body = await post(session, f"{server.url}/api/validate", {"workflow": load_model("models/tiny-sd")})
        assert (status, body["valid"]) == (200, True), body
        for model in ("/etc", "../../..", str(server.data_dir / "uploads"), "/nonexistent/model"):
            status, body = await post(session, f"{server.url}/api/validate", {"workflow": load_model(model)})
            assert status == 200 and body["valid"] is False, (model, body)
            [error] = body["errors"]
            assert (error["node"], error["field"]) == ("load", "model")
            assert "not a model this server knows" in error["message"]


# ---------------------------------------------------------------------------------------------
# 3.6: pixel bombs


async def test_an_upload_past_the_pixel_limit_is_refused(server):
    bomb = png(size=(4097, 4097), mode="L")
    assert len(bomb) < 100_000  # a few KB that would decode to 16.8 M pixels
    async with aiohttp.ClientSession() as session:
        status, body = await upload(session, server, bomb)
    assert status == 413 and "4097x4097" in body["error"] and str(4096 * 4096) in body["error"]


# ---------------------------------------------------------------------------------------------
# 3.9: the Hugging Face Hub only with --allow-downloads, and --model-dir


@pytest.fixture(scope="module")
def watched(tmp_path_factory):
    """A server with an empty Hugging Face cache, a --model-dir, and its network use on record."""
    root = tmp_path_factory.mktemp("watched")
    (root / "hook").mkdir()
    (root / "hook" / "sitecustomize.py").write_text(NETWORK_WATCH)
    extra = root / "extra-models" / "mine"
    extra.mkdir(parents=True)
    (extra / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    log = root / "network.log"
    path = os.pathsep.join(filter(None, [str(root / "hook"), str(PACK), os.environ.get("PYTHONPATH")]))
    env = {"PYTHONPATH": path, "HF_HOME": str(root / "hf"), "DIFFGRAPH_TEST_NETWORK_LOG": str(log)}
    # HF_HUB_OFFLINE empty: offline only because the server chooses to be, not because the test's shell is
    server = Server(root / "data", "--model-dir", str(root / "extra-models"), env={**env, "HF_HUB_OFFLINE": ""})
    yield server, log
    server.stop()


async def test_a_repo_id_does_not_make_the_server_contact_the_hub(watched):
    server, log = watched
    async with aiohttp.ClientSession() as session:
        status, body = await post(session, f"{server.url}/api/runs", {"workflow": load_model("someone/some-model")})
        assert status == 400, body
        [error] = body["errors"]
        assert (error["node"], error["field"]) == ("load", "model")
        assert "downloads are off on this server" in error["message"] and "--allow-downloads" in error["message"]
        # fed by a link, the repo id reaches the loader only when the run does: refused there too
        linked = workflow({"name": {"type": "String", "params": {"value": "someone/other-model"}},
                           "load": {"type": "LoadPipeline", "inputs": {"model": "name.text"}}})
        run = await wait_status(session, server.url, await submit(session, server.url, linked), ("failed", "succeeded"))
    assert run["status"] == "failed" and "node 'load' (LoadPipeline), field 'model'" in run["error"]
    assert "downloads are off on this server" in run["error"]
    assert not log.exists() or log.read_text() == ""


async def test_model_dir_folders_are_model_roots_and_errors_show_no_server_path(watched):
    server, _ = watched
    async with aiohttp.ClientSession() as session:
        status, body = await post(session, f"{server.url}/api/validate", {"workflow": load_model("mine")})
        assert status == 200 and body["valid"] and body["errors"] == []
        run_id = await submit(session, server.url, load_model("mine"))  # a model_index.json and nothing else
        run = await wait_status(session, server.url, run_id, ("failed", "succeeded"), timeout=90)
    assert run["status"] == "failed" and "<model dir 1>/mine is not a diffusion model" in run["error"]
    assert str(server.data_dir.parent) not in run["error"] and os.getcwd() not in run["error"]


def test_the_watch_sees_a_lookup_of_a_host_beyond_loopback(tmp_path):
    """The audit hook above is what the offline test relies on: it must see a real lookup."""
    import subprocess
    import sys

    (tmp_path / "sitecustomize.py").write_text(NETWORK_WATCH)
    log = tmp_path / "network.log"
    code = "import socket\ntry:\n    socket.getaddrinfo('huggingface.co', 443)\nexcept OSError:\n    pass\n"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60,
                   env={**os.environ, "PYTHONPATH": str(tmp_path), "DIFFGRAPH_TEST_NETWORK_LOG": str(log)})
    assert log.read_text() == "socket.getaddrinfo huggingface.co\n"
