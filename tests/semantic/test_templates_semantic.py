"""The five shipped templates with the bundled models make the pictures their prompts describe.

Every picture is judged by what it shows (tests/semantic/judge.py); rates are printed, run with -s.
Thresholds for txt2img and inpaint are the issue's; the others are stated where they are used.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scenes
from judge import iou, judge, report
from PIL import Image

REPO = Path(__file__).resolve().parents[2]

COLOURS = list(scenes.COLOURS)
SEEDS = (0, 1, 2)


def caption(colour: str, shape: str, background: str = "white") -> str:
    return scenes.CAPTION.format(colour=colour, shape=shape, background=background)


def save_scene(directory: Path, scene: scenes.Scene) -> tuple[Path, np.ndarray, np.ndarray]:
    """Write a training-distribution scene as a PNG; returns its path, pixels and foreground mask."""
    picture, mask, _ = scenes.render(scene)
    path = directory / f"{scene.colour}-{scene.shape}-{scene.box[0]}-{scene.box[1]}.png"
    Image.fromarray(picture).save(path)
    return path, picture, mask


def other_colour(colour: str, offset: int = 1) -> str:
    return COLOURS[(COLOURS.index(colour) + offset) % len(COLOURS)]


def input_scenes(count: int) -> list[scenes.Scene]:
    """Fixed test inputs from their own seed (not the training seed)."""
    rng = np.random.default_rng(1234)
    return [scenes.random_scene(rng) for _ in range(count)]


def test_txt2img_draws_the_prompted_colour_and_shape(run_template):
    colour_hits = shape_hits = total = 0
    misses = []
    for colour in COLOURS:
        for shape in scenes.SHAPES:
            for seed in SEEDS:
                background = "white" if seed % 2 == 0 else "black"
                run = run_template("txt2img", prompt=caption(colour, shape, background), seed=seed)
                verdict = judge(run.value("decode", "image"))
                total += 1
                colour_hits += verdict.colour == colour
                shape_hits += verdict.shape == shape
                if verdict.colour != colour or verdict.shape != shape:
                    misses.append(f"{colour} {shape} on {background} (seed {seed}): saw {verdict.colour} "
                                  f"{verdict.shape} (fill {verdict.fill_ratio:.2f}, {verdict.size} px)")
    print("\n".join(["", *misses]))
    colour_rate = report("txt2img colour matches the prompt", colour_hits, total)
    shape_rate = report("txt2img shape matches the prompt", shape_hits, total)
    assert colour_rate >= 0.90
    assert shape_rate >= 0.75


def test_txt2img_background_follows_the_prompt(run_template):
    hits = 0
    cases = [(colour, background) for colour in COLOURS for background in scenes.BACKGROUNDS]
    for index, (colour, background) in enumerate(cases):
        run = run_template("txt2img", prompt=caption(colour, "square", background), seed=10 + index)
        verdict = judge(run.value("decode", "image"))
        hits += verdict.background == background and verdict.background_spread < 20
    assert report("txt2img plain background of the prompted colour", hits, len(cases)) >= 0.9


#: 4th-order linear multistep samplers overshoot the tiny models' guided noise at cfg 7.5
LOW_CFG_SCHEDULERS = {"pndm": 3.0, "lms": 3.0}


def test_txt2img_every_scheduler_draws_the_prompted_colour(run_template):
    """The template's other schedulers (euler, its default, is judged above): each colour x shape once.
    pndm and lms are judged at cfg 3; at 7.5 their rates are printed as information."""
    from diffgraph.nodes.sampling import SCHEDULERS

    prompts = [(colour, shape) for colour in COLOURS for shape in scenes.SHAPES]

    def colour_rate(label: str, scheduler: str, cfg: float) -> float:
        hits = 0
        for index, (colour, shape) in enumerate(prompts):
            run = run_template("txt2img", prompt=caption(colour, shape), seed=index, scheduler=scheduler, cfg=cfg)
            hits += judge(run.value("decode", "image")).colour == colour
        return report(label, hits, len(prompts))

    rates = {}
    for scheduler in SCHEDULERS:
        if scheduler == "euler":
            continue
        cfg = LOW_CFG_SCHEDULERS.get(scheduler, 7.5)
        rates[scheduler] = colour_rate(f"txt2img colour with {scheduler} at cfg {cfg}", scheduler, cfg)
    for scheduler in LOW_CFG_SCHEDULERS:
        colour_rate(f"txt2img colour with {scheduler} at cfg 7.5 (information)", scheduler, 7.5)
    assert {name: rate for name, rate in rates.items() if rate < 0.75} == {}


def test_img2img_low_strength_keeps_shape_and_position(run_template, tmp_path):
    """Strength 0.3 with a prompt naming another colour: the input's shape and position survive."""
    hits, morphs, total = 0, 0, 0
    for index, scene in enumerate(input_scenes(8)):
        path, _, mask = save_scene(tmp_path, scene)
        run = run_template("img2img", image=str(path), strength=0.3, seed=index,
                           prompt=caption(other_colour(scene.colour), scene.shape, scene.background))
        verdict = judge(run.value("decode", "image"))
        total += 1
        hits += verdict.shape == scene.shape and iou(verdict.foreground, mask) >= 0.6
        # information: a prompt naming another shape as well
        other_shape = scenes.SHAPES[(scenes.SHAPES.index(scene.shape) + 1) % 3]
        run = run_template("img2img", image=str(path), strength=0.3, seed=index,
                           prompt=caption(other_colour(scene.colour), other_shape, scene.background))
        verdict = judge(run.value("decode", "image"))
        morphs += verdict.shape == scene.shape and iou(verdict.foreground, mask) >= 0.6
    report("img2img strength 0.3, prompt naming another shape too: input shape kept (information)", morphs, total)
    # the issue gives no rate here: we ask for 7 of 8
    assert report("img2img strength 0.3 keeps shape and position", hits, total) >= 7 / 8


