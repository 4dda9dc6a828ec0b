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

A third, `bbox_frac`, predicts fractional distances (left/top 33/32 of a cell, right/bottom 135/128), so its boxes
have fractional edges: x0 = 16 c - 8.5, x1 = 16 c + 24.875 on a 320-pixel image. `bbox_wide`'s boxes are 3 cells
wide and 2 high (48 x 32 pixels on a 320-pixel image). Those are the boxes on which Impact
Pack's integer rounding of a box (int() of each edge, rectangle inclusive of its far edge) and ours
([floor(x0), ceil(x1))) cover the same pixels, and its crop of 3 x the box coincides with ours (see
tests/server/test_face_detailer_vs_impact.py).

`build_published_layout` writes a face detector the way ADetailer's face_yolov8n.pt was published (see there).
"""

from __future__ import annotations

import functools
import math
import os
import tempfile
from pathlib import Path
from typing import Any

from .tiny_models import build_once, cache_root

CELL = 32  # anchor cell in the detector's 640-pixel inference space
FOLDER = "ultralytics"
DETECTORS = {"bbox": ("bbox", "tiny_face_cells_d1.pt"), "segm": ("segm", "tiny_face_cells_d1-seg.pt"),
             "bbox_frac": ("bbox", "tiny_face_cells_frac.pt"), "bbox_wide": ("bbox", "tiny_face_cells_wide.pt")}
FRACTIONAL_DISTANCES = (33 / 32, 33 / 32, 135 / 128, 135 / 128)  # left, top, right, bottom, in cells
WIDE_DISTANCES = (1.5, 1.0, 1.5, 1.0)  # boxes 3 cells wide, 2 high


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
    head = ["Segment", ["nc", 32, 16]] if kind == "segm" else ["Detect", ["nc"]]
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
        for seq in det.cv2:  # every side: distance bin 1 (one cell), or a mix of bins 1 and 2 (DFL's expectation)
            _silent(list(seq[:-1]))
            seq[-1].weight.zero_()
            seq[-1].bias.zero_()
            distances = {"bbox_frac": FRACTIONAL_DISTANCES, "bbox_wide": WIDE_DISTANCES}.get(kind, (1.0,) * 4)
            for side, distance in enumerate(distances):
                extra = distance - 1.0  # in [0, 1): bins 1 and 2 weighted 1 - extra and extra
                seq[-1].bias[side * det.reg_max + 1] = 30.0 + math.log(1.0 - extra)
                if extra > 0:
                    seq[-1].bias[side * det.reg_max + 2] = 30.0 + math.log(extra)
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
    tmp = dest.with_suffix(f".{os.getpid()}.tmp.pt")  # another test worker may be writing it too
    with process_left_alone():
        model.save(str(tmp))
    os.replace(tmp, dest)


def ensure_tiny_detectors(root: Path | None = None) -> Path:
    """Build the tiny detectors not cached yet; return the models root holding ultralytics/bbox and /segm."""
    root = root or cache_root()
    for kind in DETECTORS:
        path = detector_path(kind, root)
        build_once(path, functools.partial(build_detector, path, kind))
    return root


def cell_size(image_size: int) -> int:
    """A detector cell in whole pixels of a square image of this size (16 for 320)."""
    return image_size * CELL // 640


def cell_span(image_size: int, index: int) -> tuple[int, int]:
    """The pixels [start, end) of detector cell `index` along one side of a square image (exact for any size: a
    cell is image_size / 20 pixels, 51.2 on a 1024-pixel image)."""
    return round(index * CELL * image_size / 640), round((index + 1) * CELL * image_size / 640)


def face_image(size: int = 320, faces: tuple[tuple[int, int, float], ...] = ((4, 6, 1.0),), seed: int = 0,
               background: float | None = None) -> Any:
    """A (1, size, size, 3) image: faces (column, row, level) filling their detector cells with that level, on a
    dark textured background (values 0..0.2, which scores below 0.02), or a flat one of value `background`."""
    import torch

    if background is None:
        gen = torch.Generator().manual_seed(seed)
        image = torch.rand((1, size, size, 3), generator=gen) * 0.2
    else:
        image = torch.full((1, size, size, 3), float(background))
    for col, row, level in faces:
        (x0, x1), (y0, y1) = cell_span(size, col), cell_span(size, row)
        image[:, y0:y1, x0:x1, :] = level
    return image


def face_box(size: int, col: int, row: int) -> tuple[int, int, int, int]:
    """The pixels the detector's box for the face in cell (col, row) covers, [x0, x1) x [y0, y1): the cell grown by
    half a cell each side, rounded outwards (exact integers on a 320-pixel image)."""
    c = CELL * size / 640
    return (math.floor((col - 0.5) * c), math.floor((row - 0.5) * c), math.ceil((col + 1.5) * c),
            math.ceil((row + 1.5) * c))


def fractional_box(size: int, col: int, row: int) -> tuple[float, float, float, float]:
    """The box the `bbox_frac` detector reports for the face in cell (col, row) of a square image."""
    scale = size / 640
    left, top, right, bottom = FRACTIONAL_DISTANCES
    cx, cy = (col + 0.5) * CELL, (row + 0.5) * CELL
    return ((cx - left * CELL) * scale, (cy - top * CELL) * scale, (cx + right * CELL) * scale,
            (cy + bottom * CELL) * scale)


# ---------------------------------------------------------------- the published face_yolov8n.pt's layout

PUBLISHED_VERSION = "8.0.75"
LEGACY_MODULES = "ultralytics.nn.modules"  # before 8.0.9x the model blocks were one module, pickled under this name
LEGACY_UTILS = "ultralytics.yolo.utils"  # and ultralytics' utils lived here (IterableSimpleNamespace)


def build_published_layout(dest: Path) -> None:
    """A YOLOv8n face detector (1 class, "face"; random weights) written the way ADetailer's face_yolov8n.pt was
    published in April 2023 (ultralytics 8.0.x, its trainer's last save after `strip_optimizer`):

    - the checkpoint dict {"epoch": -1, "best_fitness": None, "model": <DetectionModel, half precision>,
      "ema": None, "updates": None, "optimizer": None, "train_args": {...}, "date", "version"};
    - the model's `args` attribute is the trainer's IterableSimpleNamespace, pickled under that release's module
      `ultralytics.yolo.utils`, and its blocks (Conv, C2f, SPPF, Detect, DFL, ...) under the single module
      `ultralytics.nn.modules` of that release; torch's own layers under their torch.nn names.

    Built with this ultralytics' own classes from its bundled yolov8n.yaml; only the pickled module names are those
    of the 8.0 releases (this ultralytics still accepts them). The published file itself is not available offline;
    what it holds beyond these names (each block's attribute set as of 8.0.x) is not reproduced."""
    import sys
    import types
    from datetime import datetime

    import torch

    from ..engines.detailer.ultralytics_env import import_ultralytics, process_left_alone

    import_ultralytics()  # offline, process left alone
    import ultralytics.nn.modules as blocks
    import ultralytics.utils as ul_utils
    from ultralytics.nn.tasks import DetectionModel
    from ultralytics.utils import DEFAULT_CFG_DICT, IterableSimpleNamespace

    with process_left_alone():
        net = DetectionModel("yolov8n.yaml", nc=1, verbose=False)
    net.names = {0: "face"}
    train_args = {**DEFAULT_CFG_DICT, "model": "yolov8n.pt", "data": "face.yaml", "epochs": 100, "imgsz": 640,
                  "name": "face_yolov8n", "save_dir": "runs/detect/face_yolov8n"}
    net.args = IterableSimpleNamespace(**train_args)  # type: ignore[assignment]
    net.half()
    ckpt = {"epoch": -1, "best_fitness": None, "model": net, "ema": None, "updates": None, "optimizer": None,
            "train_args": {k: v for k, v in train_args.items() if k in DEFAULT_CFG_DICT},
            "date": datetime(2023, 4, 20).isoformat(), "version": PUBLISHED_VERSION}
    classes = {type(m) for m in net.modules() if type(m).__module__.startswith("ultralytics.nn.modules.")}
    renamed = {cls: cls.__module__ for cls in classes}
    legacy = types.ModuleType("ultralytics.yolo")
    legacy.utils = ul_utils  # type: ignore[attr-defined]
    saved_modules: dict[str, Any] = {name: sys.modules.get(name) for name in ("ultralytics.yolo", LEGACY_UTILS)}
    namespace_module = IterableSimpleNamespace.__module__
    try:
        for cls in classes:
            assert getattr(blocks, cls.__name__) is cls  # importable under the flat name, as in 8.0.x
            cls.__module__ = LEGACY_MODULES
        sys.modules["ultralytics.yolo"], sys.modules[LEGACY_UTILS] = legacy, ul_utils
        IterableSimpleNamespace.__module__ = LEGACY_UTILS
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_suffix(f".{os.getpid()}.tmp.pt")  # another test worker may be writing it too
        torch.save(ckpt, tmp)
        os.replace(tmp, dest)
    finally:
        IterableSimpleNamespace.__module__ = namespace_module
        for cls, module in renamed.items():
            cls.__module__ = module
        for name, module in saved_modules.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module
