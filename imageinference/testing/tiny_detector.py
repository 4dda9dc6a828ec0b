"""Tiny YOLO detectors whose answers are known in advance, for testing the face detailer (needs ultralytics).

Real ultralytics models (DetectionModel / SegmentationModel from ultralytics' own model yaml parser, saved with
`YOLO.save`, loaded by `YOLO(path)`), with hand-set weights instead of trained ones:
- the backbone is one 32x32 average pool, so at ultralytics' 640-pixel inference size every 32x32 cell of the
  letterboxed image is one anchor, and a cell's red channel mean v (0..1) is all the head sees;
- the class branch relays v (gain 10, through its SiLU convolutions) to a logit of about 10 v - 5: a bright cell
  (v = 1) scores 0.99, v = 0.7 about 0.85, v = 0.6 about 0.69, black about 0.007;
- the box branch ignores the image and predicts a distance of one cell on each side: a detection's box is its cell
  grown by half a cell on every side;
- the segmentation variant's prototype relays v, so a detection's segment is the bright cell itself (at the
  prototypes' resolution), smaller than its box.
On a 320 x 320 image a cell is 16 pixels: `face_image` draws bright 16-pixel squares on a dark textured background.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from .tiny_models import cache_root

CELL = 32  # anchor cell in the detector's 640-pixel inference space
FOLDER = "ultralytics"
DETECTORS = {"bbox": ("bbox", "tiny_face_cells_d1.pt"), "segm": ("segm", "tiny_face_cells_d1-seg.pt")}


def detector_path(kind: str, root: Path | None = None) -> Path:
    sub, name = DETECTORS[kind]
    return (root or cache_root()) / FOLDER / sub / name


def _identity_bn(conv: Any, bias: float = 0.0) -> None:
    bn = conv.bn
    bn.weight.fill_(1.0)
    bn.bias.fill_(bias)
    bn.running_mean.zero_()
    bn.running_var.fill_(1.0 - bn.eps)  # (x - 0) / sqrt(var + eps) == x


def _relay(convs: list[Any], first_gain: float) -> None:
    """Each ultralytics Conv passes channel 0 to channel 0 (centre tap), the first with a gain; the rest is 0."""
    for i, conv in enumerate(convs):
        w = conv.conv.weight
        w.zero_()
        k = w.shape[-1] // 2
        w[0, 0, k, k] = first_gain if i == 0 else 1.0
        _identity_bn(conv)


def _silent(convs: list[Any]) -> None:
    for conv in convs:
        conv.conv.weight.zero_()
        _identity_bn(conv)


def build_detector(dest: Path, kind: str) -> None:
    """Write the tiny detector `kind` ("bbox" or "segm") to dest."""
    import torch
    import yaml

    from ..engines.detailer.ultralytics_env import import_ultralytics, process_left_alone

    ultralytics = import_ultralytics()
    head = ["Detect", ["nc"]] if kind == "bbox" else ["Segment", ["nc", 32, 16]]
    cfg = {"nc": 1, "backbone": [[-1, 1, "nn.AvgPool2d", [CELL, CELL]]], "head": [[[0], 1, *head]]}
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, cfg_path = tempfile.mkstemp(suffix=".yaml", dir=dest.parent)
    with os.fdopen(fd, "w") as fh:
        yaml.safe_dump(cfg, fh)
    try:
        with process_left_alone():
            model = ultralytics.YOLO(cfg_path)
    finally:
        os.unlink(cfg_path)
    net: Any = model.model
    det = net.model[-1]
    with torch.no_grad():
        for seq in det.cv3:  # class logit = 1 * relay(v) - 5
            _relay(list(seq[:-1]), 10.0)
            seq[-1].weight.zero_()
            seq[-1].weight[0, 0, 0, 0] = 1.0
            seq[-1].bias.fill_(-5.0)
        for seq in det.cv2:  # every side: distance bin 1 (one cell)
            _silent(list(seq[:-1]))
            seq[-1].weight.zero_()
            seq[-1].bias.zero_()
            for side in range(4):
                seq[-1].bias[side * det.reg_max + 1] = 30.0
        if kind == "segm":
            for seq in det.cv4:  # mask coefficients: 40 on prototype 0, 0 elsewhere
                _silent(list(seq[:-1]))
                seq[-1].weight.zero_()
                seq[-1].bias.zero_()
                seq[-1].bias[0] = 40.0
            proto = det.proto  # prototype 0 = SiLU(10 v - 5): positive on bright cells only
            _relay([proto.cv1, proto.cv2, proto.cv3], 10.0)
            proto.cv3.bn.bias[0] = -5.0
            proto.upsample.weight.zero_()
            proto.upsample.weight[0, 0] = 1.0
            proto.upsample.bias.zero_()
    tmp = dest.with_suffix(".tmp.pt")
    with process_left_alone():
        model.save(str(tmp))
    os.replace(tmp, dest)


def ensure_tiny_detectors(root: Path | None = None) -> Path:
    """Build the tiny detectors not cached yet; return the models root holding ultralytics/bbox and /segm."""
    root = root or cache_root()
    for kind in DETECTORS:
        path = detector_path(kind, root)
        if not path.exists():
            build_detector(path, kind)
    return root


def cell_size(image_size: int) -> int:
    """A detector cell in pixels of a square image of this size (16 for 320)."""
    return image_size * CELL // 640


def face_image(size: int = 320, faces: tuple[tuple[int, int, float], ...] = ((4, 6, 1.0),), seed: int = 0) -> Any:
    """A (1, size, size, 3) image: faces (column, row, level) as cell-sized squares of that level on a dark
    textured background (values 0..0.2, which scores below 0.02)."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    image = torch.rand((1, size, size, 3), generator=gen) * 0.2
    c = cell_size(size)
    for col, row, level in faces:
        image[:, row * c:(row + 1) * c, col * c:(col + 1) * c, :] = level
    return image


def face_box(size: int, col: int, row: int) -> tuple[int, int, int, int]:
    """The box the detector reports for the face in cell (col, row): the cell grown by half a cell each side."""
    c = cell_size(size)
    return col * c - c // 2, row * c - c // 2, (col + 1) * c + c // 2, (row + 1) * c + c // 2
