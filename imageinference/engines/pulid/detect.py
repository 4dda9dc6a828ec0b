"""SCRFD face-detector outputs -> faces (pure numpy).

The ONNX export of SCRFD (insightface's `scrfd_*_bnkps.onnx`, as in the antelopev2 pack) has, for each of its
feature strides (8, 16, 32 with 2 anchors per location; or 8..128 with 1 anchor), three outputs in this order: all
strides' scores, then all strides' box distances, then all strides' keypoint offsets. At stride s a feature map of
H/s x W/s locations (row-major, anchors repeated per location) has anchor centres (x*s, y*s); a box is
(cx - l*s, cy - t*s, cx + r*s, cy + b*s) and keypoint k is (cx + dx_k*s, cy + dy_k*s). Outputs may carry a
leading batch axis of 1.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

Array = NDArray[np.float32]
DET_THRESHOLD = 0.5
NMS_THRESHOLD = 0.4


@dataclass(frozen=True)
class Face:
    box: tuple[float, float, float, float]  # x1, y1, x2, y2
    score: float
    keypoints: NDArray[np.float64]  # (5, 2)

    @property
    def area(self) -> float:
        return max(0.0, self.box[2] - self.box[0]) * max(0.0, self.box[3] - self.box[1])


@dataclass(frozen=True)
class Layout:
    strides: tuple[int, ...]
    anchors: int


def layout_for(outputs: int) -> Layout:
    """The SCRFD layout with keypoints for a model with this many outputs; ValueError for any other count."""
    if outputs == 9:
        return Layout((8, 16, 32), 2)
    if outputs == 15:
        return Layout((8, 16, 32, 64, 128), 1)
    raise ValueError(f"a SCRFD face detector with 5 keypoints has 9 or 15 outputs (scores, boxes, keypoints per "
                     f"stride); this model has {outputs}")


def anchor_centres(height: int, width: int, stride: int, anchors: int) -> NDArray[np.float64]:
    ys, xs = np.mgrid[: height // stride, : width // stride]
    centres = np.stack([xs, ys], axis=-1).reshape(-1, 2).astype(np.float64) * stride
    return np.repeat(centres, anchors, axis=0)


def _rows(a: Array, width: int, what: str, expected: int) -> NDArray[np.float64]:
    arr = np.asarray(a, dtype=np.float64)
    if arr.ndim == 3 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim == 1 and width == 1:
        arr = arr[:, None]
    if arr.shape != (expected, width):
        raise ValueError(f"SCRFD {what} output has shape {tuple(np.shape(a))}; expected ({expected}, {width})")
    return arr


def decode(outputs: Sequence[Array], input_height: int, input_width: int,
           threshold: float = DET_THRESHOLD) -> list[Face]:
    """Every candidate with score >= threshold, in input-image pixels (before non-maximum suppression)."""
    layout = layout_for(len(outputs))
    n = len(layout.strides)
    faces: list[Face] = []
    for i, stride in enumerate(layout.strides):
        centres = anchor_centres(input_height, input_width, stride, layout.anchors)
        k = len(centres)
        scores = _rows(outputs[i], 1, f"stride-{stride} score", k)[:, 0]
        boxes = _rows(outputs[n + i], 4, f"stride-{stride} box", k) * stride
        kps = _rows(outputs[2 * n + i], 10, f"stride-{stride} keypoint", k) * stride
        for j in np.nonzero(scores >= threshold)[0]:
            cx, cy = centres[j]
            left, top, right, bottom = boxes[j]
            points = np.stack([cx + kps[j, 0::2], cy + kps[j, 1::2]], axis=-1)
            box = (float(cx - left), float(cy - top), float(cx + right), float(cy + bottom))
            faces.append(Face(box, float(scores[j]), points))
    return faces


def iou(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> float:
    """Intersection over union, with boxes as pixel spans (SCRFD's +1 convention)."""
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]) + 1)
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]) + 1)
    inter = w * h
    area_a = (a[2] - a[0] + 1) * (a[3] - a[1] + 1)
    area_b = (b[2] - b[0] + 1) * (b[3] - b[1] + 1)
    union = area_a + area_b - inter
    return inter / union if union > 0 else 0.0


def suppress(faces: Sequence[Face], threshold: float = NMS_THRESHOLD) -> list[Face]:
    """Greedy non-maximum suppression, highest score first."""
    kept: list[Face] = []
    for face in sorted(faces, key=lambda f: -f.score):
        if all(iou(face.box, k.box) <= threshold for k in kept):
            kept.append(face)
    return kept


def scaled(face: Face, factor: float) -> Face:
    """A face found in an image resized by `factor`, in the original image's pixels."""
    x1, y1, x2, y2 = face.box
    return Face((x1 / factor, y1 / factor, x2 / factor, y2 / factor), face.score, face.keypoints / factor)


def largest(faces: Sequence[Face]) -> Face | None:
    """The face with the largest box (PuLID uses the largest face of the image)."""
    return max(faces, key=lambda f: f.area) if faces else None


def letterbox_size(height: int, width: int, size: int) -> tuple[int, int, float]:
    """(new height, new width, scale) to fit an image into a size x size canvas at its top-left, keeping aspect."""
    if height <= 0 or width <= 0:
        raise ValueError("empty image")
    if height / width > 1:
        new_h = size
        new_w = max(1, int(new_h * width / height))
    else:
        new_w = size
        new_h = max(1, int(new_w * height / width))
    return new_h, new_w, new_h / height
