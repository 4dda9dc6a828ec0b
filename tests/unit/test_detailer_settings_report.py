"""Face-detailer settings (the contract's `ultralytics` ranges on node widgets) and its detections report."""

import json

import pytest

from imageinference.contract.errors import ContractError
from imageinference.contract.validate import validate_task
from imageinference.engines.detailer.geometry import Rect
from imageinference.engines.detailer.report import ImageReport, detections_json, nothing_detected_warnings
from imageinference.engines.detailer.settings import detailer_settings

GOOD = {"confidence": 0.5, "maskPadding": 5, "maskBlur": 5, "inpaintSize": 1024, "steps": 20, "CFGScale": 8.0,
        "strength": 0.3}


def test_good_settings_pass():
    s = detailer_settings(GOOD)
    assert (s.inpaintSize, s.maskPadding, s.CFGScale) == (1024, 5, 8.0)


@pytest.mark.parametrize(("field", "value"), [
    ("inpaintSize", 64), ("inpaintSize", 4096), ("maskPadding", 21), ("maskBlur", -1), ("confidence", 1.5),
    ("steps", 0), ("CFGScale", 51.0), ("strength", 1.2)])
def test_bad_settings_name_the_field_as_a_request_does(field, value):
    with pytest.raises(ContractError) as info:
        detailer_settings({**GOOD, field: value})
    assert info.value.parameters == [f"ultralytics.{field}"]
    # the same code and parameter as the request validator gives for the same value
    req = {"taskType": "imageInference", "taskUUID": "0b5e4c1a-2d3f-4a6b-8c9d-0e1f2a3b4c5d", "model": "runware:5@1",
           "positivePrompt": "a cat", "width": 512, "height": 512, "ultralytics": {field: value}}
    with pytest.raises(ContractError) as request_info:
        validate_task(req)
    assert info.value.codes == request_info.value.codes


def test_report_json_and_warnings_for_images_with_nothing_detected():
    reports = [ImageReport(7, [(Rect(1, 2, 30, 40), 0.91234567), (Rect(50, 50, 60, 70), 0.8)]), ImageReport(8)]
    text = detections_json("runware:35@1", 0.5, reports)
    data = json.loads(text)
    assert data == {"detector": "runware:35@1", "confidence": 0.5, "images": [
        {"seed": 7, "faces": 2, "boxes": [[1, 2, 30, 40, 0.9123], [50, 50, 60, 70, 0.8]]},
        {"seed": 8, "faces": 0, "boxes": []}]}
    warnings = nothing_detected_warnings(text, "0b5e4c1a-2d3f-4a6b-8c9d-0e1f2a3b4c5d")
    assert len(warnings) == 1
    w = warnings[0].to_json()
    assert w["code"] == "nothingDetected" and w["parameter"] == "ultralytics"
    assert "image 1" in w["message"] and "seed 8" in w["message"]
    assert w["taskUUID"] == "0b5e4c1a-2d3f-4a6b-8c9d-0e1f2a3b4c5d"
    assert nothing_detected_warnings(detections_json("x", 0.5, reports[:1])) == []
    assert nothing_detected_warnings("") == []


def test_warnings_refuse_a_string_that_is_not_the_detailer_output():
    with pytest.raises(ContractError) as info:
        nothing_detected_warnings('{"images": [{"faces": "many"}]}')
    assert info.value.codes == ["invalidDetections"]
