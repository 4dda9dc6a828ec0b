"""The step caches' peers as test and benchmark oracles (needs ComfyUI importable): welltop-cn/ComfyUI-TeaCache's
and chengzeyi/Comfy-WaveSpeed's nodes and horseee/DeepCache's helper and schedule, imported from their vendored
archives (peers.py) into a temporary folder, plus what running them side by side with ours takes.

Never imported by the product. Nothing of the peers is copied here: these functions load their code and call it.
"""

from __future__ import annotations

import math
import types
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from . import peers


def comfyui_teacache_node(dest: Path) -> Any:
    """ComfyUI-TeaCache's `TeaCache` node class. Its module imports `precompute_freqs_cis` from ComfyUI's LTXV model,
    which ComfyUI 0.8.0 no longer has (the pack's issue #178: the whole pack fails to load); only its LTXV forward
    uses it, so a stand-in that raises is present while the pack imports, and removed again."""
    import comfy.ldm.lightricks.model as ltxv

    def unavailable(*_args: Any, **_kwargs: Any) -> Any:
        raise NotImplementedError("ComfyUI 0.8.0 has no precompute_freqs_cis (ComfyUI-TeaCache's LTXV path uses it)")

    had = hasattr(ltxv, "precompute_freqs_cis")
    if not had:
        ltxv.precompute_freqs_cis = unavailable
    try:
        pack = peers.import_package(peers.unpack("ComfyUI-TeaCache", dest), "peer_comfyui_teacache")
    finally:
        if not had:
            del ltxv.precompute_freqs_cis
    return pack.NODE_CLASS_MAPPINGS["TeaCache"]


@contextmanager
def wavespeed_node(dest: Path) -> Iterator[Any]:
    """Comfy-WaveSpeed's `ApplyFBCacheOnModel` node class. Applying it wraps ComfyUI's `execution.get_output_data`
    for good; the original is put back when the block ends."""
    import execution

    original = execution.get_output_data
    pack = peers.import_package(peers.unpack("Comfy-WaveSpeed", dest), "peer_comfy_wavespeed")
    try:
        yield pack.NODE_CLASS_MAPPINGS["ApplyFBCacheOnModel"]
    finally:
        execution.get_output_data = original


def copying_double_blocks(model: Any) -> Any:
    """The model with every FLUX double block handed a copy of its input through ComfyUI's block replacement (which
    the peers' copied forwards honour): the same values, but ComfyUI 0.8.0's in-place adds no longer overwrite the
    tensor a peer keeps as the blocks' input."""
    m = model.clone()

    def copy_input(args: dict[str, Any], extra: dict[str, Any]) -> Any:
        return extra["original_block"]({**args, "img": args["img"].clone()})

    for i in range(len(model.model.diffusion_model.double_blocks)):
        m.set_model_patch_replace(copy_input, "dit", "double_block", i)
    return m


# ---------------------------------------------------------------- DeepCache

def deepcache(dest: Path) -> tuple[Any, Callable[..., Any]]:
    """(DeepCache's DeepCacheSDHelper class, its pipelines' sample_from_quad_center). The pipeline module imports
    a diffusers of its time, so the function is taken from the file alone (peers.load_function)."""
    import numpy as np

    folder = peers.unpack("DeepCache", dest)
    package = peers.import_package(folder / "DeepCache", "peer_deepcache")
    quad = peers.load_function(folder / "DeepCache" / "sd" / "pipeline_stable_diffusion.py",
                               "sample_from_quad_center", {"np": np})
    return package.DeepCacheSDHelper, quad


def deepcache_full_steps(quad: Callable[..., Any], steps: int, interval: int, center: int, power: float) -> set[int]:
    """The full steps of DeepCache's non-uniform schedule, as its pipelines compute them (uniform=False)."""
    import numpy as np

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", np.exceptions.ComplexWarning)  # its np.int32(complex) drops the imaginary
        full, _power = quad(steps, math.ceil(steps / interval), center=center, pow=power)
    return {int(s) for s in full}


