"""Async tests (`async def test_...`) run under anyio's pytest plugin (`anyio_mode = "auto"` in
pyproject.toml) on asyncio; `server` is one real server per module, and every module's server is
checked at teardown: no request reached the catch-all 500 handler and nothing logged a traceback."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
from server_support import Server

HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:  # as the suite's old hook did: an async server test that hangs fails in two minutes
        if (isinstance(item, pytest.Function) and inspect.iscoroutinefunction(item.function)
                and item.path.is_relative_to(HERE) and item.get_closest_marker("timeout") is None):
            item.add_marker(pytest.mark.timeout(120))


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    instance = Server(tmp_path_factory.mktemp("server") / "data", env={"DIFFGRAPH_MAX_UPLOAD_MB": "1"})
    yield instance
    instance.stop()
    log = instance.log()
    assert "unhandled error" not in log, f"a request reached the catch-all 500 handler:\n{log[-4000:]}"
    assert "Traceback" not in log, f"the server logged a traceback:\n{log[-4000:]}"
