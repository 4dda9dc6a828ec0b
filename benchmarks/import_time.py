"""How much the pack adds to ComfyUI's start-up: time of ComfyUI's own `load_custom_node` on this pack.

Each run is a fresh process that first does what ComfyUI's main.py has done when it loads custom nodes (imports
`nodes`, `comfy_api.latest` and `server`, loads the built-in comfy_extras nodes), then times loading the pack, as
ComfyUI's "Import times for custom nodes" does.
Prints the median of N runs beside a near-empty V3 pack loaded the same way. Not a test; a figure.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from common import write_results

from imageinference.comfyui.env import comfyui_path
from imageinference.comfyui.server_process import PACK_ROOT

CHILD = r"""
import asyncio, sys, time
sys.path.insert(0, {comfy!r})
import utils.install_util  # ComfyUI's own utils package, imported by main.py before anything else
from imageinference.comfyui.runtime import use_inprocess_comfyui
use_inprocess_comfyui()
import server, nodes, comfy_api.latest  # what ComfyUI's main.py has imported before custom nodes load
async def main():
    await nodes.init_builtin_extra_nodes()  # comfy_extras (kornia, ...), loaded before custom nodes too
    t = time.perf_counter()
    ok = await nodes.load_custom_node({pack!r})
    return time.perf_counter() - t if ok else -1
print(asyncio.run(main()))
"""

EMPTY_PACK = '''
from comfy_api.latest import ComfyExtension, io
class E(ComfyExtension):
    async def get_node_list(self):
        return []
async def comfy_entrypoint():
    return E()
'''


def measure(pack: Path, runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        code = CHILD.format(comfy=str(comfyui_path()), pack=str(pack))
        res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        out.append(float(res.stdout.strip().splitlines()[-1]))
    return out


def main(runs: int = 5) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        empty = Path(tmp) / "empty_pack"
        empty.mkdir()
        (empty / "__init__.py").write_text(EMPTY_PACK)
        link = Path(tmp) / "imageinference-nodes"
        link.symlink_to(PACK_ROOT, target_is_directory=True)
        ours, baseline = measure(link, runs), measure(empty, runs)
    row = {"benchmark": "import_time", "runs": runs, "pack_median_s": round(statistics.median(ours), 4),
           "empty_pack_median_s": round(statistics.median(baseline), 4),
           "budget_s": 0.3, "within_budget": statistics.median(ours) < 0.3}
    print(f"pack load: median {row['pack_median_s']} s over {runs} runs (empty V3 pack: "
          f"{row['empty_pack_median_s']} s); budget 0.3 s")
    print(json.dumps(row))
    write_results("import_time", {k: v for k, v in row.items() if k != "benchmark"})


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 5)
