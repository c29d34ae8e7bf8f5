"""The thin adapter between diffgraph's nodes and diffusers' Modular Diffusers, for every model
family beyond Stable Diffusion 1.x/2.x (see `families.py` for what differs between them).

One `ModularPipeline` per loaded model holds all its components (the model cache keeps it): a
pipeline built per node would hold only the components its blocks declare, and Flux's and SD3's
denoise blocks read `vae_scale_factor` without declaring the VAE (silently 8 without it). The nodes
run the family's block groups against it: TextEncode -> `text_encoder`, SampleLoop -> `denoise`,
VAEDecode -> `decode`. VAEEncode keeps the VAE's latent distribution (mean and std, normalized as
the family's table says) as it does for SD 1.x/2.x, so that SampleLoop draws the image sample from
its own seed first, then the noise, in the order the classic pipelines draw them; the family's
`vae_encoder` blocks would draw the sample before SampleLoop knows the seed.

Modular pipelines have no step callback (diffusers 0.42): a block appended to each denoise loop
reports progress with a preview and checks for cancellation between steps. The engine's callback
reaches it through a context variable, because `init_pipeline` deep-copies blocks.

The modular loop calls the denoiser once per guider pass (conditional, then unconditional); the
classic pipelines make one call at twice the batch, which for a small model on the CPU is nearly
twice as fast. Where the family's table allows it (`batched_guidance`), the loop's guidance block
runs twice per step around one batched call (`BatchedDenoiser`); the guider does the guidance math.
SDXL's ControlNet guidance block (which runs the ControlNet, then the UNet on its residuals, per
pass) runs three times per step around one batched ControlNet call and one batched UNet call.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from diffgraph.engine import NodeError

from . import families, fastpath
from .families import Family


@dataclass
class StepHook:
    """What the step block calls after each denoising step."""

    on_step: Callable[[int, int, Any], None]  # (step, total, latents as the loop holds them)


_STEP_HOOK: contextvars.ContextVar[StepHook | None] = contextvars.ContextVar("diffgraph_step_hook", default=None)
_STEP_BLOCK_NAME = "diffgraph_step"


def _step_block_class() -> type:
    from diffusers.modular_pipelines import ModularPipelineBlocks

    class DiffgraphStepBlock(ModularPipelineBlocks):
        """Reports each finished step to the running node (progress, preview, cancellation)."""

        model_name = "diffgraph"

        @property
        def description(self) -> str:
            return "diffgraph: report progress and check for cancellation after each denoising step"

        @property
        def inputs(self) -> list:
            return []

        @property
        def intermediate_outputs(self) -> list:
            return []

        def __call__(self, components: Any, block_state: Any, i: int, t: Any) -> tuple[Any, Any]:
            hook = _STEP_HOOK.get()
            if hook is not None:
                hook.on_step(i + 1, len(block_state.timesteps), block_state.latents)
            return components, block_state

    return DiffgraphStepBlock


def _add_step_blocks(blocks: Any, step_block: type, batched_guidance: bool = False) -> int:
    """Append the step block to every denoise loop in the block tree; how many loops there were.
    With `batched_guidance`, the loops' guidance blocks also learn to batch the guider's passes."""
    from diffusers.modular_pipelines import LoopSequentialPipelineBlocks

    found = 0
    pending = [blocks]
    while pending:
        block = pending.pop()
        if isinstance(block, LoopSequentialPipelineBlocks):
            loop: Any = block  # its class does not declare sub_blocks and set_progress_bar_config
            if _STEP_BLOCK_NAME not in loop.sub_blocks:
                loop.sub_blocks[_STEP_BLOCK_NAME] = step_block()
            if batched_guidance:
                for sub_block in loop.sub_blocks.values():
                    _batch_guidance_of(sub_block)
            loop.set_progress_bar_config(disable=True)  # the engine reports progress
            found += 1
            continue
        pending.extend((getattr(block, "sub_blocks", None) or {}).values())
    return found


def build_pipeline(folder: Path, family_name: str, torch_dtype: Any, allow_pickle: bool,
                   checkpoint: Path | None = None) -> Any:
    """The family's ModularPipeline for a diffusers folder, every component loaded (safetensors
    only unless `allow_pickle`), with the step block in its denoise loops. With `checkpoint` (a
    single file), the components it holds come from it, converted by diffusers' `from_single_file`,
    and the rest (and the configs) from `folder`."""
    from diffusers import ModularPipeline

    from .models import _load_part, _read_json, build_scheduler, scheduler_ref

    family = families.get(family_name)
    if not family.modular:
        raise NodeError(f"{family.title} runs diffgraph's own loop, not modular blocks")
    with _quiet_diffusers():
        # never code from the folder (custom blocks), only the blocks diffusers itself ships
        pipeline = ModularPipeline.from_pretrained(str(folder), local_files_only=True, trust_remote_code=False)
    index = _read_json(folder / "model_index.json")
    names = list(families.checkpoint_header(checkpoint)) if checkpoint else []  # its tensor names, read once
    held = families.single_file_parts(family, names)
    parts = {}
    for name, entry in index.items():
        if name in pipeline._component_specs and isinstance(entry, list) and len(entry) == 2 and entry[1]:
            if str(entry[1]).endswith("Scheduler"):  # built from its config, as every SampleLoop does
                parts[name] = build_scheduler(scheduler_ref(folder, name))
            elif name not in held:
                parts[name] = _load_part(folder, name, torch_dtype, allow_pickle)
    if checkpoint is not None:
        parts.update(_from_single_file(checkpoint, names, folder, family, held, parts, torch_dtype))
    with _quiet_diffusers():
        pipeline.update_components(**parts)
    if _add_step_blocks(_blocks(pipeline), _step_block_class(), family.batched_guidance) == 0:
        raise NodeError(f"diffusers' {family.title} blocks have no denoise loop to report progress from")
    return pipeline


def _denoiser_placeholder(shaped: Any) -> Any:
    """What a recording denoiser answers: a noise prediction of zeros."""
    import torch

    return (torch.zeros_like(shaped),)


def _controlnet_placeholder(shaped: Any) -> Any:
    """What a recording ControlNet answers (down residuals, mid residual): the guidance block only
    hands them on to the denoiser, which is recording or answering too, never computing."""
    import torch

    return [], torch.zeros_like(shaped)


class BatchedDenoiser:
    """Stands in for a model the guidance block calls once per guider pass (the denoiser `unet` or
    `transformer`; SDXL's `controlnet`) while a family with `batched_guidance` denoises. A guidance
    block that learnt to batch (`_batch_guidance_of`) runs more than once per step: first it calls
    this once per guider pass, which records the inputs and answers placeholders, then one batched
    call computes every pass, and the block runs again on the recorded answers' slices."""

    def __init__(self, model: Any, placeholder: Callable[[Any], Any] = _denoiser_placeholder) -> None:
        self.model = model
        self.placeholder = placeholder
        self.recorded: list[tuple[tuple[Any, ...], dict[str, Any]]] | None = None
        self.answers: list[Any] = []

    def __getattr__(self, name: str) -> Any:  # config, dtype, device, forward...: the model's own
        if name == "model":  # not set yet (copy, pickle): no recursion
            raise AttributeError(name)
        return getattr(self.model, name)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        import torch

        if self.recorded is not None:
            self.recorded.append((args, kwargs))
            shaped = next(value for value in (*args, *kwargs.values()) if isinstance(value, torch.Tensor))
            return self.placeholder(shaped)  # its guidance is computed, then thrown away
        if self.answers:
            return self.answers.pop(0)
        return self.model(*args, **kwargs)

    def run_recorded(self) -> None:
        """One model call for every recorded pass (one by one where their inputs do not stack); its
        output's batch-axis tensors are sliced into each pass's answer."""
        calls, self.recorded = self.recorded or [], None
        if len(calls) > 1:
            try:
                args = _stacked([call[0] for call in calls])
                kwargs = _stacked([call[1] for call in calls])
            except _Unstackable:
                pass
            else:
                try:
                    self.answers = _split(self.model(*args, **kwargs), len(calls))
                    return
                except _Unstackable:
                    pass
        self.answers = [self.model(*args, **kwargs) for args, kwargs in calls]


class _Unstackable(Exception):
    pass


def _stacked(values: list[Any]) -> Any:
    """The guider passes' model inputs as one batch: batch-axis tensors concatenated (in the
    passes' order), everything else (the timestep, flags, None) the same in every pass."""
    import torch

    first = values[0]
    if isinstance(first, torch.Tensor):
        if any(not isinstance(value, torch.Tensor) or value.shape != first.shape or value.dtype != first.dtype
               for value in values):
            raise _Unstackable
        if first.ndim > 0:
            return torch.cat(values)
        if all(torch.equal(value, first) for value in values):
            return first
        raise _Unstackable
    if isinstance(first, dict):
        if any(not isinstance(value, dict) or value.keys() != first.keys() for value in values):
            raise _Unstackable
        return {key: _stacked([value[key] for value in values]) for key in first}
    if isinstance(first, (list, tuple)):
        if any(type(value) is not type(first) or len(value) != len(first) for value in values):
            raise _Unstackable
        return type(first)(_stacked([value[index] for value in values]) for index in range(len(first)))
    if all(value is first or (isinstance(value, (int, float, str, bool)) and value == first) for value in values):
        return first
    raise _Unstackable


def _split(output: Any, parts: int) -> list[Any]:
    """A batched call's output as `parts` outputs, one per pass: each batch-axis tensor in equal
    slices, tuples and lists kept as they are (a ControlNet's (down residuals, mid residual))."""
    import torch

    if isinstance(output, torch.Tensor):
        if output.ndim == 0 or output.shape[0] % parts:
            raise _Unstackable
        return list(output.chunk(parts))
    if isinstance(output, (list, tuple)):
        columns = [_split(item, parts) for item in output]
        return [type(output)(column[part] for column in columns) for part in range(parts)]
    raise _Unstackable


def _batch_guidance_of(block: Any) -> None:
    """Make a denoise loop's guidance block (the one that calls the denoiser once per guider pass,
    SDXL's ControlNet one too) batch the guider's passes when the denoiser is a `BatchedDenoiser`."""
    names = {spec.name for spec in getattr(block, "expected_components", [])}
    if "guider" not in names or isinstance(block, _BatchedGuidance):
        return
    block.__class__ = type(f"Batched{type(block).__name__}", (_BatchedGuidance, type(block)), {})


class _BatchedGuidance:
    """Mixed into a guidance block's class by `_batch_guidance_of`."""

    def __call__(self, components: Any, block_state: Any, i: int, t: Any) -> Any:
        run = super().__call__  # type: ignore[misc]
        denoiser = next((value for value in (getattr(components, name, None) for name in ("unet", "transformer"))
                         if isinstance(value, BatchedDenoiser)), None)
        if denoiser is None:
            return run(components, block_state, i, t)
        if "controlnet" in {spec.name for spec in self.expected_components}:  # type: ignore[attr-defined]
            return self._with_controlnet(run, denoiser, components, block_state, i, t)
        denoiser.recorded = []
        try:
            run(components, block_state, i, t)
            denoiser.run_recorded()
            return run(components, block_state, i, t)
        finally:
            denoiser.recorded, denoiser.answers = None, []

    @staticmethod
    def _with_controlnet(run: Callable[..., Any], denoiser: BatchedDenoiser, components: Any, block_state: Any,
                         i: int, t: Any) -> Any:
        """The ControlNet block (per pass: the ControlNet, then the denoiser on its residuals) three
        times: the ControlNet's passes recorded, then computed in one call; the denoiser's passes
        recorded on those residuals, then computed in one call; the guider's math on the answers.
        The ControlNet stands in only here: the blocks before the loop check its class."""
        plain = components.controlnet
        if plain is None:
            return run(components, block_state, i, t)
        controlnet = BatchedDenoiser(plain, _controlnet_placeholder)
        components.controlnet = controlnet
        try:
            controlnet.recorded, denoiser.recorded = [], []
            run(components, block_state, i, t)  # the denoiser's passes, on placeholder residuals, are dropped
            controlnet.run_recorded()
            denoiser.recorded = []
            run(components, block_state, i, t)
            denoiser.run_recorded()
            controlnet.recorded = []  # the denoiser answers whatever the residuals: no ControlNet call needed
            return run(components, block_state, i, t)
        finally:
            components.controlnet = plain
            denoiser.recorded, denoiser.answers = None, []


@contextlib.contextmanager
def _batched_denoiser(pipeline: Any, family: Family) -> Iterator[None]:
    """The pipeline's denoiser behind a `BatchedDenoiser` while the denoise blocks run (a plain
    attribute swap: `update_components` would rewrite the pipeline's component specs)."""
    name = "unet" if getattr(pipeline, "unet", None) is not None else "transformer"
    plain = getattr(pipeline, name, None)
    if not family.batched_guidance or plain is None:
        yield
        return
    setattr(pipeline, name, BatchedDenoiser(plain))
    try:
        yield
    finally:
        setattr(pipeline, name, plain)


def _from_single_file(checkpoint: Path, names: list[str], folder: Path, family: Family, held: list[str],
                      loaded: dict[str, Any], torch_dtype: Any) -> dict[str, Any]:
    """The components a single file (its tensor `names`) holds (`held`), converted by the family's classic
    pipeline's `from_single_file` with `folder`'s configs, offline; the rest are handed in as `loaded`."""
    import diffusers

    from .models import _diffusers_dtype

    if not held:
        raise NodeError(f"{checkpoint.name} holds none of a {family.title} model's components "
                        f"({', '.join(part for part, _ in family.single_file_parts)})", "model")
    if family.name == "flux" and "transformer" in held and len(held) > 1 and not any(
            "double_blocks." in name for name in names):
        others = ", ".join(part for part in held if part != "transformer")
        raise NodeError(f"{checkpoint.name} holds a Flux.1 transformer in diffusers' own tensor names together with "
                        f"its {others}: diffusers reads a whole Flux.1 checkpoint only in Black Forest Labs' layout "
                        "(double_blocks.*, as ComfyUI saves it); give the transformer as a file of its own (the "
                        "rest from config) or a diffusers folder", "model")
    classic = getattr(diffusers, family.pipeline_classes[0])
    given = {name: value for name, value in loaded.items() if name not in held}
    pipe = classic.from_single_file(str(checkpoint), config=str(folder), local_files_only=True,
                                    **_diffusers_dtype(torch_dtype), **given)
    found = {name: getattr(pipe, name) for name in held if getattr(pipe, name, None) is not None}
    for name, component in found.items():
        if hasattr(component, "tie_weights"):  # T5's token embeddings are `shared`, which diffusers loads alone
            component.tie_weights()
        empty = [param for param, value in component.named_parameters() if value.is_meta]
        if empty:
            raise NodeError(f"{checkpoint.name}: its {name} lacks {len(empty)} weights ({', '.join(empty[:3])}...); "
                            f"is it a {family.title} checkpoint of the model `config` names?", "model")
    return found


def _blocks(pipeline: Any) -> Any:
    """The pipeline's own blocks: its public `blocks` property returns a deep copy on every access."""
    return pipeline._blocks


_QUIET: contextvars.ContextVar[bool] = contextvars.ContextVar("diffgraph_quiet_diffusers", default=False)
_QUIET_LOGGERS = ("diffusers.modular_pipelines", "diffusers.guiders")


class _QuietFilter(logging.Filter):
    """Drops the records of diffusers' modular loggers below CRITICAL while a node is quiet."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.CRITICAL or not _QUIET.get()


_QUIET_FILTER = _QuietFilter()
_FILTERED = {"loggers": -1}  # how many loggers existed when the filter was last handed out


def _filter_quiet_loggers() -> None:
    """Give every modular logger the filter (loggers of modules imported since: when there are new ones)."""
    loggers = logging.Logger.manager.loggerDict
    if _FILTERED["loggers"] == len(loggers):
        return
    for name, logger in list(loggers.items()):
        if name.startswith(_QUIET_LOGGERS) and isinstance(logger, logging.Logger) and \
                _QUIET_FILTER not in logger.filters:
            logger.addFilter(_QUIET_FILTER)
    _FILTERED["loggers"] = len(loggers)


@contextlib.contextmanager
def _quiet_diffusers() -> Iterator[None]:
    """Keep diffusers' modular logging ("Error in block" tracebacks on cancellation, the guiders'
    "experimental feature" notice) out of the user's output: errors reach the user as NodeErrors instead.
    A filter on those loggers rather than their level: each `setLevel` clears every logger's cache
    (about a millisecond with torch, transformers and diffusers loaded, several times per run)."""
    _filter_quiet_loggers()
    token = _QUIET.set(True)
    try:
        yield
    finally:
        _QUIET.reset(token)
        _filter_quiet_loggers()  # loggers of modules the blocks imported: quiet from the next use on


def run_block(pipeline: Any, name: str, **inputs: Any) -> Any:
    """Run one block group (`text_encoder`, `denoise`, `decode`, ...) of the pipeline's blocks
    against the whole pipeline; its declared inputs not given take their defaults."""
    import torch
    from diffusers.modular_pipelines import PipelineState

    block = _blocks(pipeline).sub_blocks[name]
    state = PipelineState()
    for param in block.inputs:
        if param.name is None:
            continue
        state.set(param.name, inputs.pop(param.name) if param.name in inputs else param.default, param.kwargs_type)
    if inputs:
        raise NodeError(f"the {name} blocks take no {', '.join(inputs)} (diffusers changed?)")
    with torch.no_grad(), _quiet_diffusers():
        _, state = block(pipeline, state)
    return state


def family_of(ref: Any) -> Family:
    return families.get(getattr(ref, "family", ""))


def is_modular(ref: Any) -> bool:
    return family_of(ref).modular


def task_problem(family: Family, task: str) -> str | None:
    if task in family.tasks:
        return None
    return (f"{family.title} models cannot do {task} in diffgraph "
            f"(family {family.name}: {', '.join(family.tasks)})")


def require_task(family: Family, task: str, field: str) -> None:
    problem = task_problem(family, task)
    if problem is not None:
        raise NodeError(problem, field)


#: loader node types whose `model` param names the model their outputs come from
LOADERS = ("LoadPipeline", "LoadUNet", "LoadVAE", "LoadTextEncoder")


def family_of_loader(source: tuple[str, dict[str, Any], str], access: Any) -> Family | None:
    """At validation time: the family of the local model a loader link comes from, if it can be
    told from the files `access` allows (hub ids and anything unreadable: None, the run decides)."""
    from .models import local_path

    node_type, params, _ = source
    if node_type not in LOADERS or not isinstance(params.get("model"), str):
        return None
    path = local_path(params["model"], access)
    if path is None:
        return None
    try:
        if path.is_file():
            return families.family_of_checkpoint(path)
        return families.family_of_folder(path) if (path / "model_index.json").is_file() else None
    except (families.UnknownFamily, OSError):
        return None


def negative_prompt_problems(linked: dict[str, tuple[str, dict[str, Any], str]], access: Any) -> list[tuple[str, str]]:
    """At validation time (SampleLoop): a non-empty negative prompt for a family without one (Flux.1),
    when the model and the negative TextEncode's text are both known from params."""
    family = family_of_loader(linked["unet"], access) if "unet" in linked else None
    source = linked.get("negative")
    if family is None or family.guidance != "embedded" or source is None or source[0] != "TextEncode":
        return []
    text = source[1].get("text")
    if not isinstance(text, str) or text == "":
        return []
    return [("negative", f"{family.title} models have no negative prompt (their guidance is distilled; family "
                         f"{family.name}): the TextEncode linked here has the text {text[:40]!r}; leave it empty "
                         "or unlink it")]


