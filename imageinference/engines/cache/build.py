"""From request-field values to a cache configuration (pure: no torch; the layout comes from patch.model_layout).

Every problem is the contract's error naming the request field, so a node or a request sees the documented
format, never a bare exception. The API's 0-1 values map onto each criterion's threshold through
profiles.api_threshold (1.0 = skip every step the policy allows). FBCache/DBCache on a model whose always-run
blocks are more than policy.ALWAYS_RUN_SHARE_LIMIT of its blocks log a warning recommending TeaCache when they are
installed (`cache_warnings` returns it)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Protocol

from ...contract.errors import ContractError, code_for
from ..samplers.windows import StepWindow
from .config import SIGNALS, CacheConfig, Signal
from .fields import CACHE_FIELDS, CacheKind
from .policy import CachePolicy, always_run_warning
from .profiles import (
    BlockSplit,
    TeaCacheProfile,
    api_threshold,
    calibration_path,
    dbcache_split,
    load_calibrations,
    teacache_profile,
)

log = logging.getLogger("imageinference.cache")


class LayoutLike(Protocol):
    @property
    def family(self) -> str: ...

    @property
    def kinds(self) -> Sequence[str]: ...


def cache_config(kind: CacheKind, threshold: float, layout: LayoutLike, *, window: StepWindow | None = None,
                 max_consecutive: int = 3, skip_interval: int | None = None,
                 profile: TeaCacheProfile | None = None, user_dir: str | None = None,
                 skip_last_step: bool = False, uncapped: bool = False,
                 signal: Signal = "residual") -> CacheConfig:
    """`threshold` is the request's value: teaCacheDistance, fbCacheThreshold or dbCacheThreshold.

    `skip_last_step`, `uncapped` and `signal` are node options with no API field: the rules of the packs users
    know (ComfyUI-TeaCache, Comfy-WaveSpeed), see policy.py and config.SIGNALS."""
    blocks = len(layout.kinds)
    window = window or StepWindow()
    field = CACHE_FIELDS[kind].threshold
    if not 0.0 <= threshold <= 1.0:
        raise ContractError.single(code_for("invalid", field), f"'{field}' must be within 0-1",
                                   f"acceleratorOptions.{field}", "float")
    if signal not in SIGNALS:
        raise ValueError(f"the cache signal must be one of {', '.join(SIGNALS)}")
    cap = None if uncapped else max_consecutive
    last = not skip_last_step
    if kind == "teaCache":
        if profile is None:
            path = calibration_path(user_dir)
            try:
                calibrations = load_calibrations(path)
            except (ValueError, OSError) as exc:
                raise ContractError.single("invalidTeaCacheCalibration", f"the TeaCache calibration file cannot be "
                                           f"used: {exc} (fix or delete {path}, or run `python -m imageinference "
                                           "calibrate-teacache --write` again)", "acceleratorOptions.teaCache",
                                           "boolean") from exc
            profile = teacache_profile(layout.family, calibrations)
        return CacheConfig(kind, profile.threshold(threshold), BlockSplit(0, 0),
                           CachePolicy(window, cap, compute_last_step=last), profile.coefficients)
    if blocks < 2:
        raise ContractError.single("unsupportedAcceleratorOptions", f"{kind} needs a model with at least 2 "
                                   f"transformer blocks (the first one decides); this one has {blocks}; use "
                                   "teaCache", f"acceleratorOptions.{kind}", "boolean")
    if kind == "fbCache":
        config = CacheConfig(kind, api_threshold(threshold, 1.0), BlockSplit(1, 0),
                             CachePolicy(window, cap, compute_last_step=last), signal=signal)
    else:
        config = CacheConfig(kind, api_threshold(threshold, 1.0), dbcache_split(blocks),
                             CachePolicy(window, cap, refresh_interval=skip_interval, compute_last_step=last),
                             signal=signal)
    for warning in cache_warnings(config, blocks):
        log.warning(warning)
    return config


def cache_warnings(config: CacheConfig, blocks: int) -> list[str]:
    """Install-time warnings for a configuration on a model of `blocks` transformer blocks."""
    if config.kind == "teaCache":
        return []
    warning = always_run_warning(config.name, config.policy, config.split.first + config.split.last, blocks)
    return [warning] if warning else []

