"""From request-field values to a cache configuration (torch-free; the layout comes from patch.model_layout)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from ..samplers.windows import StepWindow
from .engine import CacheConfig
from .fields import CACHE_FIELDS, CacheKind
from .policy import CachePolicy
from .profiles import (
    BlockSplit,
    TeaCacheProfile,
    calibration_path,
    dbcache_split,
    load_calibrations,
    teacache_profile,
)


class LayoutLike(Protocol):
    @property
    def family(self) -> str: ...

    @property
    def kinds(self) -> Sequence[str]: ...


def cache_config(kind: CacheKind, threshold: float, layout: LayoutLike, *, window: StepWindow | None = None,
                 max_consecutive: int = 3, skip_interval: int | None = None,
                 profile: TeaCacheProfile | None = None, user_dir: str | None = None) -> CacheConfig:
    """`threshold` is the request's value: teaCacheDistance, fbCacheThreshold or dbCacheThreshold."""
    blocks = len(layout.kinds)
    window = window or StepWindow()
    if kind == "teaCache":
        if profile is None:
            profile = teacache_profile(layout.family, load_calibrations(calibration_path(user_dir)))
        return CacheConfig(kind, profile.threshold(threshold), BlockSplit(0, 0),
                           CachePolicy(window, max_consecutive), profile.coefficients)
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"{CACHE_FIELDS[kind].threshold} must be within 0-1")
    if blocks < 2:
        raise ValueError(f"{kind} needs a model with at least 2 transformer blocks")
    if kind == "fbCache":
        return CacheConfig(kind, threshold, BlockSplit(1, 0), CachePolicy(window, max_consecutive))
    return CacheConfig(kind, threshold, dbcache_split(blocks),
                       CachePolicy(window, max_consecutive, refresh_interval=skip_interval))

