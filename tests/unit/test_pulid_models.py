"""PuLID's model parts (torch, onnxruntime; no ComfyUI) against references computed another way: timm's EVA-02
(loaded through timm's own EVA-CLIP converter), explicit attention formulas, OpenCV's warpAffine and the `onnx`
package's reference evaluator. Uses the tiny files of imageinference/testing/tiny_pulid.py."""

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

from imageinference.engines.pulid import align  # noqa: E402
from imageinference.engines.pulid.eva_clip import HIDDEN_FROM, EvaVisionTower, rope_tables, rotate_pairs  # noqa: E402
from imageinference.engines.pulid.idformer import IDFormer, cross_attention_layers, split_pulid  # noqa: E402
from imageinference.engines.pulid.imaging import vision_input, warp  # noqa: E402
from imageinference.testing import tiny_pulid  # noqa: E402


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny-pulid")
    tiny_pulid.ensure_tiny_pulid(root)
    return root


@pytest.fixture(scope="module")
def eva_sd(files):
    return torch.load(files / tiny_pulid.rel("eva"), weights_only=True)


@pytest.fixture(scope="module")
def pulid_sd(files):
    import safetensors.torch

    return {k: v.float() for k, v in safetensors.torch.load_file(str(files / tiny_pulid.rel("pulid"))).items()}


# ---------------------------------------------------------------- EVA02-CLIP tower

