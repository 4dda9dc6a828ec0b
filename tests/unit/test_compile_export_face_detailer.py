"""`ultralytics` on the request path: compiled after the sampler, exported back, round trips, and what a graph
can do that a request cannot say."""

import copy
import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from unit_helpers import compilable_requests, core_graph, round_trip, words

from imageinference.engines.models.catalog import Catalog
from imageinference.interop.compiler import compile_request
from imageinference.interop.exporter import canonical_export, export_prompt

UUID = "0b5e4c1a-2d3f-4a6b-8c9d-0e1f2a3b4c5d"
BASE = {"taskType": "imageInference", "taskUUID": UUID, "model": "runware:5@1", "positivePrompt": "a portrait",
        "negativePrompt": "blurry", "width": 512, "height": 512, "seed": 11, "numberResults": 2,
        "scheduler": "Euler", "ultralytics": {}}

ultralytics_fields = st.fixed_dictionaries({}, optional={
    "maskBlur": st.integers(0, 100), "maskPadding": st.integers(0, 20), "confidence": st.floats(0, 1),
    "positivePrompt": words, "negativePrompt": words, "steps": st.integers(1, 100), "CFGScale": st.floats(0, 50),
    "strength": st.floats(0, 1), "inpaintSize": st.integers(128, 2048)})


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(compilable_requests(), ultralytics_fields)
def test_requests_with_the_face_detailer_round_trip(catalog, req, u):  # noqa: F811
    canonical, exported = round_trip({**req, "ultralytics": u}, catalog)
    assert exported.request == canonical
    assert exported.not_exportable == []


def nodes_of(prompt, class_type):
    return {nid: n for nid, n in prompt.items() if n["class_type"] == class_type}


def test_the_detailer_comes_after_the_sampler_and_hires_fix_and_feeds_the_output():
    req = dict(BASE, model="rundiffusion:130@100", hiresFix=True, ultralytics={"maskPadding": 12})
    canonical, prompt = compile_request(req)
    assert canonical["ultralytics"] == {"maskBlur": 5, "maskPadding": 12, "confidence": 0.9, "steps": 20,
                                        "CFGScale": 8.0, "strength": 0.3, "inpaintSize": 1024}
    (did, det), = nodes_of(prompt, "ImageInferenceFaceDetailer").items()
    (sid, sampler), = nodes_of(prompt, "ImageInferenceSampler").items()
    assert did == "70" and det["inputs"]["image"] == [sid, 0] and det["inputs"]["seeds"] == [sid, 1]
    assert "hiresFix" in sampler["inputs"]  # hires fix runs inside the sampler, so before the detailer
    assert det["inputs"]["model"] == sampler["inputs"]["model"] and det["inputs"]["vae"] == sampler["inputs"]["vae"]
    assert det["inputs"]["scheduler"] == "Euler" and det["inputs"]["detector"] == "runware:35@1"
    (pid, _p), = nodes_of(prompt, "ImageInferencePrompt").items()  # no own prompt: the request's prompts
    assert det["inputs"]["positive"] == [pid, 0] and det["inputs"]["negative"] == [pid, 1]
    (_oid, out), = nodes_of(prompt, "ImageInferenceOutput").items()
    assert out["inputs"]["images"] == [did, 0]


def test_the_output_stage_links_the_detections_into_the_output_node():
    from imageinference.interop.features.face_detailer import OUTPUT_FEATURE
    from imageinference.interop.graph import GraphBuilder

    canonical, prompt = compile_request(BASE)
    g = GraphBuilder(nodes=prompt)
    g.sampler = prompt["5"]["inputs"]
    OUTPUT_FEATURE.compile(canonical, g)
    assert prompt["5"]["inputs"]["detections"] == ["70", 2]
    exported = canonical_export(json.loads(json.dumps(prompt)), Catalog.load())
    assert exported.request == canonical and exported.not_exportable == []  # the link carries no request field
    canonical, prompt = compile_request({k: v for k, v in BASE.items() if k != "ultralytics"})
    g = GraphBuilder(nodes=prompt)
    g.sampler = prompt["5"]["inputs"]
    OUTPUT_FEATURE.compile(canonical, g)
    assert "detections" not in prompt["5"]["inputs"]


def test_own_detail_prompts_are_a_second_prompt_node_per_side():
    req = dict(BASE, clipSkip=1, ultralytics={"negativePrompt": "deformed eyes"})
    _c, prompt = compile_request(req)
    det = prompt["70"]["inputs"]
    own = prompt["71"]
    assert own["class_type"] == "ImageInferencePrompt" and own["inputs"]["negativePrompt"] == "deformed eyes"
    assert own["inputs"]["clipSkip"] == 1 and own["inputs"]["clip"] == prompt["3"]["inputs"]["clip"]
    assert det["positive"] == ["3", 0] and det["negative"] == ["71", 1]  # empty positivePrompt: the request's


