"""The canonical `imageInference` request: every documented field with its type, range, default and enum.

Strict JSON types (a string is never a number or a boolean) and unknown fields refused. Legacy shapes are
mapped onto this form beforehand by `normalize`; rules that span fields live in `rules`.
Ranges here are the widest any documented model allows; a model's own narrower ranges are applied by `rules`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from .air import canonical_air
from .images import IMAGE_FORMATS_MESSAGE, UUID_ANY, image_string_kind, is_http_url
from .scheduler_names import SCHEDULER_NAMES

SEED_MAX = 9223372036854775807  # the docs print 2^63 rounded as a float; the largest int64 is the usable bound
PROMPT_MIN, PROMPT_MAX = 2, 3000
BLANK_PROMPT = "__BLANK__"


def _air(value: str) -> str:
    return canonical_air(value)


def _image(value: str) -> str:
    if image_string_kind(value) is None:
        raise ValueError(IMAGE_FORMATS_MESSAGE)
    return value


def _uuid(value: str) -> str:
    if not UUID_ANY.match(value):
        raise ValueError("must be a UUID v4 string, e.g. 'a770f077-f413-47de-9dac-be0b26a35da6'")
    return value.lower()


def _url(value: str) -> str:
    if not is_http_url(value):
        raise ValueError("must be an http(s) URL")
    return value


AIRStr = Annotated[str, AfterValidator(_air)]
ImageStr = Annotated[str, AfterValidator(_image)]
UUIDStr = Annotated[str, AfterValidator(_uuid)]
URLStr = Annotated[str, Field(max_length=2048), AfterValidator(_url)]
Prompt = Annotated[str, Field(min_length=PROMPT_MIN, max_length=PROMPT_MAX)]
Weight4 = Annotated[float, Field(ge=-4, le=4)]
Unit = Annotated[float, Field(ge=0, le=1)]
StepStart = Annotated[int, Field(ge=0)]
StepEnd = Annotated[int, Field(ge=1)]
PctStart = Annotated[int, Field(ge=0, le=99)]
PctEnd = Annotated[int, Field(ge=1, le=100)]
Side = Annotated[int, Field(ge=0, le=2048)]

SchedulerName = Literal[SCHEDULER_NAMES]  # type: ignore[valid-type]
HIRES_FIX_MODELS = ("runware:504@1", "runware:realesrgan@anime-6b", "runware:esrgan@animesharp",
                    "runware:esrgan@ultrasharp")
WATERMARK_POSITIONS = ("top-left", "top-center", "top-right", "center-left", "center-center", "center-right",
                       "bottom-left", "bottom-center", "bottom-right")
PHOTOMAKER_STYLES = ("No style", "Cinematic", "Disney Character", "Digital Art", "Photographic", "Fantasy art",
                     "Neonpunk", "Enhance", "Comic book", "Lowpoly", "Line art")
WEIGHT_TYPES = ("normal", "ease_in", "ease_out", "ease_in_out", "weak_input", "weak_output", "weak_middle",
                "strong_middle", "style_transfer", "composition", "strong_style_transfer", "style_and_composition",
                "strong_style_and_composition")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class Inputs(Strict):
    seedImage: ImageStr | None = None
    maskImage: ImageStr | None = None
    referenceImages: Annotated[list[ImageStr], Field(min_length=1, max_length=14)] | None = None


class Outpaint(Strict):
    top: Side = 0
    right: Side = 0
    bottom: Side = 0
    left: Side = 0
    blur: Annotated[int, Field(ge=0, le=32)] = 0


class Lora(Strict):
    model: AIRStr
    weight: Weight4 = 1.0
    transformer: Literal["high", "low", "both"] = "both"


class ControlNet(Strict):
    model: AIRStr
    guideImage: ImageStr
    weight: Weight4 = 1.0
    startStep: StepStart | None = None
    startStepPercentage: PctStart | None = None
    endStep: StepEnd | None = None
    endStepPercentage: PctEnd | None = None
    controlMode: Literal["balanced", "prompt", "controlnet"] = "balanced"


class IpAdapter(Strict):
    model: AIRStr
    guideImages: Annotated[list[ImageStr], Field(min_length=1)]
    weight: Weight4 = 1.0
    combineMethod: Literal["concat", "add", "subtract", "average", "norm_average"] = "concat"
    embedScaling: Literal["only_v", "kv", "kv_penalty_c", "k_mean_v_penalty_c"] = "kv"
    weightType: Literal[WEIGHT_TYPES] = "normal"  # type: ignore[valid-type]
    weightComposition: Unit | None = None


class Embedding(Strict):
    model: AIRStr
    weight: Weight4 = 1.0


class Refiner(Strict):
    model: AIRStr
    startStep: Annotated[int, Field(ge=2)] | None = None
    startStepPercentage: Annotated[int, Field(ge=1, le=99)] | None = None


class AcceleratorOptions(Strict):
    teaCache: bool = False
    teaCacheDistance: Unit = 0.5
    fbCache: bool = False
    fbCacheThreshold: Unit = 0.25
    dbCache: bool = False
    dbCacheThreshold: Unit = 0.25
    dbCacheSkipInterval: Annotated[int, Field(ge=1, le=100)] = 5
    deepCache: bool = False
    deepCacheInterval: Annotated[int, Field(ge=1, le=100)] = 3
    deepCacheBranchId: Annotated[int, Field(ge=0, le=20)] = 0
    cacheStartStep: StepStart | None = None
    cacheStartStepPercentage: PctStart | None = None
    cacheEndStep: StepEnd | None = None
    cacheEndStepPercentage: PctEnd | None = None
    cacheMaxConsecutiveSteps: Annotated[int, Field(ge=1, le=5)] = 3


class HiresFix(Strict):
    model: Literal[HIRES_FIX_MODELS]  # type: ignore[valid-type]
    steps: Annotated[int, Field(ge=1, le=100)] | None = None
    strength: Unit | None = None
    upscaleFactor: Literal[4] = 4


class Pulid(Strict):
    images: Annotated[list[ImageStr], Field(min_length=1, max_length=1)]
    idWeight: Annotated[float, Field(ge=0, le=3)] = 1.0
    trueCFGScale: Annotated[float, Field(ge=0, le=10)] | None = None
    CFGstartStep: Annotated[int, Field(ge=0, le=100)] | None = None
    CFGstartStepPercentage: PctStart | None = None


class Ultralytics(Strict):
    maskBlur: Annotated[int, Field(ge=0, le=100)] = 5
    maskPadding: Annotated[int, Field(ge=0, le=20)] = 5
    confidence: Unit = 0.9
    positivePrompt: Prompt | None = None
    negativePrompt: Prompt | None = None
    steps: Annotated[int, Field(ge=1, le=100)] = 20
    CFGScale: Annotated[float, Field(ge=0, le=50)] = 8.0
    strength: Unit = 0.3
    inpaintSize: Annotated[int, Field(ge=128, le=2048)] = 1024


class Safety(Strict):
    checkContent: bool = False
    mode: Literal["none", "fast", "full"] | None = None
    # sent by Runware's own ComfyUI pack and legacy SDK; undocumented semantics, accepted as given
    tolerance: bool | None = None
    checkInputs: bool | None = None


class Watermark(Strict):
    text: Annotated[str, Field(min_length=2, max_length=32)] | None = None
    image: ImageStr | None = None
    displayPosition: Literal[WATERMARK_POSITIONS] = "bottom-right"  # type: ignore[valid-type]
    tiled: bool = False
    opacity: Annotated[float, Field(ge=0.1, le=1)] = 0.6
    fontColor: Annotated[str, Field(pattern=r"^#[0-9A-Fa-f]{6}$")] | None = None
    bgColor: Annotated[str, Field(pattern=r"^(#[0-9A-Fa-f]{6}|transparent)$")] | None = None


class PhotoMaker(Strict):
    images: Annotated[list[ImageStr], Field(min_length=1, max_length=4)]
    strength: Annotated[int, Field(ge=15, le=50)] = 15
    style: Literal[PHOTOMAKER_STYLES] = "No style"  # type: ignore[valid-type]


class AcePlusPlus(Strict):
    type: Literal["portrait", "subject", "local_editing"] = "portrait"
    inputImages: Annotated[list[ImageStr], Field(max_length=1)] | None = None
    inputMasks: Annotated[list[ImageStr], Field(max_length=1)] | None = None
    repaintingScale: Unit = 0.0


class ImageInferenceRequest(Strict):
    # platform
    taskType: Literal["imageInference"]
    taskUUID: UUIDStr
    outputType: Literal["URL", "base64Data", "dataURI"] = "URL"
    outputFormat: Literal["JPG", "PNG", "WEBP"] = "JPG"
    outputQuality: Annotated[int, Field(ge=20, le=99)] = 95
    webhookURL: URLStr | None = None
    deliveryMethod: Literal["sync", "async"] = "sync"
    uploadEndpoint: URLStr | None = None
    safety: Safety | None = None
    ttl: Annotated[int, Field(ge=60)] | None = None
    includeCost: bool = False
    numberResults: Annotated[int, Field(ge=1, le=20)] = 1
    # generation
    model: AIRStr
    positivePrompt: Prompt
    negativePrompt: Prompt | None = None
    width: Annotated[int, Field(ge=128, le=2048)] | None = None
    height: Annotated[int, Field(ge=128, le=2048)] | None = None
    resolution: Literal["1k", "2k", "4k"] | None = None
    seed: Annotated[int, Field(ge=0, le=SEED_MAX)] | None = None
    steps: Annotated[int, Field(ge=1, le=100)] | None = None
    scheduler: SchedulerName = "Default"
    CFGScale: Annotated[float, Field(ge=0, le=50)] | None = None
    clipSkip: Annotated[int, Field(ge=0, le=4)] | None = None
    promptWeighting: Literal["compel", "sdEmbeds"] | None = None
    strength: Unit | None = None
    maskMargin: Annotated[int, Field(ge=32, le=128)] | None = None
    vae: AIRStr | None = None
    acceleration: Literal["none", "low", "medium", "high"] | None = None
    trueCFGScale: Annotated[float, Field(ge=0, le=50)] | None = None
    upscaleFactor: Literal[1, 2, 4] | None = None
    inputs: Inputs | None = None
    outpaint: Outpaint | None = None
    lora: Annotated[list[Lora], Field(min_length=1)] | None = None
    controlNet: Annotated[list[ControlNet], Field(min_length=1)] | None = None
    ipAdapters: Annotated[list[IpAdapter], Field(min_length=1)] | None = None
    embeddings: Annotated[list[Embedding], Field(min_length=1)] | None = None
    refiner: Refiner | None = None
    acceleratorOptions: AcceleratorOptions | None = None
    hiresFix: Literal[True] | HiresFix | None = None
    layerDiffuse: bool | None = None
    pulid: Pulid | None = None
    ultralytics: Ultralytics | None = None
    photoMaker: PhotoMaker | None = None
    acePlusPlus: AcePlusPlus | None = None
    watermark: Watermark | None = None
    settings: dict[str, Any] | None = None
    providerSettings: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        """The canonical JSON form: defaults explicit, absent optionals omitted."""
        return self.model_dump(mode="json", exclude_none=True)

    @property
    def seed_image(self) -> str | None:
        return self.inputs.seedImage if self.inputs else None

    @property
    def mask_image(self) -> str | None:
        return self.inputs.maskImage if self.inputs else None
