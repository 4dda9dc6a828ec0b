"""Pull an AIR: its files and their sources, the missing ones fetched, checked and put in place, and the catalog
entry written. Pure (no ComfyUI): where files go is a `FolderLayout`, progress goes to a `Reporter`.

Sources: a `civitai:` AIR through Civitai's model-version API (the file, its size and SHA-256); any other AIR
through the catalog (the entry's own `sources`, else the built-in table of public files). Every missing file is
checked before any download starts (a source, a file type without code, a hash unless the user allows an
unverified file), so a refusal never leaves half an AIR behind.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from ...contract.air import AIRError, canonical_air
from ...contract.errors import ContractError
from .catalog import Catalog, CatalogError, Entry
from .civitai import CivitaiError, api_url, file_of_version
from .hub import HubError, forget_cached, hf_fetch
from .placement import FolderLayout, VerifyError, exclusive, part_path, place, verify
from .sources import Settings, Source, SourceError, check_fetchable
from .transfer import TransferError, download, get_json

log = logging.getLogger("imageinference.models")
DOWNLOAD_EVENT = "imageinference.download"
"""The message a download inside a ComfyUI node sends to the prompt's client: {prompt_id, node, air, file, value,
max}; the endpoint counts it into getResponse's progress."""


class PullError(Exception):
    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message

    def contract_error(self, parameter: str = "model") -> ContractError:
        return ContractError.single(self.code, self.message, parameter, "string")


class Reporter(Protocol):
    def begin(self, label: str, total: int | None) -> None: ...

    def advance(self, done: int, total: int | None) -> None: ...

    def end(self) -> None: ...


class Quiet:
    def begin(self, label: str, total: int | None) -> None:
        return None

    def advance(self, done: int, total: int | None) -> None:
        return None

    def end(self) -> None:
        return None


@dataclass
class FileState:
    rel: str
    found: Path | None
    source: Source | None


@dataclass
class PullPlan:
    entry: Entry
    files: list[FileState]
    write_entry: bool

    @property
    def missing(self) -> list[FileState]:
        return [f for f in self.files if f.found is None]


@dataclass
class PullResult:
    air: str
    fetched: list[str] = field(default_factory=list)
    present: list[str] = field(default_factory=list)
    entry_written: bool = False


def remote_civitai_entry(air: str, settings: Settings, existing: Entry | None = None) -> Entry:
    """The catalog entry of a Civitai model version, from Civitai's API (marked "remote" until written). An entry
    the catalog already has keeps its kind, roles and architecture; its model file becomes Civitai's file."""
    try:
        url = api_url(settings.civitai_url, air)
        payload = get_json(url, settings)
        found = file_of_version(air, payload)
    except TransferError as exc:
        if exc.status == 404:
            raise PullError("unknownModel", f"{air}: Civitai has no published model version "
                            f"{air.rsplit('@', 1)[-1]} ({exc})") from None
        raise PullError("modelDownloadFailed", f"{air}: Civitai's model-version API failed: {exc}") from None
    except CivitaiError as exc:
        raise PullError("unsupportedModelFile", str(exc)) from None
    folder = existing.files["model"].split("/")[0] if existing else found.folder
    rel = f"{folder}/{found.name}"
    files = dict(existing.files) if existing else {}
    files["model"] = rel
    return Entry(canonical_air(air), existing.kind if existing else found.kind, files,
                 (existing.architecture if existing else None) or found.architecture,
                 (existing.name if existing else None) or found.model_name, "remote",
                 dict(existing.options) if existing else {}, {rel: found.source})


def plan_pull(catalog: Catalog, air: str, layout: FolderLayout, settings: Settings) -> PullPlan:
    try:
        air = canonical_air(air)
    except AIRError as exc:
        raise PullError("invalidModel", str(exc)) from None
    entry = catalog.get(air)
    if entry is None:
        if not air.startswith("civitai:"):
            raise PullError("unknownModel", f"{air} is not in the model catalog and is not a Civitai AIR; add it "
                            f"with `python -m imageinference catalog add {air} --file <folder>/<file> --kind <kind>`")
        entry = remote_civitai_entry(air, settings)
    return plan_for_entry(catalog, entry, layout, settings)


def plan_for_entry(catalog: Catalog, entry: Entry, layout: FolderLayout, settings: Settings) -> PullPlan:
    """What pulling an entry means: a Civitai entry whose missing file has no known source is looked up on
    Civitai (and its entry rewritten); a "remote" entry is written once its files are in place."""
    files = _states(catalog, entry, layout)
    if (entry.source != "remote" and entry.air.startswith("civitai:")
            and any(f.found is None and (f.source is None or not f.source.verifiable) for f in files)):
        entry = remote_civitai_entry(entry.air, settings, entry)
        files = _states(catalog, entry, layout)
    return PullPlan(entry, files, entry.source == "remote")


