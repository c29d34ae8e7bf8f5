"""Reading and writing workflow documents (YAML or JSON) safely.

The loader is PyYAML's safe loader (C-accelerated when libyaml is there) with two changes that keep
YAML and JSON one document: timestamps stay strings, and a duplicated key is an error rather than
silently the last one. Whatever the bytes, the only exception that comes out is `WorkflowError`.
"""

from __future__ import annotations

import contextlib
import gc
import json
import math
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from .errors import Issue, WorkflowError
from .files import FileTooLarge, NotRegularFile, describe_os_error, read_regular

MAX_DOCUMENT_BYTES = 128 * 1024 * 1024
MAX_DEPTH = 64
#: containers and scalars visited, counting every alias expansion (stops YAML "billion laughs")
MAX_ELEMENTS = 5_000_000
#: YAML aliases may expand a document to at most this many times its own size (counted as the
#: characters of its keys and scalars plus two per value), and never past MAX_DOCUMENT_BYTES: a
#: 1 KB request must not become a 60 MB row or gigabytes of memory
MAX_ALIAS_EXPANSION = 8
#: ... but a small document may always expand to this many bytes
MIN_EXPANDED_BYTES = 1024 * 1024

_SafeLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_SafeDumper: Any = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
_TIMESTAMP = "tag:yaml.org,2002:timestamp"
_MERGE = "tag:yaml.org,2002:merge"


class _WorkflowLoader(_SafeLoader):  # type: ignore[misc, valid-type]
    """yaml's SafeLoader, minus timestamps, plus duplicate-key detection."""

    yaml_implicit_resolvers = {
        first: [r for r in resolvers if r[0] != _TIMESTAMP]
        for first, resolvers in _SafeLoader.yaml_implicit_resolvers.items()
    }

    def construct_mapping(self, node: Any, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == _MERGE:  # merges of merges grow exponentially (another YAML bomb)
                raise yaml.constructor.ConstructorError(
                    None, None, "merge keys (<<: *anchor) are not supported; write the keys out", key_node.start_mark
                )
            key = self.construct_object(key_node, deep=True)
            try:
                duplicate = key in seen
                seen.add(key)
            except TypeError:
                continue  # unhashable keys are reported by the constructor itself
            if duplicate:
                mark = key_node.start_mark
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (line {mark.line + 1}); ids and keys must be unique",
                    mark,
                )
        return super().construct_mapping(node, deep=deep)


_WorkflowLoader.add_constructor("tag:yaml.org,2002:map", _WorkflowLoader.construct_yaml_map)


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Planning allocates many small acyclic objects; the cyclic GC would rescan them all over again,
    turning a linear pass super-linear on 100k-node graphs."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _fail(message: str) -> WorkflowError:
    return WorkflowError([Issue(None, None, message)])


def _json_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise ValueError(f"duplicate key {key!r}; ids and keys must be unique")
            seen.add(key)
    return result


class _FloatWatch:
    """json's parse_float hook: notes whether any number overflowed to infinity (1e999)."""

    def __init__(self) -> None:
        self.all_finite = True

    def parse(self, text: str) -> float:
        value = float(text)
        if not math.isfinite(value):
            self.all_finite = False
        return value


def _check_depth(document: dict[str, Any]) -> None:
    """The nesting bound of `_check_plain`, for documents whose types JSON already guarantees."""
    stack: list[tuple[Any, int]] = [(document, 1)]
    while stack:
        container, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise _fail(f"document is nested too deeply (the limit is {MAX_DEPTH} levels)")
        for value in container.values() if type(container) is dict else container:
            if type(value) is dict or type(value) is list:
                stack.append((value, depth + 1))


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number a workflow may hold")


def guess_format(path: str | Path) -> str:
    return "json" if str(path).lower().endswith(".json") else "yaml"


