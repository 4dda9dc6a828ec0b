"""The core generation nodes against real ComfyUI and the tiny models."""

import base64
import io
import json

import pytest
import torch
from PIL import Image

from imageinference.contract.errors import ContractError

W = H = 64


@pytest.fixture(scope="module")
def nodes_mod(comfy):
    from imageinference.comfyui.nodes import image_inference, load_image, lora_stack, model_loader, output

    return {"loader": model_loader.AIRModelLoader, "lora": lora_stack.LoraStack,
            "sampler": image_inference.ImageInference, "load": load_image.LoadImageString,
            "output": output.ImageInferenceOutput}


@pytest.fixture(scope="module")
def sd15(comfy, nodes_mod):
    model, clip, vae = nodes_mod["loader"].execute("test:sd15@1").result
    pos = comfy.CLIPTextEncode().encode(clip, "a lighthouse at dusk")[0]
    neg = comfy.CLIPTextEncode().encode(clip, "blurry")[0]
    return model, clip, vae, pos, neg


def run(nodes_mod, sd15, **kw):
    model, _clip, vae, pos, neg = sd15
    args = dict(width=W, height=H, seed=5, steps=3, scheduler="Euler", CFGScale=7.0, numberResults=1,
                strength=0.8, maskMargin=0)
    args.update(kw)
    images, seeds = nodes_mod["sampler"].execute(model, vae, kw.pop("positive", pos), kw.pop("negative", neg),
                                                 **{k: v for k, v in args.items() if k not in ("positive", "negative")}
                                                 ).result[:2]
    return images, json.loads(seeds)


def test_txt2img_is_bit_identical_to_core_ksampler(comfy, nodes_mod, sd15):
    model, _clip, vae, pos, neg = sd15
    ours, seeds = run(nodes_mod, sd15, seed=123, steps=4, scheduler="DPM++ 2M Karras")
    latent = comfy.EmptyLatentImage().generate(W, H, 1)[0]
    core_latent = comfy.common_ksampler(model, 123, 4, 7.0, "dpmpp_2m", "karras", pos, neg, latent)[0]
    core = comfy.VAEDecode().decode(vae, core_latent)[0]
    assert seeds == [123]
    assert ours.shape == (1, H, W, 3)
    assert torch.equal(ours, core)


def test_loader_gives_the_same_model_as_core_checkpoint_loader(comfy, nodes_mod, sd15):
    core_model, _c, core_vae = comfy.CheckpointLoaderSimple().load_checkpoint("tiny_sd15.safetensors")[:3]
    _m, _clip, _vae, pos, neg = sd15
    ours, _ = run(nodes_mod, sd15, seed=9)
    theirs, _ = run(nodes_mod, (core_model, None, core_vae, pos, neg), seed=9)
    assert torch.equal(ours, theirs)


def test_number_results_each_with_its_own_seed(nodes_mod, sd15):
    batch, seeds = run(nodes_mod, sd15, seed=40, numberResults=3)
    assert seeds == [40, 41, 42] and batch.shape[0] == 3
    for i, seed in enumerate(seeds):
        single, _ = run(nodes_mod, sd15, seed=seed)
        assert torch.allclose(batch[i], single[0], atol=2e-3), (i, (batch[i] - single[0]).abs().max())
    assert not torch.allclose(batch[0], batch[1])


def test_negative_prompt_is_ignored_when_cfg_at_most_one(comfy, nodes_mod, sd15):
    model, clip, vae, pos, neg = sd15
    other = comfy.CLIPTextEncode().encode(clip, "a completely different negative")[0]
    for cfg in (1.0, 0.5):
        a, _ = run(nodes_mod, sd15, CFGScale=cfg)
        b, _ = run(nodes_mod, sd15, CFGScale=cfg, negative=other)
        assert torch.equal(a, b)
    a, _ = run(nodes_mod, sd15, CFGScale=4.0)
    b, _ = run(nodes_mod, sd15, CFGScale=4.0, negative=other)
    assert not torch.equal(a, b)


def seed_image():
    g = torch.Generator().manual_seed(0)
    return torch.rand((1, 96, 80, 3), generator=g)  # another size: scaled to cover, centre-cropped


