"""The face detailer's `detections` into the Image Inference Output node (see face_detailer.OUTPUT_FEATURE)."""

from .face_detailer import OUTPUT_FEATURE as FEATURE

__all__ = ["FEATURE"]
