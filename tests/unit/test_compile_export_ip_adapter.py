"""`ipAdapters[]` through the compiler and the exporter: round trip over every option, graph shape, refusals."""

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from unit_helpers import IMG, UUID, compilable_requests, round_trip

from imageinference.contract.errors import ContractError
from imageinference.engines.ipadapter.options import COMBINE_METHODS, EMBED_SCALINGS, WEIGHT_TYPES
from imageinference.interop.compiler import compile_request
from imageinference.interop.exporter import export_prompt, file_reader

ROOT = Path(__file__).resolve().parents[2]
URL = "https://example.com/guide.png"
SD_ADAPTERS = [f"runware:55@{i}" for i in range(5, 11)]
FLUX_ADAPTERS = [f"runware:56@{i}" for i in range(1, 5)]
images = st.lists(st.sampled_from([IMG, URL, "59a2edc2-45e6-429f-be5f-7ded59b92047"]), min_size=1, max_size=3)
weights = st.floats(-4, 4, allow_nan=False)


@st.composite
def sd_adapter(draw):
    entry = {"model": draw(st.sampled_from(SD_ADAPTERS)), "guideImages": draw(images), "weight": draw(weights),
             "combineMethod": draw(st.sampled_from(COMBINE_METHODS)),
             "embedScaling": draw(st.sampled_from(EMBED_SCALINGS)), "weightType": draw(st.sampled_from(WEIGHT_TYPES))}
    if draw(st.booleans()):
        entry["weightComposition"] = draw(st.floats(0, 1))
    return entry


@st.composite
def flux_adapter(draw):
    return {"model": draw(st.sampled_from(FLUX_ADAPTERS)), "guideImages": draw(images), "weight": draw(weights),
            "combineMethod": draw(st.sampled_from(COMBINE_METHODS)),
            "embedScaling": draw(st.sampled_from(["only_v", "kv"]))}


@st.composite
def redux(draw):
    return {"model": "runware:105@1", "guideImages": draw(images), "weight": draw(weights),
            "combineMethod": draw(st.sampled_from(COMBINE_METHODS))}


@st.composite
def with_ip_adapters(draw):
    req = draw(compilable_requests())
    model = req["model"]
    if model == "runware:5@1":  # SD3 has no IP-Adapters
        req["model"] = "civitai:4384@128713"
        req.pop("acceleratorOptions", None)
        if req.get("promptWeighting") is None and draw(st.booleans()):
            req["promptWeighting"] = "compel"
    if req["model"] == "rundiffusion:130@100":
        # IP-Adapters (model path) are exported before Redux entries (conditioning): generate them in that order
        req["ipAdapters"] = draw(st.lists(flux_adapter(), max_size=3)) + draw(st.lists(redux(), max_size=2))
        if not req["ipAdapters"]:
            req["ipAdapters"] = [draw(redux())]
    else:
        req["ipAdapters"] = draw(st.lists(sd_adapter(), min_size=1, max_size=3))
    return req


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(with_ip_adapters())
def test_generated_ip_adapter_requests_round_trip(catalog, req):  # noqa: F811
    canonical, exported = round_trip(req, catalog)
    assert exported.request == canonical
    assert exported.not_exportable == []


@pytest.mark.parametrize("name", ["sd15-ip-adapter", "flux-ip-adapter"])
def test_shipped_examples_round_trip(catalog, name):  # noqa: F811
    canonical, exported = round_trip(json.loads((ROOT / "workflows" / "requests" / f"{name}.json").read_text()),
                                     catalog)
    assert exported.request == canonical and exported.not_exportable == []


def base(model="civitai:4384@128713", **extra):
    return {"taskType": "imageInference", "taskUUID": UUID, "model": model, "positivePrompt": "a cat",
            "width": 512, "height": 512, **extra}


def by_class(prompt, class_type):
    return {nid: n for nid, n in prompt.items() if n["class_type"] == class_type}


def test_adapters_chain_on_the_model_after_loras_and_before_the_cache_and_redux_after_controlnets():
    req = base("rundiffusion:130@100", lora=[{"model": "test:lora@1"}],
               controlNet=[{"model": "test:cn@1", "guideImage": IMG}],
               acceleratorOptions={"fbCache": True},
               ipAdapters=[{"model": "runware:56@2", "guideImages": [IMG, URL]},
                           {"model": "runware:105@1", "guideImage": IMG},  # legacy singular, normalised
                           {"model": "runware:56@1", "guideImages": [URL], "weight": 0.5}])
    canonical, prompt = compile_request(req)
    assert canonical["ipAdapters"][1]["guideImages"] == [IMG]
    assert prompt["41"]["inputs"]["model"] == ["2", 0] and prompt["43"]["inputs"]["model"] == ["41", 0]
    assert prompt["12"]["inputs"]["model"] == ["43", 0]  # the step cache sees the adapters' blocks
    assert json.loads(prompt["40"]["inputs"]["guideImages"]) == [IMG, URL]
    assert prompt["42"]["inputs"]["role"] == "ipAdapters.2.guideImages"
    assert prompt["131"]["class_type"] == "ImageInferenceRedux" and prompt["130"]["inputs"]["role"] == \
        "ipAdapters.1.guideImages"
    controlnet = next(nid for nid, n in prompt.items() if n["class_type"] == "ImageInferenceControlNet")
    assert prompt["131"]["inputs"]["positive"] == [controlnet, 0]
    assert prompt["4"]["inputs"]["positive"] == ["131", 0]


