"""IP-Adapter and FLUX Redux against real ComfyUI sampling with tiny random-weight adapters in the real key layouts.

Every cross-attention call of a sampling step is recorded (its input, its context and what reaches `to_out`); the
image term the adapter added is recovered as (attention output - the layer's own attention recomputed here) and
compared with the IP-Adapter formula computed independently from the adapter file's weights and the CLIP vision
embeddings (encoded here with ComfyUI's encoder).
"""

import json
import math

import pytest
import torch
import torch.nn.functional as F

from imageinference.contract.errors import ContractError

SD15_AIR, PLUS_AIR, FULL_AIR, FLUX_AIR, REDUX_AIR = ("test:ipadapter-sd15@1", "test:ipadapter-sd15@plus",
                                                     "test:ipadapter-sd15@full-face", "test:ipadapter-flux@1",
                                                     "runware:105@1")
SDXL_AIR = "test:ipadapter-sdxl@1"


@pytest.fixture(scope="module")
def ipa(comfy, tiny_models_root, test_catalog):
    """The tiny adapters and encoders in ComfyUI's folders and in the session catalog (plus broken entries)."""
    import folder_paths

    from imageinference.testing.tiny_ipadapter import TINY_IPADAPTER, catalog_entries, ensure_tiny_ipadapters

    root = ensure_tiny_ipadapters()
    for folder in ("ipadapter", "clip_vision"):
        folder_paths.add_model_folder_path(folder, str(root / folder), is_default=True)
    data = json.loads(test_catalog.read_text())
    entries = catalog_entries()
    broken = dict(entries[SD15_AIR])
    data["models"].update(entries)
    data["models"]["test:ipadapter-noencoder@1"] = {**broken, "files": {"model": broken["files"]["model"]}}
    data["models"]["test:ipadapter-lostencoder@1"] = {
        **broken, "files": {**broken["files"], "imageEncoder": "clip_vision/not_there.safetensors"}}
    data["models"]["test:ipadapter-wrongencoder@1"] = {
        **broken, "files": {**broken["files"], "imageEncoder": entries[REDUX_AIR]["files"]["imageEncoder"]}}
    test_catalog.write_text(json.dumps(data))
    return {key: m.path(root) for key, m in TINY_IPADAPTER.items()}


@pytest.fixture(scope="module")
def nodes_ipa(ipa):
    from imageinference.comfyui.nodes import ip_adapter

    return ip_adapter


@pytest.fixture(scope="module")
def sd15(comfy):
    from imageinference.comfyui.nodes.model_loader import AIRModelLoader

    model, clip, vae = AIRModelLoader.execute("test:sd15@1").result
    pos = comfy.CLIPTextEncode().encode(clip, "a lighthouse at dusk")[0]
    neg = comfy.CLIPTextEncode().encode(clip, "blurry")[0]
    return model, clip, vae, pos, neg


def guide(seed, h=224, w=224):
    return torch.rand(1, h, w, 3, generator=torch.Generator().manual_seed(seed))


GUIDES = [guide(11), guide(12, 240, 200)]  # the second is resized and centre-cropped by the encoder


@pytest.fixture(scope="module")
def vitl(ipa):
    """ViT-L embeddings of the guide images and of a black image, encoded here with ComfyUI's encoder."""
    import comfy.clip_vision

    encoder = comfy.clip_vision.load(str(ipa["clip_vision_vitl"]))
    with torch.no_grad():
        outs = [encoder.encode_image(g, crop=True) for g in GUIDES]
        black = encoder.encode_image(torch.zeros(1, 224, 224, 3), crop=True)
    return {"embeds": torch.cat([o["image_embeds"].float() for o in outs]),
            "hidden": torch.cat([o["penultimate_hidden_states"].float() for o in outs]),
            "black_hidden": black["penultimate_hidden_states"].float()}


def weights(path):
    import safetensors.torch

    return {k: v.float() for k, v in safetensors.torch.load_file(str(path)).items()}


def apply(nodes_ipa, model, air, images=None, weight=1.0, combine="concat", scaling="only_v", weight_type="normal",
          composition=-1.0):
    images = GUIDES[:1] if images is None else images
    return nodes_ipa.IPAdapter.execute([model], images, [air], [weight], [combine], [scaling], [weight_type],
                                       [composition]).result[0]


