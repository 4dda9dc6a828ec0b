"""What the detailer found, as the JSON its node outputs, and the response warnings made from it (pure).

The node's `detections` output is {"detector", "confidence", "images": [{"seed", "faces", "boxes"}]}, one entry per
image in batch order; `boxes` are the detailed faces as [x0, y0, x1, y1, score] in image pixels, in the order they
were detailed. The Image Inference Output node turns each image with no face into a `nothingDetected` warning.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from ...contract.errors import ApiError, ContractError
from .geometry import Rect

WARNING_CODE = "nothingDetected"


@dataclass
class ImageReport:
    seed: int
    boxes: list[tuple[Rect, float]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"seed": self.seed, "faces": len(self.boxes),
                "boxes": [[*rect.as_list(), round(score, 4)] for rect, score in self.boxes]}


def detections_json(detector: str, confidence: float, reports: list[ImageReport]) -> str:
    return json.dumps({"detector": detector, "confidence": confidence, "images": [r.to_json() for r in reports]})


def nothing_detected_warnings(detections: str, task_uuid: str | None = None) -> list[ApiError]:
    """One warning per image in which the detailer found nothing (the image is returned as generated)."""
    if not detections.strip():
        return []
    try:
        data = json.loads(detections)
        images = data["images"]
        empty = [(i, int(img["seed"])) for i, img in enumerate(images) if int(img["faces"]) == 0]
        detector = str(data.get("detector", ""))
        confidence = data.get("confidence")
    except (ValueError, KeyError, TypeError) as exc:
        raise ContractError.single("invalidDetections", f"'detections' is not the face detailer's output: {exc}",
                                   "ultralytics", "string") from None
    return [ApiError(WARNING_CODE, f"the face detailer ({detector}) found nothing scoring above confidence "
                     f"{confidence} in image {i} (seed {seed}); that image is returned as generated",
                     "ultralytics", task_uuid=task_uuid) for i, seed in empty]
