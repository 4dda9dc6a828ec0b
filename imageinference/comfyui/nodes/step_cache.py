"""Step caches: TeaCache, FBCache and DBCache, the request's `acceleratorOptions`, as MODEL -> MODEL nodes."""

from __future__ import annotations

from typing import Any

import folder_paths
from comfy_api.latest import io

from ...contract.errors import ContractError
from ...engines.cache.build import cache_config
from ...engines.cache.config import SIGNALS, Signal
from ...engines.cache.fields import CACHE_FIELDS, WINDOW_FIELDS, CacheKind
from ...engines.cache.patch import UnsupportedModel, apply_step_cache, model_layout
from .common import CATEGORY, cache_policy_inputs, node_id, step_window

BASE = ("acceleratorOptions",)
POLICY_DOC = (
    " Shared rules: the window cacheStartStep/cacheStartStepPercentage .. cacheEndStep/cacheEndStepPercentage is "
    "counted in the steps the sampler really runs; the first and last steps always run; at most "
    "cacheMaxConsecutiveSteps steps are skipped in a row; the conditional and unconditional passes share one "
    "decision; every sampling run starts with empty caches and logs how many steps it skipped. FLUX and SD3 only.")


def _apply(kind: CacheKind, model: Any, threshold: float, skip_interval: int | None, window: Any,
           max_consecutive: int, skip_last_step: bool, uncapped: bool, signal: Signal) -> io.NodeOutput:
    try:
        layout = model_layout(model)
    except UnsupportedModel as e:
        raise ContractError.single("unsupportedAcceleratorOptions", str(e), f"acceleratorOptions.{kind}",
                                   "boolean") from e
    config = cache_config(kind, threshold, layout, window=window, max_consecutive=max_consecutive,
                          skip_interval=skip_interval, user_dir=folder_paths.get_user_directory(),
                          skip_last_step=skip_last_step, uncapped=uncapped, signal=signal)
    try:
        return io.NodeOutput(apply_step_cache(model, config))
    except ValueError as e:
        raise ContractError.single("conflictingAcceleratorOptions", str(e), f"acceleratorOptions.{kind}",
                                   "boolean") from e


PEER_RULES = "node option (no API field; a request always uses the default)"


def peer_rule_inputs() -> list[Any]:
    """The skip rules of the node packs users know, for the same steps and image as theirs."""
    return [
        io.Boolean.Input("skipLastStep", default=False, optional=True,
                         tooltip=f"{PEER_RULES}: let the cache skip the last step too, as ComfyUI-TeaCache and "
                                 "Comfy-WaveSpeed do. Off: the last step always runs (its error would land in the "
                                 "image uncorrected)."),
        io.Boolean.Input("uncappedSkips", default=False, optional=True,
                         tooltip=f"{PEER_RULES}: no cap on steps skipped in a row (cacheMaxConsecutiveSteps is "
                                 "ignored), as ComfyUI-TeaCache and Comfy-WaveSpeed with max_consecutive_cache_hits "
                                 "-1 do."),
    ]


def _threshold(name: str, default: float) -> Any:
    return io.Float.Input(name, default=default, min=0.0, max=1.0, step=0.01,
                          tooltip=f"imageInference `acceleratorOptions.{name}` (0-1): higher skips more; 0 never "
                                  "skips.")


class _StepCacheNode(io.ComfyNode):
    KIND: CacheKind
    NAME: str
    DISPLAY: str
    DESCRIPTION: str
    THRESHOLD: tuple[str, float]

    @classmethod
    def own_inputs(cls) -> list[Any]:
        return [_threshold(*cls.THRESHOLD)]

    @classmethod
    def node_options(cls) -> list[Any]:
        return peer_rule_inputs()

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=node_id(cls.NAME), display_name=cls.DISPLAY, category=CATEGORY,
            description=cls.DESCRIPTION + POLICY_DOC,
            inputs=[io.Model.Input("model", tooltip="A FLUX or SD3 model."), *cls.own_inputs(), *cache_policy_inputs(),
                    *cls.node_options()],
            outputs=[io.Model.Output(tooltip="The model with the step cache; the input model is unchanged.")],
        )

    @classmethod
    def execute(cls, model: Any, **widgets: Any) -> io.NodeOutput:
        start, start_pct, end, end_pct = ((name, int(widgets[name])) for name in WINDOW_FIELDS)
        window = step_window(BASE, start, end, start_pct, end_pct)
        skip_interval = widgets.get("dbCacheSkipInterval")
        return _apply(cls.KIND, model, float(widgets[cls.THRESHOLD[0]]),
                      None if skip_interval is None else int(skip_interval), window,
                      int(widgets["cacheMaxConsecutiveSteps"]), bool(widgets.get("skipLastStep", False)),
                      bool(widgets.get("uncappedSkips", False)), widgets.get("firstBlockSignal", "residual"))


class TeaCacheNode(_StepCacheNode):
    KIND, NAME, DISPLAY = "teaCache", "TeaCache", "TeaCache (imageInference)"
    THRESHOLD = (CACHE_FIELDS["teaCache"].threshold, 0.5)
    DESCRIPTION = (
        "imageInference `acceleratorOptions.teaCache`: before each step, the change of the first block's "
        "timestep-modulated input is rescaled by the model family's polynomial (published for FLUX, or fitted by "
        "`imageinference calibrate-teacache`) and accumulated; while the sum stays under the threshold, all "
        "transformer blocks are skipped and the residual of the last computed step is reused. teaCacheDistance x "
        "the family's threshold scale is the threshold (FLUX: 0.8, so 0.5 -> 0.4).")


class FBCacheNode(_StepCacheNode):
    KIND, NAME, DISPLAY = "fbCache", "FBCache", "First Block Cache (imageInference)"
    THRESHOLD = (CACHE_FIELDS["fbCache"].threshold, 0.25)
    DESCRIPTION = (
        "imageInference `acceleratorOptions.fbCache`: the first transformer block always runs; when its residual "
        "moved less than fbCacheThreshold (relative L1) since the last computed step, the remaining blocks are "
        "replaced by their cached residual.")

    @classmethod
    def node_options(cls) -> list[Any]:
        return [*peer_rule_inputs(),
                io.Combo.Input("firstBlockSignal", options=list(SIGNALS), default="residual", optional=True,
                               tooltip=f"{PEER_RULES}: what is compared from step to step: the first block's "
                                       "residual (ParaAttention's First Block Cache; Comfy-WaveSpeed on SD3) or its "
                                       "output (Comfy-WaveSpeed's FLUX path, whose thresholds mean less change).")]


class DBCacheNode(_StepCacheNode):
    KIND, NAME, DISPLAY = "dbCache", "DBCache", "DBCache (imageInference)"
    THRESHOLD = (CACHE_FIELDS["dbCache"].threshold, 0.25)
    DESCRIPTION = (
        "imageInference `acceleratorOptions.dbCache`: the first Fn blocks always run (one per 12 blocks, at least "
        "one) and their residual decides; the last Bn blocks always run (one once the model has 8 or more) to "
        "correct the cached middle; at least every dbCacheSkipInterval steps everything runs.")

    @classmethod
    def own_inputs(cls) -> list[Any]:
        return [_threshold(*cls.THRESHOLD),
                io.Int.Input("dbCacheSkipInterval", default=5, min=1, max=100,
                             tooltip="imageInference `acceleratorOptions.dbCacheSkipInterval`: a full step at least "
                                     "every N steps (at most N-1 skipped in a row; 1 = never skip).")]
