"""What the `ipAdapters[]` options mean, as pure functions (no ComfyUI, no torch).

Weight types are per-block schedules over a UNet's cross-attention blocks, indexed by `t`, the position of the
block's spatial transformer in forward order (ComfyUI's `transformer_index`): SD1.5 has 16 (input blocks 1, 2,
4, 5, 7, 8 = t 0-5, the middle block = t 6, output blocks 3-11 = t 7-15), SDXL has 11 (input 4, 5, 7, 8 =
t 0-3, middle = t 4, output 0-5 = t 5-10; every transformer layer of a block shares its weight). The
schedules are those of the reference implementation (cubiq's IPAdapter_plus, see peers.md §3): depth profiles
scale the weight by t (not by time), block-dict types apply the adapter on the listed blocks only. A block whose
weight is 0 is left untouched.

Embedding scaling says where the weight goes in the image attention `softmax(q·k_ip) v_ip`: on its output
(only_v), on k_ip and v_ip (kv), the same with the weight first multiplied by key_dim/1280 (kv_penalty_c), or on
k_ip and only the token-mean of v_ip (k_mean_v_penalty_c).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

WeightType = Literal["normal", "ease_in", "ease_out", "ease_in_out", "weak_input", "weak_output", "weak_middle",
                     "strong_middle", "style_transfer", "composition", "strong_style_transfer",
                     "style_and_composition", "strong_style_and_composition"]
CombineMethod = Literal["concat", "add", "subtract", "average", "norm_average"]
EmbedScaling = Literal["only_v", "kv", "kv_penalty_c", "k_mean_v_penalty_c"]
BlockKind = Literal["input", "middle", "output"]
Family = Literal["unet", "flux", "redux"]

WEIGHT_TYPES: tuple[WeightType, ...] = (
    "normal", "ease_in", "ease_out", "ease_in_out", "weak_input", "weak_output", "weak_middle", "strong_middle",
    "style_transfer", "composition", "strong_style_transfer", "style_and_composition",
    "strong_style_and_composition")
COMBINE_METHODS: tuple[CombineMethod, ...] = ("concat", "add", "subtract", "average", "norm_average")
EMBED_SCALINGS: tuple[EmbedScaling, ...] = ("only_v", "kv", "kv_penalty_c", "k_mean_v_penalty_c")
DEFAULTS: dict[str, object] = {"weight": 1.0, "combineMethod": "concat", "embedScaling": "kv", "weightType": "normal"}
WEIGHT_COMPOSITION_DEFAULT = 1.0  # the reference's default when `weightComposition` is not given
PENALTY_DIM = 1280.0  # the C penalty's normaliser: the widest attention of the SD UNets

# Block layouts of the two UNets the schedules are defined on, in forward (t) order.
SD15_BLOCKS: tuple[BlockKind, ...] = ("input",) * 6 + ("middle",) + ("output",) * 9
SDXL_BLOCKS: tuple[BlockKind, ...] = ("input",) * 4 + ("middle",) + ("output",) * 6
WEAK = 0.2


class ScheduleError(ValueError):
    pass


def _table(weight_type: WeightType, w: float, wc: float, n: int) -> dict[int, float] | None:
    """The block-dict weight types: {t: weight}; blocks not listed get no adapter. None for other types."""
    every = range(n)
    if n == 11:  # SDXL: t 3 = input block 8 (composition), t 6 = output block 1 (style)
        tables = {
            "style_transfer": {6: w},
            "composition": {3: w},
            "strong_style_transfer": {t: w for t in every if t != 3},
            "style_and_composition": {3: wc, 6: w},
            "strong_style_and_composition": {t: (wc if t == 3 else w) for t in every},
        }
    else:  # SD1.5: t 4, 5 = input blocks 7, 8 (composition); t 0-3 and 9-15 carry style
        style = (0, 1, 2, 3, 9, 10, 11, 12, 13, 14, 15)
        tables = {
            "style_transfer": {t: w for t in style},
            "composition": {4: 0.25 * w, 5: w},
            "strong_style_transfer": {t: w for t in every if t not in (4, 5)},
            "style_and_composition": {**{t: w for t in style}, 4: 0.25 * wc, 5: wc},
            "strong_style_and_composition": {t: (wc if t in (4, 5) else w) for t in every},
        }
    return tables.get(weight_type)


def block_weights(weight_type: WeightType, weight: float, blocks: Sequence[BlockKind],
                  weight_composition: float | None = None) -> tuple[float, ...]:
    """The adapter weight of each cross-attention block t (0 = the block is left alone).

    `blocks` is the UNet's block kind per t. Depth profiles work on any layout; the block-dict types (style /
    composition) are defined for the SD1.5 (16) and SDXL (11) layouts only.
    """
    n = len(blocks)
    if n == 0:
        raise ScheduleError("the model has no cross-attention blocks")
    w = float(weight)
    wc = WEIGHT_COMPOSITION_DEFAULT if weight_composition is None else float(weight_composition)
    if weight_type == "normal":
        return tuple(w for _ in blocks)
    if weight_type == "ease_in":
        return tuple(w * (0.05 + 0.95 * (1 - t / n)) for t in range(n))
    if weight_type == "ease_out":
        return tuple(w * (0.05 + 0.95 * (t / n)) for t in range(n))
    if weight_type == "ease_in_out":
        half = n / 2
        return tuple(w * (0.05 + 0.95 * (1 - abs(t - half) / half)) for t in range(n))
    weak: dict[str, tuple[BlockKind, ...]] = {"weak_input": ("input",), "weak_output": ("output",),
                                              "weak_middle": ("middle",), "strong_middle": ("input", "output")}
    if weight_type in weak:
        return tuple(w * WEAK if kind in weak[weight_type] else w for kind in blocks)
    if tuple(blocks) not in (SD15_BLOCKS, SDXL_BLOCKS):
        raise ScheduleError(f"weight type '{weight_type}' names SD1.5 or SDXL blocks; this UNet has {n} "
                            "cross-attention blocks in another layout")
    table = _table(weight_type, w, wc, n)
    if table is None:
        raise ScheduleError(f"unknown weight type {weight_type!r}")
    return tuple(table.get(t, 0.0) for t in range(n))


def middle_block_off(schedule: Sequence[float], blocks: Sequence[BlockKind]) -> tuple[float, ...]:
    """The schedule with no adapter on the middle block: what cubiq's IPAdapter_plus applies on ComfyUI, whose
    UNet looks the middle block's patch up as ("middle", 0) while that node registers it as ("middle", 1). The
    weight-type formulas still count the middle block (t), as the reference's do."""
    return tuple(0.0 if kind == "middle" else w for w, kind in zip(schedule, blocks, strict=True))


