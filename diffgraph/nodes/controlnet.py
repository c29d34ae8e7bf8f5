"""ControlNet: LoadControlNet, ApplyControlNet and the Canny preprocessor.

A ControlNet travels as a reference (`CONTROL_NET`, a `ModelRef` of kind "controlnet") and loads
lazily through the model cache, like every model. ApplyControlNet returns its conditioning with one
more *control* appended: the control picture, strength / start / end, and the ControlNet's ref,
all kept as tensors of the CONDITIONING dict (`control.<i>.image`, `control.<i>.settings`,
`control.<i>.ref`: the ref's JSON as bytes), so the value stays one safetensors file in the disk
cache. Several ApplyControlNet nodes in a chain are a multi-ControlNet.

SampleLoop applies the controls of its `positive` conditioning to both halves of the guidance
batch, as diffusers' ControlNet pipelines do (guess mode off):
  - Stable Diffusion 1.x/2.x: diffgraph's own loop calls `LoopControls.residuals` each step, which
    runs diffusers' `ControlNetModel`s as StableDiffusionControlNetPipeline does and hands the
    summed residuals to the UNet;
  - SDXL: the family's modular denoise blocks run their own ControlNet steps (`modular_inputs`),
    the guider's passes batched into one ControlNet call and one UNet call per step (modular.py).
`start` and `end` are fractions of the steps that run (diffusers' `control_guidance_start/end`).
A control picture of another size than the latent's is resized to it as diffusers resizes a PIL
picture (8-bit, Lanczos); one of the same size is used as it is.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from diffgraph.engine import FileAccess, Input, Node, NodeError, Output, Param, node

from . import models, modular
from .loaders import PICKLE_DOC
from .models import ModelRef
from .types import Conditioning, ConditioningValue, Image, ModelType

if TYPE_CHECKING:
    from torch import Tensor

#: diffusers classes a ControlNet folder may hold (ControlNet-Union: SDXL only)
CONTROLNET_CLASSES = ("ControlNetModel", "ControlNetUnionModel")
MODEL_DOC = ("a diffusers ControlNet folder (config.json + weights), a ControlNet pipeline folder (its "
             "controlnet/), a Hugging Face repo id of either (from the hub cache, HF_HUB_OFFLINE honoured), or a "
             "single-file .safetensors ControlNet in the original layout (then set config)")
CONFIG_DOC = ("single .safetensors files only: a diffusers ControlNet folder whose config.json describes it "
              "(empty: the config diffusers guesses from the file, if the Hugging Face cache holds it)")
#: the conditioning entries of control i
_IMAGE, _SETTINGS, _REF = "control.{}.image", "control.{}.settings", "control.{}.ref"


class ControlNetType(ModelType):
    """A reference to a ControlNet (`ModelRef` of kind "controlnet")."""

    name = "CONTROL_NET"
    colour = "#00b4d8"
    kind = "controlnet"


# ---------------------------------------------------------------------------------------------
# loading


def _controlnet_fingerprint(cls, params: dict[str, Any], access: FileAccess) -> str | None:
    parts = [models.local_fingerprint(str(params.get(name) or ""), access, name) for name in ("model", "config")]
    return None if parts == [None, None] else "|".join(part or "" for part in parts)


def _folder_subfolder(path: Path) -> str:
    """'' for a ControlNet folder, 'controlnet' for a ControlNet pipeline folder; else a NodeError
    naming what the folder holds."""
    for subfolder in ("", "controlnet"):
        if subfolder and not (path / "model_index.json").is_file():
            continue
        found = models.component_class(path, subfolder)
        if found is not None and found[1] in CONTROLNET_CLASSES:
            return subfolder
    found = models.component_class(path, "")
    if (path / "model_index.json").is_file():
        what = "a diffusers pipeline without a controlnet/"
    else:
        what = f"a {found[1]}" if found else "no config.json"
    raise NodeError(f"{path} is not a ControlNet: it holds {what}; expected one of {', '.join(CONTROLNET_CLASSES)}",
                    "model")


def load_controlnet(ctx: Any, ref: Any, field: str) -> Any:
    """The live ControlNet of a ref, through the model cache: folders as every model part, single
    files converted by diffusers' `from_single_file` with the config of `ref.config`."""
    if not isinstance(ref, models.ModelRef) or ref.kind != "controlnet":
        raise NodeError("a ControlNet (LoadControlNet) is linked here, not this value", field)
    cache = models.model_cache(ctx)
    if not ref.single_file:
        return cache.load(ref, ctx.device, ctx.dtype, field)
    key = (ref.kind, ref.path, "", ref.revision, ref.config, ref.fingerprint, ctx.device, ctx.dtype)
    return cache.get_or_load(key, lambda: _load_single_file(ref, models.torch_dtype(ctx), ctx.device, field))


