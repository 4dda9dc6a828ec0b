"""layerDiffuse and watermark through the compiler and the exporter: graph shape, round trip, refusals."""

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from unit_helpers import IMG, UUID, compilable_requests, round_trip

from imageinference.contract.errors import ContractError
from imageinference.contract.request import WATERMARK_POSITIONS
from imageinference.engines.models.catalog import Catalog
from imageinference.interop.compiler import compile_request
from imageinference.interop.exporter import canonical_export, export_prompt
from imageinference.interop.registry import handled_fields

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def catalog(tmp_path_factory):
    path = tmp_path_factory.mktemp("cat") / "catalog.json"
    path.write_text(json.dumps({"models": {
        "test:sd15@1": {"kind": "checkpoint", "architecture": "sd-1-5", "files": {"model": "checkpoints/tiny.safetensors"}},
        "test:lora@1": {"kind": "lora", "files": {"model": "loras/style.safetensors"}},
        "test:cn@1": {"kind": "controlNet", "files": {"model": "controlnet/canny.safetensors"}},
    }}))
    return Catalog.load(path)


def base(**kw):
    return {"taskType": "imageInference", "taskUUID": UUID, "model": "rundiffusion:130@100", "positivePrompt": "a cat",
            "width": 512, "height": 512, "outputFormat": "PNG", **kw}


def test_both_fields_have_an_engine():
    assert {"layerDiffuse", "watermark"} <= handled_fields()


def test_layer_diffuse_compiles_to_the_lora_before_the_sampler_and_the_transparent_vae_as_its_vae():
    _c, prompt = compile_request(base(layerDiffuse=True, lora=[{"model": "test:lora@1", "weight": 0.5}],
                                      acceleratorOptions={"fbCache": True}))
    assert prompt["90"]["class_type"] == "ImageInferenceLayerDiffuse"
    assert prompt["4"]["inputs"]["model"] == ["90", 0]
    assert prompt["90"]["inputs"]["model"] == ["12", 0]  # after the step cache, which sees no weights
    assert prompt["92"] == {"class_type": "ImageInferenceTransparentVAE", "inputs": {"vae": ["1", 2], "augment": True}}
    assert prompt["4"]["inputs"]["vae"] == ["92", 0]  # the sampler decodes (and encodes) RGBA itself
    assert prompt["5"]["inputs"]["images"] == ["4", 0]
    assert "91" not in prompt and "93" not in prompt  # no separate decode; no seed image


def test_a_layer_diffuse_seed_image_reaches_the_sampler_with_its_alpha(catalog):
    req = base(layerDiffuse=True, inputs={"seedImage": IMG}, strength=0.7, hiresFix=True)
    _c, prompt = compile_request(req)
    assert prompt["6"]["class_type"] == "ImageInferenceLoadImage"
    assert prompt["93"] == {"class_type": "JoinImageWithAlpha", "inputs": {"image": ["6", 0], "alpha": ["6", 1]}}
    assert prompt["4"]["inputs"]["seedImage"] == ["93", 0] and prompt["4"]["inputs"]["vae"] == ["92", 0]
    canonical, exported = round_trip(req, catalog)
    assert exported.request == canonical and exported.not_exportable == []
    _c, plain = compile_request(base(inputs={"seedImage": IMG}))
    assert plain["4"]["inputs"]["seedImage"] == ["6", 0]  # without layerDiffuse the seed image is as before


def test_watermark_is_the_last_step_before_the_output_and_is_linked_into_it():
    wm = {"text": "hello", "displayPosition": "top-left", "tiled": True, "opacity": 0.4, "fontColor": "#112233"}
    _c, prompt = compile_request(base(layerDiffuse=True, watermark=wm))
    node = prompt["80"]
    assert node["class_type"] == "ImageInferenceWatermark"
    assert node["inputs"] == {"images": ["4", 0], "text": "hello", "image": "", "displayPosition": "top-left",
                              "tiled": True, "opacity": 0.4, "fontColor": "#112233", "bgColor": ""}
    assert prompt["5"]["inputs"]["images"] == ["80", 0] and prompt["5"]["inputs"]["watermark"] == ["80", 1]


def test_legacy_advanced_features_compile_like_the_top_level_fields(catalog):
    legacy = base(advancedFeatures={"layerDiffuse": True, "watermark": {"text": "hi"}})
    top = base(layerDiffuse=True, watermark={"text": "hi"})
    assert compile_request(legacy) == compile_request(top)
    canonical, exported = round_trip(legacy, catalog)
    assert exported.request == canonical and exported.not_exportable == []


@pytest.mark.parametrize(("extra", "parameter"), [
    ({"inputs": {"seedImage": IMG, "maskImage": IMG}}, "layerDiffuse"),
    ({"inputs": {"seedImage": IMG}, "outpaint": {"top": 64}, "height": 576}, "layerDiffuse"),
])
def test_layer_diffuse_with_inpainting_or_outpainting_is_refused(extra, parameter):
    with pytest.raises(ContractError) as info:
        compile_request(base(layerDiffuse=True, **extra))
    assert info.value.codes == ["unsupportedLayerDiffuse"] and info.value.parameters == [parameter]
    assert info.value.errors[0].task_uuid == UUID


