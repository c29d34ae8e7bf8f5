"""IP-Adapter: an image as a prompt, for Stable Diffusion 1.x/2.x and SDXL.

LoadIPAdapter checks an IP-Adapter weights file (the single-file layout diffusers' `load_ip_adapter`
reads: `image_proj.*` and `ip_adapter.*` tensors) and its CLIP vision image encoder. ApplyIPAdapter
encodes the image with that encoder (diffusers' own `encode_image`, with its negative embeds: zeros,
or the encoder's view of a black picture for the hidden-states kinds) and returns the model with the
adapter, its strength and the image embeds attached to the UNet reference (`ModelRef.ip_adapters`,
JSON), so the result cache keeps it like any model reference and its key follows the adapter file,
the strength and the image.

The shared UNet itself is only changed while a SampleLoop samples with it: `loaded` puts diffusers'
IP-Adapter attention processors and image projection in (`_load_ip_adapter_weights`, then
`set_ip_adapter_scale`) and restores the UNet's own processors and projection afterwards, whatever
happens. SD 1.x/2.x then passes the embeds to the UNet as `added_cond_kwargs={"image_embeds": ...}`
(negative first under guidance, as StableDiffusionPipeline does); SDXL hands them to the modular
denoise blocks as `ip_adapter_embeds` / `negative_ip_adapter_embeds`, what their IP-Adapter step
outputs (ApplyIPAdapter encodes with that step's own `encode_image`). Two runs must not sample with
one UNet at the same time: the server's one worker thread runs one run at a time, and each Ray
actor is its own process.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import json
import re
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from diffgraph.engine import FileAccess, Input, Node, NodeError, Output, Param, node
from diffgraph.engine.files import open_regular

from . import models, modular
from .models import ModelRef
from .types import Image, ModelType, UNet

if TYPE_CHECKING:
    from torch import Tensor

#: the families whose UNets take IP-Adapters here
FAMILIES = ("sd", "sdxl")
#: the largest safetensors header read (an IP-Adapter's is a few KB)
MAX_HEADER_BYTES = 16 * 1024 * 1024
#: a folder in a Hugging Face repo (the image encoder's): `org/name[@revision]/path/in/repo`
HUB_FOLDER = re.compile(r"^(?:hf://)?(?P<repo>[A-Za-z0-9][\w.-]*/[\w.-]+?)(?:@(?P<revision>[\w.-]+))?"
                        r"/(?P<path>[\w.-]+(?:/[\w.-]+)*)$")
#: the CLIP vision encoder class diffusers' `load_ip_adapter` loads
ENCODER_CLASS = "CLIPVisionModelWithProjection"
#: cross-attention width -> the models whose UNets have it, for errors
CROSS_ATTENTION_MODELS = {768: "SD 1.x", 1024: "SD 2.x", 2048: "SDXL"}


class IPAdapter(ModelType):
    """An IP-Adapter weights file and its image encoder (a `ModelRef` of kind ip_adapter: `path` is the
    weights file, `config` the encoder folder)."""

    name = "IP_ADAPTER"
    colour = "#e76f51"
    kind = "ip_adapter"


def _weights_file(text: str, access: FileAccess) -> Path:
    path = models.resolve_file(text, "ip_adapter", access) if models.hub_file(text) else None
    path = path or models.resolve_model(text, field="ip_adapter", access=access)
    if not path.is_file():
        raise NodeError(f"{text!r} is a folder; name the IP-Adapter weights file in it (a .safetensors file with "
                        "image_proj.* and ip_adapter.* tensors; in a Hugging Face repo: "
                        "org/name/path/in/repo.safetensors)", "ip_adapter")
    if models.sniff_format(path) == "pickle":
        raise NodeError(f"{path.name} is a pickle file, not safetensors: pickle files can run arbitrary code when "
                        "loaded; use the .safetensors release of this IP-Adapter", "ip_adapter")
    return path


def _hub_folder(text: str, access: FileAccess) -> Path | None:
    """The hub cache's copy of a folder in a Hugging Face repo, `org/name[@revision]/path/in/repo` (as
    diffusers' load_ip_adapter takes `image_encoder_folder` in the repo); None when `text` names none."""
    reference = models.hub_file(text, HUB_FOLDER)
    if reference is None or models.local_path(text, access) is not None:
        return None
    repo_id, revision, path = reference
    snapshot = models._from_hub(repo_id, revision, "image_encoder", access.allow_downloads,
                                (f"{path}/*.json", f"{path}/*.safetensors"))
    return snapshot / path


