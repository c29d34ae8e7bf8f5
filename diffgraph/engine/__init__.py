"""The engine: graph model, workflow files, validation, cache keys, cache, executor, events.

Imports neither `diffgraph.nodes` nor `diffgraph.server`, and no torch.
"""

from .access import DEFAULT_MAX_IMAGE_PIXELS, FileAccess, ModelRoot
from .cache import Cache, DiskCache, MemoryCache
from .document import dump_document, parse_document, read_document
from .errors import Cancelled, Issue, NodeError, RunFailed, WorkflowError
from .executor import Executor, RunResult
from .node import CancelToken, Input, Node, NodeSpec, Output, Param, RunContext, input_problem, node
from .options import OptionError, RunOptions
from .plan import Plan, compile_workflow, load_plan, parse_override
from .registry import NodeRegistry, default_registry
from .threads import ThreadPolicy
from .types import Boolean, Files, Float, Int, PortType, String

__all__ = [
    "DEFAULT_MAX_IMAGE_PIXELS", "Boolean", "Cache", "CancelToken", "Cancelled", "DiskCache", "Executor",
    "FileAccess", "Files", "Float", "Input", "Int", "Issue", "MemoryCache", "ModelRoot", "Node", "NodeError",
    "NodeRegistry", "NodeSpec", "OptionError", "Output", "Param", "Plan", "PortType", "RunContext", "RunFailed", "RunOptions", "RunResult",
    "String", "ThreadPolicy", "WorkflowError", "compile_workflow", "default_registry", "dump_document",
    "input_problem", "load_plan", "node", "parse_document", "parse_override", "read_document",
]
