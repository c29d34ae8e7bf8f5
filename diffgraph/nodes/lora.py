"""LoRAs: the LoadLoRA node, and how a LoRA is applied to a shared model for the length of one node.

A loaded model is shared by every run in the process (the model cache), so a LoRA never changes
it for good. LoadLoRA only checks the file and returns the model references it was given with
one more `(file, content digest, strength)` entry (`ModelRef.loras`); several LoadLoRA in a row
stack their entries. The nodes that compute with a model (TextEncode, SampleLoop, and the
modular families' paths) call `applied(...)` around their work: it loads each LoRA into the live
modules with diffusers' own loaders (`lora_state_dict` converts kohya and the other trainer
formats; `load_lora_into_unet` / `load_lora_into_transformer` inject the layers), sets their
strengths as `set_adapters` does, and disables the layers when the node is done, even when it
fails. The layers stay in the module between uses (keyed by the files' digests, in order), so the
next node with the same files only sets strengths; disabled peft layers call the original layer
alone, so the model computes exactly the plain model's numbers meanwhile. What needs the plain
structure (fastpath's compiled twin) takes them out with `plain(module)`; a failed load takes every
layer out. Cache keys follow the file's content (a digest) and the strengths, so nothing stale is served.

Text encoders: diffusers loads their LoRAs through transformers' PEFT integration, which (in
transformers 5.x) insists on a peft release newer than PyPI offers here; the same steps run on
peft's own `inject_adapter_in_model` / `set_peft_model_state_dict` instead (`_load_text_encoder`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import json
import logging
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from diffgraph.engine import FileAccess, Input, Node, NodeError, Output, Param, node
from diffgraph.engine.files import describe_os_error, digest_regular, open_regular, read_regular

from . import families, models, modular
from .models import ModelRef
from .types import TextEncoder, UNet

#: the largest LoRA file read (Flux and SDXL LoRAs reach a few GB at high ranks)
MAX_LORA_BYTES = 8 * 1024 * 1024 * 1024
#: a LoRA's safetensors header larger than this is not one we read (real ones are well under 10 MB)
MAX_HEADER_BYTES = 64 * 1024 * 1024
#: strengths beyond ComfyUI's everyday range give noise; -10..10 still allows inverted and boosted LoRAs
STRENGTH_LIMIT = 10.0
#: the family -> diffusers' LoRA loader mixin (its classmethods read, convert and inject LoRAs);
#: a family missing here is refused with a clear error (a new family's loader, untested in diffgraph)
LOADERS = {"sd": "StableDiffusionLoraLoaderMixin", "sdxl": "StableDiffusionXLLoraLoaderMixin",
           "sd3": "SD3LoraLoaderMixin", "flux": "FluxLoraLoaderMixin", "zimage": "ZImageLoraLoaderMixin",
           "qwenimage": "QwenImageLoraLoaderMixin", "flux2": "Flux2LoraLoaderMixin"}
#: what a LoRA's tensor names say about the model it was trained for (original and diffusers layouts)
_UNET_MARKERS = ("unet.", "lora_unet_down_blocks", "lora_unet_up_blocks", "lora_unet_mid_block",
                 "lora_unet_input_blocks", "lora_unet_output_blocks", "lora_unet_middle_block")
_TRANSFORMER_MARKERS = ("transformer.", "lora_transformer_", "lora_unet_double_blocks", "lora_unet_single_blocks",
                        "lora_unet_joint_blocks", "diffusion_model.double_blocks", "diffusion_model.joint_blocks")
_TWO_TEXT_ENCODER_MARKERS = ("text_encoder_2.", "lora_te1_", "lora_te2_")
ADAPTER_PREFIX = "diffgraph_lora_"
#: the names of a LoRA layer's first (down) matrix, in the layouts diffusers' converters produce
_DOWN_WEIGHTS = (".lora_A.weight", ".lora.down.weight", ".lora_down.weight")

LORA_DOC = ("a LoRA .safetensors file (diffusers/peft, kohya-ss and the other trainer formats diffusers reads); "
            "on the server, a file under its model folders; " + models.HUB_FILE_DOC)


@node("LoadLoRA", category="loaders")
class LoadLoRA(Node):
    """Apply a LoRA to a model: `unet` (the denoiser) at `strength_model` and `text_encoder` at
    `strength_text` (SD 1.x/2.x, SDXL, SD3, Flux.1; Z-Image, Qwen-Image and Flux.2 [klein] take LoRAs
    on the denoiser only). Chain several to stack them. The loaded model's pictures never change:
    the LoRA is active while each node that uses these outputs runs; between uses its layers stay
    loaded, switched off, until another set of LoRAs is used."""

    unet: ModelRef = Input(UNet, doc="the model's denoiser (LoadPipeline, or another LoadLoRA)")
    text_encoder: ModelRef | None = Input(TextEncoder, optional=True,
                                          doc="the model's text encoder(s); leave unlinked to patch the denoiser only")
    lora: str = Param("", widget="model:lora", doc=LORA_DOC + "; empty: no LoRA (the outputs are the inputs)")
    strength_model: float = Param(1.0, ge=-STRENGTH_LIMIT, le=STRENGTH_LIMIT, step=0.05,
                                  doc="how strongly the LoRA changes the denoiser (0 = not at all)")
    strength_text: float = Param(1.0, ge=-STRENGTH_LIMIT, le=STRENGTH_LIMIT, step=0.05,
                                 doc="how strongly the LoRA changes the text encoder(s)")
    outputs = {"unet": Output(UNet, doc="the model with the LoRA applied while a node computes with it"),
               "text_encoder": Output(TextEncoder, doc="the text encoder(s) with the LoRA applied likewise")}

    @classmethod
    def fingerprint(cls, params: dict[str, Any], access: FileAccess) -> str | None:
        text = params.get("lora")
        if not isinstance(text, str) or not text.strip():
            return None
        if models.hub_file(text) is not None and models.local_path(text, access) is None:
            # a repo file: the cached copy's digest, else (downloads allowed) the run fetches it; validating
            # never downloads. Not in the cache of a server without downloads: a validation error.
            if models.cached_hub_file(text, "lora", access) is None:
                return f"hub:{text.strip()}"
            path = resolve_lora(text, dataclasses.replace(access, allow_downloads=False))
        else:
            path = resolve_lora(text, access)  # a path the policy refuses is a validation error
        try:
            return digest_regular(path, MAX_LORA_BYTES)
        except OSError:
            return "unreadable"  # the run reports why; a failed node is never cached

    @classmethod
    def check_links(cls, params, linked, access):
        text = params.get("lora")
        if not isinstance(text, str) or not text.strip():
            return []
        try:
            lookup = dataclasses.replace(access, allow_downloads=False) if models.can_download(access) else access
            names = tensor_names(resolve_lora(text, lookup))
        except NodeError as exc:
            if models.hub_file(text) is not None and models.can_download(access):
                return []  # a repo file not fetched yet: the run fetches and checks it
            return [("lora", str(exc))]
        loader = models.walk_upstream(linked.get("unet"), "unet")  # through stacked LoRAs and IP-Adapters
        family = modular.family_of_loader(loader, access) if loader is not None else None
        problem = family_problem(names, family) if family is not None else None
        return [("lora", problem)] if problem else []

    def run(self, ctx):
        if not self.lora.strip():
            return {"unet": self.unet, "text_encoder": self.text_encoder}
        family = modular.family_of(self.unet)
        _loader_name(family, "unet")  # a family without a LoRA loader is refused before the file is read
        path = resolve_lora(self.lora, ctx.access)
        problem = family_problem(tensor_names(path), family)
        if problem:
            raise NodeError(problem, "lora")
        digest = _digest(path)
        unet = _with_lora(self.unet, path, digest, self.strength_model)
        text_encoder = None
        if self.text_encoder is not None:
            text_encoder = _with_lora(self.text_encoder, path, digest, self.strength_text)
        # loaded into the live model here (shapes, layer names), so that a LoRA that does not fit fails
        # here, naming `lora`, rather than in every node downstream; its layers stay, off, for those nodes
        reached = [part for ref in (unet, text_encoder) if ref is not None for part in try_on(ctx, ref, "lora")]
        if not reached:
            raise NodeError(f"the LoRA {path.name} has no weights for any part of this model "
                            f"({'denoiser or text encoder' if text_encoder else 'denoiser; link text_encoder too?'})",
                            "lora")
        return {"unet": unet, "text_encoder": text_encoder}


def _with_lora(ref: models.ModelRef, path: Path, digest: str, strength: float) -> models.ModelRef:
    return models.ModelRef(**{**ref.to_json(), "loras": (*ref.loras, (str(path), digest, float(strength)))})


# ---------------------------------------------------------------------------------------------
# the file


def resolve_lora(text: str, access: FileAccess) -> Path:
    """The LoRA file `text` names: any local path on the CLI, a file under the model roots on the server,
    or a file in a Hugging Face repo (`org/name/path/in/repo.safetensors`: diffusers' repo id + weight_name)
    from the hub cache, fetched only where `access` allows downloads."""
    path = models.resolve_file(text, "lora", access) if isinstance(text, str) else None
    if path is None:
        if isinstance(text, str) and text.strip() and not access.permissive:
            access.model_path(text, "lora")  # the policy's refusal, which says nothing about the path
            raise NodeError(f"{text!r} is not a LoRA file this server knows: name a .safetensors file under its "
                            "model folders", "lora")
        raise NodeError(f"no LoRA file {text!r}: give the path of a LoRA .safetensors file", "lora")
    if not path.is_file():
        raise NodeError(f"{path.name} is a folder; name the LoRA's .safetensors file inside it", "lora")
    kind = models.sniff_format(path)
    if kind == "pickle":
        raise NodeError(f"{path.name} is a pickle file, not safetensors: pickle files can run arbitrary code when "
                        "loaded; convert the LoRA to .safetensors", "lora")
    if kind != "safetensors":
        raise NodeError(f"{path.name} is not a .safetensors file (judged by its content)", "lora")
    return path


def tensor_names(path: Path) -> list[str]:
    """The tensor names in a LoRA file's safetensors header (a bounded read, never the weights)."""
    try:
        with open_regular(path) as handle:
            (length,) = struct.unpack("<Q", handle.read(8))
            if length > MAX_HEADER_BYTES:
                raise NodeError(f"{path.name}: its safetensors header is implausibly large ({length} bytes)", "lora")
            header = json.loads(handle.read(length))
    except OSError as exc:
        raise NodeError(f"cannot read {path.name}: {describe_os_error(exc)}", "lora") from None
    except (ValueError, struct.error) as exc:
        raise NodeError(f"{path.name} is a damaged safetensors file ({exc})", "lora") from None
    if not isinstance(header, dict):
        raise NodeError(f"{path.name} is a damaged safetensors file", "lora")
    return [name for name in header if name != "__metadata__"]


def family_problem(names: list[str], family: families.Family) -> str | None:
    """Why a LoRA with these tensor names cannot fit a `family` model, when the names tell (they do
    not tell everything: SD 1.x against 2.x, or another base size, shows when the LoRA is tried)."""
    def first(markers: tuple[str, ...]) -> str | None:
        return next((name for name in names if name.startswith(markers)), None)

    unet, transformer, two_encoders = first(_UNET_MARKERS), first(_TRANSFORMER_MARKERS), first(_TWO_TEXT_ENCODER_MARKERS)
    denoiser_is_unet = family.denoiser == "unet"
    if unet and not transformer and not denoiser_is_unet:
        made_for, example = "a UNet model (Stable Diffusion 1.x/2.x or SDXL)", unet
    elif transformer and not unet and denoiser_is_unet:
        made_for, example = "a transformer model (SD3, Flux...)", transformer
    elif two_encoders and family.name == "sd":
        made_for, example = "a model with two text encoders (SDXL or SD3)", two_encoders
    else:
        return None
    return (f"this LoRA was made for {made_for} (its tensor names start like {example!r}), but the model it is "
            f"applied to is {family.title}: pick a LoRA trained for {family.title}")


def _digest(path: Path) -> str:
    try:
        return digest_regular(path, MAX_LORA_BYTES)
    except OSError as exc:
        raise NodeError(f"cannot read {path.name}: {describe_os_error(exc)}", "lora") from None


def _read(path_text: str, digest: str, field: str) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The LoRA's tensors and diffusers' adapter metadata (rank, alpha), read once into memory and
    checked against the digest LoadLoRA took (the file must not change under a cached key)."""
    import hashlib

    from diffusers.loaders.lora_base import LORA_ADAPTER_METADATA_KEY
    from safetensors.torch import load

    path = Path(path_text)
    try:
        data = read_regular(path, MAX_LORA_BYTES)
    except OSError as exc:
        raise NodeError(f"cannot read the LoRA {path.name}: {describe_os_error(exc)}", field) from None
    if hashlib.blake2b(data, digest_size=20).hexdigest() != digest:
        raise NodeError(f"the LoRA {path.name} changed since LoadLoRA read it: run the workflow again", field)
    try:
        tensors = load(data)
        (length,) = struct.unpack("<Q", data[:8])
        header_metadata = json.loads(data[8:8 + length]).get("__metadata__") or {}
        raw = header_metadata.get(LORA_ADAPTER_METADATA_KEY)
        metadata = json.loads(raw) if raw else None
    except Exception as exc:  # noqa: BLE001 - a damaged file is the user's input
        raise NodeError(f"{path.name} is a damaged safetensors file ({exc})", field) from None
    return tensors, metadata


# ---------------------------------------------------------------------------------------------
# applying LoRAs for the length of a node


def _loader_name(family: families.Family, field: str) -> str:
    """The name of `family`'s LoRA loader mixin in diffusers.loaders; a NodeError on `field` for a family without one."""
    if family.name not in LOADERS:
        raise NodeError(f"diffgraph applies LoRAs to {', '.join(families.get(n).title for n in LOADERS)} models; "
                        f"this model is {family.title}", field)
    return LOADERS[family.name]


def _mixin(family: families.Family, field: str) -> Any:
    import diffusers.loaders

    return getattr(diffusers.loaders, _loader_name(family, field))


def lora_modules(ref: Any, live: Any) -> dict[str, Any]:
    """The live modules a ref's LoRAs patch, by the component name diffusers' loaders use: the
    denoiser for a unet ref, the (CLIP) text encoders for a text_encoder ref. `live` is what the
    model cache returns for the ref (a module, a TextEncoderPair, or a family's ModularPipeline)."""
    family = modular.family_of(ref)
    if ref.kind == "unet":
        return {family.denoiser: live}
    if not family.modular:
        return {"text_encoder": getattr(live, "model", live)}
    loadable = _mixin(family, "text_encoder")._lora_loadable_modules
    return {name: getattr(live, name) for name in loadable
            if name.startswith("text_encoder") and getattr(live, name, None) is not None}


@dataclasses.dataclass
class _Resident:
    """The LoRA layers a live module keeps between the nodes that use them (its `RESIDENT` attribute)."""

    digests: tuple[str, ...]  #: the files loaded, in order: adapter i (`ADAPTER_PREFIX` + i) is file i
    reached: dict[str, int]  #: the adapters that placed layers in this module -> their file's index
    in_use: bool = False  #: a node computes with them now (inside `applied`)


#: the attribute of a live module that holds its `_Resident` layers
RESIDENT = "_diffgraph_loras"


@contextlib.contextmanager
def applied(ctx: Any, ref: Any, live: Any = None) -> Iterator[None]:
    """While inside, the LoRAs `ref` carries are active in the live model at their strengths. Their
    layers stay in the model afterwards, disabled (peft's disabled layers call the original layer
    alone, so the model computes exactly what it did without them), and the next use of the same
    files (or of the first few of them) only sets the strengths again; other files replace them. A
    load that fails takes every LoRA layer out of the modules it was loading into. `live`: what the
    model cache holds for `ref` (loaded here when None)."""
    entries = list(getattr(ref, "loras", ()))
    if not any(strength != 0.0 for _, _, strength in entries):  # 0: the model as it is
        yield
        return
    live = models.load(ctx, ref, ref.kind) if live is None else live
    modules = lora_modules(ref, live)
    reached = _resident(ref, modules, entries, ref.kind, _unet_config(ref, live), models.model_cache(ctx))
    try:
        for component, module in modules.items():
            active = sorted((index, name) for name, index in reached[component].items() if entries[index][2] != 0.0)
            _use(module, [(name, entries[index][2]) for index, name in active])  # in stacking order
        yield
    finally:
        for module in modules.values():
            _rest(module)


def try_on(ctx: Any, ref: Any, field: str) -> list[str]:
    """Load the LoRAs `ref` carries into the live model (kept there, disabled, for the nodes that use
    them): the components the last one reached (none: its weights fit nothing there). A LoRA that does
    not fit is a NodeError naming `field`, and leaves no LoRA layer in the modules it was loaded into."""
    live = models.load(ctx, ref, field)
    modules = lora_modules(ref, live)
    reached = _resident(ref, modules, list(ref.loras), field, _unet_config(ref, live), models.model_cache(ctx))
    last = f"{ADAPTER_PREFIX}{len(ref.loras) - 1}"
    return [component for component, names in reached.items() if last in names]


def plain(module: Any) -> Any:
    """`module` with its resident LoRA layers taken out (its own structure and weights, as loaded):
    for what copies or inspects the module's structure (fastpath's compiled twin). Never while a node
    computes with them (`in_use`)."""
    state = getattr(module, RESIDENT, None)
    if state is not None and state.in_use:
        raise RuntimeError("plain() on a module whose LoRA layers a node is computing with")
    _unload(module)  # also the layers of a LoRA whose loading failed half-way
    if state is not None:
        delattr(module, RESIDENT)
    return module


def in_use(module: Any) -> bool:
    """Whether LoRA layers in `module` are active now (resident layers resting between uses are not)."""
    if not getattr(module, "peft_config", None):
        return False
    state = getattr(module, RESIDENT, None)
    return state is None or state.in_use


def _resident(ref: Any, modules: dict[str, Any], entries: list, field: str, unet_config: Any,
              cache: models.ModelCache) -> dict[str, dict[str, int]]:
    """Make `modules` hold the layers of `entries`' files as adapters 0..n-1, disabled: nothing to load
    when they hold them already (perhaps followed by others, which stay off), the missing ones when
    they hold the first few, else everything out and all of them loaded. Per component: the adapters
    of `entries` that reached it -> their file's index."""
    digests = tuple(digest for _, digest, _ in entries)

    def files_held(module: Any) -> int:  # how many of `digests`, from the first, it holds; -1: others
        state = getattr(module, RESIDENT, None)
        if state is None:
            return -1 if getattr(module, "peft_config", None) else 0
        common = min(len(state.digests), len(digests))
        return common if state.digests[:common] == digests[:common] else -1

    def wanted(module: Any) -> dict[str, int]:
        state = getattr(module, RESIDENT, None)
        return {name: index for name, index in (state.reached if state else {}).items() if index < len(digests)}

    held = min((files_held(module) for module in modules.values()), default=len(digests))
    if held == len(digests):
        return {component: wanted(module) for component, module in modules.items()}
    if held > 0 and any(len(getattr(module, RESIDENT).digests) != held for module in modules.values()):
        held = -1  # the modules were loaded apart (never so today): start again
    if held <= 0:
        held = 0
        for module in modules.values():
            plain(module)
    reached = {component: wanted(module) for component, module in modules.items()}
    try:
        for component, names in _activate(ref, modules, entries, held, field, unet_config).items():
            reached[component].update(names)
    except BaseException:  # a failed (or interrupted) load: no half-loaded LoRA stays in the model
        for module in modules.values():
            plain(module)
        raise
    finally:
        for module in modules.values():  # the kept layers count in the model cache's budget
            cache.recount(module)
    for component, module in modules.items():
        setattr(module, RESIDENT, _Resident(digests, reached[component]))
        _rest(module)
    return reached


def _use(module: Any, pairs: list[tuple[str, float]]) -> None:
    """The resident adapters `pairs` names active at their strengths, the others off."""
    import torch
    from diffusers.utils.peft_utils import set_adapter_layers

    getattr(module, RESIDENT).in_use = bool(pairs)
    if pairs:
        with torch.inference_mode(False):  # peft sets requires_grad on the layers it activates
            _set_strengths(module, [name for name, _ in pairs], [strength for _, strength in pairs])
            set_adapter_layers(module, enabled=True)


def _rest(module: Any) -> None:
    """Every resident LoRA layer of `module` disabled: peft's disabled layer returns its base layer's output."""
    import torch
    from diffusers.utils.peft_utils import set_adapter_layers

    state = getattr(module, RESIDENT, None)
    if state is not None:
        state.in_use = False
    if getattr(module, "peft_config", None):
        with torch.inference_mode(False):
            set_adapter_layers(module, enabled=False)


def _unet_config(ref: Any, live: Any) -> Any:
    """SDXL's loader maps original (SGM) UNet block names with the UNet's config, which its
    `load_lora_weights` passes; the family's pipeline holds the UNet also for a text-encoder node."""
    if modular.family_of(ref).name != "sdxl":
        return None
    return getattr(live if ref.kind == "unet" else getattr(live, "unet", None), "config", None)


def _activate(ref: Any, modules: dict[str, Any], entries: list, start: int, field: str,
              unet_config: Any = None) -> dict[str, dict[str, int]]:
    """Load `entries[start:]` into `modules` as adapters `ADAPTER_PREFIX` + their index: per component,
    the adapters that reached it -> their index."""
    import torch

    family = modular.family_of(ref)
    mixin = _mixin(family, field)
    reached: dict[str, dict[str, int]] = {}
    # LoRA layers are made outside the node's inference mode
    with torch.inference_mode(False), models.libraries_quiet(), _loader_errors_quiet():
        for index in range(start, len(entries)):
            path, digest, _ = entries[index]
            tensors, metadata = _read(path, digest, field)
            name = f"{ADAPTER_PREFIX}{index}"
            loaded = _load(mixin, modules, tensors, metadata, name, Path(path).name, field, unet_config, family.title)
            for component in loaded:
                reached.setdefault(component, {})[name] = index
    return reached


@contextlib.contextmanager
def _loader_errors_quiet() -> Iterator[None]:
    """diffusers logs a failed LoRA load as an error before raising it; the raise becomes our NodeError."""
    logger = logging.getLogger("diffusers.loaders.peft")
    previous = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(previous)


def _load(mixin: Any, modules: dict[str, Any], tensors: dict[str, Any], metadata: Any, name: str,
          file_name: str, field: str, unet_config: Any = None, title: str = "") -> list[str]:
    """Load one LoRA into `modules` as adapter `name`; the components it reached."""
    keyword: dict[str, Any] = {"unet_config": unet_config} if unet_config is not None else {}
    if "return_alphas" in inspect.signature(mixin.lora_state_dict).parameters:
        keyword["return_alphas"] = True
    try:
        result = mixin.lora_state_dict(dict(tensors), return_lora_metadata=True, **keyword)
    except Exception as exc:  # noqa: BLE001 - diffusers' converters explain what they could not read
        raise NodeError(f"diffusers cannot read {file_name} as a LoRA: {_reason(exc)}", field) from None
    state_dict, alphas = result[0], (result[1] if len(result) == 3 else None)
    if not state_dict or not all("lora" in key for key in state_dict if not key.endswith(".alpha")):
        raise NodeError(f"{file_name} holds no LoRA weights diffusers can read (LoRA tensor names contain "
                        "'lora': lora_A/lora_B, lora_down/lora_up)", field)
    if metadata is not None and alphas:
        alphas = None  # diffusers' files carry alphas in their metadata; both at once is refused
    reached = []
    for component, module in modules.items():
        try:
            if component in ("unet", "transformer"):
                _load_denoiser(mixin, component, module, state_dict, alphas, metadata, name)
            else:
                _load_text_encoder(module, component, state_dict, alphas, metadata, name)
        except Exception as exc:  # noqa: BLE001 - shapes or names that do not fit this model
            reason = str(exc) if isinstance(exc, NodeError) else _reason(exc)
            raise NodeError(f"the LoRA {file_name} does not fit this model's {component} ({reason}): it was "
                            f"probably trained for another model or base size; pick a LoRA trained for this "
                            f"{title} model's base", field) from None
        if name in (getattr(module, "peft_config", None) or {}):
            reached.append(component)
    return reached


def _load_denoiser(mixin: Any, component: str, module: Any, state_dict: dict, alphas: Any, metadata: Any,
                   name: str) -> None:
    if component == "unet":
        mixin.load_lora_into_unet(state_dict, alphas, unet=module, adapter_name=name, metadata=metadata)
    else:
        keywords = {"network_alphas": alphas} if "network_alphas" in inspect.signature(
            mixin.load_lora_into_transformer).parameters else {}
        mixin.load_lora_into_transformer(state_dict, transformer=module, adapter_name=name, metadata=metadata,
                                         **keywords)
    # diffusers only warns about LoRA layers that found no place in the model: a LoRA applied in part
    # would be a silently different picture
    wanted = {key.rsplit(".", 2)[0] for key in state_dict
              if key.startswith(f"{component}.") and key.endswith(_DOWN_WEIGHTS)}
    placed = sum(1 for layer in module.modules() if name in (getattr(layer, "lora_A", None) or {}))
    if wanted and placed < len(wanted):
        raise NodeError(f"only {placed} of its {len(wanted)} {component} layers have a place in this model")


def _load_text_encoder(text_encoder: Any, prefix: str, state_dict: dict, alphas: Any, metadata: Any,
                       name: str) -> None:
    """diffusers' `_load_lora_into_text_encoder`, with peft's injection in place of transformers'
    `load_adapter` (which refuses the peft releases on PyPI today): the same key conversions, the same
    LoraConfig (from the file's metadata, else from ranks and alphas as diffusers derives them)."""
    from diffusers.utils import convert_state_dict_to_diffusers, convert_state_dict_to_peft
    from diffusers.utils.peft_utils import get_peft_kwargs
    from peft import LoraConfig, inject_adapter_in_model, set_peft_model_state_dict

    part = {key.removeprefix(f"{prefix}."): value for key, value in state_dict.items() if key.startswith(f"{prefix}.")}
    if not part:
        return
    part = convert_state_dict_to_peft(convert_state_dict_to_diffusers(part))
    if not hasattr(text_encoder, "text_model"):  # CLIPTextModel is flattened in transformers 5
        part = {key.removeprefix("text_model."): value for key, value in part.items()}
    if metadata is not None:
        config = {key.removeprefix(f"{prefix}."): value for key, value in metadata.items() if key.startswith(f"{prefix}.")}
    else:
        ranks = {f"{module}.lora_B.weight": part[f"{module}.lora_B.weight"].shape[1]
                 for module, _ in text_encoder.named_modules() if f"{module}.lora_B.weight" in part}
        text_alphas = None
        if alphas is not None:
            text_alphas = {key.removeprefix(f"{prefix}."): value for key, value in alphas.items()
                           if key.split(".")[0] == prefix}
        config = get_peft_kwargs(ranks, network_alpha_dict=text_alphas, peft_state_dict=part, is_unet=False)
    inject_adapter_in_model(LoraConfig(**config), text_encoder, adapter_name=name)
    result = set_peft_model_state_dict(text_encoder, part, adapter_name=name)
    unexpected = [key for key in getattr(result, "unexpected_keys", []) if "lora_" in key]
    if unexpected:
        raise NodeError(f"{len(unexpected)} of its {prefix} weights have no place in this model "
                        f"(such as {unexpected[0]!r})")
    text_encoder.to(device=text_encoder.device, dtype=text_encoder.dtype)


def _set_strengths(module: Any, names: list[str], strengths: list[float]) -> None:
    """Activate the adapters at their strengths, as a pipeline's `set_adapters` does per component."""
    from diffusers.loaders.lora_base import set_adapters_for_text_encoder
    from diffusers.loaders.peft import PeftAdapterMixin

    if isinstance(module, PeftAdapterMixin):  # diffusers' models; transformers' text encoders are not
        module.set_adapters(names, strengths)
    else:
        set_adapters_for_text_encoder(names, module, strengths)


def _unload(module: Any) -> None:
    """Every LoRA layer out: the module holds its original layers (and weights) again."""
    from diffusers.loaders.peft import PeftAdapterMixin
    from diffusers.utils import recurse_remove_peft_layers

    if isinstance(module, PeftAdapterMixin) and getattr(module, "peft_config", None):
        module.unload_lora()
        return
    recurse_remove_peft_layers(module)  # also the layers of a LoRA whose loading failed half-way
    if getattr(module, "peft_config", None) is not None:
        del module.peft_config
    if hasattr(module, "_hf_peft_config_loaded"):
        module._hf_peft_config_loaded = False


def _reason(exc: Exception) -> str:
    text = " ".join(str(exc).split())
    return (text[:300] + "...") if len(text) > 300 else (text or type(exc).__name__)


NODES = [LoadLoRA]
