"""Step caches against ComfyUI's own: core EasyCache / LazyCache over a fine threshold grid (up to the nodes'
maximum, 3.0, where they skip most) with their default window (start_percent 0.15, end_percent 0.95) and, on a
coarser grid, with no window (0, 1), where they skip the most of all; and this pack's TeaCache / FBCache / DBCache
over their API threshold (0-1) and every `cacheMaxConsecutiveSteps` (1-5).

Scenarios (benchmarks/cache_scenarios.py; real ComfyUI 0.8.0 sampling, CPU, 64x64, 28 steps, euler/simple,
seed 1234): A tiny FLUX (2 blocks), B/C a deep SD3-shaped MMDiT (12 blocks) random / trained, D/E a shallow one
(3 blocks) random / trained; trained = benchmarks/train_flow.py (flow matching, real CFG).

Per run: model calls = transformer-block calls / blocks per forward (forward hooks on the blocks, whoever skips
them), which steps were skipped (a step whose block calls fell short of the uncached run's), sampling seconds and
PSNR (dB) of the decoded 8-bit image against the uncached run. Core EasyCache runs with a copied model input
("easycache-copied": as shipped it adds its cached difference into the model's input tensor in place) and, on a
coarse grid, as shipped; on SD3-shaped models ComfyUI never calls EasyCache's DIFFUSION_MODEL wrapper, so one run
at 3.0 shows that it skips nothing. DBCache's split on a 2- or 3-block model is F1B0, the same configuration as
FBCache, so its rows there are FBCache's (marked, not re-run).

Sweep pruning (exact, not an approximation): if a setting skipped nothing at cap 5 it skips nothing at any cap
(nothing skipped = the uncached trajectory, where the criterion never said yes); once a setting skips every step
the policy allows (the greedy pattern), every larger threshold at that cap gives the same run (the criteria are
monotone in the threshold), so those are not re-run.

For every core point the script prints whether one of our settings has no more calls and no less PSNR, per cache
and overall, and when none does, why: the point lies below the cache's floor (the fewest calls the policy and the
always-run blocks allow) or our best PSNR at those calls is lower. A core point is "usable" at PSNR >= 30 dB
(USABLE_DB). Each scenario writes benchmarks/results/step_caches_<scenario>.json (its figures, every row and
comparison); `--summary` adds up the five into step_caches.json (no sampling). The peer packs (ComfyUI-TeaCache,
Comfy-WaveSpeed) are compared in benchmarks/step_caches_peers.py. Not a test: figures.
Usage: python benchmarks/step_caches.py [--scenarios A,B,C,D,E] [--quick]; python benchmarks/step_caches.py --summary
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cache_scenarios import DESCRIPTION, SCENARIOS, Scenario, measure
from common import CORE_WINDOW, RESULTS, core_cache, db, decoded_psnr, write_results

STEPS = 28
SEED = 1234
USABLE_DB = 30.0
CORE_GRID = (0.01, 0.02, 0.03, 0.04, 0.05, 0.075, 0.1, 0.125, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.75, 1.0, 1.5, 2.0,
             3.0)  # 3.0 is the most the core nodes accept
OPEN_GRID = (0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0, 3.0)
SHIPPED_GRID = (0.05, 0.2, 1.0, 3.0)
OPEN_WINDOW = (0.0, 1.0)  # (start_percent, end_percent): no window (CORE_WINDOW: the nodes' default)
OURS_GRID = (0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.08, 0.1, 0.125, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.55,
             0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 1.0)
CAPS = (5, 4, 3, 2, 1)
QUICK_CORE, QUICK_OPEN, QUICK_OURS, QUICK_CAPS = (0.05, 0.3, 3.0), (3.0,), (0.05, 0.3, 0.75, 1.0), (5, 1)
OURS = ("teaCache", "fbCache", "dbCache")
FIELD = {"teaCache": "teaCacheDistance", "fbCache": "fbCacheThreshold", "dbCache": "dbCacheThreshold"}


@dataclass
class Row:
    scenario: str
    cache: str
    value: float | None  # core: reuse_threshold; ours: the API value (0-1)
    cap: int | None  # cacheMaxConsecutiveSteps (ours)
    calls: float
    seconds: float
    psnr: float
    skipped: list[int]
    threshold: float | None = None  # ours: the criterion's threshold the API value maps to
    note: str = ""

    @property
    def label(self) -> str:
        if self.cache == "none":
            return "no cache"
        if self.cap is None:
            return f"{self.cache} reuse_threshold={self.value}{' ' + self.note if self.note else ''}"
        name = FIELD[self.cache.split("-")[0]]
        return f"{self.cache} {name}={self.value} cap={self.cap}{' ' + self.note if self.note else ''}"


psnr = decoded_psnr


def sample(sc: Scenario, model: Any) -> tuple[Any, float, float, list[int]]:
    return measure(sc, model, STEPS, SEED)


def our_config(model: Any, kind: str, value: float, cap: int, profile: Any, last_step: bool = True) -> Any:
    from imageinference.engines.cache.build import cache_config
    from imageinference.engines.cache.patch import model_layout

    config = cache_config(kind, value, model_layout(model), max_consecutive=cap, profile=profile)
    if not last_step:
        config = dataclasses.replace(config, policy=dataclasses.replace(config.policy, compute_last_step=False))
    return config


def greedy_skips(config: Any) -> list[int]:
    """The steps skipped when the criterion wants every step: the policy's floor pattern."""
    from imageinference.engines.cache.policy import fewest_computed_steps

    computed = set(fewest_computed_steps(config.policy, STEPS))
    return [s for s in range(STEPS) if s not in computed]


