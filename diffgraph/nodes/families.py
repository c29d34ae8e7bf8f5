"""Model families: what diffgraph knows about each one, as data.

Stable Diffusion 1.x/2.x runs through diffgraph's own loop (`sampling.SampleLoop`). Every other
family runs through diffusers' Modular Diffusers blocks (`modular.py`); this table holds only what
those blocks do not declare: which text-encoder outputs are public, where guidance goes and its
formula, how latents are normalized and packed, the size multiple, and which tasks exist. A reader
finds everything about Flux in its one entry.

The family is detected from the model's own files: `model_index.json`'s `_class_name`, or the
tensor names of a single-file checkpoint (read from its safetensors header, never unpickled).
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

TASKS = ("txt2img", "img2img", "inpaint")


@dataclass(frozen=True)
class Family:
    name: str  # what the loader outputs and errors say
    title: str
    #: the classic pipelines whose model_index.json `_class_name` marks a folder as this family
    pipeline_classes: tuple[str, ...]
    #: the denoiser's component folder
    denoiser: str = "unet"
    #: False: diffgraph's own loop (SD 1.x/2.x); True: the family's Modular Diffusers blocks
    modular: bool = True
    #: text-encoder block outputs a TextEncode keeps (the negative ones come from a second TextEncode)
    conditioning: tuple[str, ...] = ("prompt_embeds", "pooled_prompt_embeds")
    #: text-encoder outputs that are lists of variable-length tensors (one per prompt): kept in the
    #: disk cache as `name.0`, `name.1`, ... of the conditioning's tensor dict
    list_conditioning: bool = False
    #: ClassifierFreeGuidance options that make the guider compute the classic pipeline's formula
    guider_options: tuple[tuple[str, object], ...] = ()
    #: "guider": classifier-free guidance by the pipeline's guider component,
    #:   uncond + cfg * (cond - uncond), off at cfg <= 1, negative conditioning required when on;
    #: "embedded": guidance-distilled, cfg is an input of the denoiser (Flux.1) and there is no
    #:   negative prompt
    guidance: str = "guider"
    #: the guider's conditional and unconditional passes run as one batched denoiser call, as the
    #: classic pipeline runs them (diffusers' modular loop calls the denoiser once per pass); only
    #: where every denoiser input is a tensor with a batch axis (not Z-Image's lists of tensors)
    batched_guidance: bool = False
    #: an empty negative prompt encodes as zeros when the model's `force_zeros_for_empty_prompt`
    #: says so (SDXL), as the classic pipeline does for a missing negative prompt
    zeros_for_empty_negative: bool = False
    #: how a VAE sample becomes the model's latent: "scale" (x * scaling_factor), "shift_scale"
    #: ((x - shift_factor) * scaling_factor) or "per_channel" ((x - latents_mean) / latents_std)
    latent_normalization: str = "scale"
    #: inside the denoise loop the latents are 2x2 patches in a sequence [B, h/2 * w/2, 4C]
    packed_latents: bool = False
    #: the VAE is a video VAE: its latents carry a frame axis [B, C, 1, h, w] (diffgraph's LATENT drops it)
    latent_frames: bool = False
    #: the denoise blocks' inputs for inpainting: the latent-sized mask, and the masked image's
    #: latents ("" = the blocks take none)
    mask_input: str = "mask"
    masked_image_input: str = "masked_image_latents"
    #: width and height must be multiples of this times the VAE's downscale factor
    size_multiple: int = 1
    tasks: tuple[str, ...] = TASKS
    #: what a template param means here when it differs from SD 1.x
    notes: str = ""
    #: the components a single-file checkpoint of this family may hold, by the key prefixes of their
    #: tensors (the original layouts diffusers' `from_single_file` converts); the components a file
    #: lacks, and every tokenizer and scheduler, come from the diffusers folder named by `config`
    single_file_parts: tuple[tuple[str, tuple[str, ...]], ...] = ()


FAMILIES: dict[str, Family] = {family.name: family for family in (
    Family("sd", "Stable Diffusion 1.x/2.x", (
        "StableDiffusionPipeline", "StableDiffusionImg2ImgPipeline", "StableDiffusionInpaintPipeline",
        "StableDiffusionDepth2ImgPipeline", "DDPMPipeline", "DDIMPipeline", "LatentConsistencyModelPipeline"),
        modular=False, conditioning=("embeds",)),
    Family("sdxl", "Stable Diffusion XL", (
        "StableDiffusionXLPipeline", "StableDiffusionXLImg2ImgPipeline", "StableDiffusionXLInpaintPipeline"),
        zeros_for_empty_negative=True, batched_guidance=True,
        notes="refiner: load it as a second model and run it as img2img on the base model's picture",
        single_file_parts=(("unet", ("model.diffusion_model.",)), ("vae", ("first_stage_model.",)),
                           ("text_encoder", ("conditioner.embedders.0.",)),
                           ("text_encoder_2", ("conditioner.embedders.1.", "conditioner.embedders.0.model.")))),
    Family("sd3", "Stable Diffusion 3 / 3.5", (
        "StableDiffusion3Pipeline", "StableDiffusion3Img2ImgPipeline", "StableDiffusion3InpaintPipeline"),
        denoiser="transformer", latent_normalization="shift_scale", tasks=("txt2img", "img2img"),
        batched_guidance=True,
        notes="samplers: its own flow-matching euler only; inpaint: not in diffusers' modular SD3 blocks",
        single_file_parts=(("transformer", ("model.diffusion_model.", "joint_blocks.")),
                           ("vae", ("first_stage_model.",)), ("text_encoder", ("text_encoders.clip_l.",)),
                           ("text_encoder_2", ("text_encoders.clip_g.",)),
                           ("text_encoder_3", ("text_encoders.t5xxl.",)))),
    Family("flux", "Flux.1 dev / schnell", (
        "FluxPipeline", "FluxImg2ImgPipeline", "FluxInpaintPipeline"),
        denoiser="transformer", guidance="embedded", latent_normalization="shift_scale", packed_latents=True, size_multiple=2,
        tasks=("txt2img", "img2img"),
        notes="cfg is its distilled guidance; negative_prompt must stay empty; samplers: its own flow-matching "
              "euler only; inpaint: not in diffusers' modular Flux blocks",
        # the transformer file as Black Forest Labs and ComfyUI share it (or in diffusers' layout), and
        # ComfyUI's whole checkpoints (its Flux config's `vae.` and `text_encoders.` prefixes)
        single_file_parts=(("transformer", ("double_blocks.", "model.diffusion_model.", "transformer_blocks.",
                                            "single_transformer_blocks.")),
                           ("vae", ("vae.", "first_stage_model.")), ("text_encoder", ("text_encoders.clip_l.",)),
                           ("text_encoder_2", ("text_encoders.t5xxl.",)))),
    Family("zimage", "Z-Image", ("ZImagePipeline", "ZImageImg2ImgPipeline", "ZImageInpaintPipeline"),
        denoiser="transformer", conditioning=("prompt_embeds",), list_conditioning=True,
        guider_options=(("use_original_formulation", True),), latent_normalization="shift_scale", size_multiple=2,
        tasks=("txt2img", "img2img"),
        notes="samplers: its own flow-matching euler only; inpaint: not in diffusers' modular Z-Image blocks"),
    Family("flux2", "Flux.2 [klein] base", ("Flux2KleinPipeline",), denoiser="transformer",
        conditioning=("prompt_embeds",), packed_latents=True, size_multiple=2, tasks=("txt2img",),
        notes="LATENT holds its 2x2-patchified latents [B, 4C, h/2, w/2], as its decode blocks take them; "
              "samplers: its own flow-matching euler only; img2img and inpaint: not in its modular blocks "
              "(reference-image conditioning is, and is not exposed yet); the step-distilled klein and "
              "Flux.2 [dev] (Mistral text encoder) are untested"),
    Family("qwenimage", "Qwen-Image", ("QwenImagePipeline", "QwenImageImg2ImgPipeline", "QwenImageInpaintPipeline"),
        denoiser="transformer", conditioning=("prompt_embeds", "prompt_embeds_mask"), packed_latents=True,
        latent_frames=True, latent_normalization="per_channel", mask_input="processed_mask_image",
        masked_image_input="", size_multiple=2,
        notes="cfg is its true_cfg_scale (with the empty negative prompt encoded); samplers: its own "
              "flow-matching euler only; inpaint repaints by blending (the transformer never sees the mask)"),
)}

#: tensor-name prefixes that identify a single-file checkpoint's family (original layouts)
_CHECKPOINT_MARKERS = (
    ("double_blocks.0.img_attn", "flux"), ("model.diffusion_model.double_blocks.", "flux"),
    ("single_transformer_blocks.0.proj_mlp.", "flux"),  # a Flux.1 transformer file in diffusers' layout
    ("joint_blocks.0.", "sd3"), ("model.diffusion_model.joint_blocks.", "sd3"),
    ("conditioner.embedders.1.model.", "sdxl"),
    ("model.diffusion_model.input_blocks.", "sd"),
)
#: the largest model_index.json read (real ones are well under 4 KB)
MAX_INDEX_BYTES = 1024 * 1024
#: a safetensors header larger than this is not a checkpoint we read (they are a few MB at most)
MAX_HEADER_BYTES = 100 * 1024 * 1024


class UnknownFamily(ValueError):
    pass


def family_of_folder(folder: Path) -> Family:
    """The family of a diffusers pipeline folder, from its model_index.json (a bounded read of a
    regular file)."""
    from diffgraph.engine.files import read_regular

    try:
        index = json.loads(read_regular(folder / "model_index.json", MAX_INDEX_BYTES).decode("utf-8"))
    except (OSError, ValueError) as exc:
        raise UnknownFamily(f"cannot read {folder / 'model_index.json'}: {exc}") from None
    class_name = str(index.get("_class_name", "")) if isinstance(index, dict) else ""
    for family in FAMILIES.values():
        if class_name in family.pipeline_classes:
            return family
    known = ", ".join(f"{f.title} ({f.pipeline_classes[0]})" for f in FAMILIES.values())
    raise UnknownFamily(f"{folder} holds a {class_name or 'pipeline without _class_name'}; diffgraph runs {known}")


def family_of_checkpoint(path: Path) -> Family:
    """The family of a single-file .safetensors checkpoint, from its tensor names."""
    names = checkpoint_header(path).keys()
    for prefix, name in _CHECKPOINT_MARKERS:
        if any(key.startswith(prefix) for key in names):
            return FAMILIES[name]
    raise UnknownFamily(f"{path.name} is not a checkpoint of a known family (SD 1.x/2.x, SDXL, SD3, Flux.1)")


def checkpoint_header(path: Path) -> dict[str, dict]:
    """A .safetensors file's header: tensor name -> {dtype, shape, data_offsets} (a bounded read of a
    regular file; the weights are not read)."""
    from diffgraph.engine.files import open_regular

    with open_regular(path) as handle:
        head = handle.read(8)
        if len(head) < 8:
            raise UnknownFamily(f"{path.name} is too short to be a safetensors checkpoint")
        (length,) = struct.unpack("<Q", head)
        if length > MAX_HEADER_BYTES:
            raise UnknownFamily(f"{path.name}: its safetensors header is implausibly large ({length} bytes)")
        try:
            header = json.loads(handle.read(length))
        except ValueError as exc:
            raise UnknownFamily(f"{path.name}: damaged safetensors header ({exc})") from None
    if not isinstance(header, dict):
        raise UnknownFamily(f"{path.name}: damaged safetensors header (not a JSON object)")
    return {name: entry for name, entry in header.items() if name != "__metadata__" and isinstance(entry, dict)}


def single_file_parts(family: Family, names: Iterable[str]) -> list[str]:
    """The components of `family` a single-file checkpoint with these tensor names holds."""
    keys = list(names)
    return [part for part, prefixes in family.single_file_parts
            if any(key.startswith(prefixes) for key in keys)]


def get(name: str) -> Family:
    return FAMILIES.get(name or "sd", FAMILIES["sd"])
