"""--compile and --vram-budget (issue 15) on the CPU: a compiled run gives the eager run's picture
within 2/255 per pixel (the templates' parity tolerance), a second compiled run in the process
compiles nothing, compiling shows as a stage; a budget on the CPU is a one-line notice and the same
picture; the offloading choice is made from sizes alone."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from support import tiny_families
from support.templates import template_plan

from diffgraph.engine import Cache, Executor, MemoryCache, RunOptions
from diffgraph.nodes import fastpath
from diffgraph.nodes.fastpath import GIB, needs_vae_tiling, plan_offload

#: the largest difference per pixel (of 255) allowed between a compiled and an eager picture
TOLERANCE = 2


@pytest.fixture(scope="module")
def tiny_sdxl(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_families.build_sdxl(tmp_path_factory.mktemp("fastpath-sdxl") / "sdxl")


def run_txt2img(model: Path, services: dict[str, Any], out: Path, options: RunOptions,
                seed: int = 3) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """The txt2img template on `model` (3 steps, 32x32 or the tiny model's own size), on a fresh
    result cache with the shared model cache: its picture and its events."""
    events: list[dict[str, Any]] = []
    plan = template_plan("txt2img", {"model": str(model), "steps": 3, "seed": seed, "width": 32, "height": 32})
    result = Executor(Cache(MemoryCache()), services=services).run(plan, output_dir=out, options=options,
                                                                   on_event=events.append)
    assert result.status == "succeeded", result.error
    (path,) = result.outputs["save"]
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.int16), events


def stages(events: list[dict[str, Any]]) -> list[str]:
    return [event["stage"] for event in events if event["type"] == "node_stage"]


def unique_graphs() -> int:
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


@pytest.mark.parametrize("family", ["sd", "sdxl"])
def test_compile_gives_the_eager_picture_and_a_second_run_compiles_nothing(family, tiny, tiny_sdxl, tmp_path):
    model = tiny["sd"] if family == "sd" else tiny_sdxl
    services: dict[str, Any] = {}  # one process's model cache, shared by the three runs
    eager, eager_events = run_txt2img(model, services, tmp_path / "eager", RunOptions())
    assert stages(eager_events) == []

    compiled, events = run_txt2img(model, services, tmp_path / "compiled", RunOptions(compile=True))
    assert np.abs(compiled - eager).max() <= TOLERANCE
    assert stages(events) == ["compile", "compiled"]  # before the first step, not a silent pause
    compile_event = next(e for e in events if e.get("stage") == "compile")
    assert compile_event["node"] == "sample" and "compiling the unet" in compile_event["message"]

    graphs = unique_graphs()
    again, events = run_txt2img(model, services, tmp_path / "again", RunOptions(compile=True), seed=4)
    assert unique_graphs() == graphs  # same shapes: the compiled twin is reused, nothing recompiles
    assert stages(events) == []
    assert np.abs(again - compiled).max() > 0  # it did sample again (another seed), not a cached picture


def test_an_uncompiled_run_never_gets_the_compiled_module(tiny, tmp_path):
    services: dict[str, Any] = {}
    run_txt2img(tiny["sd"], services, tmp_path / "compiled", RunOptions(compile=True))
    cache = services["models"]
    (unet,) = [value for key, (value, _) in cache._entries.items() if key[0] == "unet"]
    blocks = [m for m in unet.modules() if type(m).__name__ == "BasicTransformerBlock"]
    assert blocks and all(m._compiled_call_impl is None for m in blocks)  # the cached model stays eager
    (twin,) = [made for base, made in cache._derived.values() if base is unet]
    twin_blocks = [m for m in twin.modules() if type(m).__name__ == "BasicTransformerBlock"]
    assert len(twin_blocks) == len(blocks) and all(m._compiled_call_impl is not None for m in twin_blocks)
    assert next(twin.parameters()).data_ptr() == next(unet.parameters()).data_ptr()  # the weights, once


def diffgraph(*args: object, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DIFFGRAPH_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "diffgraph.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=600)


def test_a_budget_on_the_cpu_changes_nothing(tiny, tmp_path):
    services: dict[str, Any] = {}
    eager, _ = run_txt2img(tiny["sd"], services, tmp_path / "eager", RunOptions())
    budget, _ = run_txt2img(tiny["sd"], services, tmp_path / "budget", RunOptions(vram_budget_gb=8))
    assert np.array_equal(budget, eager)
    assert len(services["models"]._entries) == 3  # the same unet, vae and text encoder: nothing placed apart


def test_cli_compile_shows_the_stage_and_a_cpu_budget_the_notice(tiny, tmp_path):
    sets = ["--set", f"model={tiny['sd']}", "--set", "steps=3", "--set", "width=32", "--set", "height=32"]
    pictures, stderr = {}, {}
    for name, flags in (("eager", []), ("fast", ["--compile", "--vram-budget", "8"])):
        done = diffgraph("run", "txt2img", *sets, *flags, "--no-cache", "--output-dir", tmp_path / name, cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        pictures[name] = np.asarray(Image.open(tmp_path / name / "txt2img_00001.png"), dtype=np.int16)
        stderr[name] = done.stderr.splitlines()
    assert np.abs(pictures["fast"] - pictures["eager"]).max() <= TOLERANCE
    notices = [line for line in stderr["fast"] if "--vram-budget" in line]
    assert notices == ["note: --vram-budget 8 has no effect on cpu: it keeps a CUDA GPU's memory under the "
                       "budget; here models stay where they are"]
    compiling = [line for line in stderr["fast"] if "compil" in line]
    assert len(compiling) == 2
    assert compiling[0].split() == ["compile", "sample:", "compiling", "the", "unet", "for", "2x4x16x16", "inputs",
                                    "(once", "per", "shape", "in", "this", "process)"]
    assert compiling[1].startswith("  compiled sample: compiled the unet in ")
    assert not any("compil" in line or "--vram-budget" in line for line in stderr["eager"])


@pytest.mark.parametrize(("command", "value"), [("run", "-1"), ("run", "0"), ("run", "eight"), ("serve", "nan")])
def test_a_bad_vram_budget_is_exit_2_naming_the_flag(command, value, tmp_path):
    args = (command, "txt2img") if command == "run" else (command, "--port", "0")
    done = diffgraph(*args, f"--vram-budget={value}", cwd=tmp_path)
    assert done.returncode == 2
    assert "argument --vram-budget:" in done.stderr and "such as 8 or 5.5" in done.stderr


@pytest.mark.parametrize("value", ["-1", "0", "eight", "nan", "inf", "1e9", True, None, [8]])
def test_the_budget_parser_names_the_field(value):
    from diffgraph.engine import OptionError
    from diffgraph.engine.options import vram_budget_gb

    with pytest.raises(OptionError) as caught:
        vram_budget_gb(value, "options.vram_budget")
    assert caught.value.field == "options.vram_budget"
    assert vram_budget_gb("5.5") == vram_budget_gb(5.5) == 5.5


def test_compile_with_a_sweep_is_refused_naming_the_flag(tmp_path):
    done = diffgraph("run", "txt2img", "--sweep", "seed=0..1", "--compile", cwd=tmp_path)
    assert done.returncode == 2 and "--compile" in done.stderr and "--sweep" in done.stderr


# -- choosing how to offload, from sizes alone ------------------------------------------------------

#: SDXL base's components in fp16 (bytes of its safetensors at 2 bytes an element)
SDXL_FP16 = {"unet": int(4.78 * GIB), "text_encoder": int(0.23 * GIB), "text_encoder_2": int(1.29 * GIB),
             "vae": int(0.16 * GIB)}


def test_everything_stays_on_the_gpu_when_it_all_fits():
    plan = plan_offload(SDXL_FP16, budget=24 * GIB, working=int(1.5 * GIB))
    assert set(plan.strategies.values()) == {"resident"}


def test_components_visit_the_gpu_in_turn_when_only_each_alone_fits():
    plan = plan_offload(SDXL_FP16, budget=7 * GIB, working=int(1.5 * GIB))
    assert plan.strategies == {name: "model" for name in SDXL_FP16}


def test_a_denoiser_that_does_not_fit_alone_streams_its_blocks():
    blocks = {"unet": int(0.6 * GIB)}
    plan = plan_offload(SDXL_FP16, budget=4 * GIB, working=int(1.5 * GIB), blocks=blocks)
    assert plan["unet"] == "group"
    assert plan["text_encoder_2"] == plan["vae"] == "model"


def test_leaf_by_leaf_when_not_even_a_block_fits():
    plan = plan_offload(SDXL_FP16, budget=2 * GIB, working=int(1.5 * GIB), blocks={"unet": int(0.6 * GIB)})
    assert plan["unet"] == "sequential"
    assert plan["text_encoder_2"] == "sequential"  # 1.29 GiB > 0.5 GiB of room, and no blocks known
    assert plan["text_encoder"] == "model"


def test_the_vae_tiles_a_big_picture_only_when_it_would_not_fit():
    vae = int(0.16 * GIB)
    assert not needs_vae_tiling(1024, 1024, 2, 8 * GIB, vae)
    assert needs_vae_tiling(1024, 1024, 2, 3 * GIB, vae)
    assert needs_vae_tiling(2048, 2048, 2, 8 * GIB, vae)


def test_working_room_grows_with_the_picture():
    assert fastpath.working_bytes(512 * 512) == fastpath.MIN_WORKING_BYTES
    assert fastpath.working_bytes(1024 * 1024) == int(1.5 * GIB)


def test_component_sizes_come_from_the_safetensors_headers(tiny):
    import torch

    from diffgraph.nodes.models import ModelCache, ModelRef

    sizes = fastpath.component_sizes(tiny["sd"], 2)
    assert set(sizes) == {"unet", "vae", "text_encoder"}
    unet = ModelCache().load(ModelRef(kind="unet", path=str(tiny["sd"]), subfolder="unet"))
    assert sizes["unet"] == sum(p.numel() for p in unet.parameters()) * torch.tensor([], dtype=torch.float16).element_size()


def test_a_compiled_twin_leaves_with_its_model(tiny):
    from diffgraph.nodes.models import ModelCache, ModelRef

    cache = ModelCache(max_bytes=1)  # room for one model at a time
    unet = cache.load(ModelRef(kind="unet", path=str(tiny["sd"]), subfolder="unet"))
    made = cache.derived(unet, "compiled", lambda: object())
    assert cache.derived(unet, "compiled", lambda: object()) is made  # made once, then kept
    cache.load(ModelRef(kind="vae", path=str(tiny["sd"]), subfolder="vae"))  # evicts the unet
    assert cache._derived == {}


@pytest.mark.parametrize("strategy", ["resident", "model", "group", "sequential"])
def test_each_offloading_strategy_computes_the_same_prediction(strategy, tiny):
    """The hooks each strategy installs (accelerate's, diffusers' group offloading), exercised with the
    CPU as the 'GPU': the UNet's prediction is unchanged."""
    import torch
    from support import tiny_models

    plain, placed = tiny_models.unet(), tiny_models.unet()
    group = fastpath.OffloadGroup()
    fastpath.place_under_budget(placed, strategy, "cpu", group, "unet")
    assert placed._diffgraph_offload == strategy
    sample, text = torch.randn(2, 4, 8, 8), torch.randn(2, 77, 32)
    with torch.inference_mode():
        expected = plain(sample, 10, encoder_hidden_states=text).sample
        got = placed(sample, 10, encoder_hidden_states=text).sample
    assert torch.allclose(got, expected, atol=1e-5)
    assert len(group.hooks) == (1 if strategy == "model" else 0)


def test_the_offload_group_forgets_evicted_models():
    from support import tiny_models

    group = fastpath.OffloadGroup()
    first, second = tiny_models.text_encoder(), tiny_models.text_encoder()
    fastpath.place_under_budget(first, "model", "cpu", group, "text_encoder")
    fastpath.place_under_budget(second, "model", "cpu", group, "text_encoder")
    assert len(group.hooks) == 2
    group.forget({id(first)})
    assert [hook.model for hook in group.hooks] == [second]
