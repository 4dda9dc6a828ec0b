"""Images this pack produced or stored, addressed by their UUID (`imageUUID` in responses, usable as inputs).

Files live in one folder as `<uuid>.<ext>`; a UUID is looked up only by that exact name, so no input can name a
path. Files given a `ttl` are listed with their expiry in `expiry.json` and removed once expired. That index is
a file in an output folder that other clients can write to (ComfyUI's /upload/image accepts type=output), so
expiry deletes only names of the store's own form (`<uuid v4>.<png|jpg|webp>`) directly inside the folder;
anything else in the index is dropped from it and logged.
"""

from __future__ import annotations

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
log = logging.getLogger("imageinference.store")


class ImageStore:
    def __init__(self, root: Path):
        self.root = Path(root)

    def path_for(self, image_uuid: str, fmt: str) -> Path:
        if not UUID_V4.match(image_uuid):
            raise ValueError(f"{image_uuid!r} is not a UUID v4")
        return self.root / f"{image_uuid.lower()}.{EXTENSIONS[fmt]}"

    def find(self, image_uuid: str) -> Path | None:
        if not UUID_V4.match(image_uuid):
            return None
        self.expire()
        for ext in EXTENSIONS.values():
            candidate = self.root / f"{image_uuid.lower()}.{ext}"
            if candidate.is_file():
                return candidate
        return None

    def save(self, image_uuid: str, fmt: str, data: bytes, ttl: int | None = None) -> Path:
        self.root.mkdir(parents=True, exist_ok=True)
        dest = self.path_for(image_uuid, fmt)
        fd, tmp = tempfile.mkstemp(dir=self.root, suffix=".tmp")
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, dest)
        if ttl is not None:
            index = self._index()
            index[dest.name] = time.time() + ttl
            self._write_index(index)
        self.expire()
        return dest

    def expire(self, now: float | None = None) -> list[str]:
        """Delete files whose ttl has passed; return their names."""
        index = self._index()
        now = time.time() if now is None else now
        foreign = [name for name in index if not self._own(name)]
        for name in foreign:
            log.warning("image store: ignoring %r in %s: not a name this store writes", name[:120],
                        self.root / "expiry.json")
            del index[name]
        gone = [name for name, deadline in index.items() if deadline <= now]
        for name in gone:
            (self.root / name).unlink(missing_ok=True)
            del index[name]
        if gone or foreign:
            self._write_index(index)
        return gone

    def _own(self, name: str) -> bool:
        if not STORED_NAME.match(name):
            return False
        path = (self.root / name).resolve()
        return path.parent == self.root.resolve()

    def _index(self) -> dict[str, float]:
        try:
            data = json.loads((self.root / "expiry.json").read_text())
            return {str(k): float(v) for k, v in data.items()}
        except (OSError, ValueError, AttributeError):
            return {}

    def _write_index(self, index: dict[str, float]) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.root, suffix=".tmp")
        with os.fdopen(fd, "w") as fh:
            json.dump(index, fh)
        os.replace(tmp, self.root / "expiry.json")
