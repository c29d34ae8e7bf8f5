"""Fixtures for the diffusion node tests: tiny models built once per session, test pictures, and a
helper that runs a shipped template in-process with a shared model cache."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from support import tiny_models
from support.templates import TemplateRun, run_shipped_template


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    """Tiny models gain nothing from threads, and on a shared 2-core machine threads that wait on
    each other make a run many times slower."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """sd (4-channel), inpaint (9-channel), depth (5-channel + DPT) and ddpm (UNet2DModel) folders."""
    return tiny_models.build_all(tmp_path_factory.mktemp("tiny-models"))


@pytest.fixture(scope="session")
def pictures(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A 64x64 RGB picture and a black/white mask of the same size (white = repaint)."""
    root = tmp_path_factory.mktemp("pictures")
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:64, 0:64]
    rgb = np.stack([x * 4, y * 4, (x + y) * 2], axis=-1).astype(np.int16) + rng.integers(-20, 20, (64, 64, 3))
    Image.fromarray(rgb.clip(0, 255).astype(np.uint8)).save(root / "picture.png")
    mask = np.zeros((64, 64), np.uint8)
    mask[16:48, 20:52] = 255
    Image.fromarray(mask).save(root / "mask.png")
    Image.fromarray(np.zeros((40, 40), np.uint8)).save(root / "small_mask.png")
    return {"image": root / "picture.png", "mask": root / "mask.png", "small_mask": root / "small_mask.png"}


@pytest.fixture(scope="session")
def services() -> dict[str, Any]:
    """One model cache for the whole session, as one long-lived process would have."""
    return {}


@pytest.fixture
def run_template(services: dict[str, Any], tmp_path: Path):
    """Run a shipped template in-process; by default insist that it succeeds."""

    def run(name: str, expect: str = "succeeded", on_event=None, **overrides: Any) -> TemplateRun:
        return run_shipped_template(name, overrides, services=services, output_dir=tmp_path / "out",
                                    expect=expect, on_event=on_event)

    return run
