"""ultralytics, imported and called without leaving marks on the process (adapter: torch, OpenCV, PIL; no
ComfyUI). ultralytics replaces `PIL.Image.open` and sets OMP_NUM_THREADS=1 when imported, sets OpenCV's thread
count to 0, and sets torch's thread count to (cores - 1) on every CPU prediction; each is put back here."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

from ...contract.errors import ContractError

PARAMETER = "ultralytics"
INSTALL = "pip install 'ultralytics>=8.3.70'"


@contextmanager
def process_left_alone() -> Iterator[None]:
    """Undo what ultralytics changes for the whole process: its `PIL.Image.open` replacement (on import), the
    OMP_NUM_THREADS it sets (on import), torch's thread count (set to cores - 1 on every CPU predict) and OpenCV's
    (set to 0 on import)."""
    import cv2
    import PIL.Image

    original_open = PIL.Image.open
    threads = torch.get_num_threads()
    cv2_threads = cv2.getNumThreads()
    omp = os.environ.get("OMP_NUM_THREADS")
    try:
        yield
    finally:
        PIL.Image.open = original_open
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
        if cv2.getNumThreads() != cv2_threads:
            cv2.setNumThreads(cv2_threads)
        if omp is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = omp


def import_ultralytics() -> Any:
    """The ultralytics package, imported offline, with the process left as it was (see process_left_alone)."""
    os.environ.setdefault("YOLO_OFFLINE", "1")
    try:
        with process_left_alone():
            import ultralytics
    except ImportError as exc:
        raise ContractError.single(
            "unsupportedUltralytics", f"the face detailer needs the ultralytics package ({exc}); install it with "
            f"{INSTALL}", PARAMETER) from None
    return ultralytics
