"""Builders shared by the in-process ComfyUI tests (tests/comfy). Each feature appends its own section."""


# ---------------------------------------------------------------- face detailer
# The tiny SD1.5 model and tiny YOLO detectors whose answers are known (imageinference/testing/tiny_detector.py):
# faces are bright 16-pixel squares on a 320 x 320 dark background, a face's box is its square grown by 8 pixels
# each side. Test modules import the fixtures they use: `from comfy_helpers import detectors, sd15`.

import json as _json
import os as _os

import pytest as _pytest
import torch as _torch

FD_SIZE = 320
FD_BBOX_FILE = "bbox/tiny_face_cells_d1.pt"
FD_SEGM_FILE = "segm/tiny_face_cells_d1-seg.pt"


@_pytest.fixture(scope="module")
def detectors(comfy, tmp_path_factory):
    """The tiny detectors (and files that are not detectors) in a registered ultralytics folder; catalog entries
    (runware:35@1 is the tiny bbox detector, test:faceseg@1 the segmentation one)."""
    import folder_paths

    from imageinference.testing.tiny_detector import DETECTORS, detector_path, ensure_tiny_detectors

    root = ensure_tiny_detectors()
    folder = tmp_path_factory.mktemp("ultralytics")
    for kind, (sub, name) in DETECTORS.items():
        (folder / sub).mkdir(exist_ok=True)
        (folder / sub / name).symlink_to(detector_path(kind, root))
    _torch.save({"weights": _torch.zeros(3)}, folder / "bbox" / "not_a_detector.pt")
    marker = tmp_path_factory.mktemp("marker") / "pickle-ran"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    _torch.save({"model": Payload()}, folder / "bbox" / "payload.pt")
    folder_paths.add_model_folder_path("ultralytics", str(folder), is_default=True)
    path = _os.environ["IMAGEINFERENCE_CATALOG"]
    with open(path) as fh:
        backup = fh.read()
    cat = _json.loads(backup)
    cat["models"].update({
        "runware:35@1": {"kind": "detector", "files": {"model": f"ultralytics/{FD_BBOX_FILE}"}},
        "test:faceseg@1": {"kind": "detector", "files": {"model": f"ultralytics/{FD_SEGM_FILE}"}},
    })
    with open(path, "w") as fh:
        _json.dump(cat, fh)
    yield {"folder": folder, "marker": marker, "payload": folder / "bbox" / "payload.pt"}
    with open(path, "w") as fh:  # the session's catalog is shared by later tests and servers
        fh.write(backup)


@_pytest.fixture(scope="module")
def sd15(comfy):
    """(model, vae, positive, negative) of the tiny SD1.5 checkpoint."""
    from imageinference.comfyui.nodes.model_loader import AIRModelLoader

    model, clip, vae = AIRModelLoader.execute("test:sd15@1").result
    pos = comfy.CLIPTextEncode().encode(clip, "a detailed face")[0]
    neg = comfy.CLIPTextEncode().encode(clip, "blurry")[0]
    return model, vae, pos, neg


def detail_run(sd15, image, **kw):
    """The Face Detailer node on `image` with small, test-sized settings; (images, masks, detections dict)."""
    from imageinference.comfyui.nodes.face_detailer import FaceDetailer

    model, vae, pos, neg = sd15
    args = dict(detector="runware:35@1", confidence=0.5, maskPadding=4, maskBlur=4, inpaintSize=128, steps=4,
                CFGScale=5.0, strength=0.7, scheduler="Euler", seed=3)
    args.update(kw)
    images, masks, detections = FaceDetailer.execute(image, model, vae, pos, neg, **args).result
    return images, masks, _json.loads(detections)


def faces_image(faces, seed=0, size=FD_SIZE):
    """A (1, size, size, 3) picture with faces (column, row, level) as detector cells (tiny_detector.face_image)."""
    from imageinference.testing.tiny_detector import face_image

    return face_image(size, tuple(faces), seed)


