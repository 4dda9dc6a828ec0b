"""Our compel-syntax parser beside compel's own (pyparsing) parser: import time, one typical prompt, and how each
copes with unclosed brackets (compel's time grows several-fold with each one). Side by side in one run.

compel's parser module is loaded by itself (its package imports torch and diffusers); the package import is timed
too, in fresh processes, since that is what a pack that depends on compel pays at start-up.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

from common import write_results

from imageinference.engines.prompting.parse import parse_compel

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "unit" / "data"))
from make_compel_readings import compel_parser  # noqa: E402 (the tests' loader of compel's parser module)

TYPICAL = "a (glass house)1.2 on a cliff++, (fog, rain)-, golden hour, \"soft light\"+, 35mm, (film grain)0.8"


def median_time(fn, runs: int) -> float:
    samples = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t)
    return statistics.median(samples)


def import_time(module: str, runs: int = 3) -> float:
    code = f"import time; t = time.perf_counter(); import {module}; print(time.perf_counter() - t)"
    return statistics.median(float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                                  check=True, cwd=ROOT).stdout.strip()) for _ in range(runs))


def main() -> None:
    cp = compel_parser()
    parser = cp.PromptParser()
    figures: dict[str, float | int] = {
        "import_compel_s": round(import_time("compel"), 2),
        "import_ours_s": round(import_time("imageinference.engines.prompting.parse"), 3),
        "typical_compel_ms": round(median_time(lambda: parser.parse_conjunction(TYPICAL), 20) * 1e3, 1),
        "typical_ours_ms": round(median_time(lambda: parse_compel(TYPICAL), 200) * 1e3, 3),
    }
    for n in (3, 4, 5, 6):
        text = "(" * n + "a cat"
        figures[f"unclosed_{n}_compel_s"] = round(median_time(lambda text=text: parser.parse_conjunction(text), 1), 2)
    deep, unclosed = "(" * 3300 + "a cat" + ")" * 3300, "(" * 3300 + "a cat"
    figures["nested_3300_ours_ms"] = round(median_time(lambda: parse_compel(deep), 5) * 1e3, 1)
    figures["unclosed_3300_ours_ms"] = round(median_time(lambda: parse_compel(unclosed), 5) * 1e3, 1)
    for key, value in figures.items():
        print(f"{key}: {value}")
    write_results("prompt_parsing", figures, notes=f"typical prompt: {TYPICAL}")


if __name__ == "__main__":
    main()
