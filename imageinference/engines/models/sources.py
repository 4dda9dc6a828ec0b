"""Where a model file comes from, and which sources, hosts and files the pack will fetch. Pure (no ComfyUI).

A `Source` names one file at one place: a file of a Hugging Face repository (`hf`, `path`, `revision`), fetched
through huggingface_hub, or an https URL (Civitai's download endpoint), fetched by `transfer.py`. `sha256` pins
what must arrive and `size` bounds it; a source without a sha256 is unverifiable and is fetched only when the user
says so explicitly (`--allow-unverified`).

Hosts: https only, and only Civitai (its site and the storage its download endpoint redirects to), Hugging Face
(its site and CDNs) and the mirrors the user configured (`IMAGEINFERENCE_CIVITAI_URL`, `HF_ENDPOINT`,
`IMAGEINFERENCE_MODEL_HOSTS`); a configured mirror may be plain http, as an internal mirror often is.
Files: `.safetensors` (no code inside), plus the `.pt`/`.onnx` detectors and `.onnx` face encoders, which keep
their own restricted loading path (docs/security.md).
"""

from __future__ import annotations

import os
import re
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

CIVITAI_URL = "https://civitai.com"
HF_ENDPOINT = "https://huggingface.co"
CIVITAI_HOSTS = ("civitai.com",)
# Civitai's download endpoint answers with a redirect to a presigned URL on its storage: Cloudflare R2
# (`civitai-delivery-worker-prod.<account>.r2.cloudflarestorage.com`) or Backblaze B2 (`fNNN.backblazeb2.com`).
CIVITAI_STORAGE_SUFFIXES = (".r2.cloudflarestorage.com", ".backblazeb2.com")
HF_HOSTS = ("huggingface.co",)
HF_SUFFIXES = (".huggingface.co", ".hf.co")  # cdn-lfs*.hf.co, cas-bridge.xethub.hf.co (Xet storage)
SHA256 = re.compile(r"^[0-9a-f]{64}$")
REPO = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")


class SourceError(ValueError):
    pass


@dataclass(frozen=True)
class Source:
    hf: str | None = None
    path: str | None = None
    revision: str = "main"
    url: str | None = None
    size: int | None = None
    size_tolerance: int = 0  # Civitai states sizes in KB with two decimals: the byte count is known to ±6 bytes
    sha256: str | None = None
    gated: str | None = None  # which licence must be accepted, and where

    @property
    def verifiable(self) -> bool:
        return self.sha256 is not None

    def describe(self) -> str:
        """Where the file comes from, with no query string (presigned URLs and tokens stay out of logs)."""
        if self.hf:
            return f"hf:{self.hf}/{self.path}@{self.revision}"
        return redact(self.url or "")

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"hf": self.hf, "path": self.path, "revision": self.revision} if self.hf else {
            "url": self.url}
        for key, value in (("size", self.size), ("sizeTolerance", self.size_tolerance or None),
                           ("sha256", self.sha256), ("gated", self.gated)):
            if value is not None:
                out[key] = value
        return out


