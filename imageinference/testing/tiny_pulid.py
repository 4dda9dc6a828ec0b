"""Tiny random-weight PuLID-FLUX weights and ID-encoder models in the published key layouts (for tests).

- SCRFD-layout face detectors (ONNX, written with the `onnx` package): 9 outputs in SCRFD's order for a 640x640
  canvas (scores, boxes, keypoints at strides 8, 16, 32, two anchors per location), computed from constants plus
  0 x the input's mean: `FACE` puts one face (box and 5 keypoints) at a known place, `NO_FACE` scores everything
  below the detection threshold.
- An ArcFace-layout recognizer (ONNX): (N, 3, 112, 112) -> (N, 512) through a strided convolution and a dense layer
  with seeded random weights, so the embedding depends on the aligned face.
- An EVA02-CLIP-L-14-336-layout checkpoint (`visual.*` keys as in EVA_CLIP's .pt, text keys and stored rotary
  tables included) with small widths: 24 blocks of width 128 (2 heads), patch 14 on a 4x4 grid (56 px input).
- PuLID-FLUX weights (`pulid_encoder.*`, `pulid_ca.<n>.*`) with small IDFormer widths and one cross-attention layer
  per slot of a FLUX model with the given block counts (width 3072, as FLUX).
- BiSeNet face parsers in facexlib's `parsing_bisenet` key layout (safetensors, BatchNorm statistics included, the
  two auxiliary heads too): `bisenet` with small widths for the pipeline tests, `bisenet_facexlib` with facexlib's
  own fixed widths (ResNet-18: 64..512) so facexlib's BiSeNet class can load the same file.
Shapes come from explicit key tables here, not from the pack's modules, so loading them tests the pack's layout.
Files are cached under the tiny-models root like the other tiny models.
"""

from __future__ import annotations

import functools
import math
import os
import tempfile
from pathlib import Path

import numpy as np

from ..engines.pulid.schedule import ca_slots
from .tiny_models import build_once, cache_root

VERSION = "v1"
CANVAS = 640
STRIDES = (8, 16, 32)
ANCHORS = 2
# one face in the 640x640 detection canvas: box and keypoints (left eye, right eye, nose, mouth left, mouth right)
FACE_BOX = (224.0, 176.0, 416.0, 432.0)
FACE_KPS = ((280.0, 272.0), (360.0, 272.0), (320.0, 320.0), (288.0, 376.0), (352.0, 376.0))
FACE_SCORE = 0.93
# the same face with keypoints that are an exact similarity of the FFHQ template (half size, shifted): every
# estimator of the alignment (least squares, or facexlib's LMEDS, which drops points it finds inconsistent) agrees
FFHQ_TEMPLATE_512 = ((192.98138, 239.94708), (318.90277, 240.1936), (256.63416, 314.01935), (201.26117, 371.41043),
                     (313.08905, 371.15118))
FACE_KPS_TEMPLATE = tuple((x * 0.5 + 192.0, y * 0.5 + 150.0) for x, y in FFHQ_TEMPLATE_512)
EVA = {"width": 128, "depth": 24, "patch": 14, "grid": 4, "embed": 64, "hidden": 341}
IDFORMER = {"dim": 128, "queries": 8, "out": 64, "depth": 10, "inner": 128, "ff": 512, "id_tokens": 5, "map": 128}
CA_INNER = 256
FLUX_WIDTH = 3072
REC_DIM = 512


def _write_atomic(dest: Path, data: bytes) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, suffix=".tmp")
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.replace(tmp, dest)


# ---------------------------------------------------------------- ONNX models

