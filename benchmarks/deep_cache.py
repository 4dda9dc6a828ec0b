"""DeepCache side by side with core EasyCache / LazyCache on the same UNets, against no cache.

Scenarios (real ComfyUI 0.8.0 sampling, CPU, fixed seed; conditioning is fixed random tensors, no text encoder):
  S  the tiny SD1.5 checkpoint's UNet (random weights, SD1.5's block layout at width 320), 128x128, 28 steps,
     euler/normal, cfg 5 (cond and uncond batched); decoded by the checkpoint's (random) VAE
  T  a small UNet in SD1.5's block layout (width 64) trained here to predict noise on procedural 64x64 images
     pooled to 16x16 "latents" (a fixed linear lift to 4 channels), so the trajectory is a learned one; 28 steps,
     euler/normal, cfg 1; decoded by the lift's pseudo-inverse
Per row: model evaluations in three currencies, sampling seconds, and PSNR (dB) of the decoded 8-bit image against
the uncached run:
  forwards  full / shallow-only UNet forwards (core caches skip whole forwards; DeepCache runs the shallow branch)
  blocks    UNet block calls / blocks per forward (counted by hooks on every block, whoever skips them)
  flops     the FLOPs of the blocks that ran / the FLOPs of one full forward (per-block FLOPs from torch's
            FlopCounterMode on one forward): the honest cost, since the shallow blocks run at full resolution
Core EasyCache is run as shipped and with a copied model input (as shipped it adds its cached difference into the
model's input in place). DeepCache is swept over deepCacheInterval and deepCacheBranchId (uniform schedule: full
steps 0, N, 2N, ..., as DeepCache defines it), and run at two non-uniform schedules (center 15, pow 1.4, DeepCache's
example). Then the peer, pair by pair: horseee/DeepCache's own DeepCacheSDHelper on a diffusers UNet holding the
same weights, driven by the same ComfyUI sampling (imageinference/testing/cache_peers.py), at a subset of the same
settings and both non-uniform schedules; each implementation's PSNR is against its own uncached run, and the PSNR
between the two images shows how closely they agree. Writes benchmarks/results/deep_cache.json (figures, every row,
the frontier check: each core point against the DeepCache points with no more FLOPs). Not a test: figures.
Usage: python benchmarks/deep_cache.py [--scenarios S,T] [--quick]
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import RESULTS, commit, core_cache, db, decoded_psnr, write_results

STEPS = 28
CORE_THRESHOLDS = (0.05, 0.1, 0.2, 0.4)
INTERVALS = (2, 3, 4, 5, 6)
BRANCHES = (0, 1, 2, 3, 5, 8, 11)
NON_UNIFORM = ((3, 15, 1.4), (5, 15, 1.4))  # (interval, center, pow): DeepCache's example center and pow
PEER_SETTINGS = ((2, 0), (3, 0), (5, 0), (3, 3), (3, 11))  # (interval, branch) compared with DeepCache's helper
SEED = 20261123
TRAIN_STEPS = 600
BATCH = 32
VERSION = "v1"
# num_heads 8: ComfyUI's SD15 class sets it whatever the config says (the model was always built and trained so)
SMALL_UNET = {
    "use_checkpoint": False, "image_size": 32, "out_channels": 4, "use_spatial_transformer": True, "legacy": False,
    "adm_in_channels": None, "in_channels": 4, "model_channels": 64, "num_res_blocks": [2, 2, 2, 2],
    "transformer_depth": [1, 1, 1, 1, 1, 1, 0, 0], "channel_mult": [1, 2, 2, 2], "transformer_depth_middle": 1,
    "use_linear_in_transformer": False, "context_dim": 768, "num_heads": 8, "num_head_channels": -1,
    "transformer_depth_output": [0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1], "use_temporal_attention": False,
    "use_temporal_resblock": False,
}


@dataclass
class Row:
    scenario: str
    cache: str
    setting: str
    full: int
    shallow: int
    blocks: float
    flops: float
    seconds: float
    psnr: float


@dataclass
class Scenario:
    name: str
    model: Any
    decode: Any
    positive: Any
    negative: Any
    cfg: float
    size: int  # latent side


class BlockMeter:
    """Counts UNet block executions per block (ComfyUI iterates a block's layers, so the hook is on its first
    layer) and forwards (full: the middle block ran; shallow: it did not)."""

    def __init__(self, model: Any, block_flops: list[float]):
        net = model.get_model_object("diffusion_model")
        self.blocks = [*net.input_blocks, net.middle_block, *net.output_blocks]
        self.middle = len(net.input_blocks)
        self.flops = block_flops
        self.counts = [0] * len(self.blocks)
        self.forwards = 0
        self.handles = [net.input_blocks[0][0].register_forward_pre_hook(self._forward)]
        self.handles += [b[0].register_forward_pre_hook(self._hook(i)) for i, b in enumerate(self.blocks)]

    def _forward(self, *_: Any) -> None:
        self.forwards += 1

    def _hook(self, index: int) -> Any:
        def hook(*_: Any) -> None:
            self.counts[index] += 1
        return hook

    def close(self) -> None:
        for h in self.handles:
            h.remove()

    def result(self) -> tuple[int, int, float, float]:
        full = self.counts[self.middle]
        per_forward = sum(self.flops)
        return (full, self.forwards - full, sum(self.counts) / len(self.blocks),
                sum(c * f for c, f in zip(self.counts, self.flops, strict=True)) / per_forward)


def block_flops(model: Any, positive: Any, size: int) -> list[float]:
    """FLOPs of each UNet block (input blocks, middle, output blocks) in one forward, by torch's counter."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    net = model.get_model_object("diffusion_model")
    x = torch.randn(1, 4, size, size)
    with FlopCounterMode(display=False) as counter:
        net(x, torch.tensor([500.0]), context=positive[0][0])
    counts = counter.get_flop_counts()

    def total(prefix: str) -> float:
        # a module's count includes its children's; a block is never called itself (ComfyUI iterates its
        # layers), so its layers are the outermost entries under its name
        return float(sum(sum(ops.values()) for name, ops in counts.items()
                         if name.startswith(prefix + ".") and "." not in name[len(prefix) + 1:]))
    root = next(n for n in counts if n != "Global" and "." not in n)
    names = ([f"{root}.input_blocks.{i}" for i in range(len(net.input_blocks))] + [f"{root}.middle_block"] +
             [f"{root}.output_blocks.{i}" for i in range(len(net.output_blocks))])
    return [total(n) for n in names]


