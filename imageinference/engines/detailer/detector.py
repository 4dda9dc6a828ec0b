"""Detector files and ultralytics YOLO detection (adapter: ultralytics, torch and ComfyUI's model folders).

Safety rules (documented in the README):
- A detector is a file in ComfyUI's `models/ultralytics/` folders (`bbox/`, `segm/`), named by a catalog AIR or by
  its path relative to those folders. Never a URL, never an absolute path, never `..`: YOLO `.pt` files are Python
  pickles, so only files the user put in the model folders are ever loaded.
- A `.pt` file is read once, with ultralytics' restricted loading (`torch_safe_load(..., safe_only=True)`: torch's
  `weights_only` unpickler and ultralytics' list of known model classes); a file that references anything else is
  refused unless IMAGEINFERENCE_TRUST_DETECTORS=1 (then it is read once as a plain pickle). Where the installed
  ultralytics (or torch < 2.5) has no such loading, every `.pt` detector is refused unless
  IMAGEINFERENCE_TRUST_DETECTORS=1. The YOLO model is built from what that one read returned; the file is never
  read again.
- ultralytics runs offline (YOLO_OFFLINE=1 unless set otherwise), so it neither downloads nor reports usage, and
  what it changes for the whole process (PIL.Image.open, torch's and OpenCV's thread counts, OMP_NUM_THREADS) is
  put back after every call into it.
- `.onnx` detectors run through ultralytics' ONNX backend (it needs `onnxruntime`).
"""

from __future__ import annotations

import inspect
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

import folder_paths
import torch

from ...contract.air import AIRError, canonical_air
from ...contract.errors import ContractError
from ..models.catalog import Catalog, CatalogError
from .fields import DETECTOR_SUFFIXES, DOWNLOAD_HINT
from .geometry import Box, Detection
from .ultralytics_env import PARAMETER, import_ultralytics, process_left_alone

log = logging.getLogger(__name__)
FOLDER = "ultralytics"


# ---------------------------------------------------------------- files


def detector_folders() -> list[str]:
    """ComfyUI's `ultralytics` model folders (registered ones, else <models>/ultralytics)."""
    registered = folder_paths.folder_names_and_paths.get(FOLDER)
    if registered and registered[0]:
        return list(registered[0])
    return [os.path.join(folder_paths.models_dir, FOLDER)]


def detector_files() -> list[str]:
    """Detector files found in the ultralytics folders, as paths relative to them (e.g. `bbox/face_yolov8n.pt`)."""
    found: set[str] = set()
    for base in detector_folders():
        if not os.path.isdir(base):
            continue
        for root, _dirs, files in os.walk(base, followlinks=True):
            for name in files:
                if name.lower().endswith(DETECTOR_SUFFIXES):
                    found.add(PurePosixPath(os.path.relpath(os.path.join(root, name), base).replace(os.sep, "/"))
                              .as_posix())
    return sorted(found)


def _inside(name: str) -> str | None:
    """`name` as a path inside the model folders, or None when it could leave them (or is a URL)."""
    if not name or "\\" in name or "\x00" in name or "://" in name:
        return None
    p = PurePosixPath(name)
    if p.is_absolute() or any(part in ("", ".", "..") for part in p.parts):
        return None
    return p.as_posix()


@dataclass(frozen=True)
class DetectorFile:
    label: str  # what the node was given: an AIR or a file name
    path: str  # absolute path of the file found
    task: str  # "detect" or "segment"


def _missing(label: str, name: str) -> ContractError:
    base = PurePosixPath(name).name
    hint = DOWNLOAD_HINT.get(base)
    where = f"; it is published at {hint}" if hint else ""
    return ContractError.single(
        "missingModelFile", f"the detector {label} needs the file '{name}' in ComfyUI's ultralytics model folder "
        f"({', '.join(detector_folders())}){where}. Put '{base}' there as '{name}' (bbox detectors in bbox/, "
        "segmentation detectors in segm/).", PARAMETER, "string")


def _task_of(name: str) -> str:
    lowered = name.lower()
    return "segment" if lowered.startswith("segm/") or "-seg" in PurePosixPath(lowered).name else "detect"


