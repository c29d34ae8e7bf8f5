"""Model loading: pickle refusal judged by content, the shared model cache, and light imports."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from safetensors.torch import save_file

from diffgraph.engine import CancelToken, NodeError, RunContext
from diffgraph.nodes import models
from diffgraph.nodes.loaders import LoadPipeline, LoadUNet, LoadVAE


def run_node(cls, ctx: RunContext | None = None, **values):
    spec = cls.__node_spec__
    params = spec.params_model.model_validate({k: v for k, v in values.items() if k in spec.params}).model_dump()
    inputs = {name: values.get(name) for name in spec.inputs}
    return cls.instantiate({**params, **inputs}).run(ctx or RunContext(node_id="n"))


def node_error(cls, **values) -> NodeError:
    with pytest.raises(NodeError) as caught:
        run_node(cls, **values)
    return caught.value


@pytest.fixture
def pickle_checkpoint(tmp_path):
    path = tmp_path / "model.ckpt"
    torch.save({"state_dict": {"weight": torch.zeros(2)}}, path)
    return path


def test_pickle_checkpoint_is_refused_with_an_explanation(pickle_checkpoint):
    error = node_error(LoadPipeline, model=str(pickle_checkpoint))
    assert error.field == "model"
    assert "pickle" in str(error) and "arbitrary code" in str(error) and "allow_pickle" in str(error)


def test_pickle_renamed_safetensors_is_still_refused(pickle_checkpoint, tmp_path):
    disguised = tmp_path / "innocent.safetensors"
    disguised.write_bytes(pickle_checkpoint.read_bytes())
    error = node_error(LoadUNet, model=str(disguised))
    assert error.field == "model" and "pickle" in str(error)


def test_opting_in_to_pickle_passes_the_format_check(pickle_checkpoint):
    # with the opt-in, the next requirement of a single file is what fails: its configs
    error = node_error(LoadPipeline, model=str(pickle_checkpoint), allow_pickle=True)
    assert error.field == "config"


def test_real_safetensors_file_is_accepted_by_content(tmp_path):
    path = tmp_path / "weights.bin"  # the name lies the other way round
    save_file({"weight": torch.zeros(2)}, str(path))
    assert models.sniff_format(path) == "safetensors"
    error = node_error(LoadPipeline, model=str(path))
    assert error.field == "config"  # not refused as pickle: it goes on to ask for configs


def test_folder_with_only_pickle_weights_is_refused(tiny, tmp_path):
    import shutil

    from diffusers import AutoencoderKL

    folder = tmp_path / "vae"
    AutoencoderKL.from_pretrained(str(tiny["sd"] / "vae")).save_pretrained(str(folder), safe_serialization=False)
    assert not list(folder.glob("*.safetensors"))
    error = node_error(LoadVAE, model=str(folder))
    assert error.field == "model"
    ctx = RunContext(node_id="n", services={})
    assert run_node(LoadVAE, ctx, model=str(folder), allow_pickle=True)["vae"].kind == "vae"
    shutil.rmtree(folder)


def test_component_of_the_wrong_kind_is_named(tiny):
    error = node_error(LoadUNet, model=str(tiny["sd"] / "vae"))
    assert error.field == "model" and "AutoencoderKL" in str(error)


def test_models_are_loaded_once_and_shared_between_nodes_and_runs(tiny, run_template, services):
    first = run_template("txt2img", model=str(tiny["sd"]), steps=1, seed=1)
    cache = services["models"]
    loads = cache.loads
    second = run_template("txt2img", model=str(tiny["sd"]), steps=1, seed=2)
    assert "load" in second.result.executed and "sample" in second.result.executed
    assert cache.loads == loads  # a fresh result cache, but no weights read again
    assert first.value("load", "unet") == second.value("load", "unet")


def test_model_cache_unloads_least_recently_used_under_its_budget(tiny):
    sd = str(tiny["sd"])
    unet = models.ModelRef(kind="unet", path=sd, subfolder="unet")
    vae = models.ModelRef(kind="vae", path=sd, subfolder="vae")
    text = models.ModelRef(kind="text_encoder", path=sd, subfolder="text_encoder")
    probe = models.ModelCache()
    sizes = {}
    for ref in (unet, vae, text):
        probe.load(ref)
        sizes[ref.kind] = probe.bytes - sum(sizes.values())
    cache = models.ModelCache(max_bytes=sizes["unet"] + sizes["vae"] + 1)
    cache.load(unet)
    cache.load(vae)
    cache.load(unet)  # the UNet is now the most recently used
    cache.load(text)  # over budget: the VAE goes
    assert cache.bytes <= cache.max_bytes
    loads = cache.loads
    cache.load(unet)
    cache.load(text)
    assert cache.loads == loads
    cache.load(vae)
    assert cache.loads == loads + 1


def test_a_model_the_cache_cannot_load_itself_is_kept_under_its_key_and_the_same_budget():
    made = []

    def load(size: int):
        made.append(size)
        return torch.nn.Linear(size, size)

    first = torch.nn.Linear(8, 8)
    budget = models._module_bytes(first) + 1
    cache = models.ModelCache(max_bytes=budget)
    a = cache.get_or_load(("controlnet", "a"), lambda: load(8))
    assert cache.get_or_load(("controlnet", "a"), lambda: load(8)) is a and made == [8] and cache.loads == 1
    cache.get_or_load(("controlnet", "b"), lambda: load(8))  # over budget: the least recently used goes
    assert cache.bytes <= budget and len(cache) == 1
    assert cache.get_or_load(("controlnet", "a"), lambda: load(8)) is not a and made == [8, 8, 8]


def test_model_cache_keys_include_dtype(tiny):
    cache = models.ModelCache()
    ref = models.ModelRef(kind="vae", path=str(tiny["sd"]), subfolder="vae")
    full = cache.load(ref, "cpu", "fp32")
    half = cache.load(ref, "cpu", "bf16")
    assert full.dtype == torch.float32 and half.dtype == torch.bfloat16


def test_progress_reports_every_step_with_a_preview(tiny, run_template):
    events = []
    run_template("txt2img", model=str(tiny["sd"]), steps=3, on_event=events.append)
    progress = [e for e in events if e["type"] == "progress"]
    assert [(e["node"], e["step"], e["total"]) for e in progress] == [("sample", i, 3) for i in (1, 2, 3)]
    assert all(e["preview"].size == (32, 32) and e["preview"].mode == "RGB" for e in progress)


def test_cancellation_between_steps(tiny, services, tmp_path):
    from support.templates import template_plan

    from diffgraph.engine import Cache, Executor, MemoryCache

    plan = template_plan("txt2img", {"model": str(tiny["sd"]), "steps": 20})
    cancel = CancelToken()
    steps = []

    def on_event(event):
        if event["type"] == "progress":
            steps.append(event["step"])
            if event["step"] == 2:
                cancel.cancel()

    result = Executor(Cache(MemoryCache()), services=services).run(plan, cancel=cancel, on_event=on_event,
                                                                   output_dir=tmp_path)
    assert result.status == "cancelled"
    assert steps == [1, 2]


def test_scheduler_step_node_matches_diffusers_step(tiny):
    from diffusers import DDIMScheduler

    from diffgraph.nodes.sampling import SchedulerNode, SchedulerStep

    ctx = RunContext(node_id="n", services={})
    base = run_node(LoadPipeline, ctx, model=str(tiny["sd"]))["scheduler"]
    ddim = run_node(SchedulerNode, ctx, scheduler=base, name="ddim")["scheduler"]
    sample, prediction = torch.randn(1, 4, 8, 8), torch.randn(1, 4, 8, 8)
    out = run_node(SchedulerStep, ctx, scheduler=ddim, model_output={"samples": prediction},
                   sample={"samples": sample}, steps=10, index=3)
    reference = DDIMScheduler.from_pretrained(str(tiny["sd"]), subfolder="scheduler")
    reference.set_timesteps(10)
    t = reference.timesteps[3]
    expected = reference.step(prediction, t, sample).prev_sample
    assert out["timestep"] == float(t)
    torch.testing.assert_close(out["previous"]["samples"], expected)


def test_importing_the_catalog_does_not_import_torch():
    code = ("import sys; from diffgraph.engine import NodeRegistry; import diffgraph.nodes as n; "
            "r = NodeRegistry(); n.register(r); "
            "heavy = [m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules]; "
            "assert not heavy, heavy; print(len(r.catalog()))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) >= 20


def test_single_file_checkpoint_in_the_original_layout(tiny, services, tmp_path):
    from support.templates import run_plan
    from support.tiny_models import write_original_checkpoint

    from diffgraph.engine import compile_workflow, default_registry, read_document
    from diffgraph.nodes.models import PACKAGE_DIR

    checkpoint = write_original_checkpoint(tiny["sd"], tmp_path / "tiny-sd.safetensors")
    templates = PACKAGE_DIR / "workflows"
    images = []
    for model, config in ((checkpoint, str(tiny["sd"])), (tiny["sd"], "")):
        document = read_document(templates / "txt2img.yaml")
        document["nodes"]["load"]["params"]["config"] = config
        plan = compile_workflow(document, default_registry(), {"model": str(model), "steps": 2, "seed": 3},
                                base=templates)
        images.append(run_plan(plan, services=services, output_dir=tmp_path / "out").value("decode", "image"))
    torch.testing.assert_close(images[0], images[1])


def test_single_file_checkpoint_needs_a_config(tiny, tmp_path):
    from support.tiny_models import write_original_checkpoint

    checkpoint = write_original_checkpoint(tiny["sd"], tmp_path / "tiny-sd.safetensors")
    error = node_error(LoadPipeline, model=str(checkpoint))
    assert error.field == "config" and "configs" in str(error)
    error = node_error(LoadPipeline, model=str(checkpoint), config=str(tmp_path))
    assert error.field == "config" and "not a diffusers folder" in str(error)


def test_safetensors_file_of_another_architecture_is_refused(tiny, tmp_path):
    path = tmp_path / "classifier.safetensors"
    save_file({"fc.weight": torch.zeros(10, 4), "fc.bias": torch.zeros(10)}, str(path))
    error = node_error(LoadPipeline, model=str(path), config=str(tiny["sd"]))
    assert error.field == "model" and "as a Stable Diffusion checkpoint" in str(error)


def test_model_changed_in_place_gets_new_cache_keys_and_is_reloaded(tiny, services, tmp_path):
    import shutil

    from safetensors.torch import load_file
    from support.templates import template_plan

    from diffgraph.engine import Cache, Executor, MemoryCache

    model = shutil.copytree(tiny["sd"], tmp_path / "sd")
    cache = Cache(MemoryCache())

    def run():
        plan = template_plan("txt2img", {"model": str(model), "steps": 1})
        executor = Executor(cache, services=services)
        assert executor.run(plan, output_dir=tmp_path / "out").status == "succeeded"
        return plan, executor.cached_outputs(plan, "decode")["image"]

    before, old_image = run()
    weights = model / "vae" / "diffusion_pytorch_model.safetensors"  # "re-trained": new decoder weights
    state = load_file(str(weights))
    save_file({k: v * 1.5 if k.startswith("decoder.conv_out") else v for k, v in state.items()}, str(weights))
    after, new_image = run()
    assert before.nodes["load"].key != after.nodes["load"].key
    assert before.nodes["decode"].key != after.nodes["decode"].key
    assert not torch.equal(old_image, new_image)


def test_half_precision_is_chosen_per_run(tiny, services, tmp_path):
    from support.templates import template_plan

    from diffgraph.engine import Cache, Executor, MemoryCache

    plan = template_plan("txt2img", {"model": str(tiny["sd"]), "steps": 2})
    images = {}
    for dtype in ("fp32", "bf16"):
        executor = Executor(Cache(MemoryCache()), services=services)
        result = executor.run(plan, dtype=dtype, output_dir=tmp_path)
        assert result.status == "succeeded", result.error
        images[dtype] = executor.cached_outputs(plan, "decode", dtype=dtype)["image"]
    assert images["bf16"].dtype == torch.float32  # IMAGE stays float32 whatever the run's dtype
    assert 0 < (images["bf16"] - images["fp32"]).abs().max() < 0.25
    cached = {(key[0], key[-1]) for key in services["models"]._entries}
    assert {("unet", "fp32"), ("unet", "bf16")} <= cached
