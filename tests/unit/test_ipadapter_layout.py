"""Adapter layouts read from keys and shapes (SD1.5, SDXL, FLUX XLabs, Redux; refused kinds) and their fit with a
model. SDXL has no tiny model here, so its layouts are checked on the real key layout and shapes only."""

import pytest

from imageinference.engines.ipadapter.layout import (
    KNOWN_ADAPTERS,
    FluxFacts,
    LayoutError,
    UNetFacts,
    detect,
    diffusers_order,
    encoder_issue,
    family_of,
    fits_architecture,
    flatten,
    flux_fit,
    unet_fit,
)

# The real UNets' cross-attention blocks in forward order: (kind, block id, attention width per transformer layer)
SD15 = UNetFacts(tuple([("input", i, (w,)) for i, w in ((1, 320), (2, 320), (4, 640), (5, 640), (7, 1280), (8, 1280))]
                       + [("middle", 0, (1280,))]
                       + [("output", i, (w,)) for i, w in ((3, 1280), (4, 1280), (5, 1280), (6, 640), (7, 640),
                                                           (8, 640), (9, 320), (10, 320), (11, 320))]), 768)
SDXL = UNetFacts(tuple([("input", 4, (640,) * 2), ("input", 5, (640,) * 2), ("input", 7, (1280,) * 10),
                        ("input", 8, (1280,) * 10), ("middle", 0, (1280,) * 10)]
                       + [("output", i, (1280,) * 10) for i in (0, 1, 2)]
                       + [("output", i, (640,) * 2) for i in (3, 4, 5)]), 2048)


def ip_layers(facts):
    """ip_adapter.<n>.to_{k,v}_ip shapes in the adapter file's key order (n = 1, 3, 5, ...)."""
    shapes = {}
    for j, (_t, _i, width) in enumerate(diffusers_order(facts)):
        for kv in ("k", "v"):
            shapes[f"ip_adapter.{2 * j + 1}.to_{kv}_ip.weight"] = (width, facts.context_dim)
    return shapes


def plain(facts, embed_dim, tokens=4):
    c = facts.context_dim
    return {**ip_layers(facts), "image_proj.proj.weight": (tokens * c, embed_dim), "image_proj.proj.bias": (tokens * c,),
            "image_proj.norm.weight": (c,), "image_proj.norm.bias": (c,)}


def plus(facts, dim, heads, hidden, depth=4, queries=16):
    c = facts.context_dim
    s = {**ip_layers(facts), "image_proj.latents": (1, queries, dim), "image_proj.proj_in.weight": (dim, hidden),
         "image_proj.proj_in.bias": (dim,), "image_proj.proj_out.weight": (c, dim), "image_proj.proj_out.bias": (c,),
         "image_proj.norm_out.weight": (c,), "image_proj.norm_out.bias": (c,)}
    for i in range(depth):
        p = f"image_proj.layers.{i}"
        s.update({f"{p}.0.norm1.weight": (dim,), f"{p}.0.norm2.weight": (dim,), f"{p}.0.to_q.weight": (heads * 64, dim),
                  f"{p}.0.to_kv.weight": (2 * heads * 64, dim), f"{p}.0.to_out.weight": (dim, heads * 64),
                  f"{p}.1.0.weight": (dim,), f"{p}.1.1.weight": (4 * dim, dim), f"{p}.1.3.weight": (dim, 4 * dim)})
    return s


def test_sd15_layouts():
    got = detect(plain(SD15, 1024))  # ip-adapter_sd15: ViT-H pooled embeddings, 4 tokens
    assert (got.family, got.base, got.projection, got.image_input, got.tokens) == (
        "unet", "sd-1-5", "linear", "image_embeds", 4)
    assert got.embedding_dim == 1024 and len(got.layers) == 16 and got.layers[0] == (1, 320)
    assert detect(plain(SD15, 1280)).embedding_dim == 1280  # ip-adapter_sd15_vit-G reads ViT-bigG embeddings
    p = detect(plus(SD15, 768, 12, 1280))  # ip-adapter-plus(-face)_sd15
    assert (p.projection, p.image_input, p.tokens, p.resampler.heads, p.resampler.depth) == (
        "resampler", "penultimate_hidden_states", 16, 12, 4)
    full = {**ip_layers(SD15), "image_proj.proj.0.weight": (1280, 1280), "image_proj.proj.2.weight": (768, 1280),
            "image_proj.proj.3.weight": (768,)}
    f = detect(full)  # ip-adapter-full-face_sd15
    assert (f.projection, f.variant, f.tokens, f.embedding_dim) == ("mlp", "full-face", None, 1280)


def test_sdxl_layouts_and_their_fit():
    got = detect(plain(SDXL, 1280))  # ip-adapter_sdxl: ViT-bigG
    assert (got.base, len(got.layers), got.context_dim) == ("sdxl", 70, 2048)
    assert [k for k, _ in got.layers][:3] == [1, 3, 5] and got.layers[-1][0] == 139
    assert unet_fit(got, SDXL) is None
    vith = detect(plus(SDXL, 1280, 20, 1280))  # ip-adapter-plus(-face)_sdxl_vit-h
    assert vith.resampler.heads == 20 and vith.tokens == 16 and unet_fit(vith, SDXL) is None
    assert "768" in unet_fit(got, SD15)
    assert "2048" in unet_fit(detect(plain(SD15, 1024)), SDXL)