def _states(catalog: Catalog, entry: Entry, layout: FolderLayout) -> list[FileState]:
    seen: dict[str, FileState] = {}
    for rel in entry.paths():
        seen.setdefault(rel, FileState(rel, layout.find(rel), catalog.source_for(entry, rel)))
    return list(seen.values())


def check_plan(plan: PullPlan, allow_unverified: bool = False) -> None:
    """Refuse, before any download, a missing file that has no source, carries code, or cannot be verified."""
    entry = plan.entry
    for f in plan.missing:
        if f.source is None:
            raise PullError("noModelSource", f"{entry.air}: no public source is known for {f.rel}; place the file "
                            "in that model folder yourself (docs/models.md lists what the pack can fetch)")
        try:
            check_fetchable(f.rel, entry.kind)
        except SourceError as exc:
            raise PullError("unsupportedModelFile", f"{entry.air}: {exc}") from None
        if not f.source.verifiable and not allow_unverified:
            raise PullError("unverifiedModel", f"{entry.air}: {f.rel} ({f.source.describe()}) has no SHA-256 the "
                            "pack could establish, so it cannot be verified; pull it with --allow-unverified "
                            "(or allowUnverified) to accept it unchecked")


def pull_plan(plan: PullPlan, catalog: Catalog, layout: FolderLayout, settings: Settings,
              reporter: Reporter | None = None, allow_unverified: bool = False) -> PullResult:
    reporter = reporter or Quiet()
    check_plan(plan, allow_unverified)
    result = PullResult(plan.entry.air, present=[f.rel for f in plan.files if f.found is not None])
    for f in plan.missing:
        assert f.source is not None
        if fetch_file(plan.entry.air, f.rel, f.source, layout, settings, reporter):
            result.fetched.append(f.rel)
        else:
            result.present.append(f.rel)
    if plan.write_entry:
        try:
            catalog.add(plan.entry)
        except (CatalogError, OSError) as exc:
            raise PullError("catalogError", f"{plan.entry.air}: the files are in place but the catalog entry could "
                            f"not be written: {exc}") from None
        result.entry_written = True
    return result


def pull(catalog: Catalog, air: str, layout: FolderLayout, settings: Settings, reporter: Reporter | None = None,
         allow_unverified: bool = False) -> PullResult:
    return pull_plan(plan_pull(catalog, air, layout, settings), catalog, layout, settings, reporter,
                     allow_unverified)


def fetch_file(air: str, rel: str, source: Source, layout: FolderLayout, settings: Settings,
               reporter: Reporter) -> bool:
    """Fetch one file into place; False when another process put it there while this one waited for the lock."""
    try:
        target = layout.target(rel)
    except VerifyError as exc:
        raise PullError("unsupportedModelFile", f"{air}: {exc}") from None
    with exclusive(target):
        if layout.find(rel) is not None:
            log.info("[imageinference] %s: %s is already in place (fetched by another pull)", air, rel)
            return False
        log.info("[imageinference] %s: fetching %s from %s", air, rel, source.describe())
        reporter.begin(f"{air} {rel}", source.size)
        try:
            if source.hf:
                _from_hub(air, rel, source, target, settings, reporter)
            else:
                _from_url(air, rel, source, target, settings, reporter)
        finally:
            reporter.end()
    log.info("[imageinference] %s: %s verified and in place at %s", air, rel, target)
    return True


def _from_url(air: str, rel: str, source: Source, target: Path, settings: Settings, reporter: Reporter) -> None:
    assert source.url
    part = part_path(target)
    try:
        download(source.url, part, settings, source.size, source.size_tolerance, reporter.advance)
    except TransferError as exc:
        code = "unknownModel" if exc.status == 404 else "modelDownloadFailed"
        raise PullError(code, f"{air}: {rel}: {exc}") from None
    try:
        verify(part, source.size, source.size_tolerance, source.sha256)
    except VerifyError as exc:
        part.unlink(missing_ok=True)
        raise PullError("modelHashMismatch", f"{air}: {rel} from {source.describe()} was refused and deleted: "
                        f"{exc}") from None
    place(part, target, move=True)


def _from_hub(air: str, rel: str, source: Source, target: Path, settings: Settings, reporter: Reporter) -> None:
    try:
        cached = hf_fetch(source, settings, reporter.advance)
    except HubError as exc:
        raise PullError(exc.code, f"{air}: {rel}: {exc}") from None
    try:
        verify(cached, source.size, source.size_tolerance, source.sha256)
    except VerifyError as exc:
        forget_cached(cached)
        raise PullError("modelHashMismatch", f"{air}: {rel} from {source.describe()} was refused and deleted "
                        f"(also from the Hugging Face cache): {exc}") from None
    place(cached, target, move=False)
