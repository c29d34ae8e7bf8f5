"""Text encoding, schedulers and the sampling loop.

The loop is ours and reads like the diffusers pipelines' `__call__`; the models and schedulers are
diffusers' own. Noise is drawn on the CPU from the seed with one `torch.Generator`, in the same
order the pipelines draw it (image latent sample, then the initial noise, then the masked-image
latent sample, then whatever the scheduler's steps draw), so a seed gives the pipelines' picture.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from diffgraph.engine import Float, Input, Node, NodeError, Output, Param, RunContext, node

from . import controlnet, fastpath, ipadapter, lora, models, modular
from .models import ModelRef
from .types import Conditioning, ConditioningValue, Depth, Latent, LatentValue, Scheduler, TextEncoder, UNet

if TYPE_CHECKING:
    from PIL.Image import Image as Picture
    from torch import Tensor

#: name -> (diffusers class, config overrides); all built with `from_config` from the model's config
SCHEDULERS: dict[str, tuple[str, dict[str, Any]]] = {
    "ddim": ("DDIMScheduler", {}),
    "ddpm": ("DDPMScheduler", {}),
    "pndm": ("PNDMScheduler", {}),
    "lms": ("LMSDiscreteScheduler", {}),
    "euler": ("EulerDiscreteScheduler", {}),
    "euler_a": ("EulerAncestralDiscreteScheduler", {}),
    "heun": ("HeunDiscreteScheduler", {}),
    "dpmpp_2m": ("DPMSolverMultistepScheduler", {}),
    "dpmpp_2m_karras": ("DPMSolverMultistepScheduler", {"use_karras_sigmas": True}),
    "unipc": ("UniPCMultistepScheduler", {}),
    "lcm": ("LCMScheduler", {}),
}

#: samplers the node offers beyond the templates' list (ComfyUI's dpmpp_2m_sde)
MORE_SCHEDULERS: dict[str, tuple[str, dict[str, Any]]] = {
    "dpmpp_2m_sde": ("DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++"}),
}

#: the noise schedule's sigmas, as diffusers' config flags (ComfyUI's karras / exponential / beta)
SIGMAS: dict[str, dict[str, Any]] = {
    "default": {},
    "karras": {"use_karras_sigmas": True},
    "exponential": {"use_exponential_sigmas": True},
    "beta": {"use_beta_sigmas": True},
}
#: how the steps are spread over the trained timesteps (diffusers' `timestep_spacing`)
SPACINGS = ("default", "leading", "linspace", "trailing")


def scheduler_overrides(name: str, sigmas: str = "default", spacing: str = "default") -> tuple[str, dict[str, Any]]:
    """(diffusers class, config overrides) for a sampler, sigma schedule and spacing; a ValueError
    names what the class does not take (read from its own signature) and what it does."""
    import diffusers

    class_name, overrides = {**SCHEDULERS, **MORE_SCHEDULERS}[name]
    overrides = {**overrides, **SIGMAS[sigmas]}
    if spacing != "default":
        overrides["timestep_spacing"] = spacing
    accepted = inspect.signature(getattr(diffusers, class_name).__init__).parameters
    missing = [flag for flag in overrides if flag not in accepted]
    if missing:
        takes = [s for s, flags in SIGMAS.items() if all(flag in accepted for flag in flags)]
        raise ValueError(f"the {name} sampler ({class_name}) has no {sigmas} sigmas; it takes {', '.join(takes)}")
    return class_name, overrides


#: approximate latent -> RGB factors of the SD 1.x VAE, for cheap step previews
LATENT_RGB = ((0.298, 0.207, 0.208), (0.187, 0.286, 0.173), (-0.158, 0.189, 0.264), (-0.184, -0.271, -0.473))


@node("TextEncode", category="conditioning")
class TextEncode(Node):
    """Encode a prompt with the text encoder. An empty prompt encodes as the pipelines encode a
    missing negative prompt (the empty string, padded)."""

    text_encoder: ModelRef = Input(TextEncoder)
    text: str = Param("", multiline=True, doc="the prompt")
    outputs = {"conditioning": Output(Conditioning)}

    def run(self, ctx: RunContext) -> dict[str, Any]:
        import torch

        if modular.is_modular(self.text_encoder):
            with lora.applied(ctx, self.text_encoder):  # LoadLoRA's LoRAs, for this node only
                return {"conditioning": modular.encode_text(ctx, self.text_encoder, self.text)}
        pair = models.load(ctx, self.text_encoder, "text_encoder")
        tokenizer, encoder = pair.tokenizer, pair.model
        tokens = tokenizer(self.text, padding="max_length", max_length=tokenizer.model_max_length,
                           truncation=True, return_tensors="pt")
        mask = None
        if getattr(encoder.config, "use_attention_mask", False):
            mask = tokens.attention_mask.to(ctx.device)
        with lora.applied(ctx, self.text_encoder, pair), torch.inference_mode():  # LoRAs, for this node only
            embeds = encoder(tokens.input_ids.to(ctx.device), attention_mask=mask)[0]
        return {"conditioning": {"embeds": embeds.float().cpu()}}


#: Stable Diffusion 1.x's scheduler config, for models loaded without one (LoadUNet alone)
SD1_SCHEDULER_CONFIG = {
    "_class_name": "PNDMScheduler", "num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012,
    "beta_schedule": "scaled_linear", "trained_betas": None, "skip_prk_steps": True, "set_alpha_to_one": False,
    "prediction_type": "epsilon", "timestep_spacing": "leading", "steps_offset": 1, "clip_sample": False,
}


@node("Scheduler", category="sampling")
class SchedulerNode(Node):
    """Pick a sampler, built from the model's own scheduler config (Stable Diffusion 1.x's when
    none is linked)."""

    scheduler: ModelRef | None = Input(Scheduler, optional=True, doc="the model's scheduler (LoadPipeline)")
    name: str = Param("euler", choices=(*SCHEDULERS, *MORE_SCHEDULERS))
    sigmas: str = Param("default", choices=tuple(SIGMAS), doc="the sigma schedule (not every sampler takes one)")
    spacing: str = Param("default", choices=SPACINGS, doc="how steps spread over the timesteps (default: the model's)")
    outputs = {"scheduler": Output(Scheduler)}

    def run(self, ctx: RunContext) -> dict[str, Any]:
        import diffusers

        source = self.scheduler
        if source is None:
            source = models.ModelRef(kind="scheduler", path="", scheduler_class="PNDMScheduler",
                                     scheduler_config=json.dumps(SD1_SCHEDULER_CONFIG, sort_keys=True))
        base = models.build_scheduler(source)
        try:
            class_name, overrides = scheduler_overrides(self.name, self.sigmas, self.spacing)
        except ValueError as exc:
            raise NodeError(str(exc), "sigmas") from None
        if source.scheduler_class.startswith("FlowMatch"):  # SD3, Flux, ...: their flow-matching euler only
            for field, value in (("name", self.name), ("sigmas", self.sigmas), ("spacing", self.spacing)):
                if value not in ("euler", "default"):
                    raise NodeError(f"this model samples by flow matching ({source.scheduler_class}); only "
                                    "name euler (its own flow-matching euler) with the default sigmas and "
                                    "spacing applies", field)
            class_name, overrides = source.scheduler_class, {}
        try:
            with models.libraries_quiet():
                built = getattr(diffusers, class_name).from_config(base.config, **overrides)
        except ImportError as exc:  # a sampler whose extra library is missing (lms needs scipy)
            raise NodeError(f"the {self.name} sampler cannot be built here: {' '.join(str(exc).split())}",
                            "name") from None
        ref = models.ModelRef(kind="scheduler", path=source.path, subfolder=source.subfolder,
                              scheduler_class=class_name, family=source.family,
                              scheduler_config=json.dumps(dict(built.config), sort_keys=True, default=list))
        return {"scheduler": ref}


def step_kwargs(scheduler: Any, generator: Any) -> dict[str, Any]:
    """`eta` and `generator` for the schedulers whose step takes them, as the pipelines pass them."""
    accepted = inspect.signature(scheduler.step).parameters
    kwargs: dict[str, Any] = {}
    if "eta" in accepted:
        kwargs["eta"] = 0.0
    if "generator" in accepted:
        kwargs["generator"] = generator
    return kwargs


def scheduler_step(scheduler: Any, model_output: Any, timestep: Any, sample: Any, generator: Any,
                   kwargs: dict[str, Any] | None = None) -> Any:
    """One scheduler step x_t -> x_t-1."""
    kwargs = step_kwargs(scheduler, generator) if kwargs is None else kwargs
    return scheduler.step(model_output, timestep, sample, **kwargs, return_dict=False)[0]


@node("SchedulerStep", category="sampling")
class SchedulerStep(Node):
    """One denoising step on its own: with the scheduler set to `steps` steps, take step
    `index` from `sample` given the model's prediction. Multistep samplers (dpmpp, unipc, pndm)
    keep a history that a single step cannot see; inside SampleLoop they get it."""

    scheduler: ModelRef = Input(Scheduler)
    model_output: LatentValue = Input(Latent, doc="the UNet's prediction for `sample`")
    sample: LatentValue = Input(Latent)
    steps: int = Param(25, ge=1, le=1000)
    index: int = Param(0, ge=0, le=999, doc="which step of the schedule, from 0")
    seed: int = Param(0, ge=0, le=2**64 - 1, widget="seed", doc="for samplers that add noise")
    outputs = {"previous": Output(Latent, doc="the sample one step less noisy"), "timestep": Output(Float)}

    def run(self, ctx: RunContext) -> dict[str, Any]:
        import torch

        scheduler = models.build_scheduler(self.scheduler)
        scheduler.set_timesteps(self.steps)
        if self.index >= len(scheduler.timesteps):
            raise NodeError(f"index {self.index} is past the last step ({len(scheduler.timesteps) - 1})", "index")
        if hasattr(scheduler, "set_begin_index"):
            scheduler.set_begin_index(self.index)
        t = scheduler.timesteps[self.index]
        generator = torch.Generator("cpu").manual_seed(self.seed)
        sample = self.sample["samples"]
        if self.model_output["samples"].shape != sample.shape:
            raise NodeError("model_output and sample differ in shape", "model_output")
        previous = scheduler_step(scheduler, self.model_output["samples"], t, sample, generator)
        return {"previous": {"samples": previous.float().cpu()}, "timestep": float(t)}


@dataclass(frozen=True)
class SamplingMode:
    """How SampleLoop samples, chosen in one place (`choose_mode`) from the UNet, the latent and the
    settings; every stage reads it instead of deciding again."""

    task: str  # txt2img | img2img | inpaint | depth2img | unconditional, for messages and readers
    text_conditioned: bool  # the UNet takes text embeddings (not a pixel-space UNet2DModel)
    guided: bool  # classifier-free guidance: the UNet runs on [negative, positive] at once
    guidance_embedding: bool  # an LCM-style UNet takes the guidance scale as a timestep condition
    from_image: bool  # img2img-style: start part-way into the schedule from the latent's picture
    pure_noise: bool  # start from pure noise (txt2img, and inpainting at strength 1)
    inpaint: str  # "" | "native" (the UNet sees mask and masked image) | "blend" (blend the original back)
    depth: bool  # the UNet takes the depth map as an extra channel


def choose_mode(unet_config: Any, latent: LatentValue, has_depth: bool, cfg: float, strength: float) -> SamplingMode:
    """The one place SampleLoop's mode is decided; a latent that fits no mode is a NodeError."""
    channels = latent["samples"].shape[1]
    unet_channels = unet_config.in_channels
    has_mask = "mask" in latent
    native_inpaint = has_mask and unet_channels == 2 * channels + 1
    depth = unet_channels == channels + 1
    if unet_channels == 2 * channels + 1 and not has_mask:
        raise NodeError("this is an inpainting UNet: encode the image with a mask (VAEEncode's mask)", "latent")
    if not (unet_channels == channels or native_inpaint or depth):
        raise NodeError(f"the UNet takes {unet_channels} input channels; a {channels}-channel latent fits a "
                        f"{channels}-channel UNet ({2 * channels + 1} for inpainting with a mask, "
                        f"{channels + 1} with a depth map)", "unet")
    if depth and not has_depth:
        raise NodeError("this UNet is depth-conditioned: link a depth map (DepthEstimate)", "depth")
    text_conditioned = bool(getattr(unet_config, "cross_attention_dim", None))
    guidance_embedding = text_conditioned and getattr(unet_config, "time_cond_proj_dim", None) is not None
    from_image = "std" in latent or strength < 1.0
    inpaint = ("native" if native_inpaint else "blend") if has_mask else ""
    if not text_conditioned:
        task = "unconditional"
    else:
        task = "inpaint" if inpaint else "depth2img" if depth else "img2img" if from_image else "txt2img"
    return SamplingMode(
        task=task,
        text_conditioned=text_conditioned,
        guided=text_conditioned and cfg > 1.0 and not guidance_embedding,
        guidance_embedding=guidance_embedding,
        from_image=from_image,
        pure_noise=not from_image or (has_mask and strength == 1.0),
        inpaint=inpaint,
        depth=depth,
    )