def test_mixed_order_exports_ip_adapters_before_redux(catalog):  # noqa: F811
    req = base("rundiffusion:130@100", ipAdapters=[{"model": "runware:105@1", "guideImages": [IMG]},
                                                   {"model": "runware:56@1", "guideImages": [URL]}])
    canonical, exported = round_trip(req, catalog)
    assert [e["model"] for e in exported.request["ipAdapters"]] == ["runware:56@1", "runware:105@1"]
    assert exported.request["ipAdapters"][::-1] == canonical["ipAdapters"]


@pytest.mark.parametrize(("model", "entry", "codes", "parameters"), [
    ("rundiffusion:130@100", {"model": "runware:56@1", "weightType": "composition", "weightComposition": 0.3},
     ["unsupportedWeightType", "unsupportedWeightComposition"],
     ["ipAdapters.0.weightType", "ipAdapters.0.weightComposition"]),
    ("rundiffusion:130@100", {"model": "runware:56@3", "embedScaling": "kv_penalty_c"}, ["unsupportedEmbedScaling"],
     ["ipAdapters.0.embedScaling"]),
    ("rundiffusion:130@100", {"model": "runware:105@1", "embedScaling": "only_v"}, ["unsupportedEmbedScaling"],
     ["ipAdapters.0.embedScaling"]),
    ("rundiffusion:130@100", {"model": "runware:55@5"}, ["invalidModel"], ["ipAdapters.0.model"]),
    ("civitai:4384@128713", {"model": "runware:55@2"}, ["invalidModel"], ["ipAdapters.0.model"]),
    ("civitai:4384@128713", {"model": "runware:56@2", "embedScaling": "k_mean_v_penalty_c"},
     ["unsupportedEmbedScaling", "invalidModel"], ["ipAdapters.0.embedScaling", "ipAdapters.0.model"]),
])
def test_refused_at_compile_time(model, entry, codes, parameters):
    with pytest.raises(ContractError) as info:
        compile_request(base(model, ipAdapters=[{"guideImages": [IMG], **entry}]))
    assert info.value.codes == codes and info.value.parameters == parameters
    assert all(e.task_uuid == UUID for e in info.value.errors)


def test_too_many_adapters():
    with pytest.raises(ContractError) as info:
        compile_request(base(ipAdapters=[{"model": "runware:55@5", "guideImages": [IMG]}] * 11))
    assert info.value.parameters == ["ipAdapters"]


def test_a_hand_built_graph_with_core_guide_images_exports(catalog, tmp_path):  # noqa: F811
    (tmp_path / "face.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 16)
    _c, prompt = compile_request(base(ipAdapters=[{"model": "runware:55@8", "guideImages": [IMG]}]))
    prompt["40"] = {"class_type": "LoadImage", "inputs": {"image": "face.png"}}
    prompt["41"]["inputs"]["air"] = ""
    prompt["41"]["inputs"]["ipAdapter"] = "runware:55@8"
    exported = export_prompt(prompt, catalog, read_image=file_reader(tmp_path))
    (entry,) = exported.request["ipAdapters"]
    assert entry["model"] == "runware:55@8" and entry["guideImages"][0].startswith("data:image/png;base64,")
    assert "weightComposition" not in entry and exported.not_exportable == []
    notes = export_prompt(prompt, catalog).not_exportable  # no reader: the entry cannot be exported, and says so
    assert "ipAdapters" not in export_prompt(prompt, catalog).request and any("node 40 (LoadImage)" in n for n in notes)


def test_middle_block_on_is_a_node_option_the_request_cannot_carry(catalog):  # noqa: F811
    _c, prompt = compile_request(base(ipAdapters=[{"model": "runware:55@8", "guideImages": [IMG]}]))
    assert prompt["41"]["inputs"]["middleBlock"] is False  # compiled requests keep the default (as cubiq's node)
    assert export_prompt(prompt, catalog).not_exportable == []
    prompt["41"]["inputs"]["middleBlock"] = True
    exported = export_prompt(prompt, catalog)
    assert len(exported.request["ipAdapters"]) == 1
    assert [n for n in exported.not_exportable if "middleBlock" in n and "node 41" in n]
