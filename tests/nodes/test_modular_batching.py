"""SDXL and SD3 through diffusers' modular blocks run the guider's conditional and unconditional
passes as one batched denoiser call per step, as their classic pipelines do (the pictures' parity
with those pipelines is tested in test_families.py); inputs that do not stack run one by one."""

from __future__ import annotations

import pytest
import torch
from support import tiny_families

from diffgraph.nodes.modular import BatchedDenoiser

STEPS = 2
BUILD = {"sdxl": tiny_families.build_sdxl, "sd3": tiny_families.build_sd3}
DENOISER = {"sdxl": "UNet2DConditionModel", "sd3": "SD3Transformer2DModel"}


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("tiny-batching")
    return {family: build(root / family) for family, build in BUILD.items()}


def denoiser_batches(services, run_template, family: str, model, cfg: float) -> list[int]:
    """The batch size of every call of the family's denoiser during one txt2img run (after a run
    that loads the model)."""
    run_template("txt2img", model=str(model), steps=1, cfg=cfg, width=32, height=32)
    pipelines = [entry[0] for key, entry in services["models"]._entries.items()
                 if key[0] == "pipeline" and key[1] == str(model)]
    assert len(pipelines) == 1
    denoiser = getattr(pipelines[0], "unet", None) or pipelines[0].transformer
    assert type(denoiser).__name__ == DENOISER[family]
    batches: list[int] = []
    hook = denoiser.register_forward_pre_hook(
        lambda module, args, kwargs: batches.append((args[0] if args else kwargs["hidden_states"]).shape[0]),
        with_kwargs=True)
    try:
        run_template("txt2img", model=str(model), steps=STEPS, cfg=cfg, width=32, height=32, seed=1)
    finally:
        hook.remove()
    return batches


@pytest.mark.parametrize("family", ["sdxl", "sd3"])
def test_guided_sampling_calls_the_denoiser_once_per_step_at_twice_the_batch(models, services, run_template, family):
    assert denoiser_batches(services, run_template, family, models[family], cfg=3.5) == [2] * STEPS


@pytest.mark.parametrize("family", ["sdxl", "sd3"])
def test_unguided_sampling_calls_the_denoiser_once_per_step(models, services, run_template, family):
    assert denoiser_batches(services, run_template, family, models[family], cfg=1.0) == [1] * STEPS


class Attend(torch.nn.Module):
    """A real little denoiser: the latents attend to the text states (any sequence length)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.project = torch.nn.Linear(4, 4)
        self.calls = 0

    def forward(self, sample, timestep, encoder_hidden_states, return_dict=False):
        self.calls += 1
        weights = torch.softmax(sample @ encoder_hidden_states.transpose(1, 2), dim=-1)
        return (self.project(weights @ encoder_hidden_states) * timestep,)


def test_passes_that_stack_run_as_one_call_with_each_pass_answer():
    model = Attend()
    latents = torch.randn(1, 3, 4)
    passes = [torch.randn(1, 5, 4), torch.randn(1, 5, 4)]
    expected = [model(latents, torch.tensor(0.5), text)[0] for text in passes]
    model.calls = 0
    batched = BatchedDenoiser(model)
    batched.recorded = []
    for text in passes:
        batched(latents, torch.tensor(0.5), encoder_hidden_states=text, return_dict=False)
    batched.run_recorded()
    assert model.calls == 1
    answers = [batched(latents, torch.tensor(0.5), encoder_hidden_states=text)[0] for text in passes]
    for answer, want in zip(answers, expected, strict=True):
        torch.testing.assert_close(answer, want)


def test_passes_that_do_not_stack_run_one_by_one():
    model = Attend()
    latents = torch.randn(1, 3, 4)
    passes = [torch.randn(1, 5, 4), torch.randn(1, 7, 4)]  # a prompt and a longer negative one (Qwen-Image's kind)
    expected = [model(latents, torch.tensor(0.5), text)[0] for text in passes]
    model.calls = 0
    batched = BatchedDenoiser(model)
    batched.recorded = []
    for text in passes:
        batched(latents, torch.tensor(0.5), encoder_hidden_states=text)
    batched.run_recorded()
    assert model.calls == 2
    answers = [batched(latents, torch.tensor(0.5), encoder_hidden_states=text)[0] for text in passes]
    for answer, want in zip(answers, expected, strict=True):
        assert torch.equal(answer, want)
