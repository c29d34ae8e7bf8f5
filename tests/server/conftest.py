"""Async tests (`async def test_...`) run under `asyncio.run`; `server` is one real server per module."""

from __future__ import annotations

import asyncio
import inspect

import pytest
from server_support import Server


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem):
    if inspect.iscoroutinefunction(pyfuncitem.obj):
        arguments = {name: pyfuncitem.funcargs[name] for name in pyfuncitem._fixtureinfo.argnames}
        asyncio.run(asyncio.wait_for(pyfuncitem.obj(**arguments), timeout=120))
        return True
    return None


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    instance = Server(tmp_path_factory.mktemp("server") / "data", env={"DIFFGRAPH_MAX_UPLOAD_MB": "1"})
    yield instance
    instance.stop()