@dataclass
class Denoising:
    """What the denoise loop works on, as the preparing stages left it."""

    mode: SamplingMode
    scheduler: Any
    timesteps: Tensor
    generator: Any  # one CPU torch.Generator, or one per seed when batching over seeds
    latents: Tensor  # the start of the loop
    image_latents: Tensor  # the latent's picture (sampled from its encoding): what blending keeps
    noise: Tensor  # the initial noise, which blending adds to the original at each step
    embeds: Tensor | None = None  # text embeddings, [negative, positive] when guided
    timestep_cond: Tensor | None = None
    extra_channels: Tensor | None = None  # mask + masked image, or depth, concatenated to the UNet input
    blend_mask: Tensor | None = None


@node("SampleLoop", category="sampling")
class SampleLoop(Node):
    """Denoise `latent` with the UNet and the scheduler, with classifier-free guidance.

    - txt2img: an EmptyLatent and strength 1 start from pure noise.
    - img2img: a VAEEncode latent; `strength` is how much of the schedule runs. Even at 1 the start
      is the image noised to the first timestep, as in StableDiffusionImg2ImgPipeline.
    - inpainting: a VAEEncode latent made with a mask. A 9-channel inpainting UNet sees the mask and
      the masked image; a 4-channel UNet repaints by blending the noised original back outside it.
      At strength 1 the start is pure noise, as in StableDiffusionInpaintPipeline.
    - depth2img: a 5-channel depth UNet with a `depth` map (DepthEstimate).
    - unconditional: a pixel-space UNet2DModel with no conditioning.
    """

    unet: ModelRef = Input(UNet)
    scheduler: ModelRef = Input(Scheduler)
    latent: LatentValue = Input(Latent)
    positive: ConditioningValue | None = Input(Conditioning, optional=True, doc="required by text-conditioned UNets")
    negative: ConditioningValue | None = Input(Conditioning, optional=True,
                                               doc="required when cfg > 1 (encode an empty prompt)")
    depth: Tensor | None = Input(Depth, optional=True, doc="required by depth-conditioned UNets")
    seed: int = Param(0, ge=0, le=2**64 - 1, widget="seed")
    steps: int = Param(25, ge=1, le=1000)
    cfg: float = Param(7.5, ge=0.0, le=100.0, step=0.5, doc="guidance scale; 1 or less turns guidance off")
    strength: float = Param(1.0, ge=0.0, le=1.0, step=0.01, doc="how much to change the input latent")
    outputs = {"latent": Output(Latent)}

    @classmethod
    def check_links(cls, params, linked, access):  # what the model's family refuses, before anything runs
        return modular.negative_prompt_problems(linked, access) + controlnet.link_problems(linked, access)

    def run(self, ctx: RunContext) -> dict[str, Any]:
        import torch

        if modular.is_modular(self.unet):
            settings = modular.Sampling(self.seed, self.steps, self.cfg, self.strength,
                                        models.build_scheduler(self.scheduler))
            # LoadLoRA's LoRAs and the IP-Adapter: in the shared model only while sampling
            with lora.applied(ctx, self.unet), torch.inference_mode(), ipadapter.loaded(ctx, self.unet):
                samples = modular.sample(ctx, self.unet, self.latent, self.positive, self.negative, settings, preview,
                                         extra_inputs=ipadapter.modular_inputs(self.unet))
            return {"latent": {"samples": samples.float().cpu()}}
        for field in ("positive", "negative"):  # conditioning of another family's text encoder
            value = getattr(self, field)
            if value is not None and "embeds" not in value:
                raise NodeError("this conditioning was encoded by another model family's text encoder (SDXL, SD3, "
                                "Flux...), but the model sampling is Stable Diffusion 1.x/2.x: link a TextEncode "
                                "fed by the same model", field)
        with torch.inference_mode():
            return {"latent": {"samples": self.sample(ctx).float().cpu()}}

    def sample(self, ctx: RunContext, seeds: Sequence[int] | None = None) -> Tensor:
        """The denoised latents. With `seeds`, one batch of len(seeds) pictures of a batch-1 latent,
        item i drawing all its noise from seed i's own generator. Sweeps run with the service
        BATCH_INVARIANT set: then, on the CPU, each item is bit for bit the picture of a run with
        that seed alone (see batch_invariant), batched or not."""
        if modular.is_modular(self.unet):  # sweeps then run each seed on its own
            raise NodeError("seed batching runs diffgraph's own loop (SD 1.x/2.x) only", "unet")
        import torch

        unet = models.load(ctx, self.unet, "unet")
        # LoadLoRA's LoRAs and the IP-Adapter's processors: in the shared UNet only while sampling
        with lora.applied(ctx, self.unet, unet), ipadapter.loaded(ctx, self.unet):
            unet = fastpath.denoiser(ctx, unet)  # --compile: the compiled twin (nodes/fastpath.py)
            if torch.device(ctx.device).type != "cpu" or not ctx.services.get(BATCH_INVARIANT):
                return self._sample(ctx, unet, seeds)
            with batch_invariant(unet):
                return self._sample(ctx, unet, seeds)

    def _sample(self, ctx: RunContext, unet: Any, seeds: Sequence[int] | None) -> Tensor:
        """The stages of a diffusers pipeline's __call__, in its order (which is also the order the
        noise is drawn in: the image latent's sample, the initial noise, the masked image's sample)."""
        import torch

        device, dtype = torch.device(ctx.device), models.torch_dtype(ctx)
        scheduler = models.build_scheduler(self.scheduler)
        latent = self.latent if seeds is None else _batched_over_seeds(self.latent, len(seeds))
        mode = choose_mode(unet.config, latent, self.depth is not None, self.cfg, self.strength)
        batch = latent["samples"].shape[0]
        embeds = self.prepare_conditioning(mode, batch, device, dtype)
        timestep_cond = self.guidance_scale_embedding(unet, mode, batch, device, dtype)
        timesteps = self.get_timesteps(scheduler, mode, device)
        generator = noise_generator(self.seed, seeds)
        latents, image_latents, noise = self.prepare_latents(scheduler, mode, latent, timesteps, generator,
                                                             device, dtype)
        mask_channels, blend_mask = self.prepare_mask_latents(mode, latent, generator, batch, device, dtype)
        depth_channels = self.prepare_depth_map(mode, tuple(latent["samples"].shape), device, dtype)
        state = Denoising(mode=mode, scheduler=scheduler, timesteps=timesteps, generator=generator,
                          latents=latents, image_latents=image_latents, noise=noise, embeds=embeds,
                          timestep_cond=timestep_cond, blend_mask=blend_mask,
                          extra_channels=_extra_input(mask_channels + depth_channels, mode))
        return self.denoise(ctx, unet, state)

    def prepare_conditioning(self, mode: SamplingMode, batch: int, device: Any, dtype: Any) -> Tensor | None:
        """The text embeddings the UNet attends to (`encode_prompt`'s result in the pipelines):
        [negative, positive] when guided, one row per picture."""
        import torch

        if not mode.text_conditioned:
            return None
        if self.positive is None:
            raise NodeError("this UNet is text-conditioned: link a TextEncode", "positive")
        embeds = _batched(self.positive["embeds"], batch)
        if mode.guided:
            if self.negative is None:
                raise NodeError("cfg > 1 needs a negative conditioning (a TextEncode, empty prompt or not)", "negative")
            negative = _batched(self.negative["embeds"], batch)
            if negative.shape[1:] != embeds.shape[1:]:
                raise NodeError(f"negative {tuple(negative.shape)} and positive {tuple(embeds.shape)} "
                                "conditionings differ in shape", "negative")
            embeds = torch.cat([negative, embeds])
        return embeds.to(device=device, dtype=dtype)

    def guidance_scale_embedding(self, unet: Any, mode: SamplingMode, batch: int, device: Any,
                                 dtype: Any) -> Tensor | None:
        """An LCM-style UNet's guidance, as a timestep condition (`get_guidance_scale_embedding`)."""
        import torch

        if not mode.guidance_embedding:
            return None
        from diffusers import StableDiffusionPipeline

        w = torch.tensor(self.cfg - 1).repeat(batch)
        return StableDiffusionPipeline.get_guidance_scale_embedding(
            None, w, embedding_dim=unet.config.time_cond_proj_dim).to(device=device, dtype=dtype)

    def get_timesteps(self, scheduler: Any, mode: SamplingMode, device: Any) -> Tensor:
        """The schedule's timesteps; an image start skips the first (1 - strength) of them, as the
        img2img and inpaint pipelines' `get_timesteps` do."""
        scheduler.set_timesteps(self.steps, device=device)
        timesteps: Tensor = scheduler.timesteps
        if mode.from_image:
            init = min(int(self.steps * self.strength), self.steps)
            start = max(self.steps - init, 0) * scheduler.order
            timesteps = timesteps[start:]
            if hasattr(scheduler, "set_begin_index"):
                scheduler.set_begin_index(start)
            if len(timesteps) == 0:
                raise NodeError(f"strength {self.strength} with {self.steps} steps leaves no step to run; "
                                "raise strength or steps", "strength")
        return timesteps

    def prepare_latents(self, scheduler: Any, mode: SamplingMode, latent: LatentValue, timesteps: Tensor,
                        generator: Any, device: Any, dtype: Any) -> tuple[Tensor, Tensor, Tensor]:
        """(the loop's starting latents, the latent's picture, the initial noise): pure noise, or the
        picture (sampled from its encoding with the seed) noised to the first timestep."""
        from diffusers.utils.torch_utils import randn_tensor

        shape = tuple(latent["samples"].shape)
        image_latents = latent["samples"].to(device=device, dtype=dtype)
        if "std" in latent and not (mode.inpaint == "native" and mode.pure_noise):
            eps = randn_tensor(shape, generator=generator, device=device, dtype=dtype)
            image_latents = image_latents + latent["std"].to(device=device, dtype=dtype) * eps
        noise = randn_tensor(shape, generator=generator, device=device, dtype=dtype)
        if mode.pure_noise:
            latents = noise * scheduler.init_noise_sigma
        else:
            latents = scheduler.add_noise(image_latents, noise, timesteps[:1].repeat(shape[0]))
        return latents, image_latents, noise

    def prepare_mask_latents(self, mode: SamplingMode, latent: LatentValue, generator: Any, batch: int,
                             device: Any, dtype: Any) -> tuple[list[Tensor], Tensor | None]:
        """Inpainting: (the UNet's extra input channels [mask, masked image] for a native inpainting
        UNet, the mask to blend with for any other)."""
        from diffusers.utils.torch_utils import randn_tensor

        if not mode.inpaint:
            return [], None
        masked = latent["masked_samples"].to(device=device, dtype=dtype)
        eps = randn_tensor(tuple(masked.shape), generator=generator, device=device, dtype=dtype)
        masked = masked + latent["masked_std"].to(device=device, dtype=dtype) * eps
        mask = latent["mask"].to(device=device, dtype=dtype)
        if mode.inpaint == "native":
            return [_batched(mask, batch), _batched(masked, batch)], None
        return [], _batched(mask, batch)

    def prepare_depth_map(self, mode: SamplingMode, shape: tuple[int, ...], device: Any, dtype: Any) -> list[Tensor]:
        """A depth UNet's extra input channel: the depth map at the latent's size, in [-1, 1]."""
        if not mode.depth:
            return []
        return [_depth_for_unet(self.depth, shape, shape[0], device, dtype)]

    def denoise(self, ctx: RunContext, unet: Any, state: Denoising) -> Tensor:
        """The denoise loop: predict, guide, step, (blend), report; cancellable between steps."""
        import torch

        scheduler, timesteps, latents = state.scheduler, state.timesteps, state.latents
        total = len(timesteps)
        device, dtype, batch = torch.device(ctx.device), models.torch_dtype(ctx), latents.shape[0]
        conditioned, guided = state.mode.text_conditioned, state.mode.guided
        controls = (controlnet.prepare_for_loop(ctx, unet, self.positive, self.negative, guided, tuple(latents.shape),
                                                total, device) if conditioned else None)  # ControlNet (controlnet.py)
        ip_adapter = ipadapter.unet_kwargs(self.unet, batch, guided, device, dtype) if conditioned else {}  # IP-Adapter
        kwargs = step_kwargs(scheduler, state.generator)
        for i, t in enumerate(timesteps):
            ctx.check_cancelled()
            model_input = torch.cat([latents] * 2) if guided else latents
            model_input = scheduler.scale_model_input(model_input, t)
            residuals = controls.residuals(model_input, t, i, state.embeds) if controls else {}  # ControlNet
            if state.extra_channels is not None:
                model_input = torch.cat([model_input, state.extra_channels], dim=1)
            prediction = self.predict_noise(unet, state, model_input, t, {**residuals, **ip_adapter})
            if guided:
                uncond, text = prediction.chunk(2)
                prediction = uncond + self.cfg * (text - uncond)
            latents = scheduler_step(scheduler, prediction, t, latents, state.generator, kwargs)
            if state.blend_mask is not None:  # keep the original outside the mask, noised to the next step
                original = state.image_latents
                if i < total - 1:
                    original = scheduler.add_noise(original, state.noise, torch.tensor([timesteps[i + 1]]))
                latents = (1 - state.blend_mask) * original + state.blend_mask * latents
            ctx.progress(i + 1, total, preview(latents) if ctx.on_progress is not None else None)
        return latents

    def predict_noise(self, unet: Any, state: Denoising, model_input: Tensor, t: Tensor,
                      adapters: dict[str, Any]) -> Tensor:
        """The UNet's prediction at timestep `t`; `adapters`: the adapters' UNet arguments at this step
        (ControlNet residuals, IP-Adapter image embeddings)."""
        prediction: Tensor = unet(model_input, t, **self.unet_kwargs(state, t), **adapters, return_dict=False)[0]
        return prediction

    def unet_kwargs(self, state: Denoising, t: Tensor) -> dict[str, Any]:
        """The UNet's conditioning at timestep `t` beyond its input: text embeddings and LCM's guidance."""
        if not state.mode.text_conditioned:
            return {}
        return {"encoder_hidden_states": state.embeds, "timestep_cond": state.timestep_cond}