@dataclass(frozen=True)
class Scaling:
    """Factors of the image attention: softmax(q·(key·k)) ((v - m)·value + m·value_mean) · output, m = token
    mean of v."""

    key: float
    value: float
    value_mean: float
    output: float


def embed_scaling(method: EmbedScaling, weight: float, key_dim: int) -> Scaling:
    w = float(weight)
    if method == "only_v":
        return Scaling(1.0, 1.0, 1.0, w)
    if method == "kv":
        return Scaling(w, w, w, 1.0)
    penalised = w * (key_dim / PENALTY_DIM)  # the reference's order of operations (bit-identical results)
    if method == "kv_penalty_c":
        return Scaling(penalised, penalised, penalised, 1.0)
    if method == "k_mean_v_penalty_c":
        return Scaling(penalised, 1.0, penalised, 1.0)
    raise ValueError(f"unknown embedScaling {method!r}")


# Options each adapter family gives meaning to (values other than these are refused, naming the field).
ALLOWED: dict[Family, dict[str, tuple[object, ...] | None]] = {
    "unet": {"combineMethod": COMBINE_METHODS, "embedScaling": EMBED_SCALINGS, "weightType": WEIGHT_TYPES,
             "weightComposition": None},
    # FLUX IP-Adapters attend once per double block: no UNet blocks to schedule, no 1280-wide penalty. The weight
    # scales the image attention's output as XLabs' ip_scale does, so only_v and kv (the default) mean the same.
    "flux": {"combineMethod": COMBINE_METHODS, "embedScaling": ("only_v", "kv"), "weightType": ("normal",)},
    # Redux appends image tokens to the text: no image attention, so no k/v to scale.
    "redux": {"combineMethod": COMBINE_METHODS, "embedScaling": ("kv",), "weightType": ("normal",)},
}
WHY = {"flux": "a FLUX IP-Adapter has no UNet blocks to schedule and no 1280-wide attention to penalise",
       "redux": "FLUX Redux appends image tokens to the prompt; there is no image attention to schedule or scale"}


@dataclass(frozen=True)
class OptionIssue:
    field: str
    message: str
    allowed: tuple[object, ...] | None


def option_issues(family: Family, entry: Mapping[str, object]) -> list[OptionIssue]:
    """Options of one `ipAdapters[]` entry that have no meaning for this adapter family."""
    allowed = ALLOWED[family]
    issues: list[OptionIssue] = []
    for field in ("combineMethod", "embedScaling", "weightType"):
        value = entry.get(field, DEFAULTS[field])
        values = allowed.get(field)
        if values is not None and value not in values:
            issues.append(OptionIssue(field, f"'{field}' {value!r} is not available here: {WHY.get(family, '')}",
                                      values))
    if "weightComposition" not in allowed and entry.get("weightComposition") is not None:
        issues.append(OptionIssue("weightComposition", f"'weightComposition' is not available here: {WHY[family]}",
                                  None))
    return issues
