"""Seeds for `numberResults`: the rule is documented so results can be reproduced one at a time.

Result i (0-based) uses seed + i, wrapping past the largest seed back to 0. With no seed in the request, one is
drawn in the unsigned 32-bit range (as documented for the hosted API) and echoed in every response.
"""

from __future__ import annotations

import secrets

from ...contract.request import SEED_MAX

__all__ = ["SEED_MAX", "draw_seed", "result_seeds"]


def draw_seed() -> int:
    return secrets.randbelow(2**32)


def result_seeds(seed: int | None, number_results: int) -> list[int]:
    base = draw_seed() if seed is None else seed
    return [(base + i) % (SEED_MAX + 1) for i in range(number_results)]