def sample(model, pos, neg, steps=1, cfg=3.0, seed=3, size=64):
    import comfy.sample

    latent = torch.zeros(1, 4, size // 8, size // 8)
    noise = comfy.sample.prepare_noise(latent, seed)
    return comfy.sample.sample(model, noise, steps, cfg, "euler", "normal", pos, neg, latent, seed=seed,
                               disable_pbar=True)


# ---------------------------------------------------------------- recording every cross-attention call


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
    probs = torch.softmax(qh @ kh.transpose(-1, -2) / math.sqrt(d), dim=-1)
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
            sample(self.model, pos, neg, **kw)
        finally:
            for h in handles:
                h.remove()
        assert len(self.calls) == len(self.outs) > 0
        with torch.no_grad():
            for call, out in zip(self.calls, self.outs, strict=True):
                attn = self.modules[call["key"]]
                call["q"] = attn.to_q(call["n"]).float()
                k, v = attn.to_k(call["ctx"]).float(), attn.to_v(call["ctx"]).float()
                call["image_term"] = out.float() - heads_attention(call["q"], k, v, call["heads"])
        return self.calls


def rows(cond, uncond, cou, batch):
    per = batch // len(cou)
    return torch.cat([(cond if c == 0 else uncond).expand(per, -1, -1) for c in cou])


def expected_term(call, sd, key_number, tokens, w, scaling="only_v"):
    """The IP-Adapter image attention of one layer, from the adapter's own weights."""
    cond, uncond = tokens
    wk, wv = sd[f"ip_adapter.{key_number}.to_k_ip.weight"], sd[f"ip_adapter.{key_number}.to_v_ip.weight"]
    k = rows(cond @ wk.T, uncond @ wk.T, call["cou"], call["q"].shape[0])
    v = rows(cond @ wv.T, uncond @ wv.T, call["cou"], call["q"].shape[0])
    c = k.shape[-1]
    if scaling == "only_v":
        return w * heads_attention(call["q"], k, v, call["heads"])
    if scaling == "kv":
        return heads_attention(call["q"], w * k, w * v, call["heads"])
    wp = w * c / 1280
    if scaling == "kv_penalty_c":
        return heads_attention(call["q"], wp * k, wp * v, call["heads"])
    mean = v.mean(dim=1, keepdim=True)
    return heads_attention(call["q"], wp * k, v - mean + wp * mean, call["heads"])


def key_numbers(calls):
    """Adapter key number of each layer: input blocks, then output blocks, then the middle block; 1, 3, 5, ..."""
    order = sorted({c["key"] for c in calls}, key=lambda k: ({"input": 0, "output": 1, "middle": 2}[k[0]], k[1], k[2]))
    return {key: 2 * i + 1 for i, key in enumerate(order)}


def plain_tokens(sd, embeds):
    c = sd["image_proj.norm.weight"].shape[0]
    x = (embeds @ sd["image_proj.proj.weight"].T + sd["image_proj.proj.bias"]).reshape(embeds.shape[0], -1, c)
    return F.layer_norm(x, (c,), sd["image_proj.norm.weight"], sd["image_proj.norm.bias"])


def close(got, want, rel=2e-3):
    return (got - want).norm().item() <= rel * max(want.norm().item(), 1e-6)


# ---------------------------------------------------------------- SD1.5


def test_weight_zero_is_bit_identical_and_a_weight_changes_the_image(nodes_ipa, sd15):
    from imageinference.comfyui.nodes.image_inference import ImageInference

    model, _clip, vae, pos, neg = sd15

    def image(m):
        return ImageInference.execute(m, vae, pos, neg, width=64, height=64, seed=5, steps=3, scheduler="Euler",
                                      CFGScale=6.0, numberResults=1, strength=0.8, maskMargin=0).result[0]

    base = image(model)
    zero = apply(nodes_ipa, model, SD15_AIR, weight=0.0)
    assert zero is model
    assert torch.equal(image(zero), base)
    assert not torch.equal(image(apply(nodes_ipa, model, SD15_AIR, weight=0.5)), base)


WEIGHT_TYPES = ["normal", "ease_in", "ease_out", "ease_in_out", "weak_input", "weak_output", "weak_middle",
                "strong_middle", "style_transfer", "composition", "strong_style_transfer", "style_and_composition",
                "strong_style_and_composition"]


def test_each_weight_type_changes_exactly_the_blocks_its_schedule_names(nodes_ipa, sd15, ipa, vitl):
    from imageinference.engines.ipadapter.options import SD15_BLOCKS, block_weights

    model, _clip, _vae, pos, neg = sd15
    sd = weights(ipa["ipadapter_sd15"])
    tokens = (plain_tokens(sd, vitl["embeds"][:1]), plain_tokens(sd, torch.zeros(1, 768)))
    w, wc = 0.7, 0.4
    for weight_type in WEIGHT_TYPES:
        patched = apply(nodes_ipa, model, SD15_AIR, weight=w, weight_type=weight_type, composition=wc)
        schedule = block_weights(weight_type, w, SD15_BLOCKS, wc)
        replaced = set(patched.model_options["transformer_options"]["patches_replace"]["attn2"])
        calls = Calls(patched).run(pos, neg)
        numbers = key_numbers(calls)
        assert replaced == {c["key"] for c in calls if schedule[c["t"]]}, weight_type
        assert len({c["t"] for c in calls}) == 16
        for call in calls:
            term, wt = call["image_term"], schedule[call["t"]]
            if wt == 0:
                assert term.norm() <= 1e-4 * call["q"].norm(), (weight_type, call["key"])
            else:
                assert close(term, expected_term(call, sd, numbers[call["key"]], tokens, wt)), (weight_type, call["key"])


@pytest.mark.parametrize("scaling", ["only_v", "kv", "kv_penalty_c", "k_mean_v_penalty_c"])
def test_embed_scaling_formulas(nodes_ipa, sd15, ipa, vitl, scaling):
    model, _clip, _vae, pos, neg = sd15
    sd = weights(ipa["ipadapter_sd15"])
    tokens = (plain_tokens(sd, vitl["embeds"][:1]), plain_tokens(sd, torch.zeros(1, 768)))
    calls = Calls(apply(nodes_ipa, model, SD15_AIR, weight=0.6, scaling=scaling)).run(pos, neg)
    numbers = key_numbers(calls)
    for call in calls:
        assert close(call["image_term"], expected_term(call, sd, numbers[call["key"]], tokens, 0.6, scaling)), call["key"]


def combined(e, method):
    """The reference combine formulas on two images' embeddings, written out."""
    e0, e1 = e[0], e[1]
    if method == "add":
        return (e0 + e1)[None]
    if method == "subtract":
        return (e0 - e1)[None]  # the first minus the mean of the rest (one image here)
    if method == "average":
        return ((e0 + e1) / 2)[None]
    norm = torch.sqrt(e0 * e0 + e1 * e1)
    return ((e0 / norm + e1 / norm) / 2)[None]


@pytest.mark.parametrize("method", ["concat", "add", "subtract", "average", "norm_average"])
def test_combine_methods_equal_the_reference_formulas(nodes_ipa, sd15, ipa, vitl, method):
    model, _clip, _vae, pos, neg = sd15
    sd = weights(ipa["ipadapter_sd15"])
    e = vitl["embeds"]
    if method == "concat":  # both images' tokens, one after the other; as many empty-image tokens
        tokens = (plain_tokens(sd, e).reshape(1, -1, 768), plain_tokens(sd, torch.zeros(2, 768)).reshape(1, -1, 768))
    else:
        tokens = (plain_tokens(sd, combined(e, method)), plain_tokens(sd, torch.zeros(1, 768)))
    calls = Calls(apply(nodes_ipa, model, SD15_AIR, images=GUIDES, combine=method)).run(pos, neg)
    numbers = key_numbers(calls)
    for call in calls:
        assert close(call["image_term"], expected_term(call, sd, numbers[call["key"]], tokens, 1.0)), call["key"]


def test_a_batch_input_holds_one_guide_image_per_entry(nodes_ipa, sd15):
    model, _clip, _vae, pos, neg = sd15
    batch = torch.cat([GUIDES[0], GUIDES[0]])
    a = sample(apply(nodes_ipa, model, SD15_AIR, images=[batch], combine="average"), pos, neg)
    b = sample(apply(nodes_ipa, model, SD15_AIR, images=[GUIDES[0], GUIDES[0]], combine="average"), pos, neg)
    c = sample(apply(nodes_ipa, model, SD15_AIR, images=[GUIDES[0]]), pos, neg)
    assert torch.equal(a, b) and torch.allclose(a, c, atol=1e-4)  # the average of one image twice is that image


def resampler_tokens(sd, hidden):
    """The plus adapter's perceiver resampler, written out with explicit attention."""
    def ln(x, key):
        return F.layer_norm(x, (x.shape[-1],), sd[f"{key}.weight"], sd[f"{key}.bias"])

    x = hidden @ sd["image_proj.proj_in.weight"].T + sd["image_proj.proj_in.bias"]
    lat = sd["image_proj.latents"].expand(hidden.shape[0], -1, -1)
    depth = len({k.split(".")[2] for k in sd if k.startswith("image_proj.layers.")})
    for i in range(depth):
        p = f"image_proj.layers.{i}"
        xn, ln_lat = ln(x, f"{p}.0.norm1"), ln(lat, f"{p}.0.norm2")
        q = ln_lat @ sd[f"{p}.0.to_q.weight"].T
        kv = torch.cat([xn, ln_lat], dim=1) @ sd[f"{p}.0.to_kv.weight"].T
        k, v = kv.chunk(2, dim=-1)
        lat = heads_attention(q, k, v, q.shape[-1] // 64) @ sd[f"{p}.0.to_out.weight"].T + lat
        h = F.gelu(ln(lat, f"{p}.1.0") @ sd[f"{p}.1.1.weight"].T)
        lat = h @ sd[f"{p}.1.3.weight"].T + lat
    return ln(lat @ sd["image_proj.proj_out.weight"].T + sd["image_proj.proj_out.bias"], "image_proj.norm_out")


def mlp_tokens(sd, hidden):
    h = F.gelu(hidden @ sd["image_proj.proj.0.weight"].T + sd["image_proj.proj.0.bias"])
    h = h @ sd["image_proj.proj.2.weight"].T + sd["image_proj.proj.2.bias"]
    return F.layer_norm(h, (h.shape[-1],), sd["image_proj.proj.3.weight"], sd["image_proj.proj.3.bias"])


@pytest.mark.parametrize(("air", "key", "project"), [(PLUS_AIR, "ipadapter_sd15_plus", resampler_tokens),
                                                     (FULL_AIR, "ipadapter_sd15_full", mlp_tokens)])
def test_plus_and_full_face_read_hidden_states(nodes_ipa, sd15, ipa, vitl, air, key, project):
    model, _clip, _vae, pos, neg = sd15
    sd = weights(ipa[key])
    tokens = (project(sd, vitl["hidden"][:1]), project(sd, vitl["black_hidden"]))
    calls = Calls(apply(nodes_ipa, model, air, weight=0.8)).run(pos, neg)
    numbers = key_numbers(calls)
    for call in calls:
        assert close(call["image_term"], expected_term(call, sd, numbers[call["key"]], tokens, 0.8)), call["key"]


def test_two_adapters_chain(nodes_ipa, sd15, ipa, vitl):
    from imageinference.engines.ipadapter.patch import applied

    model, _clip, _vae, pos, neg = sd15
    sd = weights(ipa["ipadapter_sd15"])
    first = apply(nodes_ipa, model, SD15_AIR, images=GUIDES[:1], weight=0.6)
    both = apply(nodes_ipa, first, SD15_AIR, images=GUIDES[1:], weight=0.4, weight_type="style_transfer")
    assert applied(both) == (SD15_AIR, SD15_AIR) and applied(model) == ()
    from imageinference.engines.ipadapter.options import SD15_BLOCKS, block_weights

    second_w = block_weights("style_transfer", 0.4, SD15_BLOCKS)
    empty = plain_tokens(sd, torch.zeros(1, 768))
    calls = Calls(both).run(pos, neg)
    numbers = key_numbers(calls)
    for call in calls:
        n = numbers[call["key"]]
        want = expected_term(call, sd, n, (plain_tokens(sd, vitl["embeds"][:1]), empty), 0.6)
        if second_w[call["t"]]:
            want = want + expected_term(call, sd, n, (plain_tokens(sd, vitl["embeds"][1:]), empty), second_w[call["t"]])
        assert close(call["image_term"], want), call["key"]


def test_composes_with_lora_and_controlnet(comfy, nodes_ipa, sd15):
    from imageinference.comfyui.nodes.controlnet import ControlNetApply
    from imageinference.comfyui.nodes.lora_stack import LoraStack

    model, clip, _vae, pos, neg = sd15
    lmodel, _lclip, _ = LoraStack.execute(model, '[{"model": "test:lora@1", "weight": 0.8}]', clip).result
    cpos, cneg = ControlNetApply.execute(pos, neg, guide(21, 64, 64), "test:cn@1", 0.8, -1, -1, -1, -1,
                                         "balanced").result
    without = sample(lmodel, cpos, cneg, steps=2)
    with_ipa = sample(apply(nodes_ipa, lmodel, SD15_AIR, weight=0.5), cpos, cneg, steps=2)
    assert torch.isfinite(with_ipa).all() and not torch.equal(with_ipa, without)
    assert torch.equal(sample(apply(nodes_ipa, lmodel, SD15_AIR, weight=0.0), cpos, cneg, steps=2), without)


# ---------------------------------------------------------------- SDXL
# A tiny SDXL UNet with SDXL's 70 cross-attention layers in its 11 blocks (ComfyUI detects it as SDXL) and a tiny
# SDXL adapter in the real layout (ip_adapter.1 ... 139). Its CLIP-G text encoder is too large to build here, so the
# prompts are conditioning tensors of SDXL's shapes.


@pytest.fixture(scope="module")
def sdxl(comfy, ipa):
    import comfy.sd

    from imageinference.testing.tiny_extras import TINY_EXTRAS
    from imageinference.testing.tiny_models import cache_root

    model = comfy.sd.load_diffusion_model(str(TINY_EXTRAS["sdxl_unet_full"].path(cache_root())))
    assert type(model.model).__name__ == "SDXL"
    g = torch.Generator().manual_seed(31)
    pos, neg = ([[torch.randn(1, 77, 2048, generator=g), {"pooled_output": torch.randn(1, 1280, generator=g)}]]
                for _ in range(2))
    return model, pos, neg


def test_sdxl_weight_zero_is_bit_identical_and_the_adapter_patches_all_70_layers(nodes_ipa, sdxl):
    model, pos, neg = sdxl
    base = sample(model, pos, neg, steps=2)
    assert apply(nodes_ipa, model, SDXL_AIR, weight=0.0) is model
    patched = apply(nodes_ipa, model, SDXL_AIR, weight=0.5)
    assert len(patched.model_options["transformer_options"]["patches_replace"]["attn2"]) == 70
    assert not torch.equal(sample(patched, pos, neg, steps=2), base)
    assert torch.equal(sample(model, pos, neg, steps=2), base)  # the model it was applied to is untouched


SDXL_BLOCKS_NAMED = {"style_transfer": {("output", 1)}, "composition": {("input", 8)},
                     "style_and_composition": {("output", 1), ("input", 8)},
                     "ease_in": {("input", 4), ("input", 5), ("input", 7), ("input", 8), ("middle", 0),
                                 *(("output", i) for i in range(6))}}


def test_sdxl_each_weight_type_changes_exactly_the_blocks_its_schedule_names(nodes_ipa, sdxl, ipa, vitl):
    from imageinference.engines.ipadapter.options import SDXL_BLOCKS, block_weights

    model, pos, neg = sdxl
    sd = weights(ipa["ipadapter_sdxl"])
    tokens = (plain_tokens(sd, vitl["embeds"][:1]), plain_tokens(sd, torch.zeros(1, 768)))
    w, wc = 0.7, 0.4
    for weight_type in WEIGHT_TYPES:
        patched = apply(nodes_ipa, model, SDXL_AIR, weight=w, weight_type=weight_type, composition=wc,
                        scaling="kv_penalty_c")
        schedule = block_weights(weight_type, w, SDXL_BLOCKS, wc)
        replaced = set(patched.model_options["transformer_options"]["patches_replace"]["attn2"])
        calls = Calls(patched).run(pos, neg)
        numbers = key_numbers(calls)
        assert replaced == {c["key"] for c in calls if schedule[c["t"]]}, weight_type
        assert len({c["t"] for c in calls}) == 11 and len(numbers) == 70 and max(numbers.values()) == 139
        if weight_type in SDXL_BLOCKS_NAMED:  # the reference's SDXL blocks, written here by their UNet names
            assert {key[:2] for key in replaced} == SDXL_BLOCKS_NAMED[weight_type], weight_type
        for call in calls:
            term, wt = call["image_term"], schedule[call["t"]]
            if wt == 0:
                assert term.norm() <= 1e-4 * call["q"].norm(), (weight_type, call["key"])
            else:
                want = expected_term(call, sd, numbers[call["key"]], tokens, wt, "kv_penalty_c")
                assert close(term, want), (weight_type, call["key"])


def test_sd15_and_sdxl_adapters_are_refused_on_each_others_model(nodes_ipa, sd15, sdxl):
    with pytest.raises(ContractError) as info:
        apply(nodes_ipa, sdxl[0], SD15_AIR)
    assert info.value.parameters == ["ipAdapters.0.model"] and "768" in info.value.errors[0].message
    with pytest.raises(ContractError) as info:
        apply(nodes_ipa, sd15[0], SDXL_AIR)
    assert info.value.parameters == ["ipAdapters.0.model"] and "2048" in info.value.errors[0].message


# ---------------------------------------------------------------- bad input


def test_a_guide_image_that_is_not_an_image(nodes_ipa):
    with pytest.raises(ContractError) as info:
        nodes_ipa.GuideImages.execute(json.dumps(["aGVsbG8gd29ybGQ="]), "ipAdapters.0.guideImages")
    assert info.value.parameters == ["ipAdapters.0.guideImages.0"]
    with pytest.raises(ContractError) as info:
        nodes_ipa.GuideImages.execute("not json", "ipAdapters.2.guideImages")
    assert info.value.parameters == ["ipAdapters.2.guideImages"]


def test_guide_images_decode_each_at_its_own_size(nodes_ipa):
    import base64
    import io

    from PIL import Image

    def png(w, h):
        buf = io.BytesIO()
        Image.new("RGB", (w, h), (200, 10, 10)).save(buf, "PNG")
        return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()

    out = nodes_ipa.GuideImages.execute(json.dumps([png(30, 20), png(16, 40)]), "ipAdapters.0.guideImages").result[0]
    assert [tuple(i.shape) for i in out] == [(1, 20, 30, 3), (1, 40, 16, 3)]


@pytest.mark.parametrize(("air", "code", "text"), [
    ("test:ipadapter-noencoder@1", "missingImageEncoder", "imageEncoder"),
    ("test:ipadapter-lostencoder@1", "missingModelFile", "not_there.safetensors"),
    ("test:ipadapter-wrongencoder@1", "invalidImageEncoder", "768-wide pooled"),
    (REDUX_AIR, "invalidModel", "Redux"),
    ("test:sd15@1", "invalidModelKind", "checkpoint"),
])
def test_adapter_and_encoder_errors_name_the_parameter(nodes_ipa, sd15, air, code, text):
    with pytest.raises(ContractError) as info:
        apply(nodes_ipa, sd15[0], air)
    err = info.value.errors[0]
    assert (err.code, err.parameter) == (code, "ipAdapters.0.model") and text in err.message
    assert air in err.message


def test_the_second_adapters_errors_name_its_index(nodes_ipa, sd15):
    first = apply(nodes_ipa, sd15[0], SD15_AIR, weight=0.3)
    with pytest.raises(ContractError) as info:
        apply(nodes_ipa, first, FLUX_AIR)
    assert info.value.parameters == ["ipAdapters.1.model"]


def test_an_adapter_for_another_architecture_is_refused(nodes_ipa, sd15, flux):
    with pytest.raises(ContractError) as info:
        apply(nodes_ipa, sd15[0], FLUX_AIR)
    assert info.value.codes == ["invalidModel"] and "UNet" in info.value.errors[0].message
    with pytest.raises(ContractError) as info:
        apply(nodes_ipa, flux, SD15_AIR)
    assert info.value.parameters == ["ipAdapters.0.model"] and "not a UNet" in info.value.errors[0].message


def test_options_without_meaning_on_flux_are_refused(nodes_ipa, flux):
    with pytest.raises(ContractError) as info:
        apply(nodes_ipa, flux, FLUX_AIR, weight_type="composition", scaling="kv_penalty_c", composition=0.5)
    assert info.value.parameters == ["ipAdapters.0.embedScaling", "ipAdapters.0.weightType",
                                     "ipAdapters.0.weightComposition"]
    assert info.value.codes == ["unsupportedEmbedScaling", "unsupportedWeightType", "unsupportedWeightComposition"]


# ---------------------------------------------------------------- FLUX


@pytest.fixture(scope="module")
def flux(comfy, tiny_models_root):
    import comfy.sd

    from imageinference.testing.tiny_models import TINY

    return comfy.sd.load_diffusion_model(str(TINY["flux"].path(tiny_models_root)))


def flux_cond(seed=1):
    g = torch.Generator().manual_seed(seed)
    return [[torch.randn(1, 6, 4096, generator=g), {"pooled_output": torch.randn(1, 768, generator=g),
                                                    "guidance": 3.5}]]


def flux_sample(model, cond=None, steps=3, seed=5):
    import comfy.sample

    cond = cond or flux_cond()
    latent = torch.zeros(1, 16, 4, 4)
    noise = comfy.sample.prepare_noise(latent, seed)
    return comfy.sample.sample(model, noise, steps, 1.0, "euler", "simple", cond, cond, latent, seed=seed,
                               disable_pbar=True)


def test_flux_adapter_adds_the_image_attention_after_each_double_block(nodes_ipa, flux, ipa, vitl):
    base = flux_sample(flux)
    assert torch.equal(flux_sample(apply(nodes_ipa, flux, FLUX_AIR, weight=0.0)), base)
    seen = {}

    def inner(args, extra):  # under the adapter: what the block itself makes
        seen["img"], seen["vec"] = args["img"].detach().clone(), args["vec"].detach().clone()
        out = extra["original_block"](args)
        seen["block_out"] = out["img"].detach().clone()
        return out

    recorded = flux.clone()
    recorded.set_model_patch_replace(inner, "dit", "double_block", 0)
    patched = apply(nodes_ipa, recorded, FLUX_AIR, weight=0.3, scaling="kv")
    replacement = patched.model_options["transformer_options"]["patches_replace"]["dit"][("double_block", 0)]

    def outer(args, extra):
        out = replacement(args, extra)
        seen["final"] = out["img"].detach().clone()
        return out

    patched.set_model_patch_replace(outer, "dit", "double_block", 0)
    out = flux_sample(patched, steps=1)
    assert torch.isfinite(out).all() and not torch.equal(out, flux_sample(flux, steps=1))
    sd = weights(ipa["ipadapter_flux"])
    block = flux.get_model_object("diffusion_model").double_blocks[0]
    with torch.no_grad():
        mod = block.img_mod(seen["vec"])[0]
        x = F.layer_norm(seen["img"].float(), (3072,), eps=1e-6) * (1 + mod.scale.float()) + mod.shift.float()
        qkv = x @ block.img_attn.qkv.weight.float().T + block.img_attn.qkv.bias.float()
        q = qkv[..., :3072]
        q = q.reshape(*q.shape[:2], 24, 128)
        q = q * torch.rsqrt(q.pow(2).mean(-1, keepdim=True) + 1e-6) * block.img_attn.norm.query_norm.scale.float()
        q = q.reshape(*q.shape[:2], 3072)
        c = 4096
        tok = (vitl["embeds"][:1] @ sd["ip_adapter_proj_model.proj.weight"].T
               + sd["ip_adapter_proj_model.proj.bias"]).reshape(1, -1, c)
        tok = F.layer_norm(tok, (c,), sd["ip_adapter_proj_model.norm.weight"], sd["ip_adapter_proj_model.norm.bias"])
        p = "double_blocks.0.processor.ip_adapter_double_stream"
        k = tok @ sd[f"{p}_k_proj.weight"].T + sd[f"{p}_k_proj.bias"]
        v = tok @ sd[f"{p}_v_proj.weight"].T + sd[f"{p}_v_proj.bias"]
        want = heads_attention(q, 0.3 * k, 0.3 * v, 24)
        only_v = 0.3 * heads_attention(q, k, v, 24)
    got = seen["final"].float() - seen["block_out"].float()
    # random FLUX blocks give sharp attention (large q), so tiny encoder differences show: 2 % of the term, while
    # the other scaling would be far off
    assert close(got, want, rel=2e-2), (got - want).norm() / want.norm()
    assert not close(got, only_v, rel=0.2)


def test_flux_adapter_under_a_step_cache(nodes_ipa, flux):
    from imageinference.engines.cache.build import cache_config
    from imageinference.engines.cache.patch import apply_step_cache, model_layout

    adapted = apply(nodes_ipa, flux, FLUX_AIR, weight=0.7)
    cached = apply_step_cache(adapted, cache_config("fbCache", 0.0, model_layout(adapted)))
    assert torch.equal(flux_sample(cached), flux_sample(adapted))  # the cache keeps the adapter (threshold 0)


def test_redux_appends_the_image_tokens_through_the_style_model_path(nodes_ipa, flux, ipa):
    cond = flux_cond()

    def redux(weight, c=cond):
        return nodes_ipa.Redux.execute([c], [GUIDES[0]], [REDUX_AIR], [weight], ["concat"]).result[0]

    assert redux(0.0) is cond
    full, half = redux(1.0), redux(0.5)
    assert full[0][0].shape == (1, 6 + 729, 4096)
    assert torch.equal(full[0][0][:, :6], cond[0][0])
    assert torch.allclose(half[0][0][:, 6:], 0.5 * full[0][0][:, 6:], rtol=1e-5, atol=1e-6)
    base = flux_sample(flux, cond)
    assert torch.equal(flux_sample(flux, redux(0.0)), base)
    assert not torch.equal(flux_sample(flux, full), base)
    twice = nodes_ipa.Redux.execute([cond], GUIDES, [REDUX_AIR], [1.0], ["concat"]).result[0]
    assert twice[0][0].shape == (1, 6 + 2 * 729, 4096)
    averaged = nodes_ipa.Redux.execute([cond], GUIDES, [REDUX_AIR], [0.8], ["average"]).result[0]
    # the Redux projection written out, on SigLIP hidden states encoded here
    import comfy.clip_vision

    sd = weights(ipa["redux"])
    siglip = comfy.clip_vision.load(str(ipa["clip_vision_siglip"]))
    with torch.no_grad():
        h = torch.cat([siglip.encode_image(g, crop=True)["last_hidden_state"].float() for g in GUIDES])

    def projected(x):
        up = F.silu(x @ sd["redux_up.weight"].T + sd["redux_up.bias"])
        return up @ sd["redux_down.weight"].T + sd["redux_down.bias"]

    assert close(twice[0][0][:, 6:].float(), projected(h).reshape(1, -1, 4096), rel=5e-3)
    assert close(averaged[0][0][:, 6:].float(), 0.8 * projected(h.mean(0, keepdim=True)), rel=5e-3)
    with pytest.raises(ContractError) as info:
        nodes_ipa.Redux.execute([[[torch.zeros(1, 4, 768), {}]]], [GUIDES[0]], [REDUX_AIR], [1.0], ["concat"])
    assert info.value.parameters == ["ipAdapters.0.model"] and "768" in info.value.errors[0].message
    with pytest.raises(ContractError) as info:
        nodes_ipa.Redux.execute([cond], [GUIDES[0]], [SD15_AIR], [1.0], ["concat"])
    assert info.value.parameters == ["ipAdapters.0.model"] and "IP-Adapter node" in info.value.errors[0].message



# ---------------------------------------------------------------- a compiled request through ComfyUI's executor


class _Server:
    client_id = None
    last_node_id = None

    def send_sync(self, *args, **kwargs):
        pass


def png_uri(seed, w, h):
    import base64
    import io

    import numpy as np
    from PIL import Image

    arr = (np.random.default_rng(seed).random((h, w, 3)) * 255).astype("uint8")
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def test_a_compiled_request_runs_in_comfyuis_executor(comfy, ipa):
    """Guide Images (an IMAGE list of two sizes) -> two chained IP-Adapter nodes, as the compiler lays them out,
    executed by ComfyUI's own PromptExecutor (input lists, validation, caching)."""
    from imageinference.comfyui.nodes.extension import node_classes

    saved = dict(comfy.NODE_CLASS_MAPPINGS)
    try:
        for cls in {*node_classes(), *nodes_ipa_classes()}:  # what the extension registers (and these three)
            comfy.NODE_CLASS_MAPPINGS[cls.GET_SCHEMA().node_id] = cls
        _run_compiled()
    finally:
        comfy.NODE_CLASS_MAPPINGS.clear()
        comfy.NODE_CLASS_MAPPINGS.update(saved)


def _run_compiled():
    import asyncio

    import execution

    from imageinference.interop.compiler import compile_request

    request = {"taskType": "imageInference", "taskUUID": "1d2e3f4a-5b6c-4d7e-8f9a-0b1c2d3e4f5a",
               "model": "test:sd15@1", "positivePrompt": "a lighthouse", "width": 128, "height": 128, "steps": 2,
               "seed": 3, "outputFormat": "PNG",
               "ipAdapters": [{"model": SD15_AIR, "guideImages": [png_uri(1, 40, 56), png_uri(2, 64, 32)],
                               "combineMethod": "average", "weightType": "style_transfer"},
                              {"model": FULL_AIR, "guideImages": [png_uri(3, 32, 32)], "weight": 0.3}]}
    _canonical, prompt = compile_request(request)
    valid = asyncio.run(execution.validate_prompt("p1", prompt, None))
    assert valid[0], valid
    executor = execution.PromptExecutor(_Server(), cache_args={"lru": 0, "ram": 0})
    executor.execute(prompt, "p1", {}, valid[2])
    assert executor.success, executor.status_messages[-1]
    response = json.loads(executor.history_result["outputs"]["5"]["response"][0])
    assert response["data"][0]["seed"] == 3


def nodes_ipa_classes():
    from imageinference.comfyui.nodes.ip_adapter import GuideImages, IPAdapter, Redux

    return [GuideImages, IPAdapter, Redux]
