"""A loopback stand-in for Civitai (model-version API, download endpoint, its storage) and for a Hugging Face
endpoint (`HF_ENDPOINT`), for the model-pull tests: plain HTTP, configured the way a user points the pack at an
internal mirror (`IMAGEINFERENCE_CIVITAI_URL`, `HF_ENDPOINT`). It serves small files with the real services'
response shapes, recorded here:

- Civitai `GET /api/v1/model-versions/{id}` (CIVITAI_VERSION_128713): the fields and nesting documented at
  https://developer.civitai.com/site/reference/model-versions (its sample: id, modelId, name, baseModel, air, status,
  availability, model{name, type, nsfw, poi, minor}, files[{id, name, type, sizeKB, metadata{format, size, fp},
  pickleScanResult, virusScanResult, hashes{AutoV1, AutoV2, SHA256, CRC32, BLAKE3, AutoV3}, downloadUrl,
  primary}], images, downloadUrl), filled with DreamShaper 8's values as public records of version 128713 give
  them (dreamshaper_8.safetensors, sizeKB 2082642.474609375 = 2132625894 bytes, SHA256 879DB523...). An unknown or
  unpublished version is a 404 (same page). Tests swap the file's hash, size and URL for the small file served.
- Civitai `GET /api/download/models/{id}`: `307` to a presigned storage URL (public `wget` traces show
  `civitai-delivery-worker-prod.<account>.r2.cloudflarestorage.com/...?X-Amz-Expires=...&X-Amz-Signature=...`;
  newer ones Backblaze B2), which rejects an Authorization header; the file name in `Content-Disposition`.
- Hugging Face `HEAD /<repo>/resolve/<revision>/<path>`: `302` to the CDN with `X-Repo-Commit`, `X-Linked-Etag`
  (`"<sha256>"`), `X-Linked-Size`, `ETag` and the ~1 KB `Content-Length` of the LFS pointer (public fixtures of real
  `curl -I` answers; huggingface_hub's `get_hf_file_metadata` reads exactly these); the CDN answers `200`/`206`
  with `Accept-Ranges: bytes`. A missing file: `404` with `X-Error-Code: EntryNotFound`; a gated repository without
  an accepted licence: `401` with `X-Error-Code: GatedRepo` (the headers huggingface_hub's errors are keyed on).
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import re
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

# DreamShaper 8's own values where public records give them (ids, names, baseModel, file name, sizeKB, SHA256 and
# AutoV2 = its first 10 hex digits, downloadUrl); every other value is the documented sample's (the pack reads only
# model.type, baseModel, files[].type/name/sizeKB/hashes.SHA256/downloadUrl/primary and modelId).
CIVITAI_VERSION_128713: dict[str, Any] = {
    "id": 128713, "modelId": 4384, "name": "8", "description": None, "baseModel": "SD 1.5",
    "baseModelType": "Standard", "air": "urn:air:sd1:checkpoint:civitai:4384@128713", "status": "Published",
    "availability": "Public", "nsfwLevel": 3, "createdAt": "2025-12-18T08:55:00.000Z",
    "updatedAt": "2025-12-18T09:16:12.062Z", "publishedAt": "2025-12-18T09:16:12.062Z", "uploadType": "Created",
    "usageControl": "Download", "trainedWords": [], "earlyAccessConfig": None, "earlyAccessEndsAt": None,
    "trainingStatus": None, "trainingDetails": None,
    "stats": {"downloadCount": 215627, "thumbsUpCount": 13828, "thumbsDownCount": 22},
    "model": {"name": "DreamShaper", "type": "Checkpoint", "nsfw": False, "poi": False, "minor": False},
    "files": [{
        "id": 2402203, "name": "dreamshaper_8.safetensors", "type": "Model", "sizeKB": 2082642.474609375,
        "metadata": {"format": "SafeTensor", "size": "pruned", "fp": "fp16"},
        "pickleScanResult": "Success", "virusScanResult": "Success",
        "hashes": {"AutoV1": "4748A7F6", "AutoV2": "879DB523C3",
                   "SHA256": "879DB523C30D3B9017143D56705015E15A2CB5628762C11D086FED9538ABD7FD",
                   "CRC32": "DAEE95B7", "BLAKE3": "1A411D9B", "AutoV3": "22D8CB95B807"},
        "downloadUrl": "https://civitai.com/api/download/models/128713", "primary": True}],
    "images": [],
    "downloadUrl": "https://civitai.com/api/download/models/128713",
}
HF_COMMIT = "0ef5fff789c832c5c7f4e127f94c8b54bbcced44"  # a 40-hex commit id as X-Repo-Commit carries


@dataclass
class Served:
    data: bytes
    name: str
    drop_after: int | None = None  # close the connection after this many body bytes, once
    throttle_bps: int | None = None  # bytes per second
    content_type: str = "application/octet-stream"

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


@dataclass
class Mirror:
    """State shared by the handler threads: what is served, and what was asked for."""

    versions: dict[str, dict[str, Any]] = field(default_factory=dict)
    blobs: dict[str, Served] = field(default_factory=dict)  # storage key -> file
    hf_files: dict[str, str] = field(default_factory=dict)  # "<repo>/<path>" -> storage key
    hf_etags: dict[str, str] = field(default_factory=dict)  # "<repo>/<path>" -> the sha256 the HEAD states
    gated: dict[str, str] = field(default_factory=dict)  # repo -> token that has accepted its licence
    storage_base: str = ""  # where the download endpoint redirects (another server's URL, or this one)
    cdn_base: str = ""  # where a Hub HEAD redirects (another server: Hub clients follow same-host redirects)
    log: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, entry: dict[str, Any]) -> None:
        entry["end"] = time.monotonic()
        with self.lock:
            self.log.append(entry)

    def requests(self, path_prefix: str, method: str = "GET") -> list[dict[str, Any]]:
        with self.lock:
            return [e for e in self.log if e["path"].startswith(path_prefix) and e["method"] == method]

    def body_bytes(self, key: str) -> int:
        with self.lock:
            return sum(e.get("sent", 0) for e in self.log if e["path"].startswith(f"/storage/{key}"))


def civitai_version(version_id: int, model_id: int, served: Served, mirror_url: str, model_type: str = "Checkpoint",
                    base_model: str = "SD 1.5", extra_files: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The recorded answer, for a file this mirror serves (its hash, size and download URL swapped in)."""
    payload = copy.deepcopy(CIVITAI_VERSION_128713)
    payload.update(id=version_id, modelId=model_id, baseModel=base_model,
                   air=f"urn:air:sd1:checkpoint:civitai:{model_id}@{version_id}",
                   downloadUrl=f"{mirror_url}/api/download/models/{version_id}")
    payload["model"]["type"] = model_type
    file = payload["files"][0]
    file.update(name=served.name, sizeKB=len(served.data) / 1024, downloadUrl=payload["downloadUrl"])
    file["hashes"]["SHA256"] = served.sha256.upper()
    payload["files"] = [*(extra_files or []), file]
    return payload


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    mirror: Mirror
    base: str

    def log_message(self, format: str, *args: Any) -> None:
        return None

    def _json(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _entry(self) -> dict[str, Any]:
        return {"method": self.command, "path": self.path, "host": self.headers.get("Host"), "start": time.monotonic(),
                "range": self.headers.get("Range"),
                "authorization": self.headers.get("Authorization"), "agent": self.headers.get("User-Agent")}

    def do_HEAD(self) -> None:  # noqa: N802
        self.mirror.record(self._entry())
        self._route()

    def do_GET(self) -> None:  # noqa: N802
        self._route()

    def _route(self) -> None:
        path = self.path.split("?", 1)[0]
        if m := re.fullmatch(r"/api/v1/model-versions/(\d+)", path):
            self.mirror.record(self._entry())
            payload = self.mirror.versions.get(m[1])
            if payload is None:
                return self._json(404, {"error": f"No model version with id {m[1]}"})
            return self._json(200, payload)
        if m := re.fullmatch(r"/api/download/models/(\d+)", path):
            self.mirror.record(self._entry())
            payload = self.mirror.versions.get(m[1])
            if payload is None:
                return self._json(404, {"error": "Model not found"})
            key = hashlib.sha256(m[1].encode()).hexdigest()[:16]
            base = self.mirror.storage_base or self.base
            location = f"{base}/storage/{key}?X-Amz-Expires=86400&X-Amz-Signature=0f1e2d3c4b5a"
            self.send_response(307)
            self.send_header("Location", location)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None
        if m := re.fullmatch(r"/storage/([0-9a-f]+)", path):
            return self._serve(m[1], disposition=True)
        if m := re.fullmatch(r"/cdn/([0-9a-f]+)", path):
            return self._serve(m[1], disposition=False)
        if m := re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path):
            return self._resolve(m[1], m[3])
        self.mirror.record(self._entry())
        return self._json(404, {"error": "not found"})

    def _resolve(self, repo: str, file: str) -> None:
        if self.command == "GET":
            self.mirror.record(self._entry())
        token = self.mirror.gated.get(repo)
        if token is not None and self.headers.get("Authorization") != f"Bearer {token}":
            return self._json(401, {"error": f"Access to model {repo} is restricted and you are not in the "
                                             "authorized list."}, {"X-Error-Code": "GatedRepo",
                                                                   "X-Error-Message": "gated"})
        key = self.mirror.hf_files.get(f"{repo}/{file}")
        if key is None:
            return self._json(404, {"error": "Entry not found"}, {"X-Error-Code": "EntryNotFound",
                                                                 "X-Error-Message": "Entry not found"})
        served = self.mirror.blobs[key]
        etag = self.mirror.hf_etags.get(f"{repo}/{file}", served.sha256)
        pointer = 1321
        self.send_response(302)
        self.send_header("Location", f"{self.mirror.cdn_base or self.base}/cdn/{key}")
        self.send_header("X-Repo-Commit", HF_COMMIT)
        self.send_header("X-Linked-Etag", f'"{etag}"')
        self.send_header("X-Linked-Size", str(len(served.data)))
        self.send_header("ETag", '"a8d7c1e5b2f94c3d6e0f1a2b3c4d5e6f7a8b9c0d"')
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(pointer))
        self.end_headers()
        if self.command == "GET":
            self.wfile.write(b" " * pointer)
        return None

    def _serve(self, key: str, disposition: bool) -> None:
        entry = self._entry()
        served = self.mirror.blobs.get(key)
        if served is None:
            self.mirror.record(entry)
            return self._json(404, {"error": "NoSuchKey"})
        if disposition and self.headers.get("Authorization"):
            self.mirror.record(entry)  # presigned storage refuses a second credential, as R2/B2 do
            return self._json(400, {"error": "InvalidArgument: Only one auth mechanism allowed"})
        data, start = served.data, 0
        rng = self.headers.get("Range")
        if rng and (m := re.fullmatch(r"bytes=(\d+)-", rng)):
            start = int(m[1])
            if start >= len(data):
                self.mirror.record(entry)
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return None
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Type", served.content_type)
        if disposition:
            self.send_header("Content-Disposition", f'attachment; filename="{served.name}"')
        self.end_headers()
        if self.command == "HEAD":
            self.mirror.record(entry)
            return None
        limit = len(body)
        if served.drop_after is not None:
            limit = max(0, min(limit, served.drop_after - start))
            served.drop_after = None
        sent = 0
        try:
            while sent < limit:
                chunk = body[sent:min(limit, sent + 65536)]
                self.wfile.write(chunk)
                sent += len(chunk)
                if served.throttle_bps:
                    time.sleep(len(chunk) / served.throttle_bps)
        except (BrokenPipeError, ConnectionResetError):
            pass
        entry["sent"] = sent
        self.mirror.record(entry)
        if sent < len(body):  # a dropped connection: the client has a Content-Length it will not get
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
        return None


