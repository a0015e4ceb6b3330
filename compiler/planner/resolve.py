"""Find a model's architecture without its weights, in the order a user would expect:

1. `model.config` (a config.json path, relative to the spec's folder);
2. `model.name` as a local model directory holding config.json;
3. the local Hugging Face cache (config.json files only; no hub access, no transformers import);
4. the built-in catalog (catalog/*.json, each entry citing the config.json it copies).
"""

from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path

from .architecture import Architecture, ArchitectureUnknown

CATALOG_DIR = Path(__file__).parent / "catalog"
MAX_CONFIG_BYTES = 10_000_000  # a config.json is a few KB; anything this large is not one


def _is_file(path: Path) -> bool:
    """Like Path.is_file, but a path the OS cannot even look up (too long, a NUL byte) is no file."""
    return os.path.isfile(path)


def _is_dir(path: Path) -> bool:
    return os.path.isdir(path)


def expand(name: str) -> Path:
    """`~` expanded; a `~user` that does not exist stays as written (then nothing is found there)."""
    try:
        return Path(name).expanduser()
    except RuntimeError:
        return Path(name)


def _read_config(path: Path) -> dict:
    try:
        with open(path, "rb") as fh:
            raw = fh.read(MAX_CONFIG_BYTES + 1)
        if len(raw) > MAX_CONFIG_BYTES:
            raise ArchitectureUnknown(f"{path} is larger than {MAX_CONFIG_BYTES} bytes; not a config.json",
                                      "model.config must point at a transformers config.json file")
        data = json.loads(raw.decode("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ArchitectureUnknown(
            f"cannot read {path} as a config.json ({exc.__class__.__name__}: {exc})",
            "model.config must point at a transformers config.json file",
        ) from exc
    if not isinstance(data, dict):
        raise ArchitectureUnknown(f"{path} is not a JSON object", "model.config must point at a config.json file")
    return data


@lru_cache(maxsize=1)
def catalog() -> dict[str, dict]:
    """Lower-cased hub id (and each alias) -> config dict with its `source` citation."""
    entries: dict[str, dict] = {}
    for path in sorted(CATALOG_DIR.glob("*.json")):
        for repo, entry in json.loads(path.read_text(encoding="utf-8"))["models"].items():
            for name in (repo, *entry.get("aliases", [])):
                entries[name.lower()] = entry["config"]
    return entries


def _hf_cache_dirs() -> list[Path]:
    """Where huggingface_hub keeps snapshots, honouring its environment variables."""
    if os.environ.get("HF_HUB_CACHE"):
        return [Path(os.environ["HF_HUB_CACHE"])]
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    home = Path(os.environ.get("HF_HOME") or cache / "huggingface")
    return [home / "hub"]


def _from_hf_cache(name: str, revision: str | None) -> Path | None:
    if name.count("/") != 1:
        return None
    folder = "models--" + name.replace("/", "--")
    for cache in _hf_cache_dirs():
        repo = cache / folder
        if not _is_dir(repo):
            continue
        ref = repo / "refs" / (revision or "main")
        if _is_file(ref):
            candidate = repo / "snapshots" / ref.read_text().strip() / "config.json"
            if _is_file(candidate):
                return candidate
        if revision and _is_file(repo / "snapshots" / revision / "config.json"):
            return repo / "snapshots" / revision / "config.json"
        found = sorted((repo / "snapshots").glob("*/config.json"))
        if found:
            return found[-1]
    return None


def resolve_architecture(spec, spec_dir: Path) -> Architecture:
    """The spec's model architecture, or ArchitectureUnknown telling the user to pass model.config."""
    model = spec.model
    if model.config:
        path = expand(model.config)
        path = path if path.is_absolute() else Path(spec_dir) / path
        if _is_dir(path):
            path = path / "config.json"
        if not _is_file(path):
            raise ArchitectureUnknown(
                f"model.config {model.config!r} does not exist (looked at {path})",
                "paths in model.config are relative to the spec's folder",
            )
        return Architecture.from_config(_read_config(path), str(path))
    local = expand(model.name)
    local = local if local.is_absolute() else Path(spec_dir) / local
    if _is_file(local / "config.json"):
        return Architecture.from_config(_read_config(local / "config.json"), str(local / "config.json"))
    cached = _from_hf_cache(model.name, model.revision)
    if cached is not None:
        return Architecture.from_config(_read_config(cached), str(cached))
    entry = catalog().get(model.name.lower())
    if entry is not None:
        config = {k: v for k, v in entry.items() if k != "source"}
        return Architecture.from_config(config, f"catalog: {entry['source']}")
    raise ArchitectureUnknown(
        f"the architecture of {model.name!r} is unknown: no local directory, no cached config.json, "
        "no catalog entry",
        "set model.config to the path of the model's config.json (relative to the spec's folder)",
    )