def scrfd_outputs(face: bool, kps_points=FACE_KPS) -> list[np.ndarray]:
    """The nine SCRFD outputs for the 640 canvas (unbatched: (K*A, 1|4|10))."""
    scores, boxes, kps = [], [], []
    cx, cy = (FACE_BOX[0] + FACE_BOX[2]) / 2, (FACE_BOX[1] + FACE_BOX[3]) / 2
    for stride in STRIDES:
        side = CANVAS // stride
        n = side * side * ANCHORS
        s = np.full((n, 1), 0.01, dtype=np.float32)
        b = np.ones((n, 4), dtype=np.float32)
        k = np.zeros((n, 10), dtype=np.float32)
        if face and stride == 16:
            col, row = round(cx / stride), round(cy / stride)
            j = (row * side + col) * ANCHORS
            ax, ay = col * stride, row * stride
            s[j, 0] = FACE_SCORE
            b[j] = [(ax - FACE_BOX[0]) / stride, (ay - FACE_BOX[1]) / stride, (FACE_BOX[2] - ax) / stride,
                    (FACE_BOX[3] - ay) / stride]
            k[j] = [v for x, y in kps_points for v in ((x - ax) / stride, (y - ay) / stride)]
        scores.append(s)
        boxes.append(b)
        kps.append(k)
    return scores + boxes + kps


def _model_bytes(graph) -> bytes:
    import onnx
    from onnx import helper

    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="imageinference-tests")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def build_scrfd(dest: Path, face: bool = True, kps_points=FACE_KPS) -> None:
    from onnx import TensorProto, helper, numpy_helper

    inp = helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [1, 3, "height", "width"])
    nodes = [helper.make_node("ReduceMean", ["input.1"], ["mean"], keepdims=0),
             helper.make_node("Mul", ["mean", "zero"], ["nothing"])]
    inits = [numpy_helper.from_array(np.array(0.0, dtype=np.float32), "zero")]
    outputs = []
    for i, arr in enumerate(scrfd_outputs(face, kps_points)):
        inits.append(numpy_helper.from_array(arr, f"const_{i}"))
        name = f"out_{i}"
        nodes.append(helper.make_node("Add", [f"const_{i}", "nothing"], [name]))
        outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, list(arr.shape)))
    graph = helper.make_graph(nodes, "tiny_scrfd", [inp], outputs, inits)
    _write_atomic(dest, _model_bytes(graph))


def build_recognizer(dest: Path, seed: int = 3101) -> None:
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    conv_w = (rng.standard_normal((8, 3, 8, 8)) / math.sqrt(3 * 64)).astype(np.float32)
    conv_b = (rng.standard_normal(8) * 0.02).astype(np.float32)
    dense_w = (rng.standard_normal((8 * 14 * 14, REC_DIM)) / math.sqrt(8 * 14 * 14)).astype(np.float32)
    dense_b = (rng.standard_normal(REC_DIM) * 0.02).astype(np.float32)
    inits = [numpy_helper.from_array(a, n) for a, n in ((conv_w, "conv_w"), (conv_b, "conv_b"),
                                                        (dense_w, "dense_w"), (dense_b, "dense_b"))]
    nodes = [helper.make_node("Conv", ["input.1", "conv_w", "conv_b"], ["c"], kernel_shape=[8, 8], strides=[8, 8]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("Flatten", ["r"], ["f"], axis=1),
             helper.make_node("Gemm", ["f", "dense_w", "dense_b"], ["683"])]
    graph = helper.make_graph(nodes, "tiny_arcface",
                              [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, ["None", 3, 112, 112])],
                              [helper.make_tensor_value_info("683", TensorProto.FLOAT, ["None", REC_DIM])], inits)
    _write_atomic(dest, _model_bytes(graph))


# ---------------------------------------------------------------- torch checkpoints

