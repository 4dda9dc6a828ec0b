"""`compile --format workflow` builds frontend workflows from in-process node definitions."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_compile_to_workflow_format_matches_the_checked_in_file(comfy):
    out = subprocess.run([sys.executable, "-m", "imageinference", "compile", "--format", "workflow",
                          str(ROOT / "workflows" / "requests" / "controlnet.json")], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == json.loads((ROOT / "workflows" / "controlnet.json").read_text())
