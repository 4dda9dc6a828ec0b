"""combineMethod on numpy arrays, against the reference formulas written out element by element."""

import math

import numpy as np
import pytest

from imageinference.engines.ipadapter.combine import combine, combines_uncond


@pytest.fixture
def embeds():
    return np.random.default_rng(3).normal(size=(3, 2, 5))  # three images, 2 tokens of 5 features


def elementwise(e, f):
    """Apply f(list of the images' values) at every (token, feature) position."""
    n, tokens, feats = e.shape
    out = np.empty((1, tokens, feats))
    for t in range(tokens):
        for j in range(feats):
            out[0, t, j] = f([float(e[i, t, j]) for i in range(n)])
    return out


def test_add_subtract_average(embeds):
    np.testing.assert_allclose(combine(embeds, "add"), elementwise(embeds, sum))
    np.testing.assert_allclose(combine(embeds, "subtract"), elementwise(embeds, lambda v: v[0] - sum(v[1:]) / len(v[1:])))
    np.testing.assert_allclose(combine(embeds, "average"), elementwise(embeds, lambda v: sum(v) / len(v)))


def test_norm_average_normalises_each_feature_over_the_images(embeds):
    def ref(values):
        norm = math.sqrt(sum(x * x for x in values))
        return sum(x / norm for x in values) / len(values)

    np.testing.assert_allclose(combine(embeds, "norm_average"), elementwise(embeds, ref))


def test_concat_keeps_every_image_and_one_image_is_never_changed(embeds):
    assert combine(embeds, "concat") is embeds
    one = embeds[:1]
    for method in ("concat", "add", "subtract", "average", "norm_average"):
        assert combine(one, method) is one
    assert combines_uncond("concat", 3) == 3 and combines_uncond("average", 3) == 1


def test_pooled_embeddings_too():
    e = np.array([[1.0, 2.0], [3.0, 6.0]])
    np.testing.assert_allclose(combine(e, "subtract"), [[-2.0, -4.0]])
    np.testing.assert_allclose(combine(e, "norm_average"),
                               [[(1 / math.sqrt(10) + 3 / math.sqrt(10)) / 2, (2 / math.sqrt(40) + 6 / math.sqrt(40)) / 2]])
    with pytest.raises(ValueError):
        combine(e[:0], "add")


def test_norm_average_takes_the_callers_norm(embeds):
    """Callers with an array library pass its own vector norm (the reference's results depend on its summation
    order in the last bit); the result is the same formula."""
    calls = []

    def norm(e):
        calls.append(e.shape)
        return np.linalg.norm(e, axis=0)

    np.testing.assert_allclose(combine(embeds, "norm_average", norm), combine(embeds, "norm_average"))
    assert calls == [embeds.shape]
