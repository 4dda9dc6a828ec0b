"""Peak memory of a 512 -> 2048 upscale with the tiny ESRGAN 4x: tiled (tile sizes in input pixels) vs one tile.

Each variant runs in a fresh process; the figure is the growth of peak RSS during the upscale. Not a test.
"""

from __future__ import annotations

import json
import subprocess
import sys

from common import write_results

CHILD = r"""
import resource, sys, json, torch
from imageinference.comfyui.runtime import use_inprocess_comfyui
use_inprocess_comfyui()
from imageinference.testing.tiny_models import ensure_tiny_models, TINY
import comfy.utils
from spandrel import ModelLoader
from imageinference.engines.samplers.hires import upscale_image
root = ensure_tiny_models(["upscale_4x"])
model = ModelLoader().load_from_state_dict(comfy.utils.load_torch_file(str(TINY["upscale_4x"].path(root)))).eval()
img = torch.rand((1, 512, 512, 3), generator=torch.Generator().manual_seed(0))
tile = int(sys.argv[1])
upscale_image(model, img[:, :64, :64], tile=64, overlap=8)  # warm-up
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
with torch.no_grad():
    out = upscale_image(model, img, tile=tile, overlap=32 if tile < 512 + 64 else 0)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"tile": tile, "out": list(out.shape), "peak_growth_mib": round((after - before) / 1024, 1)}))
"""


def run(tile: int) -> dict[str, object]:
    out = subprocess.run([sys.executable, "-c", CHILD, str(tile)], capture_output=True, text=True, check=True)
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def main() -> None:
    row: dict[str, object] = {"benchmark": "upscale_memory", "output": "2048x2048"}
    for tile in (128, 256, 4096):
        row[f"tile_{tile}_peak_growth_mib" if tile < 4096 else "untiled_peak_growth_mib"] = run(tile)["peak_growth_mib"]
    print(f"512->2048 upscale, peak RSS growth: 128-px tiles {row['tile_128_peak_growth_mib']} MiB, 256-px tiles "
          f"{row['tile_256_peak_growth_mib']} MiB, one tile {row['untiled_peak_growth_mib']} MiB")
    print(json.dumps(row))
    write_results("upscale_memory", {k: v for k, v in row.items() if k != "benchmark"})


if __name__ == "__main__":
    main()
