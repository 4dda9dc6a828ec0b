"""Face detailer cost against the base generation at the same size, side by side in one process.

Tiny SD1.5 and the tiny cell detector (imageinference/testing/tiny_detector.py). The base generation is the Image
Inference sampler, text to image at S x S (a multiple of 64); the detail passes run the Face Detailer node with inpaintSize = S and
the same steps on an S x S picture with one or two faces: at strength 1 (every step runs, the same sampling work as
the base at the same size) and at the request default 0.3; plus detection alone (detector load + predict) and a
picture with no face. Runs alternate; medians and ratios to the base are printed. Not a test; a figure.

    flock /tmp/imageinference-heavy.lock ~/.cache/imageinference-nodes/venv/bin/python benchmarks/face_detailer.py
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def main(runs: int = 3, size: int = 320, steps: int = 6) -> None:
    from imageinference.comfyui.runtime import use_inprocess_comfyui
    from imageinference.testing.tiny_detector import (
        DETECTORS,
        detector_path,
        ensure_tiny_detectors,
        face_image,
    )
    from imageinference.testing.tiny_models import ensure_tiny_models, link_models

    use_inprocess_comfyui()
    root = ensure_tiny_models(["sd15"])
    ensure_tiny_detectors(root)
    tmp = Path(tempfile.mkdtemp(prefix="ii-bench-fd-"))
    link_models(root, tmp / "models", ["sd15"])
    sub, name = DETECTORS["bbox"]
    (tmp / "models" / "ultralytics" / sub).mkdir(parents=True)
    (tmp / "models" / "ultralytics" / sub / name).symlink_to(detector_path("bbox", root))
    (tmp / "catalog.json").write_text(json.dumps({"models": {
        "bench:sd15@1": {"kind": "checkpoint", "architecture": "sd-1-5",
                         "files": {"model": "checkpoints/tiny_sd15.safetensors"}},
        "runware:35@1": {"kind": "detector", "files": {"model": f"ultralytics/{sub}/{name}"}}}}))
    os.environ["IMAGEINFERENCE_CATALOG"] = str(tmp / "catalog.json")
    import folder_paths
    import nodes
    import torch

    folder_paths.add_model_folder_path("checkpoints", str(tmp / "models" / "checkpoints"), is_default=True)
    folder_paths.add_model_folder_path("ultralytics", str(tmp / "models" / "ultralytics"), is_default=True)
    from imageinference.comfyui.nodes.face_detailer import FaceDetailer
    from imageinference.comfyui.nodes.image_inference import ImageInference
    from imageinference.comfyui.nodes.model_loader import AIRModelLoader
    from imageinference.engines.detailer.detector import detect, load_detector, resolve_detector

    model, clip, vae = AIRModelLoader.execute("bench:sd15@1").result
    pos = nodes.CLIPTextEncode().encode(clip, "a portrait")[0]
    neg = nodes.CLIPTextEncode().encode(clip, "blurry")[0]
    one = face_image(size, ((5, 5, 1.0),))  # 20 x 20 detector cells; aligned to pixels when size is 320
    two = face_image(size, ((5, 5, 1.0), (14, 13, 1.0)))
    none = face_image(size, ())

    def base() -> Any:
        return ImageInference.execute(model, vae, pos, neg, size, size, 7, steps, "Euler", 7.0, 1, 0.8, 0).result[0]

    def detailer(image: Any, strength: float) -> Callable[[], Any]:
        def run() -> Any:
            return FaceDetailer.execute(image, model, vae, pos, neg, "runware:35@1", 0.5, 5, 5, size, steps, 7.0,
                                        strength, "Euler", 7).result
        return run

    def detection() -> Any:
        return detect(load_detector(resolve_detector("runware:35@1")), one[0], 0.5)

    cases: dict[str, Callable[[], Any]] = {
        "base txt2img": base, "detail 1 face, strength 1": detailer(one, 1.0),
        "detail 2 faces, strength 1": detailer(two, 1.0), "detail 1 face, strength 0.3": detailer(one, 0.3),
        "no face (detection only)": detailer(none, 0.3), "detector load + predict": detection}
    faces = {k: json.loads(fn()[2])["images"][0]["faces"] for k, fn in cases.items() if k.startswith(("detail", "no"))}
    for fn in cases.values():  # warm-up: file cache, kernels, ultralytics imports
        fn()
    times: dict[str, list[float]] = {k: [] for k in cases}
    for _ in range(runs):
        for key, fn in cases.items():
            t = time.perf_counter()
            fn()
            times[key].append(time.perf_counter() - t)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"tiny SD1.5, {size}x{size}, inpaintSize {size}, {steps} steps, median of {runs} (torch threads "
          f"{torch.get_num_threads()}):")
    for key, value in med.items():
        found = f"  faces detailed: {faces[key]}" if key in faces else ""
        print(f"  {key:<30} {value:7.3f} s   x{value / med['base txt2img']:.2f} of the base{found}")
    row = {"benchmark": "face_detailer", "runs": runs, "size": size, "steps": steps,
           **{k: round(v, 3) for k, v in med.items()},
           "ratio_detail1_strength1_over_base": round(med["detail 1 face, strength 1"] / med["base txt2img"], 3)}
    print(json.dumps(row))


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:4]))
