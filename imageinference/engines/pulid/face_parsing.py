"""Face parsing for PuLID's vision-tower input (adapter: torch, safetensors): the BiSeNet face parser the published
pipeline runs through facexlib, written here from the network's description and its weights' key layout.

What it does: the aligned 512 px face is normalised with ImageNet's mean and std and labelled per pixel with the 19
CelebAMask-HQ classes; PuLID then paints white every pixel labelled background, ears, earring, neck, necklace,
cloth or hat (WHITENED) and turns the rest (skin, brows, eyes, glasses, nose, mouth, lips, hair) grey, so the
vision tower sees the face's features only.

The network (BiSeNet with a ResNet-18 context path; the spatial path is replaced by the backbone's 1/8 features):
- backbone: 7x7/2 convolution, BatchNorm, ReLU, 3x3/2 max pool, then four stages of two residual basic blocks
  (3x3 convolutions; the first block of stages 2-4 halves the resolution and projects its shortcut with a 1x1
  convolution); the outputs of stages 2, 3 and 4 are the 1/8, 1/16 and 1/32 features;
- context: the 1/32 features' global average (1x1 convolution) is added to their attention-refined version
  (3x3 convolution, then channel attention: global average, 1x1 convolution, BatchNorm, sigmoid, multiply); the
  sum is upsampled (nearest) to 1/16 and convolved; the same refinement on the 1/16 features, plus that, is
  upsampled to 1/8 and convolved;
- fusion: the 1/8 backbone features joined with the 1/8 context go through a 1x1 convolution, then a squeeze and
  excitation (global average, 1x1 down to a quarter, ReLU, 1x1 up, sigmoid) whose product is added to its input;
- head: a 3x3 convolution and a 1x1 convolution to the classes, bilinearly upsampled (corners aligned) to the
  input size. Only this main head is run; the two auxiliary heads in the file (training only) are read and unused.
Every convolution of a "convolution block" is bias-free and followed by BatchNorm (eps 1e-5) and ReLU.

Widths are read from the weights, so a file with other channel counts loads too. Weights are safetensors only
(the published `parsing_bisenet.pth` is a pickle: convert it once with `convert_checkpoint`, which reads it with
torch's weights-only loader, or take a safetensors copy).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F

CLASSES = 19
# CelebAMask-HQ labels PuLID whitens: background, left/right ear, earring, neck, necklace, cloth, hat
WHITENED = (0, 7, 8, 9, 14, 15, 16, 18)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
BN_EPS = 1e-5
STAGE_STRIDES = (1, 2, 2, 2)
BN_PARTS = ("weight", "bias", "running_mean", "running_var")


def _required_keys() -> list[str]:
    keys = ["cp.resnet.conv1.weight", *(f"cp.resnet.bn1.{p}" for p in BN_PARTS)]

    def block(prefix: str) -> None:
        keys.extend([f"{prefix}.conv.weight", *(f"{prefix}.bn.{p}" for p in BN_PARTS)])

    for stage in range(1, 5):
        for b in range(2):
            p = f"cp.resnet.layer{stage}.{b}"
            keys.extend([f"{p}.conv1.weight", f"{p}.conv2.weight", *(f"{p}.bn1.{q}" for q in BN_PARTS),
                         *(f"{p}.bn2.{q}" for q in BN_PARTS)])
    for arm in ("cp.arm16", "cp.arm32"):
        block(f"{arm}.conv")
        keys.extend([f"{arm}.conv_atten.weight", *(f"{arm}.bn_atten.{p}" for p in BN_PARTS)])
    for name in ("cp.conv_head32", "cp.conv_head16", "cp.conv_avg", "ffm.convblk", "conv_out.conv"):
        block(name)
    keys.extend(["ffm.conv1.weight", "ffm.conv2.weight", "conv_out.conv_out.weight"])
    return keys


REQUIRED = tuple(_required_keys())


class FaceParser:
    """BiSeNet face parsing over a state dict in facexlib's `parsing_bisenet` key layout (inference only)."""

    def __init__(self, sd: Mapping[str, torch.Tensor]):
        missing = [k for k in REQUIRED if k not in sd]
        if missing:
            raise ValueError(f"not a BiSeNet face-parsing file (facexlib's parsing_bisenet layout): missing "
                             f"{missing[:4]}{' ...' if len(missing) > 4 else ''}")
        self.w = {k: v.detach().float() for k, v in sd.items() if not k.endswith("num_batches_tracked")}
        classes = self.w["conv_out.conv_out.weight"].shape[0]
        if classes != CLASSES:
            raise ValueError(f"the face parser has {classes} classes; PuLID's labels need CelebAMask-HQ's "
                             f"{CLASSES}")

    def to(self, device: torch.device | str, dtype: torch.dtype = torch.float32) -> FaceParser:
        self.w = {k: v.to(device, dtype) for k, v in self.w.items()}
        return self

    @property
    def dtype(self) -> torch.dtype:
        return self.w["conv_out.conv_out.weight"].dtype

    # ---- pieces (names are the weights' prefixes)

    def _bn(self, x: torch.Tensor, prefix: str) -> torch.Tensor:
        w = self.w
        return F.batch_norm(x, w[f"{prefix}.running_mean"], w[f"{prefix}.running_var"], w[f"{prefix}.weight"],
                            w[f"{prefix}.bias"], training=False, eps=BN_EPS)

    def _conv(self, x: torch.Tensor, key: str, stride: int = 1) -> torch.Tensor:
        weight = self.w[key]
        return F.conv2d(x, weight, stride=stride, padding=weight.shape[-1] // 2)

    def _conv_block(self, x: torch.Tensor, prefix: str) -> torch.Tensor:
        return F.relu(self._bn(self._conv(x, f"{prefix}.conv.weight"), f"{prefix}.bn"))

    def _residual(self, x: torch.Tensor, prefix: str, stride: int) -> torch.Tensor:
        y = F.relu(self._bn(self._conv(x, f"{prefix}.conv1.weight", stride), f"{prefix}.bn1"))
        y = self._bn(self._conv(y, f"{prefix}.conv2.weight"), f"{prefix}.bn2")
        if f"{prefix}.downsample.0.weight" in self.w:
            x = self._bn(self._conv(x, f"{prefix}.downsample.0.weight", stride), f"{prefix}.downsample.1")
        return F.relu(x + y)

    def _backbone(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = F.relu(self._bn(self._conv(x, "cp.resnet.conv1.weight", 2), "cp.resnet.bn1"))
        x = F.max_pool2d(x, kernel_size=3, stride=2, padding=1)
        features = []
        for stage, stride in enumerate(STAGE_STRIDES, start=1):
            x = self._residual(x, f"cp.resnet.layer{stage}.0", stride)
            x = self._residual(x, f"cp.resnet.layer{stage}.1", 1)
            features.append(x)
        return features[1:]  # 1/8, 1/16, 1/32

    def _refine(self, x: torch.Tensor, prefix: str) -> torch.Tensor:
        feat = self._conv_block(x, f"{prefix}.conv")
        gate = self._bn(self._conv(feat.mean(dim=(2, 3), keepdim=True), f"{prefix}.conv_atten.weight"),
                        f"{prefix}.bn_atten")
        return feat * torch.sigmoid(gate)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) ImageNet-normalised RGB -> (B, 19, H, W) class scores."""
        f8, f16, f32 = self._backbone(x)
        pooled = self._conv_block(f32.mean(dim=(2, 3), keepdim=True), "cp.conv_avg")
        c32 = self._refine(f32, "cp.arm32") + pooled
        c32 = self._conv_block(F.interpolate(c32, size=f16.shape[2:], mode="nearest"), "cp.conv_head32")
        c16 = self._refine(f16, "cp.arm16") + c32
        c16 = self._conv_block(F.interpolate(c16, size=f8.shape[2:], mode="nearest"), "cp.conv_head16")
        fused = self._conv_block(torch.cat((f8, c16), dim=1), "ffm.convblk")
        squeeze = F.relu(self._conv(fused.mean(dim=(2, 3), keepdim=True), "ffm.conv1.weight"))
        fused = fused + fused * torch.sigmoid(self._conv(squeeze, "ffm.conv2.weight"))
        out = self._conv(self._conv_block(fused, "conv_out.conv"), "conv_out.conv_out.weight")
        return F.interpolate(out, size=x.shape[2:], mode="bilinear", align_corners=True)

    @torch.no_grad()
    def labels(self, rgb: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) RGB in [0, 1] -> (B, 1, H, W) class labels."""
        mean = torch.tensor(IMAGENET_MEAN, device=rgb.device, dtype=rgb.dtype).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD, device=rgb.device, dtype=rgb.dtype).view(1, 3, 1, 1)
        return self.logits(((rgb - mean) / std).to(self.dtype)).argmax(dim=1, keepdim=True)


