"""Face-detailer settings (the contract's `ultralytics` ranges on node widgets) and its detections report."""

import json

import pytest

from imageinference.contract.errors import ContractError
from imageinference.contract.validate import validate_task
from imageinference.engines.detailer.geometry import Rect
from imageinference.engines.detailer.report import (
    ImageReport,
    detection_warnings,
    detections_json,
    nothing_detected_warnings,
)
from imageinference.engines.detailer.settings import detailer_settings

GOOD = {"confidence": 0.5, "maskPadding": 5, "maskBlur": 5, "inpaintSize": 1024, "steps": 20, "CFGScale": 8.0,
        "strength": 0.3}


def test_good_settings_pass():
    s = detailer_settings(GOOD)
    assert (s.inpaintSize, s.maskPadding, s.CFGScale) == (1024, 5, 8.0)
    # what a request gets for the node-only region options (docs/face-detailer.md)
    assert (s.contextPadding, s.maxUpscale, s.maxRegions, s.minRegionSize, s.maxRegionSize, s.seedPerRegion) == (
        32, 4.0, 10, 0, 0, True)
    s = detailer_settings({**GOOD, "contextPadding": 0, "maxUpscale": 16.0, "maxRegions": 1, "minRegionSize": 10,
                           "maxRegionSize": 500, "seedPerRegion": False})
    assert (s.contextPadding, s.maxUpscale, s.maxRegions, s.minRegionSize, s.maxRegionSize, s.seedPerRegion) == (
        0, 16.0, 1, 10, 500, False)


@pytest.mark.parametrize(("field", "value"), [("contextPadding", -1), ("maxUpscale", 0.5), ("maxRegions", 0),
                                              ("maxRegions", 2.5), ("minRegionSize", "8"), ("seedPerRegion", 1)])
def test_bad_region_options_name_the_node_input(field, value):
    with pytest.raises(ContractError) as info:
        detailer_settings({**GOOD, field: value})
    assert info.value.parameters == [field]
    assert info.value.codes == ["invalid" + field[0].upper() + field[1:]]


def test_a_bad_request_field_and_a_bad_region_option_are_both_reported():
    with pytest.raises(ContractError) as info:
        detailer_settings({**GOOD, "steps": 0, "maxRegions": 0})
    assert info.value.parameters == ["ultralytics.steps", "maxRegions"]


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
    reports[0].seeds = [7, 8]
    text = detections_json("runware:35@1", 0.5, reports)
    data = json.loads(text)
    none = {"limit": 0, "small": 0, "large": 0}
    assert data == {"detector": "runware:35@1", "confidence": 0.5, "images": [
        {"seed": 7, "faces": 2, "boxes": [[1, 2, 30, 40, 0.9123], [50, 50, 60, 70, 0.8]], "regionSeeds": [7, 8],
         "found": 2, "skipped": none},
        {"seed": 8, "faces": 0, "boxes": [], "regionSeeds": [], "found": 0, "skipped": none}]}
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


def test_regions_left_out_by_max_regions_are_a_warning_naming_how_many():
    crowd = ImageReport(21, [(Rect(0, 0, 10, 10), 0.9)] * 3, [21, 22, 23], found=40,
                        skipped={"limit": 30, "small": 7})
    text = detections_json("runware:35@1", 0.5, [crowd, ImageReport(22, found=0)], max_regions=3)
    assert json.loads(text)["maxRegions"] == 3
    warnings = [w.to_json() for w in detection_warnings(text)]
    assert [w["code"] for w in warnings] == ["tooManyRegions", "nothingDetected"]
    assert "33 regions in image 0" in warnings[0]["message"] and "the other 30" in warnings[0]["message"]
    assert "the 3 largest (at most 3 per image)" in warnings[0]["message"]
    assert "found nothing scoring above confidence 0.5 in image 1" in warnings[1]["message"]


def test_an_image_whose_regions_were_all_outside_the_size_limits_says_so():
    text = detections_json("x", 0.5, [ImageReport(5, found=2, skipped={"small": 2})])
    (w,) = detection_warnings(text)
    assert w.code == "nothingDetected" and "none within the region size limits" in w.message
    assert nothing_detected_warnings(text)[0].message == w.message  # the Output node's name for it