psnr = decoded_psnr


def sample(sc: Scenario, model: Any, flops: list[float]) -> tuple[Any, float, tuple[int, int, float, float]]:
    import comfy.sample
    import torch

    latent = torch.zeros(1, 4, sc.size, sc.size)
    noise = comfy.sample.prepare_noise(latent, 1234)
    meter = BlockMeter(sc.model, flops)
    try:
        t = time.perf_counter()
        out = comfy.sample.sample(model, noise, STEPS, sc.cfg, "euler", "normal", sc.positive, sc.negative, latent,
                                  seed=1234, disable_pbar=True)
        seconds = time.perf_counter() - t
    finally:
        meter.close()
    return sc.decode(out), seconds, meter.result()


def deep_cache(model: Any, interval: int, branch: int, schedule: str = "uniform", center: int = 15,
               power: float = 1.4) -> Any:
    from imageinference.engines.cache.deepcache import DeepCacheConfig
    from imageinference.engines.cache.deepcache_patch import apply_deep_cache

    return apply_deep_cache(model, DeepCacheConfig(interval, branch, schedule=schedule,  # type: ignore[arg-type]
                                                   center=center, power=power))


# ---------------------------------------------------------------- scenarios

def _cond(seed: int, scale: float = 1.0) -> Any:
    import torch

    g = torch.Generator().manual_seed(seed)
    return [[torch.randn(1, 77, 768, generator=g) * scale, {}]]


def scenario_s() -> Scenario:
    import comfy.sd

    from imageinference.testing.tiny_models import TINY, ensure_tiny_models

    root = ensure_tiny_models(["sd15"])
    model, _clip, vae = comfy.sd.load_checkpoint_guess_config(str(TINY["sd15"].path(root)), output_vae=True,
                                                              output_clip=False)[:3]

    return Scenario("S", model, lambda z: vae.decode(z), _cond(SEED), _cond(SEED + 1), 5.0, 16)


def _lift() -> Any:
    import torch

    return torch.randn(4, 3, generator=torch.Generator().manual_seed(SEED + 5))


