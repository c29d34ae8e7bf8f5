"""Port types: what flows along an edge, which types feed which, and how a value is cached on disk.

A port type is a small class. The engine knows the primitives; the node catalog adds its own
(LATENT, IMAGE, UNET, ...) by subclassing `PortType`. Compatibility is explicit: a type feeds
itself and the types that list it in `accepts`. `PortType[V]` says which Python value `V` the port
carries (`Input(T)` is typed as it), and `check(value)` says whether a value really is one.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar

V = TypeVar("V")


class PortType(Generic[V]):
    """Base of every port type, carrying values of type `V`. Subclasses set `name` and optionally
    `accepts`, `description`, `check`, `save`, `load`."""

    name: ClassVar[str] = "ANY"
    #: what a value of this type is, for the message of a value that is not one
    description: ClassVar[str] = "any value"
    #: names of other types whose values this type accepts (e.g. FLOAT accepts INT)
    accepts: ClassVar[tuple[str, ...]] = ()
    #: the colour the editor draws this type's ports and links in (CSS); "" = derived from the name
    colour: ClassVar[str] = ""
    #: False for values that only live in memory (models): they never go to the disk cache
    disk_cacheable: ClassVar[bool] = True

    @classmethod
    def feeds(cls, target: type[PortType]) -> bool:
        """True when a value of this type may be linked into a port of type `target`."""
        return target.name == "ANY" or cls.name == target.name or cls.name in target.accepts

    @classmethod
    def check(cls, value: Any) -> str | None:
        """None when `value` is one this port carries (in the form a node receives it, or the disk
        cache's form), else what it is instead ("a str", "a dict with keys a, b"). Default: any value."""
        return None

    @classmethod
    def display_colour(cls) -> str:
        """`colour`, or a stable hue from the name so a node pack's new type gets one of its own."""
        if cls.colour:
            return cls.colour
        hue = int(hashlib.sha256(cls.name.encode()).hexdigest()[:8], 16) % 360
        return f"hsl({hue} 60% 65%)"

    @classmethod
    def save(cls, value: Any, directory: Path, stem: str) -> list[str]:
        """Write `value` under `directory`; return the file names written. Default: JSON."""
        name = f"{stem}.json"
        (directory / name).write_text(json.dumps(value, allow_nan=False), encoding="utf-8")
        return [name]

    @classmethod
    def load(cls, directory: Path, files: list[str]) -> Any:
        return json.loads((directory / files[0]).read_text(encoding="utf-8"))

    @classmethod
    def materialize(cls, value: Any) -> Any:
        """The value a node's `run()` receives, from what `load` returned. Default: as it is.

        `load` may return a lighter form (numpy arrays where nodes compute on torch tensors), so
        that a re-run whose nodes only write cached values out never imports the heavy library.
        """
        return value

    @classmethod
    def nbytes(cls, value: Any) -> int:
        """Approximate memory held by `value`, for the memory cache's byte budget."""
        return value_nbytes(value)


def describe_value(value: Any) -> str:
    """A short account of a value for error messages: its type, and a tensor's shape or a dict's keys."""
    if value is None:
        return "nothing (None)"
    shape = getattr(value, "shape", None)
    if shape is not None:
        return f"a {type(value).__name__} of shape {list(shape)}"
    if isinstance(value, dict):
        keys = ", ".join(map(str, list(value)[:8])) + (", ..." if len(value) > 8 else "")
        return f"a dict with keys {keys}" if value else "an empty dict"
    if isinstance(value, (list, tuple)):
        return f"a {type(value).__name__} of {len(value)} items"
    return f"a {type(value).__name__}"


def _plain(kinds: tuple[type, ...], refuse: tuple[type, ...] = ()) -> Any:
    """A `check` accepting instances of `kinds` (but not of `refuse`: bool is an int)."""

    def check(cls: Any, value: Any) -> str | None:
        fits = isinstance(value, kinds) and not isinstance(value, refuse)
        return None if fits else describe_value(value)

    return classmethod(check)


def value_nbytes(value: Any, _depth: int = 0) -> int:
    """The memory a value holds, at its real size: a tensor's whole storage (a small view of a huge
    tensor keeps all of it alive), a numpy array's buffer, a PIL picture's pixels, text and bytes,
    and containers of those. Duck-typed, so the engine needs neither torch nor Pillow."""
    if isinstance(value, (str, bytes, bytearray)):
        return 64 + len(value)
    if value is None or isinstance(value, (bool, int, float)):
        return 64
    storage = getattr(value, "untyped_storage", None)  # torch.Tensor
    if callable(storage):
        try:
            return 64 + int(storage().nbytes())
        except Exception:  # noqa: BLE001 - a tensor subclass without storage (meta, sparse): its elements
            return 64 + int(value.numel() * value.element_size())
    if hasattr(value, "nbytes") and hasattr(value, "dtype"):  # numpy array (a view counts its base)
        base = getattr(value, "base", None)
        return 64 + int(getattr(base, "nbytes", 0) or value.nbytes)
    if hasattr(value, "getbands") and hasattr(value, "size") and hasattr(value, "mode"):  # PIL picture
        width, height = value.size
        bytes_per_pixel = {"1": 1, "L": 1, "P": 1, "I;16": 2}.get(value.mode, 4)
        return 64 + width * height * max(bytes_per_pixel, len(value.getbands()))
    if _depth < 8 and isinstance(value, dict):
        return 64 + sum(value_nbytes(item, _depth + 1) for item in value.values())
    if _depth < 8 and isinstance(value, (list, tuple)):
        return 64 + sum(value_nbytes(item, _depth + 1) for item in value)
    return 64


class Any_(PortType[Any]):
    name = "ANY"
    colour = "#dddddd"


class Int(PortType[int]):
    name = "INT"
    colour = "#52b788"
    description = "a whole number"
    check = _plain((int,), refuse=(bool,))


class Float(PortType[float]):
    name = "FLOAT"
    colour = "#95d5b2"
    accepts = ("INT",)
    description = "a number"
    check = _plain((int, float), refuse=(bool,))


class String(PortType[str]):
    name = "STRING"
    colour = "#a0c4ff"
    description = "a text"
    check = _plain((str,))


class Boolean(PortType[bool]):
    name = "BOOLEAN"
    colour = "#e5989b"
    description = "true or false"
    check = _plain((bool,))


class Files(PortType[list[str]]):
    """A list of file paths a node wrote (SaveImage); `run --json` reports them as outputs."""

    name = "FILES"
    colour = "#adb5bd"
    description = "a list of file paths"

    @classmethod
    def check(cls, value: Any) -> str | None:
        fits = isinstance(value, list) and all(isinstance(item, str) for item in value)
        return None if fits else describe_value(value)


#: python type of a param -> its port type, for params that are fed by links
PARAM_PORT_TYPES: dict[type, type[PortType[Any]]] = {int: Int, float: Float, str: String, bool: Boolean}

#: type names usable in a workflow's template `params:` block
TEMPLATE_PARAM_TYPES: dict[str, type] = {"INT": int, "FLOAT": float, "STRING": str, "BOOLEAN": bool}
