"""The resolution policy for file and model params (issue 10, item 3.3): the CLI's is permissive,
the server's keeps every path inside its roots and its refusals say nothing about other paths."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from diffgraph.engine import FileAccess, ModelRoot, NodeError


@pytest.fixture
def roots(tmp_path):
    uploads, models, package = tmp_path / "uploads", tmp_path / "models", tmp_path / "package"
    for folder in (uploads, models, package / "models" / "tiny"):
        folder.mkdir(parents=True)
    (uploads / "a.png").write_bytes(b"png")
    (models / "mine").mkdir()
    (tmp_path / "secret.png").write_bytes(b"secret")
    (uploads / "link.png").symlink_to(tmp_path / "secret.png")
    access = FileAccess.contained(uploads, [ModelRoot(package, package / "models"),
                                            ModelRoot(package / "models", package / "models"), ModelRoot(models, models)])
    return tmp_path, access


def refusal(call) -> NodeError:
    with pytest.raises(NodeError) as caught:
        call()
    return caught.value


def test_the_cli_policy_takes_local_paths_as_given():
    access = FileAccess()
    assert access.permissive and access.allow_downloads
    assert access.input_file("/etc/hostname", "image") == Path("/etc/hostname")
    assert access.input_file("~/x.png", "image") == Path.home() / "x.png"


def test_the_server_policy_resolves_file_params_inside_the_input_folder(roots):
    tmp_path, access = roots
    assert access.input_file("a.png", "image") == (tmp_path / "uploads" / "a.png").resolve()


@pytest.mark.parametrize("name", ["/etc/hostname", "../secret.png", "link.png", "a/../../secret.png", "~/x.png",
                                  "..", "", "a.png\x00"])
def test_the_server_policy_refuses_paths_outside_the_input_folder(roots, name):
    tmp_path, access = roots
    error = refusal(lambda: access.input_file(name, "image"))
    assert error.field == "image" and "POST /api/uploads" in str(error)
    assert os.getcwd() not in str(error) and str(tmp_path) not in str(error)


def test_a_refusal_does_not_tell_whether_the_path_exists(roots):
    tmp_path, access = roots
    existing, missing = str(tmp_path / "secret.png"), str(tmp_path / "nothing.png")
    assert (str(refusal(lambda: access.input_file(existing, "image"))).replace(existing, "X")
            == str(refusal(lambda: access.input_file(missing, "image"))).replace(missing, "X"))
    assert (str(refusal(lambda: access.model_path(existing, "model"))).replace(existing, "X")
            == str(refusal(lambda: access.model_path(missing, "model"))).replace(missing, "X"))


def test_the_server_policy_finds_models_under_its_roots_only(roots):
    tmp_path, access = roots
    assert access.model_path("models/tiny", "model") == (tmp_path / "package" / "models" / "tiny").resolve()
    assert access.model_path("tiny", "model") == (tmp_path / "package" / "models" / "tiny").resolve()
    assert access.model_path("mine", "model") == (tmp_path / "models" / "mine").resolve()
    assert access.model_path(str(tmp_path / "models" / "mine"), "model") == (tmp_path / "models" / "mine").resolve()
    assert access.model_path("someone/some-model", "model") is None  # maybe a repo id in the hub cache
    for name in ("/etc", "../uploads", str(tmp_path / "uploads"), "models/../../uploads", "~root"):
        error = refusal(lambda name=name: access.model_path(name, "model"))
        assert error.field == "model" and "not a model this server knows" in str(error)
        assert str(tmp_path) not in str(error).replace(name, "")


def test_run_errors_on_the_server_show_labels_instead_of_its_folders(roots):
    tmp_path, access = roots
    message = f"{tmp_path / 'models' / 'mine'} has no unet; {tmp_path / 'uploads' / 'a.png'}; {os.getcwd()}/x"
    shown = access.redact(message)
    assert shown == "<models>/mine has no unet; <uploads>/a.png; <server>/x"
    assert FileAccess().redact(message) == message  # the CLI's own paths are the user's business
