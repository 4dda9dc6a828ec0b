"""The local model catalog: AIR -> model files, kind and architecture. Pure (no ComfyUI).

A JSON file the user owns (`IMAGEINFERENCE_CATALOG`, default `~/.config/imageinference/catalog.json`) layered
over the entries the pack ships for well-known AIRs (`data/catalog_builtin.json`). File paths are relative to
ComfyUI's models folder, as `<folder>/<file>` (e.g. `checkpoints/dreamshaper_8.safetensors`); a path that is
absolute or climbs out with `..` is refused, so resolving an AIR can never escape the model folders.
Where a file can be fetched from (`sources`, by model path) comes from the entry itself (written by `models pull`
for Civitai AIRs) or from the built-in table of public files (`data/catalog_builtin.json`, top-level `sources`).
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path, PurePosixPath
from typing import Any

from ...contract.air import AIRError, canonical_air
from ...contract.architectures import ARCHITECTURES
from ...contract.errors import ContractError
from .sources import Source, SourceError, parse_source

KINDS = ("checkpoint", "diffusionModel", "textEncoder", "vae", "lora", "controlNet", "ipAdapter", "upscaler",
         "detector", "embedding", "pulid", "idEncoder", "styleModel")
FOLDERS = ("checkpoints", "diffusion_models", "unet", "text_encoders", "clip", "vae", "loras", "controlnet",
           "ipadapter", "clip_vision", "upscale_models", "ultralytics", "embeddings", "pulid", "insightface",
           "style_models")
DEFAULT_FOLDER = {"checkpoint": "checkpoints", "diffusionModel": "diffusion_models", "textEncoder": "text_encoders",
                  "vae": "vae", "lora": "loras", "controlNet": "controlnet", "ipAdapter": "ipadapter",
                  "upscaler": "upscale_models", "detector": "ultralytics", "embedding": "embeddings",
                  "pulid": "pulid", "idEncoder": "insightface", "styleModel": "style_models"}


class CatalogError(ValueError):
    pass


def catalog_path() -> Path:
    env = os.environ.get("IMAGEINFERENCE_CATALOG")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "imageinference" / "catalog.json"


def check_model_path(rel: str) -> str:
    """A `<folder>/<file>` path inside the model folders, normalised; CatalogError otherwise."""
    if not isinstance(rel, str) or not rel or "\\" in rel or "\x00" in rel:
        raise CatalogError(f"model path {rel!r} must be '<folder>/<file>' with forward slashes")
    p = PurePosixPath(rel)
    if p.is_absolute() or any(part in ("..", ".", "") for part in p.parts) or len(p.parts) < 2:
        raise CatalogError(f"model path {rel!r} must stay inside the model folders ('<folder>/<file>', no '..')")
    if p.parts[0] not in FOLDERS:
        raise CatalogError(f"model path {rel!r} must start with one of the model folders: {', '.join(FOLDERS)}")
    return str(p)


@dataclass(frozen=True)
class Entry:
    air: str
    kind: str
    files: dict[str, Any]
    architecture: str | None = None
    name: str | None = None
    source: str = "user"  # "builtin", "user", or "remote" (from Civitai's API, not yet in the user's file)
    options: dict[str, Any] = field(default_factory=dict)
    sources: dict[str, Source] = field(default_factory=dict)

    def paths(self) -> list[str]:
        out: list[str] = []
        for value in self.files.values():
            out.extend(value if isinstance(value, list) else [value])
        return out

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "files": self.files}
        if self.architecture:
            out["architecture"] = self.architecture
        if self.name:
            out["name"] = self.name
        if self.options:
            out["options"] = self.options
        if self.sources:
            out["sources"] = {rel: src.to_json() for rel, src in self.sources.items()}
        return out


def parse_entry(air: str, data: Any, source: str) -> Entry:
    try:
        air = canonical_air(air)
    except AIRError as exc:
        raise CatalogError(str(exc)) from exc
    if not isinstance(data, dict):
        raise CatalogError(f"{air}: an entry is an object")
    kind = data.get("kind")
    if kind not in KINDS:
        raise CatalogError(f"{air}: kind {kind!r} is not one of {', '.join(KINDS)}")
    arch = data.get("architecture")
    if arch is not None and arch not in ARCHITECTURES:
        raise CatalogError(f"{air}: architecture {arch!r} is not one of {', '.join(sorted(ARCHITECTURES))}")
    files = data.get("files")
    if not isinstance(files, dict) or "model" not in files:
        raise CatalogError(f"{air}: 'files' must be an object with at least 'model'")
    clean: dict[str, Any] = {}
    for role, value in files.items():
        if isinstance(value, list):
            clean[role] = [check_model_path(v) for v in value]
        else:
            clean[role] = check_model_path(value)
    name = data.get("name")
    options = data.get("options", {})
    if not isinstance(options, dict):
        raise CatalogError(f"{air}: 'options' must be an object")
    entry = Entry(air, kind, clean, arch, name if isinstance(name, str) else None, source, options)
    return replace(entry, sources=parse_sources(data.get("sources", {}), f"{air}: "))


def parse_sources(data: Any, where: str = "") -> dict[str, Source]:
    """`{"<folder>/<file>": <source>}` (an entry's `sources`, or the built-in table)."""
    if not isinstance(data, dict):
        raise CatalogError(f"{where}'sources' must be an object of model paths")
    out: dict[str, Source] = {}
    for rel, value in data.items():
        try:
            out[check_model_path(rel)] = parse_source(rel, value)
        except SourceError as exc:
            raise CatalogError(f"{where}{exc}") from None
    return out


@dataclass
class Catalog:
    entries: dict[str, Entry] = field(default_factory=dict)
    path: Path | None = None
    known_sources: dict[str, Source] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path | None = None, builtin: bool = True) -> Catalog:
        cat = cls(path=path or catalog_path())
        if builtin:
            text = resources.files("imageinference").joinpath("data/catalog_builtin.json").read_text("utf-8")
            shipped = json.loads(text)
            for air, data in shipped["models"].items():
                entry = parse_entry(air, data, "builtin")
                cat.entries[entry.air] = entry
            cat.known_sources = parse_sources(shipped.get("sources", {}), "built-in catalog: ")
        if cat.path is not None and cat.path.is_file():
            try:
                user = json.loads(cat.path.read_text("utf-8"))
            except (OSError, json.JSONDecodeError) as exc:
                raise CatalogError(f"catalog {cat.path} is not readable JSON: {exc}") from exc
            models = user.get("models") if isinstance(user, dict) else None
            if not isinstance(models, dict):
                raise CatalogError(f"catalog {cat.path} must be an object with a 'models' object")
            for air, data in models.items():
                entry = parse_entry(air, data, "user")
                cat.entries[entry.air] = entry
        return cat

    def get(self, air: str) -> Entry | None:
        try:
            return self.entries.get(canonical_air(air))
        except AIRError:
            return None

    def source_for(self, entry: Entry, rel: str) -> Source | None:
        """Where a file of an entry can be fetched: the entry's own source, else the built-in table's."""
        return entry.sources.get(rel) or self.known_sources.get(rel)

    def require(self, air: str, parameter: str = "model", kinds: tuple[str, ...] = ()) -> Entry:
        """The entry for an AIR a request names, or the documented `unknownModel` error naming the parameter."""
        entry = self.get(air)
        if entry is None:
            entry = self._auto_pull_entry(air, parameter)
        if entry is None:
            raise ContractError.single(
                "unknownModel", f"{air} is not in the model catalog ({self.path}); add it with "
                f"`python -m imageinference catalog add {air} --file <folder>/<file> --kind <kind>`", parameter,
                "string")
        if kinds and entry.kind not in kinds:
            raise ContractError.single(
                "invalidModelKind", f"{air} is a {entry.kind} in the catalog; '{parameter}' needs a {' or '.join(kinds)}",
                parameter, "string", kinds)
        return entry

    def _auto_pull_entry(self, air: str, parameter: str) -> Entry | None:
        """With IMAGEINFERENCE_AUTO_PULL=1, a Civitai AIR missing from the catalog is looked up on Civitai: the
        entry comes back marked "remote"; the file is fetched (and the entry written) when it is first resolved."""
        from .sources import Settings

        try:
            settings = Settings.from_env()
            if not settings.auto_pull or not canonical_air(air).startswith("civitai:"):
                return None
        except (SourceError, AIRError):
            return None
        from .pull import PullError, remote_civitai_entry

        try:
            return remote_civitai_entry(air, settings, self.get(air))
        except PullError as exc:
            raise exc.contract_error(parameter) from None

    def architecture_of(self, air: str) -> str | None:
        entry = self.get(air)
        return entry.architecture if entry else None

    def add(self, entry: Entry) -> None:
        """Add or replace a user entry and write the user's file atomically."""
        if self.path is None:
            raise CatalogError("no catalog file to write")
        from filelock import FileLock

        self.path.parent.mkdir(parents=True, exist_ok=True)
        # two processes may add entries at once (two pulls): read, change and replace under one lock
        with FileLock(str(self.path) + ".lock"):
            user: dict[str, Any] = {"version": 1, "models": {}}
            if self.path.is_file():
                user = json.loads(self.path.read_text("utf-8"))
            user.setdefault("models", {})[entry.air] = entry.to_json()
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, suffix=".tmp")
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(user, fh, indent=2)
                fh.write("\n")
            os.replace(tmp, self.path)
        self.entries[entry.air] = replace(entry, source="user")


