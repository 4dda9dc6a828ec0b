"""The two ComfyUI PuLID-FLUX packs users install, as test oracles for our PuLID injection (tests only):
lldacing/ComfyUI_PuLID_Flux_ll and balazik/ComfyUI-PuLID-Flux, unpacked from the peers' archives (testing/peers.py)
into a temporary folder.

Only the parts that inject an identity embedding into FLUX are loaded; the packs' node modules (`pulidflux.py`,
which import insightface, facexlib and OpenCV at the top for the face pipeline) are not executed:
- lldacing: `PulidFluxHook.py` (its block replacements and its copy of FLUX's forward), `patch_util.py` and
  `encoders_flux.py` imported as submodules of a synthetic package (its `__init__.py` is not run); the two sampling
  wrappers its apply node installs, and the hook helpers they call, compiled one by one from its `pulidflux.py`;
- balazik: `encoders_flux.py` the same way, and the `forward_orig` its apply node puts on the FLUX model, compiled
  from its `pulidflux.py`.
What each apply node does once it has the embedding (the sigma window, which layer goes after which block, the
wrappers or attributes it installs) is the node's own code: the statements of its `apply_pulid_flux` from
`sigma_start = ...` to its return, compiled from its `pulidflux.py` as a function (`method_tail`), so the
face pipeline before them (insightface, EVA-CLIP, facexlib) never runs.

lldacing's pack hard-codes FLUX.1's 19 double and 38 single blocks where our tiny FLUX has fewer (see
`lldacing_layers` and `apply_lldacing`). Neither pack runs on ComfyUI 0.8.0 as vendored: lldacing's OUTER_SAMPLE
wrapper does not take the `latent_shapes` argument ComfyUI passes (its issues #88, #90), balazik's `forward_orig`
not the `transformer_options` / `attn_mask` arguments (its issue #53); both are adapted here (`adapt=True`, the
default) by dropping what the pack cannot take, which changes nothing for a run of one FLUX latent.
"""

from __future__ import annotations

import ast
import importlib
import math
import sys
import types
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import peers

LLDACING = "ComfyUI_PuLID_Flux_ll"
BALAZIK = "ComfyUI-PuLID-Flux"
# FLUX.1's block counts and PuLID's intervals, as both packs hard-code them
FLUX1_DOUBLE, FLUX1_SINGLE, DOUBLE_INTERVAL, SINGLE_INTERVAL = 19, 38, 2, 4
FLUX1_DOUBLE_LAYERS = math.ceil(FLUX1_DOUBLE / DOUBLE_INTERVAL)
FLUX1_LAYERS = FLUX1_DOUBLE_LAYERS + math.ceil(FLUX1_SINGLE / SINGLE_INTERVAL)
LLDACING_KEY = "pulid_flux_model_patcher"  # its additional-models key
LLDACING_WRAPPERS = "PULID_wrappers"  # its wrappers' key


def import_submodules(folder: Path, package: str, modules: Sequence[str]) -> dict[str, types.ModuleType]:
    """Import `modules` of an unpacked pack as submodules of a synthetic package `package` whose path is the folder,
    so their relative imports work while the pack's `__init__.py` (and what it imports) never runs. The package
    leaves sys.modules afterwards; the returned modules keep working."""
    owned = [k for k in sys.modules if k == package or k.startswith(package + ".")]
    if owned:
        raise RuntimeError(f"{package} is already imported")
    root = types.ModuleType(package)
    root.__path__ = [str(folder)]
    sys.modules[package] = root
    try:
        return {m: importlib.import_module(f"{package}.{m}") for m in modules}
    finally:
        for k in [k for k in sys.modules if k == package or k.startswith(package + ".")]:
            del sys.modules[k]


