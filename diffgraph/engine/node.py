"""The node API: a node type is a small class with typed inputs, params and outputs.

    @node("Add", category="math")
    class Add(Node):
        \"\"\"Add two numbers.\"\"\"
        a: float = Input(Float)
        b: float = Param(1.0, ge=-10, le=10)
        outputs = {"total": Output(Float)}

        def run(self, ctx):
            return {"total": self.a + self.b}

A field's annotation is the value the node receives (what a type checker sees in `run`); the port
type an input carries is the descriptor's argument, and `Input(T)` is typed as `T`'s value type
(`PortType[V]`), so mypy checks that the two agree. Outputs are declared apart from the fields
(`outputs = {...}`), so an output may share its name with an input or a param. Params are
annotated with a Python type (int, float, str, bool); they become a pydantic model that validates
them and gives the editor its JSON schema. Before `run`, the executor checks every input value
against its port type (`PortType.check`).

The older style, `latent: Latent = Input()` and `image_out: Image = Output(name="image")` (the
annotation being the port type), still works for node packs written against it; it is deprecated.
"""

from __future__ import annotations

import builtins
import functools
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar, overload

import pydantic

from .access import FileAccess
from .errors import Cancelled
from .options import RunOptions
from .types import PARAM_PORT_TYPES, PortType

_REQUIRED: Any = object()

V = TypeVar("V")

#: the widget hints a param may give the editor (see `Param.widget`); "model:<kind>" too
WIDGETS = ("", "upload", "seed", "model")
#: the kinds of model a model param may ask for (`widget="model:vae"`); what GET /api/models?kind= takes
MODEL_KINDS = ("pipeline", "unet", "transformer", "vae", "text_encoder", "controlnet", "lora", "ip_adapter",
               "image_encoder", "depth")

# Params without explicit bounds still stay inside 64 bits, so huge numbers are refused early.
INT_MIN, INT_MAX = -(2**63), 2**64 - 1


@dataclass
class InputPort:
    """An input port (made by `Input`). `optional` inputs may stay unlinked (the node sees None).

    `stored_form`: the node takes the value as the disk cache loads it (`PortType.load`, numpy
    arrays for tensors) instead of `PortType.materialize`'s, so reading it needs no torch.
    """

    type: builtins.type[PortType] | None = None  # None: taken from the annotation (the deprecated style)
    optional: bool = False
    doc: str = ""
    stored_form: bool = False

    @property
    def port_type(self) -> builtins.type[PortType]:
        assert self.type is not None, "filled in by @node"
        return self.type


@dataclass
class OutputPort:
    """An output port (made by `Output`)."""

    type: builtins.type[PortType] | None = None
    doc: str = ""
    #: deprecated style only: the port's name when it differs from the attribute's
    name: str = ""

    @property
    def port_type(self) -> builtins.type[PortType]:
        assert self.type is not None, "filled in by @node"
        return self.type


@dataclass
class ParamField:
    """A literal setting with a default and optional bounds (made by `Param`); may also be fed by
    a link."""

    default: Any = _REQUIRED
    ge: float | None = None
    le: float | None = None
    step: float | None = None
    choices: tuple[str, ...] | None = None
    multiline: bool = False
    #: which editor widget the param wants beyond its type: "upload" (an image file), "seed"
    #: (randomize / increment after each run), "model" (a choice of the models the server knows) or
    #: "model:<kind>" (of those, the ones of a kind in MODEL_KINDS: "model:lora")
    widget: str = ""
    doc: str = ""
    python_type: type = object  # filled from the annotation

    @property
    def required(self) -> bool:
        return self.default is _REQUIRED

    @property
    def port_type(self) -> type[PortType]:
        return PARAM_PORT_TYPES[self.python_type]


@overload
def Input(type: type[PortType[V]], *, optional: Literal[False] = False, doc: str = "",
          stored_form: Literal[False] = False) -> V: ...
@overload
def Input(type: type[PortType[V]], *, optional: Literal[True], doc: str = "",
          stored_form: Literal[False] = False) -> V | None: ...
@overload
def Input(type: type[PortType[Any]] | None = None, *, optional: bool = False, doc: str = "",
          stored_form: bool = False) -> Any: ...
