"""`POST /api/runs` with `sweep`: every combination queued as its own run, grouped under one sweep id.

The syntax is the command line's (`["seed=0..15", "prompt=a,b"]`, `zip` to pair) except `@file`
values, which the server refuses: a request never makes it read a file. At most MAX_SWEEP_RUNS
combinations per request; each is validated before any is queued.
"""

from __future__ import annotations

from typing import Any

from diffgraph.engine import WorkflowError
from diffgraph.sweep import plan_sweep

from .security import RequestError

MAX_SWEEP_RUNS = 1000
MAX_SWEEP_ARGUMENTS = 16


def sweep_from(body: dict[str, Any]) -> tuple[list[str], bool] | None:
    """The `sweep` and `zip` fields, checked; None when the request has no sweep."""
    raw = body.get("sweep")
    if raw is None:
        if body.get("zip") not in (None, False):
            raise RequestError(400, "field 'zip' pairs the values of a 'sweep'; give a sweep too", field="zip")
        return None
    if (not isinstance(raw, list) or not raw or len(raw) > MAX_SWEEP_ARGUMENTS
            or not all(isinstance(item, str) and len(item) <= 100_000 for item in raw)):
        raise RequestError(400, f"field 'sweep' must be a list of 1 to {MAX_SWEEP_ARGUMENTS} 'NAME=VALUES' strings "
                                "(VALUES: 0..9 or a,b,c), like [\"seed=0..15\"]", field="sweep")
    zipped = body.get("zip", False)
    if not isinstance(zipped, bool):
        raise RequestError(400, "field 'zip' must be true or false", field="zip")
    return raw, zipped


def sweep_params(registry: Any, compile_one: Any, document: dict[str, Any], params: dict[str, Any],
                 arguments: list[str], zipped: bool) -> list[dict[str, Any]]:
    """The params of each combination (the request's `params` plus the swept values), every one
    validated; raises WorkflowError naming the `sweep` item at fault."""
    sweep = plan_sweep(document, registry, arguments, zipped, params, files=False, limit=MAX_SWEEP_RUNS,
                       field="sweep", compile_one=compile_one)
    return [{**params, **swept} for swept, _ in sweep.runs]


def invalid_sweep(exc: WorkflowError) -> RequestError:
    return RequestError(400, "invalid sweep", errors=[i.to_dict() for i in exc.issues])
