"""Reading files a user names, safely: regular files only, with bounded reads.

A workflow, a request or a model folder can name anything: `/dev/zero` (endless), a FIFO (blocks
the opener until a writer comes), a directory, a huge file. Every read of such a file goes through
here: stat before open (nothing special is even opened), open non-blocking (a FIFO swapped in
after the stat cannot block), fstat the opened descriptor (what was opened is what is read), and
never read more than the caller's limit.
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path
from typing import BinaryIO

_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0)


class NotRegularFile(OSError):
    """The path names a directory, a device, a FIFO or a socket: nothing diffgraph reads."""


class FileTooLarge(OSError):
    """The file is larger than the caller's limit."""


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def check_regular(path: str | Path) -> int:
    """The size of the regular file at `path` (symlinks followed), else NotRegularFile/OSError."""
    mode = os.stat(path)
    if not stat.S_ISREG(mode.st_mode):
        raise NotRegularFile(f"{_kind(mode.st_mode)}, not a regular file")
    return mode.st_size


def open_regular(path: str | Path, max_bytes: int | None = None) -> BinaryIO:
    """Open the regular file at `path` for reading in binary mode, or raise OSError.

    NotRegularFile for anything but a regular file, FileTooLarge past `max_bytes`. The caller
    closes the handle (`with open_regular(...) as handle:`).
    """
    check_regular(path)
    descriptor = os.open(path, _OPEN_FLAGS)
    try:
        opened = os.fstat(descriptor)
        if not stat.S_ISREG(opened.st_mode):  # swapped between the stat and the open
            raise NotRegularFile(f"{_kind(opened.st_mode)}, not a regular file")
        if max_bytes is not None and opened.st_size > max_bytes:
            raise FileTooLarge(f"{opened.st_size} bytes; the limit is {max_bytes}")
        if hasattr(os, "set_blocking"):
            os.set_blocking(descriptor, True)  # regular files never block; plain reads from here on
        return os.fdopen(descriptor, "rb")
    except BaseException:
        os.close(descriptor)
        raise


def read_regular(path: str | Path, max_bytes: int) -> bytes:
    """The whole content of the regular file at `path`, at most `max_bytes` (else FileTooLarge)."""
    with open_regular(path, max_bytes) as handle:
        data = handle.read(max_bytes + 1)  # the file may grow after the fstat
    if len(data) > max_bytes:
        raise FileTooLarge(f"more than {max_bytes} bytes")
    return data


def digest_regular(path: str | Path, max_bytes: int) -> str:
    """A BLAKE2b digest of the regular file at `path`, reading at most `max_bytes`."""
    digest = hashlib.blake2b(digest_size=20)
    remaining = max_bytes + 1
    with open_regular(path, max_bytes) as handle:
        while remaining > 0:
            chunk = handle.read(min(1 << 20, remaining))
            if not chunk:
                break
            digest.update(chunk)
            remaining -= len(chunk)
    if remaining <= 0:
        raise FileTooLarge(f"more than {max_bytes} bytes")
    return digest.hexdigest()


def describe_os_error(exc: OSError) -> str:
    """A short reason for a failed read, without the path (the caller names it, or must not)."""
    if isinstance(exc, (NotRegularFile, FileTooLarge)):
        return str(exc)
    if isinstance(exc, FileNotFoundError):
        return "no such file"
    if isinstance(exc, IsADirectoryError):
        return "a directory, not a regular file"
    return exc.strerror or type(exc).__name__
