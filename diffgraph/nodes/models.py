"""Finding, checking and loading models; the per-process model cache.

Models travel between nodes by reference: a loader node checks that its `model` names a usable
model and returns small `ModelRef`s (a resolved local path plus a component), which the result
cache can keep on disk. The nodes that compute with a model turn the ref into live weights
through the `ModelCache` kept in `ctx.services["models"]`: loaded once per process, placed on the
run's device and dtype, dropped least-recently-used under a memory budget.

Where a model can come from:
  - a local diffusers folder (model_index.json and one subfolder per component) or a single
    component folder (config.json);
  - a Hugging Face repo id, read from huggingface_hub's cache (HF_HUB_OFFLINE honoured);
  - a single-file `.safetensors` checkpoint in the original Stable Diffusion layout, converted by
    diffusers' `from_single_file` with the configs of a local diffusers folder (`config`).
Pickle files (.ckpt, .bin, .pt) can run code when loaded: they are refused unless the user opts
in with `allow_pickle`. The format is judged by the file's content, never by its name.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import json
import os
import re
import struct
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from diffgraph.engine import FileAccess, NodeError
from diffgraph.engine.files import describe_os_error, open_regular, read_regular
from diffgraph.settings import Settings

from . import fastpath

PACKAGE_DIR = Path(__file__).resolve().parent.parent
REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
#: one file in a Hugging Face repo, as huggingface_hub's HfFileSystem names it (`hf://` optional):
#: `org/name/path/in/repo.safetensors`, or `org/name@revision/path/in/repo.safetensors`
HUB_FILE = re.compile(r"^(?:hf://)?(?P<repo>[A-Za-z0-9][\w.-]*/[\w.-]+?)(?:@(?P<revision>[\w.-]+))?"
                      r"/(?P<path>(?:[\w.-]+/)*[\w.-]+\.safetensors)$")
HUB_FILE_DOC = ("a file in a Hugging Face repo is `org/name/path/in/repo.safetensors` (diffusers' repo id + "
                "weight_name; `hf://` before it and `@revision` after the name optional), read from the hub cache")
#: what a diffusers pipeline repo is fetched with: configs and the components' safetensors weights, not the
#: multi-GB single-file checkpoints some repos also keep at their root
PIPELINE_HUB_PATTERNS = ("*.json", "*.txt", "*/*.safetensors", "*.model")
#: never fetched: half-precision and EMA variants
HUB_IGNORE_PATTERNS = ("*.fp16.safetensors", "*non_ema*", "*.ema.safetensors")
#: what a ControlNet repo holds (diffusers' layout at the root, or a pipeline's controlnet/): its config
#: and safetensors weights, not the pickle or half-precision variants beside them
CONTROLNET_HUB_PATTERNS = ("*.json", "diffusion_pytorch_model.safetensors", "diffusion_pytorch_model-*-of-*.safetensors",
                           "controlnet/diffusion_pytorch_model.safetensors",
                           "controlnet/diffusion_pytorch_model-*-of-*.safetensors")
TORCH_DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}
PICKLE_HELP = ("pickle files can run arbitrary code when loaded; convert the checkpoint to .safetensors, "
               "or set allow_pickle=true if you trust its source")
#: libraries whose classes a model folder may name
LIBRARIES = ("diffusers", "transformers")
#: the largest model_index.json / config.json read (real ones are a few KB)
MAX_CONFIG_BYTES = 16 * 1024 * 1024
#: the CLI's policy: model params are any local path or repo id
PERMISSIVE = FileAccess()


@dataclass(frozen=True)
class ModelRef:
    """Where one component of a model lives. JSON-serializable, so loaders cache on disk."""

    kind: str  # unet | vae | text_encoder | depth_model | scheduler
    path: str  # resolved local folder or checkpoint file
    subfolder: str = ""
    revision: str = ""
    #: for a single-file checkpoint: the diffusers folder that provides the configs
    config: str = ""
    allow_pickle: bool = False
    #: digest of the local files when the loader ran (a model changed in place loads afresh)
    fingerprint: str = ""
    #: schedulers only: the class name and its config (schedulers are built, not loaded)
    scheduler_class: str = ""
    scheduler_config: str = ""  # JSON text, so the ref stays hashable
    #: the model family (`families.FAMILIES`); "" = Stable Diffusion 1.x/2.x, diffgraph's own loop
    family: str = ""
    #: unets only: the IP-Adapters ApplyIPAdapter attached (JSON text; see ipadapter.py), "" = none
    ip_adapters: str = ""
    #: LoRAs applied while a node computes with this model (LoadLoRA; the loaded model itself never
    #: changes): (file, content digest, strength) each, in the order they stack
    loras: tuple[tuple[str, str, float], ...] = ()

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ModelRef:
        loras = tuple((str(path), str(digest), float(strength)) for path, digest, strength in data.get("loras", ()))
        return cls(**{**data, "loras": loras})

    @property
    def single_file(self) -> bool:
        return Path(self.path).is_file()

    def describe(self) -> str:
        return f"{self.path}" + (f" ({self.subfolder})" if self.subfolder else "")


def ref_from_json(data: Any) -> ModelRef | None:
    return None if data is None else ModelRef.from_json(data)


# ---------------------------------------------------------------------------------------------
# finding a model


def sniff_format(path: Path) -> str:
    """'safetensors', 'pickle' or 'unknown', from the first bytes of the (regular) file."""
    try:
        with open_regular(path) as handle:
            head = handle.read(16)
            size = os.fstat(handle.fileno()).st_size
    except OSError:
        return "unknown"
    if len(head) >= 10 and head[8:9] == b"{":
        (header_length,) = struct.unpack("<Q", head[:8])
        if 2 <= header_length <= size - 8:
            return "safetensors"
    if head.startswith(b"PK\x03\x04") or head[:1] == b"\x80":  # torch.save zip, or a raw pickle stream
        return "pickle"
    return "unknown"


def resolve_model(text: str, revision: str = "", field: str = "model", access: FileAccess = PERMISSIVE,
                  hub_patterns: tuple[str, ...] | None = None) -> Path:
    """A local path for `text`. Permissive (the CLI): a path (absolute, relative to the working folder
    or to the diffgraph package) or a Hugging Face repo id found through huggingface_hub's cache.
    Contained (the server): a model under `access`'s model roots or a repo id in the hub cache."""
    text = text.strip()
    if not text:
        raise NodeError("no model given: name a diffusers folder, a .safetensors file or a repo id", field)
    if not access.permissive:
        found = access.model_path(text, field)
        if found is not None:
            return found
        if not REPO_ID.match(text):
            access.model_path("/", field)  # raises the policy's refusal, which says nothing about the path
        return _from_hub(text, revision, field, access.allow_downloads, hub_patterns)
    path = Path(text).expanduser()
    candidates = [path] if path.is_absolute() else [Path.cwd() / path, PACKAGE_DIR / path]
    for candidate in candidates:
        if candidate.exists():
            return candidate.resolve()
    if path.is_absolute() or text.startswith(".") or not REPO_ID.match(text):
        raise NodeError(f"{text!r} does not exist", field)
    return _from_hub(text, revision, field, access.allow_downloads, hub_patterns)


