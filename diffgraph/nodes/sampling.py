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
from typing import Any

from diffgraph.engine import Float, Input, Node, NodeError, Output, Param, node

from . import controlnet, fastpath, ipadapter, models, modular
from .types import Conditioning, Depth, Latent, Scheduler, TextEncoder, UNet

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

    text_encoder: TextEncoder = Input()
    text: str = Param("", multiline=True, doc="the prompt")
    conditioning: Conditioning = Output()

    def run(self, ctx):
        import torch

        if modular.is_modular(self.text_encoder):
            return {"conditioning": modular.encode_text(ctx, self.text_encoder, self.text)}
        pair = models.load(ctx, self.text_encoder, "text_encoder")
        tokenizer, encoder = pair.tokenizer, pair.model
        tokens = tokenizer(self.text, padding="max_length", max_length=tokenizer.model_max_length,
                           truncation=True, return_tensors="pt")
        mask = None
        if getattr(encoder.config, "use_attention_mask", False):
            mask = tokens.attention_mask.to(ctx.device)
        with torch.inference_mode():
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

    scheduler: Scheduler = Input(optional=True, doc="the model's scheduler (LoadPipeline)")
    name: str = Param("euler", choices=(*SCHEDULERS, *MORE_SCHEDULERS))
    sigmas: str = Param("default", choices=tuple(SIGMAS), doc="the sigma schedule (not every sampler takes one)")
    spacing: str = Param("default", choices=SPACINGS, doc="how steps spread over the timesteps (default: the model's)")
    scheduler_out: Scheduler = Output(name="scheduler")

    def run(self, ctx):
        import diffusers

        source = self.scheduler
        if source is None:
            source = models.ModelRef(kind="scheduler", path="", scheduler_class="PNDMScheduler",
                                     scheduler_config=json.dumps(SD1_SCHEDULER_CONFIG, sort_keys=True))
        base = models.build_scheduler(_ref(source, "scheduler"))
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


