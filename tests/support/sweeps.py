"""Helpers of the sweep tests: the txt2img template's sweeps in-process, a sweep executor, pixels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from diffgraph.engine import Cache, Executor, MemoryCache, default_registry, read_document
from diffgraph.sweep import Sweep, plan_sweep, sweep_executor

TXT2IMG = Path(__file__).resolve().parents[2] / "diffgraph" / "workflows" / "txt2img.yaml"


def txt2img_sweep(arguments: list[str], zipped: bool = False, **overrides) -> Sweep:
    """The txt2img template (bundled tiny-sd, 32x32) swept over `arguments`; 3 steps unless told."""
    overrides = {"steps": 3, **overrides}
    return plan_sweep(read_document(TXT2IMG), default_registry(), arguments, zipped, overrides,
                      base=TXT2IMG.parent)


def fresh_executor(services: dict | None = None) -> Executor:
    """A sweep's executor on a fresh result cache (models shared through `services`)."""
    return sweep_executor(Cache(MemoryCache()), services)


def pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))