def redact(url: str) -> str:
    """A URL without its query and credentials: what may appear in a message or a log line."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urllib.parse.urlunsplit((parts.scheme, host, parts.path, "", ""))


def parse_source(rel: str, data: Any) -> Source:
    """A source from catalog JSON (`{"hf", "path", "revision"}` or `{"url"}`, with `size`, `sha256`, `gated`)."""
    if not isinstance(data, dict):
        raise SourceError(f"the source of {rel} must be an object")
    size = data.get("size")
    if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size <= 0):
        raise SourceError(f"the source of {rel}: 'size' must be a positive integer (bytes)")
    tolerance = data.get("sizeTolerance", 0)
    if not isinstance(tolerance, int) or isinstance(tolerance, bool) or not 0 <= tolerance <= 4096:
        raise SourceError(f"the source of {rel}: 'sizeTolerance' must be 0..4096 bytes")
    sha = data.get("sha256")
    if sha is not None:
        if not isinstance(sha, str) or not SHA256.match(sha.lower()):
            raise SourceError(f"the source of {rel}: 'sha256' must be 64 hex digits")
        sha = sha.lower()
    gated = data.get("gated")
    if gated is not None and not isinstance(gated, str):
        raise SourceError(f"the source of {rel}: 'gated' must be a string")
    hf, url = data.get("hf"), data.get("url")
    if (hf is None) == (url is None):
        raise SourceError(f"the source of {rel} needs exactly one of 'hf' (a Hugging Face repository) or 'url'")
    if hf is not None:
        path, revision = data.get("path"), data.get("revision", "main")
        if not isinstance(hf, str) or not REPO.match(hf):
            raise SourceError(f"the source of {rel}: 'hf' must be '<owner>/<repository>'")
        if not isinstance(path, str) or not path or path.startswith("/") or ".." in PurePosixPath(path).parts:
            raise SourceError(f"the source of {rel}: 'path' must be a file inside the repository")
        if not isinstance(revision, str) or not re.match(r"^[A-Za-z0-9._/-]{1,100}$", revision):
            raise SourceError(f"the source of {rel}: 'revision' must be a branch, tag or commit")
        return Source(hf=hf, path=path, revision=revision, size=size, size_tolerance=tolerance, sha256=sha,
                      gated=gated)
    if not isinstance(url, str) or urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise SourceError(f"the source of {rel}: 'url' must be an http(s) URL")
    return Source(url=url, size=size, size_tolerance=tolerance, sha256=sha, gated=gated)


def check_fetchable(rel: str, kind: str) -> None:
    """Only files that carry no code are fetched: .safetensors; detectors (.pt, .onnx) and face encoders (.onnx)
    keep their own restricted loaders. Pickles (.ckpt, .pt, .pth, .bin) of any other kind are refused."""
    suffix = PurePosixPath(rel).suffix.lower()
    if suffix == ".safetensors":
        return
    if kind == "detector" and suffix in (".pt", ".onnx") and rel.startswith("ultralytics/"):
        return
    if kind == "idEncoder" and suffix == ".onnx":
        return
    raise SourceError(f"{rel} is a '{suffix or 'no extension'}' file; the pack fetches only .safetensors files "
                      "(and .pt/.onnx detectors and .onnx face encoders, which load through restricted loaders). "
                      "Place a pickle-format file by hand if you trust it")


def _flag(env: Mapping[str, str], name: str) -> bool:
    return env.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def _base(url: str, default: str, name: str) -> str:
    url = (url or default).strip().rstrip("/")
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise SourceError(f"{name} must be an http(s) URL, not {url!r}")
    return url


def _host_port(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return f"{(parts.hostname or '').lower()}:{port}"


@dataclass(frozen=True)
class Settings:
    """Download settings, from the environment (documented in docs/models.md)."""

    civitai_url: str = CIVITAI_URL
    civitai_token: str | None = field(default=None, repr=False)
    hf_endpoint: str = HF_ENDPOINT
    extra_hosts: tuple[str, ...] = ()
    auto_pull: bool = False
    timeout_s: float = 60.0
    allow_private: bool = False

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        try:
            timeout = max(1.0, float(env.get("IMAGEINFERENCE_DOWNLOAD_TIMEOUT", "60")))
        except ValueError:
            timeout = 60.0
        extra = tuple(h.strip().lower() for h in env.get("IMAGEINFERENCE_MODEL_HOSTS", "").split(",") if h.strip())
        return cls(civitai_url=_base(env.get("IMAGEINFERENCE_CIVITAI_URL", ""), CIVITAI_URL,
                                     "IMAGEINFERENCE_CIVITAI_URL"),
                   civitai_token=env.get("CIVITAI_TOKEN", "").strip() or None,
                   hf_endpoint=_base(env.get("HF_ENDPOINT", ""), HF_ENDPOINT, "HF_ENDPOINT"),
                   extra_hosts=extra, auto_pull=_flag(env, "IMAGEINFERENCE_AUTO_PULL"), timeout_s=timeout,
                   allow_private=_flag(env, "IMAGEINFERENCE_ALLOW_PRIVATE_URLS"))

    def mirrors(self) -> set[str]:
        """`host:port` of every configured mirror (a default base URL is not a mirror)."""
        found = {_host_port(url) for url, default in ((self.civitai_url, CIVITAI_URL),
                                                      (self.hf_endpoint, HF_ENDPOINT)) if url != default}
        for host in self.extra_hosts:
            found.add(host if ":" in host else f"{host}:443")
        return found

    def check_url(self, url: str) -> bool:
        """Raise SourceError unless the pack may fetch `url`; True when it is a configured mirror (which may be
        plain http and on a private address, since the user chose it)."""
        parts = urllib.parse.urlsplit(url)
        host = (parts.hostname or "").lower()
        try:
            parts.port  # noqa: B018 - a bad port raises here
        except ValueError:
            raise SourceError(f"bad port in {redact(url)}") from None
        if parts.scheme not in ("http", "https") or not host:
            raise SourceError(f"only http(s) URLs are fetched, not {redact(url)!r}")
        if _host_port(url) in self.mirrors():
            return True
        if parts.scheme != "https":
            raise SourceError(f"{redact(url)} is not https; only a configured mirror may be plain http")
        known = (host in CIVITAI_HOSTS or host.endswith(tuple("." + h for h in CIVITAI_HOSTS))
                 or host.endswith(CIVITAI_STORAGE_SUFFIXES) or host in HF_HOSTS or host.endswith(HF_SUFFIXES))
        if not known:
            raise SourceError(f"{host} is not a model host this pack fetches from (Civitai and its storage, Hugging "
                              "Face and its CDNs, or a mirror set in IMAGEINFERENCE_CIVITAI_URL, HF_ENDPOINT or "
                              "IMAGEINFERENCE_MODEL_HOSTS)")
        return False

    def is_civitai_api(self, url: str) -> bool:
        """True for the host that may receive CIVITAI_TOKEN (never the storage a download redirects to)."""
        return _host_port(url) == _host_port(self.civitai_url)