def _load_single_file(ref: Any, dtype: Any, device: str, field: str) -> Any:
    from diffusers import ControlNetModel

    models.check_checkpoint_file(Path(ref.path), ref.allow_pickle, field)
    # without `config`, diffusers guesses the model's config repo and reads it from the Hugging Face cache only
    where = f"with the config of {ref.config}" if ref.config else "(set config to a diffusers ControlNet folder " \
        "describing it: diffusers could not find the config it guessed in the Hugging Face cache)"
    with models._loading(f"{Path(ref.path).name} as a ControlNet {where}", field):
        model = ControlNetModel.from_single_file(ref.path, config=ref.config or None, local_files_only=True,
                                                 **models._diffusers_dtype(dtype))
    return models._placed(model, device, dtype)


@node("LoadControlNet", category="loaders")
class LoadControlNet(Node):
    """Load a ControlNet (diffusers' ControlNetModel, or ControlNetUnionModel for SDXL), for
    ApplyControlNet. It must be trained for the model it guides (same family and text width)."""

    model: str = Param(widget="model:controlnet", doc=MODEL_DOC)
    config: str = Param("", doc=CONFIG_DOC)
    allow_pickle: bool = Param(False, doc=PICKLE_DOC)
    outputs = {"control_net": Output(ControlNetType)}

    fingerprint = classmethod(_controlnet_fingerprint)

    def run(self, ctx):
        hub_file = models.resolve_file(self.model, "model", ctx.access) if models.hub_file(self.model) else None
        path = hub_file or models.resolve_model(self.model, "", field="model", access=ctx.access,
                                                hub_patterns=models.CONTROLNET_HUB_PATTERNS)
        config = ""
        if path.is_file():
            models.check_checkpoint_file(path, self.allow_pickle, "model")
            if self.config.strip():
                folder = models.resolve_model(self.config, "", field="config", access=ctx.access)
                found = models.component_class(folder, "")
                if found is None or found[1] not in CONTROLNET_CLASSES:
                    raise NodeError(f"{folder} is not a ControlNet folder ({found[1] if found else 'no config.json'})",
                                    "config")
                config = str(folder)
            subfolder = ""
        else:
            subfolder = _folder_subfolder(path)
        ref = models.ModelRef(kind="controlnet", path=str(path), subfolder=subfolder, config=config,
                              allow_pickle=self.allow_pickle, fingerprint=models.local_fingerprint(str(path)) or "")
        load_controlnet(ctx, ref, "model")
        return {"control_net": ref}


# ---------------------------------------------------------------------------------------------
# ApplyControlNet: controls carried by the conditioning


@dataclass
class Control:
    ref: Any  # models.ModelRef
    image: Any  # [B, 3, H, W] in [0, 1]
    strength: float
    start: float
    end: float
    union_mode: int = -1  # ControlNet-Union: the control type

    def same_as(self, other: Control) -> bool:
        import torch

        return ((self.ref, self.strength, self.start, self.end, self.union_mode)
                == (other.ref, other.strength, other.start, other.end, other.union_mode) and self.image.shape == other.image.shape and bool(torch.equal(self.image, other.image)))


