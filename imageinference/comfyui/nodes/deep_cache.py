"""DeepCache: the request's `acceleratorOptions.deepCache` for UNet models (SD1.x, SDXL), as MODEL -> MODEL."""

from __future__ import annotations

from typing import Any

from comfy_api.latest import io

from ...contract.errors import ContractError, code_for
from ...engines.cache.deepcache import (
    BRANCH_DEFAULT,
    CENTER_DEFAULT,
    INTERVAL_DEFAULT,
    POWER_DEFAULT,
    SCHEDULES,
    DeepCacheConfig,
)
from ...engines.cache.deepcache_patch import apply_deep_cache, branch_of, unet_of
from ...engines.cache.fields import WINDOW_FIELDS
from ...engines.cache.policy import MAX_CONSECUTIVE_DEFAULT
from .common import CATEGORY, cache_policy_inputs, node_id, step_window

BASE = ("acceleratorOptions",)
NODE_OPTION = "node option (no API field; a request always uses the default)"


def _policy_inputs() -> list[Any]:
    """The shared window inputs; cacheMaxConsecutiveSteps stays (requests carry it) but says that DeepCache's
    interval alone sets how many steps are cached in a row."""
    out = [i for i in cache_policy_inputs() if i.id != "cacheMaxConsecutiveSteps"]
    out.append(io.Int.Input("cacheMaxConsecutiveSteps", default=MAX_CONSECUTIVE_DEFAULT, min=1, max=5,
                            tooltip="imageInference `acceleratorOptions.cacheMaxConsecutiveSteps` (1-5): the step "
                                    "caches' cap; DeepCache does not use it, deepCacheInterval N caches exactly N - 1 "
                                    "steps in a row, as DeepCache defines it."))
    return out


class DeepCacheNode(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=node_id("DeepCache"),
            display_name="DeepCache (imageInference)",
            category=CATEGORY,
            description=(
                "imageInference `acceleratorOptions.deepCache` for UNet models (SD1.x, SDXL): a full step keeps the "
                "feature the UNet's deep part hands to the output block of skip branch deepCacheBranchId; the next "
                "deepCacheInterval - 1 steps run only the shallow branch (input blocks 0..branch and their output "
                "blocks) on that kept feature, as DeepCache's uniform schedule does (full steps 0, N, 2N, ...; the "
                "last step too is cached when the pattern says so). Interval 1 never caches. The window "
                "cacheStartStep/cacheStartStepPercentage .. cacheEndStep/cacheEndStepPercentage is counted in the "
                "steps the sampler really runs; outside it every step runs in full. The conditional and "
                "unconditional passes share one decision; every sampling run starts empty and logs what it "
                "cached."),
            inputs=[
                io.Model.Input("model", tooltip="An SD1.x or SDXL UNet model."),
                io.Int.Input("deepCacheInterval", default=INTERVAL_DEFAULT, min=1, max=100,
                             tooltip="imageInference `acceleratorOptions.deepCacheInterval`: a full step every N steps "
                                     "(2 caches every other step, 3 two of three; 1 = never)."),
                io.Int.Input("deepCacheBranchId", default=BRANCH_DEFAULT, min=0, max=20,
                             tooltip="imageInference `acceleratorOptions.deepCacheBranchId`: the skip branch that "
                                     "stays live on cached steps (0 = the shallowest, caches the most; SD1.5 has "
                                     "0-11, SDXL 0-8)."),
                *_policy_inputs(),
                io.Combo.Input("deepCacheSchedule", options=list(SCHEDULES), default="uniform", optional=True,
                               tooltip=f"{NODE_OPTION}: uniform = DeepCache's default (a full step every "
                                       "deepCacheInterval steps); non-uniform = its pipelines' uniform=False: "
                                       "ceil(steps / interval) full steps, dense around nonUniformCenter."),
                io.Int.Input("nonUniformCenter", default=CENTER_DEFAULT, min=0, max=1000, optional=True,
                             tooltip=f"{NODE_OPTION}: non-uniform schedule only: the step the full steps crowd "
                                     "around (DeepCache's `center`, 15 in its example)."),
                io.Float.Input("nonUniformPower", default=POWER_DEFAULT, min=1.02, max=4.0, step=0.02, optional=True,
                               tooltip=f"{NODE_OPTION}: non-uniform schedule only: DeepCache's `pow` (1.4 in its "
                                       "example); lowered by 0.02 until the count of full steps comes out, as "
                                       "DeepCache does."),
            ],
            outputs=[io.Model.Output(tooltip="The model with DeepCache; the input model is unchanged.")],
        )

    @classmethod
    def execute(cls, model: Any, deepCacheInterval: int, deepCacheBranchId: int, cacheMaxConsecutiveSteps: int,
                deepCacheSchedule: str = "uniform", nonUniformCenter: int = CENTER_DEFAULT,
                nonUniformPower: float = POWER_DEFAULT, **window: Any) -> io.NodeOutput:
        start, start_pct, end, end_pct = ((name, int(window.get(name, -1))) for name in WINDOW_FIELDS)
        steps = step_window(BASE, start, end, start_pct, end_pct)
        for name, value, low, high in (("deepCacheInterval", deepCacheInterval, 1, 100),
                                       ("deepCacheBranchId", deepCacheBranchId, 0, 20),
                                       ("cacheMaxConsecutiveSteps", cacheMaxConsecutiveSteps, 1, 5)):
            if not low <= value <= high:
                raise ContractError.single(code_for("invalid", name), f"'{name}' must be between {low} and {high}",
                                           f"acceleratorOptions.{name}", "integer")
        try:
            net = unet_of(model)
        except ValueError as e:
            raise ContractError.single("unsupportedAcceleratorOptions", str(e), "acceleratorOptions.deepCache",
                                       "boolean") from e
        try:
            branch_of(net, deepCacheBranchId)
        except ValueError as e:
            raise ContractError.single("invalidDeepCacheBranchId", str(e), "acceleratorOptions.deepCacheBranchId",
                                       "integer") from e
        config = DeepCacheConfig(deepCacheInterval, deepCacheBranchId, steps,
                                 "non-uniform" if deepCacheSchedule == "non-uniform" else "uniform",
                                 int(nonUniformCenter), float(nonUniformPower))
        try:
            return io.NodeOutput(apply_deep_cache(model, config))
        except ValueError as e:
            raise ContractError.single("conflictingAcceleratorOptions", str(e), "acceleratorOptions.deepCache",
                                       "boolean") from e
