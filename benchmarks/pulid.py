"""PuLID-FLUX costs, measured side by side in one process with the tiny FLUX model and the tiny PuLID files:

1. sampling with PuLID against without (same latent, steps, seed; runs interleaved, median of N each);
2. the identity embedding: first time (stack already loaded) against from the content-hash cache, and the cold
   stack load;
3. face parsing: a first-time embedding with the (tiny) parser against the same stack without it, and the parser
   alone at the published BiSeNet's widths on a 512 px crop (what it costs with the real weights).
Writes benchmarks/results/pulid.json.
The tiny files have the published layouts but small widths, so (1) also prints the share the cross-attention
layers would add to a real FLUX.1-dev forward, computed from the published shapes (multiply-accumulates of the
linear layers and attention products). Not a test; figures vary between runs, ratios less.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import write_results


def setup() -> tuple[Any, Any]:
    from imageinference.comfyui.runtime import use_inprocess_comfyui

    use_inprocess_comfyui()
    import comfy.sd
    import folder_paths

    from imageinference.engines.models import catalog
    from imageinference.testing.tiny_models import TINY, ensure_tiny_models
    from imageinference.testing.tiny_pulid import catalog_entries, ensure_tiny_pulid

    root = ensure_tiny_models(["flux"])
    ensure_tiny_pulid(root)
    for folder in ("pulid", "insightface", "clip_vision"):
        folder_paths.add_model_folder_path(folder, str(root / folder), is_default=True)
    # until catalog.py lists the PuLID kinds and folders (harmless once it does)
    catalog.KINDS = tuple(dict.fromkeys((*catalog.KINDS, "pulid", "idEncoder")))
    catalog.FOLDERS = tuple(dict.fromkeys((*catalog.FOLDERS, "pulid", "insightface")))
    path = Path(tempfile.mkdtemp()) / "catalog.json"
    path.write_text(json.dumps({"version": 1, "models": catalog_entries()}))
    os.environ["IMAGEINFERENCE_CATALOG"] = str(path)
    flux = comfy.sd.load_diffusion_model(str(TINY["flux"].path(root)))
    from imageinference.testing.tiny_pulid import face_image

    return flux, face_image(512)


def sample(model: Any, size: int, steps: int) -> float:
    import comfy.sample
    import torch

    g = torch.Generator().manual_seed(1)
    cond = [[torch.randn(1, 64, 4096, generator=g), {"pooled_output": torch.randn(1, 768, generator=g),
                                                      "guidance": 3.5}]]
    latent = torch.zeros(1, 16, size // 8, size // 8)
    noise = comfy.sample.prepare_noise(latent, 5)
    start = time.perf_counter()
    comfy.sample.sample(model, noise, steps, 1.0, "euler", "simple", cond, cond, latent, seed=5, disable_pbar=True)
    return time.perf_counter() - start


def real_flux_share(tokens: int = 4096, txt: int = 512) -> float:
    """Cross-attention MACs / FLUX.1-dev transformer MACs for one forward at `tokens` image tokens (1024x1024)."""
    h, mlp, inner, id_tokens = 3072, 12288, 2048, 32
    seq = tokens + txt
    attention = 2 * seq * seq * h  # QK^T and AV over the joined sequence
    double = seq * (3 * h * h + h * h + 2 * h * mlp) + attention
    single = seq * (h * (3 * h + mlp) + (h + mlp) * h) + attention
    ca = tokens * (h * inner + inner * h) + 2 * tokens * id_tokens * inner + id_tokens * 2048 * 2 * inner
    return 20 * ca / (19 * double + 38 * single)


def main() -> None:
    repeats = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    size, steps = 128, 8
    flux, image = setup()
    import torch

    from imageinference.comfyui.nodes.pulid import PuLIDNode
    from imageinference.engines.models.catalog import Catalog
    from imageinference.engines.pulid import encoder
    from imageinference.engines.pulid.face_parsing import load_parser
    from imageinference.engines.pulid.stack import stack_entries
    from imageinference.testing.tiny_pulid import ensure_facexlib_bisenet

    t0 = time.perf_counter()
    stack = encoder.load_stack(stack_entries(Catalog.load(), "test:pulid@1"))
    load_s = time.perf_counter() - t0
    firsts, cached = [], []
    for i in range(repeats):
        encoder.EMBEDDINGS.clear()
        img = image[0] + i * 1e-3  # a new image each time: no stale cache entry
        t0 = time.perf_counter()
        encoder.identity_embedding(stack, img)
        firsts.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        encoder.identity_embedding(stack, img)
        cached.append(time.perf_counter() - t0)
    # face parsing's share of a first-time embedding: the same stack without the parser, side by side
    bare = encoder.load_stack(stack_entries(Catalog.load(), "test:pulid@noparsing"))
    parsed_s, bare_s = [], []
    for i in range(repeats):
        img = image[0] + (repeats + i) * 1e-3
        t0 = time.perf_counter()
        encoder.compute_embedding(bare, img)
        bare_s.append(time.perf_counter() - t0)
    stack = encoder.load_stack(stack_entries(Catalog.load(), "test:pulid@1"))
    for i in range(repeats):
        img = image[0] + (repeats + i) * 1e-3
        t0 = time.perf_counter()
        encoder.compute_embedding(stack, img)
        parsed_s.append(time.perf_counter() - t0)
    parser_full = load_parser(str(ensure_facexlib_bisenet()))
    crop = torch.rand(1, 3, 512, 512, generator=torch.Generator().manual_seed(0))
    parser_full.labels(crop)
    full_s = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        parser_full.labels(crop)
        full_s.append(time.perf_counter() - t0)
    patched = PuLIDNode.execute(flux, image, "test:pulid@1", 1.0, -1, -1, -1.0).args[0]
    sample(flux, size, steps)  # warm-up
    sample(patched, size, steps)
    plain, with_pulid = [], []
    for _ in range(repeats):
        plain.append(sample(flux, size, steps))
        with_pulid.append(sample(patched, size, steps))
    row = {
        "benchmark": "pulid", "latent": f"{size}x{size} px, {steps} steps, tiny FLUX (1 double + 1 single block)",
        "sampling_plain_s": round(statistics.median(plain), 4),
        "sampling_pulid_s": round(statistics.median(with_pulid), 4),
        "sampling_ratio": round(statistics.median(with_pulid) / statistics.median(plain), 3),
        "real_flux_ca_share_estimate": round(real_flux_share(), 4),
        "embedding_first_s": round(statistics.median(firsts), 4),
        "embedding_cached_s": round(statistics.median(cached), 6),
        "embedding_speedup": round(statistics.median(firsts) / statistics.median(cached)),
        "stack_cold_load_s": round(load_s, 3),
        "embedding_with_parsing_s": round(statistics.median(parsed_s), 4),
        "embedding_without_parsing_s": round(statistics.median(bare_s), 4),
        "parsing_512_full_width_s": round(statistics.median(full_s), 3),
    }
    print(f"sampling: plain {row['sampling_plain_s']} s, with PuLID {row['sampling_pulid_s']} s "
          f"(x{row['sampling_ratio']}); at FLUX.1-dev size the 20 cross-attention layers add about "
          f"{100 * row['real_flux_ca_share_estimate']:.1f}% to a 1024x1024 forward (estimate from shapes)")
    print(f"identity embedding: first {row['embedding_first_s']} s, cached {row['embedding_cached_s']} s "
          f"(x{row['embedding_speedup']}); cold stack load {row['stack_cold_load_s']} s")
    print(f"face parsing: embedding {row['embedding_with_parsing_s']} s with, {row['embedding_without_parsing_s']} s "
          f"without (tiny parser); the real BiSeNet's widths on a 512 px crop: {row['parsing_512_full_width_s']} s")
    print(json.dumps(row))
    write_results("pulid", {k: v for k, v in row.items() if k != "benchmark"})


if __name__ == "__main__":
    main()