def controls_of(conditioning: Any) -> list[Control]:
    """The controls a conditioning carries, in the order they were applied."""
    import torch

    controls: list[Control] = []
    if not isinstance(conditioning, dict):
        return controls
    while _IMAGE.format(len(controls)) in conditioning:
        index = len(controls)
        strength, start, end, union_mode = torch.as_tensor(conditioning[_SETTINGS.format(index)]).tolist()
        ref_bytes = bytes(torch.as_tensor(conditioning[_REF.format(index)]).tolist())
        ref = models.ModelRef.from_json(json.loads(ref_bytes.decode("utf-8")))
        controls.append(Control(ref, torch.as_tensor(conditioning[_IMAGE.format(index)]), strength, start, end,
                                int(union_mode)))
    return controls


def _check_image(image: Any, field: str) -> None:
    """Values in [0, 1] (that it is an RGB batch [B, 3, H, W] the engine checks at the node boundary)."""
    low, high = float(image.min()), float(image.max())
    if low < 0.0 or high > 1.0:
        raise NodeError(f"the control picture's values run from {low:.3g} to {high:.3g}; an IMAGE holds values "
                        "in [0, 1]", field)


@node("ApplyControlNet", category="conditioning")
class ApplyControlNet(Node):
    """Guide sampling with a ControlNet and a control picture (edges from Canny, a depth map, a
    pose...). Chain several for a multi-ControlNet. `strength` scales the ControlNet's residuals;
    it acts from `start` to `end`, fractions of the sampling steps. SampleLoop applies the controls
    of its positive conditioning (to both halves of classifier-free guidance, as diffusers does)."""

    conditioning: ConditioningValue = Input(Conditioning, doc="a TextEncode's conditioning (or another ApplyControlNet's)")
    control_net: ModelRef = Input(ControlNetType)
    image: Tensor = Input(Image, doc="the control picture; resized to the latent's pixel size if it differs")
    strength: float = Param(1.0, ge=0.0, le=10.0, step=0.05, doc="diffusers' controlnet_conditioning_scale")
    start: float = Param(0.0, ge=0.0, le=1.0, step=0.01, doc="fraction of the steps where the ControlNet starts")
    end: float = Param(1.0, ge=0.0, le=1.0, step=0.01, doc="fraction of the steps where it stops (>= start)")
    union_mode: int = Param(-1, ge=-1, le=63, doc="ControlNet-Union (SDXL) only: the control type it was trained "
                            "with (xinsir's union-sdxl: 0 openpose, 1 depth, 2 hed/scribble, 3 canny/lineart, "
                            "4 normal, 5 segment); -1 for a plain ControlNet")
    outputs = {"conditioning": Output(Conditioning)}

    @classmethod
    def check_links(cls, params, linked, access):
        start, end = params.get("start", 0.0), params.get("end", 1.0)
        problems = []
        if isinstance(start, (int, float)) and isinstance(end, (int, float)) and start > end:
            problems.append(("end", f"end {end} is before start {start}; end must be at least start "
                                    "(0 <= start <= end <= 1)"))
        found = controlnet_config(linked["control_net"], access) if "control_net" in linked else None
        mode = params.get("union_mode", -1)
        if found is not None and isinstance(mode, int):
            name, config = found
            if config.get("_class_name") == "ControlNetUnionModel":
                count = config.get("num_control_type")
                if isinstance(count, int) and not 0 <= mode < count:
                    problems.append(("union_mode", f"the ControlNet {name} is a ControlNet-Union: set union_mode to "
                                                   f"its control type, 0..{count - 1} (got {mode})"))
            elif mode != -1:
                problems.append(("union_mode", f"the ControlNet {name} is a plain ControlNet: leave union_mode at -1 "
                                               f"(got {mode}; union_mode is for ControlNet-Union models)"))
        return problems

    def run(self, ctx):
        import torch

        if self.start > self.end:
            raise NodeError(f"end {self.end} is before start {self.start}; end must be at least start", "end")
        _check_image(self.image, "image")
        index = len(controls_of(self.conditioning))
        ref_bytes = json.dumps(self.control_net.to_json(), sort_keys=True).encode("utf-8")
        return {"conditioning": {
            **self.conditioning,
            _IMAGE.format(index): self.image.float().clone(),  # its own memory: safetensors refuses shared tensors
            _SETTINGS.format(index): torch.tensor([self.strength, self.start, self.end, self.union_mode],
                                                  dtype=torch.float64),
            _REF.format(index): torch.tensor(list(ref_bytes), dtype=torch.uint8),
        }}


