"""IP-Adapter on SDXL against cubiq's ComfyUI_IPAdapter_plus (its IPAdapterAdvanced, unpacked from the peers'
archive), as test_ip_adapter_vs_cubiq_sd15.py does for SD1.5: the same tiny SDXL UNet with SDXL's 70
cross-attention layers in its 11 blocks, the same tiny adapter files in the released SDXL layouts (plain ViT-H,
ViT-G, plus ViT-H with its 1280-wide resampler), the same tiny CLIP vision models, 1024 px guide photos, noise and
seed; the conditioning is tensors of SDXL's shapes (CLIP-G is too large to build). Bit-identical latents expected
for every setting; `middleBlock` on (the middle block's 10 layers patched, which cubiq's node never reaches)
differs, as shown below.
"""

import comfy_helpers
import pytest
import torch

from imageinference.engines.ipadapter.options import COMBINE_METHODS, EMBED_SCALINGS, WEIGHT_TYPES
from imageinference.testing.ipadapter_peers import Setting, guide_photos, side_by_side, unet_sample

cubiq = comfy_helpers.cubiq  # fixture

CASES = [
    *((name, Setting()) for name in ("plain", "vit-g", "plus")),
    *(("plain", Setting(weight_type=t, composition=0.4 if "composition" in t else None)) for t in WEIGHT_TYPES),
    *(("plain", Setting(weight=0.6, embed_scaling=e)) for e in EMBED_SCALINGS),
    ("plus", Setting(weight=0.6, embed_scaling="k_mean_v_penalty_c", images=2)),
    *(("plain", Setting(combine=m, images=2)) for m in COMBINE_METHODS),
    *(("plain", Setting(weight=w)) for w in (0.0, 1.0, -1.0, 2.0)),
]


@pytest.fixture(scope="module")
def setup(comfy, tmp_path_factory):
    from imageinference.testing.ipadapter_peers import sd_setup

    g = torch.Generator().manual_seed(31)
    pos, neg = ([[torch.randn(1, 77, 2048, generator=g), {"pooled_output": torch.randn(1, 1280, generator=g)}]]
                for _ in range(2))
    model, adapters = sd_setup(tmp_path_factory.mktemp("sdxl-adapters"), "sdxl")
    assert type(model.model).__name__ == "SDXL"  # what cubiq's node checks to use its SDXL block table
    return model, pos, neg, adapters, guide_photos(2, seed=50)


@pytest.mark.parametrize(("adapter", "setting"), CASES, ids=[f"{a} {s.label}" for a, s in CASES])
def test_bit_identical_to_cubiqs_node(cubiq, setup, adapter, setting):
    model, pos, neg, adapters, photos = setup
    theirs, ours = side_by_side(cubiq, model, pos, neg, adapters[adapter], photos, setting)
    assert setting.weight == 0 or not torch.equal(ours, unet_sample(model, pos, neg))
    assert torch.equal(ours, theirs), (ours - theirs).abs().max()


def test_middle_block_on_is_the_one_difference(cubiq, setup):
    """Weight types whose schedule leaves the middle block out are identical with middleBlock on; the others are
    not (cubiq's node has the middle block's ten layers under ("middle", 1, i), never called)."""
    model, pos, neg, adapters, photos = setup
    plain = adapters["plain"]
    keys = cubiq.apply(model, plain, photos[:1], Setting()).model_options["transformer_options"]["patches_replace"]
    assert {k for k in keys["attn2"] if k[0] == "middle"} == {("middle", 1, i) for i in range(10)}
    for weight_type, same in (("style_transfer", True), ("composition", True), ("normal", False)):
        theirs, ours = side_by_side(cubiq, model, pos, neg, plain, photos,
                                    Setting(weight_type=weight_type, middle_block=True))
        assert torch.equal(ours, theirs) == same, weight_type