def diffusers_unet(comfy_model: Any) -> Any:
    """A diffusers UNet2DConditionModel holding exactly the weights of an SD1.x-layout ComfyUI UNet (ComfyUI's own
    diffusers key map; every key mapped, none left over). Built from the config ComfyUI built the model from, not
    the one it was asked for: a model class may override entries (SD1.5's sets `num_heads` to 8 whatever the
    checkpoint's config says), and a head count is no weight, so a copy with other heads loads strictly yet
    attends differently. Down level i has attention where ComfyUI's transformer_depth says so; up level j
    (ComfyUI's output blocks 3j..3j+2) where transformer_depth_output, which ComfyUI lists from the top level
    down, does."""
    import comfy.utils
    from diffusers import UNet2DConditionModel

    unet_config = comfy_model.model.model_config.unet_config
    net = comfy_model.model.diffusion_model
    levels = len(unet_config["channel_mult"])
    down_attn = [unet_config["transformer_depth"][2 * i] > 0 for i in range(levels)]
    out_depth = list(reversed(unet_config["transformer_depth_output"]))  # in output-block order
    up_attn = [out_depth[3 * j] > 0 for j in range(levels)]
    unet: Any = UNet2DConditionModel(
        sample_size=unet_config["image_size"], in_channels=unet_config["in_channels"],
        out_channels=unet_config["out_channels"], layers_per_block=unet_config["num_res_blocks"][0],
        block_out_channels=tuple(unet_config["model_channels"] * m for m in unet_config["channel_mult"]),
        down_block_types=tuple("CrossAttnDownBlock2D" if a else "DownBlock2D" for a in down_attn),
        up_block_types=tuple("CrossAttnUpBlock2D" if a else "UpBlock2D" for a in up_attn),
        cross_attention_dim=unet_config["context_dim"], attention_head_dim=unet_config["num_heads"])
    ours = net.state_dict()
    mapped = {key: ours[comfy_key] for key, comfy_key in comfy.utils.unet_to_diffusers(dict(unet_config)).items()
              if comfy_key in ours}
    if len(mapped) != len(ours):
        raise ValueError(f"{len(ours) - len(mapped)} UNet weights have no diffusers name")
    unet.load_state_dict(mapped, strict=True)
    return unet.to(next(net.parameters()).dtype).eval()


class HelperRun:
    """DeepCache's helper on a diffusers UNet, as a ComfyUI model's model function: ComfyUI's own input scaling,
    timesteps and denoised output around the diffusers UNet, so the sampler, noise and CFG are ComfyUI's.

    `full_steps` (the non-uniform schedule): the helper itself knows only the uniform `(t - start) % interval == 0`,
    so its interval is set before each step to 1 (run in full) or to more steps than any run has (cached), as the
    pipelines' `interval_seq` does. `middle_ran` records, per forward, whether the UNet's middle block ran. Use as a
    context manager: leaving it unwraps the UNet's blocks."""

    def __init__(self, helper_class: Any, unet: Any, model: Any, interval: int, branch: int,
                 full_steps: set[int] | None = None):
        self.pipe = types.SimpleNamespace(unet=unet, scheduler=types.SimpleNamespace(timesteps=[]))
        self.helper = helper_class(pipe=self.pipe)
        self.helper.set_params(cache_interval=interval, cache_branch_id=branch)
        self.full_steps = full_steps
        self.middle_ran: list[bool] = []
        self.sampling = model.get_model_object("model_sampling")
        self.model = model.clone()
        self.model.set_model_unet_function_wrapper(self.forward)

    def forward(self, apply_model: Any, args: dict[str, Any]) -> Any:
        x, sigma, c = args["input"], args["timestep"], args["c"]
        sigmas = c["transformer_options"]["sample_sigmas"]
        self.pipe.scheduler.timesteps = [self.sampling.timestep(s).float() for s in sigmas[:-1]]
        step = [float(s) for s in sigmas].index(float(sigma[0]))
        if self.full_steps is not None:
            self.helper.params["cache_interval"] = 1 if step in self.full_steps else 1 << 20
        ran: list[int] = []
        hook = self.pipe.unet.mid_block.resnets[0].register_forward_pre_hook(lambda *_: ran.append(step))
        try:
            eps = self.pipe.unet(self.sampling.calculate_input(sigma, x), self.sampling.timestep(sigma)[0].float(),
                                 encoder_hidden_states=c["c_crossattn"], return_dict=False)[0]
        finally:
            hook.remove()
        self.middle_ran.append(bool(ran))
        return self.sampling.calculate_denoised(sigma, eps, x)

    def __enter__(self) -> HelperRun:
        self.helper.enable()
        return self

    def __exit__(self, *_: Any) -> None:
        self.helper.disable()
