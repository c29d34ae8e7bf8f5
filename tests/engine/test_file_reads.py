"""Files a user names are read only when they are regular files, and never past a bound: /dev/zero
and FIFOs neither hang nor grow the process (issue 10, item 3.1). Real subprocesses with a timeout,
since the failure is a hang."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from diffgraph.engine.files import FileTooLarge, NotRegularFile, digest_regular, open_regular, read_regular

pytestmark = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="FIFOs are POSIX")


def diffgraph(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """`diffgraph ARGS` in a subprocess; a hang fails the test instead of blocking the suite."""
    return subprocess.run([sys.executable, "-m", "diffgraph.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "OMP_NUM_THREADS": "1"})


def load_image_workflow(tmp_path: Path, image: str) -> Path:
    document = {"format": "diffgraph/v1", "name": "load",
                "nodes": {"load": {"type": "LoadImage", "params": {"image": image}},
                          "save": {"type": "SaveImage", "inputs": {"images": "load.image"}}}}
    path = tmp_path / "load.json"
    path.write_text(json.dumps(document))
    return path


@pytest.mark.parametrize("kind", ["device", "fifo"])
def test_validate_refuses_a_workflow_path_that_is_not_a_regular_file(tmp_path, kind):
    if kind == "device":
        path = "/dev/zero"
    else:
        path = str(tmp_path / "pipe.yaml")
        os.mkfifo(path)  # no writer ever comes: a plain open() would block for good
    started = time.monotonic()
    done = diffgraph("validate", path, timeout=30)
    assert done.returncode == 2, done.stderr
    assert f"{path}: is a {'device' if kind == 'device' else 'FIFO'}" in done.stderr
    assert "not a regular file" in done.stderr and "Traceback" not in done.stderr
    assert time.monotonic() - started < 30


@pytest.mark.parametrize("kind", ["device", "fifo"])
def test_validating_a_loadimage_of_a_device_or_fifo_does_not_read_it(tmp_path, kind):
    image = "/dev/zero" if kind == "device" else str(tmp_path / "pipe.png")
    if kind == "fifo":
        os.mkfifo(image)
    done = diffgraph("validate", str(load_image_workflow(tmp_path, image)), "--json", timeout=30)
    assert done.returncode == 0, done.stderr  # valid: what the file is, the run says
    assert json.loads(done.stdout)["valid"] is True


def test_running_a_loadimage_of_a_fifo_fails_naming_the_node_and_field(tmp_path):
    image = str(tmp_path / "pipe.png")
    os.mkfifo(image)
    done = diffgraph("run", str(load_image_workflow(tmp_path, image)), "--no-cache", "--json",
                     "--output-dir", str(tmp_path / "out"), timeout=120)
    assert done.returncode == 1, done.stderr
    result = json.loads(done.stdout)
    assert (result["status"], result["failed_node"]) == ("failed", "load")
    assert "node 'load' (LoadImage), field 'image'" in result["error"]
    assert "a FIFO (named pipe), not a regular file" in result["error"]


def test_reads_are_bounded_and_refuse_what_is_not_a_regular_file(tmp_path):
    big = tmp_path / "big.bin"
    big.write_bytes(b"x" * 1000)
    assert read_regular(big, 1000) == b"x" * 1000
    with pytest.raises(FileTooLarge):
        read_regular(big, 999)
    with pytest.raises(FileTooLarge):
        digest_regular(big, 999)
    assert digest_regular(big, 1000) == digest_regular(big, 5000)
    pipe = tmp_path / "pipe"
    os.mkfifo(pipe)
    for path in (pipe, Path("/dev/zero"), tmp_path):
        with pytest.raises(NotRegularFile):
            open_regular(path)
