"""`calibrate-teacache`: fit TeaCache's rescale polynomial for a model family on an embedded ComfyUI."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

DEFAULT_PROMPTS = (
    "a lighthouse on a rocky coast at dusk, warm light",
    "a portrait of an old fisherman, studio lighting, detailed skin",
    "a bowl of fruit on a wooden table, still life painting",
    "a futuristic city street at night, neon signs, rain",
)


def cmd_calibrate(args: argparse.Namespace) -> int:
    from ..comfyui.env import HOW_TO_GET_COMFYUI, comfyui_found
    from ..comfyui.runtime import use_inprocess_comfyui
    from ..contract.errors import ContractError

    if not comfyui_found():
        print(f"no ComfyUI to embed. {HOW_TO_GET_COMFYUI}", file=sys.stderr)
        return 2
    use_inprocess_comfyui()
    import folder_paths
    import nodes

    from ..engines.cache.calibrate import calibrate
    from ..engines.cache.profiles import calibration_path, save_calibration
    from ..engines.models.catalog import Catalog
    from ..engines.models.loader import load_model

    try:
        loaded = load_model(args.model, Catalog.load())
        model, clip = loaded.model, loaded.clip
        if clip is None:
            raise ContractError.single("missingTextEncoders", f"{args.model} has no text encoders in the catalog; "
                                       "calibration needs them to encode its prompts", "model", "string")
    except ContractError as exc:
        print(json.dumps(exc.to_json(), indent=2, ensure_ascii=False))
        return 1
    prompts = args.prompt or list(DEFAULT_PROMPTS)
    conds = [nodes.CLIPTextEncode().encode(clip, text)[0] for text in prompts]
    negative = nodes.CLIPTextEncode().encode(clip, "")[0]
    try:
        result = calibrate(model, conds, steps=args.steps, seeds=tuple(range(1, args.seeds + 1)), cfg=args.cfg,
                           negative=negative, width=args.width, height=args.height)
    except ValueError as exc:  # an unsupported model, or runs that showed no change to fit
        error = ContractError.single("invalidModel", f"calibration failed: {exc}", "model", "string")
        print(json.dumps(error.to_json(), indent=2, ensure_ascii=False))
        return 1
    profile = result.profile
    family = args.family or result.family
    report: dict[str, Any] = {
        "family": family, "coefficients": list(profile.coefficients), "thresholdScale": profile.threshold_scale,
        "points": len(result.points), "meanAbsError": result.mean_abs_error, "model": args.model,
        "steps": args.steps, "size": [args.width, args.height], "prompts": len(prompts), "seeds": args.seeds}
    if args.write:
        path = calibration_path(folder_paths.get_user_directory())
        save_calibration(path, family, profile, {k: report[k] for k in ("model", "points", "meanAbsError", "steps")})
        report["written"] = str(path)
    print(json.dumps(report, indent=2))
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser("calibrate-teacache", help="run a FLUX or SD3 model uncached over a few prompts and fit the "
                                                  "TeaCache rescale polynomial for its family")
    p.add_argument("--model", required=True, help="the model AIR (resolved through the catalog)")
    p.add_argument("--prompt", action="append", help="a prompt (repeatable; four varied defaults otherwise)")
    p.add_argument("--steps", type=int, default=28)
    p.add_argument("--seeds", type=int, default=2, help="seeds per prompt")
    p.add_argument("--cfg", type=float, default=1.0)
    p.add_argument("--width", type=int, default=1024)
    p.add_argument("--height", type=int, default=1024)
    p.add_argument("--family", help="store under this family name (default: the detected flux or sd3)")
    p.add_argument("--write", action="store_true",
                   help="save into ComfyUI's user folder (imageinference/teacache_calibration.json), where the "
                        "TeaCache node and request path pick it up")
    p.set_defaults(handler=cmd_calibrate)
