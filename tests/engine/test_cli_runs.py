"""`diffgraph run` in real processes sharing a real cache directory: re-runs, corruption, concurrency,
eviction, failures and Ctrl+C."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

from support.nodepack import interrupt

from diffgraph.engine import DiskCache, dump_document

PIPELINE = {
    "format": "diffgraph/v1",
    "params": {"a": {"type": "FLOAT", "default": 1.0}, "b": {"type": "FLOAT", "default": 10.0}},
    "nodes": {
        "up": {"type": "TestAdd", "params": {"a": "$a", "b": 1}},
        "mid": {"type": "TestAdd", "inputs": {"a": "up.total"}, "params": {"b": 100}},
        "down": {"type": "TestAdd", "inputs": {"a": "mid.total"}, "params": {"b": "$b"}},
        "side": {"type": "TestAdd", "inputs": {"a": "up.total"}, "params": {"b": 0.5}},
    },
    "outputs": {"result": "down.total", "side": "side.total"},
}


def write(path: Path, document: dict) -> Path:
    path.write_text(dump_document(document, "json" if path.suffix == ".json" else "yaml"), encoding="utf-8")
    return path


def cache_entries(cache_dir: Path) -> list[Path]:
    return sorted(p.parent for p in cache_dir.glob("*/*/manifest.json"))


def test_re_run_semantics_across_processes(cli, tmp_path):
    workflow = write(tmp_path / "pipeline.yaml", PIPELINE)
    cache = tmp_path / "cache"

    first = cli.run_json("run", workflow, "--cache-dir", cache)
    assert first["status"] == "succeeded" and first["cached"] == []
    assert sorted(first["executed"]) == ["down", "mid", "side", "up"]
    assert first["values"] == {"result": 112.0, "side": 2.5}
    assert set(first["seconds"]) == set(first["executed"])

    # the same run in a second process: everything it needs comes from the disk cache
    second = cli.run_json("run", workflow, "--cache-dir", cache)
    assert second["executed"] == [] and sorted(second["cached"]) == ["down", "side"]
    assert second["values"] == first["values"]

    # a downstream param changed: only `down` runs, `mid` (and so `up`) is served from the cache
    third = cli.run_json("run", workflow, "--cache-dir", cache, "--set", "b=20")
    assert third["executed"] == ["down"] and sorted(third["cached"]) == ["mid", "side"]
    assert third["values"]["result"] == 122.0

    # an upstream param changed: every descendant recomputes
    fourth = cli.run_json("run", workflow, "--cache-dir", cache, "--set", "a=2")
    assert sorted(fourth["executed"]) == ["down", "mid", "side", "up"] and fourth["cached"] == []
    assert fourth["values"] == {"result": 113.0, "side": 3.5}

    assert cli.executions() == {"up": 2, "mid": 2, "down": 3, "side": 2}


def test_no_cache_recomputes_and_writes_nothing(cli, tmp_path):
    workflow = write(tmp_path / "pipeline.json", PIPELINE)
    for _ in range(2):
        summary = cli.run_json("run", workflow, "--no-cache")
        assert len(summary["executed"]) == 4
    assert not (tmp_path / "xdg-cache").exists()


def test_default_cache_dir_is_under_the_user_cache_directory(cli, tmp_path):
    workflow = write(tmp_path / "pipeline.yaml", PIPELINE)
    cli.run_json("run", workflow)
    assert len(cache_entries(tmp_path / "xdg-cache" / "diffgraph")) == 4
    assert cli.run_json("run", workflow)["executed"] == []


def test_corrupted_and_truncated_entries_are_recomputed(cli, tmp_path):
    workflow = write(tmp_path / "pipeline.yaml", PIPELINE)
    cache = tmp_path / "cache"
    cli.run_json("run", workflow, "--cache-dir", cache)
    entries = {json.loads((e / "manifest.json").read_text())["key"]: e for e in cache_entries(cache)}
    assert len(entries) == 4

    damaged = list(entries.values())
    value_file = damaged[0] / "out0.json"  # flip bytes in a value: the checksum no longer matches
    data = bytearray(value_file.read_bytes())
    data[0] ^= 0xFF
    value_file.write_bytes(bytes(data))
    manifest = damaged[1] / "manifest.json"  # truncated manifest
    manifest.write_bytes(manifest.read_bytes()[:17])
    (damaged[2] / "out0.json").unlink()  # a value file gone
    (damaged[3] / "out0.json").write_text("")  # emptied
    (cache / "zz").mkdir()  # and some clutter that is not an entry
    (cache / "zz" / "stray").write_text("x")

    cli.clear_log()
    summary = cli.run_json("run", workflow, "--cache-dir", cache)
    assert summary["status"] == "succeeded"
    assert summary["values"] == {"result": 112.0, "side": 2.5}
    assert sorted(summary["executed"]) == ["down", "mid", "side", "up"]

    # the damaged entries were replaced by good ones
    assert cli.run_json("run", workflow, "--cache-dir", cache)["executed"] == []


def test_two_processes_running_at_once_share_one_cache_safely(cli, tmp_path):
    document = {"format": "diffgraph/v1", "nodes": {
        f"n{i}": {"type": "TestSlow", "params": {"steps": 2, "delay": 0.02, "value": i}} for i in range(15)}}
    document["nodes"]["text"] = {"type": "String", "params": {"value": "same"}}
    document["nodes"]["joined"] = {"type": "TestConcat", "inputs": {"left": "text.text"}, "params": {"right": "!"}}
    workflow = write(tmp_path / "many.yaml", document)
    cache = tmp_path / "cache"
    processes = [cli.popen("run", workflow, "--cache-dir", cache, "--json") for _ in range(2)]
    outcomes = [(p.wait(timeout=120), *p.communicate()) for p in processes]
    for code, out, err in outcomes:
        assert code == 0, err
        assert "Traceback" not in err and json.loads(out)["status"] == "succeeded"

    # every entry is whole: a third process reads all of them back without recomputing anything
    summary = cli.run_json("run", workflow, "--cache-dir", cache)
    assert summary["executed"] == [] and len(summary["cached"]) == 16
    assert len(cache_entries(cache)) == 16
    assert not any((cache / "tmp").iterdir())  # no staging folders left behind


def test_disk_cache_stays_under_its_size_bound(cli, tmp_path):
    document = {"format": "diffgraph/v1", "nodes": {
        f"n{i}": {"type": "TestAdd", "params": {"a": i}} for i in range(40)}}
    workflow = write(tmp_path / "wide.yaml", document)
    cache = tmp_path / "cache"
    limit_gb = 4000 / 1024**3  # room for about a dozen small entries
    summary = cli.run_json("run", workflow, "--cache-dir", cache, env=cli.env(DIFFGRAPH_CACHE_MAX_GB=str(limit_gb)))
    assert len(summary["executed"]) == 40
    assert DiskCache(cache).size() <= 4000
    kept = len(cache_entries(cache))
    assert 0 < kept < 40
    # what was evicted recomputes, what was kept is served
    again = cli.run_json("run", workflow, "--cache-dir", cache, env=cli.env(DIFFGRAPH_CACHE_MAX_GB=str(limit_gb)))
    assert len(again["cached"]) == kept and len(again["executed"]) == 40 - kept


def test_failing_node_exits_1_naming_node_type_and_message_and_keeps_upstream_cached(cli, tmp_path):
    workflow = write(tmp_path / "fails.yaml", {"format": "diffgraph/v1", "nodes": {
        "good": {"type": "TestAdd", "params": {"a": 1}},
        "bad": {"type": "TestFail", "inputs": {"value": "good.total"}, "params": {"message": "the lens cap is on"}},
    }})
    cache = tmp_path / "cache"
    done = cli.run("run", workflow, "--cache-dir", cache)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "run failed: node 'bad' (TestFail), field 'message': the lens cap is on" in done.stderr

    summary = cli.run_json("run", workflow, "--cache-dir", cache, expect=1)
    assert summary["status"] == "failed" and summary["failed_node"] == "bad"
    assert summary["cached"] == ["good"] and summary["executed"] == []
    assert "the lens cap is on" in summary["error"]
    assert cli.executions() == {"good": 1, "bad": 2}

    bug = write(tmp_path / "bug.yaml", {"format": "diffgraph/v1", "nodes": {
        "oops": {"type": "TestFail", "params": {"bug": True, "message": "division"}}}})
    done = cli.run("run", bug, "--no-cache")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "node 'oops' (TestFail): ZeroDivisionError: division" in done.stderr


def test_ctrl_c_cancels_a_run_with_exit_130_and_no_traceback(cli, tmp_path):
    workflow = write(tmp_path / "slow.yaml", {"format": "diffgraph/v1", "nodes": {
        "slow": {"type": "TestSlow", "params": {"steps": 100_000, "delay": 0.01}}}})
    for extra in ([], ["--json"]):
        process = cli.popen("run", workflow, "--no-cache", *extra)
        cli.wait_for_execution("slow")
        code, out, err = interrupt(process)
        assert code == 130, err
        assert "Traceback" not in err and "KeyboardInterrupt" not in err
        if extra:
            assert json.loads(out)["status"] == "cancelled"
        else:
            assert "run cancelled" in err
        cli.clear_log()


def test_files_written_by_output_nodes_are_listed_and_unicode_ids_work(cli, tmp_path):
    workflow = write(tmp_path / "ünï.yaml", {"format": "diffgraph/v1", "nodes": {
        "größe": {"type": "String", "params": {"value": "grüße, 世界"}},
        "画像": {"type": "TestConcat", "inputs": {"left": "größe.text"}, "params": {"right": " ✓"}},
        "save": {"type": "TestWriteText", "inputs": {"text": "画像.text"}, "params": {"name": "gruß"}},
    }})
    out_dir = tmp_path / "out"
    summary = cli.run_json("run", workflow, "--no-cache", "--output-dir", out_dir)
    assert summary["executed"] == ["größe", "画像", "save"]
    [written] = summary["outputs"]["save"]
    assert Path(written) == out_dir / "gruß.txt"
    assert Path(written).read_text(encoding="utf-8") == "grüße, 世界 ✓"
    assert cli.run("validate", workflow).returncode == 0

    done = cli.run("run", workflow, "--no-cache", "--output-dir", out_dir)
    assert done.returncode == 0 and f"save: {written}" in done.stdout
    assert "done   画像 (TestConcat)" in done.stderr

    # a terminal that cannot show these characters gets escapes, not a crash
    ascii_env = cli.env(PYTHONIOENCODING="ascii")
    summary = cli.run_json("run", workflow, "--no-cache", "--output-dir", out_dir, env=ascii_env)
    assert summary["executed"] == ["größe", "画像", "save"]
    done = cli.run("run", workflow, "--no-cache", "--output-dir", out_dir, env=ascii_env)
    assert done.returncode == 0 and "Traceback" not in done.stderr and "done   \\u753b\\u50cf" in done.stderr


def test_bad_device_and_set_syntax_exit_2(cli, tmp_path):
    workflow = write(tmp_path / "pipeline.yaml", PIPELINE)
    done = cli.run("run", workflow, "--device", "tpu")
    assert done.returncode == 2 and "device 'tpu' is not one of cpu, cuda, mps" in done.stderr
    done = cli.run("run", workflow, "--set", "=3")
    assert done.returncode == 2 and "is not NAME=VALUE" in done.stderr
    done = cli.run("run", workflow, "--dtype", "fp8")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    done = cli.run("run", workflow, env=cli.env(DIFFGRAPH_CACHE_MAX_GB="lots"))
    assert done.returncode == 2 and "DIFFGRAPH_CACHE_MAX_GB" in done.stderr and "Traceback" not in done.stderr
    done = cli.run("run", workflow, "--cache-dir", workflow)
    assert done.returncode == 2 and "field '--cache-dir'" in done.stderr and "is not a directory" in done.stderr


def test_nodes_json_describes_ports_params_and_docs_of_every_pack(cli):
    done = cli.run("nodes", "--json")
    assert done.returncode == 0, done.stderr
    catalog = {entry["type"]: entry for entry in json.loads(done.stdout)}
    assert {"Int", "Float", "String", "Seed"} <= set(catalog)  # the built-in pack
    assert {"TestAdd", "TestSlow", "TestConcat"} <= set(catalog)  # the third-party pack, via its entry point
    add = catalog["TestAdd"]
    assert add["doc"].startswith("Add two numbers")
    assert add["category"] == "test" and add["version"] == 1 and add["deterministic"] is True
    assert add["inputs"] == []
    [total] = add["outputs"]
    assert {k: total[k] for k in ("name", "type", "doc")} == {"name": "total", "type": "FLOAT", "doc": "a + b"}
    assert total["colour"].startswith("#")  # the editor draws the port in its type's colour
    [a, b] = add["params"]
    assert {k: v for k, v in a.items() if k not in ("widget", "accepts", "colour")} == {
        "name": "a", "type": "FLOAT", "required": False, "default": 0.0, "min": -1e6, "max": 1e6,
        "step": None, "choices": None, "multiline": False, "doc": "first term"}
    assert a.get("widget") is None and a["accepts"] == ["FLOAT", "INT"]  # a link may feed it: INT feeds FLOAT
    assert b["name"] == "b" and b["min"] is None and b["max"] is None
    assert add["schema"]["properties"]["a"]["maximum"] == 1e6
    concat = catalog["TestConcat"]
    [left] = concat["inputs"]
    assert {k: left[k] for k in ("name", "type", "optional", "doc")} == {
        "name": "left", "type": "STRING", "optional": False, "doc": ""}
    assert "STRING" in left["accepts"]  # the engine's own link rule, for the editor
    assert catalog["TestRandom"]["deterministic"] is False
    assert catalog["Seed"]["params"][0]["max"] == 2**64 - 1
    assert catalog["String"]["params"][0]["multiline"] is True

    text = cli.run("nodes")
    assert text.returncode == 0 and "TestAdd [test] () [a=0.0, b=0.0] -> (total: FLOAT)" in text.stdout


def test_a_broken_node_pack_is_reported_and_the_others_still_load(cli, tmp_path):
    broken = tmp_path / "broken-site"
    (broken / "brokenpack-0.1.dist-info").mkdir(parents=True)
    (broken / "brokenpack-0.1.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: brokenpack\n"
                                                                  "Version: 0.1\n")
    (broken / "brokenpack-0.1.dist-info" / "entry_points.txt").write_text(
        "[diffgraph.nodes]\nbroken = brokenpack:register\n")
    (broken / "brokenpack.py").write_text("raise RuntimeError('this pack is broken')\n")
    env = cli.env(PYTHONPATH=os.pathsep.join([str(cli.pack_dir), str(broken)]))
    done = cli.run("nodes", "--json", env=env)
    assert done.returncode == 0 and "Traceback" not in done.stderr
    assert "warning: node pack 'broken'" in done.stderr and "this pack is broken" in done.stderr
    assert "TestAdd" in {entry["type"] for entry in json.loads(done.stdout)}


def test_output_files_are_written_again_when_deleted_or_sent_elsewhere(cli, tmp_path):
    workflow = write(tmp_path / "save.yaml", {"format": "diffgraph/v1", "nodes": {
        "text": {"type": "String", "params": {"value": "hello"}},
        "save": {"type": "TestWriteText", "inputs": {"text": "text.text"}},
    }})
    cache = tmp_path / "cache"
    first = cli.run_json("run", workflow, "--cache-dir", cache, "--output-dir", tmp_path / "a")
    assert first["executed"] == ["text", "save"]
    same = cli.run_json("run", workflow, "--cache-dir", cache, "--output-dir", tmp_path / "a")
    assert same["cached"] == ["save"] and same["outputs"] == first["outputs"]

    elsewhere = cli.run_json("run", workflow, "--cache-dir", cache, "--output-dir", tmp_path / "b")
    assert elsewhere["executed"] == ["text", "save"]
    assert elsewhere["outputs"]["save"] == [str(tmp_path / "b" / "out.txt")]

    (tmp_path / "b" / "out.txt").unlink()
    again = cli.run_json("run", workflow, "--cache-dir", cache, "--output-dir", tmp_path / "b")
    assert again["executed"] == ["text", "save"]
    assert (tmp_path / "b" / "out.txt").read_text() == "hello"


def test_without_json_a_progress_bar_is_drawn_per_long_node(cli, tmp_path):
    workflow = write(tmp_path / "bar.yaml", {"format": "diffgraph/v1", "nodes": {
        "sampler": {"type": "TestSlow", "params": {"steps": 7, "delay": 0}}}})
    done = cli.run("run", workflow, "--no-cache")
    assert done.returncode == 0, done.stderr
    assert "sampler: 100%" in done.stderr and "7/7" in done.stderr
    assert "done   sampler (TestSlow)" in done.stderr and "1 executed, 0 cached" in done.stderr


def test_a_second_ctrl_c_stops_waiting_for_a_node_that_does_not_poll(cli, tmp_path):
    workflow = write(tmp_path / "stubborn.yaml", {"format": "diffgraph/v1", "nodes": {
        "stubborn": {"type": "TestSlow", "params": {"steps": 2, "delay": 10}}}})  # polls only every 10 s
    process = cli.popen("run", workflow, "--no-cache")
    cli.wait_for_execution("stubborn")
    process.send_signal(signal.SIGINT)
    time.sleep(0.5)
    code, _, err = interrupt(process, timeout=8)
    assert code == 130 and "stopped" in err and "Traceback" not in err