def resolve_detector(value: str, catalog: Catalog | None = None) -> DetectorFile:
    """The file a detector choice names: a catalog AIR (kind `detector`) or a path inside the ultralytics folders."""
    text = value.strip()
    name: str | None
    try:
        air = canonical_air(text)
    except AIRError:
        air = None
    if air is not None:
        try:
            entry = (catalog or Catalog.load()).require(air, PARAMETER, ("detector",))
        except CatalogError as exc:
            raise ContractError.single("invalidCatalog", str(exc), PARAMETER) from None
        folder, _, name = entry.files["model"].partition("/")
        if folder != FOLDER:
            raise ContractError.single("invalidModelKind", f"{air}: a detector's file lives in the '{FOLDER}' model "
                                       f"folder, not '{folder}'", PARAMETER, "string")
    else:
        name = _inside(text)
        if name is None:
            raise ContractError.single(
                "invalidUltralytics", f"detector {text!r} is neither a catalog AIR nor a file inside the ultralytics "
                "model folders (URLs, absolute paths and '..' are refused: .pt detectors are pickles)", PARAMETER,
                "string")
    if not name.lower().endswith(DETECTOR_SUFFIXES):
        raise ContractError.single("invalidUltralytics", f"detector file '{name}' is not a YOLO .pt or .onnx file",
                                   PARAMETER, "string")
    for base in detector_folders():
        candidate = os.path.join(base, *PurePosixPath(name).parts)
        if os.path.isfile(candidate):
            return DetectorFile(air or name, candidate, _task_of(name))
    raise _missing(air or name, name)


# ---------------------------------------------------------------- loading and detection


def _read_checkpoint(ultralytics_pkg: Any, file: DetectorFile) -> dict[str, Any]:
    """A .pt detector read once: with ultralytics' restricted unpickler, or as a plain pickle on the user's word."""
    from ultralytics.nn import tasks

    trusted = os.environ.get("IMAGEINFERENCE_TRUST_DETECTORS") == "1"
    # Restricted loading means torch's weights-only loader behind ultralytics' allow-list (`_SafeLoad`): earlier
    # releases' safe_only swaps unknown classes instead of refusing them, and on torch < 2.5 safe_only silently
    # loads the plain pickle. Without it a .pt detector loads only on the user's word.
    restricted = getattr(tasks, "_SafeLoad", None)
    if not trusted and ("safe_only" not in inspect.signature(tasks.torch_safe_load).parameters or not getattr(
            restricted, "SUPPORTED", False)):
        raise ContractError.single(
            "invalidUltralytics", f"detector {file.label} ({file.path}) is a pickle, and ultralytics "
            f"{ultralytics_pkg.__version__} with torch {torch.__version__} cannot load it restrictedly: upgrade "
            "ultralytics (pip install -U ultralytics; 8.4.190 is tested) on torch 2.5 or later, use an .onnx "
            "detector, or, if you trust this file, set IMAGEINFERENCE_TRUST_DETECTORS=1 to load it as a plain "
            "pickle.", PARAMETER, "string")
    try:
        with process_left_alone():
            ckpt, _ = tasks.torch_safe_load(file.path, safe_only=True) if not trusted else tasks.torch_safe_load(
                file.path)
    except Exception as exc:
        raise ContractError.single(
            "invalidUltralytics", f"detector {file.label} ({file.path}) is not an ultralytics YOLO checkpoint that "
            f"loads safely: {str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__}. If you trust this "
            "file, set IMAGEINFERENCE_TRUST_DETECTORS=1 to load it as a plain pickle.", PARAMETER, "string") from None
    model = (ckpt.get("ema") or ckpt.get("model")) if isinstance(ckpt, dict) else None
    if not isinstance(model, torch.nn.Module):
        raise ContractError.single("invalidUltralytics", f"detector {file.label} ({file.path}) holds no YOLO model",
                                   PARAMETER, "string")
    return ckpt


_ALREADY_READ = threading.Lock()