def hub_file(text: str, pattern: re.Pattern[str] = HUB_FILE) -> tuple[str, str, str] | None:
    """(repo id, revision, path in the repo) of a `org/name[@revision]/path/file.safetensors` reference (or of
    another repo path `pattern` names: ipadapter's HUB_FOLDER), or None."""
    found = pattern.match(text.strip())
    if found is None or any(part in (".", "..") for part in found["path"].split("/")):
        return None
    return found["repo"], found["revision"] or "", found["path"]


def resolve_file(text: str, field: str, access: FileAccess = PERMISSIVE) -> Path | None:
    """The local file or folder `text` names (as `local_path`), else the hub cache's copy of the repo
    file it names (`hub_file`): fetched only where downloads are allowed (the CLI; a server started
    with --allow-downloads) and HF_HUB_OFFLINE is not set. None when `text` is neither."""
    found = local_path(text, access)
    if found is not None:
        return found
    reference = hub_file(text)
    if reference is None:
        return None
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError

    repo_id, revision, filename = reference
    offline = _offline()
    try:
        return Path(hf_hub_download(repo_id, filename, revision=revision or None,
                                    local_files_only=offline or not access.allow_downloads))
    except LocalEntryNotFoundError:
        raise NodeError(f"{text!r} is no local file, and {filename} of the Hugging Face repo {repo_id} is not in the "
                        f"Hugging Face cache ({_why_not_fetched(access.allow_downloads, offline)}); download it "
                        "first or give a local file", field) from None
    except RepositoryNotFoundError:
        raise NodeError(f"{text!r} is no local file, and {repo_id!r} is not a Hugging Face repo", field) from None
    except (HfHubHTTPError, OSError, ValueError) as exc:
        raise NodeError(f"{text!r} is no local file, and {filename} could not be fetched from the Hugging Face "
                        f"repo {repo_id}: {exc}", field) from None


