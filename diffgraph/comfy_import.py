"""ComfyUI workflows -> diffgraph workflows, for ComfyUI's core node set.

Two ComfyUI formats come in: the API format (`{node_id: {class_type, inputs}}`, where an input is
a literal or a link `[source_id, output_index]`) that clients POST to `/prompt`, and the UI format
that the ComfyUI editor saves (`nodes` with `widgets_values`, `links`). The UI format is first
turned into the API format with the widget order of `CLASSES`, then both go through one
translation. Every problem is collected, each naming the prompt's node id, its class_type and the
field, with what would be valid; nothing here imports torch, the engine or the server.

`CLASSES` is the single description of the supported classes: the server's `/object_info` is
rendered from it and the translation checks values against it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

#: ComfyUI sampler_name -> the Scheduler node's `name`
SAMPLERS = {"euler": "euler", "euler_ancestral": "euler_a", "heun": "heun", "dpmpp_2m": "dpmpp_2m",
            "dpmpp_2m_sde": "dpmpp_2m_sde", "lms": "lms", "ddim": "ddim", "uni_pc": "unipc", "lcm": "lcm"}
#: ComfyUI scheduler -> the Scheduler node's (sigmas, spacing): diffusers' config flags, see README
SCHEDULES = {"normal": ("default", "linspace"), "karras": ("karras", "default"),
             "exponential": ("exponential", "default"), "sgm_uniform": ("default", "trailing"),
             "simple": ("default", "trailing"), "ddim_uniform": ("default", "leading"), "beta": ("beta", "default")}
#: links carry these; everything else is a widget (a literal)
LINK_TYPES = {"MODEL", "CLIP", "VAE", "CONDITIONING", "LATENT", "IMAGE", "MASK", "CONTROL_NET"}
MAX_SEED = 2**64 - 1
FORBIDDEN_PREFIX = re.compile(r'[/\\:*?"<>|\x00-\x1f]')

Spec = dict[str, Any]


def _int(default: int, low: int, high: int, step: int = 1) -> list[Any]:
    return ["INT", {"default": default, "min": low, "max": high, "step": step}]


def _float(default: float, low: float, high: float, step: float) -> list[Any]:
    return ["FLOAT", {"default": default, "min": low, "max": high, "step": step}]


def _sampler_inputs(advanced: bool) -> dict[str, list[Any]]:
    common = {"steps": _int(20, 1, 1000), "cfg": _float(8.0, 0.0, 100.0, 0.1),
              "sampler_name": [list(SAMPLERS)], "scheduler": [list(SCHEDULES)],
              "positive": ["CONDITIONING"], "negative": ["CONDITIONING"], "latent_image": ["LATENT"]}
    if not advanced:
        return {"model": ["MODEL"], "seed": ["INT", {"default": 0, "min": 0, "max": MAX_SEED,
                                                    "control_after_generate": True}],
                **common, "denoise": _float(1.0, 0.0, 1.0, 0.01)}
    return {"model": ["MODEL"], "add_noise": [["enable", "disable"]],
            "noise_seed": ["INT", {"default": 0, "min": 0, "max": MAX_SEED, "control_after_generate": True}],
            **common, "start_at_step": _int(0, 0, 10000), "end_at_step": _int(10000, 0, 10000),
            "return_with_leftover_noise": [["disable", "enable"]]}


#: class_type -> required inputs (in ComfyUI's order: the UI format's widgets follow it), outputs, category
CLASSES: dict[str, Spec] = {
    "CheckpointLoaderSimple": {"inputs": {"ckpt_name": [[]]}, "outputs": ["MODEL", "CLIP", "VAE"],
                               "category": "loaders", "description": "Load a model the server knows"},
    "CLIPTextEncode": {"inputs": {"text": ["STRING", {"multiline": True, "dynamicPrompts": True}],
                                  "clip": ["CLIP"]},
                       "outputs": ["CONDITIONING"], "category": "conditioning"},
    "EmptyLatentImage": {"inputs": {"width": _int(512, 16, 16384, 8), "height": _int(512, 16, 16384, 8),
                                    "batch_size": _int(1, 1, 64)},
                         "outputs": ["LATENT"], "category": "latent"},
    "KSampler": {"inputs": _sampler_inputs(False), "outputs": ["LATENT"], "category": "sampling"},
    "KSamplerAdvanced": {"inputs": _sampler_inputs(True), "outputs": ["LATENT"], "category": "sampling"},
    "VAEDecode": {"inputs": {"samples": ["LATENT"], "vae": ["VAE"]}, "outputs": ["IMAGE"], "category": "latent"},
    "VAEEncode": {"inputs": {"pixels": ["IMAGE"], "vae": ["VAE"]}, "outputs": ["LATENT"], "category": "latent"},
    "VAEEncodeForInpaint": {"inputs": {"pixels": ["IMAGE"], "vae": ["VAE"], "mask": ["MASK"],
                                       "grow_mask_by": _int(6, 0, 64)},
                            "outputs": ["LATENT"], "category": "latent/inpaint"},
    "SetLatentNoiseMask": {"inputs": {"samples": ["LATENT"], "mask": ["MASK"]}, "outputs": ["LATENT"],
                           "category": "latent/inpaint"},
    "LoadImage": {"inputs": {"image": [[], {"image_upload": True}]}, "outputs": ["IMAGE", "MASK"],
                  "category": "image"},
    "LoadImageMask": {"inputs": {"image": [[], {"image_upload": True}], "channel": [["alpha"]]},
                      "outputs": ["MASK"], "category": "mask"},
    "ImageScale": {"inputs": {"image": ["IMAGE"], "upscale_method": [["nearest-exact", "bilinear", "area", "bicubic"]],
                              "width": _int(512, 0, 16384), "height": _int(512, 0, 16384),
                              "crop": [["disabled", "center"]]},
                   "outputs": ["IMAGE"], "category": "image/upscaling"},
    "LatentUpscale": {"inputs": {"samples": ["LATENT"],
                                 "upscale_method": [["nearest-exact", "bilinear", "area", "bicubic"]],
                                 "width": _int(512, 0, 16384, 8), "height": _int(512, 0, 16384, 8),
                                 "crop": [["disabled", "center"]]},
                      "outputs": ["LATENT"], "category": "latent"},
    "SaveImage": {"inputs": {"images": ["IMAGE"], "filename_prefix": ["STRING", {"default": "ComfyUI"}]},
                  "outputs": [], "category": "image", "output_node": True},
    "PreviewImage": {"inputs": {"images": ["IMAGE"]}, "outputs": [], "category": "image", "output_node": True},
    "ControlNetLoader": {"inputs": {"control_net_name": [[]]}, "outputs": ["CONTROL_NET"], "category": "loaders",
                         "description": "Load a ControlNet the server knows (<data dir>/models/controlnet)"},
    "ControlNetApply": {"inputs": {"conditioning": ["CONDITIONING"], "control_net": ["CONTROL_NET"], "image": ["IMAGE"],
                                   "strength": _float(1.0, 0.0, 10.0, 0.01)},
                        "outputs": ["CONDITIONING"], "category": "conditioning/controlnet"},
    "ControlNetApplyAdvanced": {"inputs": {"positive": ["CONDITIONING"], "negative": ["CONDITIONING"],
                                           "control_net": ["CONTROL_NET"], "image": ["IMAGE"],
                                           "strength": _float(1.0, 0.0, 10.0, 0.01),
                                           "start_percent": _float(0.0, 0.0, 1.0, 0.001),
                                           "end_percent": _float(1.0, 0.0, 1.0, 0.001)},
                                "outputs": ["CONDITIONING", "CONDITIONING"], "category": "conditioning/controlnet"},
    "LoraLoader": {"inputs": {"model": ["MODEL"], "clip": ["CLIP"], "lora_name": [[]],
                              "strength_model": _float(1.0, -10.0, 10.0, 0.01),
                              "strength_clip": _float(1.0, -10.0, 10.0, 0.01)},
                   "outputs": ["MODEL", "CLIP"], "category": "loaders",
                   "description": "Apply a LoRA the server knows to the model and its text encoder"},
    "LoraLoaderModelOnly": {"inputs": {"model": ["MODEL"], "lora_name": [[]],
                                       "strength_model": _float(1.0, -10.0, 10.0, 0.01)},
                            "outputs": ["MODEL"], "category": "loaders",
                            "description": "Apply a LoRA the server knows to the model only"},
}
#: LoRA loaders: a MODEL link through them still leads to the checkpoint loader's VAE and scheduler
LORA_CLASSES = ("LoraLoader", "LoraLoaderModelOnly")
#: output index -> the diffgraph node's output port
PORTS = {"CLIPTextEncode": ["conditioning"], "EmptyLatentImage": ["latent"], "KSampler": ["latent"],
         "KSamplerAdvanced": ["latent"], "VAEDecode": ["image"], "VAEEncode": ["latent"],
         "VAEEncodeForInpaint": ["latent"], "SetLatentNoiseMask": ["latent"], "LoadImage": ["image", "mask"],
         "LoadImageMask": ["mask"], "ImageScale": ["image"], "LatentUpscale": ["latent"],
         "ControlNetLoader": ["control_net"], "ControlNetApply": ["conditioning"],
         "LoraLoader": ["unet", "text_encoder"], "LoraLoaderModelOnly": ["unet"]}
#: ControlNetApplyAdvanced becomes two ApplyControlNet nodes, one per output (the same ControlNet on both)
ADVANCED_SUFFIXES = ("_positive", "_negative")
OUTPUT_CLASSES = ("SaveImage", "PreviewImage")


@dataclass
class Problem:
    node: str | None
    class_type: str | None
    field: str | None
    message: str
    kind: str = "value_not_valid"

    def __str__(self) -> str:
        where = [f"node {self.node!r}"] if self.node is not None else []
        if self.class_type:
            where.append(f"({self.class_type})")
        if self.field:
            where.append(f"input {self.field!r}")
        return f"{' '.join(where)}: {self.message}" if where else self.message


class ComfyError(Exception):
    """A prompt that cannot be translated; carries every problem found."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


