"""PuLID's ID encoder path against the reference's own `PuLIDPipeline.get_id_embedding` (ToTheBeginning/PuLID at the
vendored commit) on the same image and the same tiny weights: facexlib's FaceRestoreHelper (centre face, its LMEDS
alignment onto the FFHQ template, OpenCV's warp), facexlib's BiSeNet class loaded with the same parsing weights,
the reference's whitening, grey, torchvision resize and normalisation, and the reference's own EVA02-CLIP class
loaded with the same tower weights.

How the reference runs here without its downloads: its detectors are reached through the objects it calls. Its
RetinaFace (facexlib) and antelopev2 (insightface) are replaced by adapters around the same tiny SCRFD our stack
uses, so both sides see the same face box and keypoints (the test is about what happens after detection); the
insightface adapter returns our ArcFace embedding, so the ID vector's first 512 values are equal by construction
(insightface is not installed; its import, and the eva_clip package's __init__ that builds a text tokenizer, are
stubbed for the import only, never called). Its IDFormer is a recorder of the inputs it is given (the full-size IDFormer is compared with ours in
test_pulid_vs_reference.py). The tiny detector's keypoints are an exact similarity of the FFHQ template, so
facexlib's LMEDS keeps all five and equals the least squares we use (where it drops points, see docs/pulid.md and
test_lmeds_drops_keypoints_that_least_squares_keeps).
"""

import json
import types
from unittest import mock

import numpy as np
import pytest
import torch

from imageinference.testing import peers

AIR = "test:pulid@reference"


@pytest.fixture(scope="module")
def env(comfy, tiny_models_root, test_catalog):
    import folder_paths

    from imageinference.testing.tiny_pulid import catalog_entries, ensure_facexlib_bisenet, ensure_tiny_pulid

    root = ensure_tiny_pulid(tiny_models_root)
    ensure_facexlib_bisenet(root)
    for folder in ("pulid", "insightface", "clip_vision"):
        folder_paths.add_model_folder_path(folder, str(root / folder), is_default=True)
    models = json.loads(test_catalog.read_text())["models"]
    path = test_catalog.parent / "catalog_pulid_reference.json"
    path.write_text(json.dumps({"version": 1, "models": {**models, **catalog_entries()}}))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("IMAGEINFERENCE_CATALOG", str(path))
        yield root


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    folder = peers.unpack("PuLID", tmp_path_factory.mktemp("peers"))
    insightface = types.ModuleType("insightface")
    insightface.app = types.ModuleType("insightface.app")
    insightface.app.FaceAnalysis = None
    # the eva_clip package's __init__ builds a text tokenizer from a vocabulary file the archive does not carry:
    # a bare package over the same folder lets its vision modules import without it
    eva_clip = types.ModuleType("eva_clip")
    eva_clip.__path__ = [str(folder / "eva_clip")]
    eva_clip.create_model_and_transforms = None
    stubs = {"insightface": insightface, "insightface.app": insightface.app, "eva_clip": eva_clip}
    return peers.import_top_level(folder, ["pulid.pipeline_flux", "eva_clip.eva_vit_model", "pulid.utils"], stubs)


def our_run(stack, image):
    """Our embedding of `image` with the tower's input and IDFormer's inputs recorded."""
    from imageinference.engines.pulid import encoder

    seen = {}
    hooks = [stack.tower.register_forward_pre_hook(lambda m, a: seen.__setitem__("tower", a[0].clone())),
             stack.idformer.register_forward_pre_hook(
                 lambda m, a: seen.setdefault("idformer", (a[0].clone(), [s.clone() for s in a[1]])))]
    try:
        encoder.compute_embedding(stack, image)
    finally:
        for h in hooks:
            h.remove()
    return seen


