"""Pulling a model from ComfyUI's frontend (adapter): the AIR inputs' "Pull model" menu entry calls these routes.

- POST /imageinference/models/pull  {"air": "<AIR>", "allowUnverified": false}
  -> 202 {"air", "status": "running", ...} (a pull of that AIR already running is joined, not started twice),
     or {"errors": [...]} (400) for a bad body.
- GET /imageinference/models/pull?air=<AIR>
  -> {"air", "status": "idle"|"running"|"done"|"error", "file", "done", "total", "fetched", "error"}.
A pull runs in a background thread with ComfyUI's model folders (the same code as `models pull`; one download per
file across processes through its file lock). Unlike the graph conversion routes, these write into the model
folders, so they are protected like the task endpoint: with IMAGEINFERENCE_API_KEY set a request needs
`Authorization: Bearer <key>`; without it only loopback clients are answered.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from ..contract.air import AIRError, canonical_air
from ..contract.errors import ApiError
from .auth import bearer, is_loopback, key_matches
from .config import EndpointConfig

log = logging.getLogger("imageinference.models")
PULL_PATH = "/imageinference/models/pull"
MAX_BODY = 64 * 1024


@dataclass
class Job:
    air: str
    status: str = "idle"
    file: str = ""
    done: int = 0
    total: int | None = None
    fetched: list[str] = field(default_factory=list)
    error: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return {"air": self.air, "status": self.status, "file": self.file, "done": self.done, "total": self.total,
                "fetched": self.fetched, "error": self.error}


class _JobReporter:
    def __init__(self, job: Job):
        self.job = job

    def begin(self, label: str, total: int | None) -> None:
        self.job.file, self.job.done, self.job.total = label.partition(" ")[2], 0, total

    def advance(self, done: int, total: int | None) -> None:
        self.job.done, self.job.total = done, total or self.job.total

    def end(self) -> None:
        return None


class PullJobs:
    """The pulls this server started, by AIR: one running pull per AIR."""

    def __init__(self) -> None:
        self.jobs: dict[str, Job] = {}
        self._lock = threading.Lock()

    def get(self, air: str) -> Job:
        with self._lock:
            return self.jobs.get(air) or Job(air)

    def start(self, air: str, allow_unverified: bool) -> Job:
        with self._lock:
            job = self.jobs.get(air)
            if job is not None and job.status == "running":
                return job
            job = Job(air, "running")
            self.jobs[air] = job
        threading.Thread(target=self._run, args=(job, allow_unverified), name=f"imageinference-pull {air}",
                         daemon=True).start()
        return job

    def _run(self, job: Job, allow_unverified: bool) -> None:
        from ..engines.models.catalog import Catalog, CatalogError
        from ..engines.models.comfy_pull import comfy_layout
        from ..engines.models.pull import PullError, plan_pull, pull_plan
        from ..engines.models.sources import Settings, SourceError

        try:
            settings, catalog, layout = Settings.from_env(), Catalog.load(), comfy_layout()
            plan = plan_pull(catalog, job.air, layout, settings)
            result = pull_plan(plan, catalog, layout, settings, _JobReporter(job), allow_unverified)
            job.fetched, job.status = result.fetched, "done"
        except PullError as exc:
            job.error, job.status = {"code": exc.code, "message": exc.message}, "error"
        except (SourceError, CatalogError, OSError) as exc:
            job.error, job.status = {"code": "modelDownloadFailed", "message": f"{job.air}: {exc}"}, "error"
        except Exception as exc:  # a pull thread must always end in a state the frontend can show
            log.exception("[imageinference] pulling %s failed", job.air)
            job.error = {"code": "modelDownloadFailed", "message": f"{job.air}: {type(exc).__name__}: {exc}"}
            job.status = "error"
        if job.error:
            log.warning("[imageinference] pull of %s failed: %s", job.air, job.error["message"])


def _error(status: int, code: str, message: str, parameter: str = "") -> web.Response:
    return web.json_response({"errors": [ApiError(code, message, parameter, "string" if parameter else "",
                                                  task_type="modelPull").to_json()]}, status=status)


def _refused(request: web.Request, config: EndpointConfig) -> web.Response | None:
    if config.api_key is None:
        if not is_loopback(request.remote):
            return _error(403, "loopbackOnly", "no API key is configured, so model pulls are answered for loopback "
                          "clients only; start ComfyUI with IMAGEINFERENCE_API_KEY set to accept remote clients")
        return None
    key = bearer(request.headers.get("Authorization"))
    if key is None:
        return _error(401, "missingApiKey", "pulling a model needs the API key: send 'Authorization: Bearer <key>' "
                      "(IMAGEINFERENCE_API_KEY)", "apiKey")
    if not key_matches(config.api_key, key):
        return _error(401, "invalidApiKey", "Invalid API key (IMAGEINFERENCE_API_KEY)", "apiKey")
    return None


def _air(value: Any) -> str | web.Response:
    if not isinstance(value, str) or not value.strip():
        return _error(400, "missingAir", "give the AIR to pull, e.g. civitai:4384@128713", "air")
    try:
        return canonical_air(value.strip())
    except AIRError as exc:
        return _error(400, "invalidAir", str(exc), "air")


def register(routes: web.RouteTableDef, jobs: PullJobs | None = None) -> PullJobs:
    jobs = jobs or PullJobs()

    async def start(request: web.Request) -> web.Response:
        refused = _refused(request, EndpointConfig.from_env())
        if refused is not None:
            return refused
        raw = await request.content.read(MAX_BODY + 1)
        try:
            body = json.loads(raw) if len(raw) <= MAX_BODY else None
        except ValueError:
            body = None
        if not isinstance(body, dict):
            return _error(400, "invalidBody", f"the body must be a JSON object of at most {MAX_BODY} bytes: "
                          '{"air": "<AIR>"}', "body")
        air = _air(body.get("air"))
        if isinstance(air, web.Response):
            return air
        allow = body.get("allowUnverified", False)
        if not isinstance(allow, bool):
            return _error(400, "invalidAllowUnverified", "allowUnverified must be true or false", "allowUnverified")
        return web.json_response(jobs.start(air, allow).to_json(), status=202)

    async def state(request: web.Request) -> web.Response:
        refused = _refused(request, EndpointConfig.from_env())
        if refused is not None:
            return refused
        air = _air(request.query.get("air"))
        if isinstance(air, web.Response):
            return air
        return web.json_response(jobs.get(air).to_json())

    routes.post(PULL_PATH)(start)
    routes.get(PULL_PATH)(state)
    return jobs
