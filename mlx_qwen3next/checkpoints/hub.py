"""Where models come from: a folder, the app's models folder, or the Hugging Face Hub.

`resolve(name)` turns what a user typed into a checkpoint directory:

1. an existing directory (a path);
2. a name inside the models folder (`$QWEN3NEXT_HOME/models`, by default
   `~/.cache/mlx-qwen3next/models`), where `qwen3next convert` writes;
3. a Hub repo id (`org/name`) already in the Hub cache (HF_HOME, HF_HUB_CACHE);
4. with `download=True`, a Hub repo id fetched now.

`download(repo)` fetches only what the model needs (weights, json, tokenizer and
chat-template files) with `huggingface_hub.snapshot_download`: files finished by an
interrupted run are not fetched again. HF_HUB_OFFLINE, HF_HOME, HF_HUB_CACHE and
HF_ENDPOINT are honoured as huggingface_hub reads them.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

DEFAULT_REPO = "Qwen/Qwen3-Next-80B-A3B-Instruct"
ALLOW_PATTERNS = [
    "*.safetensors",
    "*.json",
    "*.jinja",
    "merges.txt",
    "vocab.txt",
    "tokenizer.model",
    "*.tiktoken",
]
_REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


class HubError(ValueError):
    """A model that cannot be found or fetched; the message is one line."""


def app_home() -> Path:
    """The app's data folder (models, chat history): $QWEN3NEXT_HOME or ~/.cache/mlx-qwen3next."""
    home = os.environ.get("QWEN3NEXT_HOME")
    return Path(home).expanduser() if home else Path.home() / ".cache" / "mlx-qwen3next"


def models_dir() -> Path:
    return app_home() / "models"


def is_repo_id(name: str) -> bool:
    return bool(_REPO_ID.fullmatch(name)) and not name.startswith((".", "~"))


def resolve(name: str, download: bool = False, tqdm_class=None) -> Path:
    """The checkpoint directory that `name` stands for (see the module notes)."""
    path = Path(name).expanduser()
    if path.exists():
        if not path.is_dir():
            raise HubError(f"{name}: not a directory (give a model folder or a Hub repo id)")
        return path
    local = models_dir() / name
    if name and local.is_dir():
        return local
    if not is_repo_id(name):
        raise HubError(
            f"unknown model {name!r}: no such folder, nothing by that name in {models_dir()}, "
            "and not a Hub repo id (org/name); `qwen3next models` lists what is here"
        )
    cached = cached_snapshot(name)
    if cached is not None:
        return cached
    if download:
        return fetch(name, tqdm_class=tqdm_class)
    raise HubError(f"{name} is not downloaded yet: run `qwen3next download {name}`")