def test_img2img_output_size_and_strength(nodes_mod, sd15):
    img = seed_image()
    out, _ = run(nodes_mod, sd15, seedImage=img, strength=0.5)
    assert out.shape == (1, H, W, 3)
    txt, _ = run(nodes_mod, sd15)
    assert not torch.equal(out, txt)


@pytest.mark.parametrize("margin", [0, 32])
def test_inpaint_leaves_pixels_outside_the_mask_unchanged(nodes_mod, sd15, margin):
    from imageinference.engines.samplers.passes import fit, fit_mask

    img = seed_image()
    mask = torch.zeros((1, 96, 80))  # the seed image's size
    mask[:, 30:54, 28:52] = 1.0
    out, _ = run(nodes_mod, sd15, seedImage=img, maskImage=mask, strength=1.0, maskMargin=margin, numberResults=2)
    original = fit(img, W, H)
    scaled = fit_mask(mask, W, H)[0]  # the mask in output space, as documented
    outside = scaled == 0
    assert outside.sum() > 2000
    assert torch.equal(out[:, outside], original[:, outside].expand(2, -1, -1))
    inside = scaled == 1
    assert (out[:, inside] - original[:, inside]).abs().mean() > 0.01


def test_mask_of_another_size_than_the_seed_image_is_refused(nodes_mod, sd15):
    with pytest.raises(ContractError) as info:
        run(nodes_mod, sd15, seedImage=seed_image(), maskImage=torch.ones((1, 64, 64)))
    assert info.value.codes == ["invalidMaskImage"] and info.value.parameters == ["inputs.maskImage"]


def test_lora_stack_weight_zero_is_identity_and_reports_keys(nodes_mod, sd15):
    model, clip, vae, pos, neg = sd15
    lora = nodes_mod["lora"]
    m0, c0, report0 = lora.execute(model, '[{"model": "test:lora@1", "weight": 0}]', clip).result
    m1, _c1, report1 = lora.execute(model, '[{"model": "test:lora@1", "weight": 1.5}]', clip).result
    assert json.loads(report1)[0]["unmatchedKeys"] == []
    base, _ = run(nodes_mod, sd15)
    zero, _ = run(nodes_mod, (m0, c0, vae, pos, neg))
    one, _ = run(nodes_mod, (m1, None, vae, pos, neg))
    assert torch.equal(base, zero)
    assert not torch.equal(base, one)
    with pytest.raises(ContractError) as info:
        lora.execute(model, '[{"model": "test:lora@1", "transformer": "high"}]', clip)
    assert info.value.codes == ["unsupportedTransformer"]
    with pytest.raises(ContractError) as info:
        lora.execute(model, '[{"model": "test:lora@1", "weight": 9}]', clip)
    assert info.value.parameters == ["lora.0.weight"]


def test_a_lora_that_matches_nothing_is_a_warning_in_the_response(comfy, nodes_mod, tmp_path):
    """An SD1.5 LoRA on an SD3 model patches nothing: the sampler passes a warning to the response."""
    model, clip, vae = nodes_mod["loader"].execute("test:sd3@1").result
    patched, clip2, _report = nodes_mod["lora"].execute(model, '[{"model": "test:lora@1", "weight": 1}]', clip).result
    pos = comfy.CLIPTextEncode().encode(clip2, "a lighthouse")[0]
    out = nodes_mod["sampler"].execute(patched, vae, pos, pos, width=W, height=H, seed=1, steps=1,
                                       scheduler="Euler", CFGScale=1.0, numberResults=1, strength=0.8,
                                       maskMargin=0).result
    images, seeds, warnings = out[0], out[1], out[3]
    (note,) = json.loads(warnings)
    assert note["code"] == "unmatchedLoraKeys" and note["parameter"] == "lora.0.model"
    assert json.loads(nodes_mod["sampler"].execute(model, vae, pos, pos, width=W, height=H, seed=1, steps=1,
                                                   scheduler="Euler", CFGScale=1.0, numberResults=1, strength=0.8,
                                                   maskMargin=0).result[3]) == []
    response = json.loads(nodes_mod["output"].execute(images, "PNG", 95, "base64Data", 0, False, seeds,
                                                      warnings=warnings).result[0])
    assert [w["code"] for w in response["warnings"]] == ["unmatchedLoraKeys"]
    assert response["data"][0]["seed"] == 1


