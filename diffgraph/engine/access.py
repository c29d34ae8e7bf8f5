"""Where the files and models a workflow names may come from: one policy, chosen at the entry point.

The CLI runs the user's own workflows: `FileAccess()` lets file params name any local path and
model params any local path or Hugging Face repo id (downloads allowed). The server runs what any
client sends: `FileAccess.contained(...)` resolves file params inside its input (uploads) folder
only and model params under its model roots or as repo ids already in the hub cache, and its
refusals never say whether a path exists nor where the server runs. Nodes ask the policy
(`ctx.access`, and the `access` argument of `Node.fingerprint`); they never check paths themselves.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from .errors import NodeError

#: the default largest picture LoadImage decodes and the server accepts as an upload, in pixels:
#: 4096x4096, four times an SDXL picture (1024x1024) upscaled 2x, far beyond SD 1.x/2.x
DEFAULT_MAX_IMAGE_PIXELS = 4096 * 4096
#: the largest image file read, in bytes (a PNG of the largest picture above is at most ~200 MB)
MAX_IMAGE_FILE_BYTES = 256 * 1024 * 1024


@dataclass(frozen=True)
class ModelRoot:
    """Model names are joined to `base` and must stay inside `root` (often the same folder).
    `label` stands for the root's location in messages a client reads."""

    base: Path
    root: Path
    label: str = "<models>"


@dataclass(frozen=True)
class FileAccess:
    """The resolution policy for file and model params. The default is the CLI's: permissive."""

    #: None: file params are local paths (relative to the working directory); else only names
    #: of files inside this folder
    input_root: Path | None = None
    #: None: model params are local paths or repo ids; else only models under these roots
    model_roots: tuple[ModelRoot, ...] | None = None
    #: whether a Hugging Face repo id missing from the hub cache may be downloaded
    allow_downloads: bool = True
    #: the largest picture LoadImage decodes, in pixels
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS

    @classmethod
    def contained(cls, input_root: Path, model_roots: list[ModelRoot], *, allow_downloads: bool = False,
                  max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> FileAccess:
        return cls(Path(os.path.realpath(input_root)),
                   tuple(ModelRoot(Path(os.path.abspath(r.base)), Path(os.path.abspath(r.root)), r.label)
                         for r in model_roots),
                   allow_downloads, max_image_pixels)

    @property
    def permissive(self) -> bool:
        return self.input_root is None

    # -- file params (LoadImage, masks) ---------------------------------------------------------

    def input_file(self, text: str, field: str) -> Path:
        """The path a file param names. Permissive: the path as given (`~` expanded). Contained: a
        file inside the input folder, else a NodeError that says nothing about other paths."""
        if self.input_root is None:
            return Path(text).expanduser()
        name = _plain_relative(text)
        candidate = self.input_root / name if name is not None else None
        if candidate is None or not _inside(candidate, self.input_root):
            raise NodeError(f"{text!r} is not a file of this server's input folder: on the server, `{field}` "
                            "names an uploaded file (the `name` that POST /api/uploads returns)", field)
        if not candidate.exists():
            raise NodeError(f"no uploaded file named {text!r}: upload it first with POST /api/uploads and "
                            f"use the `name` it returns", field)
        return candidate

    def redact(self, message: str) -> str:
        """Contained: `message` with the server's own folders replaced by labels (`<uploads>`, the model
        roots' labels, `<server>` for the working directory), so a run's error shows no server path."""
        if self.input_root is None:
            return message
        places = [(self.input_root, "<uploads>")]
        places += [(r.root, r.label) for r in self.model_roots or ()]
        places.append((Path.cwd(), "<server>"))
        prefixes: dict[str, str] = {}
        for folder, label in places:
            for text in {str(folder), os.path.abspath(folder), os.path.realpath(folder)}:
                if len(text) > 1:
                    prefixes.setdefault(text, label)
        for text in sorted(prefixes, key=len, reverse=True):
            message = message.replace(text, prefixes[text])
        return message

    # -- model params ---------------------------------------------------------------------------

    def model_path(self, text: str, field: str) -> Path | None:
        """Contained only: the model folder or file `text` names under a model root, or None when it
        names none (it may then be a repo id in the hub cache). A NodeError for names that can never
        be a model of this server (outside every root)."""
        assert self.model_roots is not None, "model_path is the contained policy's; permissive callers resolve paths"
        refused = NodeError(f"{text!r} is not a model this server knows: on the server, `{field}` names a model "
                            "under its model folders (the bundled models, its data folder's models/, "
                            "`--model-dir` folders, the Hugging Face cache) or a Hugging Face repo id", field)
        if "\x00" in text or text.startswith("~"):
            raise refused
        if os.path.isabs(text):
            normal = Path(os.path.normpath(text))
            if not any(_lexically_inside(normal, r.root) for r in self.model_roots):
                raise refused
            if normal.exists() and any(_inside(normal, r.root) for r in self.model_roots):
                return Path(os.path.realpath(normal))
            raise refused
        name = _plain_relative(text)
        if name is None:
            raise refused
        for model_root in self.model_roots:
            candidate = model_root.base / name
            if _lexically_inside(candidate, model_root.root) and candidate.exists() and _inside(candidate,
                                                                                                model_root.root):
                return Path(os.path.realpath(candidate))
        return None


def _plain_relative(text: str) -> PurePosixPath | None:
    """`text` as a relative path with no `..`, no empty name, no NUL and no backslash, else None."""
    if not text or text != text.strip() or "\x00" in text or "\\" in text or os.path.isabs(text):
        return None
    path = PurePosixPath(text)
    if any(part in ("..", "") for part in path.parts) or text.startswith("~"):
        return None
    return path


def _lexically_inside(path: Path, root: Path) -> bool:
    return Path(os.path.normpath(path)).is_relative_to(os.path.abspath(root))


def _inside(path: Path, root: Path) -> bool:
    """After following symlinks, `path` is `root` or below it."""
    return Path(os.path.realpath(path)).is_relative_to(os.path.realpath(root))