def _encoder_folder(text: str, weights: Path, access: FileAccess, weights_text: str = "") -> Path:
    hub_weights = models.hub_file(weights_text) if models.local_path(weights_text, access) is None else None
    if text.strip():
        folder = _hub_folder(text, access) or models.resolve_model(text, field="image_encoder", access=access)
    elif hub_weights is not None:  # image_encoder/ beside the weights in their repo, as load_ip_adapter looks
        repo_id, revision, path = hub_weights
        beside = "/".join([*path.split("/")[:-1], "image_encoder"])
        folder = _hub_folder(f"{repo_id}{'@' + revision if revision else ''}/{beside}", access) or weights
    else:  # where diffusers' load_ip_adapter looks by default: image_encoder/ beside the weights
        folder = weights.parent / "image_encoder"
        missing = NodeError(f"no image_encoder folder beside {weights.name}: name the IP-Adapter's CLIP vision "
                            "encoder folder in `image_encoder`", "image_encoder")
        if not access.permissive:  # beside a contained file, and contained itself (no link out of the roots)
            try:
                folder = access.model_path(str(folder), "image_encoder") or folder
            except NodeError:
                raise missing from None
        if not folder.is_dir():
            raise missing
    found = models.component_class(folder, "") if folder.is_dir() else None
    if found is None or found[1] != ENCODER_CLASS:
        what = found[1] if found else "no config.json"
        raise NodeError(f"{folder} is not a {ENCODER_CLASS} image encoder folder ({what})", "image_encoder")
    return folder


def tensor_shapes(path: Path, field: str = "ip_adapter") -> dict[str, list[int]]:
    """Tensor name -> shape, from a safetensors file's header (a bounded read; nothing is unpickled)."""
    try:
        with open_regular(path) as handle:
            head = handle.read(8)
            (length,) = struct.unpack("<Q", head) if len(head) == 8 else (0,)
            if not 2 <= length <= MAX_HEADER_BYTES:
                raise ValueError("not a safetensors file")
            header = json.loads(handle.read(length))
            if not isinstance(header, dict):
                raise ValueError("its header is not a JSON object")
    except (OSError, ValueError) as exc:
        raise NodeError(f"cannot read {path.name} as safetensors: {exc}", field) from None
    return {name: [int(n) for n in entry["shape"] if isinstance(n, int)] for name, entry in header.items()
            if name != "__metadata__" and isinstance(entry, dict) and isinstance(entry.get("shape"), list)}


def _check_layout(path: Path, shapes: dict[str, list[int]]) -> None:
    if not any(k.startswith("image_proj.") for k in shapes) or not any(k.startswith("ip_adapter.") for k in shapes):
        raise NodeError(f"{path.name} is not an IP-Adapter: diffusers' layout has image_proj.* and ip_adapter.* "
                        f"tensors (found {', '.join(sorted(shapes)[:3]) or 'none'}...)", "ip_adapter")
    faceid = "image_proj.perceiver_resampler.proj_in.weight" in shapes or any(
        k.startswith("ip_adapter.") and "_lora." in k for k in shapes)
    if faceid:  # it needs face embeddings (insightface) and its LoRA, which nothing here gives it
        raise NodeError(f"{path.name} is an IP-Adapter FaceID: it prompts with face embeddings and carries a LoRA; "
                        "diffgraph runs the image-prompt kinds (IP-Adapter, Plus, Full Face)", "ip_adapter")