# ---------------------------------------------------------------------------------------------
# the four nodes' family paths


@_quiet_diffusers()
def encode_text(ctx: Any, ref: Any, text: str) -> dict[str, Any]:
    """TextEncode: the family's text_encoder blocks on one prompt; only the positive outputs are
    kept, so the result does not depend on any sampling setting (the guider)."""
    import torch

    family = family_of(ref)
    pipeline = _pipeline(ctx, ref, "text_encoder")
    if "guider" in pipeline._component_specs:  # guidance off: the blocks then skip the negative prompt
        with _quiet_diffusers():
            pipeline.update_components(guider=_guider(family, None))
    state = run_block(pipeline, "text_encoder", prompt=text)
    conditioning = {}
    for name in family.conditioning:
        value = state.get(name)
        if family.list_conditioning:  # one tensor per prompt, of its own length
            conditioning.update({f"{name}.{index}": _stored(item) for index, item in enumerate(value)})
        else:
            conditioning[name] = _stored(value)
    conditioning["empty_prompt"] = torch.tensor([1.0 if text == "" else 0.0])
    conditioning[f"family_{family.name}"] = torch.ones(1)  # which text encoder made it, for clear errors
    return conditioning


def _stored(tensor: Any) -> Any:
    """Floating tensors as float32 on the CPU; masks and ids keep their dtype."""
    return (tensor.float() if tensor.is_floating_point() else tensor).cpu()