TYPED_IN = "(typed in below)"
"""The dropdown entry of AIR widgets meaning: use the AIR typed into the `air` text field."""


def chosen_air(listed: str | None, typed: str | None) -> str | None:
    """The AIR an (AIR dropdown, typed AIR) widget pair names: the typed one wins when not empty."""
    text = (typed or "").strip()
    if text:
        return text
    return listed if listed and listed != TYPED_IN else None


def airs_of_kind(*kinds: str) -> list[str]:
    """Catalog AIRs of these kinds, for node dropdowns; empty when the catalog cannot be read (the node's
    execution then reports the catalog error)."""
    try:
        return sorted(air for air, e in Catalog.load().entries.items() if e.kind in kinds)
    except (CatalogError, OSError, ValueError):
        return []


def relative_to_models(file: str, models_dir: Path, kind: str) -> str:
    """A user-given file (absolute, or relative to the models folder) as a checked `<folder>/<file>` path."""
    p = Path(file).expanduser()
    if p.is_absolute():
        try:
            rel = p.resolve().relative_to(models_dir.resolve())
        except ValueError as exc:
            raise CatalogError(f"{file} is outside the model folders ({models_dir})") from exc
        text = rel.as_posix()
    else:
        text = PurePosixPath(file).as_posix()
        if text.split("/")[0] not in FOLDERS:
            text = f"{DEFAULT_FOLDER[kind]}/{text}"
    return check_model_path(text)