def test_controlnets_are_not_applied_to_the_detail_pass():
    req = dict(BASE, model="test:sd15@1", controlNet=[{"model": "test:cn@1", "guideImage":
               "59a2edc2-45e6-429f-be5f-7ded59b92046", "weight": 1.0}])
    _c, prompt = compile_request(req)
    det = prompt["70"]["inputs"]
    assert prompt[det["positive"][0]]["class_type"] == "ImageInferencePrompt"
    assert prompt["4"]["inputs"]["positive"][0] != det["positive"][0]


def export_notes(prompt, catalog):  # noqa: F811
    return export_prompt(json.loads(json.dumps(prompt)), catalog).not_exportable


def test_what_a_request_cannot_say_is_listed(catalog):  # noqa: F811
    _c, prompt = compile_request(BASE)
    assert export_notes(prompt, catalog) == []
    changes = {
        "detector": ("bbox/hand_yolov8n.pt", "a request always detects with runware:35@1"),
        "scheduler": ("DPM++ 2M", "scheduler 'DPM++ 2M' is not the image's"),
        "vae": (["99", 0], "another VAE"),
        "model": (["99", 0], "another model"),
    }
    for key, (value, why) in changes.items():
        graph = copy.deepcopy(prompt)
        graph["70"]["inputs"][key] = value
        if key in ("vae", "model"):
            graph["99"] = {"class_type": "ImageInferenceModelLoader", "inputs": {"model": "(typed in below)",
                                                                                 "air": "runware:5@1", "vae": ""}}
        notes = export_notes(graph, catalog)
        assert any("node 70 (ImageInferenceFaceDetailer)" in n and why in n for n in notes), (key, notes)
    for name, value in (("contextPadding", 0), ("maxUpscale", 8.0), ("maxRegions", 50), ("minRegionSize", 10),
                        ("maxRegionSize", 300), ("seedPerRegion", False)):  # node-only: a request gets the default
        graph = copy.deepcopy(prompt)
        graph["70"]["inputs"][name] = value
        notes = export_notes(graph, catalog)
        assert any("node 70" in n and f"{name} {value!r}: a request has no such field" in n for n in notes), notes
    graph = copy.deepcopy(prompt)
    graph["70"]["inputs"].update(contextPadding=32, maxUpscale=4.0, maxRegions=10, seedPerRegion=True)
    assert export_notes(graph, catalog) == []  # the defaults, written out, export
    graph = copy.deepcopy(prompt)
    del graph["70"]["inputs"]["seeds"]  # unlinked: the seed widget must be the image's seed
    assert any("seeds are not the image's" in n for n in export_notes(graph, catalog))
    graph["70"]["inputs"]["seed"] = 11
    assert export_notes(graph, catalog) == []


def test_a_core_graph_with_the_detailer_exports_its_prompts_and_checks_the_ksampler(catalog):  # noqa: F811
    graph = core_graph()
    graph["14"] = {"class_type": "CLIPTextEncode", "inputs": {"clip": ["3", 0], "text": "a sharp fox face"}}
    graph["15"] = {"class_type": "ImageInferenceFaceDetailer", "inputs": {
        "image": ["11", 0], "model": ["2", 0], "vae": ["1", 2], "positive": ["14", 0], "negative": ["5", 0],
        "detector": "runware:35@1", "confidence": 0.4, "maskPadding": 10, "maskBlur": 8, "inpaintSize": 512,
        "steps": 12, "CFGScale": 5.0, "strength": 0.45, "scheduler": "DPM++ 2M Karras", "seed": 99}}
    graph["12"]["inputs"]["images"] = ["15", 0]
    exported = export_prompt(graph, catalog)
    assert exported.request["ultralytics"] == {"confidence": 0.4, "maskPadding": 10, "maskBlur": 8,
                                               "inpaintSize": 512, "steps": 12, "CFGScale": 5.0, "strength": 0.45,
                                               "positivePrompt": "a sharp fox face"}
    assert exported.request["positivePrompt"] == "a red fox"
    assert not any("node 15" in n or "node 14" in n for n in exported.not_exportable), exported.not_exportable
    graph["15"]["inputs"]["seed"] = 5
    graph["15"]["inputs"]["scheduler"] = "Euler"
    notes = export_prompt(graph, catalog).not_exportable
    assert any("node 15" in n and "seeds" in n for n in notes) and any("node 15" in n and "'Euler'" in n for n in notes)