def cached_hub_file(text: str, field: str, access: FileAccess) -> Path | None:
    """The hub cache's copy of a repo file (`hub_file`), never downloading (validation): None when the
    cache lacks it and a run may fetch it; a NodeError saying why when a run may not (offline, or a
    server without --allow-downloads)."""
    if not can_download(access):
        return resolve_file(text, field, access)  # a lookup in the cache only
    try:
        return resolve_file(text, field, dataclasses.replace(access, allow_downloads=False))
    except NodeError:
        return None


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def can_download(access: FileAccess) -> bool:
    """Whether a run under `access` may fetch from the Hugging Face Hub (allowed, and HF_HUB_OFFLINE unset)."""
    return access.allow_downloads and not _offline()


def _why_not_fetched(allow_downloads: bool, offline: bool) -> str:
    if not allow_downloads:
        return "downloads are off on this server: start it with `diffgraph serve --allow-downloads`"
    return "HF_HUB_OFFLINE is set" if offline else "the Hub could not be reached"


#: nodes that hand their `unet` input on with an adapter attached (validation walks through them)
UNET_PASS_THROUGH = ("ApplyIPAdapter", "LoadLoRA")
#: the most nodes a validation walk follows upstream (a longer chain is left to the run)
MAX_WALK = 256


def walk_upstream(source: Any, port: str, through: tuple[str, ...] = UNET_PASS_THROUGH) -> Any:
    """At validation time (`check_links`): follow `port` upstream from a linked source while the source
    is one of `through` (by default, to the loader behind LoadLoRA and ApplyIPAdapter); the first other
    source, or None."""
    for _ in range(MAX_WALK):
        if source is None or source[0] not in through:
            return source
        source = getattr(source, "upstream", {}).get(port)
    return None


def local_path(text: str, access: FileAccess = PERMISSIVE) -> Path | None:
    """The local file or folder `text` names (as resolve_model finds local paths), or None: never
    a Hugging Face lookup, and nothing the policy refuses, so validation can call it."""
    text = text.strip()
    if not text:
        return None
    if not access.permissive:
        try:
            return access.model_path(text, "model")
        except NodeError:
            return None  # the loader's own checks report the refusal
    path = Path(text).expanduser()
    for candidate in [path] if path.is_absolute() else [Path.cwd() / path, PACKAGE_DIR / path]:
        if candidate.exists():
            return candidate.resolve()
    return None


def local_fingerprint(text: str, access: FileAccess = PERMISSIVE, field: str = "model", revision: str = "") -> str | None:
    """A digest of the names, sizes and modification times of a local model's files, so a model
    re-trained in place gets new cache keys. None for hub repo ids (their revision pins them).
    A name the contained policy refuses raises its NodeError, and so does a repo id missing from the
    hub cache when downloads are off: the server knows only the repos its cache holds."""
    import hashlib

    text = text.strip()
    if not text:
        return None
    if access.permissive:
        path = Path(text).expanduser()
        candidates = [path] if path.is_absolute() else [Path.cwd() / path, PACKAGE_DIR / path]
        if hub_file(text) is not None and not any(candidate.exists() for candidate in candidates):
            cached = cached_hub_file(text, field, access)  # its path names the commit
            candidates = [cached] if cached is not None else []
    else:
        found = access.model_path(text, field)
        if found is None and hub_file(text) is not None:
            found = cached_hub_file(text, field, access)
        elif found is None and not REPO_ID.match(text):
            access.model_path("/", field)  # the policy's refusal
        if found is None and not access.allow_downloads and hub_file(text) is None:
            _from_hub(text, revision, field, allow_downloads=False)  # a local lookup in the hub cache
        candidates = [found] if found is not None else []
    for candidate in candidates:
        if candidate.is_file():
            files = [candidate]
        elif candidate.is_dir():  # a diffusers folder is two levels deep: component folders, then files
            files = sorted(f for pattern in ("*", "*/*") for f in candidate.glob(pattern) if f.is_file())
        else:
            continue
        digest = hashlib.sha256(str(candidate.resolve()).encode())
        for item in files:
            stat = item.stat()
            digest.update(f"{item.relative_to(candidate) if item != candidate else ''}|{stat.st_size}|"
                          f"{stat.st_mtime_ns}\n".encode())
        return digest.hexdigest()
    return None


