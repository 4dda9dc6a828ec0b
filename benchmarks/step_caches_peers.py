"""Our TeaCache and First Block Cache against the node packs users install for them, pair by pair: at every setting
of the peer's grid, model calls and PSNR of the peer's node and of ours, in the same ComfyUI, on the same model,
conditioning, noise and sampler (the scenarios of benchmarks/step_caches.py: real ComfyUI 0.8.0, CPU, 64x64,
28 steps, euler/simple, seed 1234; PSNR of the decoded 8-bit image against the uncached run).

  TeaCache: welltop-cn/ComfyUI-TeaCache's `TeaCache` (model_type flux, start 0, end 1) at rel_l1_thresh t, on A
    (the peer has no SD3 path). Rows: the peer as shipped; the peer with each FLUX double block handed a copy of
    its input (on ComfyUI 0.8.0 the double blocks add into the tensor the peer keeps as the blocks' input, so as
    shipped its cached residual misses the double blocks); ours with its node options skipLastStep and
    uncappedSkips (the peer's rules) at teaCacheDistance api_value(t, 0.8); ours with the API's rules at that value
    (last step computed, cacheMaxConsecutiveSteps 3, the default, and 5).
  FBCache: chengzeyi/Comfy-WaveSpeed's `ApplyFBCacheOnModel` at residual_diff_threshold t (start 0, end 1,
    max_consecutive_cache_hits -1, its default), on A-E. Rows: the peer as shipped; on A the peer with
    its double block handed a copy of its input (as for TeaCache: the block adds into the tensor WaveSpeed keeps);
    ours with the peer's rules (and firstBlockSignal "output" on FLUX, as WaveSpeed's FLUX path compares the
    first block's output) at fbCacheThreshold api_value(t, 1); ours with the API's rules (residual, last step
    computed, cap 3 and 5).
"At least as good": for every peer row, one of our rows has no more calls and no less PSNR. The vendored archives
are unpacked into a temporary folder (imageinference/testing/cache_peers.py). Writes
benchmarks/results/step_caches_peers.json. Usage: python benchmarks/step_caches_peers.py [--scenarios A,B,C,D,E]
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cache_scenarios import DESCRIPTION, SCENARIOS, Scenario, build, measure
from common import db, decoded_psnr, write_results

STEPS = 28
SEED = 1234
TEA_GRID = (0.1, 0.25, 0.4, 0.6, 0.8, 1.0, 1.5, 2.0, 3.0)  # ComfyUI-TeaCache's rel_l1_thresh (0-10; FLUX: 0.4)
FB_GRID = (0.05, 0.08, 0.12, 0.2, 0.3, 0.5, 0.7, 1.0)  # WaveSpeed's residual_diff_threshold (0-1; FLUX 0.12)
TEACACHE_SCALE = 0.8  # the FLUX TeaCache threshold scale (profiles.TEACACHE_THRESHOLD_SCALE)


@dataclass
class Pair:
    scenario: str
    cache: str  # teaCache | fbCache
    threshold: float  # the peer's setting
    row: str  # peer | peer-copied-input | ours-peer-rules | ours-api-cap3 | ours-api-cap5
    calls: float
    psnr: float
    skipped: list[int]
    seconds: float


def run(sc: Scenario, base: Any, model: Any, cache: str, threshold: float, row: str) -> Pair:
    img, seconds, calls, per_step = measure(sc, model, STEPS, SEED)
    full = sc.base_steps
    pair = Pair(sc.name, cache, threshold, row, calls, decoded_psnr(img, base),
                [i for i, (n, f) in enumerate(zip(per_step, full, strict=True)) if n < f], seconds)
    skipped = "".join("s" if i in pair.skipped else "." for i in range(STEPS))
    print(f"{sc.name} {cache:8s} {threshold:5.2f} {row:18s} calls {calls:6.2f} {pair.psnr:6.2f} dB {skipped}",
          flush=True)
    return pair


def ours(model: Any, kind: str, value: float, **node: Any) -> Any:
    from imageinference.comfyui.nodes.step_cache import FBCacheNode, TeaCacheNode

    widgets = {"cacheStartStep": -1, "cacheStartStepPercentage": -1, "cacheEndStep": -1,
               "cacheEndStepPercentage": -1, "cacheMaxConsecutiveSteps": 3, **node}
    if kind == "teaCache":
        return TeaCacheNode.execute(model, teaCacheDistance=value, **widgets).result[0]
    return FBCacheNode.execute(model, fbCacheThreshold=value, **widgets).result[0]


def teacache_pairs(sc: Scenario, base: Any, peer_node: Any) -> list[Pair]:
    from imageinference.engines.cache.profiles import api_value
    from imageinference.testing.cache_peers import copying_double_blocks

    out = []
    for t in TEA_GRID:
        value = api_value(t, TEACACHE_SCALE)
        out.append(run(sc, base, peer_node().apply_teacache(sc.model, "flux", t, 0.0, 1.0, "cpu")[0],
                       "teaCache", t, "peer"))
        out.append(run(sc, base, peer_node().apply_teacache(copying_double_blocks(sc.model), "flux", t, 0.0, 1.0,
                                                            "cpu")[0], "teaCache", t, "peer-copied-input"))
        out.append(run(sc, base, ours(sc.model, "teaCache", value, skipLastStep=True, uncappedSkips=True),
                       "teaCache", t, "ours-peer-rules"))
        for cap in (3, 5):
            out.append(run(sc, base, ours(sc.model, "teaCache", value, cacheMaxConsecutiveSteps=cap),
                           "teaCache", t, f"ours-api-cap{cap}"))
    return out


def fbcache_pairs(sc: Scenario, base: Any, peer_node: Any) -> list[Pair]:
    from imageinference.engines.cache.profiles import api_value
    from imageinference.testing.cache_peers import copying_double_blocks

    signal = "output" if sc.name == "A" else "residual"
    out = []
    for t in FB_GRID:
        value = api_value(t, 1.0)
        out.append(run(sc, base, peer_node().patch(sc.model, "diffusion_model", t, -1, 0.0, 1.0)[0],
                       "fbCache", t, "peer"))
        if sc.name == "A":  # FLUX: its double block adds into the input WaveSpeed keeps (as for TeaCache above)
            out.append(run(sc, base, peer_node().patch(copying_double_blocks(sc.model), "diffusion_model", t, -1, 0.0,
                                                       1.0)[0], "fbCache", t, "peer-copied-input"))
        out.append(run(sc, base, ours(sc.model, "fbCache", value, skipLastStep=True, uncappedSkips=True,
                                      firstBlockSignal=signal), "fbCache", t, "ours-peer-rules"))
        for cap in (3, 5):
            out.append(run(sc, base, ours(sc.model, "fbCache", value, cacheMaxConsecutiveSteps=cap),
                           "fbCache", t, f"ours-api-cap{cap}"))
    return out


def verdicts(pairs: list[Pair]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Per (scenario, cache): how many peer settings, how many of them ours matches exactly with the peer's rules
    (same steps skipped, same PSNR), and how many one of our rows is at least as good as (no more calls, no less
    PSNR); plus the flat per-setting figures."""
    figures: dict[str, Any] = {}
    table = []
    groups = sorted({(p.scenario, p.cache) for p in pairs})
    for scenario, cache in groups:
        mine = [p for p in pairs if p.scenario == scenario and p.cache == cache and p.row.startswith("ours")]
        peer_rows = [p for p in pairs if p.scenario == scenario and p.cache == cache and p.row.startswith("peer")]
        same = good = 0
        for peer in peer_rows:
            twin = next(p for p in mine if p.threshold == peer.threshold and p.row == "ours-peer-rules")
            identical = twin.skipped == peer.skipped and twin.psnr == peer.psnr
            at_least = any(m.calls <= peer.calls + 1e-9 and m.psnr >= peer.psnr for m in mine)
            same += identical
            good += at_least
            table.append({**asdict(peer), "psnr": db(peer.psnr), "ours_peer_rules_identical": identical,
                          "at_least_as_good": at_least})
        prefix = f"{scenario}.{cache}"
        figures[f"{prefix}.peer_rows"] = len(peer_rows)
        figures[f"{prefix}.identical_with_peer_rules"] = same
        figures[f"{prefix}.at_least_as_good"] = good
        for p in pairs:
            if p.scenario == scenario and p.cache == cache:
                key = f"{prefix}.{p.threshold:g}.{p.row}"
                figures[f"{key}.calls"] = round(p.calls, 2)
                figures[f"{key}.psnr"] = db(p.psnr) if db(p.psnr) is not None else "identical"
    figures["peer_rows"] = sum(v for k, v in figures.items() if k.endswith(".peer_rows"))
    figures["at_least_as_good"] = sum(v for k, v in figures.items() if k.endswith(".at_least_as_good"))
    return figures, table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    args = parser.parse_args()
    logging.getLogger().setLevel(logging.ERROR)
    started = time.perf_counter()
    from imageinference.comfyui.runtime import use_inprocess_comfyui

    use_inprocess_comfyui()
    from imageinference.testing import cache_peers

    pairs: list[Pair] = []
    with tempfile.TemporaryDirectory() as tmp:
        teacache = None
        with cache_peers.wavespeed_node(Path(tmp)) as wavespeed:
            for name in [n.strip() for n in args.scenarios.split(",")]:
                sc, _ = build(name, calibrated=False)
                print(f"{name}: {DESCRIPTION[name]}", flush=True)
                base, _seconds, _calls, sc.base_steps = measure(sc, sc.model, STEPS, SEED)
                if name == "A":
                    teacache = teacache or cache_peers.comfyui_teacache_node(Path(tmp))
                    pairs += teacache_pairs(sc, base, teacache)
                pairs += fbcache_pairs(sc, base, wavespeed)
    figures, table = verdicts(pairs)
    for key in sorted(k for k in figures if k.count(".") <= 2):
        print(f"{key}: {figures[key]}")
    write_results("step_caches_peers", figures,
                  {"steps": STEPS, "seed": SEED, "minutes": round((time.perf_counter() - started) / 60, 1),
                   "psnr_null_means": "identical to no cache", "peer_rows": table,
                   "rows": [{**asdict(p), "psnr": db(p.psnr), "seconds": round(p.seconds, 3)} for p in pairs]},
                  command=["benchmarks/step_caches_peers.py", "--scenarios", args.scenarios])


if __name__ == "__main__":
    main()