def noise_generator(seed: int, seeds: Sequence[int] | None) -> Any:
    """The CPU generator every draw comes from; with `seeds`, one per item (randn_tensor draws item i
    of a batch from generator i)."""
    import torch

    if seeds is None:
        return torch.Generator("cpu").manual_seed(seed)
    return [torch.Generator("cpu").manual_seed(item) for item in seeds]


def _batched_over_seeds(latent: LatentValue, count: int) -> LatentValue:
    """A batch-1 latent with every per-picture tensor repeated once per seed."""
    if latent["samples"].shape[0] != 1:
        raise NodeError("only a batch-1 latent can be batched over seeds", "latent")
    parts = cast("dict[str, Tensor]", latent)
    return cast(LatentValue, {k: _batched(v, count) if k in _PER_PICTURE else v for k, v in parts.items()})


def _extra_input(extra_channels: list[Tensor], mode: SamplingMode) -> Tensor | None:
    """The extra channels as one tensor, doubled for the guided batch."""
    import torch

    if not extra_channels:
        return None
    extra = torch.cat(extra_channels, dim=1)
    return torch.cat([extra] * 2) if mode.guided else extra


#: the service (RunContext.services) that asks SampleLoop for batch-invariant sampling on the CPU
BATCH_INVARIANT = "batch_invariant"

