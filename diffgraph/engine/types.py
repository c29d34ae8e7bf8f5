"""Port types: what flows along an edge, which types feed which, and how a value is cached on disk.

A port type is a small class. The engine knows the primitives; the node catalog adds its own
(LATENT, IMAGE, UNET, ...) by subclassing `PortType`. Compatibility is explicit: a type feeds
itself and the types that list it in `accepts`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar


class PortType:
    """Base of every port type. Subclasses set `name` and optionally `accepts`, `save`, `load`."""

    name: ClassVar[str] = "ANY"
    #: names of other types whose values this type accepts (e.g. FLOAT accepts INT)
    accepts: ClassVar[tuple[str, ...]] = ()
    #: False for values that only live in memory (models): they never go to the disk cache
    disk_cacheable: ClassVar[bool] = True

    @classmethod
    def feeds(cls, target: type[PortType]) -> bool:
        """True when a value of this type may be linked into a port of type `target`."""
        return target.name == "ANY" or cls.name == target.name or cls.name in target.accepts

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
        return 64 + len(value) if isinstance(value, (str, bytes)) else 64


class Any_(PortType):
    name = "ANY"


class Int(PortType):
    name = "INT"


class Float(PortType):
    name = "FLOAT"
    accepts = ("INT",)


class String(PortType):
    name = "STRING"


class Boolean(PortType):
    name = "BOOLEAN"


class Files(PortType):
    """A list of file paths a node wrote (SaveImage); `run --json` reports them as outputs."""

    name = "FILES"


#: python type of a param -> its port type, for params that are fed by links
PARAM_PORT_TYPES: dict[type, type[PortType]] = {int: Int, float: Float, str: String, bool: Boolean}

#: type names usable in a workflow's template `params:` block
TEMPLATE_PARAM_TYPES: dict[str, type] = {"INT": int, "FLOAT": float, "STRING": str, "BOOLEAN": bool}