def _from_hub(repo_id: str, revision: str, field: str, allow_downloads: bool = True,
              patterns: tuple[str, ...] | None = None) -> Path:
    """`patterns`: the files a repo of this kind is fetched with (default: a diffusers pipeline's)."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError

    offline = _offline()
    try:
        folder = snapshot_download(repo_id, revision=revision or None, local_files_only=offline or not allow_downloads,
                                   allow_patterns=list(patterns or PIPELINE_HUB_PATTERNS),
                                   ignore_patterns=list(HUB_IGNORE_PATTERNS))
    except LocalEntryNotFoundError:
        where = _why_not_fetched(allow_downloads, offline)
        raise NodeError(f"{repo_id!r} is not a local model, and the Hugging Face repo is not in the cache "
                        f"({where}); download it first or give a local folder", field) from None
    except RepositoryNotFoundError:
        raise NodeError(f"{repo_id!r} is neither a local path nor a Hugging Face repo", field) from None
    except (HfHubHTTPError, OSError, ValueError) as exc:
        raise NodeError(f"could not fetch {repo_id!r} from the Hugging Face Hub: {exc}", field) from None
    return Path(folder)


def default_single_file_config(path: Path, title: str) -> Path:
    """The diffusers folder diffusers would take a single-file checkpoint's configs from (its
    `fetch_diffusers_config`, judged from the tensor names and shapes), if the Hugging Face cache
    holds it: looked up offline, never downloaded. Otherwise a NodeError naming `config`."""
    import torch
    from diffusers.loaders.single_file_utils import fetch_diffusers_config
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    from .families import UnknownFamily, checkpoint_header

    advice = (f"a single-file {title} checkpoint needs `config`: a diffusers folder or Hugging Face repo id with "
              "the model's configs (and the components the file lacks)")
    try:  # shapes without weights: diffusers tells models apart by a few tensors' sizes
        shapes = {name: torch.empty(entry.get("shape", []), device="meta")
                  for name, entry in checkpoint_header(path).items()}
        repo_id = str(fetch_diffusers_config(shapes)["pretrained_model_name_or_path"])
    except (UnknownFamily, OSError, ValueError, TypeError, KeyError, IndexError, RuntimeError):
        raise NodeError(advice, "config") from None
    try:
        return Path(snapshot_download(repo_id, local_files_only=True,
                                      allow_patterns=list(PIPELINE_HUB_PATTERNS)))
    except (LocalEntryNotFoundError, OSError, ValueError):
        raise NodeError(f"{advice}; diffusers would use {repo_id}, which is not in the Hugging Face cache here",
                        "config") from None


def check_checkpoint_file(path: Path, allow_pickle: bool, field: str = "model") -> None:
    kind = sniff_format(path)
    if kind == "pickle" and not allow_pickle:
        raise NodeError(f"{path.name} is a pickle file, not safetensors: {PICKLE_HELP}", field)
    if kind == "unknown":
        raise NodeError(f"{path.name} is neither a .safetensors checkpoint nor a diffusers folder", field)
    if kind == "safetensors":
        _refuse_scaled_weights(path, field)


#: the last part of the tensor names that hold the scales of quantized weights: ComfyUI's scaled fp8
#: files (a `scaled_fp8` marker, per-layer `scale_weight` / `scale_input`) and its mixed-precision ones
#: (`weight_scale`, `comfy_quant`). diffusers' single-file converters drop them and would load the
#: weights unscaled, a wrong model without an error
SCALED_WEIGHT_NAMES = ("scaled_fp8", "scale_weight", "scale_input", "weight_scale", "comfy_quant")


def _refuse_scaled_weights(path: Path, field: str) -> None:
    from .families import UnknownFamily, checkpoint_header

    try:
        names = checkpoint_header(path)
    except (UnknownFamily, OSError):
        return  # a damaged file: loading it says so in diffusers' terms
    scales = [name for name in names if name.rsplit(".", 1)[-1] in SCALED_WEIGHT_NAMES]
    if scales:
        raise NodeError(f"{path.name} holds quantized weights with separate scales ({len(scales)} tensors such as "
                        f"{scales[0]}: ComfyUI's scaled fp8 format), which diffusers' single-file loading would use "
                        "unscaled; give the checkpoint in float32, bfloat16, float16 or plain float8_e4m3fn (weights "
                        "without scale tensors)", field)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(read_regular(path, MAX_CONFIG_BYTES).decode("utf-8"))
    except (OSError, ValueError) as exc:
        raise NodeError(f"cannot read {path}: {describe_os_error(exc) if isinstance(exc, OSError) else exc}") from None
    if not isinstance(data, dict):
        raise NodeError(f"{path} is not a JSON object")
    return data


def component_class(folder: Path, subfolder: str) -> tuple[str, str] | None:
    """(library, class name) of a component, from model_index.json or the component's config."""
    index = folder / "model_index.json"
    if subfolder and index.is_file():
        entry = _read_json(index).get(subfolder)
        if isinstance(entry, list) and len(entry) == 2 and entry[0] in LIBRARIES and entry[1]:
            return str(entry[0]), str(entry[1])
        return None
    where = folder / subfolder if subfolder else folder
    config = where / "config.json"
    if config.is_file():
        data = _read_json(config)
        if "_class_name" in data:
            return "diffusers", str(data["_class_name"])
        if data.get("architectures"):
            return "transformers", str(data["architectures"][0])
    if (where / "scheduler_config.json").is_file():
        return "diffusers", str(_read_json(where / "scheduler_config.json").get("_class_name", ""))
    return None