# ---------------------------------------------------------------------------------------------
# sampling with controls


def control_picture(image: Any, height: int, width: int) -> Any:
    """The control picture at (height, width), [0, 1]: as it is when it fits, else its 8-bit pixels
    resized as diffusers' VaeImageProcessor resizes a PIL picture (Lanczos)."""
    from PIL import Image as PILImage

    if tuple(image.shape[2:]) == (height, width):
        return image.float()
    from diffusers.image_processor import VaeImageProcessor

    from .types import picture_pixels

    processor = VaeImageProcessor(do_convert_rgb=True, do_normalize=False)
    pictures = [PILImage.fromarray(pixels) for pixels in picture_pixels(image)]
    return processor.preprocess(pictures, height=height, width=width).float()


def _keep(step: int, total: int, start: float, end: float) -> float:
    """diffusers' controlnet_keep: 0 outside [start, end] of the schedule, else 1."""
    return 1.0 - float(step / total < start or (step + 1) / total > end)


def _kind(config: Mapping[str, Any]) -> str:
    return "SDXL" if config.get("addition_embed_type") == "text_time" else "Stable Diffusion 1.x/2.x"


def _family_problem(cn: Mapping[str, Any], un: Mapping[str, Any]) -> str | None:
    """Why a ControlNet (its config) does not fit a UNet (its config: family, text width, latent
    channels), or None. A key either config lacks (a model known only by its family, a ControlNet only by
    its tensor names) is not checked."""
    what, model = _kind(cn), _kind(un)
    if cn.get("_class_name") == "ControlNetUnionModel" and model != "SDXL":
        return f"is a ControlNetUnionModel, but the model sampling is {model} (ControlNet-Union is SDXL only)"
    if what != model:
        return f"is a {what} ControlNet, but the model sampling is {model}"
    if "cross_attention_dim" in un and "cross_attention_dim" in cn and cn["cross_attention_dim"] != un["cross_attention_dim"]:
        return (f"takes text of width {cn.get('cross_attention_dim')}, but this {model} UNet's is "
                f"{un['cross_attention_dim']} (a ControlNet for another base model, such as SD 2.x for SD 1.x)")
    if "out_channels" in un and "in_channels" in cn and cn["in_channels"] != un["out_channels"]:
        return f"takes {cn.get('in_channels')}-channel latents, but this UNet's are {un['out_channels']}-channel"
    return None


# ---------------------------------------------------------------------------------------------
# validation: what the files named upstream already tell

#: the families whose models take ControlNets here
FAMILIES = ("sd", "sdxl")


def _controls_upstream(source: Any) -> list[tuple[str, Any]]:
    """(ApplyControlNet node id, what feeds its control_net) along the ApplyControlNet chain `source` ends."""
    found = []
    for _ in range(models.MAX_WALK):
        if source is None or source[0] != "ApplyControlNet" or not hasattr(source, "upstream"):
            break
        upstream = source.upstream
        if "control_net" in upstream:
            found.append((source.node_id, upstream["control_net"]))
        source = upstream.get("conditioning")
    return found


