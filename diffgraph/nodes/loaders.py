"""Model loaders: check that `model` names a usable model, load it into the model cache, and hand
references to the nodes that compute with it (see `models.py` for where models may come from)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from diffgraph.engine import FileAccess, Node, NodeError, Output, Param, RunContext, String, node

from . import families, models
from .types import VAE, DepthModel, Scheduler, TextEncoder, UNet

UNET_CLASSES = ("UNet2DConditionModel", "UNet2DModel")
VAE_CLASSES = ("AutoencoderKL", "AsymmetricAutoencoderKL", "AutoencoderTiny")
TEXT_ENCODER_CLASSES = ("CLIPTextModel", "CLIPTextModelWithProjection", "T5EncoderModel")

MODEL_DOC = "a diffusers folder, a Hugging Face repo id, or a single-file .safetensors checkpoint"
CONFIG_DOC = ("single-file checkpoints only: a diffusers folder or repo id of the same family providing the model's "
              "configs and the components the file lacks; empty for an SDXL, SD3 or Flux.1 file: the model diffusers "
              "names for it, if the Hugging Face cache holds it (never downloaded)")
PICKLE_DOC = "allow pickle weights (.ckpt/.bin/.pt), which can run code when loaded: only for files you trust"


def _source(model: str, revision: str, allow_pickle: bool, access: FileAccess) -> tuple[Path, bool]:
    """(resolved path, is a single checkpoint file)."""
    path = models.resolve_model(model, revision, access=access)
    if path.is_file():
        models.check_checkpoint_file(path, allow_pickle)
        return path, True
    return path, False


def _config_folder(config: str, revision: str, access: FileAccess) -> Path:
    if not config.strip():
        raise NodeError("a single-file checkpoint needs `config`: a diffusers folder (or repo id) with the "
                        "model's configs, such as the model it was trained from", "config")
    folder = models.resolve_model(config, revision, field="config", access=access)
    if not (folder / "model_index.json").is_file():
        raise NodeError(f"{folder} is not a diffusers folder (no model_index.json)", "config")
    return folder


def _fingerprint(cls, params: dict[str, Any], access: FileAccess) -> str | None:
    """Loaders follow the content of local model files, not only their path (see Node.fingerprint)."""
    revision = str(params.get("revision") or "")
    parts = [models.local_fingerprint(str(params.get(name) or ""), access, name, revision) for name in ("model", "config")]
    return None if parts == [None, None] else "|".join(part or "" for part in parts)


def _ref(ctx, kind: str, path: Path, subfolder: str, revision: str, allow_pickle: bool, config: str = "",
         family: str = ""):
    fingerprint = models.local_fingerprint(str(path)) or ""  # `path` is resolved already, under the policy
    ref = models.ModelRef(kind=kind, path=str(path), subfolder=subfolder, revision=revision, config=config,
                          allow_pickle=allow_pickle, fingerprint=fingerprint, family=family)
    models.model_cache(ctx).load(ref, ctx.device, ctx.dtype, field="model")
    return ref


def _family(path: Path, single: bool) -> families.Family | None:
    """The family of a pipeline folder or checkpoint; None for anything else (a component folder,
    an unknown pipeline: the caller explains)."""
    try:
        return families.family_of_checkpoint(path) if single else families.family_of_folder(path)
    except (families.UnknownFamily, OSError):
        return None


def _family_refs(ctx, path: Path, family: families.Family, revision: str, allow_pickle: bool,
                 config: str = "") -> dict:
    """unet (the family's denoiser), vae, text_encoder (all its encoders) and scheduler refs of a
    modular family's folder or single file; they all point into the one ModularPipeline the model
    cache holds."""
    folder, config_path = path, ""
    if path.is_file():  # a single file: its configs, and the components it lacks, come from a folder
        folder = _family_config_folder(path, family, config, revision, ctx.access)
        config_path = str(folder)
    missing = [part for part in (family.denoiser, "vae", "scheduler") if not (folder / part).is_dir()]
    if not any(part.name.startswith("text_encoder") for part in folder.iterdir() if part.is_dir()):
        missing.append("text_encoder")  # an SDXL refiner has the second one only
    if missing:
        raise NodeError(f"{folder} is a {family.title} pipeline folder without {', '.join(missing)}",
                        "config" if config_path else "model")
    refs = {"unet": _ref(ctx, "unet", path, family.denoiser, revision, allow_pickle, config_path, family=family.name)}
    for kind in ("vae", "text_encoder"):
        refs[kind] = models.ModelRef(**{**refs["unet"].to_json(), "kind": kind, "subfolder": kind})
    scheduler = models.scheduler_ref(folder)
    refs["scheduler"] = models.ModelRef(**{**scheduler.to_json(), "family": family.name})
    return refs


def _family_config_folder(path: Path, family: families.Family, config: str, revision: str, access: FileAccess) -> Path:
    """The diffusers folder with a single-file checkpoint's configs: `config`, or else the model
    diffusers names for such a checkpoint if the Hugging Face cache holds it (never downloaded)."""
    if config.strip():
        folder = models.resolve_model(config, revision, field="config", access=access)
    else:
        folder = models.default_single_file_config(path, family.title)
    try:
        found = families.family_of_folder(folder)
    except families.UnknownFamily as exc:
        raise NodeError(f"{exc} (`config` must be a diffusers {family.title} folder or repo id)", "config") from None
    if found.name != family.name:
        raise NodeError(f"{path.name} is a {family.title} checkpoint, but `config` holds a {found.title} model "
                        f"(family {found.name}): name a {family.title} diffusers folder or repo id", "config")
    return folder


def _component(ctx, model: str, revision: str, allow_pickle: bool, config: str, kind: str,
               names: tuple[str, ...], classes: tuple[str, ...]):
    path, single = _source(model, revision, allow_pickle, ctx.access)
    family = _family(path, single)
    if family is not None and family.modular:
        return _family_refs(ctx, path, family, revision, allow_pickle, config)[kind]
    if single:
        if kind not in ("unet", "vae", "text_encoder"):
            raise NodeError(f"a single-file checkpoint holds no {kind}", "model")
        return _ref(ctx, kind, path, "", revision, allow_pickle, str(_config_folder(config, revision, ctx.access)))
    subfolder = models.find_component(path, names, classes, "model")
    return _ref(ctx, kind, path, subfolder, revision, allow_pickle)


@node("LoadPipeline", category="loaders")
class LoadPipeline(Node):
    """Load a diffusion model: Stable Diffusion 1.x/2.x (or a pixel-space DDPM model), SDXL, SD3,
    Flux.1, Flux.2 [klein], Z-Image or Qwen-Image. `unet` is the model's denoiser (a UNet or a
    transformer) and `text_encoder` all of its text encoders with their tokenizers. A model without a VAE or text encoder leaves those
    outputs empty. `family` says which family the model's own files declare."""

    model: str = Param(widget="model:pipeline", doc=MODEL_DOC)
    revision: str = Param("", doc="Hugging Face repo ids only: a branch, tag or commit")
    config: str = Param("", doc=CONFIG_DOC)
    allow_pickle: bool = Param(False, doc=PICKLE_DOC)
    outputs = {
        "unet": Output(UNet),
        "vae": Output(VAE),
        "text_encoder": Output(TextEncoder, doc="the text encoder together with its tokenizer"),
        "scheduler": Output(Scheduler, doc="the model's own scheduler config"),
        "family": Output(String, doc="the model family: " + ", ".join(f"{f.name} ({f.title})"
                                                                      for f in families.FAMILIES.values())),
    }

    fingerprint = classmethod(_fingerprint)

    def run(self, ctx: RunContext) -> dict[str, Any]:
        path, single = _source(self.model, self.revision, self.allow_pickle, ctx.access)
        family = _family(path, single)
        if family is not None and family.modular:
            return {**_family_refs(ctx, path, family, self.revision, self.allow_pickle, self.config),
                    "family": family.name}
        return {**self._sd_outputs(ctx, path, single), "family": "sd"}

    def _sd_outputs(self, ctx, path: Path, single: bool) -> dict:
        if single:
            config = _config_folder(self.config, self.revision, ctx.access)
            refs = {kind: _ref(ctx, kind, path, "", self.revision, self.allow_pickle, str(config))
                    for kind in ("unet", "vae", "text_encoder")}
            return {**refs, "scheduler": models.scheduler_ref(config)}
        if not (path / "model_index.json").is_file():
            what = models.component_class(path, "")
            found = f"a single {what[1]} (use LoadUNet/LoadVAE/LoadTextEncoder)" if what else "no model_index.json"
            raise NodeError(f"{path} is not a diffusers pipeline folder: {found}", "model")
        index = models.component_class(path, "unet")
        if index is None or index[1] not in UNET_CLASSES:
            raise NodeError(f"{path} is not a diffusion model: it has no UNet "
                            f"({index[1] if index else 'no unet entry in model_index.json'})", "model")
        if not (path / "scheduler" / "scheduler_config.json").is_file():
            raise NodeError(f"{path} has no scheduler/scheduler_config.json", "model")
        outputs = {"unet": _ref(ctx, "unet", path, "unet", self.revision, self.allow_pickle),
                   "scheduler": models.scheduler_ref(path)}
        for kind, classes in (("vae", VAE_CLASSES), ("text_encoder", TEXT_ENCODER_CLASSES)):
            component = models.component_class(path, kind)
            if component is None:
                outputs[kind] = None
            elif component[1] not in classes:
                raise NodeError(f"{path}: its {kind} is a {component[1]}, not one of {', '.join(classes)}", "model")
            else:
                outputs[kind] = _ref(ctx, kind, path, kind, self.revision, self.allow_pickle)
        return outputs


