"""Valid requests: the seed pages' examples, legacy shapes, canonical round trips, property tests."""

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from imageinference.contract.air import AIRError, canonical_air, parse_air
from imageinference.contract.errors import ContractError
from imageinference.contract.validate import validate_payload, validate_task
from imageinference.engines.samplers.schedulers import SCHEDULER_NAMES

ROOT = Path(__file__).resolve().parents[2]
SEED_EXAMPLES = ("clockwork-orchard-parade", "glasshouse-rooftop-supper-club", "subterranean-fossil-cathedral-expedition",
                 "sunken-metro-aquarium-concourse")
SEED_REQUESTS = [ROOT / "workflows" / "requests" / f"sd3-{name}.json" for name in SEED_EXAMPLES]
UUID = "d5774636-68bb-4b60-bd05-a88fa163c8e6"
IMG = "59a2edc2-45e6-429f-be5f-7ded59b92046"
FLUX = {"taskType": "imageInference", "taskUUID": UUID, "model": "rundiffusion:130@100",
        "positivePrompt": "a glass house", "width": 1024, "height": 1024}


def test_the_four_sd3_seed_examples_are_here():
    assert len(SEED_REQUESTS) == 4


@pytest.mark.parametrize("path", SEED_REQUESTS, ids=lambda p: p.stem)
def test_sd3_seed_examples_validate_with_their_values(path):
    raw = json.loads(path.read_text())
    canonical = validate_task(raw).to_json()
    for key, value in raw.items():
        assert canonical[key] == value, key
    # defaults made explicit, from the SD3 page where it gives them
    assert canonical["outputType"] == "URL" and canonical["outputFormat"] == "JPG"
    assert canonical["outputQuality"] == 95 and canonical["deliveryMethod"] == "sync"
    assert canonical["scheduler"] == "Default" and canonical["numberResults"] == 1
    assert validate_task(canonical).to_json() == canonical


def test_sd3_page_defaults_width_height_and_steps():
    raw = {"taskType": "imageInference", "taskUUID": UUID, "model": "runware:5@1", "positivePrompt": "two words"}
    canonical = validate_task(raw).to_json()
    assert (canonical["width"], canonical["height"], canonical["steps"]) == (1024, 1024, 28)


def test_payload_array_validates_each_task_and_collects_errors():
    good = dict(FLUX)
    bad = dict(FLUX, taskUUID="a770f077-f413-47de-9dac-be0b26a35da6", steps=0)
    assert len(validate_payload([good, good])) == 2
    with pytest.raises(ContractError) as info:
        validate_payload([good, bad, dict(bad, width=100)])
    assert {e.to_json()["taskUUID"] for e in info.value.errors} == {"a770f077-f413-47de-9dac-be0b26a35da6"}
    assert sorted(info.value.parameters) == ["steps", "steps", "width"]


LEGACY_EQUIVALENTS = [
    ({"seedImage": IMG, "maskImage": IMG}, {"inputs": {"seedImage": IMG, "maskImage": IMG}}),
    ({"puLID": {"inputImages": [IMG], "CFGStartStep": 3, "idWeight": 1}},
     {"pulid": {"images": [IMG], "CFGstartStep": 3, "idWeight": 1}}),
    ({"ipAdapters": [{"model": "runware:56@1", "guideImage": IMG}]},
     {"ipAdapters": [{"model": "runware:56@1", "guideImages": [IMG]}]}),
    ({"advancedFeatures": {"hiresFix": True}}, {"hiresFix": True}),
    ({"advancedFeatures": {"hiresfix": True}}, {"hiresFix": True}),
    ({"hiresfix": {"model": "runware:esrgan@ultrasharp", "steps": 15, "strength": 0.6}},
     {"hiresFix": {"model": "runware:esrgan@ultrasharp", "steps": 15, "strength": 0.6}}),
    ({"advancedFeatures": {"layerDiffuse": True}, "outputFormat": "png"}, {"layerDiffuse": True, "outputFormat": "PNG"}),
    ({"checkNsfw": True}, {"safety": {"checkContent": True}}),
    ({"acceleratorOptions": {"fbcache": True, "cacheStopStep": 10}},
     {"acceleratorOptions": {"fbCache": True, "cacheEndStep": 10}}),
    ({"outputFormat": "jpeg", "promptWeighting": "sdembeds"}, {"outputFormat": "JPG", "promptWeighting": "sdEmbeds"}),
    ({"model": "urn:air:flux1:checkpoint:rundiffusion:130@100"}, {"model": "rundiffusion:130@100"}),
    ({"advancedFeatures": {"hiresFix": False}}, {}),
]


