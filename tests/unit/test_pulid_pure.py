"""PuLID's pure parts: cross-attention placement, start step, alignment, SCRFD decoding, the embedding cache and
the catalog stack."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from imageinference.contract.errors import ContractError
from imageinference.engines.models.catalog import Catalog, Entry
from imageinference.engines.pulid import align, detect
from imageinference.engines.pulid.idcache import LRU, FileStamp, content_key
from imageinference.engines.pulid.schedule import Slot, StartStep, ca_slots, identity_active
from imageinference.engines.pulid.stack import (
    DEFAULT_ENCODERS,
    DEFAULT_PULID,
    Missing,
    missing_files_error,
    stack_entries,
)

# ---------------------------------------------------------------- placement


def test_flux1_gets_pulid_fluxs_twenty_layers_in_order():
    slots = ca_slots(19, 38)
    assert len(slots) == 20  # the published file's pulid_ca.0 .. pulid_ca.19
    assert [s.index for s in slots if s.block == "double_block"] == [0, 2, 4, 6, 8, 10, 12, 14, 16, 18]
    assert [s.index for s in slots if s.block == "single_block"] == [0, 4, 8, 12, 16, 20, 24, 28, 32, 36]
    assert [s.layer for s in slots] == list(range(20))
    assert slots[10] == Slot("single_block", 0, 10)


@given(st.integers(0, 60), st.integers(0, 80))
def test_layer_count_matches_the_published_formula(d, s):
    # pipeline_flux.py: num_ca = D // 2 + S // 4, plus one for each count that is not a multiple
    expected = d // 2 + s // 4 + (d % 2 != 0) + (s % 4 != 0)
    assert len(ca_slots(d, s)) == expected


def test_the_tiny_flux_layout_still_gets_both_kinds():
    assert ca_slots(1, 1) == (Slot("double_block", 0, 0), Slot("single_block", 0, 1))


# ---------------------------------------------------------------- start step

def step_of(sigmas, sigma):
    """Reference: the step an evaluation at `sigma` belongs to, by scanning the intervals (sigmas[i], sigmas[i+1]]."""
    for i in range(len(sigmas) - 1):
        if sigmas[i + 1] < sigma <= sigmas[i] or math.isclose(sigma, sigmas[i]):
            return i
    return len(sigmas) - 2


# real schedules: distinct steps (the step rule tolerates 1e-6 relative float noise in a sampler's sigma)
schedules = st.lists(st.floats(0.01, 20), min_size=2, max_size=30, unique=True).map(
    lambda v: sorted(v, reverse=True) + [0.0]).filter(
    lambda s: all(a > b * (1 + 1e-4) for a, b in zip(s[:-2], s[1:-1], strict=True)))


@settings(max_examples=200)
@given(schedules, st.integers(0, 40), st.booleans(), st.data())
def test_identity_acts_exactly_from_the_start_step(sigmas, start, as_percentage, data):
    total = len(sigmas) - 1
    spec = StartStep(percentage=min(start * 3, 100)) if as_percentage else StartStep(step=start)
    first = spec.first_step(total)
    bound = spec.sigma_bound(sigmas)
    for i in range(total):
        assert identity_active(sigmas[i], bound) == (i >= first), (i, first)
    # an evaluation inside a step (multi-stage samplers) belongs to that step
    i = data.draw(st.integers(0, total - 1))
    mid = (sigmas[i] + sigmas[i + 1]) / 2
    if mid > 0:
        assert identity_active(mid, bound) == (step_of(sigmas, mid) >= first)


def test_percentage_rounds_like_every_other_step_window():
    assert StartStep(percentage=30).first_step(20) == 6
    assert StartStep(percentage=33).first_step(28) == round(0.33 * 28)
    assert StartStep().first_step(20) == 0 and StartStep(step=4).first_step(20) == 4
    assert StartStep(step=4).sigma_bound([1.0, 0.5, 0.0]) == float("-inf")  # start beyond the run: never
    with pytest.raises(ValueError):
        StartStep(step=1, percentage=10)


# ---------------------------------------------------------------- alignment

def lstsq_similarity(src, dst):
    """Reference: the similarity [[a, -b, tx], [b, a, ty]] as a plain linear least-squares problem."""
    rows, rhs = [], []
    for (x, y), (u, v) in zip(src, dst, strict=True):
        rows += [[x, -y, 1, 0], [y, x, 0, 1]]
        rhs += [u, v]
    a, b, tx, ty = np.linalg.lstsq(np.array(rows), np.array(rhs), rcond=None)[0]
    return np.array([[a, -b, tx], [b, a, ty]])


@settings(max_examples=100)
@given(st.floats(0.2, 5), st.floats(-math.pi, math.pi), st.floats(-300, 300), st.floats(-300, 300),
       st.integers(0, 2**31 - 1))
def test_similarity_matches_least_squares_and_recovers_exact_transforms(scale, angle, tx, ty, seed):
    rng = np.random.default_rng(seed)
    src = rng.uniform(0, 500, (5, 2))
    m = np.array([[scale * math.cos(angle), -scale * math.sin(angle), tx],
                  [scale * math.sin(angle), scale * math.cos(angle), ty]])
    exact = align.apply(m, src)
    assert np.allclose(align.similarity_transform(src, exact), m, atol=1e-6)
    noisy = exact + rng.normal(0, 3, exact.shape)
    assert np.allclose(align.similarity_transform(src, noisy), lstsq_similarity(src, noisy), atol=1e-6)


def test_templates_and_inverse():
    assert np.allclose(align.template("arcface", 224), align.ARCFACE_112 * 2)
    assert np.allclose(align.template("ffhq", 512), align.FFHQ_512)
    m = align.similarity_transform(align.FFHQ_512, align.ARCFACE_112)
    back = align.apply(align.invert(m), align.apply(m, align.FFHQ_512))
    assert np.allclose(back, align.FFHQ_512)
    with pytest.raises(ValueError):
        align.similarity_transform(np.zeros((5, 2)), align.ARCFACE_112)
    with pytest.raises(ValueError):
        align.template("dlib", 112)


# ---------------------------------------------------------------- SCRFD decoding

def synthetic_outputs(rng, size, faces):
    """SCRFD outputs for a size x size input with `faces` = [(stride, location index, anchor, score, dist, kps)]."""
    scores, boxes, kps = [], [], []
    for stride in (8, 16, 32):
        n = (size // stride) ** 2 * 2
        scores.append(rng.uniform(0, 0.3, (n, 1)).astype(np.float32))
        boxes.append(rng.uniform(0.5, 3, (n, 4)).astype(np.float32))
        kps.append(rng.uniform(-2, 2, (n, 10)).astype(np.float32))
    for stride, loc, anchor, score, dist, points in faces:
        i = (8, 16, 32).index(stride)
        scores[i][loc * 2 + anchor, 0] = score
        boxes[i][loc * 2 + anchor] = dist
        kps[i][loc * 2 + anchor] = points
    return scores + boxes + kps


def test_decode_matches_a_direct_reading_of_the_layout():
    rng = np.random.default_rng(0)
    size = 64
    faces = [(16, 5, 1, 0.9, (1, 2, 1.5, 2.5), np.arange(10) / 10), (8, 20, 0, 0.7, (2, 2, 2, 2), -np.arange(10) / 5)]
    out = synthetic_outputs(rng, size, faces)
    found = sorted(detect.decode(out, size, size, 0.5), key=lambda f: -f.score)
    assert len(found) == 2
    for face, (stride, loc, _anchor, score, dist, points) in zip(found, faces, strict=True):
        cx, cy = (loc % (size // stride)) * stride, (loc // (size // stride)) * stride
        assert face.box == pytest.approx((cx - dist[0] * stride, cy - dist[1] * stride, cx + dist[2] * stride,
                                          cy + dist[3] * stride))
        assert face.score == pytest.approx(score)
        expected = [(cx + points[2 * k] * stride, cy + points[2 * k + 1] * stride) for k in range(5)]
        assert np.allclose(face.keypoints, expected)
    batched = [o[None] for o in out]
    assert len(detect.decode(batched, size, size, 0.5)) == 2


def test_suppression_keeps_the_best_of_overlapping_faces_and_largest_picks_by_area():
    pts = np.zeros((5, 2))
    a = detect.Face((0, 0, 100, 100), 0.9, pts)
    b = detect.Face((5, 5, 105, 105), 0.95, pts)
    c = detect.Face((200, 200, 230, 230), 0.6, pts)
    kept = detect.suppress([a, b, c])
    assert kept == [b, c]
    assert detect.largest(kept) is b and detect.largest([]) is None
    assert detect.iou(a.box, a.box) == 1.0 and detect.iou(a.box, c.box) == 0.0


def test_layouts_and_letterbox():
    assert detect.layout_for(9) == detect.Layout((8, 16, 32), 2)
    assert detect.layout_for(15).anchors == 1
    with pytest.raises(ValueError, match="9 or 15"):
        detect.layout_for(6)  # a SCRFD export without keypoints cannot align faces
    assert detect.letterbox_size(480, 640, 640) == (480, 640, 1.0)
    assert detect.letterbox_size(1000, 500, 640) == (640, 320, 0.64)
    face = detect.scaled(detect.Face((64, 64, 128, 128), 0.9, np.ones((5, 2)) * 64), 0.5)
    assert face.box == (128, 128, 256, 256) and np.all(face.keypoints == 128)
    with pytest.raises(ValueError, match="shape"):
        detect.decode([np.zeros((3, 1), np.float32)] * 9, 64, 64)


# ---------------------------------------------------------------- embedding cache

def test_content_key_changes_with_pixels_shape_and_files():
    f1 = FileStamp("/m/a.onnx", 10, 1)
    key = content_key(b"abc", (1, 3), "float32", [f1])
    assert key == content_key(b"abc", (1, 3), "float32", [f1])
    assert key != content_key(b"abd", (1, 3), "float32", [f1])
    assert key != content_key(b"abc", (3, 1), "float32", [f1])
    assert key != content_key(b"abc", (1, 3), "float32", [FileStamp("/m/a.onnx", 10, 2)])


def test_lru_evicts_the_least_recently_used():
    cache: LRU[int] = LRU(2)
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a") == 1
    cache.put("c", 3)
    assert cache.get("b") is None and cache.get("a") == 1 and cache.get("c") == 3
    assert (cache.hits, cache.misses, len(cache)) == (3, 1, 2)


# ---------------------------------------------------------------- catalog stack

def catalog(**changes):
    entries = {
        DEFAULT_PULID: Entry(DEFAULT_PULID, "pulid", {"model": "pulid/pulid_flux_v0.9.1.safetensors"}),
        **{air: Entry(air, "idEncoder", {"model": f"insightface/models/antelopev2/{role}.onnx"}, options={"role": role})
           for role, air in DEFAULT_ENCODERS.items()},
    }
    for entry in changes.values():
        entries[entry.air] = entry
    return Catalog(entries)


def test_the_default_stack_resolves_by_role():
    stack = stack_entries(catalog(), DEFAULT_PULID)
    assert [role for role, _, _ in stack.files()] == ["pulid", "faceDetection", "faceRecognition", "visionTower",
                                                      "faceParsing"]


def test_face_parsing_is_part_of_the_default_stack_and_can_be_switched_off():
    import json
    from importlib import resources

    from imageinference.engines.models.catalog import parse_entry
    from imageinference.engines.pulid.stack import NO_PARSING

    air = DEFAULT_ENCODERS["faceParsing"]
    builtin = json.loads(resources.files("imageinference").joinpath("data/catalog_builtin.json").read_text("utf-8"))
    parser = parse_entry(air, builtin["models"][air], "builtin")
    assert parser.kind == "idEncoder" and parser.options["role"] == "faceParsing"
    assert parser.files["model"].endswith(".safetensors")
    off = Entry(DEFAULT_PULID, "pulid", {"model": "pulid/pulid_flux_v0.9.1.safetensors"},
                options={"encoders": {"faceParsing": NO_PARSING}})
    stack = stack_entries(catalog(off=off), DEFAULT_PULID)
    assert [role for role, _, _ in stack.files()] == ["pulid", "faceDetection", "faceRecognition", "visionTower"]
    cat = catalog()
    del cat.entries[DEFAULT_ENCODERS["faceParsing"]]
    with pytest.raises(ContractError) as info:
        stack_entries(cat, DEFAULT_PULID)
    assert DEFAULT_ENCODERS["faceParsing"] in info.value.errors[0].message


def test_one_error_names_every_unusable_encoder():
    wrong_role = Entry(DEFAULT_ENCODERS["visionTower"], "idEncoder", {"model": "clip_vision/x.pt"},
                       options={"role": "faceDetection"})
    cat = catalog(vision=wrong_role)
    del cat.entries[DEFAULT_ENCODERS["faceDetection"]]
    with pytest.raises(ContractError) as info:
        stack_entries(cat, DEFAULT_PULID)
    message = info.value.errors[0].message
    assert info.value.parameters == ["pulid"]
    assert DEFAULT_ENCODERS["faceDetection"] in message and DEFAULT_ENCODERS["visionTower"] in message
    assert DEFAULT_ENCODERS["faceRecognition"] not in message
    with pytest.raises(ContractError) as info:
        stack_entries(catalog(), "pulid:flux@v9")
    assert info.value.codes == ["unknownModel"]
    with pytest.raises(ContractError) as info:
        stack_entries(catalog(), DEFAULT_ENCODERS["faceRecognition"])
    assert info.value.codes == ["invalidModelKind"]


def test_the_missing_files_error_says_where_each_file_goes():
    err = missing_files_error([Missing("pulid", DEFAULT_PULID, "pulid/p.safetensors", ["/m/pulid"]),
                               Missing("visionTower", "eva-clip:x@1", "clip_vision/e.pt", [])])
    (e,) = err.errors
    assert (e.code, e.parameter) == ("missingModelFile", "pulid")
    assert "2 file(s)" in e.message and "/m/pulid" in e.message and "ComfyUI/models/clip_vision/" in e.message
    assert "no configured folder" in e.message and "nothing is downloaded" in e.message


def test_true_cfg_acts_only_clearly_above_one():
    from imageinference.engines.pulid.schedule import TRUE_CFG_START, true_cfg_acts

    for off in (None, float("nan"), 0.0, 0.5, 0.99, 1.0, 1.01):
        assert not true_cfg_acts(off), off
    for on in (1.011, 1.5, 4.0, 10.0):
        assert true_cfg_acts(on), on
    sigmas = [1.0, 0.8, 0.5, 0.2, 0.0]
    bound = TRUE_CFG_START.sigma_bound(sigmas)
    assert [identity_active(s, bound) for s in sigmas[:-1]] == [False, True, True, True]