def _yolo_from_checkpoint(ultralytics_pkg: Any, file: DetectorFile, ckpt: dict[str, Any]) -> Any:
    """ultralytics' own `YOLO(path)` set-up, handed the checkpoint that was read and checked instead of reading the
    file a second time (which would be a plain pickle load of whatever the file holds by then).

    YOLO(path) reads a .pt file through `ultralytics.nn.tasks.torch_safe_load`; for the length of the call that name
    answers with the checkpoint already in memory, and refuses any other file. The model YOLO ends up with must be
    the checkpoint's own object, or the detector is refused."""
    from ultralytics.nn import tasks

    expected = ckpt.get("ema") or ckpt.get("model")
    wanted = os.path.realpath(file.path)

    def already_read(weight: Any, *args: Any, **kwargs: Any) -> tuple[dict[str, Any], str]:
        if os.path.realpath(str(weight)) != wanted:
            raise RuntimeError(f"unexpected checkpoint read of {weight} while setting up {file.path}")
        return ckpt, str(weight)

    with _ALREADY_READ:
        original = tasks.torch_safe_load
        tasks.torch_safe_load = already_read
        try:
            with process_left_alone():
                yolo = ultralytics_pkg.YOLO(file.path)
        finally:
            tasks.torch_safe_load = original
    if getattr(yolo, "model", None) is not expected:
        raise ContractError.single("invalidUltralytics", f"detector {file.label}: this ultralytics "
                                   f"({ultralytics_pkg.__version__}) did not build the model from the checkpoint it "
                                   "was handed; the file is not loaded a second time", PARAMETER, "string")
    return yolo


def load_detector(file: DetectorFile) -> Any:
    """An ultralytics YOLO object for a detection or segmentation model; ContractError for anything else. A .pt file
    is read exactly once (see _read_checkpoint and _yolo_from_checkpoint)."""
    ultralytics_pkg = import_ultralytics()
    try:
        if file.path.lower().endswith(".pt"):
            model = _yolo_from_checkpoint(ultralytics_pkg, file, _read_checkpoint(ultralytics_pkg, file))
        else:
            with process_left_alone():
                model = ultralytics_pkg.YOLO(file.path, task=file.task)
    except ContractError:
        raise
    except Exception as exc:
        raise ContractError.single("invalidUltralytics", f"detector {file.label} ({file.path}) is not an ultralytics "
                                   f"YOLO model: {str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__}",
                                   PARAMETER, "string") from None
    if model.task not in ("detect", "segment"):
        raise ContractError.single("invalidUltralytics", f"detector {file.label} is a YOLO '{model.task}' model; the "
                                   "face detailer needs a detection (bbox) or segmentation (-seg) model", PARAMETER,
                                   "string")
    return model


def to_detector_image(image: torch.Tensor) -> Any:
    """(H, W, 3) float RGB in [0, 1] -> the uint8 BGR array ultralytics reads."""
    import numpy as np

    rgb = (image[..., :3].float().clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
    return np.ascontiguousarray(rgb[..., ::-1])


def detect(model: Any, image: torch.Tensor, confidence: float,
           device: torch.device | str = "cpu") -> tuple[list[Detection], torch.Tensor | None]:
    """Boxes (image pixels) and, for segmentation models, per-detection masks (N, H, W) at the image's size."""
    dev = str(device)
    if dev.startswith("cuda"):
        dev = dev.split(":", 1)[1] if ":" in dev else "0"
    elif dev != "mps":
        dev = "cpu"  # ultralytics knows cpu, cuda and mps only
    with process_left_alone():
        result = model.predict(to_detector_image(image), conf=confidence, verbose=False, retina_masks=True,
                               device=dev, save=False)[0]
    boxes = result.boxes
    detections = [Detection(Box(*(float(v) for v in xyxy)), float(score), i)
                  for i, (xyxy, score) in enumerate(zip(boxes.xyxy.tolist(), boxes.conf.tolist(), strict=True))]
    masks = None
    if result.masks is not None:
        masks = (result.masks.data.float() > 0.5).float().cpu()
        h, w = image.shape[:2]
        if tuple(masks.shape[-2:]) != (h, w):  # retina masks are the image's size; guard other versions
            masks = (torch.nn.functional.interpolate(masks[None], size=(h, w), mode="bilinear")[0] > 0.5).float()
    return detections, masks
