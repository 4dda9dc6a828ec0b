"""The parts benchmarks share. Results: benchmarks/results/<name>.json, committed, so every figure in the docs can be checked.

Each file records the machine, the date, the commit and the command that made it, and a flat mapping of named
figures. The docs quote a figure with a marker right after it, `46<!-- figure: step_caches.dominated -->`, and
tests/unit/test_doc_figures.py checks that every marked number equals the one in its results file.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {"platform": platform.platform(), "machine": platform.machine(),
                            "cpus": os.cpu_count(), "python": platform.python_version()}
    try:
        with open("/proc/cpuinfo") as fh:
            model = next((line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")), None)
        if model:
            info["cpu"] = model
    except OSError:
        pass
    torch = sys.modules.get("torch")
    if torch is not None:
        info["torch"] = torch.__version__
    return info


def commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True,
                             cwd=RESULTS.parent, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "imageinference", "benchmarks"],
                               capture_output=True, text=True, cwd=RESULTS.parent).stdout.strip()
        return out + ("+uncommitted" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def write_results(name: str, figures: dict[str, Any], details: Any = None, command: list[str] | None = None,
                  notes: str = "") -> Path:
    """Write benchmarks/results/<name>.json. `figures`: the flat, named numbers the docs may quote; `details`:
    anything else worth keeping (rows, per-setting tables)."""
    for key, value in figures.items():
        if not isinstance(value, (int, float, str, bool)):
            raise TypeError(f"figure {key!r} must be a number, string or bool, not {type(value).__name__}")
    argv = command if command is not None else [Path(sys.argv[0]).as_posix().split("/benchmarks/")[-1], *sys.argv[1:]]
    record = {
        "benchmark": name,
        "command": " ".join(["python", "benchmarks/" + argv[0] if not argv[0].startswith("benchmarks/") else argv[0],
                             *argv[1:]]),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "commit": commit(),
        "machine": machine(),
        "notes": notes,
        "figures": figures,
        "details": details,
    }
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(record, indent=1, sort_keys=False) + "\n")
    print(f"[results] {path.relative_to(RESULTS.parent.parent)}", file=sys.stderr)
    return path


# ---------------------------------------------------------------- step caches and DeepCache
# Shared by benchmarks/step_caches.py and benchmarks/deep_cache.py (their models: cache_scenarios.py and
# train_flow.py, modules that are not scripts).

CORE_WINDOW = (0.15, 0.95)
"""(start_percent, end_percent): the default window of ComfyUI's EasyCache and LazyCache nodes."""


def decoded_psnr(a: Any, b: Any) -> float:
    """PSNR (dB) of two decoded images in [0, 1] as 8-bit pixels; inf when they are the same image."""
    import math

    import torch

    qa, qb = torch.round(a.clamp(0, 1) * 255), torch.round(b.clamp(0, 1) * 255)
    mse = ((qa - qb) ** 2).mean().item()
    return float("inf") if mse == 0 else 10 * math.log10(255.0 ** 2 / mse)


def db(x: float) -> float | None:
    """A PSNR for a results file: None for an identical image (no finite PSNR), else rounded to 0.01 dB."""
    import math

    return None if math.isinf(x) else round(x, 2)


def core_cache(model: Any, kind: str, threshold: float, window: tuple[float, float] = CORE_WINDOW) -> Any:
    """ComfyUI's own EasyCache ("easycache"; "easycache-copied": with a copy of the model input, since as shipped
    it adds its cached difference into that tensor in place) or LazyCache ("lazycache") on `model`."""
    import comfy.patcher_extension
    from comfy_extras.nodes_easycache import EasyCacheNode, LazyCacheNode

    if kind == "lazycache":
        return LazyCacheNode.execute(model, threshold, *window, False).result[0]
    m = EasyCacheNode.execute(model, threshold, *window, False).result[0]
    if kind == "easycache-copied":
        def copy_input(executor: Any, *args: Any, **kwargs: Any) -> Any:
            return executor(args[0].clone(), *args[1:], **kwargs)
        inner = m.clone()
        dm = comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL
        # the first key is the outermost wrapper: copy the input before EasyCache sees (and edits) it
        inner.wrappers[dm] = {"copy_input": [copy_input], **inner.wrappers[dm]}
        return inner
    return m
