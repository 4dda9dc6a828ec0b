"""IP-Adapter on SD1.5 against cubiq's ComfyUI_IPAdapter_plus, the node the API's option names come from.

cubiq's node (its IPAdapterAdvanced, unpacked from the peers' archive) and ours run in this same ComfyUI on the
same model (a tiny SD1.5 UNet with SD1.5's cross-attention block layout), the same tiny adapter files in the
released layouts (plain, light, plus, full-face, ViT-G, each with a tiny CLIP vision model of its encoder's output
widths), the same 1024 px guide photos, full-length prompts, noise and seed: one Euler step at CFG 5, so every
model call holds conditional and unconditional rows. Both compute the same operations in the same order, so the
latents must be bit-identical (torch.equal): no tolerance.

The one intended difference is `middleBlock` (off by default): cubiq registers the middle block's patch under
("middle", 1), a key ComfyUI 0.8.0 never looks up (it runs the middle block as ("middle", 0)), so its middle
block gets no adapter; ours does the same unless `middleBlock` is on. Shown below, layer by layer.
"""

import comfy_helpers
import pytest
import torch
from comfy_helpers import attn2_modules

from imageinference.engines.ipadapter.options import COMBINE_METHODS, EMBED_SCALINGS, WEIGHT_TYPES
from imageinference.testing.ipadapter_peers import Setting, guide_photos, side_by_side, unet_sample
from imageinference.testing.photos import long_prompt

ipa_sd15 = comfy_helpers.ipa_sd15  # fixtures
ipa_models = comfy_helpers.ipa_models
ipa_nodes = comfy_helpers.ipa_nodes
cubiq = comfy_helpers.cubiq


CASES = [
    *((name, Setting()) for name in ("plain", "light", "plus", "full-face", "vit-g")),
    *(("plain", Setting(weight_type=t, composition=0.4 if "composition" in t else None)) for t in WEIGHT_TYPES),
    *((name, Setting(weight=0.6, embed_scaling=e)) for name in ("plain", "plus") for e in EMBED_SCALINGS),
    *(("plain", Setting(combine=m, images=3)) for m in COMBINE_METHODS),
    *(("plus", Setting(combine=m, images=2)) for m in COMBINE_METHODS),
    ("plain", Setting(embed_scaling="k_mean_v_penalty_c", images=3)),
    ("plus", Setting(embed_scaling="k_mean_v_penalty_c", images=2)),
    *(("plain", Setting(weight=w)) for w in (0.0, 1.0, -1.0, 2.0)),
    *(("vit-g", Setting(weight=w, embed_scaling="only_v")) for w in (-1.0, 2.0)),
]


@pytest.fixture(scope="module")
def setup(comfy, ipa_sd15, tmp_path_factory):
    from imageinference.testing.ipadapter_peers import sd_setup

    model, adapters = sd_setup(tmp_path_factory.mktemp("sd15-adapters"), "sd15")
    clip = ipa_sd15[1]
    pos = comfy.CLIPTextEncode().encode(clip, long_prompt(600, 1))[0]
    neg = comfy.CLIPTextEncode().encode(clip, long_prompt(200, 2))[0]
    return model, pos, neg, adapters, guide_photos(3)


@pytest.mark.parametrize(("adapter", "setting"), CASES, ids=[f"{a} {s.label}" for a, s in CASES])
def test_bit_identical_to_cubiqs_node(cubiq, setup, adapter, setting):
    model, pos, neg, adapters, photos = setup
    theirs, ours = side_by_side(cubiq, model, pos, neg, adapters[adapter], photos, setting)
    base = unet_sample(model, pos, neg)
    assert setting.weight == 0 or not torch.equal(ours, base)  # the adapter does something here
    assert torch.equal(ours, theirs), (ours - theirs).abs().max()


def recorded(model, pos, neg):
    """{(kind, block id, layer): what reached the layer's to_out} for one sampling step."""
    found = attn2_modules(model.get_model_object("diffusion_model"))
    seen = {}
    hooks = [m.to_out.register_forward_pre_hook(lambda _m, args, key=key: seen.setdefault(key, args[0].clone()))
             for key, m in found.items()]
    try:
        unet_sample(model, pos, neg)
    finally:
        for h in hooks:
            h.remove()
    return seen