def test_img2img_full_strength_follows_the_prompt(run_template, tmp_path):
    """Strength 1 with a prompt naming each of the other three colours: the prompt's colour."""
    hits, total, misses = 0, 0, []
    for index, scene in enumerate(input_scenes(8)):
        path, _, _ = save_scene(tmp_path, scene)
        for offset in (1, 2, 3):
            wanted = other_colour(scene.colour, offset)
            run = run_template("img2img", image=str(path), prompt=caption(wanted, scene.shape, scene.background),
                               strength=1.0, seed=index)
            seen = judge(run.value("decode", "image")).colour
            total += 1
            hits += seen == wanted
            if seen != wanted:
                misses.append(f"{scene.colour} {scene.shape} on {scene.background}, asked {wanted}: saw {seen}")
    print("\n".join(["", *misses]))
    # the issue gives no rate here: we ask for the txt2img colour bar, 90%
    assert report("img2img strength 1.0 draws the prompted colour", hits, total) >= 0.9


def test_inpaint_repaints_inside_the_mask_and_keeps_the_rest(run_workflow, tmp_path):
    """examples/inpaint_paste_back.yaml: the shipped inpaint template as a subgraph, then PasteBack.
    The mask covers the input's shape (grown by 3 pixels); the prompt names another colour."""
    workflow = REPO / "examples" / "inpaint_paste_back.yaml"
    colour_hits, total, outside_errors, pasted_errors = 0, 0, [], []
    for index, scene in enumerate(input_scenes(12)):
        path, picture, _ = save_scene(tmp_path, scene)
        left, top, right, bottom = scene.box
        mask = np.zeros(picture.shape[:2], np.uint8)
        mask[max(0, top - 3):bottom + 3, max(0, left - 3):right + 3] = 255
        mask_path = tmp_path / f"mask-{index}.png"
        Image.fromarray(mask).save(mask_path)
        wanted = other_colour(scene.colour, 1 + index % 3)
        run = run_workflow(workflow, image=str(path), mask=str(mask_path), seed=index,
                           prompt=caption(wanted, scene.shape, scene.background))
        output = run.value("inpaint/decode", "image")[0].permute(1, 2, 0).numpy()
        pasted = run.value("paste", "image")[0].permute(1, 2, 0).numpy()
        inside = mask > 127
        # the raw output outside the mask is the VAE's reconstruction of the input: close, not exact
        # (latents are blended per 4x4-pixel cell: a one-cell band around the mask may change too)
        band = np.zeros_like(mask)
        band[max(0, top - 7):bottom + 7, max(0, left - 7):right + 7] = 255
        keep = band == 0
        if keep.sum() >= 64:  # a big shape leaves too little outside the band to measure
            outside_errors.append(float(np.abs(output[keep] - picture[keep] / 255.0).mean()))
        # after PasteBack the outside is the input, exactly; the inside is the template's output
        pasted_errors.append(float(np.abs((pasted[~inside] * 255).round() - picture[~inside]).max()))
        assert pasted_errors[-1] == 0
        assert (pasted[inside] == output[inside]).all()
        # inside: at least 15% of the masked pixels are nearest to the prompt's colour
        rgb = output[inside] * 255
        palette = {**scenes.COLOURS, **scenes.BACKGROUNDS}
        distances = np.stack([np.linalg.norm(rgb - np.array(value), axis=-1) for value in palette.values()])
        nearest = np.array(list(palette))[distances.argmin(axis=0)]
        total += 1
        colour_hits += (nearest == wanted).mean() >= 0.15
    print(f"\n[semantic] inpaint mean |output - input| outside the mask (raw, before paste-back): "
          f"{np.mean(outside_errors) * 255:.1f}/255 (worst {np.max(outside_errors) * 255:.1f}/255, "
          f"{len(outside_errors)} cases); after PasteBack: largest |output - input| outside the mask "
          f"{max(pasted_errors):.0f}/255 over {total} cases")
    rate = report("inpaint prompt colour appears inside the mask", colour_hits, total)
    assert np.max(outside_errors) < 0.08
    assert rate >= 0.80


