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


def test_the_contract_imports_nothing_but_itself():
    for path in modules_under("schema"):
        outside = {m for m in pack_imports(path) if not m.startswith("imageinference.schema")}
        assert not outside, f"{path.name} imports {outside}"


ENGINES = ("samplers", "cache", "prompting", "imageio", "models", "detailer", "pulid", "layerdiffuse", "watermark",
           "ipadapter", "interop")
UPPER = ("imageinference.nodes", "imageinference.server", "imageinference.cli", "imageinference.graph_cli",
         "imageinference.contract_cli", "imageinference.calibrate_cli", "imageinference.entrypoint")


@pytest.mark.parametrize("engine", [e for e in ENGINES if (PACKAGE / e).is_dir()])
def test_engines_never_reach_up(engine):
    for path in modules_under(engine):
        up = {m for m in pack_imports(path) if m.startswith(UPPER)}
        assert not up, f"{engine}/{path.name} imports {up}"


@pytest.mark.parametrize("module", ["imageinference.cache.build", "imageinference.cache.config",
                                    "imageinference.schema.validate", "imageinference.compiler",
                                    "imageinference.exporter"])
def test_pure_modules_do_not_import_torch(module):
    code = f"import sys, {module}; print('torch' in sys.modules or 'comfy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_seed_bound_is_defined_once():
    defining = [p for p in PACKAGE.rglob("*.py") if "SEED_MAX =" in p.read_text()]
    assert [p.relative_to(PACKAGE).as_posix() for p in defining] == ["schema/request.py"]
