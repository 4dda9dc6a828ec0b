"""Peer implementations as test oracles: the archives in the vendor folder (README there), unpacked into a
temporary folder and imported from there by tests and benchmarks only.

Never imported by the product; nothing of a peer is copied into the project (their licences, GPL/AGPL among
them, stay with their archives). A missing archive raises PeerMissing naming it; tests turn that into a loud skip
(the archives are present on every machine of this project).
"""

from __future__ import annotations

import ast
import importlib.util
import os
import sys
import tarfile
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

DEFAULT_DIR = Path("/work/shared/vendor/peers")


class PeerMissing(RuntimeError):
    pass


def peers_dir() -> Path:
    return Path(os.environ.get("IMAGEINFERENCE_PEERS") or DEFAULT_DIR)


def archive(repository: str) -> Path:
    """The archive of a peer repository (its name without owner, e.g. 'ComfyUI_IPAdapter_plus')."""
    found = sorted(peers_dir().glob(f"{repository}-*.tar.gz"))
    if not found:
        raise PeerMissing(f"peer archive {repository}-<commit>.tar.gz not found in {peers_dir()} "
                          "(set IMAGEINFERENCE_PEERS)")
    return found[-1]


def unpack(repository: str, dest: Path) -> Path:
    """Unpack the peer's archive under `dest` (once) and return its folder `<repository>-<commit>`."""
    path = archive(repository)
    folder = dest / path.name[: -len(".tar.gz")]
    if not folder.is_dir():
        with tarfile.open(path) as tar:
            tar.extractall(dest, filter="data")  # plain files only: no links out, no devices
    if not folder.is_dir():
        raise PeerMissing(f"{path.name} did not unpack to {folder.name}/")
    return folder


def import_package(folder: Path, name: str) -> ModuleType:
    """Import an unpacked folder (e.g. a ComfyUI node pack) as the top-level package `name`, so its relative
    imports work; importing it again returns the same module."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, folder / "__init__.py",
                                                  submodule_search_locations=[str(folder)])
    if spec is None or spec.loader is None:
        raise PeerMissing(f"{folder} is not a Python package")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def load_function(path: Path, name: str, namespace: dict[str, object]) -> Callable[..., Any]:
    """One top-level function of a peer's source file, compiled from that file (tracebacks name it) and run with
    `namespace` as its globals: for a file whose other imports cannot load here, e.g. DeepCache's pipelines, which
    were written for an older diffusers."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == name:
            scope: dict[str, Any] = dict(namespace)
            exec(compile(ast.Module(body=[node], type_ignores=[]), str(path), "exec"), scope)
            function: Callable[..., Any] = scope[name]
            return function
    raise PeerMissing(f"{path} defines no top-level function {name}")


def import_top_level(folder: Path, modules: list[str], stubs: dict[str, ModuleType] | None = None) -> dict[str, ModuleType]:
    """Import modules of a repository whose packages are top-level names (e.g. PuLID's `flux`, `pulid`,
    `eva_clip`) from its unpacked folder, and return them by name. Afterwards the folder leaves sys.path and those
    packages leave sys.modules (any module of the same name that was there comes back), so nothing else in the
    process can import them by accident; the returned modules keep working. `stubs` stand in, during the import
    only, for modules the peer imports but the code a test calls never uses (the caller names them)."""
    tops = {m.split(".")[0] for m in modules}
    shadowed = {k: v for k, v in sys.modules.items() if k.split(".")[0] in tops or k in (stubs or {})}
    for k in shadowed:
        del sys.modules[k]
    sys.modules.update(stubs or {})
    sys.path.insert(0, str(folder))
    try:
        return {m: importlib.import_module(m) for m in modules}
    finally:
        sys.path.remove(str(folder))
        for k in [k for k in sys.modules if k.split(".")[0] in tops or k in (stubs or {})]:
            del sys.modules[k]
        sys.modules.update(shadowed)


# ---------------------------------------------------------------- Impact Pack as a ComfyUI node pack


def install_impact_pack(custom_nodes: Path) -> Path:
    """Impact Pack with its ultralytics detector provider, installed into a (throwaway) custom_nodes/ folder of a
    test ComfyUI: the pack's folder as ComfyUI loads it. This Impact Pack release (7.10) imports its detector
    provider as `impact.subpack_nodes` from its own `impact_subpack/impact/` folder (once a git submodule, fetched
    by its installer); the Impact Subpack archive's modules are put there, as that installer would."""
    pack = unpack("ComfyUI-Impact-Pack", custom_nodes)
    target = pack / "impact_subpack" / "impact"
    if not target.is_dir():
        staging = custom_nodes.parent / "impact-subpack-source"
        staging.mkdir(exist_ok=True)
        subpack = unpack("ComfyUI-Impact-Subpack", staging)
        target.mkdir(parents=True)
        for name in ("subcore.py", "subpack_nodes.py"):
            (target / name).write_bytes((subpack / "modules" / name).read_bytes())
    return pack
