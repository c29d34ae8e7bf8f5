"""A Flux.1 transformer file in Black Forest Labs' original layout (`flux1-dev.safetensors` as
ComfyUI users have it), with the rest of the model from a `config` folder, draws the picture of
FluxPipeline on the diffusers folder of the same weights. The transformer is the smallest one
diffusers' converter takes (Flux.1's width, one block of each kind: 2.2 GB of float32 per copy,
`tests/support/tiny_flux_bfl.py`), so the model is built once and run with a model cache of its own,
released after the test."""

from __future__ import annotations

import gc
import shutil

import pytest
from support import tiny_flux_bfl
from support.templates import run_plan
from test_parity import assert_same_picture, generator
from test_single_file import STEPS, txt2img

from diffgraph.nodes import families


@pytest.fixture(scope="session")
def flux_bfl(tmp_path_factory: pytest.TempPathFactory):
    """(the diffusers folder, the same transformer as a BFL-layout file); removed after the session
    (pytest keeps the temporary folders of its last three sessions: 4.2 GB each here)."""
    root = tmp_path_factory.mktemp("flux-bfl")
    yield tiny_flux_bfl.build(root)
    shutil.rmtree(root, ignore_errors=True)


def test_a_bfl_layout_flux_file_is_told_apart_as_flux(flux_bfl):
    folder, bfl_file = flux_bfl
    assert families.family_of_checkpoint(bfl_file).name == "flux"
    header = families.checkpoint_header(bfl_file)
    assert "double_blocks.0.img_attn.qkv.weight" in header and "single_blocks.0.linear1.weight" in header
    assert not any(key.startswith(("transformer_blocks.", "single_transformer_blocks.")) for key in header)
    assert families.single_file_parts(families.get("flux"), header) == ["transformer"]


def test_a_bfl_layout_flux_file_with_the_rest_from_config_draws_the_folder_pipelines_picture(flux_bfl, tmp_path):
    import torch
    from diffusers import FluxPipeline

    folder, bfl_file = flux_bfl
    services: dict = {}  # this 2.2 GB model leaves with the test, not with the session's cache
    run = run_plan(txt2img(bfl_file, config=str(folder), cfg=3.5), services=services, output_dir=tmp_path)
    assert run.value("load", "family") == "flux"
    ours, saved = run.value("decode", "image"), run.result.outputs["save"][0]
    # diffusers converted the file to exactly the folder's weights (the picture checks the rest)
    reference = FluxPipeline.from_pretrained(str(folder))
    loaded = services["models"].pipeline(run.value("load", "unet")).transformer
    for name, value in reference.transformer.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], value), name
    del run, loaded, services
    gc.collect()
    expected = reference(prompt="a red circle", num_inference_steps=STEPS, guidance_scale=3.5, height=32, width=32,
                         generator=generator(), output_type="pt").images
    assert_same_picture(ours, expected, saved)