def cached_snapshot(repo: str, revision: Optional[str] = None) -> Optional[Path]:
    """The complete snapshot of `repo` in the Hub cache, or None (no network)."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        path = snapshot_download(
            repo, revision=revision, allow_patterns=ALLOW_PATTERNS, local_files_only=True
        )
    except (LocalEntryNotFoundError, OSError, ValueError):
        return None
    path = Path(path)
    return path if (path / "config.json").is_file() else None


def fetch(repo: str = DEFAULT_REPO, local_dir=None, revision: Optional[str] = None,
          tqdm_class=None, max_workers: int = 8, endpoint: Optional[str] = None) -> Path:
    """Download what the model needs from `repo`; return the local directory.
    `endpoint` overrides HF_ENDPOINT."""
    from huggingface_hub import snapshot_download

    if not is_repo_id(repo):
        raise HubError(f"{repo!r} is not a Hub repo id (expected org/name)")
    try:
        path = snapshot_download(
            repo,
            revision=revision,
            local_dir=local_dir,
            allow_patterns=ALLOW_PATTERNS,
            tqdm_class=tqdm_class,
            max_workers=max_workers,
            endpoint=endpoint,
        )
    except Exception as e:  # noqa: BLE001  (translated to one line below)
        raise HubError(describe_hub_error(e, repo)) from None
    return Path(path)


def describe_hub_error(e: BaseException, repo: str) -> str:
    """One line for an error raised by huggingface_hub (or its HTTP client)."""
    from huggingface_hub import constants
    from huggingface_hub import errors as hf

    name = type(e).__name__
    if isinstance(e, hf.GatedRepoError):
        return f"{repo} is gated: accept its terms on the Hub and log in (`hf auth login`)"
    if isinstance(e, hf.RepositoryNotFoundError):
        return f"{repo}: no such repository on the Hub (or it is private)"
    if isinstance(e, hf.RevisionNotFoundError):
        return f"{repo}: no such revision on the Hub"
    if isinstance(e, hf.LocalEntryNotFoundError) or name == "IncompleteSnapshotError":
        if constants.is_offline_mode():
            return (
                f"{repo} is not (completely) in the Hub cache {constants.HF_HUB_CACHE} "
                "and HF_HUB_OFFLINE is set: download it with network access first"
            )
        return f"cannot reach the Hub to fetch {repo}, and it is not in the cache"
    if isinstance(e, hf.HfHubHTTPError):
        status = getattr(getattr(e, "response", None), "status_code", "?")
        return f"downloading {repo} failed: the Hub answered HTTP {status}; run again to resume"
    text = " ".join(str(e).split()) or name
    return f"downloading {repo} failed ({name}: {text[:200]}); run again to resume"


@dataclass
class LocalModel:
    name: str  # what to type to use it
    path: Path
    source: str  # "converted" (models folder) or "hub" (Hub cache)
    size_bytes: int
    quantization: str  # "4-bit g64", "bf16", ...
    modified: float
    problem: Optional[str] = None  # why it cannot load (then it is listed, never picked)


def list_models() -> list[LocalModel]:
    """Qwen3-Next models here: the models folder (newest first), then the Hub cache."""
    found = []
    folder = models_dir()
    if folder.is_dir():
        for d in folder.iterdir():
            if not d.name.startswith(".") and (d / "config.json").is_file():
                found.append(_entry(d.name, d, "converted", any_type=True))
        found.sort(key=lambda m: -m.modified)
    found += _hub_cached()
    return [m for m in found if m is not None]


def _hub_cached() -> list[LocalModel]:
    from huggingface_hub import constants, scan_cache_dir

    try:  # the cache folder as huggingface_hub sees it now (HF_HOME, HF_HUB_CACHE)
        info = scan_cache_dir(constants.HF_HUB_CACHE)
    except Exception:  # noqa: BLE001  (no cache yet, unreadable cache)
        return []
    found = []
    for repo in sorted(info.repos, key=lambda r: r.repo_id):
        if repo.repo_type != "model":
            continue
        for rev in sorted(repo.revisions, key=lambda r: -r.last_modified):
            if (rev.snapshot_path / "config.json").is_file() and is_qwen3_next(rev.snapshot_path):
                found.append(_entry(repo.repo_id, rev.snapshot_path, "hub"))
                break
    return found


def is_qwen3_next(path: Path) -> bool:
    try:
        return json.loads((path / "config.json").read_text()).get("model_type") == "qwen3_next"
    except (OSError, ValueError, AttributeError):
        return False


def _entry(name: str, path: Path, source: str, any_type: bool = False) -> Optional[LocalModel]:
    """The listing of one folder; with `any_type`, folders that are not Qwen3-Next
    models are listed as broken instead of left out."""
    if not any_type and not is_qwen3_next(path):
        return None
    problem = checkpoint_problem(path)
    try:
        label = describe_quantization(json.loads((path / "config.json").read_text()))
    except (OSError, ValueError, AttributeError, TypeError, KeyError):
        label = "?"
    return LocalModel(name, path, source, dir_size(path), label,
                      (path / "config.json").stat().st_mtime, problem)


def checkpoint_problem(path: Path) -> Optional[str]:
    """Why the checkpoint at `path` cannot load, from its config and file list alone."""
    from ..config import ConfigError, ModelConfig
    from .shards import LoadError, shard_files

    try:
        ModelConfig.from_file(path)
        shard_files(path)
    except (ConfigError, LoadError) as e:
        return str(e).replace(f"{path}/", "").replace(f"{path}: ", "")
    return None


def describe_quantization(cfg: dict) -> str:
    q = cfg.get("quantization") or cfg.get("quantization_config")
    if not q:
        return cfg.get("torch_dtype") or cfg.get("dtype") or "unquantized"
    bits = {q.get("bits")} | {v["bits"] for v in q.values() if isinstance(v, dict) and "bits" in v}
    bits.discard(None)
    label = "/".join(str(b) for b in sorted(bits)) + "-bit"
    return f"{label} g{q.get('group_size', 64)}"


def dir_size(path: Path) -> int:
    """Bytes of the files in `path` (following the Hub cache's symlinks)."""
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            try:
                total += os.stat(os.path.join(root, f)).st_size
            except OSError:
                pass
    return total


def default_model() -> Optional[LocalModel]:
    """The model `chat` and `generate` use when none is named: the newest converted
    one, else the default repo if cached, else any cached Qwen3-Next."""
    models = [m for m in list_models() if m.problem is None]
    converted = [m for m in models if m.source == "converted"]
    if converted:
        return converted[0]
    hub = [m for m in models if m.source == "hub"]
    for m in hub:
        if m.name == DEFAULT_REPO:
            return m
    return hub[0] if hub else None


def default_output(source: str, recipe: str, bits: Optional[int] = None) -> Path:
    """Where `convert` writes by default: models/<source name>-<recipe>."""
    path = Path(source.rstrip("/"))
    base = path.name
    if re.fullmatch(r"[0-9a-f]{40}", base) and path.parent.name == "snapshots":
        base = path.parent.parent.name.split("--")[-1]  # a Hub cache snapshot
    tag = f"{bits}bit" if bits else recipe
    return models_dir() / f"{base}-{tag}"