def _images_to_latents(images: Any) -> tuple[Any, Any, Any]:
    import torch

    small = torch.nn.functional.avg_pool2d(images, 4) * 2 - 1  # (n, 3, 16, 16)
    z = torch.einsum("cr,nrhw->nchw", _lift(), small)
    mean, std = z.mean(dim=(0, 2, 3), keepdim=True), z.std(dim=(0, 2, 3), keepdim=True)
    return (z - mean) / std, mean, std


def _small_unet_model(state_dict: Any = None) -> Any:
    import comfy.model_management
    import comfy.model_patcher
    import comfy.supported_models
    import torch

    config = comfy.supported_models.SD15(dict(SMALL_UNET))
    config.set_inference_dtype(torch.float32, None)
    base = config.get_model({})
    if state_dict is not None:
        base.diffusion_model.load_state_dict(state_dict)
    device = comfy.model_management.get_torch_device()
    return comfy.model_patcher.ModelPatcher(base, load_device=device, offload_device=device)


def trained_unet() -> Any:
    """The small UNet trained by eps-prediction on the procedural set (cached next to the tiny models)."""
    import safetensors.torch
    import torch
    import train_flow

    from imageinference.testing.tiny_models import _randomize, _save, cache_root

    dest = cache_root() / "benchmarks" / f"trained_unet_sd15layout_w64_{VERSION}.safetensors"
    if dest.exists():
        return _small_unet_model(safetensors.torch.load_file(str(dest)))
    patcher = _small_unet_model()
    net = patcher.model.diffusion_model
    sampling = patcher.model.model_sampling
    _randomize(net, SEED)
    with torch.no_grad():
        net.out[-1].weight.mul_(0.1)
    data, _mean, _std = _images_to_latents(train_flow.procedural_images(2048, SEED)[0])
    cond = _cond(SEED + 2, 0.1)[0][0]
    opt = torch.optim.AdamW(net.parameters(), lr=4e-4, weight_decay=0.0)
    g = torch.Generator().manual_seed(SEED + 3)
    started = time.perf_counter()
    net.train()
    for step in range(TRAIN_STEPS):
        x0 = data[torch.randint(0, len(data), (BATCH,), generator=g)]
        eps = torch.randn(x0.shape, generator=g)
        index = torch.randint(0, len(sampling.sigmas), (BATCH,), generator=g)
        sigma = sampling.sigmas[index].float()
        x = (x0 + sigma[:, None, None, None] * eps) / (sigma[:, None, None, None] ** 2 + 1).sqrt()
        pred = net(x, index.float(), context=cond.expand(BATCH, -1, -1))
        loss = ((pred - eps) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 100 == 0 or step == TRAIN_STEPS - 1:
            print(f"T: training step {step + 1}/{TRAIN_STEPS} loss {loss.item():.4f} "
                  f"({time.perf_counter() - started:.0f} s)", flush=True)
    net.eval()
    _save({k: v.detach() for k, v in net.state_dict().items()}, dest, torch.float32,
          {"imageinference": "small SD1.5-layout UNet trained by benchmarks/deep_cache.py"})
    return _small_unet_model(safetensors.torch.load_file(str(dest)))


def scenario_t() -> Scenario:
    import torch
    import train_flow

    model = trained_unet()
    _data, mean, std = _images_to_latents(train_flow.procedural_images(2048, SEED)[0])
    back = torch.linalg.pinv(_lift())  # (3, 4)

    def decode(z: Any) -> Any:
        rgb = torch.einsum("rc,nchw->nrhw", back, z * std + mean)
        img = torch.nn.functional.interpolate((rgb + 1) / 2, scale_factor=4, mode="nearest")
        return img.movedim(1, -1)

    cond = _cond(SEED + 2, 0.1)
    return Scenario("T", model, decode, cond, cond, 1.0, 16)


# ---------------------------------------------------------------- the run

def _setting(interval: int, branch: int, non_uniform: tuple[int, float] | None = None) -> str:
    text = f"deepCacheInterval={interval},deepCacheBranchId={branch}"
    return text if non_uniform is None else f"{text},non-uniform center={non_uniform[0]} pow={non_uniform[1]}"


def run_scenario(sc: Scenario, quick: bool, peer: Any) -> tuple[list[Row], list[dict[str, Any]]]:
    flops = block_flops(sc.model, sc.positive, sc.size)
    sample(sc, sc.model, flops)  # warm-up (first-call loading is not sampling time)
    base, seconds, (full, shallow, blocks, fl) = sample(sc, sc.model, flops)
    rows = [Row(sc.name, "none", "-", full, shallow, blocks, fl, seconds, float("inf"))]
    print(_fmt(rows[-1]), flush=True)
    for kind in ("lazycache", "easycache", "easycache-copied"):
        for thr in CORE_THRESHOLDS[:2] if quick else CORE_THRESHOLDS:
            img, seconds, (full, shallow, blocks, fl) = sample(sc, core_cache(sc.model, kind, thr), flops)
            rows.append(Row(sc.name, kind, f"reuse_threshold={thr}", full, shallow, blocks, fl, seconds,
                            psnr(img, base)))
            print(_fmt(rows[-1]), flush=True)
    intervals, branches = ((2, 4), (0, 5)) if quick else (INTERVALS, BRANCHES)
    images = {"-": base}
    for interval in intervals:
        for branch in branches:
            img, seconds, (full, shallow, blocks, fl) = sample(sc, deep_cache(sc.model, interval, branch), flops)
            rows.append(Row(sc.name, "deepCache", _setting(interval, branch), full, shallow, blocks, fl, seconds,
                            psnr(img, base)))
            images[rows[-1].setting] = img
            print(_fmt(rows[-1]), flush=True)
    for interval, center, power in NON_UNIFORM:
        model = deep_cache(sc.model, interval, 0, "non-uniform", center, power)
        img, seconds, (full, shallow, blocks, fl) = sample(sc, model, flops)
        rows.append(Row(sc.name, "deepCache-non-uniform", _setting(interval, 0, (center, power)), full, shallow,
                        blocks, fl, seconds, psnr(img, base)))
        images[rows[-1].setting] = img
        print(_fmt(rows[-1]), flush=True)
    return rows, peer_pairs(sc, rows, images, peer, quick)


def sample_peer(sc: Scenario, run: Any) -> tuple[Any, float]:
    """(decoded image, seconds) of one sampling run whose model function is DeepCache's helper on diffusers."""
    import comfy.sample
    import torch

    latent = torch.zeros(1, 4, sc.size, sc.size)
    noise = comfy.sample.prepare_noise(latent, 1234)
    with run:
        t = time.perf_counter()
        out = comfy.sample.sample(run.model, noise, STEPS, sc.cfg, "euler", "normal", sc.positive, sc.negative,
                                  latent, seed=1234, disable_pbar=True)
        seconds = time.perf_counter() - t
    return sc.decode(out), seconds


def _agreement(figure: float | None) -> str:
    return "are identical" if figure is None else f"agree to {figure} dB"


def peer_pairs(sc: Scenario, rows: list[Row], images: dict[str, Any], peer: Any,
               quick: bool) -> list[dict[str, Any]]:
    """DeepCache's helper at our settings: its forwards (full = the middle block ran), PSNR against its own uncached
    run, and the PSNR between its image and ours (how closely the two implementations agree)."""
    from imageinference.testing.cache_peers import HelperRun, deepcache_full_steps, diffusers_unet

    helper, quad = peer
    unet = diffusers_unet(sc.model)
    peer_base, _ = sample_peer(sc, HelperRun(helper, unet, sc.model, 1, 0))
    # the two UNet implementations uncached: how far apart they are before any caching
    uncached_agreement = db(psnr(peer_base, images["-"])) if "-" in images else None
    print(f"{sc.name} peer uncached: the two implementations' images "
          f"{_agreement(uncached_agreement)}", flush=True)
    settings = [(i, b, None) for i, b in (PEER_SETTINGS[:2] if quick else PEER_SETTINGS)]
    settings += [(i, 0, (c, p)) for i, c, p in NON_UNIFORM]
    out = []
    for interval, branch, non_uniform in settings:
        full_steps = None if non_uniform is None else deepcache_full_steps(quad, STEPS, interval, *non_uniform)
        run = HelperRun(helper, unet, sc.model, interval, branch, full_steps)
        img, seconds = sample_peer(sc, run)
        setting = _setting(interval, branch, non_uniform)
        mine = next((r for r in rows if r.setting == setting), None)
        if mine is None:
            continue
        full = sum(run.middle_ran)
        pair = {"scenario": sc.name, "setting": setting, "peer_full": full, "peer_shallow": len(run.middle_ran) - full,
                "ours_full": mine.full, "ours_shallow": mine.shallow, "flops": round(mine.flops, 3),
                "peer_psnr": db(psnr(img, peer_base)), "ours_psnr": db(mine.psnr),
                "agreement_psnr": db(psnr(img, images[setting])), "uncached_agreement_psnr": uncached_agreement,
                "peer_seconds": round(seconds, 3)}
        out.append(pair)
        print(f"{sc.name} peer {setting:60s} forwards {full:2d}+{pair['peer_shallow']:2d} (ours {mine.full}+"
              f"{mine.shallow}) {pair['peer_psnr']} dB (ours {pair['ours_psnr']} dB); the two images "
              f"{_agreement(pair['agreement_psnr'])}", flush=True)
    return out


def _fmt(r: Row) -> str:
    return (f"{r.scenario} {r.cache:16s} {r.setting:44s} forwards {r.full:2d}+{r.shallow:2d}  blocks {r.blocks:5.2f}"
            f"  flops {r.flops:5.2f}  {r.seconds:6.2f}s  {r.psnr:6.2f} dB")


def frontier(rows: list[Row]) -> list[Row]:
    """The points no other point of the same scenario and cache beats on both FLOPs and PSNR."""
    out = []
    for r in rows:
        if not any(o is not r and o.scenario == r.scenario and o.cache == r.cache and o.flops <= r.flops and
                   o.psnr >= r.psnr and (o.flops < r.flops or o.psnr > r.psnr) for o in rows):
            out.append(r)
    return sorted(out, key=lambda r: (r.scenario, r.cache, -r.flops))


def dominates(rows: list[Row], scenario: str, core: tuple[str, ...]) -> tuple[bool, list[str]]:
    """Every core point that skipped something (c FLOPs, p dB) has a DeepCache point with <= c FLOPs and >= p dB."""
    mine = [r for r in rows if r.scenario == scenario and r.cache == "deepCache"]
    misses = []
    for r in rows:
        if r.scenario == scenario and r.cache in core and r.flops < STEPS - 1e-9 and not any(
                m.flops <= r.flops + 1e-9 and m.psnr >= r.psnr for m in mine):
            misses.append(f"{r.cache} {r.setting}: {r.flops:.2f} flop-evals, {r.psnr:.2f} dB")
    return not misses, misses


def _db_value(figure: float | None) -> float:
    return float("inf") if figure is None else figure  # db() gives None for identical images


def figures_of(rows: list[Row], pairs: list[dict[str, Any]], names: list[str]) -> dict[str, Any]:
    """The flat figures docs/extras.md and the README quote."""
    figures: dict[str, Any] = {}
    for name in names:
        uncached = next(r for r in rows if r.scenario == name and r.cache == "none")
        figures[f"{name}.uncached_seconds"] = round(uncached.seconds, 2)
        ok, misses = dominates(rows, name, ("lazycache", "easycache", "easycache-copied"))
        figures[f"{name}.deepcache_dominates_core"] = ok
        figures[f"{name}.core_points_missed"] = len(misses)
        for cache in ("lazycache", "easycache", "easycache-copied", "deepCache", "deepCache-non-uniform"):
            points = [r for r in frontier(rows) if r.scenario == name and r.cache == cache]
            for i, r in enumerate(points):
                key = f"{name}.{cache}.frontier.{i}"
                figures[f"{key}.flops"] = round(r.flops, 1)
                figures[f"{key}.psnr"] = db(r.psnr) if db(r.psnr) is not None else "identical"
                figures[f"{key}.seconds"] = round(r.seconds, 2)
                figures[f"{key}.setting"] = r.setting
        mine = [p for p in pairs if p["scenario"] == name]
        figures[f"{name}.peer_pairs"] = len(mine)
        figures[f"{name}.peer_same_forwards"] = sum(p["peer_full"] == p["ours_full"] and
                                                   p["peer_shallow"] == p["ours_shallow"] for p in mine)
        if mine:
            figures[f"{name}.peer_uncached_agreement_db"] = mine[0]["uncached_agreement_psnr"] or "identical"
        # the two implementations' 8-bit images, pair by pair: identical, or how close the furthest pair is
        figures[f"{name}.peer_identical_images"] = sum(p["agreement_psnr"] is None for p in mine)
        agreement = [p["agreement_psnr"] for p in mine if p["agreement_psnr"] is not None]
        if agreement:
            figures[f"{name}.peer_agreement_min_db"] = min(agreement)
        gaps = [abs(p["peer_psnr"] - p["ours_psnr"]) for p in mine if p["peer_psnr"] and p["ours_psnr"]]
        if gaps:
            figures[f"{name}.peer_psnr_gap_max_db"] = round(max(gaps), 2)
        # the bar: ours at least as close to its own uncached image as the helper is to its own
        figures[f"{name}.peer_ours_at_least_as_good"] = sum(_db_value(p["ours_psnr"]) >= _db_value(p["peer_psnr"])
                                                            for p in mine)
        for p in mine:
            key = f"{name}.pair.{p['setting'].replace('deepCacheInterval=', 'i').replace(',deepCacheBranchId=', '-b')}"
            key = key.replace(",non-uniform center=", "-c").replace(" pow=", "-p")
            figures[f"{key}.flops"] = round(p["flops"], 1)
            figures[f"{key}.peer_psnr"] = p["peer_psnr"]
            figures[f"{key}.ours_psnr"] = p["ours_psnr"]
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scenarios", default="S,T")
    parser.add_argument("--quick", action="store_true", help="a few settings (a smoke run, no results file)")
    args = parser.parse_args()
    logging.getLogger().setLevel(logging.WARNING)
    from imageinference.comfyui.runtime import use_inprocess_comfyui

    use_inprocess_comfyui()
    import tempfile

    from imageinference.testing.cache_peers import deepcache

    builders = {"S": scenario_s, "T": scenario_t}
    rows: list[Row] = []
    pairs: list[dict[str, Any]] = []
    names = [n.strip() for n in args.scenarios.split(",")]
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        peer = deepcache(Path(tmp))
        for name in names:
            got, paired = run_scenario(builders[name](), args.quick, peer)
            rows += got
            pairs += paired
    checks = {}
    for name in names:
        ok, misses = dominates(rows, name, ("lazycache", "easycache", "easycache-copied"))
        checks[f"{name} deepCache vs core"] = {"dominates": ok, "misses": misses}
        print(f"{name} deepCache vs core: {'dominates' if ok else 'MISSES ' + '; '.join(misses)}")
    print("frontier (flops, dB, seconds):")
    for r in frontier(rows):
        print("  " + _fmt(r))

    def plain(r: Row) -> dict[str, Any]:
        d = asdict(r)
        d["psnr"] = db(r.psnr)
        d.update(seconds=round(r.seconds, 3), blocks=round(r.blocks, 3), flops=round(r.flops, 3))
        return d

    now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    runs = {name: {"commit": commit(), "date": now, "minutes": round((time.perf_counter() - started) / 60, 1)} for name in names}
    if args.quick:
        print(json.dumps({"rows": [plain(r) for r in rows], "checks": checks, "peer_pairs": pairs}))
        return
    earlier = RESULTS / "deep_cache.json"
    if earlier.exists():  # a run of one scenario keeps the others' results
        rows, pairs, checks, runs = merged(json.loads(earlier.read_text()), rows, pairs, checks, runs)
    details = {"steps": STEPS, "psnr_null_means": "identical to no cache", "runs": runs,
               "rows": [plain(r) for r in rows], "checks": checks, "peer_pairs": pairs}
    write_results("deep_cache", figures_of(rows, pairs, sorted(runs)), details)


def merged(record: dict[str, Any], rows: list[Row], pairs: list[dict[str, Any]], checks: dict[str, Any],
           runs: dict[str, Any]) -> tuple[list[Row], list[dict[str, Any]], dict[str, Any], dict[str, Any]]:
    """This run's scenarios, and the earlier results (a results file's record) of the scenarios it did not run."""
    earlier = record["details"]
    old = sorted({r["scenario"] for r in earlier["rows"]} - set(runs))
    kept = [Row(**{**r, "psnr": float("inf") if r["psnr"] is None else r["psnr"]})
            for r in earlier["rows"] if r["scenario"] in old]
    return (kept + rows, [p for p in earlier["peer_pairs"] if p["scenario"] in old] + pairs,
            {**{k: v for k, v in earlier["checks"].items() if k.split()[0] in old}, **checks},
            {**{k: v for k, v in earlier.get("runs", {}).items() if k in old},
             **{k: {"commit": record["commit"], "date": record["date"]} for k in old if k not in earlier.get("runs", {})},
             **runs})


if __name__ == "__main__":
    main()
