"""The README's two commands on a fresh machine, timed: a clean clone of this repository, HOME pointing to an empty
folder (no ComfyUI, no virtual environment, no tiny models, no pip cache), then `bash scripts/main.sh` and
`bash scripts/test.sh`, as the README says. Records each command's wall time, whether it succeeded, and the test
run's counts (passed, and per ComfyUI layer). Takes as long as a first set-up plus the whole suite.

    ~/.cache/imageinference-nodes/venv/bin/python benchmarks/setup_time.py
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import write_results

ROOT = Path(__file__).resolve().parents[1]


def run(command: list[str], cwd: Path, env: dict[str, str], log: Path) -> tuple[float, int, str]:
    started = time.perf_counter()
    with log.open("w") as out:
        code = subprocess.run(command, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT).returncode
    return time.perf_counter() - started, code, log.read_text()


def main() -> None:
    archive = os.environ.get("COMFYUI_ARCHIVE") or next(
        (str(p) for p in sorted((ROOT.parent / "shared" / "vendor").glob("ComfyUI-0.8.0-*.tar.gz"))), "")
    with tempfile.TemporaryDirectory(prefix="setup-time-") as tmp:
        home, clone = Path(tmp) / "home", Path(tmp) / "clone"
        home.mkdir()
        subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("IMAGEINFERENCE_", "COMFYUI_", "VIRTUAL_ENV"))}
        env.update(HOME=str(home), COMFYUI_ARCHIVE=archive, PATH=os.environ.get("PATH", ""))
        main_s, main_rc, _ = run(["bash", "scripts/main.sh"], clone, env, Path(tmp) / "main.log")
        # exactly the README's command: without arguments it runs the suite on its parallel workers
        test_s, test_rc, test_log = run(["bash", "scripts/test.sh"], clone, env, Path(tmp) / "test.log")
        for name in ("main.log", "test.log"):
            (ROOT / "benchmarks" / "results" / f"setup_time_{name}").write_text((Path(tmp) / name).read_text()[-20000:])
    passed = re.findall(r"(\d+) passed", test_log)
    layers = re.search(r"ComfyUI layers ran: (\d+) in-process and (\d+) server", test_log)
    browser = re.search(r"Browser layer ran: (\d+)", test_log)
    figures = {"main_sh_s": round(main_s), "main_sh_ok": main_rc == 0, "test_sh_s": round(test_s),
               "test_sh_ok": test_rc == 0, "tests_passed": int(passed[-1]) if passed else 0,
               "in_process_passed": int(layers.group(1)) if layers else 0,
               "server_passed": int(layers.group(2)) if layers else 0,
               "browser_passed": int(browser.group(1)) if browser else 0}
    print(figures)
    write_results("setup_time", figures, notes="clean clone, empty HOME, COMFYUI_ARCHIVE set; logs: "
                  "benchmarks/results/setup_time_main.log, setup_time_test.log (their last 20,000 characters)")
    sys.exit(0 if main_rc == 0 and test_rc == 0 else 1)


if __name__ == "__main__":
    main()