def skipped_steps(sc: Scenario, per_step: list[int]) -> list[int]:
    return [i for i, (n, full) in enumerate(zip(per_step, sc.base_steps, strict=True)) if n < full]


def run_core(sc: Scenario, base: Any, kind: str, value: float, window: tuple[float, float] = CORE_WINDOW) -> Row:
    img, seconds, calls, per_step = sample(sc, core_cache(sc.model, kind, value, window))
    note = "" if window == CORE_WINDOW else f"start_percent={window[0]} end_percent={window[1]}"
    row = Row(sc.name, kind, value, None, calls, seconds, psnr(img, base), skipped_steps(sc, per_step), note=note)
    print(_fmt(row), flush=True)
    return row


def run_ours(sc: Scenario, base: Any, kind: str, value: float, cap: int, profile: Any,
             last_step: bool = True) -> tuple[Row, bool]:
    """(row, saturated: the run skipped every step the policy allows)."""
    from imageinference.engines.cache.patch import apply_step_cache

    config = our_config(sc.model, kind, value, cap, profile, last_step)
    img, seconds, calls, per_step = sample(sc, apply_step_cache(sc.model, config))
    skipped = skipped_steps(sc, per_step)
    row = Row(sc.name, kind, value, cap, calls, seconds, psnr(img, base), skipped, config.threshold,
              "" if last_step else "(last step skippable)")
    print(_fmt(row), flush=True)
    return row, skipped == greedy_skips(config)


def sweep_ours(sc: Scenario, base: Any, kind: str, grid: tuple[float, ...], caps: tuple[int, ...],
               profile: Any) -> tuple[list[Row], dict[str, Any]]:
    """Every (value, cap) of the grid, pruned exactly (see the module docstring)."""
    rows: list[Row] = []
    never_skips: set[float] = set()
    saturated_at: dict[int, float] = {}
    for cap in caps:
        for value in grid:
            if value in never_skips:
                continue
            row, saturated = run_ours(sc, base, kind, value, cap, profile)
            rows.append(row)
            if not row.skipped and cap == max(caps):
                never_skips.add(value)
            if saturated:
                saturated_at[cap] = value
                break
    info = {"values_skipping_nothing": sorted(never_skips),
            "saturated_from": {str(c): v for c, v in saturated_at.items()}}
    return rows, info