@dataclass
class Resolvers:
    """How names in a prompt become diffgraph params. `checkpoint(name)` gives the LoadPipeline
    `model` or None, `image(name)` the LoadImage path or None; `choices` list what would be valid;
    `check_sampler(name, sigmas, spacing)` returns a message when diffusers cannot build that."""

    checkpoint: Callable[[str], str | None]
    checkpoint_choices: Callable[[], list[str]]
    image: Callable[[str], str | None]
    check_sampler: Callable[[str, str, str], str | None] | None = None
    #: `controlnet(name)`: the LoadControlNet `model` for a control_net_name, or None (then `controlnet_choices`)
    controlnet: Callable[[str], str | None] | None = None
    controlnet_choices: Callable[[], list[str]] | None = None
    #: lora_name -> the LoadLoRA `lora` param or None, and the names that would be valid
    lora: Callable[[str], str | None] = lambda name: None
    lora_choices: Callable[[], list[str]] = list


@dataclass
class Translation:
    document: dict[str, Any]
    #: diffgraph node id -> the prompt's node id, for the nodes standing for a prompt node
    node_ids: dict[str, str]
    #: the prompt's output node ids that will run
    outputs: list[str]
    class_types: dict[str, str] = field(default_factory=dict)


def _node_id(comfy_id: str) -> str:
    """A diffgraph node id for a prompt node id (ids may not hold '.', '/' or '$')."""
    safe = re.sub(r"[./$\s]", "_", comfy_id)
    return safe if safe == comfy_id else f"n_{safe}"