def find_component(folder: Path, names: tuple[str, ...], expected: tuple[str, ...], field: str) -> str:
    """The subfolder of `folder` holding a component whose class is one of `expected` ("" = the
    folder itself). Raises a NodeError naming what was found instead."""
    found = []
    for subfolder in names:
        spec = component_class(folder, subfolder)
        if spec is None:
            continue
        if spec[1] in expected:
            return subfolder
        found.append(spec[1])
    if found:
        raise NodeError(f"{folder} holds a {found[0]}, not one of {', '.join(expected)}", field)
    if not (folder / "model_index.json").is_file() and not (folder / "config.json").is_file():
        raise NodeError(f"{folder} is not a diffusers model folder (no model_index.json or config.json)", field)
    raise NodeError(f"{folder} has no {' or '.join(n for n in names if n) or 'model'} component", field)


def scheduler_ref(folder: Path, subfolder: str = "scheduler") -> ModelRef:
    config_path = folder / subfolder / "scheduler_config.json"
    config = _read_json(config_path)
    return ModelRef(kind="scheduler", path=str(folder), subfolder=subfolder,
                    scheduler_class=str(config.get("_class_name", "")),
                    scheduler_config=json.dumps(config, sort_keys=True))


@contextlib.contextmanager
def libraries_quiet() -> Iterator[None]:
    """diffusers' and transformers' weight-loading bars, advice and warnings are not the user's business:
    a run prints diffgraph's own progress and result only. Errors still raise; the settings come back after."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    saved = [(module, module.get_verbosity(), module.is_progress_bar_enabled())
             for module in (diffusers_logging, transformers_logging)]
    for module, _, _ in saved:
        module.set_verbosity_error()
        module.disable_progress_bar()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for module, verbosity, bars in saved:
            module.set_verbosity(verbosity)
            if bars:
                module.enable_progress_bar()


def build_scheduler(ref: ModelRef) -> Any:
    """A fresh scheduler (schedulers keep per-run state, so every loop builds its own)."""
    import diffusers

    cls = getattr(diffusers, ref.scheduler_class, None)
    if cls is None or not ref.scheduler_class.endswith("Scheduler"):
        raise NodeError(f"unknown scheduler class {ref.scheduler_class!r}", "scheduler")
    with libraries_quiet():
        return cls.from_config(json.loads(ref.scheduler_config))


# ---------------------------------------------------------------------------------------------
# loading


@dataclass
class TextEncoderPair:
    """A text encoder together with the tokenizer that feeds it."""

    tokenizer: Any
    model: Any


@dataclass
class DepthPair:
    model: Any
    processor: Any


def _module_bytes(value: Any) -> int:
    model = getattr(value, "model", value)
    parameters = getattr(model, "parameters", None)
    if parameters is None:
        return 0
    return sum(p.numel() * p.element_size() for p in parameters())


def _cls(library: str, name: str) -> Any:
    if library not in LIBRARIES:
        raise NodeError(f"components from {library!r} are not supported")
    cls = getattr(importlib.import_module(library), name, None)
    if cls is None:
        raise NodeError(f"{library} has no class {name!r} (is the library too old?)")
    if not isinstance(cls, type) or not hasattr(cls, "from_pretrained"):  # a folder names classes, nothing else
        raise NodeError(f"{library}.{name} is not a loadable model class")
    return cls


def _load_part(folder: Path, subfolder: str, torch_dtype: Any, allow_pickle: bool) -> Any:
    spec = component_class(folder, subfolder)
    if spec is None:
        raise NodeError(f"{folder / subfolder} is not a model folder")
    library, name = spec
    cls = _cls(library, name)
    where = folder / subfolder if subfolder else folder
    if name.endswith(("Tokenizer", "TokenizerFast", "Processor", "ProcessorPil", "FeatureExtractor")):
        return cls.from_pretrained(str(where), local_files_only=True)
    if library == "diffusers":
        return cls.from_pretrained(str(where), **_diffusers_dtype(torch_dtype), local_files_only=True,
                                   use_safetensors=None if allow_pickle else True)
    return cls.from_pretrained(str(where), dtype=torch_dtype, local_files_only=True,
                               use_safetensors=None if allow_pickle else True)


def _diffusers_dtype(torch_dtype: Any) -> dict[str, Any]:
    """diffusers 0.42 renamed `torch_dtype` to `dtype`; older releases know only the former."""
    import diffusers

    major, minor = (int(part) for part in diffusers.__version__.split(".")[:2])
    return {"dtype" if (major, minor) >= (0, 42) else "torch_dtype": torch_dtype}


def _load_single_file(ref: ModelRef, torch_dtype: Any) -> dict[str, Any]:
    from diffusers import StableDiffusionPipeline

    path = Path(ref.path)
    check_checkpoint_file(path, ref.allow_pickle)
    try:
        pipe = StableDiffusionPipeline.from_single_file(
            str(path), config=ref.config, local_files_only=True, **_diffusers_dtype(torch_dtype),
            safety_checker=None, requires_safety_checker=False)
    except Exception as exc:  # noqa: BLE001 - diffusers explains in its own terms; say what it means here
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise NodeError(f"cannot load {path.name} as a Stable Diffusion checkpoint with the configs of "
                        f"{ref.config}: {reason}", "model") from None
    return {
        "unet": pipe.unet,
        "vae": pipe.vae,
        "text_encoder": TextEncoderPair(pipe.tokenizer, pipe.text_encoder),
    }


@contextlib.contextmanager
def _loading(what: str, field: str | None) -> Iterator[None]:
    """Load quietly; any failure is the user's input (a broken or foreign model file): a NodeError
    naming `field` and what was being loaded."""
    try:
        with libraries_quiet():
            yield
    except NodeError as exc:
        raise NodeError(str(exc), exc.field or field) from None
    except Exception as exc:  # noqa: BLE001 - a broken model file is the user's input
        raise NodeError(f"cannot load {what}: {type(exc).__name__}: {exc}", field) from None


class ModelCache:
    """Live models keyed by (kind, path, subfolder, revision, files, device, dtype), LRU under a
    byte budget (Settings.model_cache_gb: DIFFGRAPH_MODEL_CACHE_GB, default 16). A model bigger than the
    budget still loads (the run needs it); it is then the only one kept."""

    def __init__(self, max_bytes: int | None = None):
        self.max_bytes = Settings().model_cache_bytes if max_bytes is None else max_bytes
        self.bytes = 0
        self._entries: OrderedDict[tuple, tuple[Any, int]] = OrderedDict()
        self.loads = 0  # how many times weights were read from disk (tests and stats read it)
        #: what was made from a live model (fastpath's compiled twins): (kind, id) -> (model, made)
        self._derived: dict[tuple[str, int], tuple[Any, Any]] = {}
        #: models placed under a VRAM budget that visit the GPU in turn (fastpath.OffloadGroup)
        self.offload_group = fastpath.OffloadGroup()

    def __len__(self) -> int:
        return len(self._entries)

    def load(self, ref: ModelRef, device: str = "cpu", dtype: str = "fp32", field: str | None = None,
             budget_gb: float | None = None) -> Any:
        """`budget_gb` (CUDA only): place under a VRAM budget (fastpath.plan_offload) instead of on the device;
        such models are kept apart from those placed whole."""
        if ref.family not in ("", "sd"):  # a component of the family's one shared ModularPipeline
            pipeline = self.pipeline(ref, device, dtype, field, budget_gb)
            return pipeline if ref.kind == "text_encoder" else getattr(pipeline, ref.subfolder)
        budget_gb, placement = _placement(device, budget_gb)
        key = (ref.kind, ref.path, ref.subfolder, ref.revision, ref.config, ref.fingerprint, placement, dtype)
        if (live := self._kept(key)) is not None:
            return live
        import torch

        torch_dtype = getattr(torch, TORCH_DTYPES[dtype])
        with _loading(ref.describe(), field):
            if ref.single_file:
                parts = _load_single_file(ref, torch_dtype)
            else:
                parts = {ref.kind: self._load_folder_part(ref, torch_dtype)}
        self.loads += 1
        plan = None if budget_gb is None else self._offload_plan(Path(ref.path), torch_dtype, budget_gb, parts)
        for kind, value in parts.items():
            if plan is None:
                placed = _placed(value, device, torch_dtype)
            else:
                placed = _placed(value, "cpu", torch_dtype)
                module = getattr(placed, "model", placed)
                component = ref.subfolder if kind == ref.kind and ref.subfolder else kind
                fastpath.place_under_budget(module, plan[component], device, self.offload_group, kind)
            self._put((kind, *key[1:]), placed)
        return self._entries[key][0]

    def _offload_plan(self, where: Path, torch_dtype: Any, budget_gb: float, parts: dict[str, Any]
                      ) -> fastpath.OffloadPlan:
        """How a model's components share a VRAM budget, from the sizes of all of them (the folder's
        safetensors headers, so that the first component loaded knows about the others)."""
        import torch

        element = torch.tensor([], dtype=torch_dtype).element_size()
        try:
            sizes = fastpath.component_sizes(where, element)
        except (OSError, ValueError):
            sizes = {}
        blocks = {}
        for kind, value in parts.items():
            module = getattr(value, "model", value)
            if hasattr(module, "parameters"):
                sizes.setdefault(kind, _module_bytes(module))
                blocks[kind] = fastpath.largest_block_bytes(module)
        return fastpath.plan_offload(sizes, int(budget_gb * fastpath.GIB),
                                     fastpath.working_bytes(1024 * 1024), blocks)

    def get_or_load(self, key: tuple, load: Callable[[], Any]) -> Any:
        """The live model kept under `key`, else `load()`'s (which reads it from disk and places it), kept
        under `key` by the same LRU and budget as every model: for a loader this cache does not know
        (single-file ControlNets)."""
        if (live := self._kept(key)) is not None:
            return live
        model = load()
        self.loads += 1
        self._put(key, model)
        return model

    def _kept(self, key: tuple) -> Any:
        entry = self._entries.get(key)
        if entry is None:
            return None
        self._entries.move_to_end(key)
        return entry[0]

    def derived(self, base: Any, kind: str, build: Callable[[], Any]) -> Any:
        """Something made from the live model `base` (its compiled twin), made once and kept as long as
        `base` is: dropped with it when the budget evicts it."""
        key = (kind, id(base))
        entry = self._derived.get(key)
        if entry is not None and entry[0] is base:
            return entry[1]
        value = build()
        self._derived[key] = (base, value)
        return value

    def pipeline(self, ref: ModelRef, device: str = "cpu", dtype: str = "fp32", field: str | None = None,
                 budget_gb: float | None = None) -> Any:
        """The one Modular Diffusers pipeline of a model beyond SD 1.x/2.x, holding all of its
        components (blocks run against it, never against a pipeline built per node: see modular.py)."""
        budget_gb, placement = _placement(device, budget_gb)
        key = ("pipeline", ref.path, "", ref.revision, ref.config, ref.fingerprint, placement, dtype)
        if (live := self._kept(key)) is not None:
            return live
        import torch

        from . import modular

        torch_dtype = getattr(torch, TORCH_DTYPES[dtype])
        with _loading(f"{ref.path} as a {ref.family} model", field):
            if ref.single_file:  # the checkpoint, with the configs (and what it lacks) of `config`
                pipeline = modular.build_pipeline(Path(ref.config), ref.family, torch_dtype, ref.allow_pickle,
                                                  checkpoint=Path(ref.path))
            else:
                pipeline = modular.build_pipeline(Path(ref.path), ref.family, torch_dtype, ref.allow_pickle)
        self.loads += 1
        if budget_gb is None:
            for component in pipeline.components.values():
                _placed(component, device, torch_dtype)
        else:
            modules = {name: c for name, c in pipeline.components.items() if hasattr(c, "parameters")}
            plan = self._offload_plan(Path(ref.path), torch_dtype, budget_gb, modules)
            for name, component in modules.items():
                fastpath.place_under_budget(_placed(component, "cpu", torch_dtype), plan[name], device,
                                            self.offload_group, name)
        self._put(key, pipeline)
        return pipeline

    @staticmethod
    def _load_folder_part(ref: ModelRef, torch_dtype: Any) -> Any:
        folder = Path(ref.path)
        if ref.kind == "text_encoder":
            tokenizer_folder = "tokenizer" if ref.subfolder else ""
            return TextEncoderPair(_load_part(folder, tokenizer_folder, None, ref.allow_pickle),
                                   _load_part(folder, ref.subfolder, torch_dtype, ref.allow_pickle))
        if ref.kind == "depth_model":
            if ref.subfolder:
                processor = _load_part(folder, "feature_extractor", None, ref.allow_pickle)
            else:
                from transformers import AutoImageProcessor

                processor = AutoImageProcessor.from_pretrained(str(folder), local_files_only=True)
            return DepthPair(_load_part(folder, ref.subfolder, torch_dtype, ref.allow_pickle), processor)
        return _load_part(folder, ref.subfolder, torch_dtype, ref.allow_pickle)

    def _put(self, key: tuple, value: Any) -> None:
        nbytes = _entry_bytes(value)
        self._entries[key] = (value, nbytes)
        self.bytes += nbytes
        self._evict_over_budget()

    def recount(self, live: Any) -> None:
        """`live` (a model this cache holds, or a component of one) changed size (LoRA layers kept in it):
        its entry counted again and made the most recently used; older models unloaded while over budget."""
        key = next((key for key, (value, _) in self._entries.items() if id(live) in _held_ids(value)), None)
        if key is None:
            return
        value, counted = self._entries[key]
        nbytes = _entry_bytes(value)
        self._entries[key] = (value, nbytes)
        self._entries.move_to_end(key)
        self.bytes += nbytes - counted
        self._evict_over_budget()

    def _evict_over_budget(self) -> None:
        while self.bytes > self.max_bytes and len(self._entries) > 1:
            _, (model, evicted) = self._entries.popitem(last=False)
            self.bytes -= evicted
            gone = _held_ids(model)
            for derived_key in [k for k, (base, _) in self._derived.items() if id(base) in gone]:
                del self._derived[derived_key]
            self.offload_group.forget(gone)


def _placement(device: str, budget_gb: float | None) -> tuple[float | None, str]:
    """The VRAM budget that applies on `device` (CUDA only), and where a model so placed is, for cache keys:
    models under a budget are kept apart from those placed whole."""
    budget_gb = budget_gb if fastpath.is_cuda(device) else None
    return budget_gb, device if budget_gb is None else f"{device}@{budget_gb:g}GB"


def _held_ids(value: Any) -> set[int]:
    """The ids of a cache entry's value and of the modules in it (a pair's model, a pipeline's components)."""
    return {id(value), id(getattr(value, "model", None)),
            *(id(c) for c in (getattr(value, "components", None) or {}).values())}


