"""One face image -> PuLID identity embedding (adapter: ComfyUI's folders and loaders, torch, onnxruntime).

Steps (after PuLID-FLUX's pipeline): the image is scaled down so its long side is at most 1024 px; SCRFD finds the
faces and the largest one is used; its 5 keypoints align (1) a 112 px ArcFace crop, whose recognition embedding is
the first part of the ID vector, and (2) a 512 px FFHQ-template crop, which the BiSeNet face parser labels so
that background, ears, earrings, neck, necklace, clothes and hats are painted white and the rest turned grey
(face_parsing.py), then resized to the vision tower's input (bicubic, antialiased), normalised with CLIP's
mean/std and encoded by EVA02-CLIP: its L2-normalised embedding is the second part of the ID vector and its five
feature scales go to IDFormer. The unconditional embedding (for the negative pass of real CFG) is IDFormer of
zeros. One keypoint set drives both crops, so both always show the same face (the published pipeline aligns (2)
on the centre face found by a second detector; docs/pulid.md says where that differs).

Loaded stacks are kept per set of files; embeddings are kept by content hash of the image and the files.
"""

from __future__ import annotations

import copy
import logging
import os
import threading
from dataclasses import dataclass, field
from typing import Any

import comfy.model_management
import comfy.utils
import folder_paths
import torch
from torch import nn

from ...contract.errors import ApiError, ContractError
from .align import similarity_transform, template
from .detect import largest
from .eva_clip import EvaVisionTower
from .face_parsing import FaceParser, features_only, load_parser
from .idcache import LRU, FileStamp, content_key
from .idformer import IDFormer, cross_attention_layers, split_pulid
from .imaging import limit_long_side, to_uint8, vision_input, warp
from .inject import layer_holder
from .onnx_models import FaceDetector, FaceRecognizer
from .stack import PARAMETER, Missing, StackEntries, missing_files_error

log = logging.getLogger(__name__)
FOLDERS = ("pulid", "insightface")  # model folders ComfyUI does not register itself
FFHQ_SIZE = 512
FFHQ_BORDER = (132 / 255, 133 / 255, 135 / 255)  # the grey face-restoration tools fill outside the image with


def ensure_folders() -> None:
    for name in FOLDERS:
        if name not in folder_paths.folder_names_and_paths:
            folder_paths.add_model_folder_path(name, os.path.join(folder_paths.models_dir, name))


def locate(entries: StackEntries) -> dict[str, str]:
    """role -> absolute path of every file of the stack; one error listing all that are missing."""
    ensure_folders()
    found: dict[str, str] = {}
    missing: list[Missing] = []
    for role, entry, rel in entries.files():
        folder, _, name = rel.partition("/")
        path = folder_paths.get_full_path(folder, name)
        if path is None:
            try:
                searched = folder_paths.get_folder_paths(folder)
            except KeyError:
                searched = []
            missing.append(Missing(role, entry.air, rel, searched))
        else:
            found[role] = path
    if missing:
        raise missing_files_error(missing)
    return found


def stamp(path: str) -> FileStamp:
    st = os.stat(path)
    return FileStamp(path, st.st_size, st.st_mtime_ns)


@dataclass
class Stack:
    detector: FaceDetector
    recognizer: FaceRecognizer
    tower: EvaVisionTower
    idformer: IDFormer
    cross_attention: nn.ModuleList
    parser: FaceParser | None  # None: the pulid entry switched parsing off
    stamps: tuple[FileStamp, ...]
    _by_dtype: dict[torch.dtype, Any] = field(default_factory=dict)

    def cross_attention_in(self, dtype: torch.dtype) -> Any:
        """The layer_holder of the cross-attention layers in the model's compute dtype (the loaded layers when the
        dtypes agree, else one converted copy per dtype; shared by every model PuLID is applied to: nothing writes
        into them)."""
        found = self._by_dtype.get(dtype)
        if found is None:
            same = next(self.cross_attention.parameters()).dtype == dtype
            layers = self.cross_attention if same else copy.deepcopy(self.cross_attention).to(dtype)
            found = self._by_dtype[dtype] = layer_holder(layers)
        return found


_stacks: dict[tuple[FileStamp, ...], Stack] = {}
_lock = threading.Lock()


def _invalid(role: str, path: str, why: str) -> ContractError:
    return ContractError([ApiError("invalidModel", f"the PuLID {role} file {path} cannot be used: {why}", PARAMETER,
                                   "object")])