@pytest.mark.parametrize(("field", "value", "code", "parameter"), [
    ("watermark", {"text": "x"}, "invalidText", "watermark.text"),
    ("watermark", {"text": "ok", "image": IMG}, "invalidWatermark", "watermark"),
    ("watermark", {"text": "ok", "displayPosition": "middle"}, "invalidDisplayPosition", "watermark.displayPosition"),
    ("watermark", {"text": "ok", "opacity": 0}, "invalidOpacity", "watermark.opacity"),
    ("watermark", {"text": "ok", "fontColor": "#GGGGGG"}, "invalidFontColor", "watermark.fontColor"),
    ("watermark", "hello", "invalidWatermark", "watermark"),
    ("layerDiffuse", 1, "invalidLayerDiffuse", "layerDiffuse"),
])
def test_bad_input_is_a_contract_error_naming_the_parameter(field, value, code, parameter):
    with pytest.raises(ContractError) as info:
        compile_request(base(**{field: value}))
    assert (code, parameter) in zip(info.value.codes, info.value.parameters, strict=True)


def test_export_notes_a_single_pass_decode(catalog):
    _c, prompt = compile_request(base(layerDiffuse=True))
    prompt["92"]["inputs"]["augment"] = False
    exported = export_prompt(prompt, catalog)
    assert exported.request["layerDiffuse"] is True
    assert any("node 92 (ImageInferenceTransparentVAE)" in n and "augment" in n for n in exported.not_exportable)


def test_shipped_examples_use_both_features():
    layer = json.loads((ROOT / "workflows/requests/flux-layer-diffuse.json").read_text())
    mark = json.loads((ROOT / "workflows/requests/sd3-watermark.json").read_text())
    assert layer["model"] == "rundiffusion:130@100" and layer["layerDiffuse"] is True
    assert mark["model"] == "runware:5@1" and mark["watermark"]["text"]
    for req in (layer, mark):
        canonical, prompt = compile_request(req)
        assert canonical_export(json.loads(json.dumps(prompt)), Catalog.load()).request == canonical


colours = st.from_regex(r"#[0-9A-Fa-f]{6}", fullmatch=True)
watermarks = st.fixed_dictionaries(
    {"displayPosition": st.sampled_from(WATERMARK_POSITIONS), "tiled": st.booleans(),
     "opacity": st.floats(0.1, 1.0, allow_nan=False)},
    optional={"fontColor": colours, "bgColor": st.one_of(colours, st.just("transparent"))},
).flatmap(lambda wm: st.one_of(
    st.builds(lambda t: {**wm, "text": t}, st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)),
                                                        min_size=2, max_size=32)),
    st.just({**wm, "image": IMG})))


@st.composite
def requests_with_layer_and_watermark(draw):
    req = draw(compilable_requests())
    if draw(st.booleans()):
        req["watermark"] = draw(watermarks)
    if draw(st.booleans()):  # made a FLUX text-to-image or image-to-image request, LayerDiffuse's domain
        req["model"] = "rundiffusion:130@100"
        req.pop("clipSkip", None)
        if "promptWeighting" in req:
            req["promptWeighting"] = "sdEmbeds"
        for key in ("maskMargin", "outpaint"):
            req.pop(key, None)
        (req.get("inputs") or {}).pop("maskImage", None)
        req["layerDiffuse"] = True
        req["outputFormat"] = draw(st.sampled_from(["PNG", "WEBP"]))
    return req


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(requests_with_layer_and_watermark())
def test_generated_requests_with_both_fields_round_trip(catalog, req):
    canonical, exported = round_trip(req, catalog)
    assert exported.request == canonical
    assert exported.not_exportable == []


def test_layer_diffuse_false_is_the_default_and_round_trips(catalog):
    from imageinference.contract.validate import validate_task

    assert "layerDiffuse" not in validate_task(base(layerDiffuse=False)).to_json()
    canonical, exported = round_trip(base(layerDiffuse=False), catalog)
    assert "layerDiffuse" not in canonical and exported.request == canonical
    _c, prompt = compile_request(base(layerDiffuse=False))
    assert not any(n["class_type"].startswith("ImageInferenceLayerDiffuse") for n in prompt.values())


def test_a_core_graph_with_the_layer_diffuse_nodes_exports(catalog):
    """UNETLoader -> LayerDiffuse LoRA -> KSampler -> Transparent VAE Decode -> Watermark -> SaveImage."""
    graph = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny.safetensors"}},
        "2": {"class_type": "ImageInferenceLayerDiffuse", "inputs": {"model": ["1", 0]}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": "a glass bottle"}},
        "4": {"class_type": "EmptySD3LatentImage", "inputs": {"width": 512, "height": 512, "batch_size": 1}},
        "5": {"class_type": "KSampler", "inputs": {
            "model": ["2", 0], "positive": ["3", 0], "negative": ["3", 0], "latent_image": ["4", 0], "seed": 3,
            "steps": 20, "cfg": 1.0, "sampler_name": "euler", "scheduler": "simple", "denoise": 1.0}},
        "7": {"class_type": "ImageInferenceTransparentDecode", "inputs": {"latent": ["5", 0], "vae": ["1", 2],
                                                                          "augment": True}},
        "8": {"class_type": "ImageInferenceWatermark", "inputs": {
            "images": ["7", 0], "text": "draft", "image": "", "displayPosition": "top-right", "tiled": False,
            "opacity": 0.5, "fontColor": "", "bgColor": "#000000"}},
        "9": {"class_type": "SaveImage", "inputs": {"images": ["8", 0], "filename_prefix": "x"}},
    }
    exported = export_prompt(graph, catalog)
    req = exported.request
    assert req["layerDiffuse"] is True and req["model"] == "test:sd15@1" and req["seed"] == 3
    assert (req["width"], req["height"], req["positivePrompt"]) == (512, 512, "a glass bottle")
    assert req["watermark"] == {"text": "draft", "displayPosition": "top-right", "tiled": False, "opacity": 0.5,
                                "bgColor": "#000000"}
    assert exported.not_exportable == []