def reference_eva(reference, eva_path):
    from functools import partial

    from imageinference.testing.tiny_pulid import EVA

    c = EVA
    tower = reference["eva_clip.eva_vit_model"].EVAVisionTransformer(
        img_size=c["patch"] * c["grid"], patch_size=c["patch"], num_classes=c["embed"], use_mean_pooling=False,
        init_values=None, patch_dropout=0.0, embed_dim=c["width"], depth=c["depth"], num_heads=c["width"] // 64,
        mlp_ratio=2.6667, qkv_bias=True, drop_path_rate=0.0, norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
        xattn=False, rope=True, postnorm=False, pt_hw_seq_len=16, intp_freq=True, naiveswiglu=True, subln=True)
    sd = torch.load(eva_path, weights_only=True)
    # the reference computes its rotary tables; the tiny file's stored ones are random (ours ignores them too)
    sd = {k[len("visual."):]: v for k, v in sd.items() if k.startswith("visual.") and "rope." not in k}
    missing, unexpected = tower.load_state_dict(sd, strict=False)
    assert not unexpected and all("rope" in k for k in missing), (missing, unexpected)
    return tower.eval()


def reference_run(reference, stack, image, eva_path, parsing_path, arcface_embedding):
    """The reference's get_id_embedding on the same uint8 image, with its detectors reached through adapters."""
    import facexlib.parsing.bisenet
    import safetensors.torch

    from imageinference.engines.pulid.imaging import to_uint8

    pipeline = reference["pulid.pipeline_flux"]
    rgb = to_uint8(image)

    def detections(img_bgr):
        return [f for f in stack.detector.detect(np.ascontiguousarray(img_bgr[..., ::-1]))]

    class RetinaFaceAdapter:  # facexlib's detector interface: rows of box, score, 5 keypoints
        def detect_faces(self, img_bgr, threshold):
            return np.array([[*f.box, f.score, *f.keypoints.reshape(-1)] for f in detections(img_bgr)])

    class FaceAnalysisAdapter:  # insightface's interface as the reference reads it: bbox and embedding
        def get(self, img_bgr):
            return [{"bbox": np.array(f.box), "embedding": arcface_embedding} for f in detections(img_bgr)]

    class IDFormerRecorder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inputs = []

        def forward(self, id_cond, hidden):
            self.inputs.append((id_cond.clone(), [h.clone() for h in hidden]))
            return torch.zeros(1)

    facexlib_helper = pipeline.FaceRestoreHelper.__module__
    with mock.patch(f"{facexlib_helper}.init_detection_model", lambda *a, **k: RetinaFaceAdapter()), \
            mock.patch(f"{facexlib_helper}.init_parsing_model", lambda *a, **k: None):  # set below, as PuLID does
        helper = pipeline.FaceRestoreHelper(upscale_factor=1, face_size=512, crop_ratio=(1, 1),
                                            det_model="retinaface_resnet50", save_ext="png", device="cpu")
    parser = facexlib.parsing.bisenet.BiSeNet(num_class=19)
    parser.load_state_dict(safetensors.torch.load_file(str(parsing_path)), strict=True)
    helper.face_parse = parser.eval()
    eva = reference_eva(reference, eva_path)
    seen = {}
    eva.register_forward_pre_hook(lambda m, a: seen.__setitem__("tower", a[0].clone()))

    run = pipeline.PuLIDPipeline.__new__(pipeline.PuLIDPipeline)
    torch.nn.Module.__init__(run)
    run.device, run.weight_dtype = torch.device("cpu"), torch.float32
    run.face_helper, run.app, run.handler_ante = helper, FaceAnalysisAdapter(), None
    run.clip_vision_model, run.pulid_encoder = eva, IDFormerRecorder()
    run.eva_transform_mean = (0.48145466, 0.4578275, 0.40821073)
    run.eva_transform_std = (0.26862954, 0.26130258, 0.27577711)
    run.debug_img_list = []
    pipeline.PuLIDPipeline.get_id_embedding(run, rgb, cal_uncond=True)
    seen["parsed"] = run.debug_img_list[1]  # the reference's whitened grey crop, uint8 RGB
    seen["idformer"], seen["idformer_uncond"] = run.pulid_encoder.inputs
    return seen


@pytest.fixture(scope="module")
def both(env, reference):
    from imageinference.engines.models.catalog import Catalog
    from imageinference.engines.pulid import encoder
    from imageinference.engines.pulid.stack import stack_entries
    from imageinference.testing.tiny_pulid import FACEXLIB_BISENET, face_image, rel

    stack = encoder.load_stack(stack_entries(Catalog.load(), AIR))
    image = face_image(400)[0]
    mine = our_run(stack, image)
    arcface = mine["idformer"][0][0, :512].numpy()
    theirs = reference_run(reference, stack, image, env / rel("eva"), env.joinpath(*FACEXLIB_BISENET), arcface)
    return stack, image, mine, theirs


