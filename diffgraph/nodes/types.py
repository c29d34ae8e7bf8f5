"""Port types of the diffusion catalog, the values they carry, and how each is kept in the disk cache.

Tensors are stored with safetensors, never pickle. Models and schedulers travel as references
(where their files are, stored as JSON); the model cache owns their weights, which never go to
the result cache.
Values (what a node's field holds; each port type's `check` holds the engine to it):
  IMAGE         Tensor: float32 [B, 3, H, W] in [0, 1], on the CPU
  MASK          Tensor: float32 [B, 1, H, W] in [0, 1] (1 = repaint), on the CPU
  LATENT        LatentValue: {"samples": [B, C, h, w]} plus an encoding's spread and inpainting parts
  CONDITIONING  ConditioningValue: named tensors ({"embeds": [B, T, D]} for SD 1.x/2.x)
  DEPTH         Tensor: float32 [B, 1, h, w] in [0, 1], on the CPU
  UNET, VAE, TEXT_ENCODER, SCHEDULER, DEPTH_MODEL   `ModelRef` (of that `kind`)
"""

from __future__ import annotations

import json
import struct
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeAlias, TypedDict, TypeVar

from diffgraph.engine import PortType
from diffgraph.engine.types import describe_value, value_nbytes

from .models import ModelRef

if TYPE_CHECKING:
    from numpy import ndarray
    from torch import Tensor

V = TypeVar("V")


class _LatentParts(TypedDict, total=False):
    std: Tensor  # VAEEncode: the spread of the encoding; the sampler draws from it with its seed
    mask: Tensor  # inpainting (1 = repaint) at the latent's size, and the masked image's encoding
    masked_samples: Tensor
    masked_std: Tensor


class LatentValue(_LatentParts):
    """A LATENT: the samples [B, C, h, w], plus what an encoding adds (all on the CPU)."""

    samples: Tensor


#: a CONDITIONING: named tensors, as the text encoder made them ("embeds" [B, T, D] for SD 1.x/2.x;
#: the family's block outputs for the others)
ConditioningValue: TypeAlias = "dict[str, Tensor]"

#: safetensors dtypes numpy can hold; others (BF16, F8) load as torch tensors
_NUMPY_DTYPES = {"F64", "F32", "F16", "I64", "I32", "I16", "I8", "U8", "BOOL"}


def _tensor_bytes(value: Any) -> int:
    """Tensors at their storage's size: a view keeps its whole base tensor alive (numpy arrays
    restored from the disk cache too)."""
    return value_nbytes(value)


def _numpy_readable(path: Path) -> bool:
    """True when every tensor in the safetensors file has a dtype numpy knows."""
    with open(path, "rb") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        if length > 100_000_000:
            raise ValueError("safetensors header too large")
        header = json.loads(handle.read(length))
    return all(v.get("dtype") in _NUMPY_DTYPES for k, v in header.items() if k != "__metadata__")


def _tensor_like(value: Any) -> bool:
    """A torch tensor, or the numpy array the disk cache restores (duck-typed: no torch import)."""
    return hasattr(value, "shape") and hasattr(value, "dtype") and not isinstance(value, type)


def _check_pictures(value: Any, channels: int) -> str | None:
    """None for a tensor [B, channels, H, W], else what came."""
    shape = getattr(value, "shape", None)
    if (_tensor_like(value) or isinstance(value, StoredImage)) and shape is not None and len(shape) == 4 \
            and shape[1] == channels:
        return None
    return describe_value(value)


def _as_tensor(value: Any) -> Any:
    """A numpy array restored from the disk cache as the torch tensor nodes compute on."""
    numpy = sys.modules.get("numpy")
    if numpy is not None and isinstance(value, numpy.ndarray):
        import torch

        return torch.from_numpy(value)
    return value


class TensorDictType(PortType[V]):
    """A dict of CPU tensors, stored as one safetensors file.

    The disk cache loads it as numpy arrays (no torch import: a cached re-run that only saves
    pictures stays light); `materialize` hands nodes torch tensors sharing that memory.
    """

    @classmethod
    def save(cls, value: Any, directory: Path, stem: str) -> list[str]:
        from safetensors.torch import save_file

        name = f"{stem}.safetensors"
        save_file({k: v.detach().cpu().contiguous() for k, v in value.items()}, str(directory / name))
        return [name]

    @classmethod
    def load(cls, directory: Path, files: list[str]) -> Any:
        path = directory / files[0]
        if _numpy_readable(path):
            from safetensors.numpy import load_file
        else:
            from safetensors.torch import load_file  # type: ignore[assignment]
        return dict(load_file(str(path)))

    @classmethod
    def materialize(cls, value: Any) -> Any:
        return {k: _as_tensor(v) for k, v in value.items()} if isinstance(value, dict) else value

    @classmethod
    def nbytes(cls, value: Any) -> int:
        return _tensor_bytes(value)


