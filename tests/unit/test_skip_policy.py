"""A ComfyUI-layer test that skips fails the run, unless its reason is a documented machine condition."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

CONFTEST = Path(__file__).resolve().parents[1] / "conftest.py"


def run_layer(tmp_path: Path, layer: str, body: str) -> subprocess.CompletedProcess[str]:
    comfy = tmp_path / "ComfyUI"  # what comfyui_found() looks for; nothing here imports it
    (comfy / "comfy").mkdir(parents=True)
    (comfy / "main.py").write_text("")
    (comfy / "nodes.py").write_text("")
    tests = tmp_path / "tests"
    (tests / layer).mkdir(parents=True)
    shutil.copy(CONFTEST, tests / "conftest.py")
    (tests / layer / f"test_{layer}_policy_probe.py").write_text("import pytest\n\n\n" + body)
    env = dict(os.environ, COMFYUI_PATH=str(comfy), IMAGEINFERENCE_NO_BROWSER="not needed")
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(tmp_path),
                           str(tests)], capture_output=True, text=True, env=env, cwd=tmp_path)


@pytest.mark.parametrize("layer", ["comfy", "server"])
def test_a_skip_for_a_missing_feature_fails_the_run(tmp_path, layer):
    out = run_layer(tmp_path, layer, "def test_x():\n    pytest.skip('the node has no refiner input yet')\n")
    assert out.returncode == 1, out.stdout
    assert "SKIP REFUSED" in out.stdout and "the node has no refiner input yet" in out.stdout


def test_a_documented_machine_condition_may_skip(tmp_path):
    out = run_layer(tmp_path, "server", "def test_x():\n    pytest.skip('SDK x NOT TESTED: PyPI is unreachable from "
                                        "here (offline)')\n")
    assert out.returncode == 0, out.stdout
    assert "SKIP REFUSED" not in out.stdout


def test_a_unit_skip_is_not_policed(tmp_path):
    out = run_layer(tmp_path, "unit", "def test_x():\n    pytest.skip('optional extra missing')\n")
    assert out.returncode == 0, out.stdout
