"""Fixtures for the sweep tests: one torch thread, the txt2img template's sweeps in-process."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from diffgraph.engine import Cache, Executor, MemoryCache, default_registry, read_document
from diffgraph.sweep import Sweep, plan_sweep

TXT2IMG = Path(__file__).resolve().parents[2] / "diffgraph" / "workflows" / "txt2img.yaml"


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    """Tiny models gain nothing from threads on a shared 2-core machine."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def txt2img_sweep(arguments: list[str], zipped: bool = False, **overrides) -> Sweep:
    """The txt2img template (bundled tiny-sd, 32x32) swept over `arguments`; 3 steps unless told."""
    overrides = {"steps": 3, **overrides}
    return plan_sweep(read_document(TXT2IMG), default_registry(), arguments, zipped, overrides,
                      base=TXT2IMG.parent)


def fresh_executor(services: dict | None = None) -> Executor:
    return Executor(Cache(MemoryCache()), services={} if services is None else services)


def pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))