def latent_channels(pipeline: Any) -> int:
    config = pipeline.vae.config
    return int(getattr(config, "latent_channels", None) or config.z_dim)  # z_dim: video VAEs (Qwen-Image)


def latent_size(ctx: Any, vae_ref: Any, unet_ref: Any) -> tuple[int, int, int, int]:
    """EmptyLatent: (latent channels, VAE downscale factor, size multiple, native size in pixels)."""
    ref = vae_ref if vae_ref is not None else unet_ref
    family = family_of(ref)
    pipeline = _pipeline(ctx, ref, "vae")
    channels = latent_channels(pipeline)
    factor = pipeline.vae_scale_factor
    return channels, factor, family.size_multiple * factor, int(pipeline.default_height)


@_quiet_diffusers()
def decode(ctx: Any, ref: Any, samples: Any) -> Any:
    """VAEDecode: the family's decode blocks, as a [B, 3, H, W] tensor in [0, 1]."""
    pipeline = _pipeline(ctx, ref, "vae")
    factor = pipeline.vae_scale_factor
    latents = samples.to(device=ctx.device, dtype=pipeline.vae.dtype)
    if family_of(ref).latent_frames:
        latents = latents.unsqueeze(2)
    fastpath.vae_tiling(ctx, pipeline.vae, samples.shape[2] * factor, samples.shape[3] * factor)
    inputs = {"latents": latents, "output_type": "pt"}
    accepted = {param.name for param in _blocks(pipeline).sub_blocks["decode"].inputs}
    if "height" in accepted:
        inputs.update(height=samples.shape[2] * factor, width=samples.shape[3] * factor)
    images = run_block(pipeline, "decode", **inputs).get("images")
    return images.float().clamp(0, 1).cpu()


