"""Face detailer: cost per detailed face beside Impact Pack's FaceDetailer, and how close their pixels are.

One real ComfyUI server holds both node packs (Impact Pack installed from its vendored archive into the server's
throwaway custom_nodes/, as tests/server/test_face_detailer_vs_impact.py does) and the tiny SD1.5 checkpoint. Both
detail the same 320-pixel pictures with 0, 1, 2 and 4 faces found by the same tiny detector, with the settings
mapped one to one (the test's table; here inpaintSize / guide_size 400, so each face is sampled at 400 x 400, 4x its
100-pixel crop, with `steps` steps). Runs alternate between the two; each run has its own seed, so ComfyUI's
cache never answers. A run's time is ComfyUI's own, from its execution_start to execution_success events: the
detailer node and a tensor save, nothing of HTTP. Cost per face is the slope of the median time over the number of
faces (least squares), the fixed cost its intercept (detection).

The agreement figures compare the two outputs on the pixels both paste at full weight (the faces' boxes): with our
float Lanczos, with ComfyUI's 8-bit Lanczos swapped in for ours (Impact's resize), and two controls that show what a
real difference looks like: the second face sampled with the image's seed (seedPerRegion off) and a crop one
pixel smaller on each side. Not a test; figures for docs/face-detailer.md.

    flock /tmp/heavy.lock ~/.cache/imageinference-nodes/venv/bin/python benchmarks/face_detailer.py [runs] [steps]
"""

from __future__ import annotations

import json
import math
import shutil
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from common import write_results  # noqa: E402

SIZE = 320
FACES = ((5, 5, 1.0), (13, 13, 0.95), (13, 5, 0.9), (5, 13, 0.85))
COUNTS = (0, 1, 2, 4)
PAD, BLUR, CONTEXT = 4, 4, 25
FRAC = "bbox/tiny_face_cells_frac.pt"


def settings(steps: int, work: int) -> tuple[dict[str, Any], dict[str, Any]]:
    ours = {"confidence": 0.5, "maskPadding": PAD, "maskBlur": BLUR, "inpaintSize": work, "steps": steps,
            "CFGScale": 5.0, "strength": 0.5, "scheduler": "Euler", "contextPadding": CONTEXT, "minRegionSize": 10,
            "detector": FRAC}
    impact = {"bbox_threshold": 0.5, "bbox_dilation": 2 * PAD + 1, "feather": BLUR, "guide_size": float(work),
              "guide_size_for": False, "max_size": float(work), "steps": steps, "cfg": 5.0, "denoise": 0.5,
              "sampler_name": "euler", "scheduler": "normal", "bbox_crop_factor": 3.0, "drop_size": 10,
              "noise_mask": True, "noise_mask_feather": 0, "force_inpaint": True, "cycle": 1, "inpaint_model": False,
              "wildcard": "", "sam_detection_hint": "center-1", "sam_dilation": 0, "sam_threshold": 0.93,
              "sam_bbox_expansion": 0, "sam_mask_hint_threshold": 0.7, "sam_mask_hint_use_negative": "False"}
    return ours, impact


def base_graph(picture: str) -> dict[str, Any]:
    return {"1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny_sd15.safetensors"}},
            "2": {"class_type": "LoadImage", "inputs": {"image": picture}},
            "3": {"class_type": "UltralyticsDetectorProvider", "inputs": {"model_name": FRAC}},
            "4": {"class_type": "CLIPTextEncode", "inputs": {"text": "a detailed face", "clip": ["1", 1]}},
            "5": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["1", 1]}}}


def detail_node(which: str, seed: int, ours: dict[str, Any], impact: dict[str, Any],
                image: list[Any] | None = None) -> dict[str, Any]:
    common = {"image": image or ["2", 0], "model": ["1", 0], "vae": ["1", 2], "positive": ["4", 0],
              "negative": ["5", 0], "seed": seed}
    if which == "ours":
        return {"class_type": "ImageInferenceFaceDetailer", "inputs": {**ours, **common}}
    return {"class_type": "FaceDetailer", "inputs": {**impact, **common, "clip": ["1", 1], "bbox_detector": ["3", 0]}}


