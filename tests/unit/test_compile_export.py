"""Request -> graph -> request: the compiler, the exporter, their round trip, core-graph exports, the CLI."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from unit_helpers import IMG, UUID, compilable_requests, core_graph, round_trip

from imageinference.contract.errors import ContractError
from imageinference.contract.validate import validate_task
from imageinference.interop.compiler import compile_request
from imageinference.interop.exporter import export_prompt, file_reader

ROOT = Path(__file__).resolve().parents[2]
REQUESTS = sorted((ROOT / "workflows" / "requests").glob("*.json"))


@pytest.mark.parametrize("path", REQUESTS, ids=lambda p: p.stem)
def test_every_shipped_request_round_trips(path, catalog):
    canonical, exported = round_trip(json.loads(path.read_text()), catalog)
    assert exported.request == canonical
    assert exported.not_exportable == []


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(compilable_requests())
def test_generated_requests_round_trip(catalog, req):
    canonical, exported = round_trip(req, catalog)
    assert exported.request == canonical
    assert exported.not_exportable == []


@pytest.mark.parametrize(("field", "value"), [
    ("photoMaker", {"images": [IMG]}), ("safety", {"checkContent": True}), ("acceleration", "high"),
    ("webhookURL", "https://example.com/hook")])
def test_features_without_an_engine_are_refused_not_dropped(field, value):
    req = {"taskType": "imageInference", "taskUUID": UUID, "model": "rundiffusion:130@100", "positivePrompt": "a cat",
           "width": 512, "height": 512, field: value, "outputFormat": "PNG"}
    with pytest.raises(ContractError) as info:
        compile_request(req)
    assert info.value.parameters == [field] and info.value.codes[0].startswith("unsupported")


@pytest.mark.parametrize(("model", "acc", "code", "parameter"), [
    ("runware:5@1", {"teaCache": True, "fbCache": True}, "conflictingAcceleratorOptions",
     "acceleratorOptions.fbCache"),
])
def test_cache_requests_without_an_engine_are_refused(model, acc, code, parameter):
    req = {"taskType": "imageInference", "taskUUID": UUID, "model": model, "positivePrompt": "a cat",
           "width": 512, "height": 512, "acceleratorOptions": acc}
    with pytest.raises(ContractError) as info:
        compile_request(req)
    assert code in info.value.codes and parameter in info.value.parameters


def test_a_cache_request_compiles_to_the_cache_node_on_the_model_path():
    req = {"taskType": "imageInference", "taskUUID": UUID, "model": "runware:5@1", "positivePrompt": "a cat",
           "width": 512, "height": 512, "steps": 30, "lora": [{"model": "test:lora@1", "weight": 0.5}],
           "acceleratorOptions": {"dbCache": True, "dbCacheThreshold": 0.3, "dbCacheSkipInterval": 4,
                                  "cacheStartStepPercentage": 10, "cacheMaxConsecutiveSteps": 2}}
    _canonical, prompt = compile_request(req)
    cache = [n for n in prompt.values() if n["class_type"] == "ImageInferenceDBCache"]
    assert len(cache) == 1
    assert cache[0]["inputs"]["dbCacheThreshold"] == 0.3 and cache[0]["inputs"]["dbCacheSkipInterval"] == 4
    assert cache[0]["inputs"]["cacheStartStepPercentage"] == 10 and cache[0]["inputs"]["cacheEndStep"] == -1
    assert prompt[cache[0]["inputs"]["model"][0]]["class_type"] == "ImageInferenceLoraStack"
    sampler = next(n for n in prompt.values() if n["class_type"] == "ImageInferenceSampler")
    assert prompt[sampler["inputs"]["model"][0]] is cache[0]





def test_export_of_a_core_graph(catalog, tmp_path):
    (tmp_path / "fox.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 16)
    exported = export_prompt(core_graph(), catalog, read_image=file_reader(tmp_path))
    req = exported.request
    assert req["model"] == "test:sd15@1" and req["lora"] == [{"model": "test:lora@1", "weight": 0.7}]
    assert (req["positivePrompt"], req["negativePrompt"], req["clipSkip"]) == ("a red fox", "blurry", 1)
    assert (req["seed"], req["steps"], req["CFGScale"], req["scheduler"]) == (99, 25, 6.5, "DPM++ 2M Karras")
    assert req["strength"] == 0.55 and req["inputs"]["seedImage"].startswith("data:image/png;base64,")
    # core's 0.1-0.8 is a fraction of the noise range: without the sampler's sigmas it has no step meaning
    assert "controlNet" not in req
    assert any("node 8 (ControlNetApplyAdvanced)" in n and "noise range" in n for n in exported.not_exportable)
    assert req["outputFormat"] == "PNG"
    assert "not exportable: node 13 (UpscaleModelLoader): does not feed the exported image" in exported.not_exportable
    assert any("node 9 (VAEEncode)" in n and "width/height" in n for n in exported.not_exportable)


def linear_oracle(calls):
    """Sigmas 25, 24, ..., 0 and percent p at sigma 25 x (1 - p): which steps a window holds is plain here."""
    def oracle(air, sampler, scheduler, steps, denoise):
        calls.append((air, sampler, scheduler, steps, denoise))
        return [float(steps - i) for i in range(steps + 1)], lambda p: steps * (1 - p)
    return oracle


@pytest.mark.parametrize(("start", "end", "window"), [(0.1, 0.8, {"startStep": 3, "endStep": 21}),
                                                      (0.0, 0.5, {"endStep": 13}), (0.5, 1.0, {"startStep": 13}),
                                                      (0.41, 0.42, None)])
def test_core_controlnet_windows_export_as_the_steps_they_act_on(catalog, tmp_path, start, end, window):
    (tmp_path / "fox.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 16)
    graph = core_graph()
    graph["8"]["inputs"].update(start_percent=start, end_percent=end)
    calls = []
    exported = export_prompt(graph, catalog, read_image=file_reader(tmp_path), sigma_oracle=linear_oracle(calls))
    assert calls == [("test:sd15@1", "dpmpp_2m", "karras", 25, 0.55)]
    # steps whose sigma 25 - i lies in [25 (1 - end), 25 (1 - start)]
    active = [i for i in range(25) if 25 * (1 - end) <= 25 - i <= 25 * (1 - start)]
    if window is None:
        assert active == [] and "controlNet" not in exported.request
        assert any("holds no step" in n for n in exported.not_exportable)
    else:
        (entry,) = exported.request["controlNet"]
        assert {k: v for k, v in entry.items() if k in ("startStep", "endStep")} == window
        assert list(range(window.get("startStep", 0), window.get("endStep", 25))) == active


def test_export_lists_what_it_cannot_express(catalog):
    graph = core_graph()
    graph["10"]["inputs"]["sampler_name"] = "res_multistep"
    graph["2"]["inputs"]["strength_clip"] = 0.2
    graph["1"]["inputs"]["ckpt_name"] = "unknown.safetensors"
    notes = export_prompt(graph, catalog).not_exportable
    assert any("node 10 (KSampler)" in n and "res_multistep" in n for n in notes)
    assert any("node 2 (LoraLoader)" in n and "strengths" in n for n in notes)
    assert any("node 1 (CheckpointLoaderSimple)" in n and "checkpoints/unknown.safetensors" in n for n in notes)
    assert any("node 6 (LoadImage)" in n for n in notes)  # no image reader given: cannot embed it


def test_file_reader_stays_in_its_folder(tmp_path):
    (tmp_path / "a.png").write_bytes(b"x")
    read = file_reader(tmp_path)
    assert read("a.png") == b"x" and read("../a.png") is None and read("/etc/passwd") is None


def test_cli_compile_and_export(tmp_path):
    req = ROOT / "workflows" / "requests" / "txt2img.json"
    out = subprocess.run([sys.executable, "-m", "imageinference", "compile", str(req)], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    prompt = json.loads(out.stdout)
    assert prompt["4"]["class_type"] == "ImageInferenceSampler"
    (tmp_path / "p.json").write_text(out.stdout)
    ex = subprocess.run([sys.executable, "-m", "imageinference", "export", str(tmp_path / "p.json")],
                        capture_output=True, text=True, timeout=120)
    assert ex.returncode == 0, ex.stderr
    assert json.loads(ex.stdout)["request"] == validate_task(json.loads(req.read_text())).to_json()
    bad = subprocess.run([sys.executable, "-m", "imageinference", "compile", "-"], input='{"taskType": 1}',
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1 and json.loads(bad.stdout)["errors"]
