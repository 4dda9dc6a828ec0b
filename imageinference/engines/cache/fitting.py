"""Least-squares fit of TeaCache's rescale polynomial (pure: numpy only)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

DEGREE = 4


def fit(points: Sequence[tuple[float, float]], degree: int = DEGREE) -> tuple[float, ...]:
    """Least-squares polynomial y(x), highest power first; the degree drops when there are few distinct x."""
    xs = np.array([p[0] for p in points], dtype=np.float64)
    ys = np.array([p[1] for p in points], dtype=np.float64)
    finite = np.isfinite(xs) & np.isfinite(ys)
    xs, ys = xs[finite], ys[finite]
    if len(xs) < 2:
        raise ValueError("calibration needs at least two steps with a measurable change")
    degree = max(1, min(degree, len(np.unique(xs)) - 1))
    return tuple(float(c) for c in np.polyfit(xs, ys, degree))
