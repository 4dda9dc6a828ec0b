"""IP-Adapter against the peers users run, setting by setting: cubiq's ComfyUI_IPAdapter_plus (SD1.5, SDXL) and
XLabs' x-flux-comfyui (FLUX), on the same tiny weights, inputs, noise and seeds (imageinference/testing/
ipadapter_peers.py; the tests in tests/comfy/test_ip_adapter_vs_*.py assert the same comparisons).

Writes benchmarks/results/ip_adapter_vs_peers.json: for SD1.5 and SDXL the number of settings compared and how
many are bit-identical, and the PSNR of each setting (inf = identical); `middleBlock` on against cubiq's node; for
FLUX the relative L2 difference of the sampled latents without adapter and of the adapter's effect (latent with
it minus without it) at each weight and CFG, ours against XLabs', and the same for the K+V reading.
Not a test; figures. Needs ComfyUI (COMFYUI_PATH) and the peers' archives (IMAGEINFERENCE_PEERS).

    flock /tmp/heavy.lock ~/.cache/imageinference-nodes/venv/bin/python benchmarks/ip_adapter_vs_peers.py
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from common import db, write_results


def sd_cases(base: str) -> list:
    from imageinference.engines.ipadapter.options import COMBINE_METHODS, EMBED_SCALINGS, WEIGHT_TYPES
    from imageinference.testing.ipadapter_peers import Setting

    projections = ("plain", "light", "plus", "full-face", "vit-g") if base == "sd15" else ("plain", "vit-g", "plus")
    images = 3 if base == "sd15" else 2
    return [
        *((name, Setting()) for name in projections),
        *(("plain", Setting(weight_type=t, composition=0.4 if "composition" in t else None)) for t in WEIGHT_TYPES),
        *((name, Setting(weight=0.6, embed_scaling=e)) for name in ("plain", "plus") for e in EMBED_SCALINGS),
        *((name, Setting(combine=m, images=images if name == "plain" else 2)) for name in ("plain", "plus")
          for m in COMBINE_METHODS),
        *((name, Setting(embed_scaling="k_mean_v_penalty_c", images=images if name == "plain" else 2))
          for name in ("plain", "plus")),
        *(("plain", Setting(weight=w)) for w in (0.0, 1.0, -1.0, 2.0)),
        *(("vit-g", Setting(weight=w, embed_scaling="only_v")) for w in (-1.0, 2.0)),
    ]


def compare_sd(base: str, workdir: Path) -> tuple[dict, list]:
    import comfy.sd
    import nodes
    import torch

    from imageinference.testing import ipadapter_peers as ip
    from imageinference.testing.photos import long_prompt
    from imageinference.testing.tiny_models import TINY, ensure_tiny_models

    cubiq = ip.Cubiq(workdir / "peers")
    model, adapters = ip.sd_setup(workdir / base, base)
    if base == "sd15":
        clip = comfy.sd.load_checkpoint_guess_config(str(TINY["sd15"].path(ensure_tiny_models(["sd15"]))),
                                                     output_vae=False, output_clip=True)[1]
        pos = nodes.CLIPTextEncode().encode(clip, long_prompt(600, 1))[0]
        neg = nodes.CLIPTextEncode().encode(clip, long_prompt(200, 2))[0]
    else:
        g = torch.Generator().manual_seed(31)
        pos, neg = ([[torch.randn(1, 77, 2048, generator=g), {"pooled_output": torch.randn(1, 1280, generator=g)}]]
                    for _ in range(2))
    photos = ip.guide_photos(3)
    rows = []
    for name, s in sd_cases(base):
        theirs, ours = ip.side_by_side(cubiq, model, pos, neg, adapters[name], photos, s)
        rows.append({"adapter": name, "setting": s.label, "identical": bool(torch.equal(ours, theirs)),
                     "psnr_db": db(ip.psnr(ours, theirs))})
        print(f"{base} {name} {s.label}: {'identical' if rows[-1]['identical'] else rows[-1]['psnr_db']}", flush=True)
    middle = []
    for weight_type in ("normal", "ease_in_out", "style_transfer"):
        s = ip.Setting(weight_type=weight_type, middle_block=True)
        theirs, ours = ip.side_by_side(cubiq, model, pos, neg, adapters["plain"], photos, s)
        middle.append({"weight_type": weight_type, "identical": bool(torch.equal(ours, theirs)),
                       "psnr_db": db(ip.psnr(ours, theirs))})
    figures = {f"{base}_settings": len(rows), f"{base}_bit_identical": sum(r["identical"] for r in rows),
               f"{base}_middle_on_normal_psnr_db": middle[0]["psnr_db"],
               f"{base}_middle_on_style_transfer_identical": middle[2]["identical"]}
    return figures, [*rows, *({"middleBlock": True, **m} for m in middle)]


def compare_flux(workdir: Path) -> tuple[dict, list]:
    import comfy.clip_vision
    import comfy.sample
    import comfy.utils
    import torch

    from imageinference.engines.ipadapter.apply import (
        AdapterOptions,
        LoadedAdapter,
        apply_loaded,
        read_adapter,
    )
    from imageinference.testing import ipadapter_peers as ip
    from imageinference.testing.tiny_ipadapter import TINY_IPADAPTER, ensure_tiny_ipadapters
    from imageinference.testing.tiny_models import TINY, ensure_tiny_models

    root = ensure_tiny_models(["flux"])
    ensure_tiny_ipadapters(["clip_vision_vitl", "ipadapter_flux"], root)
    vitl, adapter_file = TINY_IPADAPTER["clip_vision_vitl"].path(root), TINY_IPADAPTER["ipadapter_flux"].path(root)
    xlabs = ip.XLabs(workdir / "xlabs")

    theirs_model, ours_model = ip.bf16_flux(TINY["flux"].path(root)), ip.bf16_flux(TINY["flux"].path(root))
    adapter = xlabs.adapter(adapter_file, xlabs.encoder(vitl))
    layout, sd = read_adapter(comfy.utils.load_torch_file(str(adapter_file), safe_load=True))
    encoder = comfy.clip_vision.load(str(vitl))
    guide = ip.binary_guide(7)
    pos, neg = ip.flux_conditioning(1), ip.flux_conditioning(2)
    noise = comfy.sample.prepare_noise(torch.zeros(1, 16, 8, 8), 5)

    def ours(weight: float, kv: bool = False):
        w = {k: (v * weight if kv and ("_k_proj." in k or "_v_proj." in k) else v) for k, v in sd.items()}
        return apply_loaded(ours_model, [guide], AdapterOptions("bench:flux@1", 1.0 if kv else weight),
                            LoadedAdapter(None, layout, w, encoder, str(adapter_file)))

    runs = {}
    for weight in (0.0, 0.5, 1.0, 2.0):
        theirs = xlabs.apply(theirs_model, adapter, guide, weight)
        for cfg in (1.0, 3.0):
            runs[("xlabs", weight, cfg)] = xlabs.sample(theirs, noise, pos, neg, cfg)
            runs[("ours", weight, cfg)] = ip.flux_sample(ours(weight), noise, pos, neg, cfg)
            if weight not in (0.0, 1.0):
                runs[("kv", weight, cfg)] = ip.flux_sample(ours(weight, kv=True), noise, pos, neg, cfg)
    figures, rows = {}, []
    for cfg in (1.0, 3.0):
        tag = f"cfg{cfg:g}"
        figures[f"flux_{tag}_no_adapter_rel"] = round(ip.relative(runs[("ours", 0.0, cfg)], runs[("xlabs", 0.0, cfg)]),
                                                      4)
        for weight in (0.5, 1.0, 2.0):
            theirs = runs[("xlabs", weight, cfg)] - runs[("xlabs", 0.0, cfg)]
            row = {"weight": weight, "cfg": cfg,
                   "effect_over_latent": round((theirs.norm() / runs[("xlabs", 0.0, cfg)].norm()).item(), 4),
                   "ours_effect_rel": round(ip.relative(runs[("ours", weight, cfg)] - runs[("ours", 0.0, cfg)],
                                                        theirs), 4)}
            if ("kv", weight, cfg) in runs:
                row["kv_effect_rel"] = round(ip.relative(runs[("kv", weight, cfg)] - runs[("ours", 0.0, cfg)], theirs), 4)
            rows.append(row)
            figures[f"flux_{tag}_w{weight:g}_effect_rel"] = row["ours_effect_rel"]
            if "kv_effect_rel" in row:
                figures[f"flux_{tag}_w{weight:g}_kv_effect_rel"] = row["kv_effect_rel"]
            print(f"flux {tag} w={weight:g}: {row}", flush=True)
    figures["flux_max_effect_rel"] = max(r["ours_effect_rel"] for r in rows)
    figures["flux_min_kv_effect_rel"] = min(r["kv_effect_rel"] for r in rows if "kv_effect_rel" in r)
    return figures, rows


def main() -> None:
    from imageinference.comfyui.runtime import use_inprocess_comfyui

    use_inprocess_comfyui()
    from imageinference.testing.ipadapter_peers import environment_note

    workdir = Path(tempfile.mkdtemp(prefix="ii-ipa-peers-"))
    figures, details = {}, {}
    for base in ("sd15", "sdxl"):
        f, rows = compare_sd(base, workdir)
        figures.update(f)
        details[base] = rows
    f, rows = compare_flux(workdir)
    figures.update(f)
    details["flux"] = rows
    details["environment"] = environment_note()
    write_results("ip_adapter_vs_peers", figures, details,
                  notes="SD1.5/SDXL: latents after one Euler step at CFG 5, ours vs cubiq's IPAdapterAdvanced "
                        "(psnr_db null = bit-identical). FLUX: bf16 tiny FLUX, sigmas 1, 0.5, 0; *_rel = relative "
                        "L2 of the adapter's effect on the latent, ours (or the K+V reading) vs XLabs.")


if __name__ == "__main__":
    main()
