"""`embeddings`, `refiner` and `acceleratorOptions.deepCache` on the request path: compiled into their nodes,
exported back, round trips over the shared corpus, and what a graph can do that a request cannot say."""

import copy
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from unit_helpers import compilable_requests, round_trip, window

from imageinference.contract.errors import ContractError
from imageinference.interop.compiler import compile_request
from imageinference.interop.exporter import export_prompt

UUID = "0b5e4c1a-2d3f-4a6b-8c9d-0e1f2a3b4c5d"
SD15 = ("test:sd15@1", "civitai:4384@128713")
SDXL = "civitai:101055@128078"
REFINER = "civitai:101055@128080"
BASE = {"taskType": "imageInference", "taskUUID": UUID, "model": "civitai:4384@128713",
        "positivePrompt": "a castle, EasyNegative", "negativePrompt": "blurry", "width": 512, "height": 512,
        "seed": 3, "steps": 30}

embeddings = st.lists(st.fixed_dictionaries(
    {"model": st.sampled_from(["civitai:7808@9208", "civitai:4629@5637", "test:embedding@1"])},
    optional={"weight": st.floats(-4, 4, allow_nan=False)}), min_size=1, max_size=3)
refiners = st.one_of(
    st.builds(lambda s: {"model": REFINER, "startStep": s}, st.integers(2, 20)),
    st.builds(lambda p: {"model": REFINER, "startStepPercentage": p}, st.integers(1, 99)))


@st.composite
def deep_cache_options(draw):
    acc = {"deepCache": True}
    for key, low, high in (("deepCacheInterval", 1, 100), ("deepCacheBranchId", 0, 20),
                           ("cacheMaxConsecutiveSteps", 1, 5)):
        if draw(st.booleans()):
            acc[key] = draw(st.integers(low, high))
    if draw(st.booleans()):
        s, e = draw(window)
        acc.update({"cacheStartStep": s, "cacheEndStep": e} if draw(st.booleans()) else
                   {"cacheStartStepPercentage": s, "cacheEndStepPercentage": e + 50})
    return acc


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(compilable_requests(), st.booleans(), embeddings, st.booleans(), refiners, st.booleans(), deep_cache_options())
def test_requests_with_embeddings_refiner_and_deep_cache_round_trip(catalog, req, use_emb, emb, use_ref, ref,  # noqa: F811
                                                                     use_dc, dc):
    if req["model"] not in SD15:
        return  # these are SD-family fields; the contract refuses them on FLUX and SD3 (tested below)
    req = copy.deepcopy(req)
    if use_emb:
        req["embeddings"] = emb
    if use_ref:
        req["model"], req["refiner"] = SDXL, ref
    if use_dc:
        req["acceleratorOptions"] = dc
    canonical, exported = round_trip(req, catalog)
    assert exported.request == canonical
    assert exported.not_exportable == []


def nodes_of(prompt, class_type):
    return {nid: n for nid, n in prompt.items() if n["class_type"] == class_type}


# ---------------------------------------------------------------- embeddings

def test_embeddings_sit_on_the_clip_path_before_the_prompt():
    req = dict(BASE, lora=[{"model": "test:lora@1", "weight": 0.5}],
               embeddings=[{"model": "civitai:7808@9208", "weight": 0.8}, {"model": "civitai:4629@5637"}])
    canonical, prompt = compile_request(req)
    assert canonical["embeddings"] == [{"model": "civitai:7808@9208", "weight": 0.8},
                                       {"model": "civitai:4629@5637", "weight": 1.0}]
    (eid, emb), = nodes_of(prompt, "ImageInferenceEmbeddings").items()
    assert eid == "110" and json.loads(emb["inputs"]["embeddings"]) == canonical["embeddings"]
    (lid, _lora), = nodes_of(prompt, "ImageInferenceLoraStack").items()
    assert emb["inputs"]["clip"] == [lid, 1]  # after the LoRAs, which patch the text encoder too
    assert prompt["3"]["inputs"]["clip"] == [eid, 0]


def test_chained_embeddings_nodes_export_as_one_array_upstream_first():
    _c, prompt = compile_request(dict(BASE, embeddings=[{"model": "civitai:7808@9208", "weight": 0.8}]))
    prompt["111"] = {"class_type": "ImageInferenceEmbeddings",
                     "inputs": {"clip": ["110", 0], "embeddings": '[{"model": "civitai:4629@5637", "weight": -1}]'}}
    prompt["3"]["inputs"]["clip"] = ["111", 0]
    exported = export_prompt(prompt, catalog=None)
    assert exported.request["embeddings"] == [{"model": "civitai:7808@9208", "weight": 0.8},
                                              {"model": "civitai:4629@5637", "weight": -1}]
    assert exported.not_exportable == []


