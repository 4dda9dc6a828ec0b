"""Sampling cost of IP-Adapters: no adapter vs one vs two (tiny SD1.5, tiny random adapters, ViT-L encoder).

The adapters are applied once (encoding the guide images is not sampling); then the three models sample in
alternation, same seed and steps, with CFG (the adapters attend for the conditional and the unconditional rows),
and the medians are printed side by side with their ratios. Optional: the same on the tiny FLUX (no CFG).
Not a test; a figure. Needs ComfyUI (COMFYUI_PATH). Writes benchmarks/results/ip_adapter.json.

    flock /tmp/heavy.lock ~/.cache/imageinference-nodes/venv/bin/python benchmarks/ip_adapter.py [runs] [--flux]
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


def _setup():
    from imageinference.comfyui.runtime import use_inprocess_comfyui
    from imageinference.testing.tiny_ipadapter import catalog_entries, ensure_tiny_ipadapters
    from imageinference.testing.tiny_models import ensure_tiny_models

    use_inprocess_comfyui()
    root = ensure_tiny_models(["sd15", "flux"])
    ensure_tiny_ipadapters(["clip_vision_vitl", "ipadapter_sd15", "ipadapter_sd15_plus", "ipadapter_flux"], root)
    import folder_paths

    for folder in ("checkpoints", "ipadapter", "clip_vision"):
        folder_paths.add_model_folder_path(folder, str(root / folder), is_default=True)
    tmp = Path(tempfile.mkdtemp(prefix="ii-bench-"))
    (tmp / "catalog.json").write_text(json.dumps({"models": {
        "bench:sd15@1": {"kind": "checkpoint", "architecture": "sd-1-5",
                         "files": {"model": "checkpoints/tiny_sd15.safetensors"}},
        **catalog_entries("bench")}}))
    os.environ["IMAGEINFERENCE_CATALOG"] = str(tmp / "catalog.json")
    return root


def _time(models: dict, sample, runs: int) -> dict[str, float]:
    times: dict[str, list[float]] = {name: [] for name in models}
    for m in models.values():
        sample(m)  # warm-up
    for _ in range(runs):
        for name, m in models.items():
            t = time.perf_counter()
            sample(m)
            times[name].append(time.perf_counter() - t)
    return {name: statistics.median(v) for name, v in times.items()}


def _report(label: str, med: dict[str, float], runs: int, extra: dict, figures: dict, details: dict) -> None:
    base = med["none"]
    row = {"benchmark": f"ip_adapter_{label}", "runs": runs, **extra,
           **{f"{k}_median_s": round(v, 3) for k, v in med.items()},
           **{f"ratio_{k}_over_none": round(v / base, 3) for k, v in med.items() if k != "none"}}
    print(f"{label}: sampling median of {runs}: " + ", ".join(
        f"{k} {v:.3f} s" + ("" if k == "none" else f" (x{v / base:.2f})") for k, v in med.items()))
    print(json.dumps(row))
    figures.update({f"{label}_{k}": v for k, v in row.items() if k.endswith("_s") or k.startswith("ratio_")})
    details[label] = row


def main(runs: int = 5, flux: bool = False, size: int = 128, steps: int = 8) -> None:
    root = _setup()
    import comfy.sample
    import nodes
    import torch

    from imageinference.comfyui.nodes.model_loader import AIRModelLoader
    from imageinference.engines.ipadapter.apply import AdapterOptions, apply_ip_adapter
    from imageinference.engines.models.catalog import Catalog

    catalog = Catalog.load()
    figures: dict = {}
    details: dict = {}
    g = torch.Generator().manual_seed(0)
    guides = [torch.rand(1, 224, 224, 3, generator=g), torch.rand(1, 224, 224, 3, generator=g)]
    model, clip, _vae = AIRModelLoader.execute("bench:sd15@1").result
    pos = nodes.CLIPTextEncode().encode(clip, "a lighthouse")[0]
    neg = nodes.CLIPTextEncode().encode(clip, "blurry")[0]
    one = apply_ip_adapter(model, guides[:1], AdapterOptions("bench:ipadapter-sd15@1", 0.7), catalog)
    two = apply_ip_adapter(one, guides[1:], AdapterOptions("bench:ipadapter-sd15@plus", 0.5), catalog)

    def sample_sd(m):
        latent = torch.zeros(1, 4, size // 8, size // 8)
        noise = comfy.sample.prepare_noise(latent, 7)
        return comfy.sample.sample(m, noise, steps, 6.0, "euler", "normal", pos, neg, latent, seed=7,
                                   disable_pbar=True)

    _report("sd15", _time({"none": model, "one": one, "two": two}, sample_sd, runs), runs,
            {"size": size, "steps": steps, "cfg": 6.0, "adapters": "plain (4 tokens) + plus (16 tokens)"}, figures,
            details)
    if not flux:
        write_results("ip_adapter", figures, details)
        return
    import comfy.sd

    from imageinference.testing.tiny_models import TINY

    fmodel = comfy.sd.load_diffusion_model(str(TINY["flux"].path(root)))
    fone = apply_ip_adapter(fmodel, guides[:1], AdapterOptions("bench:ipadapter-flux@1", 0.7), catalog)
    ftwo = apply_ip_adapter(fone, guides[1:], AdapterOptions("bench:ipadapter-flux@1", 0.5), catalog)
    cg = torch.Generator().manual_seed(1)
    cond = [[torch.randn(1, 6, 4096, generator=cg), {"pooled_output": torch.randn(1, 768, generator=cg),
                                                     "guidance": 3.5}]]

    def sample_flux(m):
        latent = torch.zeros(1, 16, size // 8, size // 8)
        noise = comfy.sample.prepare_noise(latent, 7)
        return comfy.sample.sample(m, noise, 4, 1.0, "euler", "simple", cond, cond, latent, seed=7, disable_pbar=True)

    _report("flux", _time({"none": fmodel, "one": fone, "two": ftwo}, sample_flux, runs), runs,
            {"size": size, "steps": 4, "cfg": 1.0, "adapters": "XLabs layout, 1 double block"}, figures, details)
    write_results("ip_adapter", figures, details)


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    main(int(args[0]) if args else 5, "--flux" in sys.argv)
