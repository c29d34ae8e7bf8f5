"""The two cache tiers on their own: byte-bounded LRU in memory, content-addressed entries on disk."""

from __future__ import annotations

import json
import os

from support import testnodes

from diffgraph.engine import Cache, DiskCache, MemoryCache

ADD = testnodes.Add.__node_spec__
BOX = testnodes.MakeBox.__node_spec__


def test_memory_cache_is_an_lru_bounded_in_bytes():
    memory = MemoryCache(max_bytes=300)
    for key in "abc":
        memory.put(key, {"v": key}, 100)
    assert memory.get("a") == {"v": "a"}  # a is now the most recently used
    memory.put("d", {"v": "d"}, 100)
    assert memory.get("b") is None and memory.get("a") is not None and memory.bytes == 300
    memory.put("huge", {"v": 0}, 301)  # larger than the whole budget: not kept, nothing evicted for it
    assert memory.get("huge") is None and len(memory) == 3


def test_disk_entries_round_trip_and_live_objects_stay_in_memory(tmp_path):
    disk = DiskCache(tmp_path)
    disk.put("ab" * 20, ADD, {"total": 2.5})
    assert disk.get("ab" * 20, ADD) == {"total": 2.5}
    manifest = json.loads((tmp_path / "ab" / ("ab" * 20) / "manifest.json").read_text())
    assert manifest["node_type"] == "TestAdd" and set(manifest["checksums"]) == {"out0.json"}

    disk.put("cd" * 20, BOX, {"box": testnodes.BoxValue(1.0)})  # TEST_BOX is memory-only
    assert not (tmp_path / "cd").exists()
    assert disk.get("cd" * 20, BOX) is None


def test_a_second_write_of_the_same_key_keeps_the_first_entry_whole(tmp_path):
    disk = DiskCache(tmp_path)
    disk.put("ef" * 20, ADD, {"total": 1.0})
    disk.put("ef" * 20, ADD, {"total": 1.0})
    assert disk.get("ef" * 20, ADD) == {"total": 1.0}
    assert len(list(tmp_path.glob("*/*/manifest.json"))) == 1
    assert list((tmp_path / "tmp").iterdir()) == []


def test_a_damaged_entry_is_dropped_and_reported_as_a_miss(tmp_path):
    disk = DiskCache(tmp_path)
    key = "12" * 20
    disk.put(key, ADD, {"total": 1.0})
    (tmp_path / "12" / key / "out0.json").write_text("2.0")  # valid JSON, wrong content
    assert disk.get(key, ADD) is None
    assert not (tmp_path / "12" / key).exists()
    disk.put(key, ADD, {"total": 1.0})  # and the key can be stored again
    assert disk.get(key, ADD) == {"total": 1.0}


def test_an_entry_stored_for_another_output_type_is_a_miss(tmp_path):
    disk = DiskCache(tmp_path)
    key = "34" * 20
    disk.put(key, testnodes.Concat.__node_spec__, {"text": "hi"})  # a STRING output named `text`
    assert disk.get(key, ADD) is None  # TestAdd expects a FLOAT named `total`


def test_eviction_removes_the_least_recently_used_entries(tmp_path):
    disk = DiskCache(tmp_path)
    keys = [f"{i:02d}" * 20 for i in range(6)]
    for age, key in enumerate(keys):
        disk.put(key, ADD, {"total": float(age)})
        stamp = 1_000_000 + age * 100  # entry i was last used at time i
        os.utime(tmp_path / key[:2] / key / "manifest.json", (stamp, stamp))
    disk.get(keys[0], ADD)  # reading the oldest marks it recently used
    per_entry = disk.size() // 6
    disk.evict(per_entry * 3)
    kept = [key for key in keys if (tmp_path / key[:2] / key).exists()]
    assert kept == [keys[0], keys[4], keys[5]]
    assert disk.size() <= per_entry * 3


def test_puts_past_the_bound_evict_down_below_it(tmp_path):
    disk = DiskCache(tmp_path, max_bytes=2000)
    for i in range(30):
        disk.put(f"{i:02d}" * 20, ADD, {"total": float(i)})
        assert disk.size() <= 2000
    assert 0 < len(list(tmp_path.glob("*/*/manifest.json"))) < 30


def test_a_disk_hit_is_promoted_to_memory(tmp_path):
    key = "56" * 20
    DiskCache(tmp_path).put(key, ADD, {"total": 4.0})
    cache = Cache(MemoryCache(), DiskCache(tmp_path))
    assert cache.get(key, ADD) == {"total": 4.0}
    assert cache.memory.get(key) == {"total": 4.0}


def test_a_cache_folder_that_cannot_be_written_costs_the_cache_not_the_caller(tmp_path):
    (tmp_path / "file").write_text("not a folder")
    disk = DiskCache(tmp_path / "file" / "cache")
    disk.put("78" * 20, ADD, {"total": 1.0})  # no exception
    assert disk.get("78" * 20, ADD) is None


def test_an_entry_naming_files_outside_its_checksums_is_a_miss(tmp_path):
    disk = DiskCache(tmp_path)
    key = "9a" * 20
    disk.put(key, ADD, {"total": 1.0})
    entry = tmp_path / "9a" / key
    (tmp_path / "elsewhere.json").write_text("666.0")
    manifest = json.loads((entry / "manifest.json").read_text())
    manifest["outputs"]["total"]["files"] = ["../../elsewhere.json"]
    (entry / "manifest.json").write_text(json.dumps(manifest))
    assert disk.get(key, ADD) is None and not entry.exists()


def test_an_entry_folder_that_lost_its_manifest_is_replaced_on_the_next_write(tmp_path):
    disk = DiskCache(tmp_path)
    key = "bc" * 20
    disk.put(key, ADD, {"total": 1.0})
    (tmp_path / "bc" / key / "manifest.json").unlink()
    assert disk.get(key, ADD) is None
    disk.put(key, ADD, {"total": 1.0})
    assert disk.get(key, ADD) == {"total": 1.0}