def _fingerprint(cls, params: dict[str, Any], access: FileAccess) -> str | None:
    """The cache key follows the content of the weights file and of the encoder folder (the one
    named, or the one beside the weights)."""
    weights = str(params.get("ip_adapter") or "")
    encoder = str(params.get("image_encoder") or "")
    parts = [models.local_fingerprint(weights, access, "ip_adapter")]
    if encoder.strip():
        parts.append(models.local_fingerprint(encoder, access, "image_encoder"))
    else:
        found = models.local_path(weights, access)
        beside = found.parent / "image_encoder" if found is not None and found.is_file() else None
        try:
            parts.append(models.local_fingerprint(str(beside), access, "image_encoder") if beside else None)
        except NodeError:
            parts.append(None)  # beside it but out of the model roots: the run refuses it
    return None if parts == [None, None] else "|".join(part or "" for part in parts)


@node("LoadIPAdapter", category="loaders")
class LoadIPAdapter(Node):
    """Load an IP-Adapter (an image prompt for SD 1.x/2.x and SDXL): its weights file and the CLIP
    vision encoder it was trained with."""

    ip_adapter: str = Param(widget="model:ip_adapter", doc="the IP-Adapter .safetensors file (image_proj.* and "
                            "ip_adapter.* tensors, as diffusers' load_ip_adapter reads); " + models.HUB_FILE_DOC)
    image_encoder: str = Param("", doc="its CLIPVisionModelWithProjection folder (or a repo's, "
                               "org/name/path/in/repo); empty: image_encoder/ beside the weights file (in its repo)")
    outputs = {"ip_adapter": Output(IPAdapter)}

    fingerprint = classmethod(_fingerprint)

    def run(self, ctx):
        weights = _weights_file(self.ip_adapter, ctx.access)
        _check_layout(weights, tensor_shapes(weights))
        encoder = _encoder_folder(self.image_encoder, weights, ctx.access, self.ip_adapter)
        ref = models.ModelRef(kind="ip_adapter", path=str(weights), config=str(encoder),
                              fingerprint=models.local_fingerprint(str(weights)) or "")
        _image_encoder(ctx, ref, "image_encoder")  # a broken encoder fails here, not in the sampler
        return {"ip_adapter": ref}


@node("ApplyIPAdapter", category="conditioning")
class ApplyIPAdapter(Node):
    """Prompt the model with a picture: the model's UNet sees the image through the IP-Adapter, at
    `strength` (diffusers' `set_ip_adapter_scale`). Several may chain, one picture each."""

    unet: ModelRef = Input(UNet, doc="the model (LoadPipeline's unet, SD 1.x/2.x or SDXL)")
    ip_adapter: ModelRef = Input(IPAdapter)
    image: Tensor = Input(Image, doc="the image prompt (a batch of pictures: all of them, as one prompt)")
    strength: float = Param(1.0, ge=-1.0, le=3.0, step=0.05, doc="how strongly the picture steers; 0 = not at all")
    outputs = {"unet": Output(UNet, doc="the model with the IP-Adapter applied while it samples")}

    @classmethod
    def check_links(cls, params, linked, access):
        """What the files named upstream already tell: the model's family, and whether the adapter's
        cross-attention width is the UNet's (the run checks every layer)."""
        loader = models.walk_upstream(linked.get("unet"), "unet")  # through LoRAs and other IP-Adapters
        family = modular.family_of_loader(loader, access) if loader is not None else None
        if family is not None and family.name not in FAMILIES:
            return [("unet", family_problem(family.name))]
        width = _loader_cross_attention(loader, access) if loader is not None else None
        adapter = _adapter_shapes(linked["ip_adapter"], access) if "ip_adapter" in linked else None
        if width is None or adapter is None:
            return []
        path, shapes = adapter
        widths = _widths(shapes)
        if widths and widths != [width]:
            return [("ip_adapter", f"{path.name} is made for a cross-attention width of {_named(widths)}; the "
                                   f"model's UNet has {_named([width])}: use an IP-Adapter made for this model")]
        return []

    def run(self, ctx):
        import torch

        unet_ref = self.unet
        family = unet_ref.family or "sd"
        if family not in FAMILIES:
            raise NodeError(family_problem(family), "unet")
        adapter, image = self.ip_adapter, self.image  # their types checked at the node boundary (engine)
        unet = models.load(ctx, unet_ref, "unet")
        shapes = tensor_shapes(Path(adapter.path))
        check_fits(shapes, unet, Path(adapter.path).name)
        hidden_states = "image_proj.proj.weight" not in shapes  # the plain ImageProjection takes image_embeds
        with torch.inference_mode():
            positive, negative = _encode(ctx, adapter, image, family, hidden_states)
        check_embeds_fit(shapes, positive, Path(adapter.path).name)
        entry = {"path": adapter.path, "fingerprint": adapter.fingerprint, "strength": self.strength,
                 "embeds": _pack({"positive": positive, "negative": negative})}
        applied = [*attached(unet_ref), entry]
        return {"unet": dataclasses.replace(unet_ref, ip_adapters=json.dumps(applied, sort_keys=True))}