def test_an_embeddings_node_with_broken_json_is_listed_not_guessed():
    _c, prompt = compile_request(dict(BASE, embeddings=[{"model": "civitai:7808@9208"}]))
    prompt["110"]["inputs"]["embeddings"] = "{not json"
    exported = export_prompt(prompt, catalog=None)
    assert "embeddings" not in exported.request
    assert any("node 110 (ImageInferenceEmbeddings)" in line for line in exported.not_exportable)


@pytest.mark.parametrize(("field", "value", "code", "parameter"), [
    ("embeddings", [{"model": "civitai:7808@9208", "weight": 5}], "invalidWeight", "embeddings.0.weight"),
    ("embeddings", [{"model": "not an air"}], "invalidModel", "embeddings.0.model"),
    ("embeddings", [], "invalidEmbeddings", "embeddings"),
    ("refiner", {"model": REFINER}, "missingStartStep", "refiner.startStep"),
    ("refiner", {"model": REFINER, "startStep": 10, "startStepPercentage": 50}, "conflictStartStep",
     "refiner.startStep"),
    ("refiner", {"model": REFINER, "startStep": 1}, "invalidStartStep", "refiner.startStep"),
    ("refiner", {"model": REFINER, "startStep": 31}, "invalidStartStep", "refiner.startStep"),
    ("refiner", {"model": REFINER, "startStepPercentage": 100}, "invalidStartStepPercentage",
     "refiner.startStepPercentage"),
    ("acceleratorOptions", {"deepCache": True, "deepCacheInterval": 0}, "invalidDeepCacheInterval",
     "acceleratorOptions.deepCacheInterval"),
    ("acceleratorOptions", {"deepCache": True, "deepCacheBranchId": -1}, "invalidDeepCacheBranchId",
     "acceleratorOptions.deepCacheBranchId"),
    ("acceleratorOptions", {"deepCache": True, "cacheMaxConsecutiveSteps": 6}, "invalidCacheMaxConsecutiveSteps",
     "acceleratorOptions.cacheMaxConsecutiveSteps"),
    ("acceleratorOptions", {"deepCache": "yes"}, "invalidDeepCache", "acceleratorOptions.deepCache"),
])
def test_bad_values_are_contract_errors_naming_the_parameter(field, value, code, parameter):
    req = dict(BASE, model=SDXL if field == "refiner" else BASE["model"], **{field: value})
    with pytest.raises(ContractError) as info:
        compile_request(req)
    assert parameter in info.value.parameters
    assert code in info.value.codes


@pytest.mark.parametrize(("field", "value"), [
    ("embeddings", [{"model": "civitai:7808@9208"}]),
    ("refiner", {"model": REFINER, "startStep": 10}),
    ("acceleratorOptions", {"deepCache": True}),
])
def test_the_fields_are_refused_off_their_architectures(field, value):
    parameter = "acceleratorOptions.deepCache" if field == "acceleratorOptions" else field
    for model in ("rundiffusion:130@100", "runware:5@1", *(["civitai:4384@128713"] if field == "refiner" else [])):
        with pytest.raises(ContractError) as info:
            compile_request(dict(BASE, model=model, outputFormat="PNG", **{field: value}))
        assert parameter in info.value.parameters and any(c.startswith("unsupported") for c in info.value.codes)


# ---------------------------------------------------------------- refiner

def test_the_refiner_is_its_own_loader_prompt_and_option_node_linked_into_the_sampler():
    req = dict(BASE, model=SDXL, promptWeighting="compel", clipSkip=1,
               embeddings=[{"model": "civitai:7808@9208", "weight": 0.5}], refiner={"model": REFINER, "startStep": 24})
    _c, prompt = compile_request(req)
    assert prompt["100"] == {"class_type": "ImageInferenceModelLoader",
                             "inputs": {"model": "(typed in below)", "air": REFINER, "vae": ""}}
    assert prompt["103"]["class_type"] == "ImageInferenceEmbeddings"
    assert prompt["103"]["inputs"]["clip"] == ["100", 1]
    assert prompt["103"]["inputs"]["embeddings"] == prompt["110"]["inputs"]["embeddings"]
    assert prompt["101"]["inputs"] == dict(prompt["3"]["inputs"], clip=["103", 0])
    assert prompt["102"] == {"class_type": "ImageInferenceRefiner", "inputs": {
        "model": ["100", 0], "positive": ["101", 0], "negative": ["101", 1], "startStep": 24,
        "startStepPercentage": -1}}
    (sid, sampler), = nodes_of(prompt, "ImageInferenceSampler").items()
    assert sampler["inputs"]["refiner"] == ["102", 0]