def test_depth2img_keeps_the_layout_the_depth_map_gives(run_template, tmp_path):
    """Prompt another colour: the new picture's foreground sits where the estimated depth is near."""
    import torch

    layout_hits, depth_hits, total = 0, 0, 0
    for index, scene in enumerate(input_scenes(8)):
        path, _, mask = save_scene(tmp_path, scene)
        wanted = other_colour(scene.colour)
        run = run_template("depth2img", image=str(path), prompt=caption(wanted, scene.shape, scene.background),
                           seed=index)
        depth = run.value("depth", "depth")
        near = torch.nn.functional.interpolate(depth, size=mask.shape, mode="bilinear")[0, 0].numpy() > 0.5
        verdict = judge(run.value("decode", "image"))
        total += 1
        depth_hits += iou(near, mask) >= 0.6
        layout_hits += iou(verdict.foreground, near) >= 0.5
    report("depth estimator: near region matches the input's shape (IoU >= 0.6)", depth_hits, total)
    assert report("depth2img foreground where the depth map is near (IoU >= 0.5)", layout_hits, total) >= 7 / 8
    assert depth_hits >= 7


def test_unconditional_draws_scenes_not_noise(run_template):
    """Scenes of the training distribution: a plain white or black background and a foreground shape."""
    run = run_template("unconditional", batch_size=8, seed=0)
    images = run.value("pixels", "image")
    hits = palette_hits = background_hits = 0
    for image in images:
        verdict = judge(image)
        hits += verdict.background_spread < 20 and verdict.size >= 30  # plain (uniform) border, a blob
        palette_hits += verdict.colour is not None and verdict.colour_distance < 80
        background_hits += verdict.background_distance < 80
    report("unconditional: background near white/black (information)", background_hits, len(images))
    report("unconditional: shape colour near a palette colour (information)", palette_hits, len(images))
    # the issue gives no rate here: we ask for 6 of 8 (a DDPM drawing noise gets 0)
    assert report("unconditional: plain background and a foreground shape", hits, len(images)) >= 6 / 8


def test_first_command_makes_a_red_circle(tmp_path):
    """`diffgraph run workflows/txt2img.yaml` with no settings: the bundled model, no network."""
    done = subprocess.run([sys.executable, "-m", "diffgraph.cli", "run", str(REPO / "workflows" / "txt2img.yaml"),
                           "--output-dir", str(tmp_path / "out"), "--no-cache"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr
    pictures = list((tmp_path / "out").glob("*.png"))
    assert len(pictures) == 1
    verdict = judge(np.asarray(Image.open(pictures[0]).convert("RGB"), np.float32))
    assert (verdict.colour, verdict.background) == ("red", "white")


@pytest.mark.parametrize("seed", [0, 1])
def test_judge_reads_training_scenes_right(seed):
    """The judge itself: on rendered training scenes it reads colour, shape and background exactly."""
    rng = np.random.default_rng(seed)
    for _ in range(50):
        scene = scenes.random_scene(rng)
        picture, mask, _ = scenes.render(scene)
        verdict = judge(picture.astype(np.float32))
        assert (verdict.colour, verdict.shape, verdict.background) == (scene.colour, scene.shape, scene.background)
        assert iou(verdict.foreground, mask) == 1.0
