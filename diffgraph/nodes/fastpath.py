"""The fast path: `--compile` (torch.compile of the denoiser) and `--vram-budget GB` (offloading).

Both arrive as the run's `RunOptions` (ctx.options). Neither changes which picture a seed gives
beyond float noise; both are off unless asked.

- Compile: the denoiser's compiled twin shares its weights (no second copy in memory) and is kept
  by the model cache beside it, so an uncompiled run never meets a compiled module and a second run
  of the same shapes compiles nothing. Regional compilation (the repeated transformer blocks,
  diffusers' `compile_repeated_blocks`) where the model declares them, else its whole forward; static
  shapes; CUDA graphs (`mode="reduce-overhead"`) on CUDA only. The first call of each new shape
  is announced as a `compile` stage, then `compiled` with its seconds; a denoiser left eager (offloaded,
  or carrying an adapter) is an `eager` stage saying why.
- VRAM budget (CUDA only; on the CPU it does nothing, and the entry points say so): `plan_offload`
  picks, per component and from the sizes alone, whether it stays on the GPU, visits it only while
  it runs (accelerate's CPU-offload hook, text encoders leave right after encoding), streams block
  groups (diffusers' group offloading) or leaf modules (accelerate's sequential offload); the VAE
  decodes in tiles when a picture would not fit.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

GIB = 1024**3

#: kept free for activations while the denoiser runs, per megapixel of picture (a heuristic: SDXL
#: at 1024x1024 in fp16 with guidance peaks near 1.5 GiB of activations with PyTorch's SDPA)
WORKING_BYTES_PER_MEGAPIXEL = int(1.5 * GIB)
#: the least kept free, however small the picture
MIN_WORKING_BYTES = GIB // 2
#: the VAE decoder's activations per pixel and per byte of element (its full-resolution stages hold
#: a few tensors of 128-256 channels at once); above the budget's share, the VAE decodes in tiles
VAE_DECODE_BYTES_PER_PIXEL_ELEMENT = 256 * 6
#: offloading strategies, from fastest to leanest
STRATEGIES = ("resident", "model", "group", "sequential")
TEXT_ENCODER_KINDS = ("text_encoder", "text_encoder_2", "text_encoder_3")


# ---------------------------------------------------------------------------------------------
# compile


def is_cuda(device: str) -> bool:
    return device.split(":", 1)[0] == "cuda"


def compile_mode(device: str) -> str | None:
    """CUDA graphs where launches dominate (CUDA); inductor's default elsewhere."""
    return "reduce-overhead" if is_cuda(device) else None


class CompileWatch:
    """Announces each first call of a compiled denoiser with new input shapes (when torch.compile
    compiles) as a stage of the running node, and how long compiling and that first call took."""

    def __init__(self, name: str, device: str):
        self.name = name
        self.device = device
        self.seen: set[tuple] = set()
        self.ctx: Any = None  # the node calling now (bound by `denoiser` each run)
        self.started: float | None = None

    def before(self, module: Any, args: tuple, kwargs: dict[str, Any]) -> None:
        if is_cuda(self.device):  # a new step for CUDA graphs: last step's outputs may be overwritten
            import torch

            torch.compiler.cudagraph_mark_step_begin()
        signature = _signature(args, kwargs)
        if signature in self.seen:
            return
        self.seen.add(signature)
        self.started = time.perf_counter()
        if self.ctx is not None:
            shape = "x".join(str(n) for n in _first_shape(args, kwargs))
            self.ctx.stage("compile", f"compiling the {self.name} for {shape} inputs (once per shape in this process)")

    def after(self, module: Any, args: tuple, kwargs: dict[str, Any], output: Any) -> None:
        if self.started is None:
            return
        seconds, self.started = time.perf_counter() - self.started, None
        if self.ctx is not None:
            self.ctx.stage("compiled", f"compiled the {self.name} in {seconds:.1f}s (its first call included)")


def _signature(args: tuple, kwargs: dict[str, Any]) -> tuple:
    """What static-shape compilation specializes on: each tensor argument's shape and dtype."""
    def describe(value: Any) -> Any:
        shape = getattr(value, "shape", None)
        if shape is not None:
            return (tuple(shape), str(getattr(value, "dtype", "")))
        if isinstance(value, (list, tuple)):
            return tuple(describe(item) for item in value)
        if isinstance(value, dict):
            return tuple(sorted((key, describe(item)) for key, item in value.items()))
        return type(value).__name__
    return (tuple(describe(arg) for arg in args), tuple(sorted((k, describe(v)) for k, v in kwargs.items())))


def _first_shape(args: tuple, kwargs: dict[str, Any]) -> tuple:
    for value in itertools.chain(args, kwargs.values()):
        if hasattr(value, "shape"):
            return tuple(value.shape)
    return ()