def face_rect(col, row, size=FD_SIZE):
    """The box the tiny bbox detector reports for the face in cell (col, row): (x0, y0, x1, y1) in pixels."""
    from imageinference.testing.tiny_detector import face_box

    return face_box(size, col, row)


def far_from(rects, grow, size=FD_SIZE):
    """Pixels farther than `grow` from every rect (x0, y0, x1, y1): True where nothing may change."""
    keep = _torch.ones((size, size), dtype=_torch.bool)
    for x0, y0, x1, y1 in rects:
        keep[max(0, y0 - grow):y1 + grow, max(0, x0 - grow):x1 + grow] = False
    return keep


def pixels_in(image, rect):
    x0, y0, x1, y1 = rect
    return image[:, y0:y1, x0:x1]


def recorded_model_calls(sd15, image, **kw):
    """(the detailer's result, [(latent shape, sigma, cond_or_uncond, x)] of every model call of the detail pass)."""
    import comfy.patcher_extension

    model, vae, pos, neg = sd15
    calls = []
    recording = model.clone()

    def record(executor, x, t, *args, **kwargs):
        # BaseModel.apply_model(x, t, c_concat, c_crossattn, control, transformer_options, **kwargs)
        options = kwargs.get("transformer_options") or (args[3] if len(args) > 3 else {})
        calls.append((tuple(x.shape), float(t.flatten()[0]), tuple(options.get("cond_or_uncond", ())),
                      x.detach().clone()))
        return executor(x, t, *args, **kwargs)

    recording.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.APPLY_MODEL, "test_detail_calls", record)
    result = detail_run((recording, vae, pos, neg), image, **kw)
    return result, calls


# ---------------------------------------------------------------- IP-Adapter
# Tiny adapters in the real layouts (imageinference/testing/tiny_ipadapter.py) registered in the session catalog,
# and the recording of every cross-attention call of a sampling step: the image term an adapter added is
# recovered as (what reaches to_out - the layer's own attention recomputed here) and compared with the IP-Adapter
# formula computed from the adapter file's weights. Fixtures: `ipa_models`, `ipa_sd15`, `ipa_vitl`, `ipa_sdxl`,
# `ipa_flux` (test modules bind the ones they use: `ipa_models = comfy_helpers.ipa_models`).

_F = _torch.nn.functional

IPA_SD15, IPA_PLUS, IPA_FULL, IPA_FLUX, IPA_REDUX, IPA_SDXL = (
    "test:ipadapter-sd15@1", "test:ipadapter-sd15@plus", "test:ipadapter-sd15@full-face", "test:ipadapter-flux@1",
    "runware:105@1", "test:ipadapter-sdxl@1")


def ipa_guide(seed, h=224, w=224):
    return _torch.rand(1, h, w, 3, generator=_torch.Generator().manual_seed(seed))


IPA_GUIDES = [ipa_guide(11), ipa_guide(12, 240, 200)]  # the second is resized and centre-cropped by the encoder


@_pytest.fixture(scope="module")
def ipa_models(comfy, tiny_models_root, test_catalog):
    """The tiny adapters and encoders in ComfyUI's folders and in the session catalog (plus broken entries);
    {key: file} of imageinference.testing.tiny_ipadapter.TINY_IPADAPTER."""
    import folder_paths

    from imageinference.testing.tiny_ipadapter import TINY_IPADAPTER, catalog_entries, ensure_tiny_ipadapters

    root = ensure_tiny_ipadapters()
    for folder in ("ipadapter", "clip_vision"):
        folder_paths.add_model_folder_path(folder, str(root / folder), is_default=True)
    data = _json.loads(test_catalog.read_text())
    entries = catalog_entries()
    broken = dict(entries[IPA_SD15])
    data["models"].update(entries)
    data["models"]["test:ipadapter-noencoder@1"] = {**broken, "files": {"model": broken["files"]["model"]}}
    data["models"]["test:ipadapter-lostencoder@1"] = {
        **broken, "files": {**broken["files"], "imageEncoder": "clip_vision/not_there.safetensors"}}
    data["models"]["test:ipadapter-wrongencoder@1"] = {
        **broken, "files": {**broken["files"], "imageEncoder": entries[IPA_REDUX]["files"]["imageEncoder"]}}
    backup = test_catalog.read_text()
    test_catalog.write_text(_json.dumps(data))
    yield {key: m.path(root) for key, m in TINY_IPADAPTER.items()}
    test_catalog.write_text(backup)  # the session's catalog is shared by later tests and servers


