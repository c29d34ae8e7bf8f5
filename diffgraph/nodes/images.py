"""Image nodes: load a picture from disk, save or preview pictures, and build inpainting masks.

IMAGE values are float32 CPU tensors [B, 3, H, W] in [0, 1]; MASK values are [B, 1, H, W] in
[0, 1] with 1 = repaint (see `diffgraph.nodes.types`).
"""

from __future__ import annotations

import errno
import json
import os
import re
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from diffgraph.engine import FileAccess, Files, Input, Node, NodeError, Output, Param, RunContext, node
from diffgraph.engine.access import MAX_IMAGE_FILE_BYTES
from diffgraph.engine.files import describe_os_error, digest_regular, open_regular

from .types import Image, ImageStoredForm, Mask, StoredImage, picture_pixels

if TYPE_CHECKING:
    from PIL.Image import Image as Picture
    from torch import Tensor

#: formats LoadImage reads; Pillow's other (rarer, less audited) decoders are never tried
IMAGE_FORMATS = ("PNG", "JPEG", "WEBP")
#: the PNG text chunk SaveImage writes: JSON {"workflow": document, "params": template params}
WORKFLOW_CHUNK = "diffgraph"
_NUMBERED = "{prefix}_{number:05d}.png"
_FORBIDDEN_IN_PREFIX = re.compile(r'[\\/:*?"<>|\x00-\x1f]')
#: errors of os.link on file systems that have no hard links (FAT, some network mounts)
_NO_HARD_LINKS = {errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.ENOSYS}


@node("LoadImage", category="image")
class LoadImage(Node):
    """Load a PNG, JPEG or WebP picture. Its alpha channel becomes the mask (transparent = repaint)."""

    image: str = Param(widget="upload", doc="the picture: a local path on the command line (absolute or relative to "
                                              "the working directory); on the server, the name of an uploaded file")
    outputs = {"image": Output(Image, doc="the picture as RGB in [0, 1]"),
               "mask": Output(Mask, doc="1 - alpha: transparent pixels are 1 (repaint); all zeros without alpha")}

    @classmethod
    def fingerprint(cls, params: dict[str, Any], access: FileAccess) -> str | None:
        # the same path with new content must not hit the old cache entry (ComfyUI's IS_CHANGED)
        text = params.get("image")
        if not isinstance(text, str) or not text.strip():
            return None
        path = access.input_file(text, "image")  # a path the policy refuses is a validation error
        try:
            return digest_regular(path, MAX_IMAGE_FILE_BYTES)
        except OSError:
            return "unreadable"  # the run reports why; a failed node is never cached

    def run(self, ctx: RunContext) -> dict[str, Any]:
        import numpy as np
        import torch

        picture = _open_image(self.image, ctx.access)
        if picture.mode.startswith("I"):  # 16-bit greyscale PNG: keep its precision
            grey = np.asarray(picture, dtype=np.float32) / 65535.0
            rgb = torch.from_numpy(np.clip(grey, 0.0, 1.0)).expand(3, *grey.shape).clone()
        else:
            pixels = np.asarray(picture.convert("RGB"), dtype=np.uint8)
            rgb = torch.from_numpy(pixels.copy()).permute(2, 0, 1).float() / 255.0
        height, width = rgb.shape[1:]
        if picture.has_transparency_data:
            alpha = np.asarray(picture.convert("RGBA").getchannel("A"), dtype=np.uint8)
            mask = 1.0 - torch.from_numpy(alpha.copy()).float() / 255.0
        else:
            mask = torch.zeros(height, width)
        return {"image": rgb.unsqueeze(0).contiguous(), "mask": mask.reshape(1, 1, height, width).contiguous()}


