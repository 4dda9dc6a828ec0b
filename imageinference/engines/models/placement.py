"""Model files on disk: where a catalog path lives, how a download is checked and made visible. Pure.

Nothing half-written is ever where ComfyUI looks: a download grows in a hidden `.<name>.imageinference-part` file
beside its target (ComfyUI lists only model extensions), is checked (size and SHA-256) and only then renamed into
place, atomically on the same file system. Pulls of one file take an exclusive lock on `.<name>.imageinference-lock`
first, so two processes (the CLI and ComfyUI, or two ComfyUI servers on one models folder) download it once.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

Progress = Callable[[int, "int | None"], None]
HASH_CHUNK = 4 * 1024 * 1024
# ComfyUI's legacy folder names: a catalog path in one is found in the other too
ALIASES = {"text_encoders": ("clip",), "clip": ("text_encoders",), "diffusion_models": ("unet",),
           "unet": ("diffusion_models",)}


class VerifyError(ValueError):
    pass


def sha256_of(path: Path, progress: Progress | None = None) -> str:
    digest = hashlib.sha256()
    total = path.stat().st_size
    done = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(HASH_CHUNK):
            digest.update(chunk)
            done += len(chunk)
            if progress is not None:
                progress(done, total)
    return digest.hexdigest()


def verify(path: Path, size: int | None, tolerance: int, sha256: str | None, progress: Progress | None = None
           ) -> str:
    """The file's SHA-256, after checking it against the stated size and hash; VerifyError otherwise."""
    actual_size = path.stat().st_size
    if size is not None and abs(actual_size - size) > tolerance:
        raise VerifyError(f"{actual_size} bytes arrived; the source states {size}")
    digest = sha256_of(path, progress)
    if sha256 is not None and digest != sha256:
        raise VerifyError(f"its SHA-256 is {digest}; the source states {sha256}")
    return digest


def part_path(target: Path) -> Path:
    return target.with_name(f".{target.name}.imageinference-part")


def lock_path(target: Path) -> Path:
    return target.with_name(f".{target.name}.imageinference-lock")


@contextlib.contextmanager
def exclusive(target: Path, timeout_s: float = -1) -> Iterator[None]:
    """An inter-process lock on one target file (filelock: fcntl on POSIX, msvcrt on Windows)."""
    from filelock import FileLock

    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(lock_path(target)), timeout=timeout_s):
        yield


def place(source: Path, target: Path, move: bool) -> None:
    """Make a checked file visible at `target` in one rename. `move` renames `source` itself (our own .part);
    otherwise (a file in huggingface_hub's cache) it is hard-linked, or copied where no link can be made."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if move:
        os.replace(source, target)
        return
    staged = part_path(target).with_suffix(".imageinference-copy")
    staged.unlink(missing_ok=True)
    source = Path(os.path.realpath(source))  # huggingface_hub's snapshot entry is a symlink to the blob
    try:
        os.link(source, staged)
    except OSError:  # another file system, or links not allowed: a full copy, flushed before the rename
        with open(source, "rb") as src, open(staged, "wb") as dst:
            shutil.copyfileobj(src, dst, HASH_CHUNK)
            dst.flush()
            os.fsync(dst.fileno())
    os.replace(staged, target)


@dataclass
class FolderLayout:
    """Where catalog paths (`<folder>/<file>`) live: a models folder and, per folder name, more folders to search
    (ComfyUI's extra_model_paths). A pulled file goes to `<models>/<folder>/<file>` unless the folder name maps
    to folders elsewhere, where it goes to the first of them."""

    models_dir: Path
    folders: dict[str, list[Path]] = field(default_factory=dict)

    def search_dirs(self, folder: str) -> list[Path]:
        dirs = list(self.folders.get(folder, []))
        for name in (folder, *ALIASES.get(folder, ())):
            candidate = self.models_dir / name
            if candidate not in dirs:
                dirs.append(candidate)
        return dirs

    def target(self, rel: str) -> Path:
        folder, _, name = rel.partition("/")
        default = self.models_dir / folder
        dirs = self.folders.get(folder)
        base = default if not dirs or default in dirs else dirs[0]
        return _inside(base, name)

    def find(self, rel: str) -> Path | None:
        folder, _, name = rel.partition("/")
        for base in self.search_dirs(folder):
            candidate = _inside(base, name)
            if candidate.is_file():
                return candidate
        return None


def _inside(base: Path, name: str) -> Path:
    """`base/name` for a checked catalog name (relative, no `..`): the path never leaves `base`. A symlink the
    user put in the folder is followed, as ComfyUI follows it."""
    parts = Path(name).parts
    if not parts or Path(name).is_absolute() or ".." in parts:
        raise VerifyError(f"{name} would leave the model folder {base}")
    return base / name