@_pytest.fixture(scope="module")
def ipa_nodes(ipa_models):
    """The pack's IP-Adapter node module, with the tiny adapters in the catalog."""
    from imageinference.comfyui.nodes import ip_adapter

    return ip_adapter


@_pytest.fixture(scope="module")
def ipa_sd15(comfy):
    """(model, clip, vae, positive, negative) of the tiny SD1.5 checkpoint."""
    from imageinference.comfyui.nodes.model_loader import AIRModelLoader

    model, clip, vae = AIRModelLoader.execute("test:sd15@1").result
    pos = comfy.CLIPTextEncode().encode(clip, "a lighthouse at dusk")[0]
    neg = comfy.CLIPTextEncode().encode(clip, "blurry")[0]
    return model, clip, vae, pos, neg


@_pytest.fixture(scope="module")
def ipa_vitl(ipa_models):
    """ViT-L embeddings of IPA_GUIDES and of a black image, encoded here with ComfyUI's encoder."""
    import comfy.clip_vision

    encoder = comfy.clip_vision.load(str(ipa_models["clip_vision_vitl"]))
    with _torch.no_grad():
        outs = [encoder.encode_image(g, crop=True) for g in IPA_GUIDES]
        black = encoder.encode_image(_torch.zeros(1, 224, 224, 3), crop=True)
    return {"embeds": _torch.cat([o["image_embeds"].float() for o in outs]),
            "hidden": _torch.cat([o["penultimate_hidden_states"].float() for o in outs]),
            "black_embeds": black["image_embeds"].float(),
            "black_hidden": black["penultimate_hidden_states"].float()}


@_pytest.fixture(scope="module")
def ipa_sdxl(comfy, ipa_models):
    """(model, positive, negative): the tiny SDXL UNet with SDXL's 70 cross-attention layers and conditioning
    tensors of SDXL's shapes (its CLIP-G text encoder is too large to build here)."""
    import comfy.sd

    from imageinference.testing.tiny_extras import TINY_EXTRAS
    from imageinference.testing.tiny_models import cache_root

    model = comfy.sd.load_diffusion_model(str(TINY_EXTRAS["sdxl_unet_full"].path(cache_root())))
    assert type(model.model).__name__ == "SDXL"
    g = _torch.Generator().manual_seed(31)
    pos, neg = ([[_torch.randn(1, 77, 2048, generator=g), {"pooled_output": _torch.randn(1, 1280, generator=g)}]]
                for _ in range(2))
    return model, pos, neg


@_pytest.fixture(scope="module")
def ipa_flux(comfy, tiny_models_root):
    import comfy.sd

    from imageinference.testing.tiny_models import TINY

    return comfy.sd.load_diffusion_model(str(TINY["flux"].path(tiny_models_root)))


def ipa_weights(path):
    import safetensors.torch

    return {k: v.float() for k, v in safetensors.torch.load_file(str(path)).items()}


def ipa_apply(nodes_ipa, model, air, images=None, weight=1.0, combine="concat", scaling="only_v",
              weight_type="normal", composition=-1.0, middle_block=None):
    """The IP-Adapter node's execute, as ComfyUI calls it (every input a list)."""
    images = IPA_GUIDES[:1] if images is None else images
    extra = {} if middle_block is None else {"middleBlock": [middle_block]}
    return nodes_ipa.IPAdapter.execute([model], images, [air], [weight], [combine], [scaling], [weight_type],
                                       [composition], **extra).result[0]


