"""A table of invalid requests, each with the code and parameter the contract must report."""

import copy

import pytest

from imageinference.contract.errors import ContractError
from imageinference.contract.validate import validate_task

UUID = "cc58c87f-bc7a-450e-a897-0e25a60e1cb2"
IMG = "59a2edc2-45e6-429f-be5f-7ded59b92046"
PNG_B64 = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="

SD3 = {"taskType": "imageInference", "taskUUID": UUID, "model": "runware:5@1", "positivePrompt": "a glass house",
       "width": 1024, "height": 768, "steps": 28, "CFGScale": 7.5}
FLUX = {"taskType": "imageInference", "taskUUID": UUID, "model": "rundiffusion:130@100",
        "positivePrompt": "a glass house", "width": 1024, "height": 1024, "steps": 28}
SD15 = dict(SD3, model="civitai:4384@128713")
DELETE = object()


def mutate(base, **changes):
    out = copy.deepcopy(base)
    for key, value in changes.items():
        path = key.split("__")
        target = out
        for part in path[:-1]:
            target = target[int(part)] if part.isdigit() else target.setdefault(part, {})
        if value is DELETE:
            target.pop(path[-1], None)
        else:
            target[path[-1]] = value
    return out


CN = {"model": "runware:6@1", "guideImage": IMG}
CASES = [
    # platform fields
    (mutate(SD3, taskType="imageUpload"), "invalidTaskType", "taskType"),
    (mutate(SD3, taskType=DELETE), "missingTaskType", "taskType"),
    (mutate(SD3, taskUUID="not-a-uuid"), "invalidTaskUUID", "taskUUID"),
    (mutate(SD3, taskUUID=DELETE), "missingTaskUUID", "taskUUID"),
    (mutate(SD3, outputType="url"), "invalidOutputType", "outputType"),
    (mutate(SD3, outputFormat="TIFF"), "invalidOutputFormat", "outputFormat"),
    (mutate(SD3, outputQuality=19), "invalidOutputQuality", "outputQuality"),
    (mutate(SD3, outputQuality=100), "invalidOutputQuality", "outputQuality"),
    (mutate(SD3, outputQuality="95"), "invalidOutputQuality", "outputQuality"),
    (mutate(SD3, deliveryMethod="stream"), "invalidDeliveryMethod", "deliveryMethod"),
    (mutate(SD3, webhookURL="ftp://example.com/hook"), "invalidWebhookURL", "webhookURL"),
    (mutate(SD3, uploadEndpoint="not a url"), "invalidUploadEndpoint", "uploadEndpoint"),
    (mutate(SD3, ttl=59), "invalidTtl", "ttl"),
    (mutate(SD3, ttl=120, outputType="base64Data"), "invalidTtl", "ttl"),
    (mutate(SD3, includeCost="true"), "invalidIncludeCost", "includeCost"),
    (mutate(SD3, numberResults=0), "invalidNumberResults", "numberResults"),
    (mutate(SD3, numberResults=21), "invalidNumberResults", "numberResults"),
    (mutate(SD3, numberResults=2.0), "invalidNumberResults", "numberResults"),
    (mutate(SD3, safety={"checkContent": 1}), "invalidCheckContent", "safety.checkContent"),
    (mutate(SD3, safety={"mode": "strict"}), "invalidMode", "safety.mode"),
    (mutate(SD3, unknownField=1), "unknownParameter", "unknownField"),
    (mutate(SD3, positivprompt="typo"), "unknownParameter", "positivprompt"),
    # core generation fields
    (mutate(SD3, model=DELETE), "missingModel", "model"),
    (mutate(SD3, model="runware-5-1"), "invalidModel", "model"),
    (mutate(SD3, model="runware:5"), "invalidModel", "model"),
    (mutate(SD3, positivePrompt=DELETE), "missingPositivePrompt", "positivePrompt"),
    (mutate(SD3, positivePrompt="a"), "invalidPositivePrompt", "positivePrompt"),
    (mutate(SD3, positivePrompt="x" * 3001), "invalidPositivePrompt", "positivePrompt"),
    (mutate(SD3, positivePrompt=42), "invalidPositivePrompt", "positivePrompt"),
    (mutate(SD3, negativePrompt="n"), "invalidNegativePrompt", "negativePrompt"),
    (mutate(FLUX, width=DELETE), "missingWidth", "width"),
    (mutate(SD3, width=1000), "invalidWidth", "width"),
    (mutate(SD3, height=64), "invalidHeight", "height"),
    (mutate(SD3, height=4096), "invalidHeight", "height"),
    (mutate(SD3, width="1024"), "invalidWidth", "width"),
    (mutate(SD3, seed=-1), "invalidSeed", "seed"),
    (mutate(SD3, seed=2**63), "invalidSeed", "seed"),
    (mutate(SD3, seed="42"), "invalidSeed", "seed"),
    (mutate(SD3, steps=0), "invalidSteps", "steps"),
    (mutate(FLUX, steps=51), "invalidSteps", "steps"),
    (mutate(SD3, steps=True), "invalidSteps", "steps"),
    (mutate(SD3, scheduler="euler"), "invalidScheduler", "scheduler"),
    (mutate(SD3, CFGScale=31), "invalidCFGScale", "CFGScale"),
    (mutate(FLUX, CFGScale=21), "invalidCFGScale", "CFGScale"),
    (mutate(SD3, CFGScale="7"), "invalidCFGScale", "CFGScale"),
    (mutate(SD3, clipSkip=5), "invalidClipSkip", "clipSkip"),
    (mutate(SD15, clipSkip=3), "invalidClipSkip", "clipSkip"),
    (mutate(FLUX, clipSkip=1), "unsupportedClipSkip", "clipSkip"),
    (mutate(SD15, promptWeighting="a1111"), "invalidPromptWeighting", "promptWeighting"),
    (mutate(FLUX, promptWeighting="compel"), "invalidPromptWeighting", "promptWeighting"),
    (mutate(SD3, promptWeighting="sdEmbeds"), "unsupportedPromptWeighting", "promptWeighting"),
    (mutate(SD3, strength=0.5), "missingSeedImage", "strength"),
    (mutate(SD3, inputs={"seedImage": IMG}, strength=1.5), "invalidStrength", "strength"),
    (mutate(SD3, inputs={"maskImage": IMG}), "missingSeedImage", "inputs.maskImage"),
    (mutate(SD3, inputs={"seedImage": IMG}, maskMargin=64), "missingMaskImage", "maskMargin"),
    (mutate(SD3, inputs={"seedImage": IMG, "maskImage": IMG}, maskMargin=16), "invalidMaskMargin", "maskMargin"),
    (mutate(SD3, inputs={"seedImage": "not an image"}), "invalidSeedImage", "inputs.seedImage"),
    (mutate(SD3, seedImage="data:image/gif;base64,R0lGODlhAQABAAAAACw="), "invalidSeedImage", "seedImage"),
    (mutate(SD3, inputs={"seedImage": "ZZZZ" * 8}), "invalidSeedImage", "inputs.seedImage"),
    (mutate(SD3, inputs={"seedImage": IMG, "extra": 1}), "unknownParameter", "inputs.extra"),
    (mutate(SD3, seedImage=IMG, inputs={"seedImage": IMG}), "conflictSeedImage", "seedImage"),
    (mutate(SD15, vae="bad air"), "invalidVae", "vae"),
    (mutate(SD3, resolution="2k"), "conflictResolution", "resolution"),
    # outpaint
    (mutate(SD3, outpaint={"top": 64}), "missingSeedImage", "outpaint"),
    (mutate(SD3, inputs={"seedImage": IMG}, outpaint={"top": 0}), "invalidOutpaint", "outpaint"),
    (mutate(SD3, inputs={"seedImage": IMG}, outpaint={"left": 100}), "invalidLeft", "outpaint.left"),
    (mutate(SD3, inputs={"seedImage": IMG}, outpaint={"top": 64, "blur": 33}), "invalidBlur", "outpaint.blur"),
    (mutate(SD3, inputs={"seedImage": IMG}, outpaint={"top": -64}), "invalidTop", "outpaint.top"),
    # lora
    (mutate(SD3, lora=[]), "invalidLora", "lora"),
    (mutate(SD3, lora=[{"weight": 1}]), "missingModel", "lora.0.model"),
    (mutate(SD3, lora=[{"model": "civitai:1@2", "weight": 5}]), "invalidWeight", "lora.0.weight"),
    (mutate(SD3, lora=[{"model": "civitai:1@2", "transformer": "mid"}]), "invalidTransformer", "lora.0.transformer"),
    # controlNet windows
    (mutate(SD3, controlNet=[dict(CN, startStep=5, endStep=5)]), "invalidEndStep", "controlNet.0.endStep"),
    (mutate(SD3, controlNet=[dict(CN, endStep=29)]), "invalidEndStep", "controlNet.0.endStep"),
    (mutate(SD3, controlNet=[dict(CN, startStep=1, startStepPercentage=10)]), "conflictStartStepPercentage",
     "controlNet.0.startStepPercentage"),
    (mutate(SD3, controlNet=[CN, dict(CN, endStep=1, endStepPercentage=50)]), "conflictEndStepPercentage",
     "controlNet.1.endStepPercentage"),
    (mutate(SD3, controlNet=[dict(CN, startStepPercentage=60, endStepPercentage=50)]), "invalidEndStepPercentage",
     "controlNet.0.endStepPercentage"),
    (mutate(SD3, controlNet=[dict(CN, startStepPercentage=100)]), "invalidStartStepPercentage",
     "controlNet.0.startStepPercentage"),
    (mutate(SD3, controlNet=[dict(CN, controlMode="both")]), "invalidControlMode", "controlNet.0.controlMode"),
    (mutate(SD3, controlNet=[{"model": "runware:6@1"}]), "missingGuideImage", "controlNet.0.guideImage"),
    (mutate(SD3, controlNet=[dict(CN, weight=-5)]), "invalidWeight", "controlNet.0.weight"),
    # accelerator options
    (mutate(SD3, acceleratorOptions={"teaCache": True, "teaCacheDistance": 1.5}), "invalidTeaCacheDistance",
     "acceleratorOptions.teaCacheDistance"),
    (mutate(SD3, acceleratorOptions={"cacheStartStep": 10, "cacheEndStep": 5}), "invalidCacheEndStep",
     "acceleratorOptions.cacheEndStep"),
    (mutate(SD3, acceleratorOptions={"cacheEndStep": 40}), "invalidCacheEndStep", "acceleratorOptions.cacheEndStep"),
    (mutate(SD3, acceleratorOptions={"cacheStartStep": 1, "cacheStartStepPercentage": 5}),
     "conflictCacheStartStepPercentage", "acceleratorOptions.cacheStartStepPercentage"),
    (mutate(SD3, acceleratorOptions={"cacheMaxConsecutiveSteps": 6}), "invalidCacheMaxConsecutiveSteps",
     "acceleratorOptions.cacheMaxConsecutiveSteps"),
    (mutate(SD3, acceleratorOptions={"deepCache": True}), "unsupportedDeepCache", "acceleratorOptions.deepCache"),
    (mutate(SD15, acceleratorOptions={"fbCache": True}), "unsupportedFbCache", "acceleratorOptions.fbCache"),
    (mutate(SD3, acceleratorOptions={"dbCacheSkipInterval": 0}), "invalidDbCacheSkipInterval",
     "acceleratorOptions.dbCacheSkipInterval"),
    # architecture-gated features
    (mutate(SD3, ipAdapters=[{"model": "runware:55@1", "guideImages": [IMG]}]), "unsupportedIpAdapters", "ipAdapters"),
    (mutate(SD3, hiresFix=True), "unsupportedHiresFix", "hiresFix"),
    (mutate(SD15, layerDiffuse=True, outputFormat="PNG"), "unsupportedLayerDiffuse", "layerDiffuse"),
    (mutate(SD15, pulid={"images": [IMG]}), "unsupportedPulid", "pulid"),
    (mutate(SD15, refiner={"model": "civitai:101055@128080", "startStep": 10}), "unsupportedRefiner", "refiner"),
    (mutate(FLUX, embeddings=[{"model": "civitai:1@2"}]), "unsupportedEmbeddings", "embeddings"),
    (mutate(SD15, trueCFGScale=3), "unsupportedTrueCFGScale", "trueCFGScale"),
    (mutate(SD3, trueCFGScale=3), "unsupportedTrueCFGScale", "trueCFGScale"),
    # trueCFGScale (FLUX)
    (mutate(FLUX, trueCFGScale=51), "invalidTrueCFGScale", "trueCFGScale"),
    (mutate(FLUX, trueCFGScale=-0.5), "invalidTrueCFGScale", "trueCFGScale"),
    (mutate(FLUX, trueCFGScale="3"), "invalidTrueCFGScale", "trueCFGScale"),
    # hires fix, layerDiffuse, pulid, ultralytics, ipAdapters on Flux
    (mutate(FLUX, hiresFix={"model": "runware:999@1"}), "invalidModel", "hiresFix.model"),
    (mutate(FLUX, hiresFix="yes"), "invalidHiresFix", "hiresFix"),
    (mutate(FLUX, hiresFix={"model": "runware:504@1", "upscaleFactor": 2}), "invalidUpscaleFactor",
     "hiresFix.upscaleFactor"),
    (mutate(FLUX, layerDiffuse=True), "invalidOutputFormat", "outputFormat"),
    (mutate(FLUX, pulid={"images": [IMG, IMG]}), "invalidImages", "pulid.images"),
    (mutate(FLUX, pulid={"images": [IMG], "idWeight": 4}), "invalidIdWeight", "pulid.idWeight"),
    (mutate(FLUX, pulid={"images": [IMG], "CFGstartStep": 28}), "invalidCFGstartStep", "pulid.CFGstartStep"),
    (mutate(FLUX, pulid={"images": [IMG], "CFGstartStep": 2, "CFGstartStepPercentage": 10}),
     "conflictCFGstartStepPercentage", "pulid.CFGstartStepPercentage"),
    (mutate(FLUX, puLID={"inputImages": [IMG], "CFGStartStep": 30}), "invalidCFGstartStep", "puLID.CFGStartStep"),
    (mutate(FLUX, ultralytics={"confidence": 2}), "invalidConfidence", "ultralytics.confidence"),
    (mutate(FLUX, ultralytics={"inpaintSize": 64}), "invalidInpaintSize", "ultralytics.inpaintSize"),
    (mutate(FLUX, ipAdapters=[{"model": "runware:56@1", "guideImages": []}]), "invalidGuideImages",
     "ipAdapters.0.guideImages"),
    (mutate(FLUX, ipAdapters=[{"model": "runware:56@1", "guideImage": IMG, "weightType": "heavy"}]),
     "invalidWeightType", "ipAdapters.0.weightType"),
    (mutate(FLUX, ipAdapters=[{"model": "runware:56@1", "guideImage": "nope"}]), "invalidGuideImage",
     "ipAdapters.0.guideImage"),
    (mutate(FLUX, advancedFeatures={"hiresFix": True}, hiresFix=True), "conflictHiresFix", "advancedFeatures.hiresFix"),
    (mutate(FLUX, watermark={"text": "hi", "image": IMG}), "invalidWatermark", "watermark"),
    # reference rules: mixed window forms, Kontext's reference images, ACE++'s required reference image
    (mutate(SD3, controlNet=[dict(CN, startStep=2, endStepPercentage=50)]), "conflictEndStepPercentage",
     "controlNet.0.endStepPercentage"),
    (mutate(SD3, controlNet=[dict(CN, startStepPercentage=10, endStep=20)]), "conflictEndStep", "controlNet.0.endStep"),
    (mutate(FLUX, acceleratorOptions={"fbCache": True, "cacheStartStep": 2, "cacheEndStepPercentage": 80}),
     "conflictCacheEndStepPercentage", "acceleratorOptions.cacheEndStepPercentage"),
    (mutate(FLUX, model="runware:106@1", width=DELETE, height=DELETE, inputs={"referenceImages": [IMG, IMG, IMG]}),
     "invalidReferenceImages", "inputs.referenceImages"),
    (mutate(FLUX, model="runware:102@1", acePlusPlus={"type": "portrait"}), "missingReferenceImages",
     "inputs.referenceImages"),
]


