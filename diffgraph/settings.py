"""Settings from the environment, parsed once at the entry points (`diffgraph ...`, `diffgraph serve`).

`Settings.from_environ()` is the only place that reads these variables; everything below receives the
typed object. A bad value is a `SettingsError` naming the variable and what would be valid.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from diffgraph.engine.threads import ThreadPolicy

GIB, MIB = 1024**3, 1024**2


class SettingsError(ValueError):
    """One or more environment variables hold values diffgraph cannot use."""

    def __init__(self, problems: list[tuple[str, str]]):
        self.problems = problems  # (variable, what is wrong and what would be valid)
        super().__init__("; ".join(f"{name}: {message}" for name, message in problems))


@dataclass(frozen=True)
class Settings:
    """What the environment configures. The defaults are what an empty environment gives."""

    #: DIFFGRAPH_CACHE_MAX_GB: the disk cache's size bound, least-recently-used entries evicted past it
    cache_max_gb: float = 20.0
    #: DIFFGRAPH_MODEL_CACHE_GB: live models kept loaded between nodes and runs
    model_cache_gb: float = 16.0
    #: DIFFGRAPH_MAX_UPLOAD_MB: the largest image `POST /api/uploads` accepts
    max_upload_mb: float = 32.0
    #: DIFFGRAPH_TOKEN: the server's token when `--token` is not given
    token: str | None = None
    #: $XDG_CACHE_HOME/diffgraph: the CLI's default disk cache folder
    cache_dir: Path = Path.home() / ".cache" / "diffgraph"
    #: $XDG_DATA_HOME/diffgraph: the server's default data folder (database, uploads, outputs)
    data_dir: Path = Path.home() / ".local" / "share" / "diffgraph"
    #: DIFFGRAPH_THREADS (else an OMP_NUM_THREADS the user set): torch's CPU threads per run
    threads: ThreadPolicy = field(default_factory=ThreadPolicy)

    @property
    def cache_max_bytes(self) -> int:
        return int(self.cache_max_gb * GIB)

    @property
    def model_cache_bytes(self) -> int:
        return int(self.model_cache_gb * GIB)

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * MIB)

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Parse the environment (os.environ by default); every bad value is reported at once."""
        env = os.environ if environ is None else environ
        problems: list[tuple[str, str]] = []

        def number(name: str, default: float, unit: str, example: str, positive: bool = False) -> float:
            text = env.get(name, "").strip()
            if not text:
                return default
            try:
                value = float(text)
            except ValueError:
                value = math.nan
            if not math.isfinite(value) or value < 0 or (positive and value == 0):
                least = "more than 0" if positive else "0 or more"
                problems.append((name, f"{text!r} is not a number of {unit}; use {least}, such as {example}"))
                return default
            return value

        def folder(name: str, fallback: Path) -> Path:
            base = env.get(name, "").strip()
            return (Path(base) if base else fallback) / "diffgraph"

        try:
            threads = ThreadPolicy.from_environment(env)
        except ValueError as exc:
            problems.append(("DIFFGRAPH_THREADS", str(exc)))
            threads = ThreadPolicy()

        settings = cls(
            cache_max_gb=number("DIFFGRAPH_CACHE_MAX_GB", cls.cache_max_gb, "gigabytes", "20 or 0.5"),
            model_cache_gb=number("DIFFGRAPH_MODEL_CACHE_GB", cls.model_cache_gb, "gigabytes", "16 or 2.5"),
            max_upload_mb=number("DIFFGRAPH_MAX_UPLOAD_MB", cls.max_upload_mb, "megabytes", "32 or 1.5",
                                 positive=True),
            token=env.get("DIFFGRAPH_TOKEN") or None,
            cache_dir=folder("XDG_CACHE_HOME", Path.home() / ".cache"),
            data_dir=folder("XDG_DATA_HOME", Path.home() / ".local" / "share"),
            threads=threads,
        )
        if problems:
            raise SettingsError(problems)
        return settings