def family_problem(family: str) -> str:
    return (f"IP-Adapters apply to Stable Diffusion 1.x/2.x and SDXL models here (families {', '.join(FAMILIES)}); "
            f"this model's family is {family}")


def _widths(shapes: dict[str, list[int]]) -> list[int]:
    """The cross-attention widths an adapter's key projections take."""
    return sorted({shape[1] for key, shape in shapes.items()
                   if key.startswith("ip_adapter.") and key.endswith(".to_k_ip.weight") and len(shape) == 2})


def _named(widths: list[int]) -> str:
    return ", ".join(f"{w} ({CROSS_ATTENTION_MODELS[w]})" if w in CROSS_ATTENTION_MODELS else str(w)
                     for w in widths) or "none"


def _loader_cross_attention(source: tuple[str, dict[str, Any], str], access: FileAccess) -> int | None:
    """At validation time: the cross-attention width of the UNet a loader link names, from its local
    config.json (None when that cannot be read from params alone: the run decides)."""
    node_type, params, _ = source
    if node_type not in ("LoadPipeline", "LoadUNet") or not isinstance(params.get("model"), str):
        return None
    path = models.local_path(params["model"], access)
    if path is None or not path.is_dir():
        return None
    for config in (path / "unet" / "config.json", path / "config.json"):
        if config.is_file():
            try:
                width = models._read_json(config).get("cross_attention_dim")
            except NodeError:  # unreadable, or not a JSON object: the run decides
                return None
            return width if isinstance(width, int) else None
    return None


def _adapter_shapes(source: tuple[str, dict[str, Any], str], access: FileAccess) -> tuple[Path, dict] | None:
    """At validation time: the tensor shapes of the adapter file a LoadIPAdapter link names."""
    node_type, params, _ = source
    if node_type != "LoadIPAdapter" or not isinstance(params.get("ip_adapter"), str):
        return None
    path = models.local_path(params["ip_adapter"], access)
    if path is None and models.hub_file(params["ip_adapter"]) is not None:
        try:  # a repo file already in the hub cache (validating never downloads)
            path = models.cached_hub_file(params["ip_adapter"], "ip_adapter", access)
        except NodeError:
            return None  # LoadIPAdapter reports it
    if path is None or not path.is_file():
        return None
    try:
        return path, tensor_shapes(path)
    except NodeError:
        return None  # LoadIPAdapter reports it


