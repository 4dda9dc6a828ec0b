"""Names the face detailer shares with the compiler, the exporter and the node (pure)."""

from __future__ import annotations

NODE_CLASS = "ImageInferenceFaceDetailer"
DEFAULT_DETECTOR = "runware:35@1"
"""face_yolov8n, the hosted API's own face detector (API reference §6.6); a request has no detector field."""

SETTINGS = ("confidence", "maskPadding", "maskBlur", "inpaintSize", "steps", "CFGScale", "strength")
"""`ultralytics` fields that are widgets of the node (the prompts arrive as conditioning)."""

PROMPTS = (("positive", "positivePrompt", 0), ("negative", "negativePrompt", 1))
"""(node input, `ultralytics` field, output index of the Prompt node that encodes it)."""

DETECTOR_SUFFIXES = (".pt", ".onnx")

DOWNLOAD_HINT = {
    "face_yolov8n.pt": "https://huggingface.co/Bingsu/adetailer",
    "face_yolov8s.pt": "https://huggingface.co/Bingsu/adetailer",
    "hand_yolov8n.pt": "https://huggingface.co/Bingsu/adetailer",
    "person_yolov8n-seg.pt": "https://huggingface.co/Bingsu/adetailer",
    "person_yolov8s-seg.pt": "https://huggingface.co/Bingsu/adetailer",
}
"""Where the detector files of the built-in catalog entries are published (for the missing-file error)."""
