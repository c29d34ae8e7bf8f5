"""LoadLoRA: the txt2img_lora template computes the picture of the family's diffusers pipeline after
`load_lora_weights` + `set_adapters` (CPU, float32, CPU generator, within 2/255), stacked LoRAs that of
`set_adapters` with two adapters; the shared model's pictures never change (runs with and without
LoRAs in one process give each the picture of a fresh model: LoRA layers stay in it between uses, off,
and are not loaded again while the same files are used); cache keys follow the LoRA file's content and
the strengths; pickle files, LoRAs of another family and strengths out of range are refused naming
node and field."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import torch
from support import tiny_families, tiny_loras
from support.templates import TEMPLATES, run_plan, template_plan
from test_parity import SEED, assert_same_picture, generator, use_scheduler

from diffgraph.engine import WorkflowError, compile_workflow, default_registry, read_document

STEPS = 3
SCALE = 0.7
PIPELINES = {"sd": "StableDiffusionPipeline", "sdxl": "StableDiffusionXLPipeline", "sd3": "StableDiffusion3Pipeline",
             "flux": "FluxPipeline", "zimage": "ZImagePipeline", "qwenimage": "QwenImagePipeline",
             "flux2": "Flux2KleinPipeline"}
#: the family's template picture size
SIZE = {"sd": 64, "sdxl": 32, "sd3": 32, "flux": 32, "zimage": 32, "qwenimage": 32, "flux2": 32}
#: what the template's `cfg` is called by each classic pipeline (Qwen-Image's CFG needs a negative prompt)
GUIDANCE = {"qwenimage": {"negative_prompt": ""}}


@pytest.fixture(scope="session")
def lora_models(tiny, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The tiny sd model, and tiny sdxl/, sd3/ and flux/ folders (diffusers' dummy configs)."""
    root = tmp_path_factory.mktemp("lora-families")
    built = {name: getattr(tiny_families, f"build_{name}")(root / name)
             for name in ("sdxl", "sd3", "flux", "zimage", "qwenimage", "flux2")}
    return {"sd": tiny["sd"], **built}