def Input(type: type[PortType[Any]] | None = None, *, optional: bool = False, doc: str = "",
          stored_form: bool = False) -> Any:
    """An input port carrying `type`; the field's annotation is the value the node receives
    (`V | None` when optional). With `stored_form`, the node gets the disk cache's form of the value
    (numpy arrays, a StoredImage), so its annotation is the port's declared value only loosely."""
    return InputPort(type, optional, doc, stored_form)


def Output(type: type[PortType[Any]] | None = None, *, doc: str = "", name: str = "") -> OutputPort:
    """An output port of `type`, for a node's `outputs = {"name": Output(T), ...}` declaration.
    (Deprecated style: as a field, `image_out: Image = Output(name="image")`.)"""
    return OutputPort(type, doc, name)


def Param(default: Any = _REQUIRED, *, ge: float | None = None, le: float | None = None,
          step: float | None = None, choices: tuple[str, ...] | None = None, multiline: bool = False,
          widget: str = "", doc: str = "") -> Any:
    """A literal setting, annotated with its Python type (int, float, str or bool)."""
    return ParamField(default, ge, le, step, choices, multiline, widget, doc)


@dataclass
class NodeSpec:
    """Everything the engine knows about a node type, read from its class once."""

    type_name: str
    cls: type[Node]
    category: str
    version: int
    deterministic: bool
    output_node: bool
    #: False for nodes cheaper to recompute than to read back (primitives): memory tier only
    disk_cache: bool
    doc: str
    inputs: dict[str, InputPort]
    params: dict[str, ParamField]
    outputs: dict[str, OutputPort]
    params_model: type[pydantic.BaseModel]

    @functools.cached_property
    def key_prefix(self) -> str:
        """What every cache key of this node type starts from: its name and version."""
        return f"{self.type_name}\x1f{self.version}"

    @functools.cached_property
    def has_fingerprint(self) -> bool:
        return self.cls.fingerprint.__func__ is not Node.fingerprint.__func__  # type: ignore[attr-defined]

    @functools.cached_property
    def port_types(self) -> dict[str, type[PortType]]:
        """What each linkable name (input port, or param fed by a link) accepts."""
        types = {name: port.port_type for name, port in self.inputs.items()}
        types.update({name: param.port_type for name, param in self.params.items()})
        return types

    def to_json(self) -> dict[str, Any]:
        """The catalog entry served by `diffgraph nodes --json` and `GET /api/nodes`."""
        return {
            "type": self.type_name,
            "category": self.category,
            "version": self.version,
            "deterministic": self.deterministic,
            "output_node": self.output_node,
            "doc": self.doc,
            "inputs": [
                {"name": n, "type": p.port_type.name, "optional": p.optional, "doc": p.doc,
                 **_linkable(p.port_type)}
                for n, p in self.inputs.items()
            ],
            "params": [
                {
                    "name": n,
                    "type": p.port_type.name,
                    "required": p.required,
                    "default": None if p.required else p.default,
                    "min": p.ge,
                    "max": p.le,
                    "step": p.step,
                    "choices": list(p.choices) if p.choices else None,
                    "multiline": p.multiline,
                    "widget": p.widget or None,
                    "doc": p.doc,
                    **_linkable(p.port_type),
                }
                for n, p in self.params.items()
            ],
            "outputs": [
                {"name": n, "type": p.port_type.name, "doc": p.doc, "colour": p.port_type.display_colour()}
                for n, p in self.outputs.items()
            ],
            "schema": self.params_model.model_json_schema(),
        }


def input_problem(port: InputPort, value: Any) -> str | None:
    """The node boundary's check of one input value: None when the value is one its port carries
    (or an optional input is left empty), else what is wrong, in the one shape every port type
    shares: "expected LATENT (<what that is>), got <what came>"."""
    if value is None and port.optional:
        return None
    got = port.port_type.check(value)
    return None if got is None else f"expected {port.port_type.name} ({port.port_type.description}), got {got}"