def test_cubiqs_middle_block_gets_no_adapter_and_middle_block_on_patches_it(cubiq, setup):
    """cubiq's node registers ("middle", 1); ComfyUI calls ("middle", 0, 0). Every layer of cubiq's run equals ours
    by default; with middleBlock on, every layer before the middle block is still identical, and the middle block
    is the first to differ, by the image term."""
    from imageinference.testing.ipadapter_peers import ours

    model, pos, neg, adapters, photos = setup
    plain, s = adapters["plain"], Setting(weight=0.8)
    theirs = cubiq.apply(model, plain, photos[:1], s)
    assert ("middle", 1) in theirs.model_options["transformer_options"]["patches_replace"]["attn2"]
    by_cubiq = recorded(theirs, pos, neg)
    assert ("middle", 0, 0) in by_cubiq
    assert all(torch.equal(by_cubiq[k], v) for k, v in recorded(ours(model, plain, photos[:1], s), pos, neg).items())
    on = recorded(ours(model, plain, photos[:1], Setting(weight=0.8, middle_block=True)), pos, neg)
    inputs = [k for k in on if k[0] == "input"]
    assert inputs and all(torch.equal(on[k], by_cubiq[k]) for k in inputs)
    assert not torch.equal(on[("middle", 0, 0)], by_cubiq[("middle", 0, 0)])


def test_in_cubiqs_node_weak_middle_is_normal(cubiq, setup):
    """What the missing middle-block key means for cubiq's users: weak_middle (the middle block at a fifth) gives
    exactly the normal weight type's image."""
    model, pos, neg, adapters, photos = setup
    plain = adapters["plain"]

    def theirs(weight_type):
        return unet_sample(cubiq.apply(model, plain, photos[:1], Setting(weight_type=weight_type)), pos, neg)

    assert torch.equal(theirs("weak_middle"), theirs("normal"))


def test_the_node_with_a_catalog_adapter_and_the_vit_l_file_equals_cubiqs(cubiq, setup, comfy, ipa_models, ipa_nodes,
                                                                         test_catalog, tmp_path_factory):
    """The whole node path: the AIR through the catalog, the adapter and the tiny ViT-L encoder files loaded by
    the pack, two guide photos in one IMAGE batch; cubiq's node given the same two files (the encoder loaded by
    ComfyUI's own loader)."""
    import json

    import comfy.clip_vision
    import folder_paths

    from imageinference.testing import tiny_ipadapter as tiny
    from imageinference.testing.ipadapter_peers import TinyAdapter

    model, pos, neg, _adapters, photos = setup
    folder = tmp_path_factory.mktemp("ipadapter")
    widths = tiny.attention_widths(tiny.TINY_IPADAPTER["sd15_unet_sd_layout"].path(tiny.cache_root()))
    path = tiny.save_adapter(tiny.plain_adapter(widths, tiny.SD15_CONTEXT, tiny.VITL_EMBEDS, 2511),
                             folder / "sd15_layout_plain_vitl.safetensors", "SD1.5 plain layout, ViT-L")
    folder_paths.add_model_folder_path("ipadapter", str(folder))
    backup = test_catalog.read_text()
    data = json.loads(backup)
    data["models"]["test:ipadapter-sd15-layout@1"] = {
        "kind": "ipAdapter", "architecture": "sd-1-5",
        "files": {"model": f"ipadapter/{path.name}",
                  "imageEncoder": f"clip_vision/{tiny.TINY_IPADAPTER['clip_vision_vitl'].filename}"}}
    test_catalog.write_text(json.dumps(data))
    try:
        ours = comfy_helpers.ipa_apply(ipa_nodes, model, "test:ipadapter-sd15-layout@1", images=[photos[:2]],
                                       weight=0.7, scaling="kv")
    finally:
        test_catalog.write_text(backup)
    encoder = comfy.clip_vision.load(str(ipa_models["clip_vision_vitl"]))
    theirs = cubiq.apply(model, TinyAdapter("plain", path, encoder), photos[:2], Setting(weight=0.7, images=2))
    assert torch.equal(unet_sample(ours, pos, neg), unet_sample(theirs, pos, neg))
