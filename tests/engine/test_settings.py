"""Settings: the environment is parsed once, into one typed object, with every bad value named."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import diffgraph
from diffgraph.settings import GIB, MIB, Settings, SettingsError


def test_an_empty_environment_gives_the_documented_defaults():
    settings = Settings.from_environ({})
    assert (settings.cache_max_gb, settings.model_cache_gb, settings.max_upload_mb) == (20, 16, 32)
    assert settings.token is None
    assert settings.cache_dir == Path.home() / ".cache" / "diffgraph"


def test_values_are_typed_and_fractions_work():
    settings = Settings.from_environ({
        "DIFFGRAPH_CACHE_MAX_GB": "0.5", "DIFFGRAPH_MODEL_CACHE_GB": " 2 ", "DIFFGRAPH_MAX_UPLOAD_MB": "1.5",
        "DIFFGRAPH_TOKEN": "s3cret", "XDG_CACHE_HOME": "/c", "XDG_DATA_HOME": "/d",
    })
    assert settings.cache_max_bytes == GIB // 2 and settings.model_cache_bytes == 2 * GIB
    assert settings.max_upload_bytes == int(1.5 * MIB)
    assert settings.token == "s3cret"
    assert settings.cache_dir == Path("/c/diffgraph") and settings.data_dir == Path("/d/diffgraph")


def test_every_bad_value_is_reported_at_once_with_what_would_be_valid():
    with pytest.raises(SettingsError) as caught:
        Settings.from_environ({"DIFFGRAPH_CACHE_MAX_GB": "-1", "DIFFGRAPH_MODEL_CACHE_GB": "nan",
                               "DIFFGRAPH_MAX_UPLOAD_MB": "inf"})
    assert [name for name, _ in caught.value.problems] == [
        "DIFFGRAPH_CACHE_MAX_GB", "DIFFGRAPH_MODEL_CACHE_GB", "DIFFGRAPH_MAX_UPLOAD_MB"]
    assert caught.value.problems[0][1] == "'-1' is not a number of gigabytes; use 0 or more, such as 20 or 0.5"


def test_nothing_below_the_entry_points_reads_the_environment():
    """Only settings.py reads DIFFGRAPH_* and XDG_* variables; the CLI and the server get the object."""
    package = Path(diffgraph.__file__).parent
    readers = []
    for source in package.rglob("*.py"):
        if source.name == "settings.py":
            continue
        for number, line in enumerate(source.read_text(encoding="utf-8").splitlines(), 1):
            if re.search(r"(environ|getenv)\b.*(DIFFGRAPH_|XDG_)", line):
                readers.append(f"{source.relative_to(package)}:{number}: {line.strip()}")
    assert readers == []
