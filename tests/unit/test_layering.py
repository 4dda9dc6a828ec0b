"""The house's floors (DESIGN.md), checked on the source: the contract imports nothing of the pack, engines
never import a node, a command or the server, and modules that say they are torch-free are."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "imageinference"


def pack_imports(path: Path) -> set[str]:
    """Modules of the pack that `path` imports (absolute names), wherever the import statement is."""
    module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    package = module.rsplit(".", 1)[0] if path.name != "__init__.py" else module
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            targets = [name] + [f"{name}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            continue
        found.update(t for t in targets if t.startswith("imageinference"))
    return found


def modules_under(sub: str) -> list[Path]:
    return sorted((PACKAGE / sub).rglob("*.py"))


def test_the_package_root_holds_only_layer_folders():
    loose = sorted(p.name for p in PACKAGE.glob("*.py") if p.name not in ("__init__.py", "__main__.py"))
    assert not loose, f"modules at the package root belong in a layer folder: {loose}"
    assert {p.name for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__"} == set(LAYERS) | {
        "testing", "data"}


def test_the_contract_imports_nothing_but_itself():
    for path in modules_under("contract"):
        outside = {m for m in pack_imports(path) if not m.startswith("imageinference.contract")}
        assert not outside, f"{path.name} imports {outside}"


# bottom up; a module may import its own layer and the layers below it, never one above
LAYERS = ("contract", "engines", "interop", "comfyui", "server", "commands")


# what ComfyUI calls: it registers the nodes and mounts the server's routes, so it alone may reach up
COMPOSITION_ROOT = PACKAGE / "comfyui" / "entrypoint.py"


@pytest.mark.parametrize("layer", LAYERS)
def test_no_import_runs_upward(layer):
    above = tuple(f"imageinference.{name}" for name in LAYERS[LAYERS.index(layer) + 1:])
    for path in modules_under(layer):
        if path == COMPOSITION_ROOT:
            continue
        up = {m for m in pack_imports(path) if m.startswith(above)}
        assert not up, f"{path.relative_to(PACKAGE)} imports {up}"


def test_nodes_and_server_routes_never_import_each_other():
    tops = ("imageinference.comfyui.nodes", "imageinference.server")
    for top in tops:
        sub = top.removeprefix("imageinference.").replace(".", "/")
        others = tuple(t for t in tops if t != top)
        for path in modules_under(sub):
            reached = {m for m in pack_imports(path) if m.startswith(others)}
            assert not reached, f"{path.relative_to(PACKAGE)} imports {reached}"


@pytest.mark.parametrize("module", ["imageinference.engines.cache.build", "imageinference.engines.cache.config",
                                    "imageinference.contract.validate", "imageinference.interop.compiler",
                                    "imageinference.interop.exporter"])
def test_pure_modules_do_not_import_torch(module):
    code = f"import sys, {module}; print('torch' in sys.modules or 'comfy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_seed_bound_is_defined_once():
    defining = [p for p in PACKAGE.rglob("*.py") if "SEED_MAX =" in p.read_text()]
    assert [p.relative_to(PACKAGE).as_posix() for p in defining] == ["contract/request.py"]
