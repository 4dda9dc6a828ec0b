"""Images this pack produced or stored, addressed by their UUID (`imageUUID` in responses, usable as inputs).

Files live in one folder as `<uuid>.<ext>`; a UUID is looked up only by that exact name, so no input can name a
path. The folder may be shared by several ComfyUI instances (one service over many workers: docs/scale-out.md),
so nothing here relies on one process: every change is one atomic file operation (a rename into place, an unlink)
and there is no shared index to read, change and write back.

An image given a `ttl` gets an expiry marker `.expiry/<uuid>.<ext>` holding its deadline, written before the image
is moved into place (so the image is never served without it). A lookup reads only that image's own marker; the
housekeeping sweep (`expire`) lists the markers and deletes what is due. The folder sits in ComfyUI's output
folder, which clients can write to (/upload/image accepts type=output), so the sweep deletes only names of the
store's own form (`<uuid v4>.<png|jpg|webp>`) directly inside the folder; any other marker is ignored and logged.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import tempfile
import time
from pathlib import Path

from ...contract.images import UUID_V4

EXTENSIONS = {"PNG": "png", "JPG": "jpg", "WEBP": "webp"}
STORED_NAME = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}\.(png|jpg|webp)$")
EXPIRY_DIR = ".expiry"
LEGACY_INDEX = "expiry.json"  # one JSON index of earlier versions: read once into markers, then removed
TMP_PREFIX = ".ii-"
STALE_TMP_S = 3600.0
log = logging.getLogger("imageinference.store")


class ImageStore:
    def __init__(self, root: Path):
        self.root = Path(root)
        self._ignored: set[str] = set()

    @property
    def markers(self) -> Path:
        return self.root / EXPIRY_DIR

    def path_for(self, image_uuid: str, fmt: str) -> Path:
        if not UUID_V4.match(image_uuid):
            raise ValueError(f"{image_uuid!r} is not a UUID v4")
        return self.root / f"{image_uuid.lower()}.{EXTENSIONS[fmt]}"

    def find(self, image_uuid: str, now: float | None = None) -> Path | None:
        """The stored file of a UUID, unless its ttl has passed (then it is deleted now). Reads only this image's
        own file and marker."""
        if not UUID_V4.match(image_uuid):
            return None
        for ext in EXTENSIONS.values():
            candidate = self.root / f"{image_uuid.lower()}.{ext}"
            if candidate.is_file():
                deadline = self.deadline(candidate.name)
                if deadline is not None and deadline <= (time.time() if now is None else now):
                    self._remove(candidate.name)
                    return None
                return candidate
        return None

    def deadline(self, name: str) -> float | None:
        """When the image `name` expires, or None when it has no ttl."""
        try:
            return float((self.markers / name).read_text())
        except (OSError, ValueError):
            return None

    def save(self, image_uuid: str, fmt: str, data: bytes, ttl: int | None = None) -> Path:
        dest = self.path_for(image_uuid, fmt)
        self.root.mkdir(parents=True, exist_ok=True)
        if ttl is not None:
            self.markers.mkdir(exist_ok=True)
            self._write(self.markers / dest.name, repr(time.time() + ttl).encode())
        self._write(dest, data)
        return dest

    def expire(self, now: float | None = None) -> list[str]:
        """Delete images whose ttl has passed; return their names. One listing of the markers (housekeeping runs
        it every few seconds; lookups never do)."""
        now = time.time() if now is None else now
        self._migrate_legacy_index()
        gone: list[str] = []
        try:
            entries = list(os.scandir(self.markers))
        except OSError:
            entries = []
        for entry in entries:
            name = entry.name
            if name.startswith(TMP_PREFIX):
                self._drop_stale_tmp(entry, now)
                continue
            if not self._own(name):
                if name not in self._ignored:
                    self._ignored.add(name)
                    log.warning("image store: ignoring the expiry marker %r in %s: not a name this store writes",
                                name[:120], self.markers)
                continue
            deadline = self.deadline(name)
            if deadline is not None and deadline <= now:
                self._remove(name)
                gone.append(name)
        with contextlib.suppress(OSError):
            for entry in os.scandir(self.root):
                if entry.name.startswith(TMP_PREFIX):
                    self._drop_stale_tmp(entry, now)
        return gone

    def _remove(self, name: str) -> None:
        """The image first, then its marker: a crash in between leaves a marker the next sweep finishes."""
        (self.root / name).unlink(missing_ok=True)
        (self.markers / name).unlink(missing_ok=True)

    def _own(self, name: str) -> bool:
        if not STORED_NAME.match(name):
            return False
        path = (self.root / name).resolve()
        return path.parent == self.root.resolve()

    def _write(self, dest: Path, data: bytes) -> None:
        """Write beside `dest` and rename into place: readers (in any process) see all of it or nothing."""
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=TMP_PREFIX, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.replace(tmp, dest)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def _drop_stale_tmp(self, entry: os.DirEntry[str], now: float) -> None:
        """A temporary file left by a process killed mid-write."""
        with contextlib.suppress(OSError):
            if entry.is_file() and now - entry.stat().st_mtime > STALE_TMP_S:
                os.unlink(entry.path)

    def _migrate_legacy_index(self) -> None:
        legacy = self.root / LEGACY_INDEX
        if not legacy.is_file():
            return
        try:
            index = json.loads(legacy.read_text())
            items = index.items() if isinstance(index, dict) else []
        except (OSError, ValueError):
            items = []
        for name, deadline in items:
            if isinstance(name, str) and self._own(name) and (self.root / name).is_file() and \
                    self.deadline(name) is None and isinstance(deadline, (int, float)):
                self.markers.mkdir(parents=True, exist_ok=True)
                self._write(self.markers / name, repr(float(deadline)).encode())
        legacy.unlink(missing_ok=True)
