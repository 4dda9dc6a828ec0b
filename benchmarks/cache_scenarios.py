"""The models of benchmarks/step_caches.py (a module, not a script). Conditioning is fixed random tensors (no text
encoder).

  A  the tiny FLUX (1 double + 1 single block, random weights), cfg 1 (distilled guidance 3.5)
  B  a deep random SD3-shaped MMDiT (12 joint blocks), cfg 4.5
  C  a deep SD3-shaped MMDiT (12 joint blocks) trained by benchmarks/train_flow.py, class prompt vs empty, cfg 4.5
  D  a shallow random SD3-shaped MMDiT (3 joint blocks), cfg 4.5
  E  a shallow SD3-shaped MMDiT (3 joint blocks) trained by benchmarks/train_flow.py, cfg 4.5
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

SEED = 20261122
SCENARIOS = ("A", "B", "C", "D", "E")
DESCRIPTION = {
    "A": "tiny FLUX, 1 double + 1 single block, random weights, cfg 1",
    "B": "SD3-shaped MMDiT, 12 joint blocks, random weights, cfg 4.5",
    "C": "SD3-shaped MMDiT, 12 joint blocks, trained by flow matching, cfg 4.5",
    "D": "SD3-shaped MMDiT, 3 joint blocks, random weights, cfg 4.5",
    "E": "SD3-shaped MMDiT, 3 joint blocks, trained by flow matching, cfg 4.5",
}


@dataclass
class Scenario:
    name: str
    model: Any
    vae: Any
    positive: Any
    negative: Any
    cfg: float
    blocks: list[Any]
    base_steps: list[int] = field(default_factory=list)  # block calls per step, uncached


class BlockCounter:
    """Counts transformer block executions per sampler step through forward hooks, whoever skipped them."""

    def __init__(self, blocks: list[Any], steps: int):
        self.per_step = [0] * steps
        self.step = 0
        self.handles = [b.register_forward_pre_hook(self._hook) for b in blocks]

    def _hook(self, *_: Any) -> None:
        self.per_step[min(self.step, len(self.per_step) - 1)] += 1

    def callback(self, step: int, *_: Any) -> None:
        self.step = step + 1

    def close(self) -> None:
        for h in self.handles:
            h.remove()


def measure(sc: Scenario, model: Any, steps: int, seed: int) -> tuple[Any, float, float, list[int]]:
    """(decoded image, sampling seconds, model calls = block calls / blocks, block calls per step) of one run:
    euler/simple, 64x64 (an 8x8 latent), the scenario's conditioning and cfg."""
    import time

    import comfy.sample
    import torch

    latent = torch.zeros(1, 16, 8, 8)
    noise = comfy.sample.prepare_noise(latent, seed)
    counter = BlockCounter(sc.blocks, steps)
    try:
        t = time.perf_counter()
        out = comfy.sample.sample(model, noise, steps, sc.cfg, "euler", "simple", sc.positive, sc.negative, latent,
                                  seed=seed, disable_pbar=True, callback=counter.callback)
        seconds = time.perf_counter() - t
    finally:
        counter.close()
    return sc.vae.decode(out), seconds, sum(counter.per_step) / len(sc.blocks), counter.per_step


def _comfy() -> None:
    from imageinference.comfyui.runtime import use_inprocess_comfyui

    use_inprocess_comfyui()


def _vae() -> Any:
    import comfy.sd
    import comfy.utils

    from imageinference.testing.tiny_models import TINY, ensure_tiny_models

    root = ensure_tiny_models(["vae16"])
    return comfy.sd.VAE(sd=comfy.utils.load_torch_file(str(TINY["vae16"].path(root))))


def _cond(context_tokens: int, pooled: int, seed: int, **extra: Any) -> Any:
    import torch

    g = torch.Generator().manual_seed(seed)
    return [[torch.randn(1, context_tokens, 4096, generator=g),
             {"pooled_output": torch.randn(1, pooled, generator=g), **extra}]]


def sd3_file(depth: int, seed: int) -> Any:
    """A random SD3-shaped MMDiT of `depth` joint blocks, cached next to the tiny models."""
    import torch

    from imageinference.testing.tiny_models import _save, cache_root, make_sd3

    dest = cache_root() / "benchmarks" / f"sd3_depth{depth}_seed{seed}.safetensors"
    if not dest.exists():
        _save(make_sd3(depth, seed), dest, torch.float32, {"imageinference": f"random SD3-shaped MMDiT depth {depth}"})
    return dest


def build(name: str, calibrated: bool = True) -> tuple[Any, Any]:
    """(Scenario, TeaCache profile calibrated on that model with the calibration tool, or None if not
    `calibrated`)."""
    _comfy()
    import comfy.sd

    from imageinference.engines.cache.calibrate import calibrate
    from imageinference.testing.tiny_models import TINY, ensure_tiny_models

    negative = None
    if name == "A":
        root = ensure_tiny_models(["flux"])
        model = comfy.sd.load_diffusion_model(str(TINY["flux"].path(root)))
        dm = model.model.diffusion_model
        pos = _cond(8, 768, SEED, guidance=3.5)
        sc = Scenario("A", model, _vae(), pos, pos, 1.0, list(dm.double_blocks) + list(dm.single_blocks))
        prompts = [_cond(8, 768, SEED + 100 + i, guidance=3.5) for i in range(3)]
    elif name in ("B", "D"):
        model = comfy.sd.load_diffusion_model(str(sd3_file(12 if name == "B" else 3, 1801)))
        negative = _cond(8, 2048, SEED + 1)
        sc = Scenario(name, model, _vae(), _cond(8, 2048, SEED), negative, 4.5,
                      list(model.model.diffusion_model.joint_blocks))
        prompts = [_cond(8, 2048, SEED + 100 + i) for i in range(3)]
    elif name in ("C", "E"):
        import train_flow

        model = comfy.sd.load_diffusion_model(str(train_flow.trained_model(12 if name == "C" else 3)))
        negative = train_flow.conditioning(None)
        sc = Scenario(name, model, _vae(), train_flow.conditioning(0), negative, 4.5,
                      list(model.model.diffusion_model.joint_blocks))
        prompts = [train_flow.conditioning(0), train_flow.conditioning(1)]
    else:
        raise SystemExit(f"unknown scenario {name}; use one of {', '.join(SCENARIOS)}")
    if not calibrated:
        return sc, None
    # the calibration runs other seeds (and, where there are any, other conditionings) than the measured run
    fit = calibrate(model, prompts, steps=28, seeds=(7, 8, 9), cfg=1.0, negative=negative)
    return sc, fit.profile
