"""Catalog entries -> files on disk through ComfyUI's folder_paths (adapter). Never leaves the model folders.
A missing file is fetched first when IMAGEINFERENCE_AUTO_PULL=1 (comfy_pull.py), else it is `missingModelFile`."""

from __future__ import annotations

import folder_paths

from ...contract.errors import ContractError
from .catalog import Entry


def resolve_file(entry: Entry, rel: str, parameter: str) -> str:
    """Absolute path of a catalog file (`<folder>/<file>`), or the documented error naming AIR, entry and folders."""
    folder, _, name = rel.partition("/")
    folders = list(folder_paths.folder_names_and_paths.get(folder, ([], set()))[0])
    if folder == "ultralytics" and not folders:
        folders = [f"{folder_paths.models_dir}/ultralytics"]
    path = folder_paths.get_full_path(folder, name) if folder in folder_paths.folder_names_and_paths else None
    if path is None:
        import os

        for base in folders:
            candidate = os.path.realpath(os.path.join(base, name))
            if candidate.startswith(os.path.realpath(base) + os.sep) and os.path.isfile(candidate):
                path = candidate
                break
    if path is None:
        from .comfy_pull import auto_pull_enabled, pull_missing

        if auto_pull_enabled():  # IMAGEINFERENCE_AUTO_PULL=1: fetch it now, with ComfyUI's progress bar
            return pull_missing(entry, rel, parameter)
    if path is None:
        raise ContractError.single(
            "missingModelFile",
            f"{entry.air} ({entry.kind}, catalog entry from {entry.source}: '{rel}') has no file '{name}' in the "
            f"'{folder}' model folder(s): {', '.join(folders) or '(none configured)'} (fetch it with `python -m "
            f"imageinference models pull {entry.air}`, or set IMAGEINFERENCE_AUTO_PULL=1)",
            parameter, "string")
    return path
