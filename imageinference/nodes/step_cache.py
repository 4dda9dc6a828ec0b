"""Step caches: TeaCache, FBCache and DBCache, the request's `acceleratorOptions`, as MODEL -> MODEL nodes."""

from __future__ import annotations

from typing import Any

import folder_paths
from comfy_api.latest import io

from ..cache.build import cache_config
from ..cache.engine import CacheKind
from ..cache.patch import apply_step_cache, model_layout
from ..cache.policy import MAX_CONSECUTIVE_DEFAULT
from ..schema.errors import ContractError
from .common import CATEGORY, UNSET, node_id, step_window

BASE = ("acceleratorOptions",)
POLICY_DOC = (
    " Shared rules: the window cacheStartStep/cacheStartStepPercentage .. cacheEndStep/cacheEndStepPercentage is "
    "counted in the steps the sampler really runs; the first and last steps always run; at most "
    "cacheMaxConsecutiveSteps steps are skipped in a row; the conditional and unconditional passes share one "
    "decision; every sampling run starts with empty caches and logs how many steps it skipped. FLUX and SD3 only.")


def _policy_inputs() -> list[Any]:
    step = {"default": UNSET, "min": UNSET, "max": 200}
    return [
        io.Int.Input("cacheStartStep", tooltip="imageInference `acceleratorOptions.cacheStartStep`: first step that "
                     "may be skipped (-1 = not set).", **step),
        io.Int.Input("cacheStartStepPercentage", default=UNSET, min=UNSET, max=99,
                     tooltip="imageInference `acceleratorOptions.cacheStartStepPercentage` (0-99; -1 = not set)."),
        io.Int.Input("cacheEndStep", tooltip="imageInference `acceleratorOptions.cacheEndStep`: caching stops "
                     "before this step (-1 = not set).", **step),
        io.Int.Input("cacheEndStepPercentage", default=UNSET, min=UNSET, max=100,
                     tooltip="imageInference `acceleratorOptions.cacheEndStepPercentage` (1-100; -1 = not set)."),
        io.Int.Input("cacheMaxConsecutiveSteps", default=MAX_CONSECUTIVE_DEFAULT, min=1, max=5,
                     tooltip="imageInference `acceleratorOptions.cacheMaxConsecutiveSteps`: most steps skipped in a "
                     "row (1-5)."),
    ]


def _apply(kind: CacheKind, model: Any, threshold: float, skip_interval: int | None, start: int, start_pct: int,
           end: int, end_pct: int, max_consecutive: int) -> io.NodeOutput:
    window = step_window(BASE, ("cacheStartStep", start), ("cacheEndStep", end),
                         ("cacheStartStepPercentage", start_pct), ("cacheEndStepPercentage", end_pct))
    try:
        layout = model_layout(model)
    except ValueError as e:
        raise ContractError.single("unsupportedAcceleratorOptions", str(e), f"acceleratorOptions.{kind}",
                                   "boolean") from e
    config = cache_config(kind, threshold, layout, window=window, max_consecutive=max_consecutive,
                          skip_interval=skip_interval, user_dir=folder_paths.get_user_directory())
    try:
        return io.NodeOutput(apply_step_cache(model, config))
    except ValueError as e:
        raise ContractError.single("conflictingAcceleratorOptions", str(e), f"acceleratorOptions.{kind}",
                                   "boolean") from e


def _schema(name: str, display: str, description: str, own: list[Any]) -> io.Schema:
    return io.Schema(
        node_id=node_id(name), display_name=display, category=CATEGORY, description=description + POLICY_DOC,
        inputs=[io.Model.Input("model", tooltip="A FLUX or SD3 model."), *own, *_policy_inputs()],
        outputs=[io.Model.Output(tooltip="The model with the step cache; the input model is unchanged.")],
    )


class TeaCacheNode(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return _schema("TeaCache", "TeaCache (imageInference)", (
            "imageInference `acceleratorOptions.teaCache`: before each step, the change of the first block's "
            "timestep-modulated input is rescaled by the model family's polynomial (published for FLUX, or fitted "
            "by `imageinference calibrate-teacache`) and accumulated; while the sum stays under the threshold, all "
            "transformer blocks are skipped and the residual of the last computed step is reused. "
            "teaCacheDistance x the family's threshold scale is the threshold (FLUX: 0.8, so 0.5 -> 0.4)."), [
            io.Float.Input("teaCacheDistance", default=0.5, min=0.0, max=1.0, step=0.01,
                           tooltip="imageInference `acceleratorOptions.teaCacheDistance` (0-1): higher skips more; "
                           "0 never skips."),
        ])

    @classmethod
    def execute(cls, model: Any, teaCacheDistance: float, cacheStartStep: int, cacheStartStepPercentage: int,
                cacheEndStep: int, cacheEndStepPercentage: int, cacheMaxConsecutiveSteps: int) -> io.NodeOutput:
        return _apply("teaCache", model, teaCacheDistance, None, cacheStartStep, cacheStartStepPercentage,
                      cacheEndStep, cacheEndStepPercentage, cacheMaxConsecutiveSteps)


class FBCacheNode(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return _schema("FBCache", "First Block Cache (imageInference)", (
            "imageInference `acceleratorOptions.fbCache`: the first transformer block always runs; when its residual "
            "moved less than fbCacheThreshold (relative L1) since the last computed step, the remaining blocks are "
            "replaced by their cached residual."), [
            io.Float.Input("fbCacheThreshold", default=0.25, min=0.0, max=1.0, step=0.01,
                           tooltip="imageInference `acceleratorOptions.fbCacheThreshold` (0-1): higher skips more; "
                           "0 never skips."),
        ])

    @classmethod
    def execute(cls, model: Any, fbCacheThreshold: float, cacheStartStep: int, cacheStartStepPercentage: int,
                cacheEndStep: int, cacheEndStepPercentage: int, cacheMaxConsecutiveSteps: int) -> io.NodeOutput:
        return _apply("fbCache", model, fbCacheThreshold, None, cacheStartStep, cacheStartStepPercentage,
                      cacheEndStep, cacheEndStepPercentage, cacheMaxConsecutiveSteps)


class DBCacheNode(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return _schema("DBCache", "DBCache (imageInference)", (
            "imageInference `acceleratorOptions.dbCache`: the first Fn blocks always run (one per 12 blocks, at least "
            "one) and their residual decides; the last Bn blocks always run (one once the model has 8 or more) to "
            "correct the cached middle; at least every dbCacheSkipInterval steps everything runs."), [
            io.Float.Input("dbCacheThreshold", default=0.25, min=0.0, max=1.0, step=0.01,
                           tooltip="imageInference `acceleratorOptions.dbCacheThreshold` (0-1): higher skips more; "
                           "0 never skips."),
            io.Int.Input("dbCacheSkipInterval", default=5, min=1, max=100,
                         tooltip="imageInference `acceleratorOptions.dbCacheSkipInterval`: a full step at least every "
                         "N steps (at most N-1 skipped in a row; 1 = never skip)."),
        ])

    @classmethod
    def execute(cls, model: Any, dbCacheThreshold: float, dbCacheSkipInterval: int, cacheStartStep: int,
                cacheStartStepPercentage: int, cacheEndStep: int, cacheEndStepPercentage: int,
                cacheMaxConsecutiveSteps: int) -> io.NodeOutput:
        return _apply("dbCache", model, dbCacheThreshold, dbCacheSkipInterval, cacheStartStep,
                      cacheStartStepPercentage, cacheEndStep, cacheEndStepPercentage, cacheMaxConsecutiveSteps)