def _ref(value: Any, field: str) -> models.ModelRef:
    if not isinstance(value, models.ModelRef):
        raise NodeError("nothing usable is linked here", field)
    return value


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

    scheduler: Scheduler = Input()
    model_output: Latent = Input(doc="the UNet's prediction for `sample`")
    sample: Latent = Input()
    steps: int = Param(25, ge=1, le=1000)
    index: int = Param(0, ge=0, le=999, doc="which step of the schedule, from 0")
    seed: int = Param(0, ge=0, le=2**64 - 1, widget="seed", doc="for samplers that add noise")
    previous: Latent = Output(doc="the sample one step less noisy")
    timestep: Float = Output()

    def run(self, ctx):
        import torch

        scheduler = models.build_scheduler(_ref(self.scheduler, "scheduler"))
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

    unet: UNet = Input()
    scheduler: Scheduler = Input()
    latent: Latent = Input()
    positive: Conditioning = Input(optional=True, doc="required by text-conditioned UNets")
    negative: Conditioning = Input(optional=True, doc="required when cfg > 1 (encode an empty prompt)")
    depth: Depth = Input(optional=True, doc="required by depth-conditioned UNets")
    seed: int = Param(0, ge=0, le=2**64 - 1, widget="seed")
    steps: int = Param(25, ge=1, le=1000)
    cfg: float = Param(7.5, ge=0.0, le=100.0, step=0.5, doc="guidance scale; 1 or less turns guidance off")
    strength: float = Param(1.0, ge=0.0, le=1.0, step=0.01, doc="how much to change the input latent")
    latent_out: Latent = Output(name="latent")

    @classmethod
    def check_links(cls, params, linked, access):  # what the model's family refuses, before anything runs
        return modular.negative_prompt_problems(linked, access)

    def run(self, ctx):
        import torch

        if modular.is_modular(self.unet):
            settings = modular.Sampling(self.seed, self.steps, self.cfg, self.strength,
                                        models.build_scheduler(_ref(self.scheduler, "scheduler")))
            if not isinstance(self.latent, dict) or "samples" not in self.latent:
                raise NodeError("not a latent", "latent")
            with torch.inference_mode(), ipadapter.loaded(ctx, self.unet):  # IP-Adapter: only while sampling
                samples = modular.sample(ctx, self.unet, self.latent, self.positive, self.negative, settings, preview,
                                         extra_inputs=ipadapter.modular_inputs(self.unet))
            return {"latent": {"samples": samples.float().cpu()}}
        for field in ("positive", "negative"):  # conditioning of another family's text encoder
            value = getattr(self, field)
            if isinstance(value, dict) and "embeds" not in value:
                raise NodeError("this conditioning was encoded by another model family's text encoder (SDXL, SD3, "
                                "Flux...), but the model sampling is Stable Diffusion 1.x/2.x: link a TextEncode "
                                "fed by the same model", field)
        with torch.inference_mode():
            return {"latent": {"samples": self.sample(ctx).float().cpu()}}

    def sample(self, ctx, seeds: Sequence[int] | None = None):
        """The denoised latents. With `seeds`, one batch of len(seeds) pictures of a batch-1 latent,
        item i drawing all its noise from seed i's own generator. Sweeps run with the service
        BATCH_INVARIANT set: then, on the CPU, each item is bit for bit the picture of a run with
        that seed alone (see batch_invariant), batched or not."""
        if modular.is_modular(self.unet):  # sweeps then run each seed on its own
            raise NodeError("seed batching runs diffgraph's own loop (SD 1.x/2.x) only", "unet")
        import torch

        unet = models.load(ctx, self.unet, "unet")
        with ipadapter.loaded(ctx, self.unet):  # IP-Adapter: its processors in the UNet only while sampling
            unet = fastpath.denoiser(ctx, unet)  # --compile: the compiled twin (nodes/fastpath.py)
            if torch.device(ctx.device).type != "cpu" or not ctx.services.get(BATCH_INVARIANT):
                return self._sample(ctx, unet, seeds)
            with batch_invariant(unet):
                return self._sample(ctx, unet, seeds)

    def _sample(self, ctx, unet, seeds):  # one loop, read top to bottom like a pipeline's __call__
        import torch
        from diffusers.utils.torch_utils import randn_tensor

        scheduler = models.build_scheduler(_ref(self.scheduler, "scheduler"))
        device, dtype = torch.device(ctx.device), models.torch_dtype(ctx)
        latent = self.latent
        if not isinstance(latent, dict) or "samples" not in latent:
            raise NodeError("a latent (EmptyLatent, VAEEncode) is linked here, not this value", "latent")
        if seeds is not None:  # every per-picture tensor repeated once per seed
            if latent["samples"].shape[0] != 1:
                raise NodeError("only a batch-1 latent can be batched over seeds", "latent")
            latent = {k: _batched(v, len(seeds)) if k in _PER_PICTURE else v for k, v in latent.items()}
        shape = tuple(latent["samples"].shape)
        batch, channels = shape[0], shape[1]
        unet_channels = unet.config.in_channels
        inpaint = "mask" in latent
        native_inpaint = inpaint and unet_channels == 2 * channels + 1
        depth_conditioned = unet_channels == channels + 1
        if unet_channels == 2 * channels + 1 and not inpaint:
            raise NodeError("this is an inpainting UNet: encode the image with a mask (VAEEncode's mask)", "latent")
        if not (unet_channels == channels or native_inpaint or depth_conditioned):
            raise NodeError(f"the UNet takes {unet_channels} input channels; a {channels}-channel latent fits a "
                            f"{channels}-channel UNet ({2 * channels + 1} for inpainting with a mask, "
                            f"{channels + 1} with a depth map)", "unet")
        if depth_conditioned and self.depth is None:
            raise NodeError("this UNet is depth-conditioned: link a depth map (DepthEstimate)", "depth")

        conditional = hasattr(unet.config, "cross_attention_dim") and unet.config.cross_attention_dim
        guided = conditional and self.cfg > 1.0 and getattr(unet.config, "time_cond_proj_dim", None) is None
        embeds = None
        if conditional:
            if self.positive is None:
                raise NodeError("this UNet is text-conditioned: link a TextEncode", "positive")
            embeds = _batched(self.positive["embeds"], batch)
            if guided:
                if self.negative is None:
                    raise NodeError("cfg > 1 needs a negative conditioning (a TextEncode, empty prompt or not)",
                                    "negative")
                negative = _batched(self.negative["embeds"], batch)
                if negative.shape[1:] != embeds.shape[1:]:
                    raise NodeError(f"negative {tuple(negative.shape)} and positive {tuple(embeds.shape)} "
                                    "conditionings differ in shape", "negative")
                embeds = torch.cat([negative, embeds])
            embeds = embeds.to(device=device, dtype=dtype)
        timestep_cond = None
        if conditional and getattr(unet.config, "time_cond_proj_dim", None) is not None:
            from diffusers import StableDiffusionPipeline

            w = torch.tensor(self.cfg - 1).repeat(batch)
            timestep_cond = StableDiffusionPipeline.get_guidance_scale_embedding(
                None, w, embedding_dim=unet.config.time_cond_proj_dim).to(device=device, dtype=dtype)

        # timesteps: img2img-style inputs start part-way into the schedule, as the pipelines do
        from_image = "std" in latent or self.strength < 1.0
        scheduler.set_timesteps(self.steps, device=device)
        timesteps = scheduler.timesteps
        if from_image:
            init = min(int(self.steps * self.strength), self.steps)
            start = max(self.steps - init, 0) * scheduler.order
            timesteps = timesteps[start:]
            if hasattr(scheduler, "set_begin_index"):
                scheduler.set_begin_index(start)
            if len(timesteps) == 0:
                raise NodeError(f"strength {self.strength} with {self.steps} steps leaves no step to run; "
                                "raise strength or steps", "strength")

        # initial latents; every draw comes from one CPU generator, in the pipelines' order
        generator: Any = torch.Generator("cpu").manual_seed(self.seed)
        if seeds is not None:  # randn_tensor draws item i of a batch from generator i
            generator = [torch.Generator("cpu").manual_seed(seed) for seed in seeds]
        pure_noise = not from_image or (inpaint and self.strength == 1.0)
        image_latents = latent["samples"].to(device=device, dtype=dtype)
        if "std" in latent and (not inpaint or not native_inpaint or not pure_noise):
            eps = randn_tensor(shape, generator=generator, device=device, dtype=dtype)
            image_latents = image_latents + latent["std"].to(device=device, dtype=dtype) * eps
        noise = randn_tensor(shape, generator=generator, device=device, dtype=dtype)
        if pure_noise:
            latents = noise * scheduler.init_noise_sigma
        else:
            latents = scheduler.add_noise(image_latents, noise, timesteps[:1].repeat(batch))

        # extra UNet input channels (mask + masked image, or depth), and the mask for blending
        extra_channels = []
        blend_mask = None
        if inpaint:
            masked = latent["masked_samples"].to(device=device, dtype=dtype)
            eps = randn_tensor(tuple(masked.shape), generator=generator, device=device, dtype=dtype)
            masked = masked + latent["masked_std"].to(device=device, dtype=dtype) * eps
            mask = latent["mask"].to(device=device, dtype=dtype)
            if native_inpaint:
                extra_channels += [_batched(mask, batch), _batched(masked, batch)]
            else:
                blend_mask = _batched(mask, batch)
        if depth_conditioned:
            extra_channels.append(_depth_for_unet(self.depth, shape, batch, device, dtype))
        extra = torch.cat(extra_channels, dim=1) if extra_channels else None
        if extra is not None and guided:
            extra = torch.cat([extra] * 2)

        total = len(timesteps)
        controls = (controlnet.prepare_for_loop(ctx, unet, self.positive, self.negative, guided, shape, total, device)
                    if conditional else None)  # ControlNet (controlnet.py)
        kwargs = step_kwargs(scheduler, generator)
        ip_adapter = ipadapter.unet_kwargs(self.unet, batch, guided, device, dtype)  # IP-Adapter image embeds
        for i, t in enumerate(timesteps):
            ctx.check_cancelled()
            model_input = torch.cat([latents] * 2) if guided else latents
            model_input = scheduler.scale_model_input(model_input, t)
            residuals = controls.residuals(model_input, t, i, embeds) if controls else {}  # ControlNet (controlnet.py)
            if extra is not None:
                model_input = torch.cat([model_input, extra], dim=1)
            if conditional:
                prediction = unet(model_input, t, encoder_hidden_states=embeds, timestep_cond=timestep_cond,
                                  return_dict=False, **residuals, **ip_adapter)[0]
            else:
                prediction = unet(model_input, t, return_dict=False)[0]
            if guided:
                uncond, text = prediction.chunk(2)
                prediction = uncond + self.cfg * (text - uncond)
            latents = scheduler_step(scheduler, prediction, t, latents, generator, kwargs)
            if blend_mask is not None:  # keep the original outside the mask, noised to the next step
                original = image_latents
                if i < total - 1:
                    original = scheduler.add_noise(original, noise, torch.tensor([timesteps[i + 1]]))
                latents = (1 - blend_mask) * original + blend_mask * latents
            ctx.progress(i + 1, total, preview(latents) if ctx.on_progress is not None else None)
        return latents


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
        module.forward = one_row_at_a_time(module.forward)
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