def test_table_is_large_enough():
    assert len(CASES) >= 60


@pytest.mark.parametrize(("request_", "code", "parameter"), CASES,
                         ids=[f"{i}-{c}-{p}" for i, (_r, c, p) in enumerate(CASES)])
def test_invalid_request_reports_code_and_parameter(request_, code, parameter):
    with pytest.raises(ContractError) as info:
        validate_task(request_)
    found = [(e.code, e.parameter) for e in info.value.errors]
    assert (code, parameter) in found, found
    for err in info.value.errors:
        body = err.to_json()
        assert body.get("taskUUID") == (UUID if request_.get("taskUUID") == UUID else None)
        assert body["message"] and body["taskType"] == "imageInference"


def test_all_problems_are_reported_together():
    bad = mutate(SD3, width=1000, steps=0, scheduler="euler", foo=1, strength=0.3)
    with pytest.raises(ContractError) as info:
        validate_task(bad)
    assert {"width", "steps", "scheduler", "foo", "strength"} <= set(info.value.parameters)


def test_enum_errors_list_allowed_values():
    with pytest.raises(ContractError) as info:
        validate_task(mutate(SD3, outputFormat="TIFF", scheduler="euler"))
    by_param = {e.parameter: e.to_json() for e in info.value.errors}
    assert by_param["outputFormat"]["allowedValues"] == ["JPG", "PNG", "WEBP"]
    assert by_param["outputFormat"]["type"] == "string"
    assert len(by_param["scheduler"]["allowedValues"]) == 75