class MirrorServer:
    """One stand-in on a free loopback port, in a thread; use as a context manager."""

    def __init__(self, mirror: Mirror | None = None):
        self.mirror = mirror or Mirror()
        handler = type("Handler", (_Handler,), {"mirror": self.mirror})
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        handler.base = self.url  # type: ignore[attr-defined]
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def host(self) -> str:
        return self.url.removeprefix("http://")

    def __enter__(self) -> MirrorServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def add_civitai(self, version_id: int, model_id: int, served: Served, **kwargs: Any) -> dict[str, Any]:
        key = hashlib.sha256(str(version_id).encode()).hexdigest()[:16]
        self.mirror.blobs[key] = served
        payload = civitai_version(version_id, model_id, served, self.url, **kwargs)
        self.mirror.versions[str(version_id)] = payload
        return payload

    def add_hf(self, repo: str, path: str, served: Served, etag: str | None = None) -> str:
        key = served.sha256[:16] + hashlib.sha256(f"{repo}/{path}".encode()).hexdigest()[:8]
        self.mirror.blobs[key] = served
        self.mirror.hf_files[f"{repo}/{path}"] = key
        if etag is not None:
            self.mirror.hf_etags[f"{repo}/{path}"] = etag
        return key


def storage_key(version_id: int) -> str:
    return hashlib.sha256(str(version_id).encode()).hexdigest()[:16]
