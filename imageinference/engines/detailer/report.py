"""What the detailer found, as the JSON its node outputs, and the response warnings made from it (pure).

The node's `detections` output is {"detector", "confidence", "images": [...]}, one entry per image in batch order:
{"seed", "faces", "boxes", "regionSeeds", "found", "skipped"}. `boxes` are the detailed regions as
[x0, y0, x1, y1, score] in image pixels, in the order they were detailed, `regionSeeds` the seed each was sampled
with; `found` counts the detections above confidence, `skipped` those left out: {"limit": beyond maxRegions,
"small"/"large": outside minRegionSize/maxRegionSize}. The Image Inference Output node turns the JSON into
response warnings: `nothingDetected` for an image with no region detailed, `tooManyRegions` for an image where
maxRegions left some out.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from ...contract.errors import ApiError, ContractError
from .geometry import Rect

WARNING_CODE = "nothingDetected"
LIMIT_WARNING_CODE = "tooManyRegions"


@dataclass
class ImageReport:
    seed: int
    boxes: list[tuple[Rect, float]] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)  # the seed of each detailed region
    found: int | None = None  # None: as many as were detailed
    skipped: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"seed": self.seed, "faces": len(self.boxes),
                "boxes": [[*rect.as_list(), round(score, 4)] for rect, score in self.boxes],
                "regionSeeds": list(self.seeds), "found": len(self.boxes) if self.found is None else self.found,
                "skipped": {"limit": self.skipped.get("limit", 0), "small": self.skipped.get("small", 0),
                            "large": self.skipped.get("large", 0)}}


def detections_json(detector: str, confidence: float, reports: list[ImageReport], max_regions: int | None = None) -> str:
    data: dict[str, Any] = {"detector": detector, "confidence": confidence}
    if max_regions is not None:
        data["maxRegions"] = max_regions
    data["images"] = [r.to_json() for r in reports]
    return json.dumps(data)


def detection_warnings(detections: str, task_uuid: str | None = None) -> list[ApiError]:
    """The response warnings of the detailer's `detections` output: an image in which it detailed nothing is
    returned as generated (`nothingDetected`); an image with more regions than maxRegions had only the largest
    detailed (`tooManyRegions`, naming how many were left out)."""
    if not detections.strip():
        return []
    try:
        data = json.loads(detections)
        images = data["images"]
        detector = str(data.get("detector", ""))
        confidence = data.get("confidence")
        limit = data.get("maxRegions")
        rows = [(i, int(img["seed"]), int(img["faces"]), int(img.get("found", img["faces"])),
                 int((img.get("skipped") or {}).get("limit", 0))) for i, img in enumerate(images)]
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ContractError.single("invalidDetections", f"'detections' is not the face detailer's output: {exc}",
                                   "ultralytics", "string") from None
    warnings: list[ApiError] = []
    for i, seed, faces, found, skipped in rows:
        if faces == 0:
            why = (f"found nothing scoring above confidence {confidence}" if found == 0 else
                   f"found {found} region(s) above confidence {confidence}, none within the region size limits")
            warnings.append(ApiError(WARNING_CODE, f"the face detailer ({detector}) {why} in image {i} (seed {seed}); "
                                     "that image is returned as generated", "ultralytics", task_uuid=task_uuid))
        if skipped > 0:
            warnings.append(ApiError(
                LIMIT_WARNING_CODE, f"the face detailer ({detector}) found {faces + skipped} regions in image {i} "
                f"(seed {seed}) and detailed the {faces} largest (at most {limit if limit is not None else faces} per "
                f"image); the other {skipped} are left as generated", "ultralytics", task_uuid=task_uuid))
    return warnings


def nothing_detected_warnings(detections: str, task_uuid: str | None = None) -> list[ApiError]:
    """Every warning of the detailer's output (the name the Output node imports; see detection_warnings)."""
    return detection_warnings(detections, task_uuid)