class _Translator:
    def __init__(self, prompt: dict[str, Any], resolvers: Resolvers):
        self.prompt = prompt
        self.resolvers = resolvers
        self.problems: list[Problem] = []
        self.nodes: dict[str, dict[str, Any]] = {}
        self.ids = {cid: _node_id(cid) for cid in prompt}

    def problem(self, cid: str | None, field: str | None, message: str, kind: str = "value_not_valid") -> None:
        class_type = self.prompt.get(cid, {}).get("class_type") if cid is not None else None
        self.problems.append(Problem(cid, class_type if isinstance(class_type, str) else None, field, message,
                                     kind))

    # -- inputs -------------------------------------------------------------------------------

    def source(self, cid: str, name: str, expected: str) -> tuple[str, int] | None:
        """The (prompt node id, output index) a link input comes from, type-checked."""
        inputs = self.prompt[cid]["inputs"]
        if name not in inputs:
            self.problem(cid, name, f"required input {name!r} ({expected}) is missing", "required_input_missing")
            return None
        raw = inputs[name]
        if not (isinstance(raw, list) and len(raw) == 2 and isinstance(raw[0], (str, int))
                and isinstance(raw[1], int) and not isinstance(raw[1], bool)):
            self.problem(cid, name, f"takes a link [node_id, output_index] to a {expected} output, got {raw!r}")
            return None
        src, index = str(raw[0]), raw[1]
        node = self.prompt.get(src)
        if node is None:
            self.problem(cid, name, f"links to node {src!r}, which is not in the prompt")
            return None
        outputs = CLASSES.get(node.get("class_type"), {}).get("outputs")
        if outputs is None:
            return None  # the source's own problem is reported on it
        if not 0 <= index < len(outputs):
            self.problem(cid, name, f"links to output {index} of node {src!r} ({node['class_type']}), which has "
                                    f"outputs 0..{len(outputs) - 1}")
            return None
        if outputs[index] != expected:
            self.problem(cid, name, f"takes {expected}; output {index} of node {src!r} ({node['class_type']}) "
                                    f"is {outputs[index]}", "return_type_mismatch")
            return None
        return src, index

    def link(self, cid: str, name: str, expected: str) -> str | None:
        """A diffgraph link `node.output` for a link input."""
        found = self.source(cid, name, expected)
        if found is None:
            return None
        src, index = found
        class_type = self.prompt[src]["class_type"]
        if class_type == "CheckpointLoaderSimple":
            return f"{self.ids[src]}.{('unet', 'text_encoder', 'vae')[index]}"
        if class_type == "ControlNetApplyAdvanced":
            return f"{self.ids[src]}{ADVANCED_SUFFIXES[index]}.conditioning"
        return f"{self.ids[src]}.{PORTS[class_type][index]}"

    def value(self, cid: str, name: str) -> Any:
        """A widget input, checked against CLASSES (type, bounds, choices)."""
        class_type = self.prompt[cid]["class_type"]
        spec = CLASSES[class_type]["inputs"][name]
        options = spec[1] if len(spec) > 1 else {}
        inputs = self.prompt[cid]["inputs"]
        if name not in inputs:
            if "default" in options:
                return options["default"]
            self.problem(cid, name, f"required input {name!r} is missing", "required_input_missing")
            return None
        raw = inputs[name]
        if isinstance(raw, list) and len(raw) == 2 and isinstance(raw[1], int):
            self.problem(cid, name, "links into widget inputs are not supported: give the value itself")
            return None
        kind = spec[0]
        if isinstance(kind, list):  # a choice; empty lists are checked by the caller (models, images)
            if kind and raw not in kind:
                self.problem(cid, name, f"{raw!r} is not one of {', '.join(map(str, kind))}")
                return None
            return raw
        if kind == "STRING":
            if not isinstance(raw, str):
                self.problem(cid, name, f"takes a string, got {raw!r}")
                return None
            return raw
        number_ok = (isinstance(raw, int) if kind == "INT" else isinstance(raw, (int, float)))
        if isinstance(raw, bool) or not number_ok:
            self.problem(cid, name, f"takes {'an integer' if kind == 'INT' else 'a number'}, got {raw!r}")
            return None
        if not options["min"] <= raw <= options["max"]:
            self.problem(cid, name, f"{raw} is out of range: {options['min']}..{options['max']}",
                         "value_smaller_than_min" if raw < options["min"] else "value_bigger_than_max")
            return None
        step = options.get("step", 1)
        if kind == "INT" and step > 1 and (raw - options["min"]) % step:
            self.problem(cid, name, f"{raw} is not a multiple of {step}")
            return None
        return raw

    def add(self, cid: str, node_type: str, inputs: dict[str, str | None], params: dict[str, Any],
            suffix: str = "") -> str:
        node_id = self.ids[cid] + suffix
        node: dict[str, Any] = {"type": node_type}
        links = {k: v for k, v in inputs.items() if v is not None}
        if links:
            node["inputs"] = links
        if params:
            node["params"] = params
        self.nodes[node_id] = node
        return node_id

    # -- helpers shared by several classes ---------------------------------------------------------

    def loader_of(self, cid: str, name: str = "model") -> str | None:
        found = self.source(cid, name, "MODEL")
        return self.ids[self.checkpoint_behind(found[0])] if found else None

    def unet_of(self, cid: str) -> str | None:
        """The link for a MODEL input whose source `loader_of` checked: the loader's or a LoRA loader's unet."""
        source = str(self.prompt[cid]["inputs"]["model"][0])
        return f"{self.ids[source]}.unet"

    def checkpoint_behind(self, cid: str) -> str:
        """The prompt node a MODEL comes from, through any LoRA loaders (their own links are checked
        when they are translated)."""
        seen = {cid}
        while self.prompt[cid].get("class_type") in LORA_CLASSES:
            raw = self.prompt[cid].get("inputs", {}).get("model")
            if not (isinstance(raw, list) and raw and str(raw[0]) in self.prompt) or str(raw[0]) in seen:
                break
            cid = str(raw[0])
            seen.add(cid)
        return cid

    def sampler_loader(self, latent_cid: str) -> str | None:
        """The checkpoint loader of a sampler fed by this latent node (EmptyLatentImage has no model
        link; diffgraph's EmptyLatent reads the channels and downscale factor from the VAE)."""
        for node in self.prompt.values():
            if node.get("class_type") in ("KSampler", "KSamplerAdvanced"):
                raw = node["inputs"].get("latent_image")
                if isinstance(raw, list) and raw and str(raw[0]) == latent_cid:
                    model = node["inputs"].get("model")
                    if isinstance(model, list) and model and str(model[0]) in self.prompt:
                        return self.ids[self.checkpoint_behind(str(model[0]))]
        loaders = [cid for cid, node in self.prompt.items() if node.get("class_type") == "CheckpointLoaderSimple"]
        return self.ids[loaders[0]] if len(loaders) == 1 else None

    def scheduler(self, cid: str, loader: str | None) -> str | None:
        sampler = self.value(cid, "sampler_name")
        schedule = self.value(cid, "scheduler")
        if sampler is None or schedule is None or loader is None:
            return None
        name, (sigmas, spacing) = SAMPLERS[sampler], SCHEDULES[schedule]
        if self.resolvers.check_sampler is not None:
            message = self.resolvers.check_sampler(name, sigmas, spacing)
            if message is not None:
                self.problem(cid, "scheduler", f"{sampler} with the {schedule} scheduler: {message}")
                return None
        params = {"name": name}
        if sigmas != "default":
            params["sigmas"] = sigmas
        if spacing != "default":
            params["spacing"] = spacing
        return self.add(cid, "Scheduler", {"scheduler": f"{loader}.scheduler"}, params, "_scheduler") + \
            ".scheduler"

    # -- one method per class ------------------------------------------------------------------

    def CheckpointLoaderSimple(self, cid: str) -> None:
        name = self.value(cid, "ckpt_name")
        if name is None:
            return
        model = self.resolvers.checkpoint(name) if isinstance(name, str) else None
        if model is None:
            choices = self.resolvers.checkpoint_choices()
            self.problem(cid, "ckpt_name", f"{name!r} is not a model this server knows; choose one of "
                                           f"{', '.join(choices) or '(none)'}")
            return
        self.add(cid, "LoadPipeline", {}, {"model": model})

    def LoraLoader(self, cid: str, model_only: bool = False) -> None:
        name = self.value(cid, "lora_name")
        lora = self.resolvers.lora(name) if isinstance(name, str) and name else None
        if lora is None and name is not None:
            choices = self.resolvers.lora_choices()
            self.problem(cid, "lora_name", f"{name!r} is not a LoRA this server knows; choose one of "
                                           f"{', '.join(choices) or '(none: put .safetensors LoRAs in models/loras)'}")
        strength_model = self.value(cid, "strength_model")
        inputs = {"unet": self.link(cid, "model", "MODEL")}
        params = {"lora": lora or "", "strength_model": strength_model}
        if model_only:
            params["strength_text"] = 0.0
        else:
            inputs["text_encoder"] = self.link(cid, "clip", "CLIP")
            params["strength_text"] = self.value(cid, "strength_clip")
        self.add(cid, "LoadLoRA", inputs, params)

    def LoraLoaderModelOnly(self, cid: str) -> None:
        self.LoraLoader(cid, model_only=True)

    def CLIPTextEncode(self, cid: str) -> None:
        text = self.value(cid, "text")
        self.add(cid, "TextEncode", {"text_encoder": self.link(cid, "clip", "CLIP")}, {"text": text or ""})

    def EmptyLatentImage(self, cid: str) -> None:
        width, height, batch = (self.value(cid, k) for k in ("width", "height", "batch_size"))
        loader = self.sampler_loader(cid)
        if loader is None:
            self.problem(cid, None, "no KSampler with a checkpoint loader uses this latent; diffgraph needs the "
                                    "model's VAE to shape an empty latent")
            return
        self.add(cid, "EmptyLatent", {"vae": f"{loader}.vae", "unet": f"{loader}.unet"},
                 {"width": width, "height": height, "batch_size": batch})

    def KSampler(self, cid: str) -> None:
        loader = self.loader_of(cid)
        scheduler = self.scheduler(cid, loader)
        inputs = {"unet": self.unet_of(cid) if loader else None, "scheduler": scheduler,
                  "latent": self.link(cid, "latent_image", "LATENT"),
                  "positive": self.link(cid, "positive", "CONDITIONING"),
                  "negative": self.link(cid, "negative", "CONDITIONING")}
        params = {"seed": self.value(cid, "seed"), "steps": self.value(cid, "steps"), "cfg": self.value(cid, "cfg"),
                  "strength": self.value(cid, "denoise")}
        self.add(cid, "SampleLoop", inputs, params)

    def KSamplerAdvanced(self, cid: str) -> None:
        loader = self.loader_of(cid)
        scheduler = self.scheduler(cid, loader)
        steps, start, end = (self.value(cid, k) for k in ("steps", "start_at_step", "end_at_step"))
        if self.value(cid, "add_noise") == "disable":
            self.problem(cid, "add_noise", "only 'enable' is supported (diffgraph's sampler always adds the noise)")
        if self.value(cid, "return_with_leftover_noise") == "enable":
            self.problem(cid, "return_with_leftover_noise", "only 'disable' is supported")
        strength = 1.0
        if isinstance(steps, int) and isinstance(end, int) and end < steps:
            self.problem(cid, "end_at_step", f"stopping early is not supported: end_at_step must be >= steps ({steps})")
        if isinstance(steps, int) and isinstance(start, int):
            if start >= steps:
                self.problem(cid, "start_at_step", f"must be below steps ({steps})")
            else:
                strength = (steps - start) / steps
        inputs = {"unet": self.unet_of(cid) if loader else None, "scheduler": scheduler,
                  "latent": self.link(cid, "latent_image", "LATENT"),
                  "positive": self.link(cid, "positive", "CONDITIONING"),
                  "negative": self.link(cid, "negative", "CONDITIONING")}
        self.add(cid, "SampleLoop", inputs, {"seed": self.value(cid, "noise_seed"), "steps": steps,
                                             "cfg": self.value(cid, "cfg"), "strength": strength})

    def VAEDecode(self, cid: str) -> None:
        self.add(cid, "VAEDecode", {"vae": self.link(cid, "vae", "VAE"),
                                    "latent": self.link(cid, "samples", "LATENT")}, {})

    def VAEEncode(self, cid: str) -> None:
        self.add(cid, "VAEEncode", {"vae": self.link(cid, "vae", "VAE"),
                                    "image": self.link(cid, "pixels", "IMAGE")}, {})

    def VAEEncodeForInpaint(self, cid: str) -> None:
        grow = self.value(cid, "grow_mask_by")
        mask = self.link(cid, "mask", "MASK")
        grown = self.add(cid, "Mask", {"mask": mask}, {"grow": grow or 0}, "_mask") + ".mask"
        self.add(cid, "VAEEncode", {"vae": self.link(cid, "vae", "VAE"), "image": self.link(cid, "pixels", "IMAGE"),
                                    "mask": grown}, {})

    def SetLatentNoiseMask(self, cid: str) -> None:
        found = self.source(cid, "samples", "LATENT")
        mask = self.link(cid, "mask", "MASK")
        if found is None:
            return
        src = found[0]
        if self.prompt[src]["class_type"] != "VAEEncode":
            self.problem(cid, "samples", "diffgraph masks a latent while encoding it: link a VAEEncode here, got "
                                         f"{self.prompt[src]['class_type']}")
            return
        self.add(cid, "VAEEncode", {"vae": self.link(src, "vae", "VAE"), "image": self.link(src, "pixels", "IMAGE"),
                                    "mask": mask}, {})

    def _image(self, cid: str) -> str | None:
        name = self.value(cid, "image")
        path = self.resolvers.image(name) if isinstance(name, str) and name else None
        if path is None:
            self.problem(cid, "image", f"{name!r} is not an uploaded image: upload it first (POST /upload/image)")
        return path

    def LoadImage(self, cid: str) -> None:
        self.add(cid, "LoadImage", {}, {"image": self._image(cid)})

    def LoadImageMask(self, cid: str) -> None:
        self.value(cid, "channel")
        self.add(cid, "LoadImage", {}, {"image": self._image(cid)})

    def ImageScale(self, cid: str) -> None:
        params = {"method": self.value(cid, "upscale_method"), "width": self.value(cid, "width"),
                  "height": self.value(cid, "height"), "crop": self.value(cid, "crop")}
        if params["width"] == 0 and params["height"] == 0:
            self.problem(cid, "width", "give a width or a height (0 keeps the aspect ratio from the other)")
        self.add(cid, "ScaleImage", {"image": self.link(cid, "image", "IMAGE")}, params)

    def LatentUpscale(self, cid: str) -> None:
        loaders = [c for c, n in self.prompt.items() if n.get("class_type") == "CheckpointLoaderSimple"]
        if len(loaders) != 1:
            self.problem(cid, None, "diffgraph scales a latent with its VAE's downscale factor: with "
                                    f"{len(loaders)} checkpoint loaders in the prompt it cannot tell which")
            return
        params = {"method": self.value(cid, "upscale_method"), "width": self.value(cid, "width"),
                  "height": self.value(cid, "height"), "crop": self.value(cid, "crop")}
        if params["width"] == 0 and params["height"] == 0:
            self.problem(cid, "width", "give a width or a height (0 keeps the aspect ratio from the other)")
        self.add(cid, "ScaleLatent", {"latent": self.link(cid, "samples", "LATENT"),
                                      "vae": f"{self.ids[loaders[0]]}.vae"}, params)

    def ControlNetLoader(self, cid: str) -> None:
        name = self.value(cid, "control_net_name")
        resolve = self.resolvers.controlnet
        model = resolve(name) if isinstance(name, str) and name and resolve is not None else None
        if model is None:
            choices = self.resolvers.controlnet_choices() if self.resolvers.controlnet_choices else []
            self.problem(cid, "control_net_name", f"{name!r} is not a ControlNet this server knows; choose one of "
                                                  f"{', '.join(choices) or '(none: put them in <data dir>/models/controlnet)'}")
            return
        self.add(cid, "LoadControlNet", {}, {"model": model})

    def ControlNetApply(self, cid: str) -> None:
        self.add(cid, "ApplyControlNet", {"conditioning": self.link(cid, "conditioning", "CONDITIONING"),
                                          "control_net": self.link(cid, "control_net", "CONTROL_NET"),
                                          "image": self.link(cid, "image", "IMAGE")},
                 {"strength": self.value(cid, "strength")})

    def ControlNetApplyAdvanced(self, cid: str) -> None:
        start, end = self.value(cid, "start_percent"), self.value(cid, "end_percent")
        if isinstance(start, (int, float)) and isinstance(end, (int, float)) and start > end:
            self.problem(cid, "end_percent", f"{end} is before start_percent {start}; it must be at least start_percent")
        control_net, image = self.link(cid, "control_net", "CONTROL_NET"), self.link(cid, "image", "IMAGE")
        params = {"strength": self.value(cid, "strength"), "start": start, "end": end}
        for name, suffix in zip(("positive", "negative"), ADVANCED_SUFFIXES, strict=True):
            self.add(cid, "ApplyControlNet", {"conditioning": self.link(cid, name, "CONDITIONING"),
                                              "control_net": control_net, "image": image}, params, suffix)

    def SaveImage(self, cid: str) -> None:
        prefix = self.value(cid, "filename_prefix")
        if isinstance(prefix, str) and (not prefix.strip() or FORBIDDEN_PREFIX.search(prefix)
                                        or prefix.startswith(".") or len(prefix) > 100):
            self.problem(cid, "filename_prefix", f"{prefix!r} is not a plain file name prefix: 1-100 characters, no "
                                                 "path separators or subfolders, no leading '.', none of : * ? \" < > |")
            prefix = None
        self.add(cid, "SaveImage", {"images": self.link(cid, "images", "IMAGE")}, {"prefix": prefix or "ComfyUI"})

    def PreviewImage(self, cid: str) -> None:
        self.add(cid, "PreviewImage", {"images": self.link(cid, "images", "IMAGE")}, {})