def timed(server: Any, graph: dict[str, Any]) -> float:
    result = server.run_prompt(graph)
    if not result.ok:
        raise RuntimeError(f"{result.errors}\n{server.log_tail()}")
    stamps = {kind: data.get("timestamp") for kind, data in result.messages}
    return (stamps["execution_success"] - stamps["execution_start"]) / 1000.0


def slope(xs: list[int], ys: list[float]) -> tuple[float, float]:
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum((x - mx) ** 2 for x in xs)
    return b, my - b * mx


def start_server(base: Path) -> Any:
    import numpy as np
    from PIL import Image

    from imageinference.comfyui.server_process import ComfyServer
    from imageinference.testing import peers
    from imageinference.testing.tiny_detector import (
        DETECTORS,
        detector_path,
        ensure_tiny_detectors,
        face_image,
    )
    from imageinference.testing.tiny_models import ensure_tiny_models, link_models

    root = ensure_tiny_models(["sd15"])
    ensure_tiny_detectors(root)
    server = ComfyServer(base)
    server.prepare()
    peers.install_impact_pack(base / "custom_nodes")
    (base / "custom_nodes" / "ii_test_nodes").mkdir()
    shutil.copy(ROOT / "tests" / "server" / "server_test_nodes.py",
                base / "custom_nodes" / "ii_test_nodes" / "__init__.py")
    link_models(root, server.models_dir, ["sd15"])
    for kind, (sub, name) in DETECTORS.items():
        dest = server.models_dir / "ultralytics" / sub / name
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.symlink_to(detector_path(kind, root))
    for n in COUNTS:
        pixels = (face_image(SIZE, FACES[:n], 0)[0].numpy() * 255).round().astype(np.uint8)
        Image.fromarray(pixels).save(base / "input" / f"faces{n}.png")
    server.start()
    return server


def agreement(server: Any, base: Path, ours: dict[str, Any], impact: dict[str, Any]) -> dict[str, float]:
    """Max and mean |ours - Impact| on the faces' boxes, for our float resize, Impact's 8-bit one, and controls."""
    import safetensors.torch

    from imageinference.testing.tiny_detector import fractional_box

    boxes = []
    for col, row, _level in FACES[:2]:
        x0, y0, x1, y1 = fractional_box(SIZE, col, row)
        boxes.append((math.floor(x0), math.floor(y0), math.ceil(x1), math.ceil(y1)))

    def run(name: str, our_extra: dict[str, Any], eight_bit: bool | None = None) -> Any:
        g = base_graph("faces2.png")
        image: list[Any] = ["2", 0]
        if eight_bit is not None:
            g["30"] = {"class_type": "IITestEightBitResize", "inputs": {"image": ["2", 0], "eight_bit": eight_bit}}
            image = ["30", 0]
        g["10"] = detail_node("impact", 7, ours, impact)
        g["20"] = detail_node("ours", 7, {**ours, **our_extra}, impact, image)
        g["11"] = {"class_type": "IITestSaveTensor", "inputs": {"name": "impact", "images": ["10", 0]}}
        g["21"] = {"class_type": "IITestSaveTensor", "inputs": {"name": name, "images": ["20", 0]}}
        timed(server, g)
        load = safetensors.torch.load_file
        return (load(str(base / "output" / "tensors" / "impact.safetensors"))["images"][0],
                load(str(base / "output" / "tensors" / f"{name}.safetensors"))["images"][0])

    def stats(a: Any, b: Any, which: list[int]) -> tuple[float, float]:
        diffs = [(a[y0:y1, x0:x1] - b[y0:y1, x0:x1]).abs() for i, (x0, y0, x1, y1) in enumerate(boxes) if i in which]
        return max(float(d.max()) for d in diffs), statistics.fmean(float(d.mean()) for d in diffs)

    figures: dict[str, float] = {}
    a, b = run("float", {})
    figures["max_diff_float"], figures["mean_diff_float"] = stats(a, b, [0, 1])
    try:
        a, b = run("eight", {}, eight_bit=True)
        figures["max_diff_8bit"], figures["mean_diff_8bit"] = stats(a, b, [0, 1])
    finally:
        run("restore", {}, eight_bit=False)
    a, b = run("sameseed", {"seedPerRegion": False})
    figures["max_diff_same_seed_face2"], figures["mean_diff_same_seed_face2"] = stats(a, b, [1])
    a, b = run("smallcrop", {"contextPadding": CONTEXT - 1})
    figures["max_diff_crop_1px_smaller"], figures["mean_diff_crop_1px_smaller"] = stats(a, b, [0, 1])
    return {k: round(v, 4) for k, v in figures.items()}


