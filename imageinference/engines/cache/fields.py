"""The request fields of each step cache and the node that carries them (pure: no torch, no ComfyUI), shared by
the compiler, the exporter and the nodes."""

from __future__ import annotations

from typing import Literal, NamedTuple

CacheKind = Literal["teaCache", "fbCache", "dbCache"]


class CacheFields(NamedTuple):
    class_type: str  # the pack's node for this cache
    threshold: str  # its threshold field in `acceleratorOptions`


CACHE_FIELDS: dict[CacheKind, CacheFields] = {
    "teaCache": CacheFields("ImageInferenceTeaCache", "teaCacheDistance"),
    "fbCache": CacheFields("ImageInferenceFBCache", "fbCacheThreshold"),
    "dbCache": CacheFields("ImageInferenceDBCache", "dbCacheThreshold"),
}
WINDOW_FIELDS = ("cacheStartStep", "cacheStartStepPercentage", "cacheEndStep", "cacheEndStepPercentage")
