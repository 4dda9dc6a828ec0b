"""Validation time of a request that uses every feature, beside a bare `json.loads` of the same text.

Median of N runs each, measured side by side in one process. Not a test; a figure.
"""

from __future__ import annotations

import json
import statistics
import sys
import time

from common import write_results

from imageinference.contract.validate import validate_task

IMG = "59a2edc2-45e6-429f-be5f-7ded59b92046"
EVERY_FEATURE = {
    "taskType": "imageInference", "taskUUID": "cc58c87f-bc7a-450e-a897-0e25a60e1cb2", "model": "rundiffusion:130@100",
    "positivePrompt": "a (glass house:1.2) on a cliff, [fog]", "negativePrompt": "blurry, lowres",
    "width": 1024, "height": 1024, "seed": 42, "steps": 28, "scheduler": "DPM++ 2M Karras", "CFGScale": 3.5,
    "promptWeighting": "sdEmbeds", "strength": 0.7, "maskMargin": 64, "outputType": "dataURI", "outputFormat": "PNG",
    "outputQuality": 90, "numberResults": 4, "includeCost": True, "deliveryMethod": "sync", "trueCFGScale": 1.5,
    "seedImage": IMG, "maskImage": IMG,
    "lora": [{"model": f"civitai:{i}@{i + 1}", "weight": 0.5 + i / 10} for i in range(4)],
    "controlNet": [{"model": "runware:25@1", "guideImage": IMG, "weight": 0.8, "startStep": 0, "endStep": 20,
                    "controlMode": "prompt"},
                   {"model": "runware:27@1", "guideImage": IMG, "startStepPercentage": 10, "endStepPercentage": 80}],
    "ipAdapters": [{"model": "runware:56@1", "guideImage": IMG, "weight": 0.6, "combineMethod": "average"}],
    "acceleratorOptions": {"teaCache": True, "teaCacheDistance": 0.4, "cacheStartStep": 2, "cacheEndStep": 24,
                           "cacheMaxConsecutiveSteps": 2},
    "advancedFeatures": {"hiresFix": {"model": "runware:esrgan@ultrasharp", "steps": 15, "strength": 0.6},
                         "layerDiffuse": True},
    "puLID": {"inputImages": [IMG], "idWeight": 1, "trueCFGScale": 1.5, "CFGStartStep": 3},
    "ultralytics": {"confidence": 0.5, "steps": 20, "strength": 0.35, "inpaintSize": 1024},
    "safety": {"checkContent": True},
}


def median_time(fn, runs: int) -> float:
    samples = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t)
    return statistics.median(samples)


def main(runs: int = 500) -> None:
    text = json.dumps(EVERY_FEATURE)
    validate_task(json.loads(text))  # warm-up, and proof the request is valid
    t_json = median_time(lambda: json.loads(text), runs)
    t_full = median_time(lambda: validate_task(json.loads(text)), runs)
    row = {"benchmark": "validation_time", "runs": runs, "bytes": len(text), "json_loads_us": round(t_json * 1e6, 1),
           "validate_us": round(t_full * 1e6, 1), "ratio": round(t_full / t_json, 1)}
    print(f"every-feature request ({len(text)} bytes): json.loads {row['json_loads_us']} us, "
          f"json.loads + validate {row['validate_us']} us (x{row['ratio']}), median of {runs}")
    print(json.dumps(row))
    write_results("validation_time", {k: v for k, v in row.items() if k != "benchmark"})


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 500)