def run_scenario(sc: Scenario, quick: bool, profile: Any) -> tuple[list[Row], dict[str, Any]]:
    base, seconds, calls, per_step = sample(sc, sc.model)
    sc.base_steps = per_step
    rows = [Row(sc.name, "none", None, None, calls, seconds, float("inf"), [])]
    print(_fmt(rows[0]), flush=True)
    core_grid, open_grid = (QUICK_CORE, QUICK_OPEN) if quick else (CORE_GRID, OPEN_GRID)
    for kind in ("lazycache", "easycache-copied") if sc.name == "A" else ("lazycache",):
        for value in core_grid:
            rows.append(run_core(sc, base, kind, value))
        for value in open_grid:
            rows.append(run_core(sc, base, kind, value, OPEN_WINDOW))
    if sc.name == "A":
        for value in (QUICK_CORE if quick else SHIPPED_GRID):
            rows.append(run_core(sc, base, "easycache", value))
    else:
        rows.append(run_core(sc, base, "easycache-copied", max(core_grid)))
    sweeps: dict[str, Any] = {}
    shallow = len(sc.blocks) < 8  # DBCache's split is F1B0 there: FBCache's configuration
    for kind in OURS:
        if kind == "dbCache" and shallow:
            rows += [dataclasses.replace(r, cache="dbCache", note="(= fbCache: split F1B0)")
                     for r in rows if r.scenario == sc.name and r.cache == "fbCache"]
            sweeps[kind] = dict(sweeps["fbCache"], same_as="fbCache")
            continue
        got, info = sweep_ours(sc, base, kind, QUICK_OURS if quick else OURS_GRID, QUICK_CAPS if quick else CAPS,
                               profile)
        rows += got
        sweeps[kind] = info
    # the last-step rule: the most aggressive setting with the last step skippable, against the rule
    ablation, _ = run_ours(sc, base, "teaCache", 1.0, 5, profile, last_step=False)
    ablation.cache = "teaCache-ablation"
    rows.append(ablation)
    return rows, sweeps


def _fmt(r: Row) -> str:
    skipped = "".join("s" if i in r.skipped else "." for i in range(STEPS))
    return f"{r.scenario} {r.label:62s} calls {r.calls:6.2f} {r.seconds:6.2f}s {r.psnr:6.2f} dB {skipped}"


def floor_calls(sc_blocks: int, kind: str) -> float:
    """Fewest model calls a cache can reach at cap 5: the policy's floor plus its always-run blocks."""
    from imageinference.engines.cache.policy import CachePolicy, floor_model_calls
    from imageinference.engines.cache.profiles import dbcache_split

    always = {"teaCache": 0, "fbCache": 1}.get(kind)
    if always is None:
        split = dbcache_split(sc_blocks)
        always = split.first + split.last
    return floor_model_calls(CachePolicy(max_consecutive=5), STEPS, always, sc_blocks)


def compare(rows: list[Row], scenario: str, blocks: int) -> dict[str, Any]:
    """For every core point that skipped something: which of our settings dominate it, and if none, why."""
    core = [r for r in rows if r.scenario == scenario and r.cap is None and r.cache != "none" and r.skipped]
    ours = {k: [r for r in rows if r.scenario == scenario and r.cache == k] for k in OURS}
    points = []
    for c in core:
        entry: dict[str, Any] = {"core": c.label, "calls": round(c.calls, 3), "psnr": _db(c.psnr),
                                 "usable": c.psnr >= USABLE_DB, "ours": {}}
        for kind, mine in ours.items():
            if not mine:
                continue
            better = [m for m in mine if m.calls <= c.calls + 1e-9 and m.psnr >= c.psnr]
            if better:
                best = min(better, key=lambda m: (m.calls, -m.psnr))
                entry["ours"][kind] = {"dominated_by": best.label, "calls": round(best.calls, 3),
                                       "psnr": _db(best.psnr)}
                continue
            floor = floor_calls(blocks, kind)
            within = [m for m in mine if m.calls <= c.calls + 1e-9]
            enough = [m for m in mine if m.psnr >= c.psnr]
            if c.calls < floor - 1e-9:
                why = (f"below {kind}'s floor of {floor:.2f} calls (first and last step computed, at most 5 skipped "
                       "in a row" + (", always-run blocks" if kind != "teaCache" else "") + ")")
            elif within:
                top = max(within, key=lambda m: m.psnr)
                why = f"at <= {c.calls:.2f} calls its best is {top.psnr:.2f} dB ({top.label})"
            else:
                why = f"no setting measured at <= {c.calls:.2f} calls"
            if enough:
                cheapest = min(enough, key=lambda m: m.calls)
                why += f"; {c.psnr:.2f} dB needs {cheapest.calls:.2f} calls ({cheapest.label})"
            entry["ours"][kind] = {"dominated_by": None, "why": why}
        entry["dominated"] = any(v["dominated_by"] for v in entry["ours"].values())
        points.append(entry)
    usable = [c for c in core if c.psnr >= USABLE_DB]
    aggressive = min(usable, key=lambda r: (r.calls, -r.psnr)) if usable else None
    reach = {}
    for kind, mine in ours.items():
        at_one = [m for m in mine if m.value == 1.0 and m.cap == 5]
        if not at_one and mine:  # saturated earlier at cap 5: the 1.0 run equals that row
            sat = [m for m in mine if m.cap == 5]
            at_one = [max(sat, key=lambda m: m.value or 0.0)] if sat else []
        if at_one and aggressive is not None:
            m = at_one[0]
            reach[kind] = {"calls_at_1.0_cap5": round(m.calls, 3), "psnr": _db(m.psnr),
                           "skips_at_least_as_much": m.calls <= aggressive.calls + 1e-9}
    return {"points": points,
            "dominated": sum(p["dominated"] for p in points), "of": len(points),
            "usable_dominated": sum(p["dominated"] for p in points if p["usable"]),
            "usable_of": sum(p["usable"] for p in points),
            "most_aggressive_usable_core": None if aggressive is None else
            {"core": aggressive.label, "calls": round(aggressive.calls, 3), "psnr": _db(aggressive.psnr)},
            "ours_at_1.0_cap5": reach,
            "floors_cap5": {k: round(floor_calls(blocks, k), 3) for k in OURS}}


