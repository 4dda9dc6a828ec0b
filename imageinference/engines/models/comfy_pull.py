"""Pulls inside ComfyUI (adapter): ComfyUI's model folders as the layout, and, inside a running node, ComfyUI's
progress bar plus a download message the endpoint counts into getResponse's progress.

Automatic pulls on the request path are off unless IMAGEINFERENCE_AUTO_PULL=1: with it, a file a request needs
and the folders lack is fetched before it is loaded, in the node that loads it. A failed download is that node's
error in the documented format (`modelDownloadFailed`, `modelHashMismatch`, `gatedModel`, ...).
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import folder_paths

from ...contract.errors import ContractError
from .catalog import Catalog, CatalogError, Entry
from .placement import FolderLayout
from .pull import DOWNLOAD_EVENT, PullError, plan_for_entry, pull_plan
from .sources import Settings, SourceError

log = logging.getLogger("imageinference.models")
UPDATE_EVERY_S = 0.2


def comfy_layout() -> FolderLayout:
    """ComfyUI's folders: every registered folder of a name is searched; a pull lands in `<models>/<folder>`
    when that is one of them, else in the first one (extra_model_paths)."""
    folders = {name: [Path(p) for p in paths] for name, (paths, _ext) in folder_paths.folder_names_and_paths.items()}
    return FolderLayout(Path(folder_paths.models_dir), folders)


class ComfyReporter:
    """ComfyUI's progress bar on the running node, and the endpoint's download message, at most every 0.2 s."""

    def __init__(self) -> None:
        self._bar: Any = None
        self._label = ""
        self._last = 0.0

    def begin(self, label: str, total: int | None) -> None:
        import comfy.utils

        self._bar = comfy.utils.ProgressBar(total or 1)
        self._label = label
        self._last = 0.0

    def advance(self, done: int, total: int | None) -> None:
        now = time.monotonic()
        if now - self._last < UPDATE_EVERY_S and not (total and done >= total):
            return
        self._last = now
        if self._bar is not None:
            self._bar.update_absolute(done, total)  # ComfyUI's hook also raises here when the user interrupts
        _announce(self._label, done, total)

    def end(self) -> None:
        self._bar = None


def _announce(label: str, done: int, total: int | None) -> None:
    try:
        import server
        from comfy_execution.utils import get_executing_context
    except ImportError:
        return
    instance = getattr(server.PromptServer, "instance", None)
    context = get_executing_context()
    if instance is None or context is None:
        return
    air, _, rel = label.partition(" ")
    instance.send_sync(DOWNLOAD_EVENT, {"prompt_id": context.prompt_id, "node": context.node_id, "air": air,
                                        "file": rel, "value": done, "max": total}, instance.client_id)


def auto_pull_enabled() -> bool:
    return os.environ.get("IMAGEINFERENCE_AUTO_PULL", "").strip().lower() in ("1", "true", "yes", "on")


def pull_missing(entry: Entry, rel: str, parameter: str) -> str:
    """Fetch the missing files of `entry` (the one asked for among them) and return the path of `rel`'s role;
    the documented error naming `parameter` when that cannot be done."""
    try:
        settings = Settings.from_env()
        catalog = Catalog.load()
        layout = comfy_layout()
        plan = plan_for_entry(catalog, entry, layout, settings)
        pull_plan(plan, catalog, layout, settings, ComfyReporter())
    except PullError as exc:
        raise exc.contract_error(parameter) from None
    except (SourceError, CatalogError, OSError) as exc:
        raise ContractError.single("modelDownloadFailed", f"{entry.air}: {exc}", parameter, "string") from None
    wanted = rel
    if rel not in plan.entry.paths():  # the entry was rewritten from Civitai's answer: same role, new file
        role = next((r for r, v in entry.files.items() if v == rel), "model")
        wanted = plan.entry.files.get(role, plan.entry.files["model"])
    found = layout.find(wanted)
    if found is None:
        raise ContractError.single("modelDownloadFailed", f"{entry.air}: {wanted} is still missing after the pull",
                                   parameter, "string")
    return str(found)
