"""The package is importable without ComfyUI and its import stays cheap."""

import subprocess
import sys
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[2]


def test_import_does_not_pull_torch_or_comfy():
    code = ("import sys, imageinference, imageinference.commands.cli, imageinference.engines.samplers.schedulers; "
            "print(sorted(m for m in ('torch', 'comfy', 'comfy_api', 'nodes') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_pyproject_and_requirements_agree():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = [line.strip() for line in (ROOT / "requirements.txt").read_text().splitlines()
            if line.strip() and not line.startswith("#")]
    assert sorted(reqs) == sorted(project["dependencies"])
    assert project["name"] == "imageinference-nodes"
    from imageinference import __version__

    assert project["version"] == __version__


def test_registry_metadata_present():
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    comfy = data["tool"]["comfy"]
    for key in ("PublisherId", "DisplayName", "Icon", "requires-comfyui"):
        assert key in comfy
    assert data["project"]["urls"]["Repository"]


def test_root_entry_point_exports_only_comfy_entrypoint():
    """ComfyUI ignores comfy_entrypoint when NODE_CLASS_MAPPINGS exists, even empty."""
    text = (ROOT / "__init__.py").read_text()
    assert "comfy_entrypoint" in text
    assert "NODE_CLASS_MAPPINGS" not in text
    for path in (ROOT / "imageinference").rglob("*.py"):
        assert "NODE_CLASS_MAPPINGS =" not in path.read_text(), path


def test_test_modules_have_unique_names():
    """The test folders are not packages: two test files with one name stop pytest's collection."""
    names = [p.name for p in (ROOT / "tests").rglob("test_*.py")]
    assert sorted({n for n in names if names.count(n) > 1}) == []