def _batched(tensor: Any, batch: int) -> Any:
    if tensor.shape[0] == batch:
        return tensor
    if batch % tensor.shape[0]:
        raise NodeError(f"a batch of {tensor.shape[0]} cannot be spread over {batch} samples")
    return tensor.repeat_interleave(batch // tensor.shape[0], dim=0)


def _depth_for_unet(depth: Any, shape: tuple, batch: int, device: Any, dtype: Any) -> Any:
    """Resize the depth map to the latent and scale it to [-1, 1], as StableDiffusionDepth2Img does."""
    import torch

    depth = torch.nn.functional.interpolate(depth.to(device=device, dtype=dtype), size=shape[2:],
                                            mode="bicubic", align_corners=False)
    low = torch.amin(depth, dim=[1, 2, 3], keepdim=True)
    high = torch.amax(depth, dim=[1, 2, 3], keepdim=True)
    depth = 2.0 * (depth - low) / (high - low).clamp_min(1e-8) - 1.0
    return _batched(depth.to(dtype), batch)


def preview(latents: Any) -> Any:
    """A cheap RGB picture of the first latent: a fixed linear map for 4-channel latents, the
    pixels themselves for pixel-space samples."""
    import torch
    from PIL import Image

    first = latents[0].detach().float().cpu()
    if first.shape[0] == 4:  # other families' latents differ: the map is then only a rough picture
        rgb = torch.einsum("chw,cr->rhw", first, torch.tensor(LATENT_RGB))
    else:
        rgb = first[:3]
    rgb = ((rgb / 2 + 0.5).clamp(0, 1) * 255).to(torch.uint8).permute(1, 2, 0).numpy()
    return Image.fromarray(rgb)


NODES = [TextEncode, SchedulerNode, SchedulerStep, SampleLoop]
