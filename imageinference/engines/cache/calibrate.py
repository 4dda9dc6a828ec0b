"""TeaCache calibration (adapter): run a model uncached and fit the rescale polynomial for its family.

For every pair of consecutive steps we record x = relative L1 change of the first block's modulated input and
y = relative L1 change of the block stack's residual (output - input: what a skipped step reuses). A polynomial
fitted to (x, y) turns TeaCache's cheap signal into an estimate of what skipping would get wrong.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import comfy.patcher_extension
import comfy.sample
import comfy.utils
import numpy as np
import torch

from .engine import CacheConfig, CacheRun
from .fitting import fit
from .patch import RUN_KEY, apply_step_cache, model_layout
from .policy import CachePolicy
from .profiles import BlockSplit, TeaCacheProfile, calibrated_scale, polyval

log = logging.getLogger("imageinference.cache")


@dataclass
class Calibration:
    family: str
    coefficients: tuple[float, ...]
    points: list[tuple[float, float]] = field(default_factory=list)

    @property
    def profile(self) -> TeaCacheProfile:
        scale = calibrated_scale([max(polyval(self.coefficients, x), 0.0) for x, _ in self.points])
        return TeaCacheProfile(self.coefficients, scale, "calibrated")

    @property
    def mean_abs_error(self) -> float:
        if not self.points:
            return float("nan")
        return float(np.mean([abs(polyval(self.coefficients, x) - y) for x, y in self.points]))


def calibrate(model: Any, prompts: Sequence[Any], *, steps: int = 28, seeds: Sequence[int] = (1, 2),
              cfg: float = 1.0, negative: Any = None, width: int = 64, height: int = 64,
              sampler: str = "euler", scheduler: str = "simple") -> Calibration:
    """Sample every prompt (ComfyUI CONDITIONING) with every seed, uncached, and fit the polynomial."""
    layout = model_layout(model)
    points: list[tuple[float, float]] = []
    # a TeaCache that never skips (threshold 0) observes every step; its run records the trace
    config = CacheConfig("teaCache", 0.0, BlockSplit(0, 0), CachePolicy())
    traced = apply_step_cache(model, config)
    runs: list[CacheRun] = []

    def keep_run(executor: Any, *args: Any, **kwargs: Any) -> Any:
        run = args[-1]["transformer_options"].get(RUN_KEY)
        if run is not None and run.trace is None:
            run.trace = []
            runs.append(run)
        return executor(*args, **kwargs)

    traced.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.CALC_COND_BATCH, "imageinference_calibrate",
                                keep_run)
    channels = model.get_model_object("latent_format").latent_channels
    latent = torch.zeros(1, channels, height // 8, width // 8)
    pbar = comfy.utils.ProgressBar(len(prompts) * len(seeds))
    for positive in prompts:
        for seed in seeds:
            noise = comfy.sample.prepare_noise(latent, seed)
            comfy.sample.sample(traced, noise, steps, cfg, sampler, scheduler, positive,
                                negative if negative is not None else positive, latent, seed=seed,
                                disable_pbar=True)
            pbar.update(1)
    for run in runs:
        points.extend(run.trace or [])
    coefficients = fit(points)
    result = Calibration(layout.family, coefficients, points)
    log.info("TeaCache calibration (%s): %d points, coefficients %s, mean |error| %.4f", layout.family,
             len(points), coefficients, result.mean_abs_error)
    return result
