"""Which image sizes the transparent decoder takes (pure).

The decoder is a U-Net with six stride-2 downsamplings and nearest-neighbour 2x upsamplings whose outputs are
concatenated with the skips of the same level, so both sides must be multiples of 2^6 = 64 pixels (8 latent
cells); anything else would fail inside the network. The contract already asks for multiples of 64.
"""

from __future__ import annotations

from ...contract.errors import ApiError, code_for

MULTIPLE = 64
LATENT_SCALE = 8  # pixels per latent cell (FLUX VAE)


def size_errors(width: int, height: int) -> list[ApiError]:
    """The documented errors for a width x height the transparent decoder cannot take (empty when it can)."""
    errors = []
    for name, value in (("width", width), ("height", height)):
        if value < MULTIPLE or value % MULTIPLE:
            errors.append(ApiError(code_for("invalid", name), f"LayerDiffuse's transparent decoder takes '{name}' in "
                                   f"multiples of {MULTIPLE} (at least {MULTIPLE}); got {value}", name, "integer"))
    return errors