def _open_image(text: str, access: FileAccess) -> Picture:
    """Open, fully decode and orient the picture `text` names, or raise a NodeError on `image`.

    Only a regular file is read, and only a picture of at most `access.max_image_pixels` is decoded
    (the size is read from the header first: a small PNG can hold an enormous picture).
    """
    import warnings

    from PIL import Image as PILImage
    from PIL import ImageOps, UnidentifiedImageError

    if not text.strip():
        raise NodeError("no picture given: set `image` to the path of a PNG, JPEG or WebP file", field="image")
    path = access.input_file(text, "image")
    shown = repr(text) if not access.permissive else repr(str(path))
    try:
        handle = open_regular(path, MAX_IMAGE_FILE_BYTES)
    except FileNotFoundError:
        where = f" (relative paths start at {os.getcwd()!r})" if access.permissive else ""
        raise NodeError(f"no such file: {shown}{where}", field="image") from None
    except OSError as exc:
        raise NodeError(f"{shown} cannot be read: {describe_os_error(exc)}", field="image") from None
    try:
        with handle, warnings.catch_warnings():
            # Pillow only warns between MAX_IMAGE_PIXELS and twice that; refuse those too
            warnings.simplefilter("error", PILImage.DecompressionBombWarning)
            with PILImage.open(handle, formats=IMAGE_FORMATS) as picture:
                width, height = picture.size
                if width * height > access.max_image_pixels:
                    raise NodeError(f"{shown} is {width}x{height} = {width * height} pixels; the limit is "
                                    f"{access.max_image_pixels} pixels (raise it with --max-image-pixels)",
                                    field="image")
                picture.load()
                oriented = ImageOps.exif_transpose(picture)
                oriented.load()
    except NodeError:
        raise
    except (PILImage.DecompressionBombError, PILImage.DecompressionBombWarning) as exc:
        raise NodeError(f"{shown} is too large to load safely ({exc})", field="image") from None
    except UnidentifiedImageError:
        raise NodeError(f"{shown} is not a PNG, JPEG or WebP picture", field="image") from None
    except Exception as exc:  # noqa: BLE001 - decoders raise OSError, SyntaxError, ValueError, zlib errors...
        raise NodeError(f"{shown} is damaged or truncated and cannot be decoded ({exc})", field="image") from None
    return oriented


# ---------------------------------------------------------------------------------------------
# saving


def _check_prefix(prefix: str) -> str:
    """A file name prefix that stays inside the output folder, or a NodeError on `prefix`."""
    if not prefix or prefix != prefix.strip():
        raise NodeError("the prefix is empty or starts/ends with spaces", field="prefix")
    if _FORBIDDEN_IN_PREFIX.search(prefix) or prefix.startswith(".") or os.path.isabs(prefix):
        raise NodeError(f"{prefix!r} is not a plain file name prefix: no path separators, no leading '.', "
                        'none of : * ? " < > |', field="prefix")
    if len(prefix) > 100:
        raise NodeError("the prefix is longer than 100 characters", field="prefix")
    return prefix


def _to_pictures(images: ImageStoredForm) -> list[Picture]:
    """IMAGE (a tensor, the numpy array or the StoredImage the disk cache restores) -> PIL
    pictures, rounding as diffusers' `numpy_to_pil` does. A StoredImage needs neither numpy nor
    torch: its pixels were rounded the same way when it was stored."""
    if isinstance(images, StoredImage):
        return images.pictures()
    from PIL import Image as PILImage

    return [PILImage.fromarray(pixels, "RGB") for pixels in picture_pixels(images)]


def _next_number(folder: Path, prefix: str) -> int:
    pattern = re.compile(re.escape(prefix) + r"_(\d{5,})\.png")
    numbers = [int(m.group(1)) for name in os.listdir(folder) if (m := pattern.fullmatch(name))]
    return max(numbers, default=0) + 1


def _write_numbered(folder: Path, prefix: str, picture: Picture, pnginfo: Any = None) -> Path:
    """Write `picture` as the next free `<prefix>_NNNNN.png` without ever replacing a file.

    The PNG is written to a hidden temporary file first and then hard-linked to its name, which
    fails if the name exists (another process got there first: try the next number); so the name
    only ever shows a complete picture and no existing file is overwritten. On file systems
    without hard links the name is reserved by exclusive creation and the picture renamed over it
    (an empty file is visible for that moment).
    """
    folder.mkdir(parents=True, exist_ok=True)
    temporary = folder / f".{prefix}.{uuid.uuid4().hex}.tmp"
    try:
        with open(temporary, "xb") as handle:
            picture.save(handle, format="PNG", pnginfo=pnginfo, compress_level=4)
            handle.flush()
            os.fsync(handle.fileno())
        number = _next_number(folder, prefix)
        while True:
            target = folder / _NUMBERED.format(prefix=prefix, number=number)
            try:
                _publish(temporary, target)
                return target
            except FileExistsError:
                number += 1
    finally:
        temporary.unlink(missing_ok=True)


def _publish(temporary: Path, target: Path) -> None:
    """Give the finished file at `temporary` the name `target`; FileExistsError if it is taken."""
    try:
        os.link(temporary, target)
        return
    except FileExistsError:
        raise
    except OSError as exc:
        if exc.errno not in _NO_HARD_LINKS:
            raise
    with open(target, "xb"):  # reserve the name; only then may the rename replace it
        pass
    os.replace(temporary, target)