@dataclass
class Sampling:
    """SampleLoop's settings, as the family path needs them."""

    seed: int
    steps: int
    cfg: float
    strength: float
    scheduler: Any  # a built diffusers scheduler


@_quiet_diffusers()
def sample(ctx: Any, ref: Any, latent: Mapping[str, Any], positive: Any, negative: Any, settings: Sampling,
           preview: Callable[[Any], Any], extra_inputs: dict[str, Any] | None = None) -> Any:
    """SampleLoop: the family's denoise blocks (input, timesteps, latents, loop), with the step
    block reporting progress and cancellation. Returns the denoised latents [B, C, h, w].
    `extra_inputs`: more denoise block inputs (IP-Adapter image embeds)."""
    import torch
    from diffusers.utils.torch_utils import randn_tensor

    family = family_of(ref)
    pipeline = _pipeline(ctx, ref, "unet")
    if positive is None:
        raise NodeError(f"{family.title} models are text-conditioned: link a TextEncode", "positive")
    embeds = _conditioning(positive, family, "positive")
    samples = latent["samples"]
    batch, channels, height, width = samples.shape
    factor = pipeline.vae_scale_factor
    if channels != latent_channels(pipeline):
        raise NodeError(f"a {channels}-channel latent does not fit this {family.title} model "
                        f"({latent_channels(pipeline)} channels)", "latent")
    prompts = len(embeds["prompt_embeds"])  # a batch tensor, or a list with one tensor per prompt
    inputs: dict[str, Any] = {**embeds, "num_images_per_prompt": batch // prompts,
                              "height": height * factor, "width": width * factor,
                              "num_inference_steps": settings.steps}
    if family.guidance == "embedded":
        if negative is not None and not _is_empty(negative):
            raise NodeError(f"{family.title} models have no negative prompt (their guidance is distilled): "
                            "leave it empty or unlinked", "negative")
        inputs["guidance_scale"] = settings.cfg
    else:
        if settings.cfg > 1.0:
            if negative is None:
                raise NodeError("cfg > 1 needs a negative conditioning (a TextEncode, empty prompt or not)",
                                "negative")
            negative_embeds = _conditioning(negative, family, "negative")
            if _is_empty(negative) and family.zeros_for_empty_negative and \
                    pipeline.config.get("force_zeros_for_empty_prompt", True):
                negative_embeds = {name: torch.zeros_like(value) for name, value in negative_embeds.items()}
            inputs.update({f"negative_{name}": value for name, value in negative_embeds.items()})
        with _quiet_diffusers():
            pipeline.update_components(guider=_guider(family, settings.cfg if settings.cfg > 1.0 else None))
    with _quiet_diffusers():
        pipeline.update_components(scheduler=settings.scheduler)
    inputs.update(extra_inputs or {})
    for name, value in list(inputs.items()):
        if isinstance(value, torch.Tensor):
            inputs[name] = _placed(value, ctx.device, pipeline.dtype)
        elif isinstance(value, list):
            inputs[name] = [_placed(item, ctx.device, pipeline.dtype) for item in value]

    generator = torch.Generator("cpu").manual_seed(settings.seed)
    if "std" in latent:  # img2img: the image sample first, then the noise, as the pipelines draw them
        require_task(family, "inpaint" if "mask" in latent else "img2img", "latent")
        dtype = pipeline.dtype
        shape = tuple(samples.shape)
        mask_channels = "mask" in latent and getattr(pipeline, "num_channels_unet", channels) == 2 * channels + 1
        if mask_channels:
            # an inpainting UNet (mask and masked image as extra channels), as the classic pipeline at
            # strength 1: no image sample, the noise, then the masked image's sample; the noise is
            # handed to the blocks so that the masked image's draw can follow it
            if settings.strength < 1.0:
                raise NodeError(f"{family.title} inpainting UNets run at strength 1 only in diffgraph (for now)",
                                "strength")
            inputs["image_latents"] = samples.to(ctx.device, dtype)
            inputs["latents"] = randn_tensor(shape, generator=generator, device=ctx.device, dtype=dtype)
            eps = randn_tensor(tuple(latent["masked_samples"].shape), generator=generator, device=ctx.device,
                               dtype=dtype)
            inputs[family.masked_image_input] = (latent["masked_samples"].to(ctx.device, dtype)
                                                 + latent["masked_std"].to(ctx.device, dtype) * eps)
        else:
            eps = randn_tensor(shape, generator=generator, device=ctx.device, dtype=dtype)
            image_latents = samples.to(ctx.device, dtype) + latent["std"].to(ctx.device, dtype) * eps
            inputs["image_latents"] = image_latents.unsqueeze(2) if family.latent_frames else image_latents
        inputs["strength"] = settings.strength
        if "mask" in latent:
            if not mask_channels and getattr(pipeline, "num_channels_unet", channels) != channels:
                raise NodeError(f"this {family.title} UNet takes {pipeline.num_channels_unet} channels; a "
                                f"{channels}-channel latent fits {channels} (blending) or {2 * channels + 1} "
                                "(an inpainting UNet)", "unet")
            # a 4-channel UNet repaints by blending and never reads the masked image (not drawn then)
            inputs[family.mask_input] = latent["mask"].to(ctx.device, dtype)
            if family.masked_image_input and not mask_channels:
                inputs[family.masked_image_input] = latent["masked_samples"].to(ctx.device, dtype)
    elif settings.strength < 1.0:
        raise NodeError("strength < 1 needs a picture to start from: link a VAEEncode latent", "strength")
    inputs["generator"] = generator

    def on_step(step: int, total: int, latents: Any) -> None:
        if ctx.on_progress is not None:
            ctx.progress(step, total, preview(_unpacked(latents, family, channels, height, width)))
        ctx.check_cancelled()

    ctx.check_cancelled()
    from . import controlnet  # ControlNet (controlnet.py): the blocks' own ControlNet steps
    inputs.update(controlnet.modular_inputs(ctx, pipeline, family, positive, negative, height * factor, width * factor))
    token = _STEP_HOOK.set(StepHook(on_step))
    try:
        # --compile: the compiled twin while it denoises; the guider's passes batched where the family allows
        with fastpath.modular_denoiser(ctx, pipeline), _batched_denoiser(pipeline, family):
            state = run_block(pipeline, "denoise", **inputs)
    finally:
        _STEP_HOOK.reset(token)
        controlnet.clear_modular(pipeline)  # ControlNet (controlnet.py)
    latents = state.get("latents")
    if latents.numel() == 0:  # an image start that skips every step: diffusers' blocks then make no latents
        raise NodeError(f"strength {settings.strength} with {settings.steps} steps leaves no step to run; "
                        "raise strength or steps", "strength")
    if family.latent_frames and latents.ndim == 5:
        latents = latents.squeeze(2)
    return _unpacked(latents, family, channels, height, width)