_db = db


def fewest_usable(rows: list[Row]) -> Row | None:
    usable = [r for r in rows if r.psnr >= USABLE_DB]
    return min(usable, key=lambda r: (r.calls, -r.psnr)) if usable else None


def scenario_figures(res: dict[str, Any], rows: list[Row], uncached_seconds: float) -> dict[str, Any]:
    """The flat figures the docs quote for one scenario (benchmarks/results/step_caches_<name>.json)."""
    points = res["points"]
    figures: dict[str, Any] = {
        "blocks": res["blocks"], "uncached_seconds": round(uncached_seconds, 2),
        "core_points": res["of"], "core_usable": res["usable_of"],
        "dominated": res["dominated"], "dominated_usable": res["usable_dominated"],
        "undominated": res["of"] - res["dominated"]}
    for kind in OURS:
        mine = [r for r in rows if r.cache == kind]
        by = [p for p in points if (p["ours"].get(kind) or {}).get("dominated_by")]
        figures[f"{kind}.dominated"] = len(by)
        figures[f"{kind}.dominated_usable"] = sum(p["usable"] for p in by)
        figures[f"{kind}.floor_cap5"] = res["floors_cap5"][kind]
        at_one = res["ours_at_1.0_cap5"].get(kind)
        if at_one:
            figures[f"{kind}.at_1_cap5.calls"] = at_one["calls_at_1.0_cap5"]
            figures[f"{kind}.at_1_cap5.psnr"] = at_one["psnr"] if at_one["psnr"] is not None else "identical"
        best = fewest_usable(mine)
        if best is not None:
            figures[f"{kind}.fewest_usable.calls"] = round(best.calls, 2)
            figures[f"{kind}.fewest_usable.psnr"] = _db(best.psnr)
            figures[f"{kind}.fewest_usable.setting"] = f"{best.value}, cap {best.cap}"
        sweep = res["sweeps"].get(kind, {})
        skipping = sorted({r.value for r in mine if r.cap == max(CAPS) and r.skipped and r.value is not None})
        if skipping:
            figures[f"{kind}.first_skip_cap5"] = skipping[0]
        for cap, value in sweep.get("saturated_from", {}).items():
            figures[f"{kind}.saturates.cap{cap}"] = value
    core_best = res["most_aggressive_usable_core"]
    if core_best:
        figures["core_fewest_usable.calls"] = core_best["calls"]
        figures["core_fewest_usable.psnr"] = core_best["psnr"]
        figures["core_fewest_usable.setting"] = core_best["core"]
    for i, p in enumerate(p for p in points if not p["dominated"]):
        figures[f"undominated.{i}.calls"] = p["calls"]
        figures[f"undominated.{i}.psnr"] = p["psnr"]
        figures[f"undominated.{i}.setting"] = p["core"]
    ablation = [r for r in rows if r.cache == "teaCache-ablation"]
    if ablation:
        figures["last_step_skippable.calls"] = round(ablation[0].calls, 2)
        figures["last_step_skippable.psnr"] = _db(ablation[0].psnr)
    return figures


