"""Which request features each model architecture offers (API reference §2.18/§2.19), and per-model profiles.

A model's architecture comes from the user's catalog or from the built-in table of well-known AIRs; an AIR of
unknown architecture gets the generic rules (nothing refused for architecture reasons).
Ranges and defaults on a model's own page win over the generic ones (seed pages: runware:5@1, rundiffusion:130@100).
"""

from __future__ import annotations

from dataclasses import dataclass, field

# Feature names are the request fields they gate ("cache.fbCache" etc. name acceleratorOptions switches).
FLUX_DEV = frozenset({
    "promptWeighting", "lora", "controlNet", "ipAdapters", "cache.fbCache", "cache.teaCache", "cache.dbCache",
    "hiresFix", "layerDiffuse", "pulid", "trueCFGScale", "ultralytics", "outpaint", "strength", "maskMargin",
})
SD_FAMILY = frozenset({
    "promptWeighting", "lora", "controlNet", "ipAdapters", "cache.teaCache", "cache.deepCache", "clipSkip",
    "hiresFix", "ultralytics", "outpaint", "strength", "maskMargin", "vae", "embeddings",
})
ALL_FEATURES = FLUX_DEV | SD_FAMILY | {"refiner", "photoMaker", "acePlusPlus", "inputs.referenceImages"}

ARCHITECTURES: dict[str, frozenset[str]] = {
    "flux-1-dev": FLUX_DEV,
    "flux-1-schnell": FLUX_DEV - {"layerDiffuse", "pulid", "controlNet", "ipAdapters"},
    "flux-1-fill-dev": FLUX_DEV | {"acePlusPlus", "inputs.referenceImages"},  # ACE++ takes its image there
    "flux-1-kontext-dev": frozenset({"lora", "ipAdapters", "trueCFGScale", "cache.fbCache", "cache.teaCache",
                                     "cache.dbCache", "inputs.referenceImages"}),
    "sdxl": SD_FAMILY | {"refiner", "photoMaker"},
    "sd-1-5": SD_FAMILY,
    "sd-2-1": frozenset({"promptWeighting", "lora", "cache.teaCache", "cache.deepCache", "clipSkip", "outpaint",
                         "strength", "maskMargin"}),
    # SD3 has no slug in the generated schemas; its field set is the runware:5@1 page (§2.19).
    "sd-3": frozenset({"lora", "controlNet", "cache.fbCache", "cache.teaCache", "cache.dbCache", "clipSkip",
                       "ultralytics", "outpaint", "strength", "maskMargin"}),
    "z-image": frozenset({"lora", "controlNet", "cache.fbCache", "cache.teaCache", "cache.dbCache", "outpaint",
                          "strength", "maskMargin"}),
}
for _alias, _target in (("sdxl-lightning", "sdxl"), ("sdxl-turbo", "sdxl"), ("pony", "sdxl"),
                        ("illustrious", "sdxl"), ("noobai", "sdxl"), ("z-image-turbo", "z-image")):
    ARCHITECTURES[_alias] = ARCHITECTURES[_target]

FAMILY: dict[str, str] = {arch: ("flow" if arch.startswith(("flux", "sd-3", "z-image")) else "eps")
                          for arch in ARCHITECTURES}


@dataclass(frozen=True)
class Profile:
    """Ranges, defaults and allowed values of one model (or of an architecture, or generic)."""

    architecture: str | None = None
    steps: tuple[int, int, int] = (1, 100, 20)  # min, max, default
    cfg: tuple[float, float, float] = (0.0, 50.0, 7.0)
    size_default: int | None = None  # when set, width/height are optional with this default
    clip_skip_max: int = 2
    prompt_weighting: tuple[str, ...] = ("compel", "sdEmbeds")
    size_optional: bool = False  # width/height may be left out (the model sizes from its reference images)
    max_reference_images: int | None = None
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def features(self) -> frozenset[str] | None:
        return ARCHITECTURES.get(self.architecture) if self.architecture else None

    @property
    def family(self) -> str | None:
        return FAMILY.get(self.architecture) if self.architecture else None


GENERIC = Profile()
ARCH_PROFILES: dict[str, Profile] = {
    arch: Profile(architecture=arch, cfg=(0.0, 50.0, 3.5) if arch.startswith("flux") else (0.0, 50.0, 7.0))
    for arch in ARCHITECTURES
}

# FLUX.1 Kontext [dev]: width/height optional, at most 2 reference images (§2.2, §2.3, §8)
ARCH_PROFILES["flux-1-kontext-dev"] = Profile("flux-1-kontext-dev", cfg=(0.0, 50.0, 3.5), size_optional=True,
                                              max_reference_images=2)

# Seed pages win where they give a range: rundiffusion:130@100 (steps ≤ 50, CFGScale ≤ 20, promptWeighting
# sdEmbeds only) and runware:5@1 (steps default 28, CFGScale ≤ 30, width/height default 1024, clipSkip 0–4).
MODEL_PROFILES: dict[str, Profile] = {
    "rundiffusion:130@100": Profile("flux-1-dev", steps=(1, 50, 20), cfg=(0.0, 20.0, 3.5),
                                    prompt_weighting=("sdEmbeds",)),
    "runware:5@1": Profile("sd-3", steps=(1, 100, 28), cfg=(0.0, 30.0, 7.0), size_default=1024, clip_skip_max=4),
}

# Built-in architectures of well-known AIRs (§6.2); the user's catalog may add more.
KNOWN_ARCHITECTURES: dict[str, str] = {
    "runware:100@1": "flux-1-schnell", "runware:101@1": "flux-1-dev", "runware:102@1": "flux-1-fill-dev",
    "runware:106@1": "flux-1-kontext-dev", "runware:107@1": "flux-1-dev", "runware:111@1": "flux-1-dev",
    "rundiffusion:110@101": "flux-1-dev", "rundiffusion:120@100": "flux-1-dev", "rundiffusion:130@100": "flux-1-dev",
    "runware:5@1": "sd-3", "civitai:101055@128078": "sdxl", "civitai:4384@128713": "sd-1-5",
    "civitai:43331@176425": "sd-1-5", "civitai:133005@288982": "sdxl", "runware:z-image@turbo": "z-image-turbo",
    "runware:z-image@0": "z-image", "rundiffusion:200@100": "z-image",
}


def profile_for(air: str, catalog_architecture: str | None = None) -> Profile:
    if air in MODEL_PROFILES:
        return MODEL_PROFILES[air]
    arch = catalog_architecture or KNOWN_ARCHITECTURES.get(air)
    if arch and arch in ARCH_PROFILES:
        return ARCH_PROFILES[arch]
    return GENERIC


# IP-Adapter AIRs (§6.5) and the base model each was trained for; which request architectures that base fits.
IP_ADAPTER_BASE: dict[str, str] = {
    **{f"runware:55@{i}": "sdxl" for i in range(1, 5)}, **{f"runware:55@{i}": "sd-1-5" for i in range(5, 11)},
    **{f"runware:56@{i}": "flux-1-dev" for i in range(1, 5)}, "runware:105@1": "flux-1-dev"}
IP_ADAPTER_FITS: dict[str, frozenset[str]] = {
    "sd-1-5": frozenset({"sd-1-5"}),
    "sdxl": frozenset({"sdxl", "sdxl-lightning", "sdxl-turbo", "pony", "illustrious", "noobai"}),
    "flux-1-dev": frozenset({"flux-1-dev", "flux-1-fill-dev", "flux-1-kontext-dev"}),
}
REDUX = "runware:105@1"
