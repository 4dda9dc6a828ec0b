"""DeepCache: the request's `acceleratorOptions.deepCache` for UNet models (SD1.x, SDXL), as MODEL -> MODEL."""

from __future__ import annotations

from typing import Any

from comfy_api.latest import io

from ...contract.errors import ContractError, code_for
from ...engines.cache.deepcache import BRANCH_DEFAULT, INTERVAL_DEFAULT, DeepCacheConfig
from ...engines.cache.deepcache_patch import apply_deep_cache, branch_of, unet_of
from ...engines.cache.fields import WINDOW_FIELDS
from .common import CATEGORY, cache_policy_inputs, node_id, step_window

BASE = ("acceleratorOptions",)


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
                "blocks) on that kept feature. Interval 1 never caches. Shared rules: the window cacheStartStep/"
                "cacheStartStepPercentage .. cacheEndStep/cacheEndStepPercentage is counted in the steps the sampler "
                "really runs; the first and last steps always run in full; at most cacheMaxConsecutiveSteps steps "
                "are cached in a row; the conditional and unconditional passes share one decision; every sampling "
                "run starts empty and logs what it cached."),
            inputs=[
                io.Model.Input("model", tooltip="An SD1.x or SDXL UNet model."),
                io.Int.Input("deepCacheInterval", default=INTERVAL_DEFAULT, min=1, max=100,
                             tooltip="imageInference `acceleratorOptions.deepCacheInterval`: a full step every N steps "
                                     "(2 caches every other step, 3 two of three; 1 = never)."),
                io.Int.Input("deepCacheBranchId", default=BRANCH_DEFAULT, min=0, max=20,
                             tooltip="imageInference `acceleratorOptions.deepCacheBranchId`: the skip branch that "
                                     "stays live on cached steps (0 = the shallowest, caches the most; SD1.5 has "
                                     "0-11, SDXL 0-8)."),
                *cache_policy_inputs(),
            ],
            outputs=[io.Model.Output(tooltip="The model with DeepCache; the input model is unchanged.")],
        )

    @classmethod
    def execute(cls, model: Any, deepCacheInterval: int, deepCacheBranchId: int, cacheMaxConsecutiveSteps: int,
                **window: Any) -> io.NodeOutput:
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
        config = DeepCacheConfig(deepCacheInterval, deepCacheBranchId, steps, cacheMaxConsecutiveSteps)
        try:
            return io.NodeOutput(apply_deep_cache(model, config))
        except ValueError as e:
            raise ContractError.single("conflictingAcceleratorOptions", str(e), "acceleratorOptions.deepCache",
                                       "boolean") from e