def ipa_sample(model, pos, neg, steps=1, cfg=3.0, seed=3, size=64):
    import comfy.sample

    latent = _torch.zeros(1, 4, size // 8, size // 8)
    noise = comfy.sample.prepare_noise(latent, seed)
    return comfy.sample.sample(model, noise, steps, cfg, "euler", "normal", pos, neg, latent, seed=seed,
                               disable_pbar=True)


def attn2_modules(diffusion_model):
    """(block kind, block id, layer) -> the CrossAttention module, as ComfyUI keys them."""
    from comfy.ldm.modules.attention import SpatialTransformer

    found = {}
    groups = [("input", enumerate(diffusion_model.input_blocks)), ("middle", [(0, diffusion_model.middle_block)]),
              ("output", enumerate(diffusion_model.output_blocks))]
    for kind, blocks in groups:
        for block_id, module in blocks:
            for layer in module:
                if isinstance(layer, SpatialTransformer):
                    for i, tb in enumerate(layer.transformer_blocks):
                        found[(kind, block_id, i)] = tb.attn2
    return found


def heads_attention(q, k, v, heads):
    """softmax(q kᵀ/√d) v per head, written out (not scaled_dot_product_attention)."""
    b, n, width = q.shape
    d = width // heads
    qh = q.reshape(b, n, heads, d).permute(0, 2, 1, 3)
    kh = k.reshape(b, k.shape[1], heads, d).permute(0, 2, 1, 3)
    vh = v.reshape(b, v.shape[1], heads, d).permute(0, 2, 1, 3)
    probs = _torch.softmax(qh @ kh.transpose(-1, -2) / d ** 0.5, dim=-1)
    return (probs @ vh).permute(0, 2, 1, 3).reshape(b, n, width)


class Calls:
    """Records each attn2 call of a run: its input and context (an attn2_patch that changes nothing) and the
    attention output that reaches to_out (a forward pre-hook)."""

    def __init__(self, model):
        self.model = model.clone()
        self.model.set_model_attn2_patch(self.patch)
        self.modules = attn2_modules(model.get_model_object("diffusion_model"))
        self.calls, self.outs = [], []

    def patch(self, n, context, value, extra):
        self.calls.append({"t": extra["transformer_index"], "key": (*extra["block"], extra["block_index"]),
                           "cou": list(extra["cond_or_uncond"]), "n": n.detach().clone(),
                           "ctx": context.detach().clone(), "heads": extra["n_heads"]})
        return n, context, value

    def run(self, pos, neg, **kw):
        handles = [m.to_out.register_forward_pre_hook(lambda _m, args: self.outs.append(args[0].detach().clone()))
                   for m in self.modules.values()]
        try:
            ipa_sample(self.model, pos, neg, **kw)
        finally:
            for h in handles:
                h.remove()
        assert len(self.calls) == len(self.outs) > 0
        with _torch.no_grad():
            for call, out in zip(self.calls, self.outs, strict=True):
                attn = self.modules[call["key"]]
                call["q"] = attn.to_q(call["n"]).float()
                k, v = attn.to_k(call["ctx"]).float(), attn.to_v(call["ctx"]).float()
                call["image_term"] = out.float() - heads_attention(call["q"], k, v, call["heads"])
        return self.calls


def ipa_rows(cond, uncond, cou, batch):
    per = batch // len(cou)
    return _torch.cat([(cond if c == 0 else uncond).expand(per, -1, -1) for c in cou])


def expected_term(call, sd, key_number, tokens, w, scaling="only_v", images=1):
    """The IP-Adapter image attention of one layer, from the adapter's own weights; with several images' tokens
    one after the other, the value mean of k_mean_v_penalty_c is each image's own."""
    cond, uncond = tokens
    wk, wv = sd[f"ip_adapter.{key_number}.to_k_ip.weight"], sd[f"ip_adapter.{key_number}.to_v_ip.weight"]
    k = ipa_rows(cond @ wk.T, uncond @ wk.T, call["cou"], call["q"].shape[0])
    v = ipa_rows(cond @ wv.T, uncond @ wv.T, call["cou"], call["q"].shape[0])
    c = k.shape[-1]
    if scaling == "only_v":
        return w * heads_attention(call["q"], k, v, call["heads"])
    if scaling == "kv":
        return heads_attention(call["q"], w * k, w * v, call["heads"])
    wp = w * c / 1280
    if scaling == "kv_penalty_c":
        return heads_attention(call["q"], wp * k, wp * v, call["heads"])
    parts = v.reshape(v.shape[0], images, -1, c)
    mean = parts.mean(dim=2, keepdim=True)
    return heads_attention(call["q"], wp * k, (parts - mean + wp * mean).reshape(v.shape), call["heads"])


def key_numbers(calls):
    """Adapter key number of each layer: input blocks, then output blocks, then the middle block; 1, 3, 5, ..."""
    order = sorted({c["key"] for c in calls}, key=lambda k: ({"input": 0, "output": 1, "middle": 2}[k[0]], k[1], k[2]))
    return {key: 2 * i + 1 for i, key in enumerate(order)}


def plain_tokens(sd, embeds):
    c = sd["image_proj.norm.weight"].shape[0]
    x = (embeds @ sd["image_proj.proj.weight"].T + sd["image_proj.proj.bias"]).reshape(embeds.shape[0], -1, c)
    return _F.layer_norm(x, (c,), sd["image_proj.norm.weight"], sd["image_proj.norm.bias"])


def resampler_tokens(sd, hidden):
    """The plus adapter's perceiver resampler, written out with explicit attention."""
    def ln(x, key):
        return _F.layer_norm(x, (x.shape[-1],), sd[f"{key}.weight"], sd[f"{key}.bias"])

    x = hidden @ sd["image_proj.proj_in.weight"].T + sd["image_proj.proj_in.bias"]
    lat = sd["image_proj.latents"].expand(hidden.shape[0], -1, -1)
    depth = len({k.split(".")[2] for k in sd if k.startswith("image_proj.layers.")})
    for i in range(depth):
        p = f"image_proj.layers.{i}"
        xn, ln_lat = ln(x, f"{p}.0.norm1"), ln(lat, f"{p}.0.norm2")
        q = ln_lat @ sd[f"{p}.0.to_q.weight"].T
        kv = _torch.cat([xn, ln_lat], dim=1) @ sd[f"{p}.0.to_kv.weight"].T
        k, v = kv.chunk(2, dim=-1)
        lat = heads_attention(q, k, v, q.shape[-1] // 64) @ sd[f"{p}.0.to_out.weight"].T + lat
        h = _F.gelu(ln(lat, f"{p}.1.0") @ sd[f"{p}.1.1.weight"].T)
        lat = h @ sd[f"{p}.1.3.weight"].T + lat
    return ln(lat @ sd["image_proj.proj_out.weight"].T + sd["image_proj.proj_out.bias"], "image_proj.norm_out")


def mlp_tokens(sd, hidden):
    h = _F.gelu(hidden @ sd["image_proj.proj.0.weight"].T + sd["image_proj.proj.0.bias"])
    h = h @ sd["image_proj.proj.2.weight"].T + sd["image_proj.proj.2.bias"]
    return _F.layer_norm(h, (h.shape[-1],), sd["image_proj.proj.3.weight"], sd["image_proj.proj.3.bias"])


def close(got, want, rel=2e-3):
    return (got - want).norm().item() <= rel * max(want.norm().item(), 1e-6)


@_pytest.fixture(scope="module")
def cubiq(comfy, tmp_path_factory):
    """cubiq's ComfyUI_IPAdapter_plus from its vendored archive, for the side-by-side tests."""
    from imageinference.testing.ipadapter_peers import Cubiq
    from imageinference.testing.peers import PeerMissing

    try:
        return Cubiq(tmp_path_factory.mktemp("peers"))
    except PeerMissing as exc:  # the archive is on every machine of this project
        _pytest.skip(f"PEER ARCHIVE MISSING: {exc}")


# ---------------------------------------------------------------- LayerDiffuse
# The tiny LayerDiffuse LoRA and transparent VAE (imageinference/testing/tiny_layerdiffuse.py) under the documented
# AIRs in the session catalog, the tiny FLUX and its 16-channel VAE, and the reference implementation's module
# (huchenlei/ComfyUI-layerdiffuse's lib_layerdiffusion/models.py, unpacked from the vendored archive). Fixtures:
# `ld_files`, `ld_catalog`, `ld_flux`, `ld_vae16`, `ld_peer` (bind the ones a module uses).

LD_CATALOG = {
    "runware:120@2": {"kind": "lora", "architecture": "flux-1-dev",
                      "files": {"model": "loras/tiny_layerdiffuse_flux_lora.safetensors"}},
    "runware:120@4": {"kind": "vae", "architecture": "flux-1-dev",
                      "files": {"model": "vae/tiny_transparent_vae_v2.safetensors"}},
}


def ld_set_catalog(entries):
    """Put entries into the session's user catalog; returns what they replaced (None = absent)."""
    path = _os.environ["IMAGEINFERENCE_CATALOG"]
    with open(path) as fh:
        data = _json.load(fh)
    old = {air: data["models"].get(air) for air in entries}
    data["models"].update(entries)
    with open(path, "w") as fh:
        _json.dump(data, fh)
    return old


def ld_restore_catalog(old):
    path = _os.environ["IMAGEINFERENCE_CATALOG"]
    with open(path) as fh:
        data = _json.load(fh)
    for air, entry in old.items():
        if entry is None:
            data["models"].pop(air, None)
        else:
            data["models"][air] = entry
    with open(path, "w") as fh:
        _json.dump(data, fh)


@_pytest.fixture(scope="module")
def ld_files(comfy):
    from imageinference.testing.tiny_layerdiffuse import ensure_tiny_layerdiffuse

    return ensure_tiny_layerdiffuse()


@_pytest.fixture(scope="module")
def ld_catalog(comfy, ld_files):
    """The LayerDiffuse AIRs pointed at the tiny files (in the session's user catalog), their folders registered."""
    import folder_paths

    root = ld_files["lora"].parents[1]
    folder_paths.add_model_folder_path("loras", str(root / "loras"))
    folder_paths.add_model_folder_path("vae", str(root / "vae"))
    old = ld_set_catalog(LD_CATALOG)
    yield LD_CATALOG
    ld_restore_catalog(old)


@_pytest.fixture(scope="module")
def ld_flux(comfy):
    import comfy.sd

    from imageinference.testing.tiny_models import TINY, cache_root

    return comfy.sd.load_diffusion_model(str(TINY["flux"].path(cache_root())))


@_pytest.fixture(scope="module")
def ld_vae16(comfy):
    return comfy.VAELoader().load_vae("tiny_vae16.safetensors")[0]


@_pytest.fixture(scope="module")
def ld_peer(tmp_path_factory):
    """huchenlei/ComfyUI-layerdiffuse's lib_layerdiffusion.models, imported from a temporary unpacked copy."""
    from imageinference.testing.layerdiffuse_peers import peer_module

    return peer_module(tmp_path_factory.mktemp("peer-layerdiffuse"))


def ld_flux_conds():
    g = _torch.Generator().manual_seed(1)
    c = [[_torch.randn(1, 6, 4096, generator=g), {"pooled_output": _torch.randn(1, 768, generator=g),
                                                   "guidance": 3.5}]]
    return c, c


def ld_rgba(height, width, seed=0):
    """(1, H, W, 4) test image: random colour, alpha a feathered disc (1 inside, 0 in the corners, ramps between)."""
    g = _torch.Generator().manual_seed(seed)
    rgb = _torch.rand(1, height, width, 3, generator=g)
    yy, xx = _torch.meshgrid(_torch.arange(height) / height - 0.5, _torch.arange(width) / width - 0.5, indexing="ij")
    alpha = ((0.4 - (yy ** 2 + xx ** 2).sqrt()) / 0.1).clamp(0, 1)
    return _torch.cat([rgb, alpha[None, ..., None]], dim=-1)

# ---------------------------------------------------------------- PuLID
PULID_STEPS = 6
PULID_IPA_AIR, PULID_CN_AIR = "test:ipadapter-flux@1", "test:flux-cn@1"


@_pytest.fixture(scope="module")
def pulid_env(comfy, tiny_models_root, test_catalog):
    """The tiny PuLID files in ComfyUI's folders and a catalog naming them (for the module using it)."""
    import folder_paths

    from imageinference.engines.models import catalog
    from imageinference.testing import tiny_extras, tiny_ipadapter
    from imageinference.testing.tiny_pulid import catalog_entries, ensure_tiny_pulid

    root = ensure_tiny_pulid(tiny_models_root)
    # for the composition tests: the tiny FLUX IP-Adapter and FLUX ControlNet
    tiny_ipadapter.ensure_tiny_ipadapters(["clip_vision_vitl", "ipadapter_flux"], tiny_models_root)
    tiny_extras.ensure_tiny_extras(["flux_controlnet"], tiny_models_root)
    for folder in ("pulid", "insightface", "clip_vision", "ipadapter", "controlnet"):
        folder_paths.add_model_folder_path(folder, str(root / folder), is_default=True)
    models = _json.loads(test_catalog.read_text())["models"]
    extra = {air: entry for air, entry in {**tiny_ipadapter.catalog_entries(), **tiny_extras.catalog_entries()}.items()
             if air in (PULID_IPA_AIR, PULID_CN_AIR)}
    path = test_catalog.parent / "catalog_pulid.json"
    path.write_text(_json.dumps({"version": 1, "models": {**models, **catalog_entries(), **extra}}))
    assert {"pulid", "idEncoder"} <= set(catalog.KINDS) and {"pulid", "insightface"} <= set(catalog.FOLDERS)
    with _pytest.MonkeyPatch.context() as mp:
        mp.setenv("IMAGEINFERENCE_CATALOG", str(path))
        yield root


@_pytest.fixture(scope="module")
def flux(comfy, tiny_models_root):
    import comfy.sd

    from imageinference.testing.tiny_models import TINY

    return comfy.sd.load_diffusion_model(str(TINY["flux"].path(tiny_models_root)))


def pulid_conds(seed=1, tokens=6):
    g = _torch.Generator().manual_seed(seed)
    return [[_torch.randn(1, tokens, 4096, generator=g),
             {"pooled_output": _torch.randn(1, 768, generator=g), "guidance": 3.5}]]


def pulid_run(model, cfg=1.0, steps=PULID_STEPS, seed=5, callback=None, negative_seed=2):
    import comfy.sample

    latent = _torch.zeros(1, 16, 4, 4)
    noise = comfy.sample.prepare_noise(latent, seed)
    return comfy.sample.sample(model, noise, steps, cfg, "euler", "simple", pulid_conds(1),
                               pulid_conds(negative_seed, 5), latent,
                               seed=seed, disable_pbar=True, callback=callback)


def pulid_face():
    from imageinference.testing.tiny_pulid import face_image

    return face_image(256)


def pulid_apply(model, weights="test:pulid@1", image=None, idWeight=1.0, start=-1, start_pct=-1, true_cfg=-1.0):
    from imageinference.comfyui.nodes.pulid import PuLIDNode

    out = PuLIDNode.execute(model, pulid_face() if image is None else image, weights, idWeight, start, start_pct, true_cfg)
    return out.args[0] if hasattr(out, "args") else out.result[0]