class TensorType(PortType["Tensor"]):
    """A single CPU tensor, stored as a safetensors file."""

    @classmethod
    def save(cls, value: Any, directory: Path, stem: str) -> list[str]:
        return TensorDictType.save({"tensor": value}, directory, stem)

    @classmethod
    def load(cls, directory: Path, files: list[str]) -> Any:
        return TensorDictType.load(directory, files)["tensor"]

    @classmethod
    def materialize(cls, value: Any) -> Any:
        return _as_tensor(value)

    @classmethod
    def nbytes(cls, value: Any) -> int:
        return _tensor_bytes(value)


class Latent(TensorDictType[LatentValue]):
    name = "LATENT"
    colour = "#ff8fab"
    description = "a dict of tensors with \"samples\" [B, C, h, w], as EmptyLatent and VAEEncode make"

    @classmethod
    def check(cls, value: Any) -> str | None:
        if (isinstance(value, dict) and _tensor_like(value.get("samples")) and len(value["samples"].shape) == 4
                and all(_tensor_like(part) for part in value.values())):
            return None
        return describe_value(value)


class Conditioning(TensorDictType[ConditioningValue]):
    name = "CONDITIONING"
    colour = "#f4a261"
    description = "a dict of tensors, as TextEncode makes"

    @classmethod
    def check(cls, value: Any) -> str | None:
        if isinstance(value, dict) and value and all(_tensor_like(part) for part in value.values()):
            return None
        return describe_value(value)


def picture_pixels(images: Any) -> Any:
    """IMAGE [B, 3, H, W] (a tensor or a numpy array) -> uint8 numpy pixels [B, H, W, 3], rounded as
    diffusers' `numpy_to_pil` does (NaN counts as 0). What SaveImage writes, fresh or cached."""
    import numpy as np

    torch = sys.modules.get("torch")
    if torch is not None and isinstance(images, torch.Tensor):
        images = images.detach().float().cpu().numpy()
    scaled = np.clip(np.nan_to_num(images.astype(np.float32, copy=False), nan=0.0), 0, 1) * np.float32(255)
    return np.ascontiguousarray(np.round(scaled).astype(np.uint8).transpose(0, 2, 3, 1))


def is_picture_batch(value: Any) -> bool:
    shape = getattr(value, "shape", None)
    return shape is not None and len(shape) == 4 and shape[1] == 3


#: safetensors dtype -> torch dtype name, for a StoredImage's tensor
_TORCH_DTYPES = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16"}


class StoredImage:
    """An IMAGE as the disk cache restores it, needing neither numpy nor torch: the tensor's bytes
    and the 8-bit pixels of its pictures (computed when it was stored, by `picture_pixels`). A
    fully cached re-run saves the pictures from the pixels; a node computing on the image gets
    the tensor (`Image.materialize`)."""

    def __init__(self, dtype: str, shape: list[int], data: bytes, pixels: bytes):
        self.dtype, self.shape, self.data, self.pixels = dtype, tuple(shape), bytes(data), bytes(pixels)

    @property
    def nbytes(self) -> int:
        return len(self.data) + len(self.pixels)

    def pictures(self) -> list:
        from PIL import Image as PILImage

        batch, _, height, width = self.shape
        size = height * width * 3
        return [PILImage.frombytes("RGB", (width, height), self.pixels[i * size:(i + 1) * size]) for i in range(batch)]

    def tensor(self) -> Any:
        import torch

        flat = torch.frombuffer(bytearray(self.data), dtype=getattr(torch, _TORCH_DTYPES[self.dtype]))
        return flat.reshape(self.shape)


#: an IMAGE as a node taking its stored form receives it (SaveImage): the tensor, the numpy array or
#: the StoredImage the disk cache restores
ImageStoredForm: TypeAlias = "Tensor | ndarray | StoredImage"


