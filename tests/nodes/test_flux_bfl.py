"""A Flux.1 transformer file in Black Forest Labs' original layout (`flux1-dev.safetensors` as
ComfyUI users have it), with the rest of the model from a `config` folder, draws the picture of
FluxPipeline on the diffusers folder of the same weights. The transformer is the smallest one
diffusers' converter takes (Flux.1's width, one block of each kind: 2.2 GB of float32 per copy,
`tests/support/tiny_flux_bfl.py`), so the model is built once and run with a model cache of its own,
released after the test.

The files ComfyUI users have are written from it in the test that loads them and removed there: the
transformer in bf16 under ComfyUI's `model.diffusion_model.` prefix, in float8_e4m3fn, and a whole fp8
checkpoint with the VAE and both text encoders. Each loads at the run's dtype with every tensor equal
to the folder's rounded through the dtype the file stores it in."""

from __future__ import annotations

import gc
import shutil
from pathlib import Path

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


@pytest.fixture(autouse=True)
def collect_garbage():
    """A test's 2.2 GB pipelines outlive it as reference cycles until the collector runs: collect them
    before the next test loads its own (else the two add up: 7.2 GB peak instead of 5.4 GB)."""
    gc.collect()
    yield
    gc.collect()


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


def _assert_rounded_through(loaded, folder: Path, component: str, file_dtype, run_dtype) -> None:
    """Every tensor of `folder`'s `component` (its safetensors, read a tensor at a time), rounded to
    the dtype the single file stores it in and then to the run's, equals the loaded one (torch.equal)."""
    import torch
    from safetensors import safe_open

    weights = folder / component / ("diffusion_pytorch_model.safetensors" if component in ("transformer", "vae")
                                    else "model.safetensors")
    state, compared = loaded.state_dict(), set()
    with safe_open(str(weights), "pt") as reference:
        for name in reference.keys():  # noqa: SIM118 - a safetensors file, not a dict
            ours_name = name if name in state else name.removeprefix("text_model.")
            ours = state[ours_name]
            assert ours.dtype == run_dtype, name
            expected = reference.get_tensor(name).to(file_dtype).to(run_dtype).reshape(ours.shape)
            assert torch.equal(ours, expected), f"{component}: {name}"
            compared.add(ours_name)
    assert {name for name, _ in loaded.named_parameters()} <= compared, component


def _loaded_by_the_load_node(model: Path, folder: Path, dtype: str, output_dir: Path):
    """The Flux pipeline the txt2img template's `load` node (LoadPipeline) leaves in a model cache of
    its own, running at `dtype` (the rest of the template is not run: a 2-step picture of this
    transformer costs about 5 s more)."""
    from diffgraph.engine import Cache, Executor, MemoryCache

    services: dict = {}
    plan = txt2img(model, config=str(folder))
    executor = Executor(Cache(MemoryCache()), services=services)
    result = executor.run(plan, targets=["load"], dtype=dtype, output_dir=output_dir)
    assert result.status == "succeeded", result.error
    outputs = executor.cached_outputs(plan, "load", dtype=dtype)
    assert outputs["family"] == "flux"
    pipeline = services["models"].pipeline(outputs["unet"], dtype=dtype)
    assert services["models"].loads == 1  # the loader's own model, from the cache
    return pipeline


def _header_dtypes(path: Path, prefix: str) -> set[str]:
    return {entry["dtype"] for name, entry in families.checkpoint_header(path).items() if name.startswith(prefix)}


def _latent_factors(folder: Path) -> tuple[float, float]:
    """The VAE's (scaling_factor, shift_factor) in `folder`'s config."""
    import json

    config = json.loads((folder / "vae" / "config.json").read_text())
    return config["scaling_factor"], config["shift_factor"]


def test_a_bf16_bfl_file_with_comfyuis_prefix_loads_the_folders_weights_rounded_to_bf16(flux_bfl, tmp_path):
    """`flux1-dev.safetensors` as ComfyUI saves it: bf16, `model.diffusion_model.` before BFL's names;
    loaded by the template's loader at its default dtype, float32."""
    import torch

    folder, bfl_file = flux_bfl
    target = tiny_flux_bfl.write_variant(bfl_file, tmp_path / "flux1-dev.safetensors", torch.bfloat16,
                                         tiny_flux_bfl.COMFY_PREFIX)
    try:
        assert families.family_of_checkpoint(target).name == "flux"
        header = families.checkpoint_header(target)
        assert all(name.startswith("model.diffusion_model.") for name in header)
        assert _header_dtypes(target, "") == {"BF16"}
        assert families.single_file_parts(families.get("flux"), header) == ["transformer"]
        pipeline = _loaded_by_the_load_node(target, folder, "fp32", tmp_path)
        _assert_rounded_through(pipeline.transformer, folder, "transformer", torch.bfloat16, torch.float32)
    finally:
        target.unlink()


