"""requirements.lock, what scripts/setup installs: it pins every dependency of pyproject.toml (the dev
and ray extras and the build backend included) at a version pyproject.toml allows, with the CPU build
of torch and no CUDA packages. A stale lock (pyproject.toml changed, scripts/lock not run) fails here."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
tomllib = pytest.importorskip("tomllib")  # Python 3.11+, as the lock is


def locked() -> dict[str, Version]:
    pins = {}
    for line in (ROOT / "requirements.lock").read_text(encoding="utf-8").splitlines():
        match = re.match(r"^([A-Za-z0-9_.-]+)==(\S+)$", line.strip())
        if match:
            pins[canonicalize_name(match.group(1))] = Version(match.group(2))
        else:
            assert not line.strip() or line.lstrip().startswith("#"), f"not an exact pin: {line!r}"
    return pins


def test_every_requirement_is_pinned_at_an_allowed_version():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    wanted = [*project["project"]["dependencies"], *project["build-system"]["requires"]]
    for extra in ("dev", "ray"):
        wanted += project["project"]["optional-dependencies"][extra]
    pins = locked()
    for text in wanted:
        requirement = Requirement(text)
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement.name} is in pyproject.toml but not in requirements.lock: run scripts/lock"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"requirements.lock pins {name}=={pins[name]}, outside pyproject.toml's {requirement}: run scripts/lock")


def test_torch_is_the_cpu_build_and_nothing_cuda_comes_with_it():
    pins = locked()
    assert str(pins["torch"]).endswith("+cpu")
    cuda = [name for name in pins if name.startswith("nvidia-") or name in ("triton", "cuda-python")]
    assert cuda == []

