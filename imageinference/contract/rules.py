"""Rules that span fields: step windows, seed-image needs, outpaint, transparency, per-model ranges, features
that a model's architecture does not offer. They read the canonical dict defensively (wrong types are
reported by the field validation, not here), so every problem of a request is reported in one pass.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from .architectures import IP_ADAPTER_BASE, IP_ADAPTER_FITS, REDUX, Profile
from .errors import ApiError, code_for
from .errors import FieldPath as Path


@dataclass(frozen=True)
class Issue:
    code: str
    message: str
    path: Path
    type: str = ""
    allowed: tuple[Any, ...] | None = None


def _int(v: Any) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def window_issues(obj: dict[str, Any], base: Path, steps: int | None, start: str, end: str | None) -> Iterator[Issue]:
    """startX / startXPercentage and endX / endXPercentage: exclusive pairs, start < end <= steps."""
    pct_start, pct_end = f"{start}Percentage", f"{end}Percentage" if end else None
    for a, b in ((start, pct_start), (end, pct_end)):
        if a and b and obj.get(a) is not None and obj.get(b) is not None:
            yield Issue(code_for("conflict", b), f"'{a}' and '{b}' are alternatives; give one of them", (*base, b))
    # a window is given in steps or in percentages: mixed, the two ends would not be compared at all
    if end and pct_end:
        for a, b in ((start, pct_end), (pct_start, end)):
            if obj.get(a) is not None and obj.get(b) is not None:
                yield Issue(code_for("conflict", b), f"'{a}' and '{b}' mix the step and percentage forms of one "
                            f"window; give both ends in steps or both in percentages", (*base, b))
    s, e = _int(obj.get(start)), _int(obj.get(end)) if end else None
    ps, pe = _int(obj.get(pct_start)), _int(obj.get(pct_end)) if pct_end else None
    if s is not None and e is not None and s >= e:
        yield Issue(code_for("invalid", end or start), f"'{end}' ({e}) must be greater than '{start}' ({s})",
                    (*base, end or start), "integer")
    if ps is not None and pe is not None and ps >= pe:
        yield Issue(code_for("invalid", pct_end or pct_start),
                    f"'{pct_end}' ({pe}) must be greater than '{pct_start}' ({ps})", (*base, pct_end or pct_start),
                    "integer")
    if steps is not None:
        if e is not None and e > steps:
            yield Issue(code_for("invalid", end or ''), f"'{end}' ({e}) must be less than or equal to steps ({steps})",
                        (*base, end or ""), "integer")
        if s is not None and e is None and pe is None and s >= steps:
            yield Issue(code_for("invalid", start), f"'{start}' ({s}) must be less than steps ({steps})",
                        (*base, start), "integer")


# Request fields (or accelerator switches) gated by architecture, as feature names of architectures.py.
def _features_used(d: dict[str, Any]) -> Iterator[tuple[str, Path]]:
    for key in ("promptWeighting", "lora", "controlNet", "ipAdapters", "hiresFix", "pulid", "trueCFGScale",
                "ultralytics", "outpaint", "strength", "maskMargin", "clipSkip", "refiner", "photoMaker",
                "embeddings", "vae", "acePlusPlus"):
        if d.get(key) is not None:
            yield key, (key,)
    if d.get("layerDiffuse") is True:
        yield "layerDiffuse", ("layerDiffuse",)
    acc = d.get("acceleratorOptions")
    if isinstance(acc, dict):
        for switch in ("teaCache", "fbCache", "dbCache", "deepCache"):
            if acc.get(switch) is True:
                yield f"cache.{switch}", ("acceleratorOptions", switch)
    inputs = d.get("inputs")
    if isinstance(inputs, dict) and inputs.get("referenceImages") is not None:
        yield "inputs.referenceImages", ("inputs", "referenceImages")


def check(d: dict[str, Any], profile: Profile, model: str) -> tuple[list[Issue], list[ApiError]]:
    """(errors, warnings) for a canonical request dict whose defaults are already filled in."""
    issues: list[Issue] = []
    warnings: list[ApiError] = []
    steps = _int(d.get("steps"))
    raw_inputs = d.get("inputs")
    inputs: dict[str, Any] = raw_inputs if isinstance(raw_inputs, dict) else {}
    has_seed = inputs.get("seedImage") is not None

    # Size
    for dim in ("width", "height"):
        v = _int(d.get(dim))
        if (d.get(dim) is None and d.get("resolution") is None and profile.size_default is None
                and not profile.size_optional):
            issues.append(Issue(code_for("missing", dim), f"'{dim}' is required for {model}", (dim,), "integer"))
        if v is not None and v % 64:
            issues.append(Issue(code_for("invalid", dim), f"'{dim}' must be a multiple of 64 (got {v})", (dim,), "integer"))
    if d.get("resolution") is not None and (d.get("width") is not None or d.get("height") is not None):
        issues.append(Issue("conflictResolution", "'resolution' cannot be combined with 'width'/'height'",
                            ("resolution",)))

    # Per-model ranges
    lo, hi, _ = profile.steps
    if steps is not None and not lo <= steps <= hi:
        issues.append(Issue("invalidSteps", f"'steps' must be between {lo} and {hi} for {model}", ("steps",), "integer"))
    cfg = _num(d.get("CFGScale"))
    clo, chi, _ = profile.cfg
    if cfg is not None and not clo <= cfg <= chi:
        issues.append(Issue("invalidCFGScale", f"'CFGScale' must be between {clo:g} and {chi:g} for {model}",
                            ("CFGScale",), "float"))
    clip_skip = _int(d.get("clipSkip"))
    if clip_skip is not None and clip_skip > profile.clip_skip_max:
        issues.append(Issue("invalidClipSkip", f"'clipSkip' must be between 0 and {profile.clip_skip_max} for {model}",
                            ("clipSkip",), "integer"))
    pw = d.get("promptWeighting")
    if isinstance(pw, str) and pw in ("compel", "sdEmbeds") and pw not in profile.prompt_weighting:
        issues.append(Issue("invalidPromptWeighting", f"'{pw}' prompt weighting is not available for {model}",
                            ("promptWeighting",), "string", profile.prompt_weighting))

    # Step windows
    control_nets = d.get("controlNet")
    for i, cn in enumerate(control_nets if isinstance(control_nets, list) else []):
        if isinstance(cn, dict):
            issues.extend(window_issues(cn, ("controlNet", i), steps, "startStep", "endStep"))
    acc = d.get("acceleratorOptions")
    if isinstance(acc, dict):
        issues.extend(window_issues(acc, ("acceleratorOptions",), steps, "cacheStartStep", "cacheEndStep"))
    pulid = d.get("pulid")
    if isinstance(pulid, dict):
        issues.extend(window_issues(pulid, ("pulid",), steps, "CFGstartStep", None))
    refiner = d.get("refiner")
    if isinstance(refiner, dict):
        has_abs, has_pct = refiner.get("startStep") is not None, refiner.get("startStepPercentage") is not None
        if has_abs == has_pct:
            issues.append(Issue("conflictStartStep" if has_abs else "missingStartStep",
                                "the refiner needs exactly one of 'startStep' and 'startStepPercentage'",
                                ("refiner", "startStep")))
        rs = _int(refiner.get("startStep"))
        if rs is not None and steps is not None and rs > steps:
            issues.append(Issue("invalidStartStep", f"'refiner.startStep' must be at most steps ({steps})",
                                ("refiner", "startStep"), "integer"))

    # Reference images
    refs = inputs.get("referenceImages")
    n_refs = len(refs) if isinstance(refs, list) else 0
    if profile.max_reference_images is not None and n_refs > profile.max_reference_images:
        issues.append(Issue("invalidReferenceImages", f"{model} takes at most {profile.max_reference_images} "
                            f"reference images (got {n_refs})", ("inputs", "referenceImages"), "string[]"))
    if d.get("acePlusPlus") is not None:
        if n_refs == 0:
            issues.append(Issue("missingReferenceImages", "ACE++ needs one reference image ('referenceImages')",
                                ("inputs", "referenceImages"), "string[]"))
        elif n_refs > 1:
            issues.append(Issue("invalidReferenceImages", f"ACE++ takes one reference image (got {n_refs})",
                                ("inputs", "referenceImages"), "string[]"))

    # What a seed image (and a mask) enable
    if not has_seed:
        seed_needs: tuple[tuple[str, bool, Path], ...] = (
            ("strength", d.get("strength") is not None, ("strength",)),
            ("outpaint", d.get("outpaint") is not None, ("outpaint",)),
            ("maskImage", inputs.get("maskImage") is not None, ("inputs", "maskImage")))
        for name, present, path in seed_needs:
            if present:
                issues.append(Issue("missingSeedImage", f"'{name}' needs a seed image ('inputs.seedImage')", path))
    if d.get("maskMargin") is not None and inputs.get("maskImage") is None:
        issues.append(Issue("missingMaskImage", "'maskMargin' needs a mask image ('inputs.maskImage')", ("maskMargin",)))

    outpaint = d.get("outpaint")
    if isinstance(outpaint, dict):
        sides = {k: _int(outpaint.get(k)) for k in ("top", "right", "bottom", "left")}
        if all(v in (0, None) for v in sides.values()):
            issues.append(Issue("invalidOutpaint", "outpaint needs at least one of top/right/bottom/left above 0",
                                ("outpaint",), "object"))
        for k, v in sides.items():
            if v is not None and v % 64:
                issues.append(Issue(code_for("invalid", k), f"'outpaint.{k}' must be a multiple of 64 (got {v})",
                                    ("outpaint", k), "integer"))

    # Output
    if d.get("layerDiffuse") is True and d.get("outputFormat") not in ("PNG", "WEBP"):
        issues.append(Issue("invalidOutputFormat", "transparency (layerDiffuse) needs an output format with alpha",
                            ("outputFormat",), "string", ("PNG", "WEBP")))
    if d.get("ttl") is not None and d.get("outputType", "URL") != "URL":
        issues.append(Issue("invalidTtl", "'ttl' only applies when outputType is 'URL'", ("ttl",), "integer"))
    wm = d.get("watermark")
    if isinstance(wm, dict) and (wm.get("text") is None) == (wm.get("image") is None):
        issues.append(Issue("invalidWatermark", "a watermark has exactly one of 'text' and 'image'",
                            ("watermark",), "object"))

    # Architecture
    features = profile.features
    if features is not None:
        for feature, path in _features_used(d):
            if feature not in features:
                field = ".".join(str(p) for p in path)
                issues.append(Issue(code_for("unsupported", str(path[-1])),
                                    f"'{field}' is not available for {model} (architecture {profile.architecture})",
                                    path))

    # IP-Adapters: options FLUX and Redux have no meaning for (as the hosted API's 2026 schemas), and adapters
    # trained for another base model
    adapters = d.get("ipAdapters")
    arch = profile.architecture or ""
    for i, a in enumerate(adapters if isinstance(adapters, list) else []):
        if not isinstance(a, dict):
            continue
        redux = a.get("model") == REDUX
        base = IP_ADAPTER_BASE.get(str(a.get("model")))
        if arch.startswith("flux") or (base or "").startswith("flux"):
            scalings = ("kv",) if redux else ("only_v", "kv")
            if a.get("embedScaling", "kv") not in scalings:
                issues.append(Issue("unsupportedEmbedScaling", f"'ipAdapters.{i}.embedScaling' can only be "
                                    f"{' or '.join(scalings)} here", ("ipAdapters", i, "embedScaling"), "string",
                                    scalings))
            if a.get("weightType", "normal") != "normal":
                issues.append(Issue("unsupportedWeightType", f"'ipAdapters.{i}.weightType' is per-UNet-block and "
                                    "has no meaning on FLUX or Redux", ("ipAdapters", i, "weightType"), "string",
                                    ("normal",)))
            if a.get("weightComposition") is not None:
                issues.append(Issue("unsupportedWeightComposition", f"'ipAdapters.{i}.weightComposition' has no "
                                    "meaning on FLUX or Redux", ("ipAdapters", i, "weightComposition"), "float"))
        if base and arch and arch not in IP_ADAPTER_FITS.get(base, frozenset()):
            issues.append(Issue("invalidModel", f"{a.get('model')} is an IP-Adapter for {base} models; {model} is "
                                f"{arch}", ("ipAdapters", i, "model"), "string"))

    # Accepted but without effect
    # On FLUX the negative prompt acts through real CFG only: the request's trueCFGScale, or PuLID's own true CFG
    pulid_options = d.get("pulid")
    pulid_cfg = _num(pulid_options.get("trueCFGScale")) if isinstance(pulid_options, dict) else None
    true_cfg = max((v for v in (_num(d.get("trueCFGScale")), pulid_cfg) if v is not None),
                   default=None)
    if (d.get("negativePrompt") is not None and (profile.architecture or "").startswith("flux")
            and (true_cfg is None or true_cfg <= 1)):
        warnings.append(ApiError("ignoredNegativePrompt", "'negativePrompt' acts on FLUX only with 'trueCFGScale' "
                                 "(or 'pulid.trueCFGScale') above 1: FLUX's CFGScale is its distilled guidance, not "
                                 "classifier-free guidance", "negativePrompt", "string"))
    elif d.get("negativePrompt") is not None and cfg is not None and cfg <= 1:
        warnings.append(ApiError("ignoredNegativePrompt",
                                 f"'negativePrompt' is ignored because CFGScale ({cfg:g}) is at most 1",
                                 "negativePrompt", "string"))
    return issues, warnings