def test_refiner_prompts_that_differ_from_the_base_are_listed():
    _c, prompt = compile_request(dict(BASE, model=SDXL, refiner={"model": REFINER, "startStepPercentage": 80}))
    prompt["101"]["inputs"]["positivePrompt"] = "something else"
    exported = export_prompt(prompt, catalog=None)
    assert exported.request["refiner"] == {"model": REFINER, "startStepPercentage": 80}
    assert exported.request["positivePrompt"] == BASE["positivePrompt"]
    assert exported.not_exportable == [
        "not exportable: node 101 (ImageInferencePrompt): the refiner's prompts differ from the base model's; "
        "a request has one prompt"]


def test_a_refiner_from_a_core_checkpoint_loader_exports_through_the_catalog(catalog):  # noqa: F811
    _c, prompt = compile_request(dict(BASE, model=SDXL, refiner={"model": REFINER, "startStep": 25}))
    prompt["100"] = {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny.safetensors"}}
    exported = export_prompt(prompt, catalog)
    assert exported.request["refiner"] == {"model": "test:sd15@1", "startStep": 25}  # tiny.safetensors' AIR
    assert exported.not_exportable == []


# ---------------------------------------------------------------- DeepCache

def test_deep_cache_is_the_last_model_node_and_carries_the_shared_window():
    req = dict(BASE, lora=[{"model": "test:lora@1", "weight": 0.5}], acceleratorOptions={
        "deepCache": True, "deepCacheInterval": 4, "deepCacheBranchId": 2, "cacheStartStep": 3,
        "cacheEndStep": 25, "cacheMaxConsecutiveSteps": 2, "teaCacheDistance": 0.3})
    canonical, prompt = compile_request(req)
    assert canonical["acceleratorOptions"]["deepCacheInterval"] == 4
    assert prompt["140"] == {"class_type": "ImageInferenceDeepCache", "inputs": {
        "model": ["2", 0], "deepCacheInterval": 4, "deepCacheBranchId": 2, "cacheMaxConsecutiveSteps": 2,
        "cacheStartStep": 3, "cacheStartStepPercentage": -1, "cacheEndStep": 25, "cacheEndStepPercentage": -1,
        "deepCacheSchedule": "uniform", "nonUniformCenter": 15, "nonUniformPower": 1.4}}  # DeepCache's uniform
    (_sid, sampler), = nodes_of(prompt, "ImageInferenceSampler").items()
    assert sampler["inputs"]["model"] == ["140", 0]


def test_deep_cache_defaults_compile_and_a_switched_off_cache_compiles_to_nothing():
    canonical, prompt = compile_request(dict(BASE, acceleratorOptions={"deepCache": True}))
    assert {k: prompt["140"]["inputs"][k] for k in ("deepCacheInterval", "deepCacheBranchId",
                                                     "cacheMaxConsecutiveSteps")} == {
        "deepCacheInterval": 3, "deepCacheBranchId": 0, "cacheMaxConsecutiveSteps": 3}
    canonical, prompt = compile_request(dict(BASE, acceleratorOptions={"deepCache": False, "deepCacheInterval": 5}))
    assert "acceleratorOptions" not in canonical and not nodes_of(prompt, "ImageInferenceDeepCache")


def test_deep_cache_with_another_cache_is_a_conflict():
    with pytest.raises(ContractError) as info:
        compile_request(dict(BASE, acceleratorOptions={"deepCache": True, "teaCache": True}))
    assert "conflictingAcceleratorOptions" in info.value.codes


def test_a_second_cache_node_on_the_model_path_is_listed():
    _c, prompt = compile_request(dict(BASE, acceleratorOptions={"deepCache": True, "deepCacheInterval": 2}))
    prompt["141"] = dict(prompt["140"], inputs=dict(prompt["140"]["inputs"], model=["1", 0], deepCacheInterval=5))
    prompt["140"]["inputs"]["model"] = ["141", 0]
    exported = export_prompt(prompt, catalog=None)
    assert exported.request["acceleratorOptions"]["deepCacheInterval"] == 2  # the one nearest the sampler
    assert any("node 141 (ImageInferenceDeepCache)" in line for line in exported.not_exportable)
