"""Legacy request shapes -> the one canonical shape every other part of the pack sees.

Accepted legacy forms (API reference §2.3, §2.10–2.12, §2.16, §9.8): top-level `seedImage`/`maskImage`/
`referenceImages` (-> `inputs.*`), `puLID` with `inputImages`/`CFGStartStep` (-> `pulid` with `images`/
`CFGstartStep`), `ipAdapters[].guideImage` (-> `guideImages`), `advancedFeatures.{hiresFix,hiresfix,layerDiffuse,
watermark}` and top-level `hiresfix` (-> top-level fields), `checkNsfw`/`checkNSFW` (-> `safety.checkContent`),
`acceleratorOptions.fbcache`/`cacheStopStep`, lowercase `outputFormat` and `JPEG`, `promptWeighting: sdembeds`.
Giving the same field in two shapes is a conflict, never a silent choice.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .errors import ApiError, code_for
from .errors import FieldPath as Path


@dataclass
class Normalized:
    data: dict[str, Any]
    origins: dict[Path, Path] = field(default_factory=dict)  # canonical path -> path the user wrote
    wrapped: set[Path] = field(default_factory=set)  # canonical lists made from one legacy string
    errors: list[ApiError] = field(default_factory=list)

    def original(self, path: Path) -> Path:
        """The path as the user wrote it, for error messages."""
        for cut in range(len(path), 0, -1):
            origin = self.origins.get(path[:cut])
            if origin is not None:
                rest = path[cut:]
                if path[:cut] in self.wrapped and rest and isinstance(rest[0], int):
                    rest = rest[1:]  # the user wrote one string, not a list
                return origin + rest
        return path


def dotted(path: Path) -> str:
    return ".".join(str(p) for p in path)


def _move(n: Normalized, src_obj: dict[str, Any], src_key: str, dst_obj: dict[str, Any], dst_key: str,
          src_path: Path, dst_path: Path) -> None:
    if src_key not in src_obj:
        return
    value = src_obj.pop(src_key)
    if dst_key in dst_obj:
        n.errors.append(ApiError(
            code_for("conflict", dst_key),
            f"'{dotted(src_path)}' and '{dotted(dst_path)}' are the same field in two shapes; give only one",
            dotted(src_path)))
        return
    dst_obj[dst_key] = value
    n.origins[dst_path] = src_path


_FORMATS = {"jpg": "JPG", "jpeg": "JPG", "png": "PNG", "webp": "WEBP"}


def _drop_nulls(value: Any) -> Any:
    """JSON null on a field means the field is not given (so defaults apply the same way on every pass)."""
    if isinstance(value, dict):
        return {k: _drop_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_nulls(v) for v in value]
    return value


def normalize(raw: dict[str, Any]) -> Normalized:
    data = _drop_nulls(raw)
    n = Normalized(data)

    # inputs.* (2026 shape) from top-level images (legacy)
    for key in ("seedImage", "maskImage", "referenceImages"):
        if key in data:
            inputs = data.setdefault("inputs", {})
            if isinstance(inputs, dict):
                _move(n, data, key, inputs, key, (key,), ("inputs", key))

    # advancedFeatures container -> top-level fields
    adv = data.get("advancedFeatures")
    if isinstance(adv, dict):
        for src, dst in (("hiresFix", "hiresFix"), ("hiresfix", "hiresFix"), ("layerDiffuse", "layerDiffuse"),
                         ("watermark", "watermark")):
            _move(n, adv, src, data, dst, ("advancedFeatures", src), (dst,))
        if not adv:
            del data["advancedFeatures"]
    _move(n, data, "hiresfix", data, "hiresFix", ("hiresfix",), ("hiresFix",))
    if data.get("hiresFix") is False:
        del data["hiresFix"]  # documented default: disabled
    if data.get("layerDiffuse") is False:
        del data["layerDiffuse"]  # documented default: no transparency

    # PuLID
    _move(n, data, "puLID", data, "pulid", ("puLID",), ("pulid",))
    pulid = data.get("pulid")
    if isinstance(pulid, dict):
        base = n.origins.get(("pulid",), ("pulid",))
        for src, dst in (("inputImages", "images"), ("CFGStartStep", "CFGstartStep"),
                         ("CFGStartStepPercentage", "CFGstartStepPercentage")):
            _move(n, pulid, src, pulid, dst, (*base, src), ("pulid", dst))

    # IP-Adapters: singular guideImage
    adapters = data.get("ipAdapters")
    if isinstance(adapters, list):
        for i, item in enumerate(adapters):
            if isinstance(item, dict) and "guideImage" in item:
                if "guideImages" in item:
                    _move(n, item, "guideImage", item, "guideImages", ("ipAdapters", i, "guideImage"),
                          ("ipAdapters", i, "guideImages"))
                else:
                    item["guideImages"] = [item.pop("guideImage")]
                    n.origins[("ipAdapters", i, "guideImages")] = ("ipAdapters", i, "guideImage")
                    n.wrapped.add(("ipAdapters", i, "guideImages"))

    # Safety: deprecated NSFW switches
    for key in ("checkNsfw", "checkNSFW"):
        if key in data:
            safety = data.setdefault("safety", {})
            if isinstance(safety, dict):
                _move(n, data, key, safety, "checkContent", (key,), ("safety", "checkContent"))

    # Accelerator legacy names
    acc = data.get("acceleratorOptions")
    if isinstance(acc, dict):
        for src, dst in (("fbcache", "fbCache"), ("cacheStopStep", "cacheEndStep")):
            _move(n, acc, src, acc, dst, ("acceleratorOptions", src), ("acceleratorOptions", dst))

    # Enum spellings seen in the docs and older SDKs
    fmt = data.get("outputFormat")
    if isinstance(fmt, str) and fmt.lower() in _FORMATS:
        data["outputFormat"] = _FORMATS[fmt.lower()]
    if data.get("promptWeighting") == "sdembeds":
        data["promptWeighting"] = "sdEmbeds"
    return n