def test_loader_errors_name_air_entry_and_folder(nodes_mod):
    loader = nodes_mod["loader"]
    with pytest.raises(ContractError) as info:
        loader.execute("(typed in below)", air="civitai:999@999")
    assert info.value.codes == ["unknownModel"]
    with pytest.raises(ContractError) as info:
        loader.execute("test:missing@1")
    err = info.value.errors[0]
    assert err.code == "missingModelFile" and "test:missing@1" in err.message
    assert "not_there.safetensors" in err.message and "checkpoints" in err.message
    with pytest.raises(ContractError) as info:
        loader.execute("test:lora@1")
    assert info.value.codes == ["invalidModelKind"]


def test_loader_loads_flux_components(nodes_mod):
    model, clip, vae = nodes_mod["loader"].execute("test:flux@1").result
    assert model.get_model_object("model_sampling") is not None
    assert vae.latent_channels == 16 and clip is None


def test_load_image_string_and_output_node(comfy, nodes_mod, sd15, tmp_path):
    buf = io.BytesIO()
    Image.new("RGBA", (40, 24), (255, 0, 0, 0)).save(buf, "PNG")
    data_uri = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
    image, mask = nodes_mod["load"].execute(data_uri, "seedImage").result
    assert image.shape == (1, 24, 40, 3) and torch.all(mask == 1.0)  # fully transparent
    with pytest.raises(ContractError) as info:
        nodes_mod["load"].execute("http://127.0.0.1/x.png", "seedImage")
    assert info.value.parameters == ["inputs.seedImage"]

    images, seeds = run(nodes_mod, sd15, numberResults=2)
    out = nodes_mod["output"].execute(images, "WEBP", 80, "URL", 3600, True, json.dumps(seeds), "",
                                      json.dumps({"model": "test:sd15@1"}))
    body = json.loads(out.result[0])
    assert [d["seed"] for d in body["data"]] == seeds
    from imageinference.comfyui.paths import image_store
    from imageinference.engines.imageio.encode import read_metadata

    for item in body["data"]:
        assert item["cost"] == 0.0 and "imageURL" in item
        stored = image_store().find(item["imageUUID"])
        assert stored.suffix == ".webp"
        assert read_metadata(stored.read_bytes())["request"] == {"model": "test:sd15@1"}
    with pytest.raises(ContractError):
        nodes_mod["output"].execute(images, "PNG", 80, "dataURI", 120, False, "[1]", "", "")


@pytest.mark.parametrize("widget,text", [("request", "{not json"), ("request", "[1, 2]"), ("watermark", "{oops")])
def test_malformed_request_or_watermark_widgets_are_contract_errors(nodes_mod, widget, text):
    images = torch.zeros(1, 8, 8, 3)
    with pytest.raises(ContractError) as info:
        nodes_mod["output"].execute(images, "PNG", 80, "URL", 0, False, "[1]", "", **{widget: text})
    assert info.value.parameters == [widget]


def test_the_default_jpg_output_delivers_a_photo_sized_request(comfy, nodes_mod):
    """Before the fix: `ValueError: EXIF data is too long` after sampling, for any request with a real image."""
    from imageinference.comfyui.paths import image_store
    from imageinference.engines.imageio.encode import read_metadata
    from imageinference.testing.photos import as_base64, photo

    seed_image = as_base64(photo(1024, seed=4))
    request = {"model": "test:sd15@1", "inputs": {"seedImage": seed_image}}
    images = torch.rand(2, 64, 64, 3)
    body = json.loads(nodes_mod["output"].execute(images, "JPG", 95, "URL", 0, False, "[1, 2]", "",
                                                  json.dumps(request)).result[0])
    assert "warnings" not in body and len(body["data"]) == 2
    embedded = read_metadata(image_store().find(body["data"][0]["imageUUID"]).read_bytes())
    stored_seed = image_store().find(embedded["request"]["inputs"]["seedImage"])
    assert stored_seed is not None and stored_seed.read_bytes() == base64.b64decode(seed_image)
