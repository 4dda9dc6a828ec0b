"""`ipAdapters[]` <-> IP-Adapter nodes on the model path (pure).

Each entry whose AIR is not FLUX Redux becomes a Guide Images node (its `guideImages`, ids 40+2k) and an IP-Adapter
node (41+2k) chained on the model after the LoRAs and before a step cache, in request order. Redux entries are
compiled by `ip_adapter_redux` onto the positive conditioning. Options an adapter family gives no meaning to, and
adapters made for another architecture than the request's model, are refused here, naming the field.
"""

from __future__ import annotations

import json
from typing import Any

from ...contract.architectures import profile_for
from ...contract.errors import ApiError, ContractError, code_for
from ...engines.ipadapter.layout import BASE_NAMES, KNOWN_ADAPTERS, family_of, fits_architecture
from ...engines.ipadapter.options import Family, option_issues
from ...engines.models.catalog import TYPED_IN, Catalog, CatalogError, chosen_air
from ..graph import GraphBuilder
from ..registry import ExportContext, Feature, NodeExport

BASE = 40  # IP-Adapter k (0-9): guide images 40+2k, adapter 41+2k
MAX = 10
GUIDE_NODE = "ImageInferenceGuideImages"
NODE = "ImageInferenceIPAdapter"


def load_catalog() -> Catalog | None:
    try:
        return Catalog.load()
    except (CatalogError, OSError, ValueError):
        return None


def family(air: str, catalog: Catalog | None) -> Family | None:
    entry = catalog.get(air) if catalog else None
    return family_of(air, entry.kind if entry else None, str(entry.files.get("model", "")) if entry else None)


def entry_errors(d: dict[str, Any], catalog: Catalog | None) -> dict[int, tuple[Family, list[ApiError]]]:
    """Per ipAdapters index: the family it compiles to and what is wrong with it for the request's model."""
    model_air = str(d["model"])
    arch = profile_for(model_air, catalog.architecture_of(model_air) if catalog else None).architecture
    out: dict[int, tuple[Family, list[ApiError]]] = {}
    for i, entry in enumerate(d.get("ipAdapters") or []):
        air = entry["model"]
        fam = family(air, catalog) or ("flux" if (arch or "").startswith("flux") else "unet")
        errors = [ApiError(code_for("unsupported", issue.field), issue.message, f"ipAdapters.{i}.{issue.field}",
                           "float" if issue.field == "weightComposition" else "string", issue.allowed)
                  for issue in option_issues(fam, entry)]
        cat_entry = catalog.get(air) if catalog else None
        base = KNOWN_ADAPTERS[air][0] if air in KNOWN_ADAPTERS else None
        if cat_entry is not None and cat_entry.architecture in ("sd-1-5", "sdxl", "flux-1-dev"):
            base = cat_entry.architecture  # type: ignore[assignment]
        if base is not None and not fits_architecture(base, arch):
            errors.append(ApiError("invalidModel", f"{air} is a {BASE_NAMES[base]} adapter; {model_air} is {arch}",
                                   f"ipAdapters.{i}.model", "string"))
        out[i] = (fam, errors)
    return out


def check(d: dict[str, Any], catalog: Catalog | None) -> dict[int, Family]:
    found = entry_errors(d, catalog)
    errors = [e.with_task(d.get("taskUUID")) for _fam, errs in found.values() for e in errs]
    if errors:
        raise ContractError(errors)
    return {i: fam for i, (fam, _errs) in found.items()}


def compile_(d: dict[str, Any], g: GraphBuilder) -> None:
    if not d.get("ipAdapters"):
        return
    families = check(d, load_catalog())
    k = 0
    for i, entry in enumerate(d["ipAdapters"]):
        if families[i] == "redux":
            continue
        if k >= MAX:
            raise ContractError.single("invalidIpAdapters", f"at most {MAX} IP-Adapters (besides Redux) per request",
                                       "ipAdapters", "object[]", task_uuid=d.get("taskUUID"))
        guide, node = BASE + 2 * k, BASE + 2 * k + 1
        g.add(guide, GUIDE_NODE, {"guideImages": json.dumps(entry["guideImages"]), "role": f"ipAdapters.{i}.guideImages"})
        g.add(node, NODE, {
            "model": g.model, "guideImages": g.ref(guide), "ipAdapter": TYPED_IN, "air": entry["model"],
            "weight": entry["weight"], "combineMethod": entry["combineMethod"], "embedScaling": entry["embedScaling"],
            "weightType": entry["weightType"], "weightComposition": entry.get("weightComposition", -1.0),
            "middleBlock": False})  # cubiq's IPAdapter_plus: no adapter on the middle block
        g.model = g.ref(node)
        k += 1


def guide_images(ctx: ExportContext, ref: Any, nid: str, node: dict[str, Any]) -> list[str] | None:
    found = ctx.node(ref)
    if found is None:
        ctx.note(nid, node, "has no guide images")
        return None
    gid, gnode = found
    if gnode["class_type"] == GUIDE_NODE:
        try:
            images = json.loads(gnode["inputs"].get("guideImages") or "[]")
        except json.JSONDecodeError:
            images = None
        if not isinstance(images, list) or not images:
            ctx.note(gid, gnode, "its guideImages are not a JSON array of image strings")
            return None
        return [str(s) for s in images]
    one = ctx.image_string(ref, "guide image")
    return [one] if one else None


def adapter_entry(ctx: ExportContext, nid: str, node: dict[str, Any], extra: tuple[str, ...]) -> dict[str, Any] | None:
    inputs = node["inputs"]
    air = chosen_air(inputs.get("ipAdapter"), inputs.get("air"))
    images = guide_images(ctx, inputs.get("guideImages"), nid, node)
    if not air:
        ctx.note(nid, node, "names no adapter AIR")
    if not air or images is None:
        return None
    entry: dict[str, Any] = {"model": air, "guideImages": images, "weight": inputs.get("weight", 1.0),
                             "combineMethod": inputs.get("combineMethod", "concat")}
    for key in extra:
        if key in inputs:
            entry[key] = inputs[key]
    return entry


def export(ctx: ExportContext, nid: str, node: dict[str, Any]) -> None:
    entry = adapter_entry(ctx, nid, node, ("embedScaling", "weightType"))
    if entry is None:
        return
    composition = float(node["inputs"].get("weightComposition", -1.0))
    if composition >= 0:
        entry["weightComposition"] = composition
    if node["inputs"].get("middleBlock") is True:
        ctx.note(nid, node, "middleBlock is a node option with no API field; the request leaves the UNet's middle "
                            "block without adapter, as cubiq's IPAdapter_plus does")
    ctx.req.setdefault("ipAdapters", []).insert(0, entry)  # traced from the sampler back: last adapter first


FEATURE = Feature("ipAdapter", ("ipAdapters",), "model", compile_, (NodeExport(NODE, "model", export, upstream="model"),))