def _save_all(images: ImageStoredForm, folder: Path, prefix: str, pnginfo: Any = None) -> list[str]:
    pictures = _to_pictures(images)
    written: list[str] = []
    try:
        for picture in pictures:
            written.append(str(_write_numbered(folder, prefix, picture, pnginfo).resolve()))
    except OSError as exc:
        raise NodeError(f"cannot write pictures to {str(folder)!r}: {exc}") from None
    return written


# Saved and previewed files are cached in memory only (disk_cache=False): within one process a
# repeated run reports the files it already wrote, while another process (perhaps with another
# --output-dir) writes its own instead of reporting paths that may be elsewhere or deleted.


@node("SaveImage", category="image", output_node=True, disk_cache=False)
class SaveImage(Node):
    """Save pictures as numbered PNG files in the output folder, with the workflow embedded."""

    images: ImageStoredForm = Input(Image, stored_form=True)
    prefix: str = Param("diffgraph", doc="file names are <prefix>_00001.png, <prefix>_00002.png, ...")
    outputs = {"files": Output(Files, doc="absolute paths of the PNG files written")}

    def run(self, ctx: RunContext) -> dict[str, Any]:
        from PIL.PngImagePlugin import PngInfo

        prefix = _check_prefix(self.prefix)
        recipe = {"workflow": ctx.workflow, "params": ctx.template_params}
        info = PngInfo()
        # ASCII JSON keeps the chunk a plain tEXt that any PNG reader (and the editor) can parse
        info.add_text(WORKFLOW_CHUNK, json.dumps(recipe, ensure_ascii=True, default=str))
        return {"files": _save_all(self.images, Path(ctx.output_dir), prefix, info)}


@node("PreviewImage", category="image", output_node=True, disk_cache=False)
class PreviewImage(Node):
    """Show pictures without keeping them: PNG files under the output folder's `previews/`."""

    images: ImageStoredForm = Input(Image, stored_form=True)
    outputs = {"files": Output(Files, doc="absolute paths of the preview PNG files")}

    def run(self, ctx: RunContext) -> dict[str, Any]:
        return {"files": _save_all(self.images, Path(ctx.output_dir) / "previews", "preview")}


# ---------------------------------------------------------------------------------------------
# masks


@node("Mask", category="mask")
class MaskNode(Node):
    """Build an inpainting mask (1 = repaint) from a mask, an image's brightness and/or a rectangle.

    Steps, in order: take the linked mask (else the image's luminance, else zeros the image's
    size), threshold it, add the rectangle, invert, grow or shrink, feather.
    """

    mask: Tensor | None = Input(Mask, optional=True, doc="a mask to start from (LoadImage's alpha mask, say)")
    image: Tensor | None = Input(Image, optional=True, doc="without a mask: its luminance is the mask (white = "
                                                           "repaint); with one: only checked to be the mask's size")
    use_luminance: bool = Param(True, doc="off: without a mask, use the image only for its size")
    threshold: float = Param(0.5, ge=0.0, le=1.0, step=0.01,
                             doc="values >= threshold become 1, others 0; 0 keeps soft values")
    invert: bool = Param(False, doc="swap repaint and keep (the rectangle too)")
    grow: int = Param(0, ge=-1024, le=1024, doc="pixels to grow the mask by (negative: shrink)")
    feather: int = Param(0, ge=0, le=1024, doc="pixels of soft edge (Gaussian blur radius)")
    x: int = Param(0, ge=0, doc="rectangle left edge, in pixels")
    y: int = Param(0, ge=0, doc="rectangle top edge, in pixels")
    width: int = Param(0, ge=0, doc="rectangle width; the rectangle is added when width and height > 0")
    height: int = Param(0, ge=0, doc="rectangle height")
    outputs = {"mask": Output(Mask, doc="the mask [B, 1, H, W] in [0, 1]")}

    def run(self, ctx: RunContext) -> dict[str, Any]:
        import torch

        mask = self._source()
        if self.threshold > 0:
            mask = (mask >= self.threshold).float()
        if self.width > 0 and self.height > 0:
            size_h, size_w = mask.shape[2:]
            if self.x >= size_w or self.y >= size_h:
                field = "x" if self.x >= size_w else "y"
                raise NodeError(f"the rectangle at ({self.x}, {self.y}) lies outside the {size_w}x{size_h} mask",
                                field=field)
            mask = mask.clone()
            mask[:, :, self.y:self.y + self.height, self.x:self.x + self.width] = 1.0
        if self.invert:
            mask = 1.0 - mask
        if self.grow:
            mask = grow_mask(mask, self.grow)
        if self.feather:
            mask = feather_mask(mask, self.feather)
        return {"mask": mask.clamp(0, 1).to(torch.float32).contiguous()}

    def _source(self) -> Tensor:
        import torch

        image = None if self.image is None else pixels_of(self.image)
        if self.mask is not None:
            mask = pixels_of(self.mask)
            if image is not None:
                require_same_size(mask, image, "mask")
            return mask.nan_to_num(0.0).clamp(0, 1)
        if image is None:
            raise NodeError("link a mask or an image: without one the mask's size is unknown", field="mask")
        image = image.nan_to_num(0.0).clamp(0, 1)
        if not self.use_luminance:
            return torch.zeros(image.shape[0], 1, *image.shape[2:])
        # exactly Pillow's convert("L") on the 8-bit values, so a mask picture thresholds as diffusers' does
        levels = (image.double() * 255).round()
        weighted = levels[:, 0:1] * 19595 + levels[:, 1:2] * 38470 + levels[:, 2:3] * 7471
        return (torch.floor((weighted + 32768) / 65536) / 255).float()


