"""The PuLID-FLUX weights and the ID encoder stack as catalog entries (pure).

- kind `pulid`: the PuLID-FLUX weights (IDFormer `pulid_encoder.*` and the cross-attention layers `pulid_ca.*`),
  folder `pulid/`. Its `options.encoders` names the ID-encoder AIRs it was trained with, by role; missing roles
  take the defaults below.
- kind `idEncoder`: one part of the ID encoder stack, its `options.role` one of ROLES:
  - `faceDetection`: SCRFD with 5 keypoints as ONNX (antelopev2's scrfd_10g_bnkps.onnx), folder `insightface/`;
  - `faceRecognition`: the ArcFace-style recognition model as ONNX (antelopev2's glintr100.onnx), `insightface/`;
  - `visionTower`: the EVA02-CLIP-L-14-336 weights (EVA-CLIP's EVA02_CLIP_L_336_psz14_s6B.pt), `clip_vision/`;
  - `faceParsing`: the BiSeNet face parser (facexlib's parsing_bisenet, converted to safetensors), `pulid/`.
    A `pulid` entry may set this role to NO_PARSING ("none") to send the whole crop to the vision tower.
A request names none of these: `pulid` always uses DEFAULT_PULID for the model's architecture.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ...contract.errors import ApiError, ContractError
from ..models.catalog import Catalog, Entry

PULID_KIND = "pulid"
ENCODER_KIND = "idEncoder"
ROLES = ("faceDetection", "faceRecognition", "visionTower", "faceParsing")
OPTIONAL_ROLES = ("faceParsing",)
NO_PARSING = "none"
PARAMETER = "pulid"
DEFAULT_PULID = "pulid:flux@v0.9.1"
DEFAULT_ENCODERS = {
    "faceDetection": "insightface:antelopev2@scrfd-10g-bnkps",
    "faceRecognition": "insightface:antelopev2@glintr100",
    "visionTower": "eva-clip:eva02-clip-l-14-336@s6b",
    "faceParsing": "facexlib:parsing@bisenet",
}
WHERE = {
    "pulid": "ComfyUI/models/pulid/ (PuLID-FLUX weights, e.g. pulid_flux_v0.9.1.safetensors)",
    "faceDetection": "ComfyUI/models/insightface/models/antelopev2/ (from the antelopev2 pack)",
    "faceRecognition": "ComfyUI/models/insightface/models/antelopev2/ (from the antelopev2 pack)",
    "visionTower": "ComfyUI/models/clip_vision/ (EVA-CLIP's EVA02_CLIP_L_336_psz14_s6B.pt)",
    "faceParsing": "ComfyUI/models/pulid/ (facexlib's parsing_bisenet.pth converted to parsing_bisenet.safetensors; "
                   "see docs/pulid.md)",
}


@dataclass(frozen=True)
class StackEntries:
    weights: Entry
    encoders: dict[str, Entry]  # role -> entry (an optional role switched off has none)

    def files(self) -> list[tuple[str, Entry, str]]:
        """(role, entry, `<folder>/<file>`) for every file the stack needs, weights first."""
        out = [("pulid", self.weights, self.weights.files["model"])]
        out += [(role, self.encoders[role], self.encoders[role].files["model"]) for role in ROLES
                if role in self.encoders]
        return out


def _error(code: str, message: str) -> ContractError:
    return ContractError([ApiError(code, message, PARAMETER, "object")])


def encoder_airs(weights: Entry) -> dict[str, str]:
    named: Any = weights.options.get("encoders", {})
    if not isinstance(named, dict):
        raise _error("invalidCatalog", f"{weights.air}: options.encoders must map roles to AIRs")
    unknown = sorted(set(named) - set(ROLES))
    if unknown:
        raise _error("invalidCatalog", f"{weights.air}: options.encoders has unknown roles {unknown}; roles are "
                     f"{', '.join(ROLES)}")
    return {role: str(named.get(role, DEFAULT_ENCODERS[role])) for role in ROLES}


def stack_entries(catalog: Catalog, air: str) -> StackEntries:
    """The catalog entries of the PuLID weights `air` and of its three encoders; one error names every AIR that is
    missing from the catalog or of the wrong kind or role."""
    problems: list[str] = []
    weights = catalog.get(air)
    if weights is None:
        raise _error("unknownModel", f"the PuLID weights {air} are not in the model catalog ({catalog.path}); add "
                     f"them with `python -m imageinference catalog add {air} --file pulid/<file> --kind pulid`")
    if weights.kind != PULID_KIND:
        raise _error("invalidModelKind", f"{air} is a {weights.kind} in the catalog, not PuLID weights")
    encoders: dict[str, Entry] = {}
    for role, enc_air in encoder_airs(weights).items():
        if role in OPTIONAL_ROLES and enc_air == NO_PARSING:
            continue
        entry = catalog.get(enc_air)
        if entry is None:
            problems.append(f"{role} {enc_air} is not in the catalog")
        elif entry.kind != ENCODER_KIND or entry.options.get("role") != role:
            problems.append(f"{role} {enc_air} is a {entry.kind} with role {entry.options.get('role')!r}, not an "
                            f"{ENCODER_KIND} with role {role!r}")
        else:
            encoders[role] = entry
    if problems:
        raise _error("unknownModel", f"the ID encoders of {air} are not usable: " + "; ".join(problems))
    return StackEntries(weights, encoders)


@dataclass(frozen=True)
class Missing:
    role: str
    air: str
    rel: str  # `<folder>/<file>` from the catalog
    searched: Sequence[str]  # the folders looked in


def missing_files_error(missing: Sequence[Missing]) -> ContractError:
    """One documented error listing every file of the stack that is not on disk and where each goes."""
    lines = [f"{m.role} {m.air}: '{m.rel}' (looked in {', '.join(m.searched) or 'no configured folder'}; "
             f"put it in {WHERE[m.role]})" for m in missing]
    return _error("missingModelFile", f"PuLID needs {len(missing)} file(s) that are not on disk (nothing is "
                  "downloaded at run time): " + " | ".join(lines))