def test_sd15_fit_checks_every_layer_width():
    layout = detect(plain(SD15, 1024))
    assert unet_fit(layout, SD15) is None
    narrow = UNetFacts(tuple((k, i, (320,)) for k, i, _w in SD15.blocks), 768)  # the tiny test UNet
    assert "320" in unet_fit(layout, narrow) and "640" in unet_fit(layout, narrow)
    fewer = UNetFacts(SD15.blocks[:-1], 768)
    assert "16 attention layers" in unet_fit(layout, fewer)


def test_diffusers_key_order_is_input_output_middle():
    order = diffusers_order(SD15)
    ts = [t for t, _i, _w in order]
    assert ts == [0, 1, 2, 3, 4, 5, 7, 8, 9, 10, 11, 12, 13, 14, 15, 6]
    assert len(diffusers_order(SDXL)) == 70


def flux_shapes(blocks=19, tokens=4):
    s = {"ip_adapter_proj_model.proj.weight": (tokens * 4096, 768), "ip_adapter_proj_model.proj.bias": (tokens * 4096,),
         "ip_adapter_proj_model.norm.weight": (4096,), "ip_adapter_proj_model.norm.bias": (4096,)}
    for i in range(blocks):
        for kv in ("k", "v"):
            s[f"double_blocks.{i}.processor.ip_adapter_double_stream_{kv}_proj.weight"] = (3072, 4096)
            s[f"double_blocks.{i}.processor.ip_adapter_double_stream_{kv}_proj.bias"] = (3072,)
    return s


def test_flux_xlabs_and_redux():
    f = detect(flux_shapes())
    assert (f.family, f.base, f.tokens, f.embedding_dim, len(f.layers)) == ("flux", "flux-1-dev", 4, 768, 19)
    assert flux_fit(f, FluxFacts(19, 3072, 4096)) is None
    assert "19 double blocks" in flux_fit(f, FluxFacts(1, 3072, 4096))
    assert detect(flux_shapes(tokens=16)).tokens == 16
    r = detect({"redux_up.weight": (12288, 1152), "redux_up.bias": (12288,), "redux_down.weight": (4096, 12288)})
    assert (r.family, r.image_input, r.embedding_dim, r.context_dim) == ("redux", "last_hidden_state", 1152, 4096)
    assert "not for a UNet" in unet_fit(f, SD15) and "not a FLUX" in flux_fit(detect(plain(SD15, 1024)),
                                                                               FluxFacts(19, 3072, 4096))


@pytest.mark.parametrize(("shapes", "reason"), [
    ({"ip_adapter.1.to_k_ip.weight": (3072, 4096), "ip_adapter.1.to_v_ip.weight": (3072, 4096),
      "image_proj.proj.0.weight": (2048, 1152)}, "InstantX"),
    ({**ip_layers(SD15), "ip_adapter.0.to_q_lora.down.weight": (128, 320), "image_proj.proj.0.weight": (1024, 512),
      "image_proj.proj.2.weight": (3072, 1024), "image_proj.norm.weight": (768,)}, "FaceID"),
    ({**ip_layers(SD15), "image_proj.proj.0.weight": (1024, 512), "image_proj.proj.2.weight": (3072, 1024),
      "image_proj.norm.weight": (768,)}, "FaceID"),
    ({"style_embedding": (1, 8, 1024)}, "T2I style"),
    ({"model.diffusion_model.x": (1,)}, "not an IP-Adapter"),
    ({"ip_adapter.1.to_k_ip.weight": (320, 1024), "ip_adapter.1.to_v_ip.weight": (320, 1024),
      "image_proj.proj.weight": (4096, 1024), "image_proj.norm.weight": (1024,)}, r"SD1\.5 \(768\) or SDXL"),
])
def test_layouts_refused_with_a_reason(shapes, reason):
    with pytest.raises(LayoutError, match=reason):
        detect(shapes)


def test_bin_files_are_flattened_like_safetensors():
    nested = {"image_proj": {"proj.weight": 1, "norm.weight": 2}, "ip_adapter": {"1.to_k_ip.weight": 3}}
    assert flatten(nested) == {"image_proj.proj.weight": 1, "image_proj.norm.weight": 2, "ip_adapter.1.to_k_ip.weight": 3}


def test_encoder_must_give_what_the_projection_reads():
    assert encoder_issue(detect(plain(SD15, 1024)), (1024, 1280)) is None  # ViT-H: 1024 pooled, 1280 hidden
    assert "1024-wide pooled" in encoder_issue(detect(plain(SD15, 1024)), (768, 1024))  # ViT-L
    assert "1280-wide hidden" in encoder_issue(detect(plus(SD15, 768, 12, 1280)), (1280, 1664))  # ViT-bigG


def test_families_and_architectures_of_the_documented_airs():
    assert family_of("runware:105@1") == "redux" and family_of("runware:56@2") == "flux"
    assert family_of("runware:55@7") == "unet" and family_of("test:x@1") is None
    assert family_of("test:x@1", "styleModel") == "redux"
    assert family_of("test:x@1", "ipAdapter", "style_models/flux1-redux-dev.safetensors") == "redux"
    assert {KNOWN_ADAPTERS[f"runware:55@{i}"][0] for i in range(1, 5)} == {"sdxl"}
    assert {KNOWN_ADAPTERS[f"runware:55@{i}"][0] for i in range(5, 11)} == {"sd-1-5"}
    assert fits_architecture("sdxl", "pony") and not fits_architecture("sdxl", "sd-1-5")
    assert not fits_architecture("flux-1-dev", "sdxl") and fits_architecture("sd-1-5", None)