def _random(shapes: dict[str, tuple[int, ...]], seed: int, scale: float = 1.0):
    """Deterministic fan-in scaled weights, unit LayerNorm scales with a little noise, small biases."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    out = {}
    for key, shape in shapes.items():
        if len(shape) >= 2 and not key.endswith(("pos_embed", "cls_token", "latents", "freqs_cos", "freqs_sin")):
            fan_in = math.prod(shape[1:])
            out[key] = torch.randn(shape, generator=gen) * (scale / math.sqrt(fan_in))
        elif key.endswith(("norm1.weight", "norm2.weight", "norm.weight", "_ln.weight", "ffn_ln.weight")) or (
                ".weight" in key and len(shape) == 1):
            out[key] = 1.0 + 0.1 * torch.randn(shape, generator=gen)
        else:
            out[key] = 0.05 * torch.randn(shape, generator=gen)
    return out


def eva_shapes() -> dict[str, tuple[int, ...]]:
    w, p, g, h, e = EVA["width"], EVA["patch"], EVA["grid"], EVA["hidden"], EVA["embed"]
    shapes: dict[str, tuple[int, ...]] = {
        "visual.cls_token": (1, 1, w), "visual.pos_embed": (1, g * g + 1, w),
        "visual.patch_embed.proj.weight": (w, 3, p, p), "visual.patch_embed.proj.bias": (w,),
        "visual.rope.freqs_cos": (g * g, 64), "visual.rope.freqs_sin": (g * g, 64),
        "visual.norm.weight": (w,), "visual.norm.bias": (w,), "visual.head.weight": (e, w), "visual.head.bias": (e,),
        "text.positional_embedding": (77, 32), "text.token_embedding.weight": (100, 32), "logit_scale": (1,),
    }
    for i in range(EVA["depth"]):
        b = f"visual.blocks.{i}"
        shapes.update({
            f"{b}.norm1.weight": (w,), f"{b}.norm1.bias": (w,), f"{b}.norm2.weight": (w,), f"{b}.norm2.bias": (w,),
            f"{b}.attn.q_bias": (w,), f"{b}.attn.v_bias": (w,), f"{b}.attn.q_proj.weight": (w, w),
            f"{b}.attn.k_proj.weight": (w, w), f"{b}.attn.v_proj.weight": (w, w),
            f"{b}.attn.inner_attn_ln.weight": (w,), f"{b}.attn.inner_attn_ln.bias": (w,),
            f"{b}.attn.proj.weight": (w, w), f"{b}.attn.proj.bias": (w,),
            f"{b}.attn.rope.freqs_cos": (g * g, 64), f"{b}.attn.rope.freqs_sin": (g * g, 64),
            f"{b}.mlp.w1.weight": (h, w), f"{b}.mlp.w1.bias": (h,), f"{b}.mlp.w2.weight": (h, w),
            f"{b}.mlp.w2.bias": (h,), f"{b}.mlp.ffn_ln.weight": (h,), f"{b}.mlp.ffn_ln.bias": (h,),
            f"{b}.mlp.w3.weight": (w, h), f"{b}.mlp.w3.bias": (w,),
        })
    return shapes


def build_eva(dest: Path, seed: int = 3201) -> None:
    import io

    import torch

    buf = io.BytesIO()
    torch.save(_random(eva_shapes(), seed), buf)
    _write_atomic(dest, buf.getvalue())


def _mlp_shapes(prefix: str, sizes: list[tuple[int, int]]) -> dict[str, tuple[int, ...]]:
    (i0, o0), (i1, o1), (i2, o2) = sizes
    return {f"{prefix}.0.weight": (o0, i0), f"{prefix}.0.bias": (o0,), f"{prefix}.1.weight": (o0,),
            f"{prefix}.1.bias": (o0,), f"{prefix}.3.weight": (o1, i1), f"{prefix}.3.bias": (o1,),
            f"{prefix}.4.weight": (o1,), f"{prefix}.4.bias": (o1,), f"{prefix}.6.weight": (o2, i2),
            f"{prefix}.6.bias": (o2,)}


def pulid_shapes(double_blocks: int, single_blocks: int) -> dict[str, tuple[int, ...]]:
    c = IDFORMER
    d, m = c["dim"], c["map"]
    shapes: dict[str, tuple[int, ...]] = {"pulid_encoder.latents": (1, c["queries"], d),
                                          "pulid_encoder.proj_out": (d, c["out"])}
    for i in range(c["depth"]):
        p = f"pulid_encoder.layers.{i}"
        shapes.update({f"{p}.0.norm1.weight": (d,), f"{p}.0.norm1.bias": (d,), f"{p}.0.norm2.weight": (d,),
                       f"{p}.0.norm2.bias": (d,), f"{p}.0.to_q.weight": (c["inner"], d),
                       f"{p}.0.to_kv.weight": (2 * c["inner"], d), f"{p}.0.to_out.weight": (d, c["inner"]),
                       f"{p}.1.0.weight": (d,), f"{p}.1.0.bias": (d,), f"{p}.1.1.weight": (c["ff"], d),
                       f"{p}.1.3.weight": (d, c["ff"])})
    for i in range(5):
        shapes.update(_mlp_shapes(f"pulid_encoder.mapping_{i}", [(EVA["width"], m), (m, m), (m, d)]))
    shapes.update(_mlp_shapes("pulid_encoder.id_embedding_mapping",
                              [(REC_DIM + EVA["embed"], m), (m, m), (m, d * c["id_tokens"])]))
    for n in range(len(ca_slots(double_blocks, single_blocks))):
        p = f"pulid_ca.{n}"
        shapes.update({f"{p}.norm1.weight": (c["out"],), f"{p}.norm1.bias": (c["out"],),
                       f"{p}.norm2.weight": (FLUX_WIDTH,), f"{p}.norm2.bias": (FLUX_WIDTH,),
                       f"{p}.to_q.weight": (CA_INNER, FLUX_WIDTH), f"{p}.to_kv.weight": (2 * CA_INNER, c["out"]),
                       f"{p}.to_out.weight": (FLUX_WIDTH, CA_INNER)})
    return shapes


def build_pulid(dest: Path, double_blocks: int = 1, single_blocks: int = 1, seed: int = 3301) -> None:
    import safetensors.torch
    import torch

    sd = {k: v.to(torch.bfloat16).contiguous() for k, v in _random(pulid_shapes(double_blocks, single_blocks),
                                                                     seed).items()}
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, suffix=".tmp")
    os.close(fd)
    safetensors.torch.save_file(sd, tmp, metadata={"imageinference": "tiny random-weight PuLID-FLUX layout"})
    os.replace(tmp, dest)


# BiSeNet widths: stem, the four stages, attention refinement, fusion, main head, auxiliary heads
BISENET_TINY = {"stem": 8, "stages": (8, 16, 32, 64), "arm": 16, "fuse": 32, "head": 16, "aux": 8}
BISENET_FACEXLIB = {"stem": 64, "stages": (64, 128, 256, 512), "arm": 128, "fuse": 256, "head": 256, "aux": 64}
PARSING_CLASSES = 19


def bisenet_shapes(c: dict) -> dict[str, tuple[int, ...]]:
    """facexlib's parsing_bisenet keys and shapes for the widths `c` (BatchNorm: weight, bias, running stats)."""
    shapes: dict[str, tuple[int, ...]] = {}

    def bn(prefix: str, n: int) -> None:
        for part in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{prefix}.{part}"] = (n,)
        shapes[f"{prefix}.num_batches_tracked"] = ()

    def block(prefix: str, cin: int, cout: int, k: int) -> None:
        shapes[f"{prefix}.conv.weight"] = (cout, cin, k, k)
        bn(f"{prefix}.bn", cout)

    shapes["cp.resnet.conv1.weight"] = (c["stem"], 3, 7, 7)
    bn("cp.resnet.bn1", c["stem"])
    cin = c["stem"]
    for stage, cout in enumerate(c["stages"], start=1):
        for b in range(2):
            p = f"cp.resnet.layer{stage}.{b}"
            first_in = cin if b == 0 else cout
            shapes[f"{p}.conv1.weight"] = (cout, first_in, 3, 3)
            bn(f"{p}.bn1", cout)
            shapes[f"{p}.conv2.weight"] = (cout, cout, 3, 3)
            bn(f"{p}.bn2", cout)
            if b == 0 and stage > 1:
                shapes[f"{p}.downsample.0.weight"] = (cout, first_in, 1, 1)
                bn(f"{p}.downsample.1", cout)
        cin = cout
    s8, s16, s32 = c["stages"][1:]
    for name, width in (("arm16", s16), ("arm32", s32)):
        block(f"cp.{name}.conv", width, c["arm"], 3)
        shapes[f"cp.{name}.conv_atten.weight"] = (c["arm"], c["arm"], 1, 1)
        bn(f"cp.{name}.bn_atten", c["arm"])
    block("cp.conv_head32", c["arm"], c["arm"], 3)
    block("cp.conv_head16", c["arm"], c["arm"], 3)
    block("cp.conv_avg", s32, c["arm"], 1)
    block("ffm.convblk", s8 + c["arm"], c["fuse"], 1)
    shapes["ffm.conv1.weight"] = (c["fuse"] // 4, c["fuse"], 1, 1)
    shapes["ffm.conv2.weight"] = (c["fuse"], c["fuse"] // 4, 1, 1)
    for head, cin_, mid in (("conv_out", c["fuse"], c["head"]), ("conv_out16", c["arm"], c["aux"]),
                            ("conv_out32", c["arm"], c["aux"])):
        block(f"{head}.conv", cin_, mid, 3)
        shapes[f"{head}.conv_out.weight"] = (PARSING_CLASSES, mid, 1, 1)
    return shapes


def build_bisenet(dest: Path, widths: dict | None = None, seed: int = 3401) -> None:
    import safetensors.torch
    import torch

    gen = torch.Generator().manual_seed(seed)
    sd = {}
    for key, shape in bisenet_shapes(widths or BISENET_TINY).items():
        if key.endswith("num_batches_tracked"):
            sd[key] = torch.tensor(1000, dtype=torch.int64)
        elif key.endswith("running_var"):
            sd[key] = 0.5 + torch.rand(shape, generator=gen)
        elif key.endswith("running_mean"):
            sd[key] = 0.1 * torch.randn(shape, generator=gen)
        elif key.endswith(".weight") and len(shape) == 1:  # BatchNorm scales
            sd[key] = 1.0 + 0.2 * torch.randn(shape, generator=gen)
        elif key.endswith("bias"):
            sd[key] = 0.1 * torch.randn(shape, generator=gen)
        else:  # convolutions: fan-in scaled so 20 layers neither vanish nor explode
            sd[key] = torch.randn(shape, generator=gen) * math.sqrt(2.0 / math.prod(shape[1:]))
            if key == "conv_out.conv_out.weight":
                # zero-mean class rows: after ReLU every feature is positive, so otherwise one class wins almost
                # everywhere; centred, the labels follow the picture and mix whitened and kept classes
                sd[key] = 4 * (sd[key] - sd[key].mean(dim=1, keepdim=True))
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, suffix=".tmp")
    os.close(fd)
    safetensors.torch.save_file(sd, tmp, metadata={"imageinference": "tiny random-weight BiSeNet face parser"})
    os.replace(tmp, dest)


# ---------------------------------------------------------------- files and catalog

FILES = {
    "pulid": ("pulid", f"tiny_pulid_flux_1x1_{VERSION}.safetensors", build_pulid),
    "scrfd": ("insightface/models/tiny", f"tiny_scrfd_face_{VERSION}.onnx", lambda d: build_scrfd(d, True)),
    "scrfd_template": ("insightface/models/tiny", f"tiny_scrfd_template_face_{VERSION}.onnx",
                       lambda d: build_scrfd(d, True, FACE_KPS_TEMPLATE)),
    "scrfd_noface": ("insightface/models/tiny", f"tiny_scrfd_noface_{VERSION}.onnx", lambda d: build_scrfd(d, False)),
    "arcface": ("insightface/models/tiny", f"tiny_arcface_{VERSION}.onnx", build_recognizer),
    "eva": ("clip_vision", f"tiny_eva02_clip_l_{VERSION}.pt", build_eva),
    "bisenet": ("pulid", "tiny_parsing_bisenet_v2.safetensors", build_bisenet),
}
# built on demand only (facexlib's full widths: 50 MB)
FACEXLIB_BISENET = ("pulid", "tiny_parsing_bisenet_facexlib_widths_v2.safetensors")


def ensure_facexlib_bisenet(root: Path | None = None) -> Path:
    """Random weights with facexlib's own BiSeNet widths (its class has them fixed); returns the file."""
    root = root or cache_root()
    dest = root / FACEXLIB_BISENET[0] / FACEXLIB_BISENET[1]
    build_once(dest, lambda: build_bisenet(dest, BISENET_FACEXLIB, seed=3402))
    return dest


def ensure_tiny_pulid(root: Path | None = None) -> Path:
    """Build the missing tiny PuLID files under the tiny-models root; return the root."""
    root = root or cache_root()
    for folder, name, build in FILES.values():
        dest = root / folder / name
        build_once(dest, functools.partial(build, dest))
    return root


def rel(key: str) -> str:
    folder, name, _ = FILES[key]
    return f"{folder}/{name}"


def catalog_entries() -> dict[str, dict]:
    """Catalog entries naming the tiny files (AIRs test:*)."""
    encoders = {"faceDetection": "test:scrfd@1", "faceRecognition": "test:arcface@1", "visionTower": "test:eva@1",
                "faceParsing": "test:bisenet@1"}
    return {
        "test:pulid@1": {"kind": "pulid", "architecture": "flux-1-dev", "files": {"model": rel("pulid")},
                         "options": {"encoders": encoders}},
        "test:pulid@noface": {"kind": "pulid", "files": {"model": rel("pulid")},
                              "options": {"encoders": dict(encoders, faceDetection="test:scrfd@noface")}},
        "test:pulid@missing": {"kind": "pulid", "files": {"model": "pulid/not_there.safetensors"},
                               "options": {"encoders": dict(encoders, faceDetection="test:scrfd@missing",
                                                            visionTower="test:eva@missing")}},
        "test:pulid@reference": {"kind": "pulid", "files": {"model": rel("pulid")}, "options": {"encoders": dict(
            encoders, faceDetection="test:scrfd@template", faceParsing="test:bisenet@facexlib")}},
        "test:scrfd@template": {"kind": "idEncoder", "files": {"model": rel("scrfd_template")},
                                "options": {"role": "faceDetection"}},
        "test:bisenet@facexlib": {"kind": "idEncoder", "files": {"model": "/".join(FACEXLIB_BISENET)},
                                  "options": {"role": "faceParsing"}},
        "test:scrfd@1": {"kind": "idEncoder", "files": {"model": rel("scrfd")}, "options": {"role": "faceDetection"}},
        "test:scrfd@noface": {"kind": "idEncoder", "files": {"model": rel("scrfd_noface")},
                              "options": {"role": "faceDetection"}},
        "test:scrfd@missing": {"kind": "idEncoder", "files": {"model": "insightface/models/tiny/gone.onnx"},
                               "options": {"role": "faceDetection"}},
        "test:arcface@1": {"kind": "idEncoder", "files": {"model": rel("arcface")},
                           "options": {"role": "faceRecognition"}},
        "test:pulid@noparsing": {"kind": "pulid", "files": {"model": rel("pulid")},
                                 "options": {"encoders": dict(encoders, faceParsing="none")}},
        "test:eva@1": {"kind": "idEncoder", "files": {"model": rel("eva")}, "options": {"role": "visionTower"}},
        "test:bisenet@1": {"kind": "idEncoder", "files": {"model": rel("bisenet")},
                           "options": {"role": "faceParsing"}},
        "test:eva@missing": {"kind": "idEncoder", "files": {"model": "clip_vision/gone.pt"},
                             "options": {"role": "visionTower"}},
    }


def face_image(size: int = 512, seed: int = 7):
    """A deterministic (1, size, size, 3) IMAGE in [0, 1]: smooth shapes plus noise (the tiny detector's face sits
    at FACE_BOX scaled by size / 640)."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    ys, xs = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    base = torch.stack((0.5 + 0.4 * torch.sin(6 * xs), 0.5 + 0.4 * torch.cos(5 * ys), 0.5 + 0.3 * xs * ys), -1)
    face = ((xs - 0.5) ** 2 / 0.05 + (ys - 0.47) ** 2 / 0.09) < 1
    base[face] = torch.tensor([0.85, 0.7, 0.6])
    return (base + 0.05 * torch.randn(size, size, 3, generator=gen)).clamp(0, 1)[None]
