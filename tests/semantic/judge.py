"""Judge a generated picture by what it shows: background colour, the foreground blob, its colour and
its shape (by the fill ratio of its bounding box: square ~1.0, circle ~0.785, triangle ~0.5)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scenes

PALETTE = {**scenes.COLOURS, **{f"{name} background": rgb for name, rgb in scenes.BACKGROUNDS.items()}}
FOREGROUND_DISTANCE = 80.0  # RGB distance (0..441) from the background that counts as foreground
MIN_BLOB = 12  # pixels; smaller blobs are specks, not a shape


def to_rgb(image) -> np.ndarray:
    """An IMAGE tensor ([3, H, W] or [1, 3, H, W] in [0, 1]) or an 8-bit array [H, W, 3], as RGB 0..255."""
    if not hasattr(image, "detach"):
        return np.asarray(image, np.float32)
    array = image.detach().cpu().float().numpy()
    return (array[0] if array.ndim == 4 else array).transpose(1, 2, 0) * 255.0


def nearest(rgb: np.ndarray, names: list[str]) -> str:
    distances = [np.linalg.norm(rgb - np.array(PALETTE[name], np.float32)) for name in names]
    return names[int(np.argmin(distances))]


def largest_blob(mask: np.ndarray) -> np.ndarray:
    """The largest 4-connected region of a boolean mask."""
    labels = np.zeros(mask.shape, np.int32)
    best, best_size, current = 0, 0, 0
    for start in zip(*np.nonzero(mask), strict=True):
        if labels[start]:
            continue
        current += 1
        labels[start] = current
        stack, size = [start], 0
        while stack:
            y, x = stack.pop()
            size += 1
            for ny, nx in ((y + 1, x), (y - 1, x), (y, x + 1), (y, x - 1)):
                if 0 <= ny < mask.shape[0] and 0 <= nx < mask.shape[1] and mask[ny, nx] and not labels[ny, nx]:
                    labels[ny, nx] = current
                    stack.append((ny, nx))
        if size > best_size:
            best, best_size = current, size
    return labels == best if best else np.zeros(mask.shape, bool)


@dataclass
class Verdict:
    background: str  # "white" / "black" (nearest)
    background_spread: float  # std of the border pixels: small for a plain background
    background_distance: float  # how far the border's median is from that background colour
    foreground: np.ndarray  # bool [H, W]: the largest blob that differs from the background
    colour: str | None  # nearest palette colour of the blob
    colour_distance: float  # how far the blob's median colour is from that palette colour
    fill_ratio: float
    shape: str | None

    @property
    def size(self) -> int:
        return int(self.foreground.sum())


def judge(image) -> Verdict:
    rgb = to_rgb(image)
    border = np.concatenate([rgb[0], rgb[-1], rgb[:, 0], rgb[:, -1]])
    background_rgb = np.median(border, axis=0)
    background = nearest(background_rgb, [f"{name} background" for name in scenes.BACKGROUNDS]).split()[0]
    spread = float(border.std(axis=0).mean())
    off = float(np.linalg.norm(background_rgb - np.array(scenes.BACKGROUNDS[background], np.float32)))
    differs = np.linalg.norm(rgb - background_rgb, axis=-1) > FOREGROUND_DISTANCE
    blob = largest_blob(differs)
    if blob.sum() < MIN_BLOB:
        return Verdict(background, spread, off, blob, None, float("inf"), 0.0, None)
    median = np.median(rgb[blob], axis=0)
    # the shape's edge: pixels nearer its colour than the background's (half-way, so blur neither
    # grows nor shrinks it)
    blob = largest_blob(np.linalg.norm(rgb - median, axis=-1) < np.linalg.norm(rgb - background_rgb, axis=-1))
    if blob.sum() < MIN_BLOB:
        return Verdict(background, spread, off, blob, None, float("inf"), 0.0, None)
    median = np.median(rgb[blob], axis=0)
    colour = nearest(median, list(scenes.COLOURS))
    ys, xs = np.nonzero(blob)
    fill = blob.sum() / ((ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1))
    shape = min(scenes.FILL_RATIOS, key=lambda name: abs(scenes.FILL_RATIOS[name] - fill))
    distance = float(np.linalg.norm(median - np.array(scenes.COLOURS[colour], np.float32)))
    return Verdict(background, spread, off, blob, colour, distance, float(fill), shape)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 0.0


def report(name: str, hits: int, total: int) -> float:
    rate = hits / total
    print(f"\n[semantic] {name}: {hits}/{total} = {rate:.0%}")
    return rate
