"""`pulid` through the compiler and the exporter: placement on the model path, round trips, legacy spellings."""

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from unit_helpers import IMG, UUID, compilable_requests, round_trip

from imageinference.contract.errors import ContractError
from imageinference.engines.pulid.stack import DEFAULT_PULID
from imageinference.interop.compiler import compile_request
from imageinference.interop.exporter import canonical_export, export_prompt, file_reader

FLUX = "rundiffusion:130@100"


@st.composite
def pulid_requests(draw):
    req = draw(compilable_requests().filter(lambda r: r["model"] == FLUX))
    entry = {"images": [IMG], "idWeight": draw(st.floats(0, 3, allow_nan=False))}
    start = draw(st.sampled_from(["none", "step", "percentage"]))
    if start == "step":
        entry["CFGstartStep"] = draw(st.integers(0, req["steps"] - 1))
    elif start == "percentage":
        entry["CFGstartStepPercentage"] = draw(st.integers(0, 99))
    if draw(st.booleans()):
        entry["trueCFGScale"] = draw(st.floats(0, 10, allow_nan=False))
    req["pulid"] = entry
    return req


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pulid_requests())
def test_generated_pulid_requests_round_trip(catalog, req):  # noqa: F811
    canonical, exported = round_trip(req, catalog)
    assert exported.request == canonical
    assert exported.not_exportable == []


def base(**extra):
    return {"taskType": "imageInference", "taskUUID": UUID, "model": FLUX, "positivePrompt": "a portrait photo",
            "width": 512, "height": 512, "steps": 20, **extra}


def test_pulid_sits_after_the_lora_stack_and_before_the_step_cache():
    req = base(lora=[{"model": "test:lora@1", "weight": 0.5}], pulid={"images": [IMG], "CFGstartStep": 4},
               acceleratorOptions={"fbCache": True, "fbCacheThreshold": 0.2})
    _canonical, prompt = compile_request(req)
    node = prompt["61"]
    assert node["class_type"] == "ImageInferencePuLID"
    assert prompt[node["inputs"]["model"][0]]["class_type"] == "ImageInferenceLoraStack"
    assert prompt["60"] == {"class_type": "ImageInferenceLoadImage", "inputs": {"image": IMG, "role": "pulid.images"}}
    assert node["inputs"]["image"] == ["60", 0] and node["inputs"]["air"] == DEFAULT_PULID
    assert (node["inputs"]["CFGstartStep"], node["inputs"]["CFGstartStepPercentage"]) == (4, -1)
    assert node["inputs"]["trueCFGScale"] == -1
    cache = next(n for n in prompt.values() if n["class_type"] == "ImageInferenceFBCache")
    assert cache["inputs"]["model"] == ["61", 0]


def test_documented_and_2026_spellings_compile_alike():
    docs = base(puLID={"inputImages": [IMG], "idWeight": 2, "CFGStartStepPercentage": 30, "trueCFGScale": 1.5})
    schema = base(pulid={"images": [IMG], "idWeight": 2, "CFGstartStepPercentage": 30, "trueCFGScale": 1.5})
    assert compile_request(docs) == compile_request(schema)
    canonical, prompt = compile_request(docs)
    assert canonical["pulid"] == {"images": [IMG], "idWeight": 2.0, "CFGstartStepPercentage": 30, "trueCFGScale": 1.5}
    assert prompt["61"]["inputs"]["trueCFGScale"] == 1.5


@pytest.mark.parametrize(("pulid", "code", "parameter"), [
    ({"images": [IMG, IMG]}, "invalidImages", "pulid.images"),
    ({"images": []}, "invalidImages", "pulid.images"),
    ({"images": [IMG], "idWeight": 3.5}, "invalidIdWeight", "pulid.idWeight"),
    ({"images": [IMG], "CFGstartStep": 2, "CFGstartStepPercentage": 10}, "conflictCFGstartStepPercentage",
     "pulid.CFGstartStepPercentage"),
    ({"images": [IMG], "CFGstartStep": 20}, "invalidCFGstartStep", "pulid.CFGstartStep"),
])
def test_bad_pulid_requests_name_the_parameter(pulid, code, parameter):
    with pytest.raises(ContractError) as info:
        compile_request(base(pulid=pulid))
    assert code in info.value.codes and parameter in info.value.parameters


def test_pulid_is_refused_on_models_without_it():
    with pytest.raises(ContractError) as info:
        compile_request(base(model="runware:5@1", pulid={"images": [IMG]}))
    assert "unsupportedPulid" in info.value.codes and "pulid" in info.value.parameters


def test_other_pulid_weights_are_listed_as_not_exportable(catalog):  # noqa: F811
    _canonical, prompt = compile_request(base(pulid={"images": [IMG]}))
    prompt["61"]["inputs"]["air"] = "pulid:flux@v0.9.0"
    exported = export_prompt(json.loads(json.dumps(prompt)), catalog)
    assert exported.request["pulid"]["images"] == [IMG]
    assert any("node 61 (ImageInferencePuLID)" in n and "pulid:flux@v0.9.0" in n for n in exported.not_exportable)


def test_a_hand_built_graph_with_a_core_load_image_exports_its_face_as_a_data_uri(catalog, tmp_path):  # noqa: F811
    (tmp_path / "face.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 16)
    _canonical, prompt = compile_request(base(pulid={"images": [IMG], "idWeight": 0.8}))
    prompt["60"] = {"class_type": "LoadImage", "inputs": {"image": "face.png"}}
    prompt["61"]["inputs"].update({"weights": DEFAULT_PULID, "air": ""})
    exported = canonical_export(prompt, catalog, read_image=file_reader(tmp_path))
    pulid = exported.request["pulid"]
    assert pulid["images"][0].startswith("data:image/png;base64,") and pulid["idWeight"] == 0.8
    assert exported.not_exportable == []
