"""What kind of model a folder or file is, told from its own files, and the models a machine has
without downloading: what `GET /api/models[?kind=]` lists for the editor's model params.

A param declares the kind it wants in its widget hint (`Param(widget="model:vae")`); a model is
listed for a kind when it is one or holds one (a pipeline folder holds its unet, vae, ...).
Only small, bounded reads: a folder's model_index.json / config.json, a safetensors header.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from diffgraph.engine.files import read_regular
from diffgraph.engine.node import MODEL_KINDS

from .families import checkpoint_header

PACKAGE_DIR = Path(__file__).resolve().parent.parent
#: the largest model_index.json / config.json read (real ones are a few KB)
MAX_CONFIG_BYTES = 1024 * 1024
#: the most models one listing returns, and how deep it looks into a models folder
MAX_LISTED = 2000
MAX_DEPTH = 2
#: the most weight files of one folder whose headers are read to tell its kind
MAX_WEIGHT_FILES = 4

#: model_index.json component -> the kind it is
_COMPONENT_KINDS = {"unet": "unet", "transformer": "transformer", "vae": "vae", "text_encoder": "text_encoder",
                    "controlnet": "controlnet", "depth_estimator": "depth", "image_encoder": "image_encoder"}


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(read_regular(path, MAX_CONFIG_BYTES).decode("utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _kind_of_class(class_name: str) -> str | None:
    """The kind of a diffusers or transformers model class (its config's `_class_name` or
    `architectures`)."""
    name = class_name.lower()
    if "controlnet" in name:
        return "controlnet"
    if name.startswith("unet"):
        return "unet"
    if "transformer" in name and name.endswith("model") and "text" not in name:
        return "transformer"
    if name.startswith(("autoencoder", "vqmodel")):
        return "vae"
    if "depthestimation" in name or name.startswith("dpt"):
        return "depth"
    if "vision" in name:
        return "image_encoder"
    if "textmodel" in name or "encodermodel" in name:
        return "text_encoder"
    return None


def tensor_names(path: Path) -> list[str]:
    """The tensor names in a .safetensors file's header (`families.checkpoint_header`'s bounded read
    of a regular file); [] for anything that is not one."""
    try:
        return list(checkpoint_header(path))
    except (OSError, ValueError):  # UnknownFamily is a ValueError: too short, header too large, damaged
        return []


def kinds_of_weights(names: Iterable[str]) -> list[str]:
    """The kinds a single weights file is, from its tensor names (original and diffusers layouts)."""
    names = list(names)
    if not names:
        return []
    has = lambda *parts: any(part in name for name in names for part in parts)  # noqa: E731
    starts = lambda *prefixes: any(name.startswith(prefixes) for name in names)  # noqa: E731
    if has("lora_", ".lora.", "lora_A", "lora_B", "hada_", "lokr_"):
        return ["lora"]
    if starts("image_proj.", "ip_adapter.", "ip_adapter_"):
        return ["ip_adapter"]
    if has("controlnet_cond_embedding", "input_hint_block", "controlnet_down_blocks") or starts("control_model."):
        return ["controlnet"]
    if starts("model.diffusion_model."):
        kinds = ["pipeline", "transformer" if has("double_blocks.", "joint_blocks.") else "unet"]
        if starts("first_stage_model.", "vae."):
            kinds.append("vae")
        if starts("cond_stage_model.", "conditioner.", "text_encoders."):
            kinds.append("text_encoder")
        return kinds
    if starts("double_blocks.", "joint_blocks.", "transformer_blocks."):
        return ["transformer"]
    if starts("down_blocks.", "input_blocks.") and has("time_embed", "time_embedding"):
        return ["unet"]
    if starts("encoder.", "decoder.") and has("encoder.down", "decoder.up"):
        return ["vae"]
    if starts("text_model.", "encoder.block.", "shared."):
        return ["text_encoder"]
    return []


def kinds_of(path: Path) -> list[str]:
    """The kinds of the model at `path` (a diffusers or transformers folder, a folder of weights, or
    a .safetensors file), the one it is first; [] when its files do not say."""
    if path.is_file():
        return kinds_of_weights(tensor_names(path)) if path.suffix == ".safetensors" else []
    if not path.is_dir():
        return []
    index = _read_json(path / "model_index.json")
    if index:
        # a component listed as [null, null] is one the pipeline can take but this folder lacks
        held = [kind for component, kind in _COMPONENT_KINDS.items()
                if isinstance(index.get(component), list) and any(index[component])]
        return ["pipeline", *held]
    config = _read_json(path / "config.json")
    if config:
        classes = [config.get("_class_name"), *(config.get("architectures") or [])]
        for class_name in classes:
            kind = _kind_of_class(class_name) if isinstance(class_name, str) else None
            if kind:
                return [kind]
    # a folder of weights only (a LoRA or IP-Adapter repo): what its files are
    weights = sorted(path.glob("*.safetensors"))[:MAX_WEIGHT_FILES]
    for file in weights:
        kinds = kinds_of(file)
        if kinds:
            return kinds
    return []


def _entry(name: str, source: str, kinds: list[str]) -> dict[str, Any]:
    return {"name": name, "source": source, "kind": kinds[0] if kinds else "unknown", "kinds": kinds}


def _models_in(folder: Path, prefix: str, source: str) -> list[dict[str, Any]]:
    """The models in a models folder, by their name relative to it: its folders and .safetensors
    files, and those of subfolders that are not models themselves (`loras/style.safetensors`)."""
    found: list[dict[str, Any]] = []
    pending: list[tuple[Path, int]] = [(folder, 0)]
    while pending and len(found) < MAX_LISTED:
        current, depth = pending.pop(0)
        try:
            entries = sorted(current.iterdir())
        except OSError:
            continue
        for entry in entries[:MAX_LISTED]:
            if entry.name.startswith(".") or entry.is_symlink():
                continue
            # a folder of loose weights (`loras/`) is not one model: its files are listed one by one
            is_model = entry.is_file() and entry.suffix == ".safetensors" or entry.is_dir() and (
                (entry / "model_index.json").is_file() or (entry / "config.json").is_file())
            if is_model:
                name = f"{prefix}{entry.relative_to(folder).as_posix()}"
                found.append(_entry(name, source, kinds_of(entry)))
            elif entry.is_dir() and depth + 1 < MAX_DEPTH:
                pending.append((entry, depth + 1))
    return found


def _hub_models() -> list[dict[str, Any]]:
    try:
        from huggingface_hub import scan_cache_dir

        repos = scan_cache_dir().repos
    except Exception:  # noqa: BLE001 - no cache folder yet (or an unreadable one): nothing cached
        return []
    found = []
    for repo in sorted(repos, key=lambda r: r.repo_id):
        if repo.repo_type != "model" or not repo.revisions:
            continue
        # the newest snapshot's files say what the repo is
        revision = max(repo.revisions, key=lambda r: r.last_modified)
        found.append(_entry(repo.repo_id, "huggingface cache", kinds_of(Path(revision.snapshot_path))))
    return found


def known_models(model_dirs: Sequence[tuple[Path, str]] = (), kind: str | None = None) -> list[dict[str, Any]]:
    """The models this machine has without downloading anything, by the name a model param takes:
    the bundled ones (`models/<name>`), those in `model_dirs` ((folder, source) pairs: the server's
    `<data dir>/models` and `--model-dir`s; names relative to the folder) and the model repos in
    huggingface_hub's cache. With `kind` (one of MODEL_KINDS), only the models that are or hold one
    of that kind."""
    if kind is not None and kind not in MODEL_KINDS:
        raise ValueError(f"unknown model kind {kind!r}; use one of {', '.join(MODEL_KINDS)}")
    found = _models_in(PACKAGE_DIR / "models", "models/", "bundled")
    for folder, source in model_dirs:
        found += _models_in(folder, "", source)
    found += _hub_models()
    seen: set[str] = set()
    unique = []
    for entry in found:  # the first root that has a name is the one a model param resolves to
        if entry["name"] not in seen and (kind is None or kind in entry["kinds"]):
            seen.add(entry["name"])
            unique.append(entry)
    return unique[:MAX_LISTED]
