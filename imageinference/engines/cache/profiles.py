"""Per-family constants of the step caches (pure): the API's 0-1 threshold mapping, TeaCache rescale polynomials
and threshold scale, DBCache block split, and where user calibrations live.

The API's values (`teaCacheDistance`, `fbCacheThreshold`, `dbCacheThreshold`, 0-1) map onto each criterion's
threshold through `api_threshold(value, scale)`:
    value <= 0.5:  scale x value                  (the lower half: unchanged from the linear mapping)
    value >  0.5:  scale / (4 x (1 - value))      (continuous, with a continuous slope, at 0.5)
    value == 1.0:  infinite: skip every step the policy allows (window, cacheMaxConsecutiveSteps, first and
                   last step), so 1.0 reaches the fewest model calls the request's cap permits on any model.
0.75 lands on `scale`, what 1.0 meant under the old linear mapping. Measured (benchmarks/step_caches.py: five tiny
FLUX/SD3-shaped models, random and trained, 28 steps): with a calibrated TeaCache scale, skipping starts at
0.125-0.2 and the run reaches the policy's floor at 0.8-0.85 (cap 5), 0.65-0.7 (cap 3), 0.25-0.35 (cap 1) on
every model, while the old 1.0 (now 0.75) stopped one call short on one of the five (7 model calls where cap 5
allows 6). FBCache/DBCache's raw criterion started skipping at 0.08-0.63 and reached the floor only at 0.63-1.0,
on two random models only between 0.83 and the old maximum 1.0: no finite value promises the floor on every model.

TeaCache: scale = the family's threshold scale, the polynomial turns the first block's input change into an
estimate of the output change (relative L1 change of the blocks' residual per step):
- FLUX with its published coefficients: 0.8, so the API's default 0.5 lands on 0.4, the setting TeaCache's
  authors recommend for FLUX (~2x), and 0.75 on 0.8, their fastest listed FLUX setting (~2.25x).
- a calibrated family (`imageinference calibrate-teacache`): 5 x the median estimated change of one step in the
  calibration runs, so 0.75 lets the accumulated change reach that of five typical steps and 0.1 half a step.
- families without published coefficients (SD3) use the identity polynomial (raw input change) and 0.8 until a
  calibration writes fitted ones.
FBCache / DBCache: scale 1 (the threshold is the relative L1 change of the always-run blocks' residual since the
last computed step, so values up to 0.5 mean what FBCache's usual thresholds (0.05-0.25) mean).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

TEACACHE_THRESHOLD_SCALE = 0.8
CALIBRATED_STEPS_AT_SCALE = 5
LINEAR_UP_TO = 0.5
IDENTITY: tuple[float, ...] = (1.0, 0.0)

# Highest power first. FLUX.1-dev: the coefficients TeaCache's authors fitted (TeaCache4FLUX).
PUBLISHED: dict[str, tuple[float, ...]] = {
    "flux": (4.98651651e+02, -2.83781631e+02, 5.58554382e+01, -3.82021401e+00, 2.64230861e-01),
}
FAMILIES = ("flux", "sd3")
CALIBRATION_ENV = "IMAGEINFERENCE_TEACACHE_CALIBRATION"


@dataclass(frozen=True)
class BlockSplit:
    """DBCache: the first `first` blocks always run (their residual is the indicator), the last `last` blocks
    always run (they correct the approximated hidden state); the blocks between are cached."""

    first: int
    last: int

    @property
    def label(self) -> str:
        return f"F{self.first}B{self.last}"


def dbcache_split(blocks: int) -> BlockSplit:
    """One always-run block per 12 at the front (at least one), and one at the back once the model has 8 or more
    blocks, always leaving at least one cached block."""
    first = max(1, blocks // 12)
    last = 1 if blocks >= 8 else 0
    while first + last >= blocks and last > 0:
        last -= 1
    return BlockSplit(min(first, max(blocks - 1, 0)), last)


@dataclass(frozen=True)
class TeaCacheProfile:
    coefficients: tuple[float, ...]
    threshold_scale: float
    source: str

    def threshold(self, distance: float) -> float:
        return api_threshold(distance, self.threshold_scale)


def api_threshold(value: float, scale: float) -> float:
    """The criterion's threshold for an API value in 0-1 (see the module docstring); infinite at 1.0."""
    if not 0.0 <= value <= 1.0:
        raise ValueError("cache thresholds must be within 0-1")
    if value <= LINEAR_UP_TO:
        return scale * value
    if value >= 1.0:
        return math.inf
    return scale * LINEAR_UP_TO ** 2 / (1.0 - value)


