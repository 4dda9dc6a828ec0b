"""What each known AIR needs, what is present, where the rest would come from; and a re-check of the hashes of
the files present. Pure (no ComfyUI): `models list` and `models verify` print these."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...contract.air import canonical_air
from .catalog import Catalog, Entry
from .placement import FolderLayout, Progress, sha256_of
from .sources import Source, SourceError, check_fetchable


@dataclass(frozen=True)
class FileRow:
    air: str
    kind: str
    rel: str
    present: str | None  # the path found
    bytes_on_disk: int | None
    source: Source | None
    civitai_api: bool  # no source in the catalog, but Civitai's API names it at pull time

    @property
    def expected_bytes(self) -> int | None:
        return self.source.size if self.source else None

    def origin(self) -> str:
        if self.source is not None:
            return self.source.describe()
        return "Civitai API (at pull time)" if self.civitai_api else "none known: place it yourself"

    def check(self) -> str:
        try:
            check_fetchable(self.rel, self.kind)
        except SourceError:
            return "pickle: not fetched" if self.source is None or not self.source.verifiable else "pickle: sha256 known"
        if self.civitai_api and self.source is None:
            return "sha256 from Civitai"
        if self.source is None:
            return "-"
        return "sha256" if self.source.verifiable else "UNVERIFIED (no hash known)"

    def to_json(self) -> dict[str, Any]:
        return {"air": self.air, "kind": self.kind, "file": self.rel, "present": self.present is not None,
                "path": self.present, "bytes": self.bytes_on_disk, "expectedBytes": self.expected_bytes,
                "source": self.origin(), "sha256": self.source.sha256 if self.source else None,
                "verifiable": bool(self.source and self.source.verifiable) or self.civitai_api,
                "gated": self.source.gated if self.source else None}


def rows_of(catalog: Catalog, entry: Entry, layout: FolderLayout) -> list[FileRow]:
    rows = []
    for rel in dict.fromkeys(entry.paths()):
        found = layout.find(rel)
        rows.append(FileRow(entry.air, entry.kind, rel, str(found) if found else None,
                            found.stat().st_size if found else None, catalog.source_for(entry, rel),
                            entry.air.startswith("civitai:")))
    return rows


def inventory(catalog: Catalog, layout: FolderLayout, airs: Iterable[str] = ()) -> list[FileRow]:
    wanted = [canonical_air(a) for a in airs]
    entries = [catalog.entries[a] for a in wanted if a in catalog.entries] if wanted else [
        catalog.entries[a] for a in sorted(catalog.entries)]
    return [row for entry in entries for row in rows_of(catalog, entry, layout)]


@dataclass(frozen=True)
class Check:
    row: FileRow
    status: str  # "ok" | "mismatch" | "unverifiable" | "missing"
    sha256: str | None = None


def verify_rows(rows: Iterable[FileRow], progress: Progress | None = None) -> list[Check]:
    """Hash every present file; compare with the source's SHA-256 where one is known."""
    checks = []
    for row in rows:
        if row.present is None:
            checks.append(Check(row, "missing"))
            continue
        digest = sha256_of(Path(row.present), progress)
        expected = row.source.sha256 if row.source else None
        status = "unverifiable" if expected is None else ("ok" if digest == expected else "mismatch")
        checks.append(Check(row, status, digest))
    return checks


def known_airs(catalog: Catalog, airs: Iterable[str]) -> list[str]:
    """The canonical AIRs among `airs` that the catalog knows; AIRError/KeyError name the others."""
    out = []
    for air in airs:
        canonical = canonical_air(air)  # AIRError for a malformed one
        if canonical not in catalog.entries:
            raise KeyError(canonical)
        out.append(canonical)
    return out