def main(runs: int = 3, steps: int = 6, work: int = 400) -> None:
    import torch

    ours, impact = settings(steps, work)
    base = Path(tempfile.mkdtemp(prefix="ii-bench-fd-"))
    server = start_server(base)
    try:
        seed = 100
        for which in ("ours", "impact"):  # warm-up: model loads, ultralytics, kernels
            g = base_graph("faces1.png")
            g["10"] = detail_node(which, seed, ours, impact)
            g["11"] = {"class_type": "IITestSaveTensor", "inputs": {"name": "warm", "images": ["10", 0]}}
            timed(server, g)
            seed += 1
        times: dict[str, dict[int, list[float]]] = {"ours": {n: [] for n in COUNTS}, "impact": {n: [] for n in COUNTS}}
        for _ in range(runs):
            for n in COUNTS:
                for which in ("ours", "impact"):
                    g = base_graph(f"faces{n}.png")
                    g["10"] = detail_node(which, seed, ours, impact)
                    g["11"] = {"class_type": "IITestSaveTensor", "inputs": {"name": "bench", "images": ["10", 0]}}
                    times[which][n].append(timed(server, g))
                    seed += 1
        medians = {w: {n: statistics.median(v) for n, v in t.items()} for w, t in times.items()}
        fits = {w: slope(list(COUNTS), [m[n] for n in COUNTS]) for w, m in medians.items()}
        agree = agreement(server, base, ours, impact)
    finally:
        server.stop()
    figures: dict[str, Any] = {
        "per_face_ours_s": round(fits["ours"][0], 3), "per_face_impact_s": round(fits["impact"][0], 3),
        "per_face_ratio": round(fits["ours"][0] / fits["impact"][0], 3),
        "fixed_ours_s": round(fits["ours"][1], 3), "fixed_impact_s": round(fits["impact"][1], 3),
        "four_faces_ours_s": round(medians["ours"][4], 3), "four_faces_impact_s": round(medians["impact"][4], 3),
        "steps": steps, "work_size": work, "runs": runs, **agree}
    print(f"tiny SD1.5, {SIZE}x{SIZE} pictures, faces sampled at {work}x{work}, {steps} steps, median of {runs} "
          f"(torch threads {torch.get_num_threads()}):")
    for n in COUNTS:
        print(f"  {n} face(s): ours {medians['ours'][n]:7.3f} s   Impact {medians['impact'][n]:7.3f} s")
    print(f"  per face: ours {fits['ours'][0]:.3f} s, Impact {fits['impact'][0]:.3f} s "
          f"(x{figures['per_face_ratio']:.2f}); fixed: ours {fits['ours'][1]:.3f} s, Impact {fits['impact'][1]:.3f} s")
    print("  agreement on the faces' boxes:", json.dumps(agree))
    write_results("face_detailer", figures, details={"medians_s": medians, "times_s": times},
                  notes="ComfyUI's execution_start..execution_success per prompt; one server, both node packs")


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:4]))
