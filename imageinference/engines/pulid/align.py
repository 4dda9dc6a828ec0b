"""Face alignment math (pure numpy): 5-point similarity transforms onto the templates the encoders were trained on.

Points are (x, y) pixel coordinates with pixel centres at integers (the convention of OpenCV's warpAffine, which
the published encoders were trained with). A transform is a 2x3 matrix M mapping source points to template points:
[x', y'] = M @ [x, y, 1].

Templates (published constants, in the order left eye, right eye, nose tip, left mouth corner, right mouth corner):
- ARCFACE_112: the 112x112 crop of ArcFace-style recognition models (insightface's `arcface_dst`).
- FFHQ_512: the 512x512 face crop of FFHQ-aligned restoration tools (facexlib's template for face_size 512), the
  crop PuLID feeds its vision tower.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

Points = NDArray[np.float64]
Matrix = NDArray[np.float64]

ARCFACE_112: Points = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                                [41.5493, 92.3655], [70.7299, 92.2041]], dtype=np.float64)
FFHQ_512: Points = np.array([[192.98138, 239.94708], [318.90277, 240.1936], [256.63416, 314.01935],
                             [201.26117, 371.41043], [313.08905, 371.15118]], dtype=np.float64)


def similarity_transform(src: Points, dst: Points) -> Matrix:
    """The least-squares similarity (rotation, uniform scale, translation; no reflection) taking `src` onto `dst`
    (Umeyama's closed form). Both are (N, 2) with N >= 2 distinct points."""
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 2 or src.shape[0] < 2:
        raise ValueError(f"need two (N, 2) point sets with N >= 2; got {src.shape} and {dst.shape}")
    mu_s, mu_d = src.mean(axis=0), dst.mean(axis=0)
    s, d = src - mu_s, dst - mu_d
    var_s = float((s ** 2).sum()) / len(src)
    if var_s <= 0:
        raise ValueError("the source points coincide")
    cov = d.T @ s / len(src)
    u, sv, vt = np.linalg.svd(cov)
    sign = np.eye(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[1, 1] = -1.0
    rot = u @ sign @ vt
    scale = float(np.trace(np.diag(sv) @ sign)) / var_s
    out: Matrix = np.zeros((2, 3), dtype=np.float64)
    out[:, :2] = scale * rot
    out[:, 2] = mu_d - scale * rot @ mu_s
    return out


def template(name: str, size: int) -> Points:
    """A template scaled to a square crop of `size` pixels (ARCFACE_112 scales by size / 112, FFHQ_512 by /512)."""
    if name == "arcface":
        return ARCFACE_112 * (size / 112.0)
    if name == "ffhq":
        return FFHQ_512 * (size / 512.0)
    raise ValueError(f"unknown face template {name!r}")


def invert(m: Matrix) -> Matrix:
    """The inverse of a 2x3 affine transform."""
    full = np.vstack([np.asarray(m, dtype=np.float64), [0.0, 0.0, 1.0]])
    inv: Matrix = np.linalg.inv(full)[:2]
    return inv


def apply(m: Matrix, points: Points) -> Points:
    pts = np.asarray(points, dtype=np.float64)
    out: Points = pts @ m[:, :2].T + m[:, 2]
    return out