def test_a_whole_fp8_checkpoint_as_comfyui_saves_it_gives_all_four_components_from_the_file(flux_bfl, tmp_path):
    """ComfyUI's fp8 all-in-one layout (`flux1-dev-fp8.safetensors`): the transformer (float8_e4m3fn,
    BFL's names under `model.diffusion_model.`), the VAE under `vae.`, CLIP-L and T5 under
    `text_encoders.clip_l.` / `text_encoders.t5xxl.`. FluxPipeline.from_single_file converts each, so
    only tokenizers, scheduler and configs come from `config`; the template runs at float32."""
    import torch

    folder, bfl_file = flux_bfl
    target = tiny_flux_bfl.write_whole_checkpoint(folder, bfl_file, tmp_path / "flux1-dev-fp8.safetensors")
    try:
        assert families.family_of_checkpoint(target).name == "flux"
        header = families.checkpoint_header(target)
        assert families.single_file_parts(families.get("flux"), header) == [
            "transformer", "vae", "text_encoder", "text_encoder_2"]
        assert _header_dtypes(target, "model.diffusion_model.") == {"F8_E4M3"}
        services: dict = {}
        run = run_plan(txt2img(target, config=str(folder), cfg=3.5, steps=1), services=services, output_dir=tmp_path)
        assert run.value("load", "family") == "flux"
        image = run.value("decode", "image")
        assert image.shape == (1, 3, 32, 32) and torch.isfinite(image).all()
        pipeline = services["models"].pipeline(run.value("load", "unet"))
        for component, dtype_name in tiny_flux_bfl.WHOLE_CHECKPOINT_DTYPES.items():
            _assert_rounded_through(getattr(pipeline, component), folder, component, getattr(torch, dtype_name),
                                    torch.float32)
        # the VAE's latent scale and shift (the file has none) are the folder's Flux.1 ones, not the LDM default
        assert (pipeline.vae.config.scaling_factor, pipeline.vae.config.shift_factor) == _latent_factors(folder)
    finally:
        target.unlink()


def test_an_fp8_bfl_file_loads_at_bf16_with_the_folders_weights_rounded_through_fp8(flux_bfl, tmp_path):
    """A float8_e4m3fn transformer file in BFL's own names, no prefix (as fp8 Flux.1 files are shared
    for ComfyUI's diffusion-model loader), loaded by the loader node at `--dtype bf16`."""
    import torch

    folder, bfl_file = flux_bfl
    target = tiny_flux_bfl.write_variant(bfl_file, tmp_path / "flux1-dev-fp8-e4m3fn.safetensors",
                                         torch.float8_e4m3fn)
    try:
        assert families.family_of_checkpoint(target).name == "flux"
        assert _header_dtypes(target, "") == {"F8_E4M3"}
        pipeline = _loaded_by_the_load_node(target, folder, "bf16", tmp_path)
        _assert_rounded_through(pipeline.transformer, folder, "transformer", torch.float8_e4m3fn, torch.bfloat16)
    finally:
        target.unlink()


def test_a_scaled_fp8_file_is_refused_on_model_since_diffusers_would_drop_its_scales(tmp_path):
    """ComfyUI's scaled fp8 files keep a scale beside each fp8 weight (`scale_weight`) and a `scaled_fp8`
    marker; diffusers' converter drops both and would load the weights unscaled, a wrong model without
    an error. The loader refuses such a file before anything loads, naming what would load."""
    import torch
    from safetensors.torch import save_file

    target = tmp_path / "flux1-dev-fp8-scaled.safetensors"
    prefix = tiny_flux_bfl.COMFY_PREFIX
    save_file({prefix + "double_blocks.0.img_attn.qkv.weight": torch.ones(6, 4).to(torch.float8_e4m3fn),
               prefix + "double_blocks.0.img_attn.qkv.scale_weight": torch.tensor(0.5),
               prefix + "scaled_fp8": torch.empty(0, dtype=torch.float8_e4m3fn)}, str(target))
    try:
        assert families.family_of_checkpoint(target).name == "flux"
        run = run_plan(txt2img(target), services={}, output_dir=tmp_path, expect="failed")
        error = str(run.result.error)
        assert error.startswith("node 'load' (LoadPipeline), field 'model': flux1-dev-fp8-scaled.safetensors")
        assert "2 tensors such as model.diffusion_model.double_blocks.0.img_attn.qkv.scale_weight" in error
        assert "float32, bfloat16, float16 or plain float8_e4m3fn" in error
    finally:
        target.unlink()
