"""Names the face detailer shares with the compiler, the exporter and the node (pure)."""

from __future__ import annotations

NODE_CLASS = "ImageInferenceFaceDetailer"
DEFAULT_DETECTOR = "runware:35@1"
"""face_yolov8n, the hosted API's own face detector (API reference §6.6); a request has no detector field."""

SETTINGS = ("confidence", "maskPadding", "maskBlur", "inpaintSize", "steps", "CFGScale", "strength")
"""`ultralytics` fields that are widgets of the node (the prompts arrive as conditioning)."""

PROMPTS = (("positive", "positivePrompt", 0), ("negative", "negativePrompt", 1))
"""(node input, `ultralytics` field, output index of the Prompt node that encodes it)."""

REGION_OPTIONS: dict[str, tuple[int | float | bool, float, float]] = {
    "contextPadding": (32, 0, 1024),
    "maxUpscale": (4.0, 1.0, 16.0),
    "maxRegions": (10, 1, 1000),
    "minRegionSize": (0, 0, 8192),
    "maxRegionSize": (0, 0, 8192),
    "seedPerRegion": (True, 0, 1),
}
"""Node inputs a request cannot set, as (default, min, max); their defaults are what every request gets:
- contextPadding: pixels of the image around the face's mask (the region grown by maskPadding + maskBlur) that the
  crop also holds, so the model sees what it is detailing (ADetailer's inpaint-only-masked padding, 32).
- maxUpscale: the crop grows (more context, where the image allows) until it is scaled at most this much to reach
  inpaintSize; where the image is too small for that, the crop is sampled at this scale instead of inpaintSize.
- maxRegions: at most this many regions per image, the largest (box area) first; the others are left as generated
  and the response says how many.
- minRegionSize / maxRegionSize: regions whose box is at most minRegionSize pixels wide or high, or more than
  maxRegionSize pixels wide or high, are ignored (0: no limit). Impact Pack's drop_size is minRegionSize.
- seedPerRegion: region i of an image is sampled with the image's seed + i (both peers do); false gives every
  region the image's seed.
"""

DETECTOR_SUFFIXES = (".pt", ".onnx")

DOWNLOAD_HINT = {
    "face_yolov8n.pt": "https://huggingface.co/Bingsu/adetailer",
    "face_yolov8s.pt": "https://huggingface.co/Bingsu/adetailer",
    "hand_yolov8n.pt": "https://huggingface.co/Bingsu/adetailer",
    "person_yolov8n-seg.pt": "https://huggingface.co/Bingsu/adetailer",
    "person_yolov8s-seg.pt": "https://huggingface.co/Bingsu/adetailer",
}
"""Where the detector files of the built-in catalog entries are published (for the missing-file error)."""
