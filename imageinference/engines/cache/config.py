"""A step cache's configuration (pure: no torch), built from request fields by build.py."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .fields import CacheKind
from .policy import CachePolicy
from .profiles import IDENTITY, BlockSplit

NAMES: dict[CacheKind, str] = {"teaCache": "TeaCache", "fbCache": "FBCache", "dbCache": "DBCache"}
Signal = Literal["residual", "output"]
SIGNALS: tuple[Signal, ...] = ("residual", "output")
"""What FBCache/DBCache compare from step to step: the always-run blocks' residual (their output minus their input;
ParaAttention's First Block Cache, diffusers, and Comfy-WaveSpeed on SD3 and UNets) or their output (Comfy-WaveSpeed's
FLUX path)."""


@dataclass(frozen=True)
class CacheConfig:
    kind: CacheKind
    threshold: float  # TeaCache: accumulated rescaled change; FB/DB: relative residual change
    split: BlockSplit
    policy: CachePolicy = CachePolicy()
    coefficients: tuple[float, ...] = IDENTITY
    signal: Signal = "residual"  # FBCache / DBCache only

    @property
    def name(self) -> str:
        label = NAMES[self.kind]
        return f"{label} {self.split.label}" if self.kind == "dbCache" else label
