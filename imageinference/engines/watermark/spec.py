"""The `watermark` object of a request, validated with the contract's own model (pure).

Errors are the documented error objects naming `watermark.<field>`; `text` and `image` are alternatives, exactly
one of them is given.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from ...contract.errors import ApiError, ContractError, code_for
from ...contract.request import WATERMARK_POSITIONS, Watermark

DEFAULT_FONT_COLOR = "#FFFFFF"
HEX = re.compile(r"^#([0-9A-Fa-f]{6})$")


def hex_rgb(value: str) -> tuple[int, int, int]:
    m = HEX.match(value)
    if not m:
        raise ValueError(f"{value!r} is not a #RRGGBB colour")
    n = int(m.group(1), 16)
    return (n >> 16) & 255, (n >> 8) & 255, n & 255


@dataclass(frozen=True)
class WatermarkSpec:
    text: str | None
    image: str | None  # an image string (UUID, URL, data URI, base64); decoded by the caller
    display_position: str = "bottom-right"
    tiled: bool = False
    opacity: float = 0.6
    font_color: str | None = None  # None = white
    bg_color: str | None = None  # None or "transparent" = no background box

    @property
    def font_rgb(self) -> tuple[int, int, int]:
        return hex_rgb(self.font_color or DEFAULT_FONT_COLOR)

    @property
    def bg_rgb(self) -> tuple[int, int, int] | None:
        if self.bg_color in (None, "transparent"):
            return None
        return hex_rgb(self.bg_color)

    def to_json(self) -> dict[str, Any]:
        """The canonical request object (defaults explicit, unset colours left out)."""
        out: dict[str, Any] = {}
        if self.text is not None:
            out["text"] = self.text
        if self.image is not None:
            out["image"] = self.image
        out.update(displayPosition=self.display_position, tiled=self.tiled, opacity=self.opacity)
        if self.font_color is not None:
            out["fontColor"] = self.font_color
        if self.bg_color is not None:
            out["bgColor"] = self.bg_color
        return out


def parse_watermark(obj: Any, base: str = "watermark") -> WatermarkSpec:
    """A request's watermark object -> spec; ContractError with every problem, each naming its parameter."""
    if not isinstance(obj, dict):
        raise ContractError.single(code_for("invalid", base), f"'{base}' must be an object", base, "object")
    try:
        wm = Watermark.model_validate(obj)
    except ValidationError as exc:
        errors = []
        for err in exc.errors():
            path = ".".join([base, *(str(p) for p in err["loc"])])
            leaf = str(err["loc"][-1]) if err["loc"] else base
            if err["type"] == "extra_forbidden":
                errors.append(ApiError("unknownParameter", f"'{path}' is not a parameter of the watermark", path))
            elif err["type"] == "literal_error":
                errors.append(ApiError(code_for("invalid", leaf), f"Invalid value for {path}: must be one of the "
                                       "allowed values", path, "string", WATERMARK_POSITIONS))
            else:
                errors.append(ApiError(code_for("invalid", leaf), f"Invalid value for {path}: {err['msg']}", path))
        raise ContractError(errors) from exc
    if (wm.text is None) == (wm.image is None):
        raise ContractError.single("invalidWatermark", "a watermark has exactly one of 'text' and 'image'", base,
                                   "object")
    return WatermarkSpec(wm.text, wm.image, wm.displayPosition, wm.tiled, float(wm.opacity), wm.fontColor,
                         wm.bgColor)