@pytest.mark.parametrize(("legacy", "modern"), LEGACY_EQUIVALENTS)
def test_legacy_shapes_normalise_to_the_canonical_one(legacy, modern):
    a = validate_task(dict(FLUX, **legacy)).to_json()
    b = validate_task(dict(FLUX, **modern)).to_json()
    assert a == b
    assert validate_task(a).to_json() == a  # stable on a second pass
    assert json.loads(json.dumps(a)) == a


def test_air_forms():
    assert canonical_air("urn:air:sdxl:checkpoint:civitai:101055@128078") == "civitai:101055@128078"
    assert canonical_air("air:sd1:lora:civitai:132942@146296.safetensors") == "civitai:132942@146296"
    assert str(parse_air("runware:z-image@turbo")) == "runware:z-image@turbo"
    for bad in ("", "runware", "runware:101", "Runware:101@1", "runware:@1", "urn:air:sdxl:checkpoint:civitai:1",
                "a:b@c d", "x" * 300):
        with pytest.raises(AIRError):
            parse_air(bad)


# ---------------------------------------------------------------- properties

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=5),
    max_leaves=20,
)
FIELDS = ["taskType", "taskUUID", "model", "positivePrompt", "width", "height", "steps", "CFGScale", "seed",
          "scheduler", "inputs", "seedImage", "controlNet", "lora", "acceleratorOptions", "hiresFix", "puLID",
          "pulid", "outpaint", "advancedFeatures", "outputFormat", "ttl", "ipAdapters", "numberResults", "strength"]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(json_values, st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=8),
                 st.builds(lambda extra: dict(FLUX, **extra),
                           st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=4))))
def test_arbitrary_json_only_ever_raises_contract_errors(value):
    try:
        results = validate_payload(value)
    except ContractError as exc:
        assert exc.errors
        for err in exc.errors:
            body = err.to_json()
            assert body["code"] and body["message"]
            json.dumps(body)
    else:
        for r in results:
            assert validate_task(r.to_json()).to_json() == r.to_json()


window = st.integers(0, 27).flatmap(lambda s: st.tuples(st.just(s), st.integers(s + 1, 28)))


@st.composite
def valid_requests(draw):
    req = dict(FLUX, steps=28, seed=draw(st.integers(0, 2**63 - 1)),
               scheduler=draw(st.sampled_from(SCHEDULER_NAMES)),
               CFGScale=draw(st.floats(0, 20, allow_nan=False)),
               outputFormat=draw(st.sampled_from(["JPG", "PNG", "WEBP"])),
               numberResults=draw(st.integers(1, 20)))
    if draw(st.booleans()):
        req["inputs"] = {"seedImage": IMG}
        req["strength"] = draw(st.floats(0, 1))
        if draw(st.booleans()):
            req["inputs"]["maskImage"] = IMG
            req["maskMargin"] = draw(st.integers(32, 128))
    if draw(st.booleans()):
        req["lora"] = [{"model": f"civitai:{i}@{i + 1}", "weight": draw(st.floats(-4, 4))}
                       for i in range(draw(st.integers(1, 3)))]
    if draw(st.booleans()):
        s, e = draw(window)
        req["controlNet"] = [{"model": "runware:25@1", "guideImage": IMG, "startStep": s, "endStep": e,
                              "controlMode": draw(st.sampled_from(["balanced", "prompt", "controlnet"]))}]
    if draw(st.booleans()):
        s, e = draw(window)
        req["acceleratorOptions"] = {"teaCache": True, "teaCacheDistance": draw(st.floats(0, 1)),
                                     "cacheStartStep": s, "cacheEndStep": e,
                                     "cacheMaxConsecutiveSteps": draw(st.integers(1, 5))}
    if draw(st.booleans()):
        req["hiresFix"] = draw(st.sampled_from([True, {"model": "runware:504@1", "steps": 10, "strength": 0.5}]))
    if draw(st.booleans()):
        req["pulid"] = {"images": [IMG], "idWeight": draw(st.floats(0, 3)), "CFGstartStep": draw(st.integers(0, 27))}
    return req


