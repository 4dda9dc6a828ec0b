"""A step cache's configuration (pure: no torch), built from request fields by build.py."""

from __future__ import annotations

from dataclasses import dataclass

from .fields import CacheKind
from .policy import CachePolicy
from .profiles import IDENTITY, BlockSplit

NAMES: dict[CacheKind, str] = {"teaCache": "TeaCache", "fbCache": "FBCache", "dbCache": "DBCache"}


@dataclass(frozen=True)
class CacheConfig:
    kind: CacheKind
    threshold: float  # TeaCache: accumulated rescaled change; FB/DB: relative residual change
    split: BlockSplit
    policy: CachePolicy = CachePolicy()
    coefficients: tuple[float, ...] = IDENTITY

    @property
    def name(self) -> str:
        label = NAMES[self.kind]
        return f"{label} {self.split.label}" if self.kind == "dbCache" else label