def method_tail(path: Path, cls: str, method: str, first: str, params: Sequence[str],
                namespace: dict[str, Any]) -> Any:
    """The statements of `cls.method` in a peer's source file from the first top-level one that assigns the name
    `first` to the end, compiled from that file (tracebacks name it) as a function of `params`, with `namespace`
    as its globals: the part of a node that runs after work this process cannot do (e.g. a face pipeline)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    body = next(f.body for c in tree.body if isinstance(c, ast.ClassDef) and c.name == cls
                for f in c.body if isinstance(f, ast.FunctionDef) and f.name == method)
    at = next(i for i, st in enumerate(body) if isinstance(st, ast.Assign)
              and any(isinstance(t, ast.Name) and t.id == first for t in st.targets))
    function = ast.parse(f"def tail({', '.join(params)}): pass").body[0]
    assert isinstance(function, ast.FunctionDef)
    function.body = body[at:]
    scope: dict[str, Any] = dict(namespace)
    exec(compile(ast.fix_missing_locations(ast.Module(body=[function], type_ignores=[])), str(path), "exec"), scope)
    return scope["tail"]


@dataclass(frozen=True)
class Lldacing:
    hook: types.ModuleType  # PulidFluxHook.py
    encoders: types.ModuleType  # encoders_flux.py
    source: Path  # its pulidflux.py
    outer_sample: Any  # its OUTER_SAMPLE wrapper (puts its forward on the model while sampling)
    apply_model: Any  # its APPLY_MODEL wrapper (records the sigma its block replacements read)


@dataclass(frozen=True)
class Balazik:
    encoders: types.ModuleType
    source: Path
    forward_orig: Any  # the forward its apply node binds to the FLUX model


def load_lldacing(dest: Path) -> Lldacing:
    folder = peers.unpack(LLDACING, dest)
    mods = import_submodules(folder, "_peer_pulid_lldacing", ["patch_util", "PulidFluxHook", "encoders_flux"])
    hook, util = mods["PulidFluxHook"], mods["patch_util"]
    source = folder / "pulidflux.py"
    set_hook = peers.load_function(source, "set_hook", {"types": types})
    clean_hook = peers.load_function(source, "clean_hook", {})
    outer = peers.load_function(source, "pulid_outer_sample_wrappers_with_override", {
        "add_model_patch_option": util.add_model_patch_option, "PatchKeys": util.PatchKeys, "set_hook": set_hook,
        "clean_hook": clean_hook, "pulid_forward_orig": hook.pulid_forward_orig})
    apply_model = peers.load_function(source, "pulid_apply_model_wrappers", {"PatchKeys": util.PatchKeys})
    return Lldacing(hook, mods["encoders_flux"], source, outer, apply_model)


def load_balazik(dest: Path) -> Balazik:
    from comfy.ldm.flux.layers import timestep_embedding

    folder = peers.unpack(BALAZIK, dest)
    mods = import_submodules(folder, "_peer_pulid_balazik", ["encoders_flux"])
    forward = peers.load_function(folder / "pulidflux.py", "forward_orig",
                                  {"torch": torch, "Tensor": torch.Tensor, "timestep_embedding": timestep_embedding})
    return Balazik(mods["encoders_flux"], folder / "pulidflux.py", forward)


# ---------------------------------------------------------------- the cross-attention layers in each pack's class

def pack_layers(encoders: types.ModuleType, ca_sd: dict[str, torch.Tensor], count: int,
                placement: dict[int, int]) -> nn.ModuleList:
    """`count` of the pack's own PerceiverAttentionCA; layer `placement[n]` gets the weights `<n>.*` of `ca_sd` (a
    PuLID file's `pulid_ca.*` without the prefix); every other layer is NaN, so a pack that used one would put NaN
    into the latent."""
    q, kv = ca_sd["0.to_q.weight"], ca_sd["0.to_kv.weight"]
    dim, inner, kv_dim = int(q.shape[1]), int(q.shape[0]), int(kv.shape[1])
    layers = nn.ModuleList(encoders.PerceiverAttentionCA(dim=dim, dim_head=128, heads=inner // 128, kv_dim=kv_dim)
                           for _ in range(count))
    for layer in layers:
        for p in layer.parameters():
            nn.init.constant_(p, float("nan"))
    for ours, theirs in placement.items():
        layers[theirs].load_state_dict({k.split(".", 1)[1]: v for k, v in ca_sd.items()
                                        if k.split(".", 1)[0] == str(ours)}, strict=True)
    return layers.eval()


def lldacing_index(block: str, index: int) -> int:
    """The layer lldacing's apply node gives a block, as read from it: it counts over FLUX.1's 19 + 38 blocks
    whatever the model, so single block j gets layer 10 + j // 4 (FLUX.1's 10 double-block layers come first).
    Its own loop does the numbering when it runs (apply_lldacing); a wrong reading here puts a NaN layer there."""
    return index // DOUBLE_INTERVAL if block == "double_block" else FLUX1_DOUBLE_LAYERS + index // SINGLE_INTERVAL


def lldacing_layers(pack: Lldacing, ca_sd: dict[str, torch.Tensor], double: int, single: int) -> nn.ModuleList:
    """A tiny PuLID file in lldacing's numbering: 20 layers as for FLUX.1, where the layer lldacing picks for each
    block of a FLUX with `double` + `single` blocks is the one PuLID-FLUX (and we) use after that block."""
    from ..engines.pulid.schedule import ca_slots

    slots = ca_slots(double, single)
    return pack_layers(pack.encoders, ca_sd, FLUX1_LAYERS,
                       {s.layer: lldacing_index(s.block, s.index) for s in slots})


def balazik_layers(pack: Balazik, ca_sd: dict[str, torch.Tensor]) -> nn.ModuleList:
    """The tiny file's layers in balazik's class, in their own order: balazik counts over the model's own blocks."""
    count = len({k.split(".", 1)[0] for k in ca_sd})
    return pack_layers(pack.encoders, ca_sd, count, {n: n for n in range(count)})