def parse_document(data: bytes | str, fmt: str | None = None, source: str | None = None) -> dict[str, Any]:
    """Parse YAML or JSON text into a plain dict (str keys, JSON scalars), or raise WorkflowError.

    `source` (a file name) is what YAML error positions name.
    """
    if isinstance(data, bytes):
        if len(data) > MAX_DOCUMENT_BYTES:
            raise _fail(f"document is {len(data)} bytes; the limit is {MAX_DOCUMENT_BYTES}")
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise _fail(f"document is not valid UTF-8 (byte {exc.start})") from None
    else:
        text = data
    if text.startswith("\ufeff"):
        text = text[1:]
    if not text.strip():
        raise _fail("document is empty")
    if fmt is None:
        fmt = "json" if text.lstrip().startswith("{") else "yaml"
    floats = _FloatWatch()
    try:
        with gc_paused():
            if fmt == "json":
                document = json.loads(text, object_pairs_hook=_json_pairs, parse_constant=_reject_constant,
                                      parse_float=floats.parse)
            else:
                if _yaml_too_deep(text):
                    raise _fail(f"document is nested too deeply (the limit is {MAX_DEPTH} levels)")
                document = yaml.load(text, Loader=_WorkflowLoader)  # noqa: S506 - a SafeLoader subclass
    except (yaml.YAMLError, ValueError) as exc:
        if isinstance(exc, yaml.MarkedYAMLError):  # say where, instead of PyYAML's "<unicode string>"
            name = source or "the document"
            for attribute in ("context_mark", "problem_mark"):
                mark = getattr(exc, attribute)
                if mark is not None:  # libyaml's marks are read-only: replace them
                    setattr(exc, attribute, yaml.Mark(name, mark.index, mark.line, mark.column, None, None))
        raise _fail(f"not valid {fmt.upper()}: {exc}") from None
    except RecursionError:
        raise _fail(f"document is nested too deeply (the limit is {MAX_DEPTH} levels)") from None
    if not isinstance(document, dict):
        raise _fail(f"a workflow is a mapping of keys (format, nodes, ...), not {_kind(document)}")
    if fmt == "json" and floats.all_finite:
        _check_depth(document)  # JSON gives str keys and JSON scalars only: the nesting is what is left
    else:  # also names where a non-finite number (1e999) stands, and bounds what aliases expand to
        _check_plain(document, expanded_bytes_limit(len(text)))
    if fmt == "json" and "\\u" in text and not _encodable(document):
        raise _fail("document holds an unpaired surrogate escape (\\udXXX): text must be valid Unicode")
    return document


