"""Bad input to the diffusion nodes fails the run with an error naming the node and the field."""

from __future__ import annotations

import pytest


def error_of(run_template, name: str, **overrides) -> str:
    run = run_template(name, expect="failed", **overrides)
    return run.result.error


def test_missing_model_path(run_template, tmp_path):
    error = error_of(run_template, "txt2img", model=str(tmp_path / "nowhere"))
    assert "node 'load' (LoadPipeline), field 'model'" in error and "does not exist" in error


def test_folder_that_is_not_a_model(run_template, tmp_path):
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "cat.txt").write_text("meow")
    error = error_of(run_template, "txt2img", model=str(tmp_path / "photos"))
    assert "field 'model'" in error and "not a diffusers" in error


def test_file_that_is_not_a_checkpoint(run_template, tmp_path):
    notes = tmp_path / "notes.safetensors"
    notes.write_text("just some text, whatever the name says")
    error = error_of(run_template, "txt2img", model=str(notes))
    assert "field 'model'" in error and "neither a .safetensors checkpoint" in error


def test_wrong_architecture_folder(run_template, tiny):
    error = error_of(run_template, "txt2img", model=str(tiny["depth"] / "depth_estimator"))
    assert "node 'load' (LoadPipeline), field 'model'" in error and "DPTForDepthEstimation" in error


def test_pixel_space_model_has_no_text_encoder_for_txt2img(run_template, tiny):
    error = error_of(run_template, "txt2img", model=str(tiny["ddpm"]), steps=1)
    assert "(TextEncode), field 'text_encoder'" in error and "has none" in error


def test_inpainting_unet_without_a_mask(run_template, tiny, pictures):
    error = error_of(run_template, "img2img", model=str(tiny["inpaint"]), image=str(pictures["image"]), steps=1)
    assert "node 'sample' (SampleLoop), field 'latent'" in error and "mask" in error


def test_depth_unet_without_a_depth_map(run_template, tiny, pictures):
    error = error_of(run_template, "img2img", model=str(tiny["depth"]), image=str(pictures["image"]), steps=1)
    assert "node 'sample' (SampleLoop), field 'depth'" in error


@pytest.mark.parametrize("field", ["width", "height"])
def test_size_not_a_multiple_of_the_vae_factor(run_template, tiny, field):
    error = error_of(run_template, "txt2img", model=str(tiny["sd"]), steps=1, **{field: 63})
    assert f"node 'empty' (EmptyLatent), field '{field}'" in error and "multiple of 2" in error


def test_image_size_not_a_multiple_of_the_vae_factor(run_template, tiny, tmp_path):
    from PIL import Image

    Image.new("RGB", (33, 32), "white").save(tmp_path / "odd.png")
    error = error_of(run_template, "img2img", model=str(tiny["sd"]), image=str(tmp_path / "odd.png"), steps=1)
    assert "node 'encode' (VAEEncode), field 'image'" in error and "multiple of 2" in error


def test_mask_of_another_size(run_template, tiny, pictures):
    error = error_of(run_template, "inpaint", model=str(tiny["sd"]), image=str(pictures["image"]),
                     mask=str(pictures["small_mask"]), steps=1)
    assert "node 'encode' (VAEEncode), field 'mask'" in error and "must match" in error


def test_corrupt_image(run_template, tiny, tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a picture" * 10)
    error = error_of(run_template, "img2img", model=str(tiny["sd"]), image=str(broken), steps=1)
    assert "node 'picture' (LoadImage), field 'image'" in error


def test_strength_too_low_for_any_step(run_template, tiny, pictures):
    error = error_of(run_template, "img2img", model=str(tiny["sd"]), image=str(pictures["image"]), steps=2,
                     strength=0.2)
    assert "node 'sample' (SampleLoop), field 'strength'" in error and "no step" in error


def test_hub_repo_id_offline_and_not_cached(run_template, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    error = error_of(run_template, "txt2img", model="someone/surely-not-cached-model")
    assert "field 'model'" in error and "not in the cache" in error and "HF_HUB_OFFLINE" in error