def plain(r: Row) -> dict[str, Any]:
    d = asdict(r)
    d["psnr"] = _db(r.psnr)  # identical image: no finite PSNR
    d["seconds"], d["calls"] = round(r.seconds, 3), round(r.calls, 3)
    d["threshold"] = None if r.threshold is None else ("inf" if math.isinf(r.threshold) else r.threshold)
    return d


def report(name: str, res: dict[str, Any]) -> None:
    print(f"\n{name}: {res['model']}: {res['dominated']}/{res['of']} core points dominated "
          f"({res['usable_dominated']}/{res['usable_of']} of those >= {USABLE_DB:.0f} dB); "
          f"most aggressive usable core point {res['most_aggressive_usable_core']}; ours at 1.0, cap 5: "
          f"{res['ours_at_1.0_cap5']}")
    for p in res["points"]:
        print(f"  {p['core']:36s} {p['calls']:6.2f} calls {p['psnr'] or 0:6.2f} dB "
              f"{'usable' if p['usable'] else '      '} {'DOMINATED' if p['dominated'] else 'not dominated'}")
        for kind, v in p["ours"].items():
            text = (f"by {v['dominated_by']} ({v['calls']} calls, {v['psnr']} dB)" if v["dominated_by"]
                    else v["why"])
            print(f"      {kind:9s} {text}")


def summary() -> None:
    """step_caches.json: the five scenarios' counts added up (read from their results files; no sampling)."""
    totals: dict[str, Any] = {}
    keys = ("core_points", "core_usable", "dominated", "dominated_usable", "undominated",
            *(f"{k}.{f}" for k in OURS for f in ("dominated", "dominated_usable")))
    sources = {}
    for name in SCENARIOS:
        record = json.loads((RESULTS / f"step_caches_{name}.json").read_text())
        sources[name] = {"commit": record["commit"], "date": record["date"]}
        for key in keys:
            totals[key] = totals.get(key, 0) + record["figures"][key]
    write_results("step_caches", totals, {"scenarios": sources},
                  notes="sums of benchmarks/results/step_caches_<A-E>.json")
    print(json.dumps(totals))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    parser.add_argument("--quick", action="store_true", help="a few thresholds and caps (a smoke run, no results file)")
    parser.add_argument("--summary", action="store_true", help="add up the scenarios' results files")
    args = parser.parse_args()
    if args.summary:
        summary()
        return
    logging.getLogger().setLevel(logging.ERROR)
    import cache_scenarios

    for name in [n.strip() for n in args.scenarios.split(",")]:
        started = time.perf_counter()
        sc, profile = cache_scenarios.build(name)
        print(f"{name}: {DESCRIPTION[name]}; TeaCache calibrated on this model: {profile}", flush=True)
        rows, sweeps = run_scenario(sc, args.quick, profile)
        res = {"model": DESCRIPTION[name], "blocks": len(sc.blocks),
               "teacache_profile": {"coefficients": list(profile.coefficients),
                                    "threshold_scale": profile.threshold_scale},
               "sweeps": sweeps, **compare(rows, name, len(sc.blocks))}
        report(name, res)
        details = {"steps": STEPS, "seed": SEED, "usable_db": USABLE_DB, "psnr_null_means": "identical to no cache",
                   "minutes": round((time.perf_counter() - started) / 60, 1), "scenario": res,
                   "rows": [plain(r) for r in rows]}
        if args.quick:
            print(json.dumps(details))
            continue
        uncached = next(r for r in rows if r.cache == "none")
        write_results(f"step_caches_{name}", scenario_figures(res, rows, uncached.seconds), details,
                      command=["benchmarks/step_caches.py", "--scenarios", name])


if __name__ == "__main__":
    main()
