"""The models of benchmarks/step_caches.py: A (tiny FLUX), B (8-block random SD3-shaped MMDiT), C (the same shape,
trained here by flow matching on procedural images). Conditioning is fixed random tensors (no text encoder)."""

from __future__ import annotations

from typing import Any

SEED = 20261122


def _comfy() -> None:
    from imageinference.comfy_runtime import use_inprocess_comfyui

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


def build(name: str) -> tuple[Any, Any]:
    """(Scenario, TeaCache coefficients calibrated on that model with the calibration tool)."""
    _comfy()
    import comfy.sd
    from step_caches import Scenario

    from imageinference.cache.calibrate import calibrate
    from imageinference.testing.tiny_models import TINY, ensure_tiny_models

    if name == "A":
        root = ensure_tiny_models(["flux"])
        model = comfy.sd.load_diffusion_model(str(TINY["flux"].path(root)))
        dm = model.model.diffusion_model
        pos = _cond(8, 768, SEED, guidance=3.5)
        sc = Scenario("A", model, _vae(), pos, pos, 1.0, list(dm.double_blocks) + list(dm.single_blocks))
    elif name == "B":
        model = comfy.sd.load_diffusion_model(str(sd3_file(8, 1801)))
        sc = Scenario("B", model, _vae(), _cond(8, 2048, SEED), _cond(8, 2048, SEED + 1), 4.5,
                      list(model.model.diffusion_model.joint_blocks))
    elif name == "C":
        import train_flow

        model = comfy.sd.load_diffusion_model(str(train_flow.trained_model()))
        cond = train_flow.conditioning()
        sc = Scenario("C", model, _vae(), cond, cond, 1.0, list(model.model.diffusion_model.joint_blocks))
    else:
        raise SystemExit(f"unknown scenario {name}; use A, B or C")
    # calibration runs other seeds/conditionings than the measured run
    prompts = [_cond(8, 768 if name == "A" else 2048, SEED + 100 + i, **({"guidance": 3.5} if name == "A" else {}))
               for i in range(3)] if name != "C" else [sc.positive]
    fit = calibrate(model, prompts, steps=28, seeds=(7, 8, 9), cfg=1.0, negative=sc.negative if name == "B" else None)
    return sc, fit.profile