def compiled_twin(module: Any, device: str, name: str = "denoiser") -> Any:
    """A copy of `module` sharing its parameters and buffers, compiled: its repeated blocks when the
    model declares them (regional compilation), else its whole forward. Compilation itself happens
    on the first call of each shape (announced by the twin's CompileWatch, `twin._diffgraph_watch`)."""
    import torch

    shared = {id(tensor): tensor for tensor in itertools.chain(module.parameters(), module.buffers())}
    twin = copy.deepcopy(module, memo=shared)  # a new module tree over the same weights
    mode = compile_mode(device)
    if getattr(twin, "_repeated_blocks", None) and hasattr(twin, "compile_repeated_blocks"):
        twin.compile_repeated_blocks(mode=mode, dynamic=False)
    else:  # the forward only, so the watch's hooks around it stay outside the graph
        twin.forward = torch.compile(twin.forward, mode=mode, dynamic=False)
    watch = CompileWatch(name, device)
    twin.register_forward_pre_hook(watch.before, with_kwargs=True)
    twin.register_forward_hook(watch.after, with_kwargs=True)
    twin._diffgraph_watch = watch
    return twin


def denoiser(ctx: Any, module: Any, name: str = "unet") -> Any:
    """The denoiser a sampling loop calls: `module` itself, or with --compile its compiled twin
    (made once per loaded model and kept in the model cache beside it)."""
    if not ctx.options.compile:
        return module
    from .models import model_cache

    if getattr(module, "_diffgraph_offload", "resident") != "resident":  # hooks move its weights: eager
        ctx.stage("eager", f"not compiling the {name}: under --vram-budget it moves between the CPU and the GPU")
        return module
    if adapted(module):  # the twin was made from the plain model: it would sample without the adapter
        ctx.stage("eager", f"not compiling the {name}: a LoRA or IP-Adapter is applied to it for this run")
        return module
    from . import lora  # LoRA layers resting in the module between uses: out before it is copied

    twin = model_cache(ctx).derived(module, "compiled", lambda: compiled_twin(lora.plain(module), ctx.device, name))
    twin._diffgraph_watch.ctx = ctx
    return twin


def adapted(module: Any) -> bool:
    """Whether an adapter is in `module` now: active LoRA layers (peft) or IP-Adapter image projection."""
    from . import lora

    if lora.in_use(module):  # LoRA layers resting between uses (disabled) compute the plain model
        return True
    config = getattr(module, "config", None)
    return getattr(config, "encoder_hid_dim_type", None) == "ip_image_proj"


@contextlib.contextmanager
def modular_denoiser(ctx: Any, pipeline: Any) -> Iterator[None]:
    """With --compile, the modular pipeline's denoiser (`unet` or `transformer`) is its compiled twin
    while the denoise blocks run, and the plain one again afterwards (other runs share the pipeline)."""
    name = "unet" if getattr(pipeline, "unet", None) is not None else "transformer"
    plain = getattr(pipeline, name, None)
    if not ctx.options.compile or plain is None:
        yield
        return
    from .modular import _quiet_diffusers

    twin = denoiser(ctx, plain, name)
    with _quiet_diffusers():
        pipeline.update_components(**{name: twin})
    try:
        yield
    finally:
        with _quiet_diffusers():
            pipeline.update_components(**{name: plain})


# ---------------------------------------------------------------------------------------------
# VRAM budget


@dataclass(frozen=True)
class OffloadPlan:
    """Where each component of a model lives under a VRAM budget (`STRATEGIES`), and why."""

    strategies: dict[str, str]
    reason: str

    def __getitem__(self, component: str) -> str:
        return self.strategies.get(component, "model")