def _placed(tensor: Any, device: Any, dtype: Any) -> Any:
    return tensor.to(device=device, dtype=dtype) if tensor.is_floating_point() else tensor.to(device)


def _guider(family: Family, cfg: float | None) -> Any:
    """The family's classifier-free guider at `cfg`; None: guidance off (cfg <= 1, as for SD 1.x/2.x).
    Off is said with the scale (1, or 0 in the original formulation): denoise loops re-enable a
    guider whose `enabled` flag is off."""
    from diffusers import ClassifierFreeGuidance

    options = dict(family.guider_options)
    off = 0.0 if options.get("use_original_formulation") else 1.0
    return ClassifierFreeGuidance(guidance_scale=off if cfg is None else cfg, **options)


def _pipeline(ctx: Any, ref: Any, field: str) -> Any:
    from .models import model_cache

    return model_cache(ctx).pipeline(ref, ctx.device, ctx.dtype, field, budget_gb=ctx.options.vram_budget_gb)


def _conditioning(value: Any, family: Family, field: str) -> dict[str, Any]:
    """The block inputs a TextEncode's conditioning holds (lists rebuilt from `name.0`, `name.1`...)."""
    made_by = [key[len("family_"):] for key in value if key.startswith("family_")] if isinstance(value, dict) else []
    if made_by and made_by[0] != family.name:
        raise NodeError(f"this conditioning was encoded by a {families.get(made_by[0]).title} text encoder, but the "
                        f"model sampling is {family.title}: link a TextEncode fed by the same model", field)
    found: dict[str, Any] = {}
    if isinstance(value, dict):
        for name in family.conditioning:
            if family.list_conditioning:
                items = [value[f"{name}.{index}"] for index in range(len(value)) if f"{name}.{index}" in value]
                if items:
                    found[name] = items
            elif name in value:
                found[name] = value[name]
    if len(found) != len(family.conditioning):
        raise NodeError(f"this conditioning was not encoded by a {family.title} text encoder (it lacks "
                        f"{', '.join(family.conditioning)}): link a TextEncode fed by the same model", field)
    return found


def _is_empty(conditioning: Any) -> bool:
    flag = conditioning.get("empty_prompt") if isinstance(conditioning, dict) else None
    return flag is not None and bool(flag.flatten()[0] > 0.5)


def _unpacked(latents: Any, family: Family, channels: int, height: int, width: int) -> Any:
    """[B, C, h, w] latents, from the 2x2-patch sequences packed families hold in their loop."""
    if not family.packed_latents or latents.ndim == 4:
        return latents
    batch = latents.shape[0]
    return (latents.view(batch, height // 2, width // 2, channels, 2, 2).permute(0, 3, 1, 4, 2, 5)
            .reshape(batch, channels, height, width))