def test_the_parsed_crop_matches_the_reference(both):
    """The picture EVA-CLIP is given, at 512 px before resizing: the same pixels whitened (labels can flip only
    where OpenCV's warp, which rounds sample positions to 1/32 px, differs from ours), the rest the same grey within
    3 levels of 255."""
    from imageinference.engines.pulid.align import similarity_transform, template
    from imageinference.engines.pulid.encoder import FFHQ_BORDER, FFHQ_SIZE
    from imageinference.engines.pulid.face_parsing import features_only
    from imageinference.engines.pulid.imaging import to_uint8, warp

    stack, image, _, theirs = both
    (face,) = stack.detector.detect(to_uint8(image))
    aligned = warp(image, similarity_transform(face.keypoints, template("ffhq", FFHQ_SIZE)), FFHQ_SIZE, FFHQ_BORDER)
    aligned = torch.from_numpy(to_uint8(aligned)).float().div(255).permute(2, 0, 1)[None]
    picture = features_only(aligned, stack.parser.labels(aligned))
    mine = to_uint8(picture[0].permute(1, 2, 0)).astype(int)
    ref = theirs["parsed"].astype(int)
    assert mine.shape == ref.shape == (512, 512, 3)
    white_mine, white_ref = (mine == 255).all(-1), (ref == 255).all(-1)
    assert 0.01 < white_ref.mean() < 0.99, "the tiny parser must whiten some pixels and keep others"
    assert (white_mine == white_ref).mean() > 0.995
    both_kept = ~white_mine & ~white_ref
    assert np.abs(mine - ref)[both_kept].max() <= 3


def test_the_vision_tower_input_and_the_idformer_inputs_match_the_reference(both):
    """The normalised 56 px tower input agrees within 0.05 of its range (the crop's rare flipped labels and
    rounding, averaged by the resize), and what IDFormer receives (ID vector: ArcFace part equal by construction,
    EVA part from the reference's own EVA class; five feature scales) within 2% of each tensor's size."""
    _, _, mine, theirs = both
    tower_ref = theirs["tower"]
    assert mine["tower"].shape == tower_ref.shape
    assert (mine["tower"] - tower_ref).abs().max() <= 0.05 * (tower_ref.max() - tower_ref.min())
    (vec, scales), (vec_ref, scales_ref) = mine["idformer"], theirs["idformer"]
    assert torch.equal(vec[:, :512], vec_ref[:, :512])
    for a, b in zip([vec[:, 512:], *scales], [vec_ref[:, 512:], *scales_ref], strict=True):
        assert a.shape == b.shape
        assert (a - b).abs().max() <= 0.02 * b.abs().max()
    vec_u, scales_u = theirs["idformer_uncond"]
    assert not vec_u.any() and not any(s.any() for s in scales_u)  # the reference's uncond: IDFormer of zeros


def test_lmeds_drops_keypoints_that_least_squares_keeps(reference):
    """Where the five keypoints are not a similarity of the template, facexlib's LMEDS alignment can drop some
    (on the tiny detector's default keypoints it keeps 3) and scale the crop differently; ours is the least-squares
    similarity over all five (what facexlib's LMEDS stands in for: skimage's estimate, insightface's norm_crop)."""
    import cv2

    from imageinference.engines.pulid.align import similarity_transform, template
    from imageinference.testing.tiny_pulid import FACE_KPS

    kps = np.array(FACE_KPS, dtype=np.float64)
    lmeds, inliers = cv2.estimateAffinePartial2D(kps, template("ffhq", 512), method=cv2.LMEDS)
    ours = similarity_transform(kps, template("ffhq", 512))
    assert inliers.sum() < 5
    assert abs(np.hypot(*lmeds[0, :2]) / np.hypot(*ours[0, :2]) - 1) > 0.05
    exact = template("ffhq", 512) * 0.5 + (192.0, 150.0)
    lmeds, inliers = cv2.estimateAffinePartial2D(exact, template("ffhq", 512), method=cv2.LMEDS)
    assert inliers.sum() == 5 and np.allclose(lmeds, similarity_transform(exact, template("ffhq", 512)), atol=1e-6)
