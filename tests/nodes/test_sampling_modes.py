"""SampleLoop decides its mode in one place (`choose_mode`), from the UNet's config, the latent and
the settings; the stages only read it. (That each mode's picture matches its diffusers pipeline is
test_parity.py's job.)"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from diffgraph.engine import NodeError
from diffgraph.nodes.sampling import choose_mode


def unet(in_channels: int = 4, cross_attention_dim: int | None = 32, time_cond_proj_dim: int | None = None):
    return SimpleNamespace(in_channels=in_channels, cross_attention_dim=cross_attention_dim,
                           time_cond_proj_dim=time_cond_proj_dim)


EMPTY = {"samples": torch.zeros(1, 4, 8, 8)}
ENCODED = {"samples": torch.zeros(1, 4, 8, 8), "std": torch.ones(1, 4, 8, 8)}
MASKED = {**ENCODED, "mask": torch.ones(1, 1, 8, 8), "masked_samples": torch.zeros(1, 4, 8, 8),
          "masked_std": torch.ones(1, 4, 8, 8)}


@pytest.mark.parametrize(("config", "latent", "depth", "cfg", "strength", "expected"), [
    (unet(), EMPTY, False, 7.5, 1.0, dict(task="txt2img", guided=True, from_image=False, pure_noise=True)),
    (unet(), EMPTY, False, 1.0, 1.0, dict(task="txt2img", guided=False, pure_noise=True)),
    (unet(), EMPTY, False, 7.5, 0.5, dict(task="img2img", from_image=True, pure_noise=False)),
    (unet(), ENCODED, False, 7.5, 1.0, dict(task="img2img", from_image=True, pure_noise=False)),
    (unet(), MASKED, False, 7.5, 1.0, dict(task="inpaint", inpaint="blend", pure_noise=True)),
    (unet(), MASKED, False, 7.5, 0.6, dict(task="inpaint", inpaint="blend", pure_noise=False)),
    (unet(in_channels=9), MASKED, False, 7.5, 1.0, dict(task="inpaint", inpaint="native", pure_noise=True)),
    (unet(in_channels=5), ENCODED, True, 7.5, 0.8, dict(task="depth2img", depth=True, from_image=True)),
    (unet(in_channels=3, cross_attention_dim=None), {"samples": torch.zeros(2, 3, 8, 8)}, False, 7.5, 1.0,
     dict(task="unconditional", text_conditioned=False, guided=False, pure_noise=True)),
    (unet(time_cond_proj_dim=256), EMPTY, False, 7.5, 1.0,
     dict(task="txt2img", guided=False, guidance_embedding=True)),
])
def test_one_place_chooses_the_mode(config, latent, depth, cfg, strength, expected):
    mode = choose_mode(config, latent, depth, cfg, strength)
    assert {name: getattr(mode, name) for name in expected} == expected


@pytest.mark.parametrize(("config", "latent", "depth", "field", "words"), [
    (unet(in_channels=9), ENCODED, False, "latent", "inpainting UNet"),
    (unet(in_channels=8), EMPTY, False, "unet", "takes 8 input channels"),
    (unet(in_channels=5), EMPTY, False, "depth", "depth-conditioned"),
])
def test_a_latent_that_fits_no_mode_names_the_field(config, latent, depth, field, words):
    with pytest.raises(NodeError) as caught:
        choose_mode(config, latent, depth, 7.5, 1.0)
    assert caught.value.field == field and words in str(caught.value)