def model_dtype(model: Any) -> torch.dtype:
    """The dtype both packs move their layers to: the model's manual cast dtype, else its weights' dtype."""
    dtype: torch.dtype = model.model.manual_cast_dtype or model.model.diffusion_model.dtype
    return dtype


def layer_holder(layers: nn.ModuleList, dtype: torch.dtype) -> nn.Module:
    """What both packs' apply nodes read of their PulidFluxModel: `pulid_ca` and the two intervals. Their class
    would build FLUX.1's twenty full-size layers and the full IDFormer; this holds the tiny layers instead."""
    holder = nn.Module()
    holder.pulid_ca = layers.to(dtype)
    setattr(holder, "double_interval", DOUBLE_INTERVAL)  # noqa: B010 (nn.Module's typed __setattr__)
    setattr(holder, "single_interval", SINGLE_INTERVAL)  # noqa: B010
    return holder


# ---------------------------------------------------------------- applying each pack's patches

def apply_lldacing(model: Any, pack: Lldacing, layers: nn.ModuleList, embedding: torch.Tensor, weight: float,
                   start_at: float = 0.0, end_at: float = 1.0, adapt: bool = True) -> Any:
    """lldacing's ApplyPulidFlux after the embedding (no attention mask), on a clone of `model`: its own code puts
    its block replacements on FLUX.1's block numbers, its layers as an additional model and its two wrappers.

    It keys its LastDitDoubleBlockReplace (which also records the text tokens for the single blocks) at
    ("double_block", 18), FLUX.1's last double block; the tiny model's last double block gets one of the pack's
    LastDitDoubleBlockReplace too, with the arguments the node gave that block, and must, like block 18, be one
    followed by a cross-attention layer.

    `adapt`: ComfyUI 0.8.0 passes `latent_shapes` to OUTER_SAMPLE wrappers, which the pack's wrapper does not take;
    adapted, it is dropped before the pack's wrapper runs (ComfyUI uses it only for runs of several latents, e.g.
    LTX audio+video; one FLUX latent gets the same result without it)."""
    import comfy
    import comfy.model_patcher
    import comfy.patcher_extension

    double = len(model.model.diffusion_model.double_blocks)
    if (double - 1) % DOUBLE_INTERVAL:
        raise ValueError(f"the last double block ({double - 1}) has no PuLID layer; lldacing's LastDit hook needs one")

    def outer_sample(executor: Any, *args: Any, latent_shapes: Any = None, **kwargs: Any) -> Any:
        if latent_shapes is not None and len(latent_shapes) != 1:
            raise ValueError("the adapted lldacing wrapper runs one latent only")
        return pack.outer_sample(executor, *args, **kwargs)

    tail = method_tail(pack.source, "ApplyPulidFlux", "apply_pulid_flux", "sigma_start",
                       ["model", "pulid_flux", "cond", "weight", "start_at", "end_at", "attn_mask", "eva_clip",
                        "face_analysis", "face_helper"],
                       {"comfy": comfy, "set_model_dit_patch_replace": pack.hook.set_model_dit_patch_replace,
                        "wrappers_name": LLDACING_WRAPPERS, "pulid_apply_model_wrappers": pack.apply_model,
                        "pulid_outer_sample_wrappers_with_override": outer_sample if adapt else pack.outer_sample})
    cpu = torch.device("cpu")
    holder = comfy.model_patcher.ModelPatcher(layer_holder(layers, model_dtype(model)), load_device=cpu,
                                              offload_device=cpu)
    (patched,) = tail(model.clone(), holder, embedding.to(model_dtype(model)), weight, start_at, end_at, None, None,
                      None, None)
    dit = patched.model_options["transformer_options"]["patches_replace"]["dit"]
    given = dit[("double_block", double - 1)]
    assert type(given) is pack.hook.DitDoubleBlockReplace and len(given.kwargs) == 1
    dit[("double_block", double - 1)] = pack.hook.LastDitDoubleBlockReplace(given.callback[0], **given.kwargs[0])
    return patched