def grey(rgb: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) -> the ITU-R 601 luma repeated on three channels (PuLID's grey)."""
    y = 0.299 * rgb[:, 0:1] + 0.587 * rgb[:, 1:2] + 0.114 * rgb[:, 2:3]
    return y.repeat(1, 3, 1, 1)


def features_only(rgb: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
    """PuLID's vision-tower picture of an aligned face: grey, with the WHITENED classes white ((B, 3, H, W) RGB in
    [0, 1] and its (B, 1, H, W) labels; labels None = no parsing, the whole crop in grey)."""
    g = grey(rgb)
    if labels is None:
        return g
    white = torch.zeros_like(labels, dtype=torch.bool)
    for label in WHITENED:
        white |= labels == label
    return torch.where(white, torch.ones_like(g), g)


def load_parser(path: str) -> FaceParser:
    """A FaceParser from a .safetensors file (no pickle is ever read here)."""
    if not path.lower().endswith(".safetensors"):
        raise ValueError(f"{path}: face-parsing weights are read from .safetensors only; convert a .pth once with "
                         "imageinference.engines.pulid.face_parsing.convert_checkpoint (a weights-only read)")
    import safetensors.torch

    return FaceParser(safetensors.torch.load_file(path, device="cpu"))


def convert_checkpoint(src: str, dest: str) -> int:
    """Convert facexlib's parsing_bisenet.pth to safetensors; returns the number of tensors written.

    The .pth is read with torch.load(weights_only=True): torch's restricted unpickler, which builds tensors and
    plain containers only and refuses any other object, so a tampered file cannot run code. The result is checked
    to be a BiSeNet parser before it is written."""
    import safetensors.torch

    sd = torch.load(src, map_location="cpu", weights_only=True)
    if isinstance(sd, dict) and isinstance(sd.get("state_dict"), dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ValueError(f"{src} is not a state dict of tensors")
    sd = {(k[len("module."):] if k.startswith("module.") else k): v.contiguous() for k, v in sd.items()}
    FaceParser(sd)
    safetensors.torch.save_file(sd, dest, metadata={"converted_from": "facexlib parsing_bisenet.pth"})
    return len(sd)