def api_value(threshold: float, scale: float) -> float:
    """The API value (0-1) whose criterion threshold is `threshold` (the inverse of api_threshold), e.g. to use a
    peer pack's setting: ComfyUI-TeaCache's rel_l1_thresh t on FLUX is teaCacheDistance api_value(t, 0.8) (0.4 ->
    0.5, 0.8 -> 0.75), Comfy-WaveSpeed's residual_diff_threshold t is fbCacheThreshold api_value(t, 1.0)."""
    if threshold < 0:
        raise ValueError("a threshold is not negative")
    if math.isinf(threshold):
        return 1.0
    if threshold <= scale * LINEAR_UP_TO:
        return threshold / scale
    return 1.0 - scale * LINEAR_UP_TO ** 2 / threshold


def calibration_path(user_dir: str | None = None) -> Path:
    env = os.environ.get(CALIBRATION_ENV)
    if env:
        return Path(env)
    base = Path(user_dir) if user_dir else Path.home() / ".config"
    return base / "imageinference" / "teacache_calibration.json"


def load_calibrations(path: Path) -> dict[str, TeaCacheProfile]:
    """{family: profile} from a calibration file; a missing file is no calibrations."""
    if not path.is_file():
        return {}
    raw = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: a calibration file is a JSON object of families")
    out = {}
    for family, entry in raw.items():
        coeffs = entry.get("coefficients") if isinstance(entry, dict) else None
        scale = entry.get("thresholdScale") if isinstance(entry, dict) else None
        if not (isinstance(coeffs, list) and coeffs and all(isinstance(c, (int, float)) for c in coeffs)):
            raise ValueError(f"{path}: coefficients of '{family}' must be a non-empty list of numbers")
        if not (isinstance(scale, (int, float)) and scale > 0):
            raise ValueError(f"{path}: thresholdScale of '{family}' must be a positive number")
        out[family] = TeaCacheProfile(tuple(float(c) for c in coeffs), float(scale), f"calibrated ({path})")
    return out


def save_calibration(path: Path, family: str, profile: TeaCacheProfile, info: dict[str, object]) -> None:
    """Add or replace one family's calibration, writing the file atomically."""
    raw = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    raw[family] = {"coefficients": list(profile.coefficients), "thresholdScale": profile.threshold_scale, **info}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(raw, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def teacache_profile(family: str, calibrations: dict[str, TeaCacheProfile]) -> TeaCacheProfile:
    """A user calibration wins over the published set; otherwise the identity polynomial."""
    if family in calibrations:
        return calibrations[family]
    if family in PUBLISHED:
        return TeaCacheProfile(PUBLISHED[family], TEACACHE_THRESHOLD_SCALE, "published")
    return TeaCacheProfile(IDENTITY, TEACACHE_THRESHOLD_SCALE, "identity (uncalibrated)")


def calibrated_scale(step_changes: list[float]) -> float:
    """CALIBRATED_STEPS_AT_SCALE x the median estimated change of one step."""
    ordered = sorted(c for c in step_changes if c > 0)
    if not ordered:
        raise ValueError("calibration saw no change between steps")
    mid = len(ordered) // 2
    median = ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2
    return CALIBRATED_STEPS_AT_SCALE * median


def polyval(coefficients: tuple[float, ...], x: float) -> float:
    y = 0.0
    for c in coefficients:
        y = y * x + c
    return y