def _entry_bytes(value: Any) -> int:
    """A cache entry's weights: a module's (or a pair's model's), or all of a pipeline's components'."""
    components = getattr(value, "components", None)
    if isinstance(components, dict):
        return sum(_module_bytes(component) for component in components.values())
    return _module_bytes(value)


def _placed(value: Any, device: str, torch_dtype: Any) -> Any:
    for part in (value, getattr(value, "model", None)):
        if part is not None and hasattr(part, "to") and hasattr(part, "parameters"):
            if getattr(part, "dtype", torch_dtype) != torch_dtype:
                part.to(dtype=torch_dtype)
            part.to(device=device)
            part.eval()
            part.requires_grad_(False)
    return value


def model_cache(ctx: Any) -> ModelCache:
    """The process-wide model cache the executor's owner handed in (created on first use, sized by the
    `settings` service the entry point parsed)."""
    if "models" not in ctx.services:
        settings = ctx.services.get("settings") or Settings()
        ctx.services["models"] = ModelCache(settings.model_cache_bytes)
    return ctx.services["models"]


def load(ctx: Any, ref: Any, field: str) -> Any:
    if ref is None:
        raise NodeError(f"no {field} arrives here: the model loaded upstream has none (pixel-space DDPM "
                        "models have no VAE or text encoder)", field)
    if not isinstance(ref, ModelRef):
        raise NodeError(f"expected a model reference, got {type(ref).__name__}", field)
    return model_cache(ctx).load(ref, ctx.device, ctx.dtype, field, budget_gb=ctx.options.vram_budget_gb)


def torch_dtype(ctx: Any) -> Any:
    import torch

    return getattr(torch, TORCH_DTYPES[ctx.dtype])
