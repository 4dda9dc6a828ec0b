"""The ONNX parts of the ID encoder stack through onnxruntime (adapter: onnxruntime, numpy, Pillow; no insightface).

- FaceDetector: a SCRFD export with 5 keypoints (see detect.py for the output layout). The image is letterboxed
  into a square canvas at its top-left (640 px unless the model fixes its input size), as RGB, (x - 127.5) / 128.
- FaceRecognizer: an ArcFace-style export taking aligned (N, 3, S, S) RGB faces, (x - 127.5) / 127.5, and giving
  one embedding per face (glintr100: S = 112, 512 values).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from .detect import DET_THRESHOLD, NMS_THRESHOLD, Face, decode, layout_for, letterbox_size, scaled, suppress

log = logging.getLogger(__name__)
DET_SIZE = 640


def session(path: str) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    available = ort.get_available_providers()
    providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
    try:
        import torch

        if not torch.cuda.is_available():
            providers = [p for p in providers if p != "CUDAExecutionProvider"]
    except ImportError:  # pragma: no cover - torch is always there inside ComfyUI
        pass
    return ort.InferenceSession(path, sess_options=options, providers=providers or None)


def _static(dim: Any) -> int | None:
    return dim if isinstance(dim, int) and dim > 0 else None


class FaceDetector:
    def __init__(self, path: str, threshold: float = DET_THRESHOLD, nms: float = NMS_THRESHOLD):
        self.session = session(path)
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.layout = layout_for(len(self.output_names))
        h, w = (_static(d) for d in inp.shape[2:4]) if len(inp.shape) == 4 else (None, None)
        if h is not None and w is not None and h != w:
            raise ValueError(f"the face detector's fixed input is {w}x{h}; a square input is needed")
        self.size = h or DET_SIZE
        self.threshold = threshold
        self.nms = nms

    def detect(self, rgb: NDArray[np.uint8]) -> list[Face]:
        """Faces in an (H, W, 3) uint8 RGB image, in its pixels, highest score first."""
        height, width = rgb.shape[:2]
        new_h, new_w, scale = letterbox_size(height, width, self.size)
        canvas = np.zeros((self.size, self.size, 3), dtype=np.uint8)
        canvas[:new_h, :new_w] = np.asarray(Image.fromarray(rgb).resize((new_w, new_h), Image.Resampling.BILINEAR))
        blob = ((canvas.astype(np.float32) - 127.5) / 128.0).transpose(2, 0, 1)[None]
        outputs = self.session.run(self.output_names, {self.input_name: np.ascontiguousarray(blob)})
        faces = suppress(decode(outputs, self.size, self.size, self.threshold), self.nms)
        return [scaled(f, scale) for f in faces]


class FaceRecognizer:
    def __init__(self, path: str, mean: float = 127.5, std: float = 127.5):
        self.session = session(path)
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        outputs = self.session.get_outputs()
        if len(outputs) != 1:
            raise ValueError(f"a face-recognition model has one output (the embedding); this one has {len(outputs)}")
        self.output_name = outputs[0].name
        size = _static(inp.shape[2]) if len(inp.shape) == 4 else None
        self.size = size or 112
        self.mean, self.std = mean, std

    def embed(self, face: NDArray[np.uint8]) -> NDArray[np.float32]:
        """The embedding of one aligned (S, S, 3) uint8 RGB face, as the model gives it (not normalised)."""
        if face.shape != (self.size, self.size, 3):
            raise ValueError(f"the recognizer takes aligned {self.size}x{self.size} faces, got {face.shape}")
        blob = ((face.astype(np.float32) - self.mean) / self.std).transpose(2, 0, 1)[None]
        out = self.session.run([self.output_name], {self.input_name: np.ascontiguousarray(blob)})[0]
        return np.asarray(out, dtype=np.float32).reshape(-1)