def check_fits(shapes: dict[str, list[int]], unet: Any, name: str) -> None:
    """The adapter's key/value projections must match the UNet's cross-attention layers, one for one."""
    cross = getattr(unet.config, "cross_attention_dim", None)
    if not cross or not hasattr(unet, "attn_processors"):
        raise NodeError("this UNet has no cross-attention (an unconditional model): an IP-Adapter needs a "
                        "text-conditioned SD 1.x/2.x or SDXL UNet", "unet")
    layers = [key for key in unet.attn_processors if key.endswith("attn2.processor")]
    expected = {}
    for index, key in enumerate(layers):
        attention = unet.get_submodule(key.removesuffix(".processor"))
        expected[f"ip_adapter.{2 * index + 1}.to_k_ip.weight"] = list(attention.to_k.weight.shape)
    found = {k: v for k, v in shapes.items() if k.startswith("ip_adapter.") and k.endswith(".to_k_ip.weight")}
    if found != expected:
        raise NodeError(f"{name} does not fit this UNet: it has {len(found)} cross-attention layers of width "
                        f"{_named(_widths(shapes))}; the UNet has {len(layers)} of width "
                        f"{_named([cross])}: use an IP-Adapter made for this model",
                        "ip_adapter")


def check_embeds_fit(shapes: dict[str, list[int]], positive: Any, name: str) -> None:
    """The plain image projection takes the encoder's projected embeds: their widths must agree."""
    projection = shapes.get("image_proj.proj.weight")
    if projection is not None and len(projection) == 2 and projection[1] != positive.shape[-1]:
        raise NodeError(f"{name} takes image embeds of width {projection[1]}, but its image encoder gives "
                        f"{positive.shape[-1]}: give the encoder it was trained with", "ip_adapter")


def _image_encoder(ctx: Any, adapter: models.ModelRef, field: str) -> Any:
    encoder_ref = models.ModelRef(kind="image_encoder", path=adapter.config,
                                  fingerprint=models.local_fingerprint(adapter.config) or "")
    return models.load(ctx, encoder_ref, field)


def _processor(folder: Path, encoder: Any) -> Any:
    """The encoder folder's CLIPImageProcessor; without one, the one diffusers' load_ip_adapter makes."""
    from transformers import CLIPImageProcessor

    if (folder / "preprocessor_config.json").is_file():
        with models.libraries_quiet():
            return CLIPImageProcessor.from_pretrained(str(folder), local_files_only=True)
    size = encoder.config.image_size
    return CLIPImageProcessor(size=size, crop_size=size)


def _encode(ctx: Any, adapter: models.ModelRef, image: Any, family: str, hidden_states: bool) -> tuple[Any, Any]:
    """(positive, negative) image embeds [1, B, ...] as the family's pipeline prepares them for one adapter."""
    from types import SimpleNamespace

    from diffusers import StableDiffusionPipeline
    from diffusers.modular_pipelines.stable_diffusion_xl.encoders import StableDiffusionXLIPAdapterStep
    from PIL import Image as PILImage

    from .types import picture_pixels

    encoder = _image_encoder(ctx, adapter, "ip_adapter")
    # the 8-bit pictures, as a pipeline is handed them (LoadImage's tensors are exactly these / 255)
    pictures = [PILImage.fromarray(pixels) for pixels in picture_pixels(image)]
    components = SimpleNamespace(image_encoder=encoder, feature_extractor=_processor(Path(adapter.config), encoder))
    if family == "sdxl":
        encode = StableDiffusionXLIPAdapterStep.encode_image
    else:
        encode = StableDiffusionPipeline.encode_image  # type: ignore[assignment]
    try:
        with models.libraries_quiet():
            positive, negative = encode(components, pictures, ctx.device, 1, hidden_states)
    except Exception as exc:  # noqa: BLE001 - an encoder folder that loads but cannot encode (a foreign config)
        raise NodeError(f"the image encoder {adapter.config} cannot encode this picture: {type(exc).__name__}: "
                        f"{exc}", "ip_adapter") from None
    return positive[None].float().cpu(), negative[None].float().cpu()


def _pack(tensors: dict[str, Any]) -> str:
    from safetensors.torch import save

    return base64.b64encode(save({k: v.contiguous() for k, v in tensors.items()})).decode("ascii")


def _unpack(text: str) -> dict[str, Any]:
    from safetensors.torch import load

    return load(base64.b64decode(text))


