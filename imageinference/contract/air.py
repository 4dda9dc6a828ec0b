"""AIR model identifiers: `source:id@version`, and Civitai's long form `urn:air:{eco}:{type}:{source}:{id}@{ver}`.

The short form is canonical (it is what the hosted API takes); the long form is accepted and shortened.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_PART = r"[A-Za-z0-9][A-Za-z0-9._\-]*"
_SHORT = re.compile(rf"^(?P<source>[a-z0-9][a-z0-9_\-]*):(?P<id>{_PART})@(?P<version>{_PART})$")
_LONG = re.compile(
    rf"^(?:urn:)?(?:air:)?(?P<ecosystem>[a-z0-9]+):(?P<type>[a-z]+):(?P<source>[a-z0-9][a-z0-9_\-]*):"
    rf"(?P<id>{_PART}?)(?:@(?P<version>[A-Za-z0-9][A-Za-z0-9_\-]*))?(?:\+[A-Za-z0-9]+)?(?:\.[a-z0-9]+)?$"
)
MAX_LENGTH = 200


class AIRError(ValueError):
    pass


@dataclass(frozen=True)
class AIR:
    source: str
    id: str
    version: str
    ecosystem: str | None = None
    type: str | None = None

    def __str__(self) -> str:
        return f"{self.source}:{self.id}@{self.version}"


def parse_air(text: str) -> AIR:
    """Parse an AIR; raise AIRError saying what is wrong. The long form must carry a version."""
    if not isinstance(text, str):
        raise AIRError("an AIR is a string such as 'runware:101@1'")
    if not text or len(text) > MAX_LENGTH:
        raise AIRError(f"an AIR has 1 to {MAX_LENGTH} characters")
    m = _SHORT.match(text)
    if m:
        return AIR(m["source"], m["id"], m["version"])
    if text.startswith(("urn:", "air:")) or text.count(":") >= 3:
        m = _LONG.match(text)
        if m and m["version"] and m["id"]:
            return AIR(m["source"], m["id"], m["version"], m["ecosystem"], m["type"])
        raise AIRError(f"'{text}' is not a valid AIR: the long form is urn:air:<ecosystem>:<type>:<source>:<id>@<version>")
    raise AIRError(f"'{text}' is not a valid AIR: expected <source>:<id>@<version>, e.g. 'civitai:4384@128713'")


def canonical_air(text: str) -> str:
    return str(parse_air(text))


def is_air(text: object) -> bool:
    try:
        parse_air(text)  # type: ignore[arg-type]
        return True
    except AIRError:
        return False