def load_stack(entries: StackEntries) -> Stack:
    paths = locate(entries)
    stamps = tuple(stamp(paths[role]) for role, _, _ in entries.files())
    with _lock:
        cached = _stacks.get(stamps)
        if cached is not None:
            return cached
        options = entries.encoders["faceRecognition"].options
        try:
            detector = FaceDetector(paths["faceDetection"])
        except Exception as e:
            raise _invalid("faceDetection", paths["faceDetection"], str(e)) from e
        try:
            recognizer = FaceRecognizer(paths["faceRecognition"], float(options.get("inputMean", 127.5)),
                                        float(options.get("inputStd", 127.5)))
        except Exception as e:
            raise _invalid("faceRecognition", paths["faceRecognition"], str(e)) from e
        try:
            tower = EvaVisionTower.from_state_dict(comfy.utils.load_torch_file(paths["visionTower"], safe_load=True))
        except Exception as e:
            raise _invalid("visionTower", paths["visionTower"], str(e)) from e
        try:
            encoder_sd, ca_sd = split_pulid(comfy.utils.load_torch_file(paths["pulid"], safe_load=True))
            idformer = IDFormer.from_state_dict({k: v.float() for k, v in encoder_sd.items()})
            layers = cross_attention_layers(ca_sd)
        except Exception as e:
            raise _invalid("weights", paths["pulid"], str(e)) from e
        parser = None
        if "faceParsing" in paths:
            try:
                parser = load_parser(paths["faceParsing"])
            except Exception as e:
                raise _invalid("faceParsing", paths["faceParsing"], str(e)) from e
        tower.float()
        _stacks.clear()  # one stack in memory at a time: the vision tower alone is 300M parameters
        stack = _stacks[stamps] = Stack(detector, recognizer, tower, idformer, layers, parser, stamps)
        return stack


@dataclass(frozen=True)
class IdEmbedding:
    cond: torch.Tensor  # (1, queries, width), float32 on the CPU
    uncond: torch.Tensor  # IDFormer of a zero ID vector and zero feature scales


EMBEDDINGS: LRU[IdEmbedding] = LRU(16)


def no_face() -> ContractError:
    return ContractError([ApiError("invalidImages", "no face was found in the PuLID image; give one image with one "
                                   "clear, front-facing face", f"{PARAMETER}.images", "string[]")])


@torch.no_grad()
def compute_embedding(stack: Stack, image: torch.Tensor) -> IdEmbedding:
    """The identity embedding of an (H, W, 3) image in [0, 1] (no caching)."""
    image = limit_long_side(image.float().cpu())
    face = largest(stack.detector.detect(to_uint8(image)))
    if face is None:
        raise no_face()
    rec_size = stack.recognizer.size
    arc = warp(image, similarity_transform(face.keypoints, template("arcface", rec_size)), rec_size, (0.0, 0.0, 0.0))
    id_vec = torch.from_numpy(stack.recognizer.embed(to_uint8(arc)).copy())[None]
    # the same uint8 rounding the 512 px crop has in the published pipeline
    aligned = warp(image, similarity_transform(face.keypoints, template("ffhq", FFHQ_SIZE)), FFHQ_SIZE, FFHQ_BORDER)
    aligned = torch.from_numpy(to_uint8(aligned)).float() / 255
    device = comfy.model_management.get_torch_device()
    dtype = torch.float16 if comfy.model_management.should_use_fp16(device) else torch.float32
    offload = comfy.model_management.unet_offload_device()
    stack.tower.to(device, dtype)
    stack.idformer.to(device, dtype)
    try:
        crop = aligned.permute(2, 0, 1)[None]
        labels = None
        if stack.parser is not None:
            # parsed in float32 on the CPU: a label flipped by half precision whitens a different pixel
            labels = stack.parser.labels(crop)
        pixels = vision_input(features_only(crop, labels), stack.tower.image_size)
        embed, scales = stack.tower(pixels.to(device, dtype))
        embed = embed / embed.norm(dim=1, keepdim=True)
        vector = torch.cat((id_vec.to(device, dtype), embed), dim=-1)
        if vector.shape[1] != stack.idformer.id_width:
            raise ContractError([ApiError(
                "invalidModel", f"the face embedding ({id_vec.shape[1]}) and vision embedding ({embed.shape[1]}) "
                f"make {vector.shape[1]} values; the PuLID weights take {stack.idformer.id_width}", PARAMETER,
                "object")])
        cond = stack.idformer(vector, scales)
        uncond = stack.idformer(torch.zeros_like(vector), [torch.zeros_like(s) for s in scales])
    finally:
        stack.tower.to(offload, torch.float32)
        stack.idformer.to(offload, torch.float32)
    return IdEmbedding(cond.float().cpu(), uncond.float().cpu())


def identity_embedding(stack: Stack, image: torch.Tensor) -> IdEmbedding:
    """compute_embedding, once per (image content, encoder files)."""
    pixels = image.detach().float().cpu().contiguous()
    key = content_key(pixels.numpy().tobytes(), pixels.shape, str(pixels.dtype), stack.stamps)
    found = EMBEDDINGS.get(key)
    if found is not None:
        return found
    emb = compute_embedding(stack, pixels)
    EMBEDDINGS.put(key, emb)
    return emb