@settings(max_examples=200, deadline=None)
@given(valid_requests())
def test_valid_requests_survive_canonicalisation_unchanged(req):
    first = validate_task(req).to_json()
    assert validate_task(first).to_json() == first
    assert contains(first, req)


def contains(canonical, given):
    """Everything the user gave is in the canonical form unchanged (which adds explicit defaults)."""
    if isinstance(given, dict):
        return isinstance(canonical, dict) and all(k in canonical and contains(canonical[k], v)
                                                   for k, v in given.items())
    if isinstance(given, list):
        return isinstance(canonical, list) and len(canonical) == len(given) and all(
            contains(c, g) for c, g in zip(canonical, given, strict=True))
    return canonical == given


def test_benchmark_request_uses_every_feature_and_is_valid():
    sys_path = str(ROOT / "benchmarks")
    import sys

    sys.path.insert(0, sys_path)
    try:
        from validation_time import EVERY_FEATURE
    finally:
        sys.path.remove(sys_path)
    canonical = validate_task(EVERY_FEATURE).to_json()
    assert canonical["hiresFix"]["model"] == "runware:esrgan@ultrasharp" and canonical["pulid"]["CFGstartStep"] == 3


@pytest.mark.parametrize("name", ["txt2img", "img2img", "inpaint", "controlnet", "outpaint", "hiresfix"])
def test_example_requests_are_valid_and_match_their_graphs(name):
    from imageinference.interop.compiler import compile_request
    from imageinference.interop.examples import example_request

    req = example_request(name)
    canonical = validate_task(req).to_json()
    sampler = compile_request(req)[1]["4"]["inputs"]
    for field in ("width", "height", "seed", "steps", "scheduler", "CFGScale", "numberResults"):
        assert sampler[field] == canonical[field], field
    assert (sampler["maskMargin"] or None) == canonical.get("maskMargin")


def test_reference_rules_that_accept():
    """Kontext sizes from its reference images (width/height optional); Runware's own ComfyUI pack sends
    safety.tolerance and safety.checkInputs; ACE++ with its one root reference image."""
    base = {"taskType": "imageInference", "taskUUID": "cc58c87f-bc7a-450e-a897-0e25a60e1cb2",
            "positivePrompt": "a glass house"}
    ref = "59a2edc2-45e6-429f-be5f-7ded59b92046"
    kontext = validate_task(dict(base, model="runware:106@1", inputs={"referenceImages": [ref, ref]})).to_json()
    assert "width" not in kontext and kontext["inputs"]["referenceImages"] == [ref, ref]
    safety = validate_task(dict(base, model="runware:101@1", width=512, height=512,
                                safety={"checkContent": True, "tolerance": True, "checkInputs": False})).to_json()
    assert safety["safety"] == {"checkContent": True, "tolerance": True, "checkInputs": False}
    ace = validate_task(dict(base, model="runware:102@1", width=512, height=512, referenceImages=[ref],
                             acePlusPlus={"type": "subject"})).to_json()
    assert ace["inputs"]["referenceImages"] == [ref]


def test_ttl_with_the_default_output_type():
    """outputType defaults to URL, so a ttl alone is valid."""
    req = {"taskType": "imageInference", "taskUUID": "cc58c87f-bc7a-450e-a897-0e25a60e1cb2", "model": "runware:5@1",
           "positivePrompt": "a glass house", "ttl": 120}
    canonical = validate_task(req).to_json()
    assert canonical["ttl"] == 120 and canonical["outputType"] == "URL"