@node("LoadUNet", category="loaders")
class LoadUNet(Node):
    """Load only the UNet of a model (a pipeline folder, a `unet` folder, or a checkpoint)."""

    model: str = Param(widget="model:unet", doc=MODEL_DOC)
    revision: str = Param("")
    config: str = Param("", doc=CONFIG_DOC)
    allow_pickle: bool = Param(False, doc=PICKLE_DOC)
    outputs = {"unet": Output(UNet)}

    fingerprint = classmethod(_fingerprint)

    def run(self, ctx: RunContext) -> dict[str, Any]:
        return {"unet": _component(ctx, self.model, self.revision, self.allow_pickle, self.config, "unet",
                                   ("unet", ""), UNET_CLASSES)}


@node("LoadVAE", category="loaders")
class LoadVAE(Node):
    """Load only the VAE of a model (a pipeline folder, a `vae` folder, or a checkpoint)."""

    model: str = Param(widget="model:vae", doc=MODEL_DOC)
    revision: str = Param("")
    config: str = Param("", doc=CONFIG_DOC)
    allow_pickle: bool = Param(False, doc=PICKLE_DOC)
    outputs = {"vae": Output(VAE)}

    fingerprint = classmethod(_fingerprint)

    def run(self, ctx: RunContext) -> dict[str, Any]:
        return {"vae": _component(ctx, self.model, self.revision, self.allow_pickle, self.config, "vae",
                                  ("vae", ""), VAE_CLASSES)}