@node("PasteBack", category="mask")
class PasteBack(Node):
    """Keep the original outside the mask: mask x image + (1 - mask) x original, per pixel.

    After inpainting, the decoded picture differs slightly from the input everywhere (the VAE's
    round trip); pasting the original back makes every pixel the mask keeps exactly the input's, as
    InvokeAI's canvas does and ComfyUI's ImageCompositeMasked. A soft (feathered) mask blends.
    """

    image: Tensor = Input(Image, doc="the new picture (VAEDecode's)")
    original: Tensor = Input(Image, doc="the picture to keep outside the mask, the image's size")
    mask: Tensor = Input(Mask, doc="1 = take the new picture, 0 = keep the original")
    outputs = {"image": Output(Image, doc="the new picture inside the mask, the original outside")}

    def run(self, ctx: RunContext) -> dict[str, Any]:
        import torch

        image = pixels_of(self.image)
        original = pixels_of(self.original)
        mask = pixels_of(self.mask)
        for field, other in (("original", original), ("mask", mask)):
            require_same_size(other, image, field)
            if other.shape[0] not in (1, image.shape[0]):
                raise NodeError(f"{other.shape[0]} {field}s for {image.shape[0]} images (give 1 or one each)",
                                field=field)
        weight = mask.nan_to_num(0.0).clamp(0, 1).expand(image.shape[0], 3, *image.shape[2:])
        pasted = torch.lerp(original.expand_as(image), image, weight)  # exact where weight is 0 or 1
        return {"image": pasted.contiguous()}


def pixels_of(value: Tensor) -> Tensor:
    """A linked IMAGE or MASK (checked by the engine) as a float CPU tensor."""
    return value.detach().float().cpu()


def require_same_size(value: Tensor, image: Tensor, field: str) -> None:
    if value.shape[2:] != image.shape[2:]:
        raise NodeError(f"the {field} is {value.shape[3]}x{value.shape[2]} but the image is "
                        f"{image.shape[3]}x{image.shape[2]}; they must be the same size", field=field)


def grow_mask(mask: Tensor, pixels: int) -> Tensor:
    """Grow (pixels > 0) or shrink (< 0) by a square of `pixels` on each side; outside the border
    counts as neither, so a mask touching the edge does not shrink away from it."""
    import torch.nn.functional as F

    reach, size = abs(pixels), 2 * abs(pixels) + 1
    sign = 1.0 if pixels > 0 else -1.0  # shrinking is growing the complement: min = -max(-x)
    # a square is a row then a column: O(size) work per pixel instead of O(size^2)
    rows = F.max_pool2d(sign * mask, (1, size), stride=1, padding=(0, reach))
    return sign * F.max_pool2d(rows, (size, 1), stride=1, padding=(reach, 0))


def feather_mask(mask: Tensor, pixels: int) -> Tensor:
    """Soften edges with a separable Gaussian blur reaching `pixels` on each side (sigma = pixels / 3)."""
    import torch
    import torch.nn.functional as F

    offsets = torch.arange(-pixels, pixels + 1, dtype=torch.float32)
    kernel = torch.exp(-0.5 * (offsets / (pixels / 3.0)) ** 2)
    kernel = kernel / kernel.sum()
    padded = F.pad(mask, (pixels, pixels, pixels, pixels), mode="replicate")
    blurred = F.conv2d(padded, kernel.view(1, 1, 1, -1))
    return F.conv2d(blurred, kernel.view(1, 1, -1, 1))


NODES = [LoadImage, SaveImage, PreviewImage, MaskNode, PasteBack]
