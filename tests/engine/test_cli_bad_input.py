"""Hostile or broken workflow files: `diffgraph validate` and `run` exit 2 with a message, never a traceback."""

from __future__ import annotations

import pytest

BOMB = "\n".join(
    ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    + [f"{chr(97 + i)}: &{chr(97 + i)} [{', '.join(['*' + chr(96 + i)] * 10)}]" for i in range(1, 9)]
) + "\n"

CASES: dict[str, tuple[str, bytes, str]] = {
    "empty": ("empty.yaml", b"", "document is empty"),
    "not a mapping": ("list.yaml", b"- format\n- nodes\n", "not a list"),
    "yaml bomb": ("bomb.yaml", BOMB.encode(), "document is too large"),
    "deeply nested yaml": ("deep.yaml", b"nodes: " + b"[" * 300_000 + b"]" * 300_000, "nested too deeply"),
    "deeply nested json": ("deep.json", b'{"nodes": ' + b"[" * 300_000 + b"]" * 300_000 + b"}", "nested too deeply"),
    "wrong scalar type for nodes": ("scalar.yaml", b"format: diffgraph/v1\nnodes: 5\n", "`nodes` is a mapping"),
    "wrong scalar type for a param": (
        "param.yaml", b"format: diffgraph/v1\nnodes: {n: {type: TestAdd, params: {a: [1]}}}\n",
        "node 'n', field 'a': Input should be a valid number"),
    "int beyond 64 bits": (
        "big.yaml", b"format: diffgraph/v1\nnodes: {n: {type: Int, params: {value: 99999999999999999999999}}}\n",
        "node 'n', field 'value': Input should be less than or equal to 18446744073709551615"),
    "int with thousands of digits": (
        "huge.yaml", b"format: diffgraph/v1\nnodes: {n: {type: Int, params: {value: " + b"7" * 5000 + b"}}}\n",
        "not valid YAML"),
    "json 1e999": (
        "inf.json", b'{"format": "diffgraph/v1", "nodes": {"n": {"type": "Float", "params": {"value": 1e999}}}}',
        "nodes.n.params.value: inf is not a finite number"),
    "non-utf-8 bytes": ("latin1.yaml", "format: diffgraph/v1\nname: café\n".encode("latin-1"), "not valid UTF-8"),
    "duplicate yaml ids": ("dup.yaml", b"format: diffgraph/v1\nnodes:\n  n: {type: Int}\n  n: {type: Float}\n",
                           "duplicate key 'n' (line 4)"),
    "duplicate json ids": ("dup.json", b'{"format": "diffgraph/v1", "nodes": {"n": {"type": "Int"}, "n": {}}}',
                           "duplicate key 'n'"),
    "lone surrogate escape": ("surrogate.json", b'{"format": "diffgraph/v1", "nodes": {"\\udc80": {"type": "Int"}}}',
                              "unpaired surrogate"),
    "unsafe yaml tag": ("tag.yaml", b"format: !!python/object/apply:os.system ['true']\nnodes: {}\n",
                        "not valid YAML"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_validate_exits_2_with_a_message(cli, tmp_path, case):
    name, data, message = CASES[case]
    path = tmp_path / name
    path.write_bytes(data)
    done = cli.run("validate", path)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert message in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("case", ["empty", "yaml bomb", "deeply nested yaml", "non-utf-8 bytes", "duplicate json ids"])
def test_run_exits_2_with_a_message(cli, tmp_path, case):
    name, data, message = CASES[case]
    path = tmp_path / name
    path.write_bytes(data)
    done = cli.run("run", path, "--no-cache")
    assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "outputs").exists()


def test_a_directory_or_a_missing_path_exits_2(cli, tmp_path):
    for command in ("validate", "run"):
        done = cli.run(command, tmp_path)
        assert done.returncode == 2 and "is a directory" in done.stderr and "Traceback" not in done.stderr
        done = cli.run(command, tmp_path / "nowhere.yaml", "--json")
        assert done.returncode == 2 and "Traceback" not in done.stderr
        assert "nowhere.yaml: no such file" in done.stdout


def test_a_small_yaml_file_whose_aliases_expand_to_megabytes_is_refused(cli, tmp_path):
    lines = [f"s: &s {'x' * 1000}", "l0: &l0 [" + ", ".join(["*s"] * 10) + "]"]
    lines += [f"l{n}: &l{n} [" + ", ".join([f"*l{n - 1}"] * 10) + "]" for n in range(1, 5)]
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("\n".join(lines) + "\nformat: diffgraph/v1\nnodes: {}\n")
    for command in ("validate", "run"):
        done = cli.run(command, bomb)
        assert done.returncode == 2, (command, done.stdout, done.stderr)
        assert "too large once its YAML aliases are expanded" in done.stdout + done.stderr
        assert "Traceback" not in done.stderr