def translate_prompt(prompt: Any, resolvers: Resolvers, targets: list[str] | None = None,
                     name: str = "comfy prompt") -> Translation:
    """An API-format prompt as a diffgraph workflow document, or a ComfyError listing every problem."""
    if not isinstance(prompt, dict) or not prompt:
        raise ComfyError([Problem(None, None, "prompt", "the prompt must be a non-empty object of node id -> "
                                                        "{class_type, inputs}", "invalid_prompt")])
    translator = _Translator(prompt, resolvers)
    for cid, node in prompt.items():
        if not isinstance(node, dict) or not isinstance(node.get("class_type"), str):
            translator.problems.append(Problem(cid, None, "class_type", "each node needs a class_type string",
                                               "invalid_prompt"))
            continue
        if not isinstance(node.get("inputs", {}), dict):
            translator.problem(cid, "inputs", "inputs must be an object", "invalid_prompt")
            continue
        node.setdefault("inputs", {})
    if translator.problems:
        raise ComfyError(translator.problems)
    taken = set(translator.ids.values())
    if len(taken) != len(translator.ids):
        raise ComfyError([Problem(None, None, "prompt", "node ids collide once '.', '/', '$' and spaces are "
                                                        "replaced; rename them", "invalid_prompt")])
    for cid, node in prompt.items():
        class_type = node["class_type"]
        if class_type not in CLASSES:
            translator.problem(cid, "class_type", f"{class_type!r} is not supported; supported: "
                                                  f"{', '.join(CLASSES)}", "class_not_supported")
        else:
            getattr(translator, class_type)(cid)
    outputs = [cid for cid, node in prompt.items() if node.get("class_type") in OUTPUT_CLASSES]
    if targets is not None:
        unknown = [t for t in targets if t not in outputs]
        if unknown:
            translator.problems.append(Problem(None, None, "partial_execution_targets",
                                               f"{', '.join(map(repr, unknown))} are not output nodes of the prompt; "
                                               f"its output nodes: {', '.join(outputs) or '(none)'}"))
        outputs = [cid for cid in outputs if cid in targets]
        for cid in prompt:
            if prompt[cid].get("class_type") in OUTPUT_CLASSES and cid not in outputs:
                translator.nodes.pop(translator.ids[cid], None)
    if not outputs and not translator.problems:
        translator.problems.append(Problem(None, None, "prompt", "the prompt has no output node (SaveImage or "
                                                                 "PreviewImage)", "prompt_no_outputs"))
    if translator.problems:
        raise ComfyError(translator.problems)
    document = {"format": "diffgraph/v1", "name": name, "nodes": translator.nodes}
    return Translation(document, {translator.ids[cid]: cid for cid in prompt if translator.ids[cid] in translator.nodes},
                       outputs, {cid: prompt[cid]["class_type"] for cid in prompt})


