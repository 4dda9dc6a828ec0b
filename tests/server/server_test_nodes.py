"""Test-only ComfyUI nodes for servers that tests and benchmarks start (copied as `__init__.py` into a folder of
their throwaway custom_nodes/): they hand a test what a graph computed, in float, and make
conditioning of a given shape. Kept out of the `imageinference` package: it is a node pack of its own, never
shipped.

- IITestSaveTensor: saves IMAGEs and MASKs (and optional text) to <output>/tensors/<name>.safetensors / .json;
  list outputs (a node's OUTPUT_IS_LIST) arrive whole: element i is saved as "<input>.<i>", the first also as
  "<input>".
- IITestEightBitResize: sets the face detailer's crop resize to ComfyUI's own 8-bit Lanczos
  (comfy.utils.common_upscale "lanczos": the crop through a truncated uint8 Pillow image and back, which is what
  Impact Pack's tensor_resize does too), or back to the pack's float Lanczos; re-runs every time.
- IITestConditioning: CONDITIONING of the shapes a model expects (random, from a seed): for UNets whose text
  encoders the tests do not build (SDXL's CLIP-G is fixed in ComfyUI at 694 M parameters).
"""

import json
import os

import folder_paths
import safetensors.torch
import torch


class IITestSaveTensor:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"name": ("STRING", {"default": "tensor"})},
                "optional": {"images": ("IMAGE",), "mask": ("MASK",), "text": ("STRING", {"forceInput": True})}}

    RETURN_TYPES = ()
    FUNCTION = "save"
    OUTPUT_NODE = True
    INPUT_IS_LIST = True
    CATEGORY = "testing"

    def save(self, name, images=None, mask=None, text=None):
        name = name[0]
        folder = os.path.join(folder_paths.get_output_directory(), "tensors")
        os.makedirs(folder, exist_ok=True)
        tensors = {}
        for key, values in (("images", images), ("mask", mask)):
            for i, value in enumerate(values or []):
                tensors[f"{key}.{i}"] = value.detach().float().cpu().contiguous()
                if i == 0:
                    tensors[key] = tensors[f"{key}.0"].clone()
        safetensors.torch.save_file(tensors, os.path.join(folder, f"{name}.safetensors"))
        if text:
            with open(os.path.join(folder, f"{name}.json"), "w") as fh:
                json.dump({"text": text[0]}, fh)
        return {"ui": {"tensors": [name]}}


class IITestConditioning:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"seed": ("INT", {"default": 0, "min": 0, "max": 2**31}),
                             "tokens": ("INT", {"default": 77, "min": 1, "max": 512}),
                             "context_dim": ("INT", {"default": 2048, "min": 1, "max": 8192}),
                             "pooled_dim": ("INT", {"default": 1280, "min": 0, "max": 8192})}}

    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "make"
    CATEGORY = "testing"

    def make(self, seed, tokens, context_dim, pooled_dim):
        gen = torch.Generator().manual_seed(seed)
        cond = torch.randn((1, tokens, context_dim), generator=gen)
        extra = {"pooled_output": torch.randn((1, pooled_dim), generator=gen)} if pooled_dim else {}
        return ([[cond, extra]],)


class IITestEightBitResize:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image": ("IMAGE",), "eight_bit": ("BOOLEAN", {"default": True})}}

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "set"
    CATEGORY = "testing"

    @classmethod
    def IS_CHANGED(cls, **kwargs):
        return float("nan")

    def set(self, image, eight_bit):
        import sys

        import comfy.utils

        def module(suffix):
            (found,) = {m for k, m in sys.modules.items() if k.endswith(suffix) and m is not None}
            return found

        engine, lanczos = module("engines.detailer.engine"), module("engines.samplers.lanczos")

        def eight_bit_lanczos(pixels, width, height, clamp=True):
            if pixels.shape[1] == height and pixels.shape[2] == width:
                return pixels
            return comfy.utils.common_upscale(pixels.movedim(-1, 1), width, height, "lanczos",
                                              "disabled").movedim(1, -1)

        engine.lanczos_resize = eight_bit_lanczos if eight_bit else lanczos.lanczos_resize
        return (image,)


NODE_CLASS_MAPPINGS = {"IITestSaveTensor": IITestSaveTensor, "IITestConditioning": IITestConditioning,
                       "IITestEightBitResize": IITestEightBitResize}