def test_vision_tower_matches_timms_eva02_through_timms_own_converter(eva_sd):
    timm_eva = pytest.importorskip("timm.models.eva")
    c = tiny_pulid.EVA
    tower = EvaVisionTower.from_state_dict(eva_sd)
    assert (tower.width, tower.depth, tower.image_size) == (c["width"], c["depth"], c["patch"] * c["grid"])
    ref = timm_eva.Eva(img_size=c["patch"] * c["grid"], patch_size=c["patch"], embed_dim=c["width"], depth=c["depth"],
                       num_heads=c["width"] // 64, mlp_ratio=c["hidden"] / c["width"], qkv_fused=False,
                       swiglu_mlp=True, scale_mlp=True, scale_attn_inner=True, use_rot_pos_emb=True,
                       ref_feat_shape=(16, 16), num_classes=c["embed"], global_pool="token")
    missing, unexpected = ref.load_state_dict(timm_eva.checkpoint_filter_fn(eva_sd, ref), strict=False)
    assert not missing and not unexpected
    ref.eval()
    seen = []
    hooks = [ref.blocks[i - 1].register_forward_hook(lambda m, i, o: seen.append(o)) for i in HIDDEN_FROM]
    x = torch.randn(2, 3, tower.image_size, tower.image_size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = ref(x)
        embed, hidden = tower(x)
    for h in hooks:
        h.remove()
    assert torch.allclose(embed, expected, atol=1e-4, rtol=1e-4)
    assert len(hidden) == 5
    for mine, theirs in zip(hidden, seen, strict=True):
        assert torch.allclose(mine, theirs, atol=1e-4, rtol=1e-4)


def test_rotary_tables_are_2d_rotations_by_row_and_column():
    grid, head = 3, 16
    cos, sin = rope_tables(head, grid, reference=16)
    x = torch.randn(grid * grid, head, dtype=torch.float64)
    mine = x * cos.double() + rotate_pairs(x) * sin.double()
    freqs = [10000 ** (-2 * j / (head // 2)) for j in range(head // 4)]
    for pos in range(grid * grid):
        row, col = divmod(pos, grid)
        for pair in range(head // 2):
            p = (row if pair < head // 4 else col) / grid * 16
            angle = p * freqs[pair % (head // 4)]
            z = complex(x[pos, 2 * pair], x[pos, 2 * pair + 1]) * complex(math.cos(angle), math.sin(angle))
            assert mine[pos, 2 * pair].item() == pytest.approx(z.real, abs=1e-5)
            assert mine[pos, 2 * pair + 1].item() == pytest.approx(z.imag, abs=1e-5)


def test_vision_tower_refuses_other_layouts(eva_sd):
    with pytest.raises(ValueError, match="EVA02-CLIP"):
        EvaVisionTower.from_state_dict({"weight": torch.zeros(1)})
    shallow = {k: v for k, v in eva_sd.items() if not any(f"blocks.{i}." in k for i in range(12, 24))}
    with pytest.raises(ValueError, match="block 20"):
        EvaVisionTower.from_state_dict(shallow)


# ---------------------------------------------------------------- IDFormer and cross-attention

def ref_attention(q, k, v, heads):
    b, lq, inner = q.shape
    d = inner // heads
    q = q.view(b, lq, heads, d)
    k = k.view(b, k.shape[1], heads, d)
    v = v.view(b, v.shape[1], heads, d)
    w = torch.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(d)
    w = torch.exp(w - w.amax(-1, keepdim=True))
    w = w / w.sum(-1, keepdim=True)
    return torch.einsum("bhqk,bkhd->bqhd", w, v).reshape(b, lq, inner)


def ln(x, sd, p, eps=1e-5):
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(var + eps) * sd[f"{p}.weight"] + sd[f"{p}.bias"]


def mlp(x, sd, p):
    for i in (0, 3):
        x = torch.nn.functional.leaky_relu(ln(x @ sd[f"{p}.{i}.weight"].T + sd[f"{p}.{i}.bias"], sd, f"{p}.{i + 1}"))
    return x @ sd[f"{p}.6.weight"].T + sd[f"{p}.6.bias"]


def ref_idformer(sd, id_vec, scales):
    dim = sd["latents"].shape[-1]
    heads = sd["layers.0.0.to_q.weight"].shape[0] // 64
    b = id_vec.shape[0]
    tokens = mlp(id_vec, sd, "id_embedding_mapping").reshape(b, -1, dim)
    lat = torch.cat((sd["latents"].expand(b, -1, -1), tokens), 1)
    depth = len({k.split(".")[1] for k in sd if k.startswith("layers.")})
    for layer in range(depth):
        p = f"layers.{layer}"
        ctx = torch.cat((tokens, mlp(scales[layer // (depth // 5)], sd, f"mapping_{layer // (depth // 5)}")), 1)
        x, lq = ln(ctx, sd, f"{p}.0.norm1"), ln(lat, sd, f"{p}.0.norm2")
        k, v = (torch.cat((x, lq), 1) @ sd[f"{p}.0.to_kv.weight"].T).chunk(2, -1)
        lat = ref_attention(lq @ sd[f"{p}.0.to_q.weight"].T, k, v, heads) @ sd[f"{p}.0.to_out.weight"].T + lat
        h = torch.nn.functional.gelu(ln(lat, sd, f"{p}.1.0") @ sd[f"{p}.1.1.weight"].T)
        lat = h @ sd[f"{p}.1.3.weight"].T + lat
    return lat[:, :sd["latents"].shape[1]] @ sd["proj_out"]


def test_idformer_matches_the_published_formulas(pulid_sd):
    encoder_sd, _ = split_pulid(pulid_sd)
    model = IDFormer.from_state_dict(encoder_sd)
    g = torch.Generator().manual_seed(1)
    vec = torch.randn(2, model.id_width, generator=g)
    scales = [torch.randn(2, 17, tiny_pulid.EVA["width"], generator=g) for _ in range(5)]
    with torch.no_grad():
        out = model(vec, scales)
    c = tiny_pulid.IDFORMER
    assert out.shape == (2, c["queries"], c["out"]) and model.id_tokens == c["id_tokens"]
    assert torch.allclose(out, ref_idformer(encoder_sd, vec, scales), atol=1e-4, rtol=1e-4)


def test_cross_attention_matches_the_published_formula(pulid_sd):
    _, ca_sd = split_pulid(pulid_sd)
    layers = cross_attention_layers(ca_sd)
    assert len(layers) == 2
    g = torch.Generator().manual_seed(2)
    identity = torch.randn(3, 8, tiny_pulid.IDFORMER["out"], generator=g)
    image = torch.randn(3, 10, tiny_pulid.FLUX_WIDTH, generator=g)
    sd = {k[2:]: v for k, v in ca_sd.items() if k.startswith("1.")}
    k, v = (ln(identity, sd, "norm1") @ sd["to_kv.weight"].T).chunk(2, -1)
    q = ln(image, sd, "norm2") @ sd["to_q.weight"].T
    expected = ref_attention(q, k, v, tiny_pulid.CA_INNER // 128) @ sd["to_out.weight"].T
    with torch.no_grad():
        assert torch.allclose(layers[1](identity, image), expected, atol=1e-4, rtol=1e-4)


def test_cross_attention_layers_keep_the_files_dtype(files):
    import safetensors.torch

    _, ca_sd = split_pulid(safetensors.torch.load_file(str(files / tiny_pulid.rel("pulid"))))
    assert {p.dtype for p in cross_attention_layers(ca_sd).parameters()} == {torch.bfloat16}


def test_pulid_files_need_both_parts():
    with pytest.raises(ValueError, match="pulid_encoder"):
        split_pulid({"pulid_ca.0.to_q.weight": torch.zeros(1)})
    with pytest.raises(ValueError, match="numbered"):
        cross_attention_layers({"1.to_q.weight": torch.zeros(4, 4)})


# ---------------------------------------------------------------- image steps

def test_warp_matches_opencvs_warp_affine():
    cv2 = pytest.importorskip("cv2")
    g = torch.Generator().manual_seed(3)
    image = torch.nn.functional.interpolate(torch.rand(1, 3, 24, 32, generator=g), size=(96, 128), mode="bilinear",
                                            align_corners=False)[0].permute(1, 2, 0).contiguous()
    kps = np.array([[40.0, 38], [80, 41], [61, 60], [45, 78], [78, 80]])
    m = align.similarity_transform(kps, align.template("arcface", 112))
    border = (0.2, 0.5, 0.8)
    mine = warp(image, m, 112, border).numpy()
    theirs = cv2.warpAffine(image.numpy(), m, (112, 112), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                            borderValue=border)
    assert np.abs(mine - theirs).max() < 0.02  # OpenCV quantises coordinates to 1/32 px
    assert np.abs(mine - theirs).mean() < 0.002


def test_vision_input_is_grey_resized_and_clip_normalised():
    from imageinference.engines.pulid.face_parsing import features_only

    face = torch.zeros(1, 3, 64, 64)
    face[:, 0] = 1.0  # pure red -> grey 0.299
    x = vision_input(features_only(face, None), 32)
    assert x.shape == (1, 3, 32, 32)
    mean, std = torch.tensor([0.48145466, 0.4578275, 0.40821073]), torch.tensor([0.26862954, 0.26130258, 0.27577711])
    assert torch.allclose(x[0, :, 5, 5], (0.299 - mean) / std, atol=1e-5)


# ---------------------------------------------------------------- ONNX parts

def test_tiny_detector_finds_its_face_in_image_pixels(files):
    from imageinference.engines.pulid.onnx_models import FaceDetector

    det = FaceDetector(str(files / tiny_pulid.rel("scrfd")))
    rgb = (tiny_pulid.face_image(320)[0].numpy() * 255).astype(np.uint8)[:200]  # 320 wide, 200 high
    (face,) = det.detect(rgb)
    scale = 640 / 320
    assert face.box == pytest.approx(tuple(v / scale for v in tiny_pulid.FACE_BOX), abs=1e-3)
    assert np.allclose(face.keypoints, np.array(tiny_pulid.FACE_KPS) / scale, atol=1e-3)
    assert face.score == pytest.approx(tiny_pulid.FACE_SCORE)
    assert FaceDetector(str(files / tiny_pulid.rel("scrfd_noface"))).detect(rgb) == []


def test_recognizer_matches_the_onnx_reference_evaluator(files):
    from onnx.reference import ReferenceEvaluator

    from imageinference.engines.pulid.onnx_models import FaceRecognizer

    path = str(files / tiny_pulid.rel("arcface"))
    rec = FaceRecognizer(path)
    face = np.random.default_rng(4).integers(0, 256, (112, 112, 3), dtype=np.uint8)
    blob = ((face.astype(np.float32) - 127.5) / 127.5).transpose(2, 0, 1)[None]
    (expected,) = ReferenceEvaluator(path).run(None, {"input.1": blob})
    assert np.allclose(rec.embed(face), expected[0], atol=1e-4)
    with pytest.raises(ValueError, match="112x112"):
        rec.embed(face[:100])