# ---------------------------------------------------------------------------------------------
# the UI format


def is_ui_format(data: Any) -> bool:
    return isinstance(data, dict) and isinstance(data.get("nodes"), list) and isinstance(data.get("links"), list)


def ui_to_api(data: dict[str, Any]) -> tuple[dict[str, Any], list[Problem]]:
    """A saved ComfyUI editor workflow as an API-format prompt; problems name the node and field.
    Widgets are read in the input order of CLASSES (a seed's "control after generate" widget skipped)."""
    problems: list[Problem] = []
    links: dict[Any, tuple[str, int]] = {}
    for link in data["links"]:
        if isinstance(link, list) and len(link) >= 5:
            links[link[0]] = (str(link[1]), int(link[2]))
        elif isinstance(link, dict) and {"id", "origin_id", "origin_slot"} <= link.keys():
            links[link["id"]] = (str(link["origin_id"]), int(link["origin_slot"]))
    prompt: dict[str, Any] = {}
    for node in data["nodes"]:
        if not isinstance(node, dict) or "id" not in node or not isinstance(node.get("type"), str):
            problems.append(Problem(None, None, "nodes", f"not a node: {str(node)[:80]}", "invalid_prompt"))
            continue
        cid, class_type = str(node["id"]), node["type"]
        if node.get("mode") in (2, 4):  # muted or bypassed: ComfyUI does not run them either
            continue
        if class_type in ("Note", "MarkdownNote", "Reroute", "PrimitiveNode"):
            if class_type != "Note" and class_type != "MarkdownNote":
                problems.append(Problem(cid, class_type, None, f"{class_type} nodes are not converted: link the nodes "
                                                               "directly and type the value into the widget",
                                        "class_not_supported"))
            continue
        spec = CLASSES.get(class_type)
        inputs: dict[str, Any] = {}
        for port in node.get("inputs") or []:
            if isinstance(port, dict) and port.get("link") is not None and port.get("link") in links:
                inputs[port["name"]] = list(links[port["link"]])
        if spec is not None:
            widgets = list(node.get("widgets_values") or []) if isinstance(node.get("widgets_values"), list) else []
            if isinstance(node.get("widgets_values"), dict):
                inputs.update({k: v for k, v in node["widgets_values"].items() if k in spec["inputs"]})
                widgets = []
            for name, input_spec in spec["inputs"].items():
                kind = input_spec[0]
                if isinstance(kind, str) and kind in LINK_TYPES:
                    continue
                if not widgets:
                    break
                value = widgets.pop(0)
                if name not in inputs:
                    inputs[name] = value
                if len(input_spec) > 1 and input_spec[1].get("control_after_generate") and widgets:
                    widgets.pop(0)
                if len(input_spec) > 1 and input_spec[1].get("image_upload") and widgets and widgets[0] == "image":
                    widgets.pop(0)
        prompt[cid] = {"class_type": class_type, "inputs": inputs}
    return prompt, problems