class Image(TensorType):
    """Stored as the tensor plus its pictures' 8-bit pixels, so that saving a cached picture
    again needs no numpy (see StoredImage)."""

    name = "IMAGE"
    colour = "#64dfdf"
    description = "RGB pictures, a tensor [B, 3, H, W] in [0, 1]"

    @classmethod
    def check(cls, value: Any) -> str | None:
        return _check_pictures(value, 3)

    @classmethod
    def save(cls, value: Any, directory: Path, stem: str) -> list[str]:
        value = cls.materialize(value)
        files = TensorType.save(value, directory, stem)
        if is_picture_batch(value) and str(value.dtype).removeprefix("torch.") in _TORCH_DTYPES.values():
            from safetensors.numpy import save_file

            name = f"{stem}.pixels.safetensors"
            save_file({"pixels": picture_pixels(value)}, str(directory / name))
            files.append(name)
        return files

    @classmethod
    def load(cls, directory: Path, files: list[str]) -> Any:
        if len(files) != 2:  # an entry stored without pixels: the tensor alone, as numpy reads it
            return TensorType.load(directory, files)
        from safetensors import deserialize

        ((_, tensor),) = deserialize((directory / files[0]).read_bytes())
        ((_, pixels),) = deserialize((directory / files[1]).read_bytes())
        batch, channels, height, width = tensor["shape"]
        if (tensor["dtype"] not in _TORCH_DTYPES or channels != 3 or pixels["dtype"] != "U8"
                or pixels["shape"] != [batch, height, width, 3]):
            raise ValueError(f"the stored picture's pixels {pixels['shape']} do not match its tensor {tensor['shape']}")
        return StoredImage(tensor["dtype"], tensor["shape"], tensor["data"], pixels["data"])

    @classmethod
    def materialize(cls, value: Any) -> Any:
        return value.tensor() if isinstance(value, StoredImage) else _as_tensor(value)


class Mask(TensorType):
    name = "MASK"
    colour = "#80ed99"
    description = "masks, a tensor [B, 1, H, W] in [0, 1] (1 = repaint)"

    @classmethod
    def check(cls, value: Any) -> str | None:
        return _check_pictures(value, 1)


class Depth(TensorType):
    """A depth map [B, 1, h, w] in [0, 1] (1 = near), at the depth estimator's resolution."""

    name = "DEPTH"
    colour = "#c9a0dc"
    description = "depth maps, a tensor [B, 1, h, w] in [0, 1], as DepthEstimate makes"

    @classmethod
    def check(cls, value: Any) -> str | None:
        return _check_pictures(value, 1)


class ModelType(PortType[ModelRef]):
    """A reference to a model (`ModelRef`: where its files are), not the weights: the model cache
    in `ctx.services` turns it into a live model. Being small JSON, a loader's result survives in
    the disk cache, so a second process skips re-checking the model."""

    #: the `ModelRef.kind` this port carries
    kind: ClassVar[str] = ""

    @classmethod
    def check(cls, value: Any) -> str | None:
        if isinstance(value, ModelRef) and value.kind == cls.kind:
            return None
        if isinstance(value, ModelRef):
            return f"a reference to a {value.kind or 'model'}"
        if value is None:  # a loader's empty output (a pixel-space DDPM model has no VAE or text encoder)
            return "nothing: the model loaded upstream has none"
        return describe_value(value)

    @classmethod
    def save(cls, value: Any, directory: Path, stem: str) -> list[str]:
        return PortType.save(None if value is None else value.to_json(), directory, stem)

    @classmethod
    def load(cls, directory: Path, files: list[str]) -> Any:
        from .models import ref_from_json

        return ref_from_json(PortType.load(directory, files))

    @classmethod
    def nbytes(cls, value: Any) -> int:
        return 1024  # the weights are accounted for by the model cache, not the result cache


class UNet(ModelType):
    name = "UNET"
    colour = "#b07cff"
    kind = "unet"
    description = "a UNet or transformer, as LoadPipeline or LoadUNet gives"


class VAE(ModelType):
    name = "VAE"
    colour = "#ff6b9a"
    kind = "vae"
    description = "a VAE, as LoadPipeline or LoadVAE gives"


class TextEncoder(ModelType):
    """A text encoder together with its tokenizer."""

    name = "TEXT_ENCODER"
    colour = "#ffd166"
    kind = "text_encoder"
    description = "a text encoder, as LoadPipeline or LoadTextEncoder gives"


class Scheduler(ModelType):
    name = "SCHEDULER"
    colour = "#8ecae6"
    kind = "scheduler"
    description = "a scheduler, as LoadPipeline or Scheduler gives"


class DepthModel(ModelType):
    name = "DEPTH_MODEL"
    colour = "#c9a227"
    kind = "depth_model"
    description = "a depth estimator, as LoadDepthModel gives"
