"""A procedural dataset of captioned scenes: one coloured shape on a plain background.

Every scene comes with its caption ("a red circle on a white background"), a foreground mask and
a depth map (1 = nearest: the shape stands in front of a flat backdrop). Scenes are a pure function
of a seed, so the dataset (and the models trained on it) can be rebuilt bit for bit.
Only numpy and Pillow are needed here; the semantic tests reuse the palette and the renderer.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

SIZE = 32  # the bundled models are trained at 32x32: the templates' default width and height

COLOURS = {
    "red": (220, 30, 30),
    "green": (30, 170, 50),
    "blue": (40, 60, 220),
    "yellow": (235, 210, 30),
}
BACKGROUNDS = {
    "white": (245, 245, 245),
    "black": (15, 15, 15),
}
SHAPES = ("circle", "square", "triangle")
# fill ratio of each shape's bounding box: what the semantic tests judge a shape by
FILL_RATIOS = {"circle": np.pi / 4, "square": 1.0, "triangle": 0.5}

CAPTION = "a {colour} {shape} on a {background} background"


@dataclass(frozen=True)
class Scene:
    colour: str
    shape: str
    background: str
    box: tuple[int, int, int, int]  # left, top, right, bottom (exclusive), in pixels

    @property
    def caption(self) -> str:
        return CAPTION.format(colour=self.colour, shape=self.shape, background=self.background)


def caption_words() -> list[str]:
    """Every word a caption can use, in a fixed order (the tokenizer's vocabulary)."""
    words = "a on background".split() + list(COLOURS) + list(SHAPES) + list(BACKGROUNDS)
    return sorted(set(words))


def random_scene(rng: np.random.Generator, size: int = SIZE) -> Scene:
    """Draw one scene description: colour, shape, background, and a box that fits in the picture."""
    colour = str(rng.choice(list(COLOURS)))
    shape = str(rng.choice(SHAPES))
    background = str(rng.choice(list(BACKGROUNDS)))
    side = int(rng.integers(size * 3 // 8, size * 5 // 8 + 1))  # 12..20 pixels at 32x32
    left = int(rng.integers(2, size - side - 1))
    top = int(rng.integers(2, size - side - 1))
    return Scene(colour, shape, background, (left, top, left + side, top + side))


def render(scene: Scene, size: int = SIZE) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Picture (uint8 [H, W, 3]), foreground mask (bool [H, W]) and depth (float32 [H, W], 1 = near)."""
    mask_image = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(mask_image)
    left, top, right, bottom = scene.box
    if scene.shape == "circle":
        draw.ellipse((left, top, right - 1, bottom - 1), fill=255)
    elif scene.shape == "square":
        draw.rectangle((left, top, right - 1, bottom - 1), fill=255)
    else:  # an upright triangle: apex at the top centre, base along the bottom of the box
        draw.polygon([((left + right - 1) / 2, top), (left, bottom - 1), (right - 1, bottom - 1)], fill=255)
    mask = np.asarray(mask_image) > 127
    picture = np.empty((size, size, 3), np.uint8)
    picture[:] = BACKGROUNDS[scene.background]
    picture[mask] = COLOURS[scene.colour]
    # the backdrop recedes slightly towards the top; the shape stands clearly in front of it
    rows = np.linspace(0.15, 0.3, size, dtype=np.float32)[:, None]
    depth = np.where(mask, np.float32(1.0), np.broadcast_to(rows, (size, size))).astype(np.float32)
    return picture, mask, depth


def dataset(count: int, seed: int, size: int = SIZE) -> dict[str, np.ndarray | list[str]]:
    """`count` scenes from `seed`: images uint8 [N, H, W, 3], masks bool [N, H, W], depths [N, H, W]."""
    rng = np.random.default_rng(seed)
    scenes = [random_scene(rng, size) for _ in range(count)]
    rendered = [render(scene, size) for scene in scenes]
    return {
        "images": np.stack([r[0] for r in rendered]),
        "masks": np.stack([r[1] for r in rendered]),
        "depths": np.stack([r[2] for r in rendered]),
        "captions": [scene.caption for scene in scenes],
    }


def save_examples(directory: str, seed: int = 0, count: int = 12) -> None:
    """Write a few scenes as PNG files, to look at the dataset."""
    from pathlib import Path

    data = dataset(count, seed)
    Path(directory).mkdir(parents=True, exist_ok=True)
    for index, (image, caption) in enumerate(zip(data["images"], data["captions"], strict=True)):
        Image.fromarray(image).save(Path(directory) / f"{index:02d} {caption}.png")