def _encodable(document: dict[str, Any]) -> bool:
    """False when JSON `\\ud800`-style escapes left lone surrogates, which no UTF-8 output can print."""
    try:
        json.dumps(document, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _yaml_nesting_bound(text: str) -> int:
    """An upper bound on how deep the YAML nests, from the characters alone (no parser involved).

    Flow levels are at most the deepest run of open brackets; block levels at most two per column of
    a line's indentation prefix (spaces, `-` and `?`: a block level indents, or alternates map and
    sequence at one indentation). Brackets inside strings only make the bound larger, never smaller.
    """
    flow = deepest = 0
    for char in re.findall(r"[\[\]{}]", text):
        if char in "[{":
            flow += 1
            deepest = max(deepest, flow)
        elif flow:
            flow -= 1
    indent = max((len(line) - len(line.lstrip(" -?")) for line in text.splitlines()), default=0)
    return deepest + 2 * indent + 2


def _yaml_too_deep(text: str) -> bool:
    """True when the YAML nests deeper than MAX_DEPTH, decided before libyaml sees it.

    libyaml composes recursively in C (old releases overflow the C stack past thousands of levels)
    and new releases stop at their own nesting limit with their own message; either way ours would
    never be reached. So: a bound from the characters, and only where it is past MAX_DEPTH, an exact
    count from PyYAML's pure-Python parser, which is iterative, has no limit of its own, and is
    stopped here at MAX_DEPTH + 1 levels.
    """
    if _yaml_nesting_bound(text) <= MAX_DEPTH:
        return False
    depth = 0
    try:
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
                depth += 1
                if depth > MAX_DEPTH:
                    return True
            elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
                depth -= 1
    except yaml.YAMLError:
        return False  # not nested too deeply before the error: the loader reports the error itself
    return False


def _kind(value: Any) -> str:
    if value is None:
        return "an empty document"
    return {list: "a list", str: "a string", int: "a number", float: "a number", bool: "a boolean"}.get(
        type(value), type(value).__name__
    )


def expanded_bytes_limit(text_length: int) -> int:
    """How large (in characters of keys and scalars, two more per value) a document of this length may
    grow once its YAML aliases are expanded."""
    return min(MAX_DOCUMENT_BYTES, max(MIN_EXPANDED_BYTES, MAX_ALIAS_EXPANSION * text_length))


def _check_plain(document: dict[str, Any], max_bytes: int = MAX_DOCUMENT_BYTES) -> None:
    """Iteratively check depth, size and that only JSON types occur (no recursion, no blow-up).

    The size counts every alias expansion, in values and in bytes: an alias to a long string repeated
    a million times is a million long strings to whatever stores or sends the document."""
    stack: list[tuple[Any, int, str]] = [(document, 1, "")]
    visited = 0
    size = 0
    while stack:
        container, depth, where = stack.pop()
        visited += len(container)
        size += 2 * len(container) + 2
        if visited > MAX_ELEMENTS:
            raise _fail(f"document is too large (more than {MAX_ELEMENTS} values once aliases are expanded)")
        if size > max_bytes:
            raise _too_large(max_bytes)
        if depth > MAX_DEPTH:
            raise _fail(f"document is nested too deeply at {where or 'the top'} (the limit is {MAX_DEPTH} levels)")
        is_dict = type(container) is dict
        for key, value in container.items() if is_dict else enumerate(container):
            if is_dict:
                if type(key) is not str:
                    raise _fail(f"key {key!r} at {where or 'the top'} is not a string; quote it")
                size += len(key)
            kind = type(value)
            if kind is dict or kind is list:
                stack.append((value, depth + 1, _path(where, key, is_dict)))
            elif kind is str:
                size += len(value)
                if size > max_bytes:
                    raise _too_large(max_bytes)
            elif kind is int:  # an alias to a 4,000-digit number is 4,000 bytes each time
                size += value.bit_length() // 3
            elif kind is float:
                if not math.isfinite(value):
                    raise _fail(f"{_path(where, key, is_dict)}: {value} is not a finite number")
            elif not (value is None or kind is str or kind is int or kind is bool):
                raise _fail(f"{_path(where, key, is_dict)}: values of type {kind.__name__} are not allowed")


def _too_large(max_bytes: int) -> WorkflowError:
    return _fail(f"document is too large once its YAML aliases are expanded (more than {max_bytes} bytes; "
                 f"aliases may expand a document to {MAX_ALIAS_EXPANSION} times its size or "
                 f"{MIN_EXPANDED_BYTES // 1024 // 1024} MiB, whichever is larger): write the repeated parts out")


def _path(where: str, key: Any, in_dict: bool) -> str:
    if not in_dict:
        return f"{where}[{key}]"
    return f"{where}.{key}" if where else str(key)


def read_document(path: str | Path) -> dict[str, Any]:
    """Read a workflow file; every failure (missing, unreadable, malformed, not a regular file,
    too large) is a WorkflowError. Only regular files are read, and at most MAX_DOCUMENT_BYTES."""
    path = Path(path)
    try:
        data = read_regular(path, MAX_DOCUMENT_BYTES)
    except FileNotFoundError:
        raise _fail(f"{path}: no such file") from None
    except FileTooLarge:
        raise _fail(f"{path}: larger than the limit of {MAX_DOCUMENT_BYTES} bytes") from None
    except NotRegularFile as exc:
        raise _fail(f"{path}: is {exc}; a workflow is a .yaml, .yml or .json file") from None
    except OSError as exc:
        raise _fail(f"{path}: cannot be read ({describe_os_error(exc)})") from None
    return parse_document(data, guess_format(path), source=str(path))


def dump_document(document: dict[str, Any], fmt: str = "yaml") -> str:
    """Serialise a document; YAML and JSON round-trip losslessly with key order kept."""
    if fmt == "json":
        return json.dumps(document, indent=2, ensure_ascii=False) + "\n"
    return yaml.dump(document, Dumper=_SafeDumper, sort_keys=False, allow_unicode=True, width=100)