@contextmanager
def apply_balazik(model: Any, pack: Balazik, layers: nn.ModuleList, embedding: torch.Tensor, weight: float,
                  start_at: float = 0.0, end_at: float = 1.0, adapt: bool = True) -> Iterator[Any]:
    """balazik's ApplyPulidFlux after the embedding: its own code writes its layers, its data and its
    `forward_orig` onto the FLUX module itself (not a clone: every model sharing that module gets PuLID) and
    returns the same model. It counts its layers over the model's own blocks, like PuLID-FLUX. Undone on exit.

    `adapt`: ComfyUI 0.8.0 calls `forward_orig(..., control, transformer_options, attn_mask=...)`, arguments the
    pack's forward does not take; adapted, they are dropped (no attention mask and no per-block patches reach its
    blocks, which the pack never passed on anyway)."""
    flux = model.model.diffusion_model
    raw = pack.forward_orig

    def adapted(self: Any, img: Any, img_ids: Any, txt: Any, txt_ids: Any, timesteps: Any, y: Any,
                guidance: Any = None, control: Any = None, transformer_options: Any = None,
                attn_mask: Any = None) -> Any:
        return raw(self, img, img_ids, txt, txt_ids, timesteps, y, guidance, control)

    tail = method_tail(pack.source, "ApplyPulidFlux", "apply_pulid_flux", "sigma_start",
                       ["self", "model", "pulid_flux", "cond", "weight", "start_at", "end_at", "unique_id"],
                       {"forward_orig": adapted if adapt else raw})
    node = types.SimpleNamespace()  # the node instance: the code keeps a reference to its data on it
    try:
        (same,) = tail(node, model, layer_holder(layers, model_dtype(model)), embedding.to(model_dtype(model)),
                       weight, start_at, end_at, "1")
        yield same
    finally:
        for name in ("pulid_ca", "pulid_double_interval", "pulid_single_interval", "pulid_data", "forward_orig"):
            if name in flux.__dict__ or name in flux._modules:
                delattr(flux, name)