def _linkable(port_type: type[PortType]) -> dict[str, Any]:
    """What the editor needs to check a link into this port and draw it: the engine's own rule."""
    accepts = ["*"] if port_type.name == "ANY" else [port_type.name, *port_type.accepts]
    return {"accepts": accepts,
            "colour": port_type.display_colour()}


class CancelToken:
    """Set by whoever wants the run stopped; polled by the executor and by long nodes."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def check(self) -> None:
        if self._event.is_set():
            raise Cancelled()


@dataclass
class RunContext:
    """What a node sees of the run: device, dtype, cancellation, progress, where to write files."""

    node_id: str
    device: str = "cpu"
    dtype: str = "fp32"
    output_dir: Path = Path("outputs")
    cancel: CancelToken = field(default_factory=CancelToken)
    #: the workflow document and template params of this run (SaveImage embeds them)
    workflow: dict[str, Any] | None = None
    template_params: dict[str, Any] = field(default_factory=dict)
    #: process-wide services the caller hands in (e.g. the model cache); never globals
    services: dict[str, Any] = field(default_factory=dict)
    #: where file and model params may point (the CLI's permissive policy unless the caller chose)
    access: FileAccess = field(default_factory=FileAccess)
    on_progress: Callable[[str, int, int, Any], None] | None = None
    #: the run's speed and memory options (--compile, --vram-budget)
    options: RunOptions = field(default_factory=RunOptions)
    #: a named stage of a node's work (compiling the denoiser), for the run's listeners
    on_stage: Callable[[str, str, str], None] | None = None

    def check_cancelled(self) -> None:
        self.cancel.check()

    def progress(self, step: int, total: int, preview: Any = None) -> None:
        """Report step i of n (and an optional preview image) to the run's listeners."""
        if self.on_progress is not None:
            self.on_progress(self.node_id, step, total, preview)

    def stage(self, stage: str, message: str) -> None:
        """Say what a node is doing that is not a sampling step (`compile`: compiling the denoiser)."""
        if self.on_stage is not None:
            self.on_stage(self.node_id, stage, message)


class Node:
    """Base of every node type. Subclasses declare fields and implement `run`."""

    __node_spec__: ClassVar[NodeSpec]
    #: the node's output ports by name (`Output(T)`); they may share names with inputs and params
    outputs: ClassVar[dict[str, OutputPort]] = {}

    def run(self, ctx: RunContext) -> dict[str, Any]:  # pragma: no cover - abstract
        raise NotImplementedError

    @classmethod
    def fingerprint(cls, params: dict[str, Any], access: FileAccess) -> str | None:
        """Content the cache key must follow beyond the params, read at planning time.

        A node that reads something its params only name (LoadImage: the file behind a path)
        returns a digest of it, so the key changes when the content does. None: params suffice.
        Paths resolve through `access`; a NodeError it raises (a path the policy refuses) is a
        validation error of the node.
        """
        return None

    @classmethod
    def check_links(cls, params: dict[str, Any], linked: dict[str, tuple[str, dict[str, Any], str]],
                    access: FileAccess) -> list[tuple[str, str]]:
        """Validation-time checks of what feeds this node, beyond port types: `linked` maps each
        linked port to (source node type, source params, source output), a tuple that also has the
        source's `node_id` and `upstream` (its own linked ports, alike: see plan.Linked); paths
        resolve through `access`. Returns (field, message) problems; a check that cannot decide from params alone
        returns none (the run decides)."""
        return []

    @classmethod
    def instantiate(cls, values: dict[str, Any]) -> Node:
        instance = cls.__new__(cls)
        instance.__dict__.update(values)
        return instance


def _params_model(type_name: str, params: dict[str, ParamField]) -> type[pydantic.BaseModel]:
    fields: dict[str, Any] = {}
    for name, p in params.items():
        annotation: Any = p.python_type
        if p.choices:
            annotation = Literal[tuple(p.choices)]  # type: ignore[valid-type]
        ge, le = p.ge, p.le
        if p.python_type is int:
            ge = INT_MIN if ge is None else ge
            le = INT_MAX if le is None else le
        extra: dict[str, Any] | None = {"multiline": True} if p.multiline else None
        default = ... if p.required else p.default
        constraints: dict[str, Any] = {"ge": ge, "le": le, "description": p.doc or None, "json_schema_extra": extra}
        if p.python_type is float:
            constraints["allow_inf_nan"] = False
        fields[name] = (annotation, pydantic.Field(default, **constraints))
    config = pydantic.ConfigDict(strict=True, extra="forbid")
    return pydantic.create_model(f"{type_name}Params", __config__=config, **fields)