def working_bytes(pixels: int) -> int:
    """Room kept free for the denoiser's activations at a picture of `pixels` pixels."""
    return max(MIN_WORKING_BYTES, WORKING_BYTES_PER_MEGAPIXEL * pixels // (1024 * 1024))


def plan_offload(sizes: dict[str, int], budget: int, working: int, blocks: dict[str, int] | None = None
                 ) -> OffloadPlan:
    """Choose from the components' sizes (bytes, in the run's dtype) how to keep the accelerator's
    peak under `budget` bytes with `working` bytes free for activations.

    - Everything fits at once: every component stays on the GPU.
    - Else each component visits the GPU only while it runs (model offload) if it fits alone;
      text encoders then leave right after encoding;
    - a component that does not fit alone streams its blocks one group at a time (group offload),
      when its largest block (`blocks`, bytes) fits;
    - else leaf module by leaf module (sequential offload), the leanest and slowest.
    """
    blocks = blocks or {}
    room = budget - working
    total = sum(sizes.values())
    if total <= room:
        return OffloadPlan({name: "resident" for name in sizes},
                           f"all {_gib(total)} fit in {_gib(budget)} with {_gib(working)} for activations")
    strategies: dict[str, str] = {}
    for name, size in sizes.items():
        if size <= room:
            strategies[name] = "model"
        elif blocks.get(name, size) <= room:
            strategies[name] = "group"
        else:
            strategies[name] = "sequential"
    return OffloadPlan(strategies, f"{_gib(total)} of weights do not fit in {_gib(budget)} with {_gib(working)} "
                                   "for activations: components visit the GPU in turn")


def needs_vae_tiling(height: int, width: int, element_bytes: int, budget: int, vae_bytes: int) -> bool:
    """Whether decoding a height x width picture at once would pass the budget (then: tiles)."""
    decode = height * width * element_bytes * VAE_DECODE_BYTES_PER_PIXEL_ELEMENT
    return vae_bytes + decode > budget


def _gib(nbytes: int) -> str:
    return f"{nbytes / GIB:.2f} GiB"


def safetensors_bytes(files: list[Path], element_bytes: int) -> int:
    """The bytes these safetensors files' tensors take in a dtype of `element_bytes` (headers only)."""
    from safetensors import safe_open

    total = 0
    for path in files:
        with safe_open(str(path), framework="pt") as handle:
            for key in handle.keys():  # noqa: SIM118 - safe_open is no mapping
                numel = 1
                for n in handle.get_slice(key).get_shape():
                    numel *= n
                total += numel * element_bytes
    return total


def component_sizes(folder: Path, element_bytes: int) -> dict[str, int]:
    """Each weighted component of a diffusers folder (model_index.json) in bytes at the run's dtype,
    read from the safetensors headers; {} for anything else (a lone component, a checkpoint file)."""
    index = folder / "model_index.json"
    if not index.is_file():
        return {}
    sizes = {}
    for name in (n for n in json.loads(index.read_text()) if not n.startswith("_")):
        files = sorted((folder / name).glob("*.safetensors")) if (folder / name).is_dir() else []
        if files:
            sizes[name] = safetensors_bytes(files, element_bytes)
    return sizes


def largest_block_bytes(module: Any) -> int:
    """The largest direct child of the module's ModuleLists (the blocks group offload streams)."""
    import torch

    largest = 0
    for child in module.modules():
        if isinstance(child, torch.nn.ModuleList):
            for block in child:
                largest = max(largest, sum(p.numel() * p.element_size() for p in block.parameters()))
    return largest or sum(p.numel() * p.element_size() for p in module.parameters())


class OffloadGroup:
    """The components of one process under model offload: onloading one sends the others back to the
    CPU first (accelerate's hooks do the moving), so at most one visits the GPU at a time."""

    def __init__(self) -> None:
        self.hooks: list[Any] = []
        self._modules: list[int] = []  # id of each hook's module, to forget evicted ones

    def forget(self, module_ids: set[int]) -> None:
        """Drop the hooks of models the cache let go (so that nothing keeps them alive)."""
        kept = [(m, h) for m, h in zip(self._modules, self.hooks, strict=True) if m not in module_ids]
        self._modules = [m for m, _ in kept]
        self.hooks = [h for _, h in kept]

    def add(self, module: Any, device: str, leave_after: bool) -> None:
        from accelerate import cpu_offload_with_hook

        module, hook = cpu_offload_with_hook(module, execution_device=device)
        group = self
        self._modules.append(id(module))

        def others_leave(_module: Any, _args: Any) -> None:
            for other in group.hooks:
                if other is not hook:
                    other.offload()

        module.register_forward_pre_hook(others_leave)
        if leave_after:  # text encoders: back to the CPU as soon as the prompt is encoded
            module.register_forward_hook(lambda _m, _a, _o: hook.offload())
        self.hooks.append(hook)


def place_under_budget(module: Any, strategy: str, device: str, group: OffloadGroup, kind: str) -> Any:
    """Put `module` where `strategy` says (see plan_offload), with diffusers'/accelerate's hooks."""
    import torch

    module._diffgraph_offload = strategy
    if strategy == "resident":
        return module.to(device)
    if strategy == "model":
        module.to("cpu")
        group.add(module, device, leave_after=kind in TEXT_ENCODER_KINDS)
        return module
    if strategy == "group":
        module.to("cpu")
        if hasattr(module, "enable_group_offload"):  # diffusers models
            module.enable_group_offload(torch.device(device), offload_type="block_level", num_blocks_per_group=1)
        else:
            from diffusers.hooks import apply_group_offloading

            apply_group_offloading(module, torch.device(device), offload_type="block_level", num_blocks_per_group=1)
        return module
    from accelerate import cpu_offload

    module.to("cpu")
    cpu_offload(module, execution_device=torch.device(device))
    return module


def vae_tiling(ctx: Any, vae: Any, height: int, width: int) -> None:
    """Under a VRAM budget on CUDA, decode in tiles when the whole picture would not fit; else whole."""
    budget = ctx.options.vram_budget_gb
    if budget is None or not is_cuda(ctx.device) or not hasattr(vae, "enable_tiling"):
        return
    element = next(vae.parameters()).element_size()
    vae_bytes = sum(p.numel() * p.element_size() for p in vae.parameters())
    if needs_vae_tiling(height, width, element, int(budget * GIB), vae_bytes):
        vae.enable_tiling()
    else:
        vae.disable_tiling()

