"""Hugging Face files through huggingface_hub: its cache, resume (`.incomplete` files), authentication (`HF_TOKEN`
or `hf auth login`) and endpoint (`HF_ENDPOINT`). Pure (no ComfyUI); huggingface_hub is imported when needed.

Before anything is downloaded, the file's metadata (one HEAD request) must agree with the pinned source: the
endpoint and the host it redirects to are allowed hosts, and the SHA-256 Hugging Face states for the file (its LFS
etag) and its size are the ones in the table; so a file that changed upstream is refused before a byte of it is
fetched. The caller still hashes what arrived.
"""

from __future__ import annotations

import inspect
import os
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .sources import SHA256, Settings, Source, SourceError
from .transfer import TransferError, checked_address

Progress = Callable[[int, "int | None"], None]


class HubError(Exception):
    def __init__(self, message: str, code: str = "modelDownloadFailed"):
        super().__init__(message)
        self.code = code


def _hub() -> Any:
    try:
        import huggingface_hub
    except ImportError:
        raise HubError("huggingface_hub is not installed (pip install huggingface_hub); it downloads the files "
                       "the pack takes from Hugging Face") from None
    return huggingface_hub


def _offline(hub: Any) -> bool:
    from huggingface_hub import constants

    check = getattr(constants, "is_offline_mode", None)
    return bool(check() if callable(check) else getattr(constants, "HF_HUB_OFFLINE", False))


def _bar_class(progress: Progress) -> type:
    """A silent tqdm that reports huggingface_hub's byte counts to `progress`."""
    from tqdm.auto import tqdm

    class _Report(tqdm):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs.pop("name", None)
            kwargs["disable"] = True
            self._expected = kwargs.get("total")
            self._done = int(kwargs.get("initial") or 0)
            super().__init__(*args, **kwargs)

        def update(self, n: float | None = 1) -> bool | None:
            self._done += int(n or 0)
            progress(self._done, self._expected)
            return super().update(n)

    return _Report


def _check_host(url: str, settings: Settings) -> None:
    try:
        mirror = settings.check_url(url)
    except SourceError as exc:
        raise HubError(str(exc)) from None
    parts = urllib.parse.urlsplit(url)
    if not mirror:  # the address rule of image fetches: an allowed name must not resolve inside the network
        try:
            checked_address(parts.hostname or "", parts.port or 443, False, settings)
        except TransferError as exc:
            raise HubError(str(exc)) from None


def _explain(exc: Exception, source: Source) -> HubError:
    name = type(exc).__name__
    where = source.describe()
    if name == "GatedRepoError":
        return HubError(f"{where} is gated: {source.gated or 'accept its licence on huggingface.co'}, then set "
                        "HF_TOKEN (or run `hf auth login`) with that account", "gatedModel")
    if name in ("RepositoryNotFoundError", "RevisionNotFoundError"):
        return HubError(f"{where}: the repository or revision is not there (or needs a token: HF_TOKEN)",
                        "modelNotFound")
    if name in ("EntryNotFoundError", "RemoteEntryNotFoundError"):
        return HubError(f"{where}: the file is not in the repository", "modelNotFound")
    if name == "LocalEntryNotFoundError":
        return HubError(f"{where}: Hugging Face cannot be reached ({str(exc).splitlines()[0][:200]})")
    return HubError(f"{where}: {name}: {str(exc).splitlines()[0][:300] if str(exc) else ''}")


def hf_fetch(source: Source, settings: Settings, progress: Progress | None = None) -> Path:
    """The file, in huggingface_hub's cache, after its metadata matched the source; HubError otherwise."""
    assert source.hf and source.path
    hub = _hub()
    if _offline(hub):
        raise HubError("Hugging Face downloads are off: HF_HUB_OFFLINE is set in this process's environment")
    url = hub.hf_hub_url(source.hf, source.path, revision=source.revision, endpoint=settings.hf_endpoint)
    _check_host(url, settings)
    try:
        meta = hub.get_hf_file_metadata(url, endpoint=settings.hf_endpoint)
    except Exception as exc:  # huggingface_hub's HTTP errors, connection errors
        raise _explain(exc, source) from None
    location = getattr(meta, "location", None) or url
    if location != url:
        _check_host(location, settings)
    etag = (getattr(meta, "etag", None) or "").strip('"').lower()
    if source.sha256 and SHA256.match(etag) and etag != source.sha256:
        raise HubError(f"{source.describe()} changed upstream: Hugging Face states SHA-256 {etag}, the pack's table "
                       f"pins {source.sha256}; nothing was downloaded", "modelHashMismatch")
    size = getattr(meta, "size", None)
    if source.size and size and abs(int(size) - source.size) > source.size_tolerance:
        raise HubError(f"{source.describe()} changed upstream: {size} bytes, the table pins {source.size}; nothing "
                       "was downloaded", "modelHashMismatch")
    kwargs: dict[str, Any] = {"revision": source.revision, "endpoint": settings.hf_endpoint}
    if progress is not None and "tqdm_class" in inspect.signature(hub.hf_hub_download).parameters:
        kwargs["tqdm_class"] = _bar_class(progress)
    try:
        return Path(hub.hf_hub_download(source.hf, source.path, **kwargs))
    except Exception as exc:
        raise _explain(exc, source) from None


def forget_cached(path: Path) -> None:
    """Take a file that failed its check out of huggingface_hub's cache (the snapshot link and its blob), so the
    next pull fetches it again instead of finding the bad copy."""
    blob = Path(os.path.realpath(path))
    for item in (path, blob):
        item.unlink(missing_ok=True)