def node(
    type_name: str,
    *,
    category: str = "misc",
    version: int = 1,
    deterministic: bool = True,
    output_node: bool = False,
    disk_cache: bool = True,
) -> Callable[[type[Node]], type[Node]]:
    """Class decorator that reads a node's typed fields into its `NodeSpec`."""

    def decorate(cls: type[Node]) -> type[Node]:
        inputs: dict[str, InputPort] = {}
        params: dict[str, ParamField] = {}
        outputs: dict[str, OutputPort] = {}
        for name, port in cls.__dict__.get("outputs", {}).items():
            if not isinstance(port, OutputPort) or port.type is None:
                raise TypeError(f"{cls.__name__}.outputs[{name!r}]: declare it as Output(<a PortType>)")
            outputs[name] = port
        annotations = _resolved_annotations(cls)
        for name, annotation in annotations.items():
            marker = cls.__dict__.get(name)
            if isinstance(marker, InputPort):
                if marker.type is None:  # deprecated: the annotation is the port type
                    marker.type = _port_type(cls, name, annotation)
                inputs[name] = marker
            elif isinstance(marker, OutputPort):  # deprecated: an output declared as a field
                if marker.type is None:
                    marker.type = _port_type(cls, name, annotation)
                if (marker.name or name) in outputs:
                    raise TypeError(f"{cls.__name__}: two outputs named {marker.name or name!r}")
                outputs[marker.name or name] = marker
            elif isinstance(marker, ParamField):
                if annotation not in PARAM_PORT_TYPES:
                    raise TypeError(f"{cls.__name__}.{name}: a param is int, float, str or bool")
                kind = marker.widget.removeprefix("model:")
                if marker.widget not in WIDGETS and not (kind != marker.widget and kind in MODEL_KINDS):
                    raise TypeError(f"{cls.__name__}.{name}: widget {marker.widget!r} is not one of {WIDGETS[1:]} "
                                    f"or model:<kind> with a kind in {MODEL_KINDS}")
                marker.python_type = annotation
                params[name] = marker
        clash = set(inputs) & set(params)  # outputs are their own namespace (LoadImage: param and output `image`)
        if clash:
            raise TypeError(f"{cls.__name__}: field names used twice: {sorted(clash)}")
        cls.__node_spec__ = NodeSpec(
            type_name=type_name,
            cls=cls,
            category=category,
            version=version,
            deterministic=deterministic,
            output_node=output_node,
            disk_cache=disk_cache,
            doc=(cls.__doc__ or "").strip(),
            inputs=inputs,
            params=params,
            outputs=outputs,
            params_model=_params_model(type_name, params),
        )
        return cls

    return decorate


def _resolved_annotations(cls: type) -> dict[str, Any]:
    """The class's annotations, each evaluated on its own in its module's namespace: a value type
    that only exists for the type checker (`Tensor` under TYPE_CHECKING) stays a string, which
    only an old-style port or a param would need resolved."""
    import sys
    import typing

    module = sys.modules.get(cls.__module__)
    namespace = dict(vars(module)) if module is not None else {}
    resolved: dict[str, Any] = {}
    for name, annotation in cls.__dict__.get("__annotations__", {}).items():
        if isinstance(annotation, str):
            try:  # as typing.get_type_hints evaluates them, one at a time
                annotation = eval(annotation, namespace, dict(vars(cls)))
            except Exception:  # noqa: BLE001 - a name only the type checker knows
                pass
        if typing.get_origin(annotation) is not ClassVar and annotation is not ClassVar:
            resolved[name] = annotation
    return resolved


def _port_type(cls: type, name: str, annotation: Any) -> type[PortType]:
    if isinstance(annotation, type) and issubclass(annotation, PortType):
        return annotation
    raise TypeError(f"{cls.__name__}.{name}: an input or output is annotated with a PortType subclass")
