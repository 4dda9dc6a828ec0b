"""The documented responses: one result object per image (§5.1), the async acknowledgement (§5.2), the envelope."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from .errors import ApiError


class ImageResult(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    taskType: Literal["imageInference"] = "imageInference"
    taskUUID: str
    imageUUID: str
    seed: int | None = None  # omitted, with a warning, when the graph did not say which seed made the image
    imageURL: str | None = None
    imageBase64Data: str | None = None
    imageDataURI: str | None = None
    NSFWContent: bool | None = None
    watermarked: bool | None = None  # local: a `watermark` was drawn on the image
    cost: float | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _exactly_one_image_field(self) -> ImageResult:
        given = [f for f in ("imageURL", "imageBase64Data", "imageDataURI") if getattr(self, f) is not None]
        if len(given) != 1:
            raise ValueError(f"a result carries exactly one of imageURL/imageBase64Data/imageDataURI, got {given}")
        return self


class AsyncAck(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    taskType: Literal["imageInference"] = "imageInference"
    taskUUID: str


IMAGE_FIELD = {"URL": "imageURL", "base64Data": "imageBase64Data", "dataURI": "imageDataURI"}


def data_envelope(items: Sequence[BaseModel], warnings: Sequence[ApiError] = ()) -> dict[str, Any]:
    """`{"data": [...]}`, with `"warnings": [...]` beside it when something was accepted but not done as asked
    or is not known (each in the error object's format)."""
    out: dict[str, Any] = {"data": [item.model_dump(mode="json", exclude_none=True) for item in items]}
    if warnings:
        out["warnings"] = [w.to_json() for w in warnings]
    return out