#: the parts of a latent that hold one tensor per picture
_PER_PICTURE = ("samples", "std", "mask", "masked_samples", "masked_std")


@contextlib.contextmanager
def batch_invariant(model: Any) -> Iterator[None]:
    """Make each item of a batch come out bit for bit as it does in a batch of one, on the CPU.

    oneDNN and NNPACK pick convolution algorithms by batch size, and a GEMM of a few rows (the
    timestep embedding, one row per item) takes another kernel than one row: so convolutions run
    on ATen's per-sample path and 2-D linear layers one row at a time, while the model is in here.
    That costs time (measured: bench/bench_sweep.py), so only sweeps ask for it; their pictures
    differ from a plain run's by float rounding (they are cached apart: Executor.variant).
    """
    import torch

    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]

    def one_row_at_a_time(plain: Any) -> Any:
        def forward(x: Any) -> Any:
            if x.dim() == 2 and x.shape[0] > 1:
                return torch.cat([plain(x[i:i + 1]) for i in range(x.shape[0])])
            return plain(x)
        return forward

    for module in linears:
        module.forward = one_row_at_a_time(module.forward)  # type: ignore[method-assign]  # undone below
    try:
        with warnings.catch_warnings():  # setting the oneDNN flags warns about Intel GPUs
            warnings.simplefilter("ignore", UserWarning)
            flags = contextlib.ExitStack()
            flags.enter_context(torch.backends.mkldnn.flags(enabled=False))
            flags.enter_context(torch.backends.nnpack.flags(enabled=False))
        with flags:
            yield
    finally:
        for module in linears:
            del module.forward  # back to the class's forward


