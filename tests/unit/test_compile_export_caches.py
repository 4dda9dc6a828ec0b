"""The cache nodes' options that have no API field (the peer packs' rules, DeepCache's non-uniform schedule):
a graph that sets them still exports its cache, and the export says which option the request cannot carry."""

import json

import pytest

from imageinference.interop.compiler import compile_request
from imageinference.interop.exporter import export_prompt

BASE = {"taskType": "imageInference", "taskUUID": "0b5e4c1a-2d3f-4a6b-8c9d-0e1f2a3b4c5d",
        "model": "test:sd15@1", "positivePrompt": "a lighthouse at dusk", "width": 512, "height": 512, "seed": 3,
        "steps": 20}


def compiled(acc):
    _canonical, prompt = compile_request({**BASE, "acceleratorOptions": acc})
    return json.loads(json.dumps(prompt))


def cache_node(prompt, class_type):
    (nid,) = [k for k, v in prompt.items() if v["class_type"] == class_type]
    return nid, prompt[nid]


@pytest.mark.parametrize(("switch", "class_type", "option", "value", "rule"), [
    ("teaCache", "ImageInferenceTeaCache", "skipLastStep", True, "the last step always runs"),
    ("fbCache", "ImageInferenceFBCache", "uncappedSkips", True, "cacheMaxConsecutiveSteps"),
    ("fbCache", "ImageInferenceFBCache", "firstBlockSignal", "output", "residual"),
])
def test_step_cache_node_options_are_named_when_exported(catalog, switch, class_type, option, value, rule):  # noqa: F811
    acc = {switch: True, "cacheMaxConsecutiveSteps": 4}
    prompt = compiled(acc)
    plain = export_prompt(prompt, catalog)
    assert not [n for n in plain.not_exportable if option in n]
    nid, node = cache_node(prompt, class_type)
    node["inputs"][option] = value
    exported = export_prompt(prompt, catalog)
    assert exported.request["acceleratorOptions"] == plain.request["acceleratorOptions"]
    (note,) = [n for n in exported.not_exportable if option in n]
    assert f"node {nid} ({class_type})" in note and rule in note


def test_deepcache_non_uniform_schedule_is_named_when_exported(catalog):  # noqa: F811
    prompt = compiled({"deepCache": True, "deepCacheInterval": 5})
    nid, node = cache_node(prompt, "ImageInferenceDeepCache")
    node["inputs"].update(deepCacheSchedule="non-uniform", nonUniformCenter=10, nonUniformPower=1.4)
    exported = export_prompt(prompt, catalog)
    assert exported.request["acceleratorOptions"]["deepCacheInterval"] == 5
    (note,) = [n for n in exported.not_exportable if "deepCacheSchedule" in n]
    assert f"node {nid}" in note and "uniform schedule" in note