def test_non_object_task():
    with pytest.raises(ContractError) as info:
        validate_task(["not", "a", "task"])
    assert info.value.codes == ["invalidTask"]


def test_negative_prompt_with_low_cfg_is_accepted_and_reported_ignored():
    result = validate_task(mutate(SD3, negativePrompt="blurry", CFGScale=1))
    assert result.request.negativePrompt == "blurry"
    assert [w.code for w in result.warnings] == ["ignoredNegativePrompt"]
    assert validate_task(mutate(SD3, negativePrompt="blurry", CFGScale=1.5)).warnings == []


def test_on_flux_the_negative_prompt_needs_true_cfg():
    """FLUX's CFGScale is its distilled guidance: only trueCFGScale above 1 runs the negative prompt."""
    flux = validate_task(mutate(FLUX, negativePrompt="blurry", CFGScale=7))
    assert [w.code for w in flux.warnings] == ["ignoredNegativePrompt"]
    assert "trueCFGScale" in flux.warnings[0].message
    assert validate_task(mutate(FLUX, negativePrompt="blurry", trueCFGScale=3)).warnings == []
    # PuLID's own true CFG runs the negative prompt too; at its scale 1 it runs no negative pass
    with_pulid = mutate(FLUX, negativePrompt="blurry", pulid={"images": [IMG], "trueCFGScale": 4})
    assert validate_task(with_pulid).warnings == []
    with_pulid["pulid"]["trueCFGScale"] = 1
    assert [w.code for w in validate_task(with_pulid).warnings] == ["ignoredNegativePrompt"]


def test_base64_and_data_uri_images_are_accepted():
    for value in (PNG_B64, f"data:image/png;base64,{PNG_B64}", "https://example.com/a.png", IMG):
        assert validate_task(mutate(SD3, inputs={"seedImage": value})).request.seed_image == value