@pytest.fixture(scope="session")
def loras(lora_models, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two random LoRAs per family as diffusers saves them (`<family>_a`, `<family>_b`), and
    kohya-named ones for SD 1.x and SDXL (`sd_kohya`, `sdxl_kohya`: original block names)."""
    root = tmp_path_factory.mktemp("loras")
    made = {}
    for family, model in lora_models.items():
        for name, seed in (("a", 1), ("b", 2)):
            made[f"{family}_{name}"] = tiny_loras.diffusers_lora(model, family, root / f"{family}_{name}.safetensors",
                                                                 seed=seed)
    made["sd_kohya"] = tiny_loras.kohya_lora(lora_models["sd"], root / "sd_kohya.safetensors", seed=3)
    made["sdxl_kohya"] = tiny_loras.kohya_sdxl_lora(lora_models["sdxl"], root / "sdxl_kohya.safetensors", seed=4)
    return made


@pytest.fixture
def transformers_loads_text_encoder_loras(monkeypatch):
    """The reference pipeline loads text-encoder LoRAs through transformers' PEFT integration, which
    asks for a peft release newer than PyPI has; the version gate alone is lifted for the reference."""
    import transformers.integrations.peft as transformers_peft

    monkeypatch.setattr(transformers_peft, "MIN_PEFT_VERSION", "0.17.0")


def overrides(family: str, model: Path, **more: Any) -> dict[str, Any]:
    cfg = 3.5 if family == "flux" else 5.0
    return {"model": str(model), "prompt": "a red circle", "seed": SEED, "steps": STEPS, "cfg": cfg,
            "width": SIZE[family], "height": SIZE[family], **more}


def reference(family: str, model: Path, adapters: list[tuple[Path, Any]]):
    """The family's classic pipeline with each LoRA loaded by `load_lora_weights`, active at its weight."""
    import diffusers

    cls = getattr(diffusers, PIPELINES[family])
    extra = {"safety_checker": None, "requires_safety_checker": False} if family == "sd" else {}
    pipe = cls.from_pretrained(str(model), **extra).to("cpu")
    if family == "sd":
        use_scheduler(pipe, "euler")  # the template's default; the tiny SD model's own is PNDM
    if adapters:
        for index, (path, _) in enumerate(adapters):
            pipe.load_lora_weights(str(path.parent), weight_name=path.name, adapter_name=f"l{index}")
        pipe.set_adapters([f"l{index}" for index in range(len(adapters))], [weight for _, weight in adapters])
    settings = overrides(family, model)
    guidance = {"true_cfg_scale": settings["cfg"]} if family == "qwenimage" else {"guidance_scale": settings["cfg"]}
    return pipe(prompt=settings["prompt"], num_inference_steps=STEPS, **guidance, **GUIDANCE.get(family, {}),
                height=SIZE[family], width=SIZE[family], generator=generator(), output_type="pt").images


def stacked_plan(settings: dict[str, Any], second: Path, second_scale: float):
    """txt2img_lora with a second LoadLoRA after the first (its outputs feed everything the first fed)."""
    document = copy.deepcopy(read_document(TEMPLATES / "txt2img_lora.yaml"))
    nodes = document["nodes"]
    nodes["lora2"] = {"type": "LoadLoRA", "inputs": {"unet": "lora.unet", "text_encoder": "lora.text_encoder"},
                      "params": {"lora": str(second), "strength_model": second_scale, "strength_text": second_scale}}
    for node_id in ("positive", "negative"):
        nodes[node_id]["inputs"]["text_encoder"] = "lora2.text_encoder"
    nodes["sample"]["inputs"]["unet"] = "lora2.unet"
    return compile_workflow(document, default_registry(), settings, base=TEMPLATES)


def run(name_or_plan, settings: dict[str, Any], services: dict[str, Any], out: Path):
    plan = template_plan(name_or_plan, settings) if isinstance(name_or_plan, str) else name_or_plan
    return run_plan(plan, services=services, output_dir=out)


def pictures_in_one_cache(sequence: list, shared: dict[str, Any], out: Path, loads: list[int] | None = None) -> list:
    """Run `sequence` ((template or plan, settings) pairs) in the one model cache `shared`, checking each
    picture against a fresh cache's (a fresh process's); the pictures, and the cache's `loads` after each run."""
    pictures = []
    for index, (workflow, settings) in enumerate(sequence):
        ours = run(workflow, settings, shared, out / f"shared{index}").value("decode", "image")
        if loads is not None:
            loads.append(shared["models"].loads)
        fresh = run(workflow, settings, {}, out / f"fresh{index}").value("decode", "image")
        assert torch.equal(ours, fresh), f"run {index} ({settings.get('lora')}) differs from a fresh cache's"
        pictures.append(ours)
    return pictures


@pytest.mark.parametrize("family", ["sd", "sdxl", "sd3", "flux", "zimage", "qwenimage", "flux2"])
def test_template_matches_the_pipeline_after_load_lora_weights(lora_models, loras, services, tmp_path, family,
                                                               transformers_loads_text_encoder_loras):
    lora = loras[f"{family}_a"]
    result = run("txt2img_lora", overrides(family, lora_models[family], lora=str(lora), lora_scale=SCALE),
                 services, tmp_path)
    expected = reference(family, lora_models[family], [(lora, SCALE)])
    without = reference(family, lora_models[family], [])
    assert (expected - without).abs().max() > 4 / 255  # the LoRA changes the picture: the comparison means something
    assert_same_picture(result.value("decode", "image"), expected, result.result.outputs["save"][0])


def test_separate_strengths_match_set_adapters_with_per_component_weights(lora_models, loras, services, tmp_path,
                                                                          transformers_loads_text_encoder_loras):
    document = copy.deepcopy(read_document(TEMPLATES / "txt2img_lora.yaml"))
    document["nodes"]["lora"]["params"].update(strength_model=0.0, strength_text=1.0)
    settings = overrides("sd", lora_models["sd"], lora=str(loras["sd_a"]))
    result = run(compile_workflow(document, default_registry(), settings, base=TEMPLATES), {}, services, tmp_path)
    expected = reference("sd", lora_models["sd"], [(loras["sd_a"], {"unet": 0.0, "text_encoder": 1.0})])
    assert (expected - reference("sd", lora_models["sd"], [])).abs().max() > 4 / 255  # the text encoder's part counts
    assert_same_picture(result.value("decode", "image"), expected, result.result.outputs["save"][0])


@pytest.mark.parametrize("family", ["sd", "sdxl"])
def test_kohya_lora_matches_the_pipeline(lora_models, loras, services, tmp_path, family,
                                         transformers_loads_text_encoder_loras):
    lora = loras[f"{family}_kohya"]
    result = run("txt2img_lora", overrides(family, lora_models[family], lora=str(lora), lora_scale=SCALE), services,
                 tmp_path)
    expected = reference(family, lora_models[family], [(lora, SCALE)])
    assert (expected - reference(family, lora_models[family], [])).abs().max() > 4 / 255
    assert_same_picture(result.value("decode", "image"), expected, result.result.outputs["save"][0])


@pytest.mark.parametrize("family", ["sd", "sdxl"])
def test_two_stacked_loras_match_set_adapters_with_two_adapters(lora_models, loras, services, tmp_path, family,
                                                                transformers_loads_text_encoder_loras):
    first, second = loras[f"{family}_a"], loras[f"{family}_b"]
    plan = stacked_plan(overrides(family, lora_models[family], lora=str(first), lora_scale=SCALE), second, 0.5)
    result = run(plan, {}, services, tmp_path)
    expected = reference(family, lora_models[family], [(first, SCALE), (second, 0.5)])
    assert (expected - reference(family, lora_models[family], [(first, SCALE)])).abs().max() > 4 / 255
    assert_same_picture(result.value("decode", "image"), expected, result.result.outputs["save"][0])


@pytest.mark.parametrize("family", ["sd", "sdxl"])
def test_the_shared_model_is_never_changed_by_a_lora(lora_models, loras, tmp_path, family):
    """In one process (one model cache): no LoRA, A at 0.7, A + B, no LoRA again: each run's picture is
    the one a fresh model cache (a fresh process) gives for the same workflow."""
    model, first, second = lora_models[family], loras[f"{family}_a"], loras[f"{family}_b"]
    plain = overrides(family, model)
    with_a = overrides(family, model, lora=str(first), lora_scale=SCALE)
    sequence = [("txt2img", plain), ("txt2img_lora", with_a), (stacked_plan(with_a, second, 0.5), {}),
                ("txt2img", plain)]
    shared: dict[str, Any] = {}
    loads: list[int] = []
    pictures = pictures_in_one_cache(sequence, shared, tmp_path, loads)
    assert not torch.equal(pictures[0], pictures[1]) and not torch.equal(pictures[1], pictures[2])
    assert torch.equal(pictures[0], pictures[3])
    assert loads[0] == loads[-1]  # the LoRA runs used the loaded model, never a reloaded copy
    assert lora_layers_in_use(shared) == []
    assert lora_layers(shared)  # A and B stay loaded, switched off, for the next run that uses them


def test_cache_keys_follow_the_lora_file_content_and_the_strengths(lora_models, loras, services, tmp_path):
    import shutil

    from diffgraph.engine import Cache, Executor, MemoryCache

    lora = tmp_path / "mine.safetensors"
    shutil.copyfile(loras["sd_a"], lora)
    settings = overrides("sd", lora_models["sd"], lora=str(lora), lora_scale=SCALE)
    first = template_plan("txt2img_lora", settings)
    other_strength = template_plan("txt2img_lora", {**settings, "lora_scale": 0.8})
    assert first.nodes["sample"].key != other_strength.nodes["sample"].key
    assert first.nodes["positive"].key != other_strength.nodes["positive"].key
    assert first.nodes["load"].key == other_strength.nodes["load"].key  # the base model is the same

    executor = Executor(Cache(MemoryCache()), services=services)
    before = executor.run(first, output_dir=tmp_path / "one")
    assert before.status == "succeeded", before.error
    picture = executor.cached_outputs(first, "decode")["image"]
    shutil.copyfile(loras["sd_b"], lora)  # the same path, new content
    replanned = template_plan("txt2img_lora", settings)
    assert replanned.nodes["sample"].key != first.nodes["sample"].key
    after = executor.run(replanned, output_dir=tmp_path / "two")
    assert after.status == "succeeded", after.error
    assert {"lora", "sample", "positive"} <= set(after.executed) and "load" in after.cached
    assert not torch.equal(executor.cached_outputs(replanned, "decode")["image"], picture)


def test_a_pickle_lora_is_refused_at_validation_naming_node_and_field(lora_models, tmp_path):
    pickled = tmp_path / "lora.safetensors"  # the name says safetensors; the content is a pickle
    torch.save({"unet.x.lora_A.weight": torch.zeros(2, 2)}, pickled)
    with pytest.raises(WorkflowError) as raised:
        template_plan("txt2img_lora", overrides("sd", lora_models["sd"], lora=str(pickled)))
    (issue,) = raised.value.issues
    assert (issue.node, issue.field) == ("lora", "lora")
    assert "pickle" in issue.message and "safetensors" in issue.message


@pytest.mark.parametrize(("lora", "model", "says"), [
    ("sdxl_a", "sd", "two text encoders"), ("sd_a", "flux", "UNet"), ("flux_a", "sdxl", "transformer")])
def test_a_lora_of_another_family_is_refused_at_validation(lora_models, loras, lora, model, says):
    with pytest.raises(WorkflowError) as raised:
        template_plan("txt2img_lora", overrides(model, lora_models[model], lora=str(loras[lora])))
    (issue,) = raised.value.issues
    assert (issue.node, issue.field) == ("lora", "lora")
    assert says in issue.message and "pick a LoRA trained for" in issue.message


def test_a_lora_of_another_base_size_fails_its_node_naming_the_field(lora_models, loras, services, tmp_path):
    """An SD 1.x LoRA on SDXL: both UNets, so only trying it tells (in LoadLoRA, before any sampling)."""
    plan = template_plan("txt2img_lora", overrides("sdxl", lora_models["sdxl"], lora=str(loras["sd_a"])))
    result = run_plan(plan, services=services, output_dir=tmp_path, expect="failed").result
    assert result.failed_node == "lora"
    assert "does not fit this model's unet" in result.error and "pick a LoRA trained for this Stable Diffusion XL" in result.error
    assert "sample" not in result.executed


@pytest.mark.parametrize(("where", "value"), [("lora_scale", 10.5), ("lora_scale", -11.0)])
def test_strengths_out_of_range_are_validation_errors(lora_models, loras, where, value):
    with pytest.raises(WorkflowError) as raised:
        template_plan("txt2img_lora", overrides("sd", lora_models["sd"], lora=str(loras["sd_a"]), **{where: value}))
    assert any(issue.field == f"params.{where}" and "10" in issue.message for issue in raised.value.issues)


def test_a_node_strength_out_of_range_names_node_and_field(lora_models, loras):
    document = copy.deepcopy(read_document(TEMPLATES / "txt2img_lora.yaml"))
    document["nodes"]["lora"]["params"]["strength_text"] = 12.0
    with pytest.raises(WorkflowError) as raised:
        compile_workflow(document, default_registry(), overrides("sd", lora_models["sd"], lora=str(loras["sd_a"])),
                         base=TEMPLATES)
    (issue,) = raised.value.issues
    assert (issue.node, issue.field) == ("lora", "strength_text") and "10" in issue.message


def test_an_empty_lora_leaves_the_template_as_txt2img(lora_models, services, tmp_path):
    settings = overrides("sd", lora_models["sd"])
    plain = run("txt2img", settings, services, tmp_path / "plain").value("decode", "image")
    empty = run("txt2img_lora", {**settings, "lora": ""}, services, tmp_path / "lora").value("decode", "image")
    assert torch.equal(plain, empty)


def test_the_template_declares_txt2img_params_plus_lora_and_lora_scale():
    lora_params = set(read_document(TEMPLATES / "txt2img_lora.yaml")["params"])
    assert lora_params == set(read_document(TEMPLATES / "txt2img.yaml")["params"]) | {"lora", "lora_scale"}
    compile_workflow(read_document(TEMPLATES / "txt2img_lora.yaml"), default_registry(), base=TEMPLATES)  # as shipped


def test_validating_with_a_lora_imports_no_torch(lora_models, loras, tmp_path):
    from test_lazy_imports import probe

    from diffgraph.engine import dump_document

    for name, lora in (("fits", loras["sd_a"]), ("refused", loras["sdxl_a"])):
        document = copy.deepcopy(read_document(TEMPLATES / "txt2img_lora.yaml"))
        document["params"]["model"]["default"], document["params"]["lora"]["default"] = str(lora_models["sd"]), str(lora)
        (tmp_path / f"{name}.yaml").write_text(dump_document(document))
    fits = probe(tmp_path, "validate", tmp_path / "fits.yaml")
    assert fits["code"] == 0 and fits["imported"] == []
    refused = probe(tmp_path, "validate", tmp_path / "refused.yaml", "--json")
    assert refused["code"] == 2 and refused["imported"] == [] and "two text encoders" in refused["stdout"]


def test_on_the_server_a_lora_is_a_file_under_the_model_roots(lora_models, loras, tmp_path, services):
    """A LoRA outside the model roots is refused at validation without saying whether it exists; one
    inside (named relative to a root) validates and runs."""
    import shutil

    from diffgraph.engine import FileAccess, ModelRoot

    roots = tmp_path / "models"
    (roots / "loras").mkdir(parents=True)
    shutil.copyfile(loras["sd_a"], roots / "loras" / "mine.safetensors")
    shutil.copytree(lora_models["sd"], roots / "tiny-sd")
    access = FileAccess.contained(tmp_path / "uploads", [ModelRoot(roots, roots)])
    document = read_document(TEMPLATES / "txt2img_lora.yaml")
    for outside in (str(loras["sd_a"]), "../loras0/sd_a.safetensors", "/etc/hostname"):
        with pytest.raises(WorkflowError) as raised:
            compile_workflow(document, default_registry(), overrides("sd", "tiny-sd", lora=outside), base=TEMPLATES,
                             access=access)
        (issue,) = raised.value.issues
        assert (issue.node, issue.field) == ("lora", "lora") and "not a model this server knows" in issue.message
        assert "sd_a" not in issue.message.replace(outside, "") and str(tmp_path) not in issue.message.replace(outside, "")
    plan = compile_workflow(document, default_registry(), overrides("sd", "tiny-sd", lora="loras/mine.safetensors",
                                                                   lora_scale=SCALE), base=TEMPLATES, access=access)
    assert run_plan(plan, services=services, output_dir=tmp_path / "out").result.status == "succeeded"


def live_modules(services: dict[str, Any]) -> list[torch.nn.Module]:
    """Every torch module the model cache holds (a pipeline's components, a text encoder pair's model)."""
    found = []
    for live, _ in services["models"]._entries.values():
        parts = [live, getattr(live, "model", None), *getattr(live, "components", {}).values()]
        found += [module for module in parts if isinstance(module, torch.nn.Module)]
    return found


def lora_layers(services: dict[str, Any]) -> list[torch.nn.Module]:
    """The peft LoRA layers in any live model of the model cache, active or not."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    return [layer for module in live_modules(services) for layer in module.modules() if isinstance(layer, BaseTunerLayer)]


def lora_layers_in_use(services: dict[str, Any]) -> list[str]:
    """LoRA layers a live model would compute with now: enabled ones, or ones that no record of resident
    layers accounts for (left half-loaded)."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    from diffgraph.nodes import lora

    found = []
    for module in live_modules(services):
        resident = getattr(module, lora.RESIDENT, None) is not None
        found += [name for name, layer in module.named_modules()
                  if isinstance(layer, BaseTunerLayer) and (not layer.disable_adapters or not resident)]
    return found


@pytest.mark.parametrize("family", ["sd", "sdxl"])
def test_a_run_cancelled_mid_sampling_leaves_no_lora_active(lora_models, loras, tmp_path, family):
    from diffgraph.engine import CancelToken

    services: dict[str, Any] = {}
    token = CancelToken()

    def on_event(event):
        if event["type"] == "progress" and event["step"] == 1:
            token.cancel()

    plan = template_plan("txt2img_lora", overrides(family, lora_models[family], lora=str(loras[f"{family}_a"])))
    run_plan(plan, services=services, output_dir=tmp_path, expect="cancelled", on_event=on_event, cancel=token)
    assert lora_layers_in_use(services) == []
    plain = overrides(family, lora_models[family])
    after = run("txt2img", plain, services, tmp_path / "after").value("decode", "image")
    assert torch.equal(after, run("txt2img", plain, {}, tmp_path / "fresh").value("decode", "image"))



def test_compile_keeps_the_lora(lora_models, loras, tmp_path):
    """--compile's twin is made from the plain model: with a LoRA applied the denoiser runs eager (a
    stage says so), so the picture is the eager LoRA run's, not the plain model's."""
    import numpy as np
    from PIL import Image as PILImage

    from diffgraph.engine import Cache, Executor, MemoryCache, RunOptions

    def picture(name: str, settings: dict[str, Any], out: Path, options: RunOptions, events: list) -> np.ndarray:
        result = Executor(Cache(MemoryCache()), services=services).run(
            template_plan(name, settings), output_dir=out, options=options, on_event=events.append)
        assert result.status == "succeeded", result.error
        (path,) = result.outputs["save"]
        return np.asarray(PILImage.open(path).convert("RGB"), dtype=np.int16)

    services: dict[str, Any] = {}
    settings = overrides("sd", lora_models["sd"], lora=str(loras["sd_a"]), lora_scale=SCALE)
    eager = picture("txt2img_lora", settings, tmp_path / "eager", RunOptions(), [])
    plain = picture("txt2img", overrides("sd", lora_models["sd"]), tmp_path / "plain", RunOptions(), [])
    events: list[dict[str, Any]] = []
    compiled = picture("txt2img_lora", settings, tmp_path / "compiled", RunOptions(compile=True), events)
    stages = [event["message"] for event in events if event["type"] == "node_stage"]
    assert any("not compiling the unet: a LoRA" in message for message in stages), stages
    assert np.abs(compiled - eager).max() <= 2
    assert np.abs(compiled - plain).max() > 2  # the LoRA is in it


@pytest.mark.parametrize("family", ["sd", "sdxl"])
def test_kept_lora_layers_count_in_the_model_caches_budget(lora_models, loras, tmp_path, family):
    """The layers a LoRA leaves in the live models are weights like any other: the model cache counts
    them (and evicts by them), and counts them out when other LoRAs replace them."""
    def lora_bytes() -> int:
        return sum(parameter.numel() * parameter.element_size() for module in live_modules(shared)
                   for name, parameter in module.named_parameters() if "lora_" in name)

    model, first, second = lora_models[family], loras[f"{family}_a"], loras[f"{family}_b"]
    shared: dict[str, Any] = {}
    run("txt2img", overrides(family, model), shared, tmp_path / "plain")
    plain_bytes = shared["models"].bytes
    for lora in (first, second):
        run("txt2img_lora", overrides(family, model, lora=str(lora), lora_scale=SCALE), shared, tmp_path / lora.stem)
        assert lora_bytes() > 0
        assert shared["models"].bytes == plain_bytes + lora_bytes(), f"after {lora.name}"


@pytest.mark.parametrize("family", ["sd", "sdxl"])
def test_a_second_run_with_the_same_lora_loads_nothing_again(lora_models, loras, tmp_path, family, monkeypatch):
    """A new seed with the same LoRA: the layers of the first run are used again (the same objects, no
    peft injection), and the picture is the one a fresh model cache gives."""
    import peft

    injections = []
    inject = peft.inject_adapter_in_model

    def counted(*args: Any, **kwargs: Any) -> Any:
        injections.append(kwargs.get("adapter_name"))
        return inject(*args, **kwargs)

    monkeypatch.setattr(peft, "inject_adapter_in_model", counted)  # diffusers and lora.py import it per call
    settings = overrides(family, lora_models[family], lora=str(loras[f"{family}_a"]), lora_scale=SCALE)
    shared: dict[str, Any] = {}
    run("txt2img_lora", settings, shared, tmp_path / "first")
    assert injections, "the first run loads the LoRA"
    layers = lora_layers(shared)
    injections.clear()
    reseeded = {**settings, "seed": SEED + 1}
    ours = run("txt2img_lora", reseeded, shared, tmp_path / "second").value("decode", "image")
    assert injections == []
    again = lora_layers(shared)
    assert len(again) == len(layers) and all(one is other for one, other in zip(again, layers, strict=True))
    assert torch.equal(ours, run("txt2img_lora", reseeded, {}, tmp_path / "fresh").value("decode", "image"))


@pytest.mark.parametrize("family", ["sd", "sdxl"])
def test_lora_a_then_none_then_b_then_a_at_another_strength_each_give_a_fresh_cache_picture(
        lora_models, loras, tmp_path, family):
    model, first, second = lora_models[family], loras[f"{family}_a"], loras[f"{family}_b"]
    sequence = [("txt2img_lora", overrides(family, model, lora=str(first), lora_scale=SCALE)),
                ("txt2img", overrides(family, model)),
                ("txt2img_lora", overrides(family, model, lora=str(second), lora_scale=SCALE)),
                ("txt2img_lora", overrides(family, model, lora=str(first), lora_scale=0.4))]
    shared: dict[str, Any] = {}
    pictures = pictures_in_one_cache(sequence, shared, tmp_path)
    assert len({picture.numpy().tobytes() for picture in pictures}) == 4  # each run is its own picture
    assert lora_layers_in_use(shared) == []


def test_the_compiled_twin_made_after_a_lora_run_has_no_lora_layers(lora_models, loras, tmp_path):
    """--compile copies the denoiser's structure: the LoRA layers resting in it since the last LoRA run
    are taken out first (the twin compiles on its first call, which this test never makes)."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    from diffgraph.engine import RunContext, RunOptions
    from diffgraph.nodes import fastpath, lora

    settings = overrides("sd", lora_models["sd"], lora=str(loras["sd_a"]), lora_scale=SCALE)
    shared: dict[str, Any] = {}
    run("txt2img_lora", settings, shared, tmp_path / "lora")
    (unet,) = [module for module in live_modules(shared) if type(module).__name__ == "UNet2DConditionModel"]
    assert getattr(unet, lora.RESIDENT, None) is not None and lora_layers(shared)
    twin = fastpath.denoiser(RunContext(node_id="sample", services=shared, options=RunOptions(compile=True)), unet)
    assert twin is not unet
    assert not any(isinstance(layer, BaseTunerLayer) for layer in twin.modules())
    assert not getattr(twin, "peft_config", None)
    assert not any(isinstance(layer, BaseTunerLayer) for layer in unet.modules())  # out of the live one too
    ours = run("txt2img_lora", settings, shared, tmp_path / "again").value("decode", "image")  # loaded anew
    assert torch.equal(ours, run("txt2img_lora", settings, {}, tmp_path / "fresh").value("decode", "image"))


def test_a_lora_that_fails_to_load_takes_every_lora_layer_out_of_that_model(lora_models, loras, tmp_path):
    """SDXL's LoRA resting in the model, then an SD 1.x LoRA that does not fit its UNet: the failed load
    takes every LoRA layer out of the UNet, and the model gives a fresh cache's pictures, with and
    without a LoRA."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    model = lora_models["sdxl"]
    with_a = overrides("sdxl", model, lora=str(loras["sdxl_a"]), lora_scale=SCALE)
    shared: dict[str, Any] = {}
    run("txt2img_lora", with_a, shared, tmp_path / "a")
    assert lora_layers(shared)
    plan = template_plan("txt2img_lora", overrides("sdxl", model, lora=str(loras["sd_a"])))
    failed = run_plan(plan, services=shared, output_dir=tmp_path / "failed", expect="failed").result
    assert failed.failed_node == "lora"
    (unet,) = [module for module in live_modules(shared) if type(module).__name__ == "UNet2DConditionModel"]
    assert not any(isinstance(layer, BaseTunerLayer) for layer in unet.modules())
    assert lora_layers_in_use(shared) == []
    for name, settings in (("txt2img", overrides("sdxl", model)), ("txt2img_lora", with_a)):
        ours = run(name, settings, shared, tmp_path / f"{name}-after").value("decode", "image")
        assert torch.equal(ours, run(name, settings, {}, tmp_path / f"{name}-fresh").value("decode", "image"))


def test_an_ip_adapter_run_after_a_lora_run_and_both_at_once_give_a_fresh_cache_picture(lora_models, loras, tmp_path):
    """The IP-Adapter swaps the UNet's attention processors, whose projections are the ones the LoRA's
    layers wrap: with the LoRA resting in the UNet, and with both active, each picture is a fresh cache's."""
    import numpy as np
    from diffusers import UNet2DConditionModel
    from PIL import Image as PILImage
    from support import tiny_ipadapter

    model = lora_models["sd"]
    adapter = tiny_ipadapter.build(tmp_path / "ip", UNet2DConditionModel.from_pretrained(str(model), subfolder="unet"))
    image = tmp_path / "reference.png"
    PILImage.fromarray(np.random.default_rng(0).integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(image)

    def with_image_prompt(name: str, settings: dict[str, Any]):
        document = copy.deepcopy(read_document(TEMPLATES / f"{name}.yaml"))
        nodes = document["nodes"]
        unet = nodes["sample"]["inputs"]["unet"]  # load.unet, or lora.unet
        nodes["reference"] = {"type": "LoadImage", "params": {"image": str(image)}}
        nodes["ip"] = {"type": "LoadIPAdapter", "params": {"ip_adapter": str(adapter)}}
        nodes["apply"] = {"type": "ApplyIPAdapter", "params": {"strength": 0.8},
                          "inputs": {"unet": unet, "ip_adapter": "ip.ip_adapter", "image": "reference.image"}}
        nodes["sample"]["inputs"]["unet"] = "apply.unet"
        return compile_workflow(document, default_registry(), settings, base=TEMPLATES)

    with_a = overrides("sd", model, lora=str(loras["sd_a"]), lora_scale=SCALE)
    sequence = [("txt2img_lora", with_a), (with_image_prompt("txt2img", overrides("sd", model)), {}),
                (with_image_prompt("txt2img_lora", with_a), {})]
    shared: dict[str, Any] = {}
    pictures = pictures_in_one_cache(sequence, shared, tmp_path)
    assert not torch.equal(pictures[1], pictures[2])  # the LoRA is in the last one
    assert lora_layers_in_use(shared) == []


def test_a_stacked_lora_at_strength_zero_changes_nothing_while_its_layers_rest(lora_models, loras, tmp_path):
    """A then B at 0: B's layers are loaded with A's (one set of files) but never switched on, so the
    picture is A's alone, bit for bit."""
    model = lora_models["sd"]
    with_a = overrides("sd", model, lora=str(loras["sd_a"]), lora_scale=SCALE)
    shared: dict[str, Any] = {}
    stacked = run(stacked_plan(with_a, loras["sd_b"], 0.0), {}, shared, tmp_path / "stacked").value("decode", "image")
    unet = next(module for module in live_modules(shared) if type(module).__name__ == "UNet2DConditionModel")
    assert len(unet.peft_config) == 2  # A and B rest in it
    alone = run("txt2img_lora", with_a, {}, tmp_path / "alone").value("decode", "image")
    assert torch.equal(stacked, alone)