@node("LoadTextEncoder", category="loaders")
class LoadTextEncoder(Node):
    """Load only the text encoder and tokenizer of a model (a pipeline folder or a checkpoint)."""

    model: str = Param(widget="model:text_encoder", doc=MODEL_DOC)
    revision: str = Param("")
    config: str = Param("", doc=CONFIG_DOC)
    allow_pickle: bool = Param(False, doc=PICKLE_DOC)
    outputs = {"text_encoder": Output(TextEncoder)}

    fingerprint = classmethod(_fingerprint)

    def run(self, ctx: RunContext) -> dict[str, Any]:
        return {"text_encoder": _component(ctx, self.model, self.revision, self.allow_pickle, self.config,
                                           "text_encoder", ("text_encoder",), TEXT_ENCODER_CLASSES)}


@node("LoadDepthModel", category="loaders")
class LoadDepthModel(Node):
    """Load a depth estimator (transformers AutoModelForDepthEstimation, such as DPT) and its image
    processor: a depth2img pipeline folder (depth_estimator/ + feature_extractor/) or a model folder."""

    model: str = Param(widget="model:depth", doc="a folder or Hugging Face repo id")
    revision: str = Param("")
    allow_pickle: bool = Param(False, doc=PICKLE_DOC)
    outputs = {"depth_model": Output(DepthModel)}

    fingerprint = classmethod(_fingerprint)

    def run(self, ctx: RunContext) -> dict[str, Any]:
        path, single = _source(self.model, self.revision, self.allow_pickle, ctx.access)
        if single:
            raise NodeError("a depth model is a folder (config.json and preprocessor_config.json), not a file",
                            "model")
        if (path / "model_index.json").is_file():
            subfolder = "depth_estimator"
            if models.component_class(path, subfolder) is None:
                raise NodeError(f"{path} has no depth_estimator", "model")
        else:
            subfolder = ""
            found = models.component_class(path, "")
            if found is None or "Depth" not in found[1]:
                raise NodeError(f"{path} is not a depth estimation model ({found[1] if found else 'no config.json'})",
                                "model")
        return {"depth_model": _ref(ctx, "depth_model", path, subfolder, self.revision, self.allow_pickle)}


NODES = [LoadPipeline, LoadUNet, LoadVAE, LoadTextEncoder, LoadDepthModel]