def _config_file(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        return models._read_json(path)
    except NodeError:  # unreadable, or not a JSON object: the run reports it
        return None


def controlnet_config(source: Any, access: FileAccess) -> tuple[str, dict[str, Any]] | None:
    """At validation time: (the name the user gave, config.json) of the ControlNet a LoadControlNet link
    names, when its local files tell (a hub id or an unreadable file: None, the run decides)."""
    node_type, params, _ = source
    model, config = params.get("model"), params.get("config") or ""
    if node_type != "LoadControlNet" or not isinstance(model, str) or not isinstance(config, str):
        return None
    path = models.local_path(model, access)
    if path is None and models.REPO_ID.match(model.strip()):
        try:  # a repo id: its copy in the hub cache, if there is one (never downloaded to validate)
            path = models._from_hub(model.strip(), "", "model", False, models.CONTROLNET_HUB_PATTERNS)
        except NodeError:
            return None
    if path is None:
        return None
    if path.is_file():
        if not config.strip():
            found = _config_from_header(path)
            return (model, found) if found else None
        folder = models.local_path(config, access)
        candidates = [folder / "config.json"] if folder is not None and folder.is_dir() else []
    else:
        candidates = [path / "config.json", path / "controlnet" / "config.json"]
    for candidate in candidates:
        data = _config_file(candidate)
        if data is not None and data.get("_class_name") in CONTROLNET_CLASSES:
            return model, data
    return None


def _config_from_header(path: Path) -> dict[str, Any] | None:
    """What a single-file ControlNet's tensor names and shapes tell of its config (diffusers' or the original
    layout): its class, text width, latent channels, SDXL or not; None when unreadable (the run decides)."""
    from .ipadapter import tensor_shapes

    try:
        shapes = tensor_shapes(path, "model")
    except NodeError:
        return None
    config: dict[str, Any] = {"_class_name": "ControlNetModel"}
    if any(key.startswith(("task_embedding", "control_add_embedding")) for key in shapes):
        config["_class_name"] = "ControlNetUnionModel"
    if any(key.startswith(("add_embedding.", "control_model.label_emb.")) for key in shapes):
        config["addition_embed_type"] = "text_time"
    width = next((shape[1] for key, shape in shapes.items() if key.endswith("attn2.to_k.weight") and len(shape) == 2),
                 None)
    if width is not None:
        config["cross_attention_dim"] = width
    conv_in = shapes.get("conv_in.weight") or shapes.get("control_model.input_blocks.0.0.weight")
    if conv_in is not None and len(conv_in) == 4:
        config["in_channels"] = conv_in[1]
    return config


def _unet_config(source: Any, access: FileAccess) -> tuple[str, dict[str, Any]] | None:
    """At validation time: (the model's name, what is known of its UNet's config) for the loader a
    SampleLoop's unet comes from (through LoadLoRA and ApplyIPAdapter): the UNet's config.json of a
    local folder, else only its family (a single file); None when unknown."""
    loader = models.walk_upstream(source, "unet")
    if loader is None or loader[0] not in modular.LOADERS:
        return None
    model = loader[1].get("model")
    family = modular.family_of_loader(loader, access)
    if family is not None and family.name not in FAMILIES:
        return str(model), {"family": family.name, "title": family.title}
    path = models.local_path(model, access) if isinstance(model, str) else None
    if path is not None and path.is_dir():
        for candidate in (path / "unet" / "config.json", path / "config.json"):
            data = _config_file(candidate)
            if data is not None and data.get("_class_name") == "UNet2DConditionModel":
                return str(model), data
    if family is not None:  # a single file: its family only
        return str(model), {"addition_embed_type": "text_time"} if family.name == "sdxl" else {}
    return None


def link_problems(linked: Mapping[str, Any], access: FileAccess) -> list[tuple[str, str]]:
    """At validation time (SampleLoop): the ControlNets applied to `positive` that cannot guide the model
    linked to `unet` (another family, text width or latent channels), when the files tell."""
    if "unet" not in linked or "positive" not in linked:
        return []
    controls = _controls_upstream(linked["positive"])
    if not controls:
        return []
    model = _unet_config(linked["unet"], access)
    if model is None:
        return []
    name, unet = model
    if "family" in unet:
        return [("positive", f"ApplyControlNet {controls[0][0]!r} applies a ControlNet, but {unet['title']} models "
                             "take no ControlNet in diffgraph (diffusers' modular blocks have ControlNet steps for "
                             "SDXL only; Stable Diffusion 1.x/2.x runs diffgraph's own loop): sample a "
                             "Stable Diffusion 1.x/2.x or SDXL model, or remove the ApplyControlNet")]
    problems = []
    for apply_id, source in controls:
        found = controlnet_config(source, access)
        if found is None:
            continue
        problem = _family_problem(found[1], unet)
        if problem:
            wanted = f"a {_kind(unet)} ControlNet" + (f" of text width {unet['cross_attention_dim']}"
                                                       if "cross_attention_dim" in unet else "")
            problems.append(("positive", f"the ControlNet {found[0]} (LoadControlNet {source.node_id!r}, applied by "
                                         f"{apply_id!r}) {problem}; the model is {name}: load {wanted}"))
    return problems


def _check_union_mode(net: Any, control: Control) -> None:
    """A ControlNet-Union needs a control type it knows; a plain ControlNet none."""
    where = f"the ControlNet {control.ref.describe()} applied to this conditioning"
    if type(net).__name__ == "ControlNetUnionModel":
        count = net.config.num_control_type
        if not 0 <= control.union_mode < count:
            raise NodeError(f"{where} is a ControlNet-Union: set ApplyControlNet's union_mode to its control type, "
                            f"0..{count - 1} (got {control.union_mode})", "positive")
    elif control.union_mode != -1:
        raise NodeError(f"{where} is a plain ControlNet, but ApplyControlNet's union_mode is {control.union_mode}: "
                        "leave it at -1 (union_mode is for ControlNet-Union models)", "positive")


def _check_negative(controls: list[Control], negative: Any) -> None:
    theirs = controls_of(negative)
    if theirs and (len(theirs) != len(controls) or not all(a.same_as(b) for a, b in zip(controls, theirs, strict=True))):
        raise NodeError("the negative conditioning carries other ControlNets than the positive one; diffgraph applies "
                        "the positive conditioning's ControlNets to both halves of guidance, as diffusers does: link "
                        "the negative without ApplyControlNet, or with the same ones", "negative")


@dataclass
class LoopControls:
    """The ControlNets of one SampleLoop run (SD 1.x/2.x), ready for each step."""

    nets: list[Any]
    images: list[Any]  # per net: [batch (x2 when guided), 3, H, W] on the device
    controls: list[Control]
    total: int

    def residuals(self, model_input: Any, t: Any, step: int, embeds: Any) -> dict[str, Any]:
        """The UNet's extra keyword arguments at `step`: the summed down and mid residuals of the
        ControlNets active there, as StableDiffusionControlNetPipeline (MultiControlNetModel) sums them."""
        down, mid = None, None
        for net, image, control in zip(self.nets, self.images, self.controls, strict=True):
            scale = control.strength * _keep(step, self.total, control.start, control.end)
            if scale == 0.0:  # a ControlNet out of its range adds zeros: skip it
                continue
            net_down, net_mid = net(model_input, t, encoder_hidden_states=embeds, controlnet_cond=image,
                                    conditioning_scale=scale, guess_mode=False, return_dict=False)
            if down is None:
                down, mid = net_down, net_mid
            else:
                down = [previous + current for previous, current in zip(down, net_down, strict=True)]
                mid = mid + net_mid
        if down is None:
            return {}
        return {"down_block_additional_residuals": down, "mid_block_additional_residual": mid}


def prepare_for_loop(ctx: Any, unet: Any, positive: Any, negative: Any, guided: bool, shape: tuple, total: int,
                     device: Any) -> LoopControls | None:
    """SampleLoop (SD 1.x/2.x): the live ControlNets of `positive`'s controls and their control
    pictures, prepared as StableDiffusionControlNetPipeline.prepare_image does; None without controls."""
    import torch

    controls = controls_of(positive)
    if not controls:
        return None
    _check_negative(controls, negative)
    batch, height, width = shape[0], shape[2], shape[3]
    nets, images = [], []
    for control in controls:
        net = load_controlnet(ctx, control.ref, "positive")
        if type(net).__name__ != "ControlNetModel":
            raise NodeError(f"the ControlNet {control.ref.describe()} is a {type(net).__name__}: Stable Diffusion "
                            "1.x/2.x takes a ControlNetModel (ControlNet-Union is SDXL only)", "positive")
        problem = _family_problem(net.config, unet.config)
        if problem:
            raise NodeError(f"the ControlNet {control.ref.describe()} applied to this conditioning {problem}; "
                            "load a ControlNet trained for this model", "positive")
        _check_union_mode(net, control)
        factor = 2 ** (len(net.config.conditioning_embedding_out_channels) - 1)
        image = control_picture(control.image, height * factor, width * factor)
        if batch % image.shape[0]:
            raise NodeError(f"{image.shape[0]} control pictures cannot be spread over {batch} samples", "positive")
        image = image.repeat_interleave(batch // image.shape[0], dim=0).to(device=device, dtype=net.dtype)
        images.append(torch.cat([image] * 2) if guided else image)
        nets.append(net)
    return LoopControls(nets, images, controls, total)


# ---------------------------------------------------------------------------------------------
# SDXL: the modular blocks' ControlNet steps


def modular_inputs(ctx: Any, pipeline: Any, family: Any, positive: Any, negative: Any, height: int,
                   width: int) -> dict[str, Any]:
    """The denoise blocks' ControlNet inputs for `positive`'s controls, with the pipeline's
    `controlnet` component set to them ({} and no component without controls). Call
    `clear_modular` after the blocks ran: the pipeline is shared by every run of the model."""
    controls = controls_of(positive)
    if not controls:
        return {}
    if family.name != "sdxl":
        raise NodeError(f"{family.title} models take no ControlNet in diffgraph (diffusers' modular blocks have "
                        "ControlNet steps for SDXL only)", "positive")
    _check_negative(controls, negative)
    from diffusers import MultiControlNetModel

    nets = []
    for control in controls:
        net = load_controlnet(ctx, control.ref, "positive")
        problem = _family_problem(net.config, pipeline.unet.config)
        if problem:
            raise NodeError(f"the ControlNet {control.ref.describe()} applied to this conditioning {problem}; "
                            "load a ControlNet trained for this model", "positive")
        _check_union_mode(net, control)
        nets.append(net)
    images = [control_picture(control.image, height, width) for control in controls]
    single = len(nets) == 1
    from .modular import _quiet_diffusers

    if any(type(net).__name__ == "ControlNetUnionModel" for net in nets):
        if not single:
            raise NodeError("a ControlNet-Union runs alone in diffgraph (for now): apply one ControlNet-Union, or "
                            "plain ControlNets only", "positive")
        with _quiet_diffusers():
            pipeline.update_components(controlnet=nets[0])
        control = controls[0]
        return {"control_image": images, "control_mode": [control.union_mode],
                "controlnet_conditioning_scale": control.strength, "control_guidance_start": control.start,
                "control_guidance_end": control.end}
    with _quiet_diffusers():
        pipeline.update_components(controlnet=nets[0] if single else MultiControlNetModel(nets))
    return {
        "control_image": images[0] if single else images,
        "controlnet_conditioning_scale": controls[0].strength if single else [c.strength for c in controls],
        "control_guidance_start": controls[0].start if single else [c.start for c in controls],
        "control_guidance_end": controls[0].end if single else [c.end for c in controls],
    }


def clear_modular(pipeline: Any) -> None:
    """Take the ControlNets out of the shared pipeline again."""
    if getattr(pipeline, "controlnet", None) is not None:
        from .modular import _quiet_diffusers

        with _quiet_diffusers():
            pipeline.update_components(controlnet=None)


# ---------------------------------------------------------------------------------------------
# Canny


def canny_edges(grey: Any, low: float, high: float) -> Any:
    """Canny edges of a greyscale picture (numpy [H, W], 0..255) as a bool array: 3x3 Sobel
    gradients (L1 magnitude, as OpenCV's default), non-maximum suppression across the gradient,
    hysteresis between `low` and `high` (8-connected). No library in diffgraph's lock has a Canny
    (scipy has the filters and the labelling it is built from; OpenCV and scikit-image are not there)."""
    import numpy as np
    from scipy import ndimage

    grey = grey.astype(np.float64)
    gx = ndimage.sobel(grey, axis=1, mode="nearest")
    gy = ndimage.sobel(grey, axis=0, mode="nearest")
    magnitude = np.abs(gx) + np.abs(gy)
    # the gradient's direction in four bins: 0 deg (horizontal), 45, 90, 135
    angle = (np.rad2deg(np.arctan2(gy, gx)) + 180.0) % 180.0
    bins = (((angle + 22.5) // 45).astype(int)) % 4
    padded = np.pad(magnitude, 1)
    height, width = magnitude.shape
    offsets = {0: (0, 1), 1: (1, 1), 2: (1, 0), 3: (1, -1)}  # (dy, dx) along the gradient, image y down
    peak = np.zeros_like(magnitude, dtype=bool)
    for direction, (dy, dx) in offsets.items():
        ahead = padded[1 + dy:1 + dy + height, 1 + dx:1 + dx + width]
        behind = padded[1 - dy:1 - dy + height, 1 - dx:1 - dx + width]
        # `>=` on one side and `>` on the other keeps one pixel of a two-pixel-wide plateau
        here = (bins == direction) & (magnitude >= ahead) & (magnitude > behind)
        peak |= here
    candidates = peak & (magnitude >= low)
    labels, count = ndimage.label(candidates, structure=np.ones((3, 3), dtype=bool))
    if count == 0:
        return candidates
    strong = np.zeros(count + 1, dtype=bool)
    strong[np.unique(labels[candidates & (magnitude >= high)])] = True
    strong[0] = False
    return strong[labels]


@node("Canny", category="image")
class Canny(Node):
    """Canny edge detection, the control picture of canny ControlNets: white edges on black.
    Thresholds on the 0-255 scale of OpenCV's cv2.Canny (gradient magnitude |dx| + |dy| of a 3x3
    Sobel on the grey picture); edges between `low` and `high` are kept where they join one above `high`."""

    image: Tensor = Input(Image)
    low: float = Param(100.0, ge=0.0, le=2040.0, step=1.0, doc="weak edge threshold")
    high: float = Param(200.0, ge=0.0, le=2040.0, step=1.0, doc="strong edge threshold (>= low)")
    outputs = {"edges": Output(Image, doc="white edges on black, RGB, the picture's size")}

    @classmethod
    def check_links(cls, params, linked, access):
        low, high = params.get("low", 100.0), params.get("high", 200.0)
        if isinstance(low, (int, float)) and isinstance(high, (int, float)) and low > high:
            return [("high", f"high {high} is below low {low}; high must be at least low")]
        return []

    def run(self, ctx):
        import numpy as np
        import torch

        if self.low > self.high:
            raise NodeError(f"high {self.high} is below low {self.low}; high must be at least low", "high")
        _check_image(self.image, "image")
        from .types import picture_pixels

        out = []
        for pixels in picture_pixels(self.image):  # 8-bit, as OpenCV sees a picture
            grey = pixels.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
            edges = canny_edges(np.round(grey), self.low, self.high)
            out.append(torch.from_numpy(edges.astype(np.float32)).expand(3, *edges.shape))
        return {"edges": torch.stack(out).contiguous()}


NODES = [LoadControlNet, ApplyControlNet, Canny]
