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


def _read_config(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
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
    home = Path(os.environ.get("HF_HOME") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "huggingface")
    return [home / "hub"]


def _from_hf_cache(name: str, revision: str | None) -> Path | None:
    if name.count("/") != 1:
        return None
    folder = "models--" + name.replace("/", "--")
    for cache in _hf_cache_dirs():
        repo = cache / folder
        if not repo.is_dir():
            continue
        ref = repo / "refs" / (revision or "main")
        if ref.is_file():
            candidate = repo / "snapshots" / ref.read_text().strip() / "config.json"
            if candidate.is_file():
                return candidate
        if revision and (repo / "snapshots" / revision / "config.json").is_file():
            return repo / "snapshots" / revision / "config.json"
        found = sorted((repo / "snapshots").glob("*/config.json"))
        if found:
            return found[-1]
    return None


def resolve_architecture(spec, spec_dir: Path) -> Architecture:
    """The spec's model architecture, or ArchitectureUnknown telling the user to pass model.config."""
    model = spec.model
    if model.config:
        path = Path(model.config).expanduser()
        path = path if path.is_absolute() else Path(spec_dir) / path
        if path.is_dir():
            path = path / "config.json"
        if not path.is_file():
            raise ArchitectureUnknown(
                f"model.config {model.config!r} does not exist (looked at {path})",
                "paths in model.config are relative to the spec's folder",
            )
        return Architecture.from_config(_read_config(path), str(path))
    local = Path(model.name).expanduser()
    local = local if local.is_absolute() else Path(spec_dir) / local
    if (local / "config.json").is_file():
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
