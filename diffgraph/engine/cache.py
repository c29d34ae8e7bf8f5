"""The two-tier, content-addressed result cache.

Memory: an LRU bounded in bytes holding live objects (models stay models).
Disk: one folder per key holding each output as written by its port type (safetensors, PNG,
JSON) plus a manifest with checksums. Folders are written under a temporary name and renamed
into place, so readers never see half an entry and two processes writing the same key corrupt
nothing; a damaged entry is detected by its checksums, dropped and recomputed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
import uuid
from collections import OrderedDict
from pathlib import Path
from typing import Any

from .node import NodeSpec

log = logging.getLogger(__name__)

Outputs = dict[str, Any]
MANIFEST = "manifest.json"


class MemoryCache:
    """LRU of node outputs, bounded by the bytes the port types report."""

    def __init__(self, max_bytes: int = 2 * 1024**3):
        self.max_bytes = max_bytes
        self.bytes = 0
        self._entries: OrderedDict[str, tuple[Outputs, int]] = OrderedDict()

    def get(self, key: str) -> Outputs | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        self._entries.move_to_end(key)
        return entry[0]

    def put(self, key: str, outputs: Outputs, nbytes: int) -> None:
        if nbytes > self.max_bytes:
            return
        old = self._entries.pop(key, None)
        if old is not None:
            self.bytes -= old[1]
        self._entries[key] = (outputs, nbytes)
        self.bytes += nbytes
        while self.bytes > self.max_bytes:
            _, (_, evicted) = self._entries.popitem(last=False)
            self.bytes -= evicted

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        self._entries.clear()
        self.bytes = 0


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class DiskCache:
    """Content-addressed entries under `root`, evicted least-recently-used past `max_bytes`."""

    def __init__(self, root: str | Path, max_bytes: int = 20 * 1024**3):
        self.root = Path(root)
        self.max_bytes = max_bytes
        self._bytes: int | None = None  # measured lazily, then tracked; re-measured before evicting

    def _entry(self, key: str) -> Path:
        return self.root / key[:2] / key

    def get(self, key: str, spec: NodeSpec) -> Outputs | None:
        entry = self._entry(key)
        manifest_path = entry / MANIFEST
        if not manifest_path.exists():
            return None
        try:
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
            if manifest.get("key") != key:
                raise ValueError("manifest names another key")
            for name, digest in manifest["checksums"].items():
                if _sha256(entry / name) != digest:
                    raise ValueError(f"checksum mismatch in {name}")
            outputs: Outputs = {}
            for name, port in spec.outputs.items():
                record = manifest["outputs"][name]
                if record["type"] != port.port_type.name:
                    raise ValueError(f"output {name} was stored as {record['type']}")
                if any(f not in manifest["checksums"] or "/" in f or f.startswith(".") for f in record["files"]):
                    raise ValueError(f"output {name} names a file the entry does not vouch for")
                outputs[name] = port.port_type.load(entry, record["files"])
        except Exception as exc:  # noqa: BLE001 - any damage means: drop it and recompute
            log.warning("cache entry %s is damaged (%s); recomputing", key, exc)
            self._remove(entry)
            return None
        try:
            os.utime(manifest_path)  # marks it recently used for eviction
        except OSError:
            pass
        return outputs

    def put(self, key: str, spec: NodeSpec, outputs: Outputs) -> None:
        if not all(port.port_type.disk_cacheable for port in spec.outputs.values()):
            return
        entry = self._entry(key)
        if (entry / MANIFEST).exists():
            return
        tmp_root = self.root / "tmp"
        try:
            tmp_root.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix=f"{key}.", dir=tmp_root))
        except OSError as exc:  # an unwritable cache folder costs the cache, not the run
            log.warning("cannot write the disk cache under %s: %s", self.root, exc)
            return
        try:
            records: dict[str, Any] = {}
            for index, (name, port) in enumerate(spec.outputs.items()):
                files = port.port_type.save(outputs[name], staging, f"out{index}")
                records[name] = {"type": port.port_type.name, "files": files}
            checksums = {f: _sha256(staging / f) for rec in records.values() for f in rec["files"]}
            manifest = {"key": key, "node_type": spec.type_name, "outputs": records, "checksums": checksums}
            (staging / MANIFEST).write_text(json.dumps(manifest), encoding="utf-8")
            size = sum((staging / f).stat().st_size for f in checksums) + (staging / MANIFEST).stat().st_size
            entry.parent.mkdir(parents=True, exist_ok=True)
            if not self._publish(staging, entry):
                return  # another process stored the same key first: its entry is as good as ours
            self._account(size)
        except Exception as exc:  # noqa: BLE001 - a value that cannot be stored is simply not cached
            log.warning("could not store cache entry for %s: %s", spec.type_name, exc)
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)

    def _publish(self, staging: Path, entry: Path) -> bool:
        """Rename the staged folder into place; a leftover folder with no manifest is replaced."""
        try:
            os.rename(staging, entry)
            return True
        except OSError:
            if (entry / MANIFEST).exists():
                return False
        self._remove(entry)  # entries appear whole (renamed with their manifest): this one is a husk
        try:
            os.rename(staging, entry)
            return True
        except OSError:
            return False

    def _remove(self, entry: Path) -> None:
        trash = self.root / "tmp" / f"trash-{uuid.uuid4().hex}"
        try:
            trash.parent.mkdir(parents=True, exist_ok=True)
            os.rename(entry, trash)
        except OSError:
            return
        shutil.rmtree(trash, ignore_errors=True)

    def _scan(self) -> list[tuple[float, int, Path]]:
        entries: list[tuple[float, int, Path]] = []
        if not self.root.exists():
            return entries
        for shard in os.scandir(self.root):
            if not shard.is_dir() or shard.name == "tmp":
                continue
            for item in os.scandir(shard.path):
                try:
                    size = sum(f.stat().st_size for f in os.scandir(item.path))
                    used = os.stat(os.path.join(item.path, MANIFEST)).st_mtime
                except OSError:
                    continue
                entries.append((used, size, Path(item.path)))
        return entries

    def size(self) -> int:
        return sum(size for _, size, _ in self._scan())

    def _account(self, added: int) -> None:
        if self._bytes is None:
            self._bytes = self.size()
        else:
            self._bytes += added
        if self._bytes > self.max_bytes:
            self.evict(int(self.max_bytes * 0.9))

    def evict(self, target_bytes: int) -> None:
        """Remove least recently used entries until at most `target_bytes` remain."""
        entries = sorted(self._scan())
        total = sum(size for _, size, _ in entries)
        for _, size, path in entries:
            if total <= target_bytes:
                break
            self._remove(path)
            total -= size
        self._bytes = total
        self._clean_stale_tmp()

    def _clean_stale_tmp(self, older_than: float = 3600.0) -> None:
        tmp = self.root / "tmp"
        if not tmp.exists():
            return
        now = time.time()
        for item in os.scandir(tmp):
            try:
                if now - item.stat().st_mtime > older_than:
                    shutil.rmtree(item.path, ignore_errors=True)
            except OSError:
                pass


class Cache:
    """Memory first, then disk; a disk hit is promoted to memory."""

    def __init__(self, memory: MemoryCache | None = None, disk: DiskCache | None = None):
        self.memory = memory if memory is not None else MemoryCache()
        self.disk = disk

    def get(self, key: str, spec: NodeSpec) -> Outputs | None:
        outputs = self.memory.get(key)
        if outputs is not None:
            return outputs
        if self.disk is None:
            return None
        outputs = self.disk.get(key, spec)
        if outputs is not None:
            self.memory.put(key, outputs, _nbytes(spec, outputs))
        return outputs

    def put(self, key: str, spec: NodeSpec, outputs: Outputs) -> None:
        self.memory.put(key, outputs, _nbytes(spec, outputs))
        if self.disk is not None and spec.disk_cache:
            self.disk.put(key, spec, outputs)


def _nbytes(spec: NodeSpec, outputs: Outputs) -> int:
    return sum(port.port_type.nbytes(outputs[name]) for name, port in spec.outputs.items())