def _batched(tensor: Tensor, batch: int) -> Tensor:
    if tensor.shape[0] == batch:
        return tensor
    if batch % tensor.shape[0]:
        raise NodeError(f"a batch of {tensor.shape[0]} cannot be spread over {batch} samples")
    return tensor.repeat_interleave(batch // tensor.shape[0], dim=0)


def _depth_for_unet(depth: Tensor | None, shape: tuple[int, ...], batch: int, device: Any, dtype: Any) -> Tensor:
    """Resize the depth map to the latent and scale it to [-1, 1], as StableDiffusionDepth2Img does."""
    import torch

    assert depth is not None, "choose_mode requires a depth map for a depth UNet"
    depth = torch.nn.functional.interpolate(depth.to(device=device, dtype=dtype), size=shape[2:],
                                            mode="bicubic", align_corners=False)
    low = torch.amin(depth, dim=[1, 2, 3], keepdim=True)
    high = torch.amax(depth, dim=[1, 2, 3], keepdim=True)
    depth = 2.0 * (depth - low) / (high - low).clamp_min(1e-8) - 1.0
    return _batched(depth.to(dtype), batch)


def preview(latents: Tensor) -> Picture:
    """A cheap RGB picture of the first latent: a fixed linear map for 4-channel latents, the
    pixels themselves for pixel-space samples."""
    import torch
    from PIL import Image

    first = latents[0].detach().float().cpu()
    if first.shape[0] == 4:  # other families' latents differ: the map is then only a rough picture
        rgb = torch.einsum("chw,cr->rhw", first, torch.tensor(LATENT_RGB))
    else:
        rgb = first[:3]
    pixels = ((rgb / 2 + 0.5).clamp(0, 1) * 255).to(torch.uint8).permute(1, 2, 0).numpy()
    return Image.fromarray(pixels)


NODES = [TextEncode, SchedulerNode, SchedulerStep, SampleLoop]