def attached(ref: Any) -> list[dict[str, Any]]:
    """The IP-Adapters ApplyIPAdapter attached to a UNet reference (none for a plain one)."""
    text = getattr(ref, "ip_adapters", "")
    return json.loads(text) if text else []


def _state_dict(path: Path) -> dict[str, dict[str, Any]]:
    """The adapter's tensors split as diffusers' load_ip_adapter splits them."""
    from safetensors import safe_open

    state: dict[str, dict[str, Any]] = {"image_proj": {}, "ip_adapter": {}}
    with safe_open(str(path), framework="pt", device="cpu") as handle:
        for key in handle.keys():  # noqa: SIM118 - safe_open is not a mapping
            group, _, rest = key.partition(".")
            if group in state:
                state[group][rest] = handle.get_tensor(key)
    return state


@contextlib.contextmanager
def loaded(ctx: Any, ref: Any) -> Iterator[None]:
    """While inside: the UNet `ref` names runs with the IP-Adapters attached to `ref` at their strengths;
    after: the UNet's own attention processors and projection are back, whatever happened."""
    adapters = attached(ref)
    if not adapters:
        yield
        return
    from types import SimpleNamespace

    from diffusers.loaders import IPAdapterMixin

    unet = models.load(ctx, ref, "unet")
    for adapter in adapters:
        if models.local_fingerprint(adapter["path"]) != adapter["fingerprint"]:
            raise NodeError(f"{Path(adapter['path']).name} changed since ApplyIPAdapter read it: run again", "unet")
    state_dicts = [_state_dict(Path(adapter["path"])) for adapter in adapters]
    processors = unet.attn_processors
    projection, projection_type = unet.encoder_hid_proj, unet.config.encoder_hid_dim_type
    try:
        try:
            with models.libraries_quiet():
                unet._load_ip_adapter_weights(state_dicts)
                IPAdapterMixin.set_ip_adapter_scale(SimpleNamespace(unet=unet),  # type: ignore[arg-type]
                                                    [adapter["strength"] for adapter in adapters])
        except Exception as exc:  # noqa: BLE001 - a file ApplyIPAdapter checked, changed or damaged since
            names = ", ".join(Path(adapter["path"]).name for adapter in adapters)
            raise NodeError(f"cannot load the IP-Adapter {names} into this UNet: {type(exc).__name__}: {exc}",
                            "unet") from None
        yield
    finally:  # the projection first: a Plus adapter's projection has attention processors of its own
        unet.encoder_hid_proj = projection
        unet.config.encoder_hid_dim_type = projection_type
        unet.set_attn_processor(processors)


def _embeds(ref: Any) -> list[tuple[Any, Any]]:
    return [(packed["positive"], packed["negative"])
            for packed in (_unpack(adapter["embeds"]) for adapter in attached(ref))]


def unet_kwargs(ref: Any, batch: int, guided: bool, device: Any, dtype: Any) -> dict[str, Any]:
    """SD 1.x/2.x: the UNet call's extra arguments for the attached IP-Adapters ({} without any): one
    image-embeds tensor per adapter, repeated per picture, negative half first under guidance."""
    import torch

    pairs = _embeds(ref)
    if not pairs:
        return {}
    image_embeds = []
    for positive, negative in pairs:
        embeds = torch.cat([positive] * batch)
        if guided:
            embeds = torch.cat([torch.cat([negative] * batch), embeds])
        image_embeds.append(embeds.to(device=device, dtype=dtype))
    return {"added_cond_kwargs": {"image_embeds": image_embeds}}


def modular_inputs(ref: Any) -> dict[str, Any]:
    """SDXL: the denoise blocks' inputs for the attached IP-Adapters ({} without any), as their
    IP-Adapter step outputs them (the blocks repeat them per picture)."""
    pairs = _embeds(ref)
    if not pairs:
        return {}
    return {"ip_adapter_embeds": [positive for positive, _ in pairs],
            "negative_ip_adapter_embeds": [negative for _, negative in pairs]}


NODES = [LoadIPAdapter, ApplyIPAdapter]
