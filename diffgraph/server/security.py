"""The locked door: Host and Origin checks, the token, JSON errors, contained paths.

- Host: the Host header must name the bound address, localhost, a loopback address or a host
  given with `--allow-host` (DNS rebinding: a hostile page's name resolving to 127.0.0.1 is refused).
- Origin: POST/PUT/DELETE and the WebSocket upgrade are refused (403) when an Origin header is
  present and is not this server's own origin (`http://<Host header>`); `Origin: null` is refused.
  A request with no Origin header (curl, scripts, other non-browser clients) is allowed: browsers
  always send Origin on cross-origin requests and on every WebSocket handshake.
- Token: when the server has one (required beyond loopback), every route but /api/health needs it:
  `Authorization: Bearer <token>`, or `?token=<token>` in the URL, or the `diffgraph_token` cookie,
  which the editor page sets when opened once as `/?token=<token>`.
- Errors: every failure leaves as `{"error": "...", ...}` JSON with a 4xx (or a 500 that says
  nothing about the internals and is logged), never an HTML page or a traceback.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import re
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path, PurePosixPath
from typing import Any

from aiohttp import web

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
TOKEN_COOKIE = "diffgraph_token"
STATE_CHANGING = ("POST", "PUT", "DELETE", "PATCH")
PUBLIC_PATHS = ("/api/health",)


class RequestError(Exception):
    """A 4xx with a message (and optional extra JSON fields) for the client."""

    def __init__(self, status: int, message: str, **extra: Any):
        self.status = status
        self.message = message
        self.extra = extra
        super().__init__(message)


def json_error(status: int, message: str, **extra: Any) -> web.Response:
    return web.json_response({"error": message, **extra}, status=status)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def host_name(host_header: str) -> str:
    """`example.com:8188` -> `example.com`; `[::1]:8188` -> `::1`."""
    host_header = host_header.strip().lower()
    if host_header.startswith("["):
        return host_header[1:].split("]", 1)[0]
    return host_header.rsplit(":", 1)[0] if host_header.count(":") == 1 else host_header


def allowed_hosts(bound: str, extra: Iterable[str] = ()) -> frozenset[str]:
    names = {"localhost", "127.0.0.1", "::1", bound.strip("[]").lower()}
    names.update(h.strip().lower() for h in extra if h.strip())
    return frozenset(names)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except RequestError as exc:
        return json_error(exc.status, exc.message, **exc.extra)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        message = exc.text if exc.text and exc.content_type == "application/json" else exc.reason
        if exc.status == 413:
            message = "request body too large"
        elif exc.status == 405:
            message = f"method {request.method} is not allowed on {request.path}"
        elif exc.status == 404:
            message = f"no such route: {request.path}"
        response = json_error(exc.status, message)
        if exc.status == 405 and "Allow" in exc.headers:
            response.headers["Allow"] = exc.headers["Allow"]
        return response
    except (ConnectionResetError, web.HTTPClientError):
        raise
    except Exception:  # noqa: BLE001 - logged here; the client learns nothing about the internals
        log.exception("unhandled error on %s %s", request.method, request.path)
        return json_error(500, "internal server error (logged on the server)")


def security_middleware(allowed: frozenset[str], token: str | None) -> Callable[..., Any]:
    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        host = host_name(request.headers.get("Host", ""))
        if host not in allowed:
            raise RequestError(403, f"Host {request.headers.get('Host', '')!r} is not this server's address "
                                    "(use --allow-host to accept another name)")
        upgrade = request.headers.get("Upgrade", "").lower() == "websocket"
        if request.method in STATE_CHANGING or upgrade:
            origin = request.headers.get("Origin")
            if origin is not None and origin.rstrip("/").lower() != f"{request.scheme}://{request.host}".lower():
                raise RequestError(403, f"cross-origin request refused (Origin {origin!r})")
        if token is not None and request.path not in PUBLIC_PATHS and not _has_token(request, token):
            raise RequestError(401, "a token is required: send 'Authorization: Bearer <token>' "
                                    "(or ?token=<token>)")
        response = await handler(request)
        if token is not None and request.query.get("token") and request.path == "/" and not response.prepared:
            response.set_cookie(TOKEN_COOKIE, token, httponly=True, samesite="Strict", path="/")
        return response

    return middleware


def _has_token(request: web.Request, token: str) -> bool:
    candidates = []
    authorization = request.headers.get("Authorization", "")
    if authorization.lower().startswith("bearer "):
        candidates.append(authorization[7:].strip())
    if "token" in request.query:
        candidates.append(request.query["token"])
    if TOKEN_COOKIE in request.cookies:
        candidates.append(request.cookies[TOKEN_COOKIE])
    expected = token.encode()
    return any(hmac.compare_digest(c.encode("utf-8", "surrogateescape"), expected) for c in candidates)


@web.middleware
async def headers_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        response = exc
    if not response.prepared:
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "no-referrer")
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("Cache-Control", "no-store")
    if isinstance(response, web.HTTPException):
        raise response
    return response


_SAFE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\- ]{0,127}$")


def check_name(name: str, what: str) -> str:
    """A library or upload name: letters, digits, `_ . - space`, no path separators, no `..`."""
    if not _SAFE_NAME.match(name) or ".." in name or name != name.strip():
        raise RequestError(400, f"invalid {what} name {name!r}: use letters, digits, '_', '-', '.', spaces "
                                "(at most 128, no '/', no '..')")
    return name


def contained(root: Path, name: str) -> Path:
    """Resolve `name` under `root`; refuse absolute paths, `..`, backslashes and symlinks that leave it."""
    if not name or "\x00" in name or "\\" in name:
        raise RequestError(400, f"invalid path {name!r}")
    pure = PurePosixPath(name)
    if pure.is_absolute() or any(part in ("..", "") for part in name.split("/")):
        raise RequestError(400, f"path {name!r} must be relative, without '..'")
    root = root.resolve()
    resolved = (root / pure).resolve()
    if not resolved.is_relative_to(root) or resolved == root:
        raise RequestError(403, f"path {name!r} leaves its folder")
    return resolved