def load_comfy_file(text: str) -> tuple[dict[str, Any], list[Problem]]:
    """A ComfyUI workflow file (API or UI format, JSON) as an API-format prompt."""
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ComfyError([Problem(None, None, None, f"not JSON: {exc}", "invalid_prompt")]) from None
    if is_ui_format(data):
        return ui_to_api(data)
    if isinstance(data, dict) and isinstance(data.get("prompt"), dict):  # a saved POST /prompt body
        data = data["prompt"]
    return data, []


# ---------------------------------------------------------------------------------------------
# `diffgraph import`

MAX_FILE_BYTES = 16 * 1024 * 1024


def _promote(document: dict[str, Any], node_type: str, field_name: str, param: str, kind: str) -> None:
    """With exactly one such node, its literal becomes a template param (`--set model=...` then works)."""
    found = [node for node in document["nodes"].values() if node["type"] == node_type]
    if len(found) != 1:
        return
    document.setdefault("params", {})[param] = {"type": kind, "default": found[0]["params"][field_name]}
    found[0]["params"][field_name] = f"${param}"


def import_file(text: str, bundled: dict[str, str], check_sampler: Callable[[str, str, str], str | None] | None,
                name: str = "imported") -> dict[str, Any]:
    """A ComfyUI workflow file (API or UI format) as a diffgraph document, or a ComfyError per node.
    `bundled` maps model names (`tiny-sd`) to the model param that loads them; any other ckpt_name is
    kept as written (a path the user can also change with `--set model=...`), images likewise."""
    prompt, problems = load_comfy_file(text)
    resolvers = Resolvers(lambda ckpt: bundled.get(ckpt, ckpt), lambda: list(bundled), lambda image: image,
                          check_sampler, controlnet=lambda name: name, lora=lambda name: name)
    try:
        translation = translate_prompt(prompt, resolvers, name=name)
    except ComfyError as exc:
        raise ComfyError(problems + exc.problems) from None
    if problems:
        raise ComfyError(problems)
    document = translation.document
    document["description"] = "Imported from a ComfyUI workflow"
    _promote(document, "LoadPipeline", "model", "model", "STRING")
    _promote(document, "LoadImage", "image", "image", "STRING")
    _promote(document, "LoadControlNet", "model", "controlnet", "STRING")
    _promote(document, "LoadLoRA", "lora", "lora", "STRING")
    nodes = document.pop("nodes")
    document["nodes"] = nodes  # after params, as the templates read
    return document
