"""The locked door, one behaviour per test, against real server processes."""

from __future__ import annotations

import io
import os
import sys
from pathlib import Path

import aiohttp
import pytest
from PIL import Image
from server_support import Server, submit, wait_status, workflow
from yarl import URL

TOKEN = "s3cret-token-for-tests"


def raw(server: Server, path: str) -> URL:
    """A URL sent exactly as written: no client-side normalisation of `..` or percent-escapes."""
    return URL(f"{server.url}{path}", encoded=True)


async def assert_json_error(response: aiohttp.ClientResponse, *statuses: int) -> dict:
    assert response.status in statuses, (response.status, await response.text())
    assert response.content_type == "application/json"
    body = await response.json()
    assert isinstance(body["error"], str) and body["error"]
    assert "Traceback" not in body["error"]
    return body


def listening_addresses(port: int) -> set[str]:
    """Local addresses of listening TCP sockets on `port`, read from /proc/net/tcp."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not os.path.exists(table):
            continue
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            address, hex_port = fields[1].split(":")
            if int(hex_port, 16) == port and fields[3] == "0A":
                found.add(address)
    return found


# -- binding and the token ------------------------------------------------------------------------


def test_binds_loopback_by_default(tmp_path):
    server = Server(tmp_path / "data")
    try:
        assert server.host == "127.0.0.1"
        if sys.platform.startswith("linux"):
            assert listening_addresses(server.port) == {"0100007F"}  # 127.0.0.1, and nothing else
    finally:
        server.stop()


def test_binding_beyond_loopback_without_a_token_refuses_to_start(tmp_path):
    server = Server(tmp_path / "data", "--host", "0.0.0.0", wait=False)
    code = server.proc.wait(60)
    server.kill()
    assert code == 2
    assert "token" in server.log().lower()
    assert not (tmp_path / "data" / "diffgraph.db").exists()


@pytest.fixture(scope="module")
def open_server(tmp_path_factory):
    """Listening on every interface, so the token is mandatory (here from the environment)."""
    instance = Server(tmp_path_factory.mktemp("open") / "data", "--host", "0.0.0.0", env={"DIFFGRAPH_TOKEN": TOKEN})
    yield instance
    instance.stop()


def test_the_token_can_also_come_from_the_command_line(tmp_path):
    server = Server(tmp_path / "data", "--host", "0.0.0.0", "--token", TOKEN)
    try:
        assert server.port is not None and server.host == "0.0.0.0"
    finally:
        server.stop()


async def test_with_a_token_every_route_but_health_requires_it(open_server):
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{open_server.url}/api/health") as response:
            assert response.status == 200
        for method, path in (("GET", "/api/nodes"), ("GET", "/api/runs"), ("GET", "/api/openapi.json"),
                             ("POST", "/api/validate"), ("PUT", "/api/workflows/x"), ("GET", "/"),
                             ("GET", "/api/outputs/x.png"), ("GET", "/api/templates")):
            async with session.request(method, f"{open_server.url}{path}", json={}) as response:
                await assert_json_error(response, 401)
            wrong = {"Authorization": "Bearer not-the-token"}
            async with session.request(method, f"{open_server.url}{path}", json={}, headers=wrong) as response:
                await assert_json_error(response, 401)
        bearer = {"Authorization": f"Bearer {TOKEN}"}
        async with session.get(f"{open_server.url}/api/nodes", headers=bearer) as response:
            assert response.status == 200
        async with session.get(f"{open_server.url}/api/nodes?token={TOKEN}") as response:
            assert response.status == 200


async def test_the_editor_opened_with_the_token_sets_a_cookie_the_browser_then_sends(open_server):
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:  # IP hosts, as browsers
        async with session.get(f"{open_server.url}/?token={TOKEN}") as response:
            assert response.status == 200
            cookie = response.cookies["diffgraph_token"]
            assert cookie.value == TOKEN and cookie["httponly"] and cookie["samesite"] == "Strict"
        async with session.get(f"{open_server.url}/api/runs") as response:  # the jar sends the cookie
            assert response.status == 200


async def test_the_websocket_needs_the_token_too(open_server):
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await session.ws_connect(f"{open_server.url}/ws")
        assert refused.value.status == 401
        async with session.ws_connect(f"{open_server.url}/ws?token={TOKEN}") as ws:
            headers = {"Authorization": f"Bearer {TOKEN}"}
            run_id = await submit_with(session, open_server.url, headers)
            while True:
                message = await ws.receive_json(timeout=30)
                if message["run_id"] == run_id and message["type"] == "run_finished":
                    break


async def submit_with(session: aiohttp.ClientSession, url: str, headers: dict[str, str]) -> str:
    document = workflow({"n": {"type": "Int", "params": {"value": 1}}})
    async with session.post(f"{url}/api/runs", json={"workflow": document}, headers=headers) as response:
        assert response.status == 202
        return (await response.json())["id"]


# -- Origin and Host ------------------------------------------------------------------------------


VALID = {"workflow": workflow({"n": {"type": "Int"}})}


@pytest.mark.parametrize("origin", ["http://evil.example", "null", "http://localhost.evil.example",
                                    "https://127.0.0.1", "http://127.0.0.1:1"])
async def test_state_changing_requests_from_another_origin_are_refused(server, origin):
    headers = {"Origin": origin}
    async with aiohttp.ClientSession() as session:
        for method, path in (("POST", "/api/validate"), ("POST", "/api/runs"), ("PUT", "/api/workflows/victim"),
                             ("DELETE", "/api/workflows/victim"), ("POST", "/api/runs/x/cancel")):
            async with session.request(method, f"{server.url}{path}", json=VALID, headers=headers) as response:
                body = await assert_json_error(response, 403)
                assert "origin" in body["error"].lower()
        async with session.get(f"{server.url}/api/workflows/victim") as response:
            assert response.status == 404  # the PUT did not happen


async def test_a_cross_origin_websocket_upgrade_is_refused(server):
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await session.ws_connect(f"{server.url}/ws", origin="http://evil.example")
        assert refused.value.status == 403
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await session.ws_connect(f"{server.url}/ws", origin="null")
        assert refused.value.status == 403
        async with session.ws_connect(f"{server.url}/ws", origin=server.url) as ws:
            assert not ws.closed


async def test_the_servers_own_origin_and_clients_without_origin_are_allowed(server):
    async with aiohttp.ClientSession() as session:
        for headers in ({"Origin": server.url}, {}):
            async with session.post(f"{server.url}/api/validate", json=VALID, headers=headers) as response:
                assert response.status == 200 and (await response.json())["valid"] is True


@pytest.mark.parametrize("host", ["evil.example", "evil.example:80", "127.0.0.1.evil.example", "localhost.evil"])
async def test_a_foreign_host_header_is_refused_dns_rebinding(server, host):
    async with aiohttp.ClientSession() as session:
        for path in ("/api/health", "/api/runs", "/"):
            async with session.get(f"{server.url}{path}", headers={"Host": host}) as response:
                await assert_json_error(response, 403)
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await session.ws_connect(f"{server.url}/ws", headers={"Host": host})
        assert refused.value.status == 403


async def test_localhost_and_the_bound_address_are_accepted_hosts(server):
    async with aiohttp.ClientSession() as session:
        for host in (f"localhost:{server.port}", f"127.0.0.1:{server.port}", "localhost"):
            async with session.get(f"{server.url}/api/health", headers={"Host": host}) as response:
                assert response.status == 200


async def test_allow_host_adds_a_name_and_nothing_else(tmp_path):
    server = Server(tmp_path / "data", "--allow-host", "studio.lan")
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{server.url}/api/health", headers={"Host": "studio.lan:8188"}) as response:
                assert response.status == 200
            async with session.get(f"{server.url}/api/health", headers={"Host": "other.lan"}) as response:
                await assert_json_error(response, 403)
    finally:
        server.stop()


# -- contained paths ------------------------------------------------------------------------------


@pytest.mark.parametrize("path", [
    "/api/outputs/..%2Fdiffgraph.db",
    "/api/outputs/..%2F..%2F..%2F..%2F..%2Fetc%2Fpasswd",
    "/api/outputs/%2e%2e%2fdiffgraph.db",
    "/api/outputs/%2E%2E/diffgraph.db",
    "/api/outputs/%2Fetc%2Fpasswd",
    "/api/outputs/sub/..%2F..%2Fdiffgraph.db",
    "/api/outputs/..%5Cdiffgraph.db",
    "/api/outputs/x%00.png",
    "/assets/..%2F..%2Fapp.py",
    "/assets/%2Fetc%2Fpasswd",
])
async def test_traversal_out_of_a_served_folder_is_refused(server, path):
    async with aiohttp.ClientSession() as session, session.get(raw(server, path)) as response:
        await assert_json_error(response, 400, 403, 404)
        assert b"SQLite" not in await response.read()


async def test_a_symlink_leaving_the_outputs_folder_is_refused_one_inside_is_served(server, tmp_path):
    outputs = server.data_dir / "outputs"
    secret = tmp_path / "secret.png"
    Image.new("RGB", (2, 2)).save(secret)
    (outputs / "escape.png").symlink_to(secret)
    (outputs / "escape-db.png").symlink_to(server.data_dir / "diffgraph.db")
    (outputs / "real.png").write_bytes(secret.read_bytes())
    (outputs / "alias.png").symlink_to(outputs / "real.png")
    async with aiohttp.ClientSession() as session:
        for name in ("escape.png", "escape-db.png"):
            async with session.get(f"{server.url}/api/outputs/{name}") as response:
                await assert_json_error(response, 403)
        async with session.get(f"{server.url}/api/outputs/alias.png") as response:
            assert response.status == 200 and await response.read() == secret.read_bytes()


async def test_a_file_still_being_written_is_never_served(server):
    outputs = server.data_dir / "outputs"
    (outputs / ".image.1234.tmp").write_bytes(b"\x89PNG half")
    (outputs / "sub").mkdir(exist_ok=True)
    (outputs / "sub" / ".partial.png").write_bytes(b"\x89PNG half")
    async with aiohttp.ClientSession() as session:
        for name in (".image.1234.tmp", "sub/.partial.png"):
            async with session.get(f"{server.url}/api/outputs/{name}") as response:
                await assert_json_error(response, 404)


@pytest.mark.parametrize("name", ["..%2F..%2Fevil", "%2Fetc%2Fpasswd", "..", ".hidden", "a%5Cb", "x%00y",
                                  "a" * 200])
async def test_workflow_library_names_are_checked(server, name):
    async with aiohttp.ClientSession() as session:
        for method in ("GET", "PUT", "DELETE"):
            async with session.request(method, raw(server, f"/api/workflows/{name}"), json=VALID) as response:
                await assert_json_error(response, 400, 404)


@pytest.mark.parametrize("ref", ["/etc/passwd", "../../../../etc/passwd", "../diffgraph.db", "C:\\x"])
async def test_subgraph_references_never_read_files_the_request_names(server, ref):
    document = workflow({"sub": {"type": f"workflow:{ref}"}})
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{server.url}/api/runs", json={"workflow": document}) as response:
            body = await assert_json_error(response, 400)
    assert body["errors"][0]["node"] == "sub" and "root:" not in str(body)


# -- uploads and served user content ----------------------------------------------------------------


def png_bytes(size=(4, 4)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (9, 9, 9)).save(buffer, format="PNG")
    return buffer.getvalue()


async def post_upload(server: Server, data: bytes, filename="x.png", content_type="image/png", field="image"):
    form = aiohttp.FormData()
    form.add_field(field, data, filename=filename, content_type=content_type)
    async with aiohttp.ClientSession() as session, session.post(f"{server.url}/api/uploads", data=form) as response:
        return response.status, await response.json()


@pytest.mark.parametrize("data", [
    b"<html><script>alert(1)</script></html>",
    b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>',
    b"\x89PNG\r\n\x1a\n" + b"\x00" * 40,
    png_bytes()[:60],
    b"",
])
async def test_an_upload_that_is_not_an_image_is_refused(server, data):
    status, body = await post_upload(server, data)
    assert status in (400, 415) and body["error"]
    assert list((server.data_dir / "uploads").glob("*.html")) == []


async def test_an_oversized_upload_is_refused(server):
    status, body = await post_upload(server, os.urandom(2 * 1024 * 1024))  # the test server allows 1 MiB
    assert status == 413 and "too large" in body["error"]


async def test_an_upload_without_an_image_field_or_not_multipart_is_refused(server):
    status, body = await post_upload(server, png_bytes(), field="other")
    assert status == 400 and "image" in body["error"]
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{server.url}/api/uploads", data=png_bytes(),
                                headers={"Content-Type": "image/png"}) as response:
            await assert_json_error(response, 415)


@pytest.mark.parametrize("kind", ["html", "svg", "txt"])
async def test_user_content_that_is_not_an_image_is_only_ever_an_attachment(server, kind):
    async with aiohttp.ClientSession() as session:
        run_id = await submit(session, server.url, workflow({"w": {"type": "TestWriteFile", "params": {"kind": kind}}}))
        run = await wait_status(session, server.url, run_id, ("succeeded", "failed"))
        [name] = run["outputs"]["w"]
        async with session.get(f"{server.url}/api/outputs/{name}") as response:
            assert response.status == 200
            assert response.content_type == "application/octet-stream"
            assert response.headers["Content-Disposition"].startswith("attachment")
            assert response.headers["X-Content-Type-Options"] == "nosniff"
            assert "sandbox" in response.headers["Content-Security-Policy"]


async def test_the_editor_page_carries_a_content_security_policy(server):
    async with aiohttp.ClientSession() as session, session.get(f"{server.url}/") as response:
        assert response.status == 200 and response.content_type == "text/html"
        policy = response.headers["Content-Security-Policy"]
    directives = dict(part.strip().split(" ", 1) for part in policy.split(";"))
    assert directives["script-src"] == "'self'"
    assert directives["object-src"] == "'none'" and directives["frame-ancestors"] == "'none'"


# -- bad input ------------------------------------------------------------------------------------


NOT_A_BODY = [b"{not json", b"[1, 2]", b'"text"', b"\xff\xfe", b"[" * 100_000, b'{"workflow": 5}', b"{}",
              b'{"workflow": {"a": ' * 200 + b"1" + b"}" * 201,
              b'{"workflow": {"format": "diffgraph/v1", "nodes": {"n": {"type": "Int"}, "n": {"type": "Int"}}}}']
INVALID_WORKFLOWS = [
    b'{"workflow": {"format": "diffgraph/v1", "nodes": {}}, "params": []}',
    b'{"workflow": {"format": "diffgraph/v1", "nodes": {"n": {"type": "Int", "params": {"value": "x"}}}}}',
    b'{"workflow": {"format": "diffgraph/v1", "nodes": {"n": {"type": "Int", "params": {"value": 1e999}}}}}',
    b'{"workflow": {"format": "diffgraph/v1", "nodes": [1]}}',
    b'{"workflow": {"format": "diffgraph/v1", "params": {"p": {"type": "INT"}}, "nodes": {}}, "params": {"p": [1]}}',
    b'{"workflow": {"format": "diffgraph/v2", "nodes": {"n": {"type": "Int", "inputs": {"value": 3}}}}}',
    b'{"workflow": "nodes: [unclosed"}',
    b'{"workflow": {"description": "' + b"[" * 1000 + b'"}}',
]


async def post_json(session: aiohttp.ClientSession, method: str, url: str, body: bytes) -> aiohttp.ClientResponse:
    return await session.request(method, url, data=body, headers={"Content-Type": "application/json"})


@pytest.mark.parametrize("body", NOT_A_BODY)
async def test_malformed_bodies_get_a_json_400_everywhere(server, body):
    async with aiohttp.ClientSession() as session:
        for method, path in (("POST", "/api/runs"), ("POST", "/api/validate"), ("PUT", "/api/workflows/bad")):
            async with await post_json(session, method, f"{server.url}{path}", body) as response:
                await assert_json_error(response, 400)


@pytest.mark.parametrize("body", INVALID_WORKFLOWS)
async def test_a_workflow_failing_validation_is_a_400_on_submit_and_invalid_on_validate(server, body):
    async with aiohttp.ClientSession() as session:
        async with await post_json(session, "POST", f"{server.url}/api/runs", body) as response:
            error = await assert_json_error(response, 400)
            assert error["error"] == "invalid workflow" or "'params'" in error["error"]
        async with await post_json(session, "POST", f"{server.url}/api/validate", body) as response:
            if response.status == 200:
                report = await response.json()
                assert report["valid"] is False and report["errors"]
            else:
                await assert_json_error(response, 400)


async def test_an_oversized_body_is_a_413(server):
    body = b'{"workflow": {"description": "' + b"x" * (17 * 1024 * 1024) + b'"}}'
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{server.url}/api/runs", data=body,
                                headers={"Content-Type": "application/json"}) as response:
            await assert_json_error(response, 413)


@pytest.mark.parametrize("query", ["limit=abc", "limit=0", "limit=100000", "status=bogus", "before=-1",
                                   "before=1e3"])
async def test_bad_history_queries_get_a_json_400(server, query):
    async with aiohttp.ClientSession() as session, session.get(f"{server.url}/api/runs?{query}") as response:
        await assert_json_error(response, 400)


async def test_unknown_routes_methods_and_ids_are_json_4xx(server):
    async with aiohttp.ClientSession() as session:
        for method, path, status in (("GET", "/api/nope", 404), ("PATCH", "/api/runs", 405),
                                     ("GET", "/api/runs/0000", 404), ("GET", "/ws?run=unknown", 404),
                                     ("GET", "/ws", 400), ("DELETE", "/api/health", 405)):
            async with session.request(method, f"{server.url}{path}") as response:
                await assert_json_error(response, status)
