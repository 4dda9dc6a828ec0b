"""The pack's AIR Model Loader + Image Inference vs core CheckpointLoaderSimple + KSampler + VAEDecode.

Same tiny SD1.5 checkpoint, seed, sampler and schedule; alternated runs in one process, medians printed side by
side with whether the pixels are equal. Not a test; a figure. Needs ComfyUI (COMFYUI_PATH).
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from common import write_results


def main(runs: int = 5, size: int = 128, steps: int = 8) -> None:
    from imageinference.comfyui.runtime import use_inprocess_comfyui
    from imageinference.testing.tiny_models import ensure_tiny_models, link_models

    use_inprocess_comfyui()
    root = ensure_tiny_models(["sd15"])
    tmp = Path(tempfile.mkdtemp(prefix="ii-bench-"))
    link_models(root, tmp / "models", ["sd15"])
    (tmp / "catalog.json").write_text(json.dumps({"models": {"bench:sd15@1": {
        "kind": "checkpoint", "architecture": "sd-1-5", "files": {"model": "checkpoints/tiny_sd15.safetensors"}}}}))
    os.environ["IMAGEINFERENCE_CATALOG"] = str(tmp / "catalog.json")
    import folder_paths
    import nodes
    import torch

    folder_paths.add_model_folder_path("checkpoints", str(tmp / "models" / "checkpoints"), is_default=True)
    from imageinference.comfyui.nodes.image_inference import ImageInference
    from imageinference.comfyui.nodes.model_loader import AIRModelLoader

    def core():
        model, clip, vae = nodes.CheckpointLoaderSimple().load_checkpoint("tiny_sd15.safetensors")[:3]
        pos = nodes.CLIPTextEncode().encode(clip, "a lighthouse")[0]
        neg = nodes.CLIPTextEncode().encode(clip, "blurry")[0]
        latent = nodes.EmptyLatentImage().generate(size, size, 1)[0]
        out = nodes.common_ksampler(model, 7, steps, 7.0, "dpmpp_2m", "karras", pos, neg, latent)[0]
        return nodes.VAEDecode().decode(vae, out)[0]

    def ours():
        model, clip, vae = AIRModelLoader.execute("bench:sd15@1").result
        pos = nodes.CLIPTextEncode().encode(clip, "a lighthouse")[0]
        neg = nodes.CLIPTextEncode().encode(clip, "blurry")[0]
        return ImageInference.execute(model, vae, pos, neg, size, size, 7, steps, "DPM++ 2M Karras", 7.0, 1, 0.8,
                                      0).result[0]

    times: dict[str, list[float]] = {"core": [], "pack": []}
    images = {}
    core(), ours()  # warm-up: file cache, kernels
    for _ in range(runs):
        for name, fn in (("core", core), ("pack", ours)):
            t = time.perf_counter()
            images[name] = fn()
            times[name].append(time.perf_counter() - t)
    med = {k: statistics.median(v) for k, v in times.items()}
    row = {"benchmark": "sampler_vs_core", "runs": runs, "size": size, "steps": steps,
           "core_median_s": round(med["core"], 3), "pack_median_s": round(med["pack"], 3),
           "time_ratio_pack_over_core": round(med["pack"] / med["core"], 3),
           "pixels_equal": bool(torch.equal(images["core"], images["pack"]))}
    print(f"load + encode + sample + decode, {size}x{size}, {steps} steps, median of {runs}: core {row['core_median_s']} s, "
          f"pack {row['pack_median_s']} s (x{row['time_ratio_pack_over_core']}); pixels equal: {row['pixels_equal']}")
    print(json.dumps(row))
    write_results("sampler_vs_core", {k: v for k, v in row.items() if k != "benchmark"})


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 5)
