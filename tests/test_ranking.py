"""The shared ranking rule: top-k columns and the rank of the true column."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from sktopk._ranking import UNSEEN_RANK, binary_scores_to_2d, top_k_indices, true_label_rank


def reference_top_k(scores, k):
    # Python sort with the documented key: higher score first, then lower column.
    return np.array(
        [sorted(range(len(row)), key=lambda j, row=row: (-row[j], j))[:k] for row in scores],
        dtype=np.intp,
    ).reshape(len(scores), k)


@pytest.mark.parametrize("seed", range(20))
def test_top_k_indices_matches_python_sort_with_heavy_ties(seed):
    rng = np.random.default_rng(seed)
    n, c = rng.integers(1, 30), rng.integers(1, 80)
    # Few distinct values: many ties, also at the k-th place.
    scores = rng.integers(0, 4, size=(n, c)).astype(float)
    for k in {1, 2, int(rng.integers(1, c + 1)), c}:
        got = top_k_indices(scores, k)
        assert got.shape == (n, k)
        np.testing.assert_array_equal(got, reference_top_k(scores, k))


@pytest.mark.parametrize("seed", range(10))
def test_partition_path_equals_full_stable_argsort(seed):
    # Many classes, small k: the argpartition path (k < n_classes / 4) is taken.
    rng = np.random.default_rng(seed)
    scores = rng.integers(0, 3, size=(50, 200)).astype(np.float32)
    scores[:, ::7] = np.inf
    scores[:, 3] = -np.inf
    for k in (1, 3, 10, 49):
        np.testing.assert_array_equal(
            top_k_indices(scores, k), np.argsort(-scores, axis=1, kind="stable")[:, :k]
        )


def test_tie_rule_lower_index_first():
    scores = np.array([[1.0, 2.0, 2.0, 0.0, 2.0]])
    np.testing.assert_array_equal(top_k_indices(scores, 2), [[1, 2]])
    np.testing.assert_array_equal(top_k_indices(scores, 4), [[1, 2, 4, 0]])
    # -0.0 and 0.0 are the same score.
    np.testing.assert_array_equal(top_k_indices(np.array([[-0.0, 0.0]]), 1), [[0]])
    np.testing.assert_array_equal(top_k_indices(np.array([[0.0, -0.0]]), 1), [[0]])


def test_integer_and_bool_scores_rank_like_floats():
    scores = np.array([[3, 250, 7]], dtype=np.uint8)
    np.testing.assert_array_equal(top_k_indices(scores, 2), [[1, 2]])
    np.testing.assert_array_equal(top_k_indices(np.array([[False, True]]), 1), [[1]])


def test_empty_rows():
    assert top_k_indices(np.zeros((0, 4)), 2).shape == (0, 2)
    assert true_label_rank(np.zeros((0, 4)), np.zeros(0, dtype=int)).shape == (0,)


@pytest.mark.parametrize(
    ("scores", "k", "error", "match"),
    [
        (np.zeros(3), 1, ValueError, "shape \\(n_samples, n_classes\\)"),
        (np.zeros((2, 3)), 0, ValueError, "positive integer"),
        (np.zeros((2, 3)), 1.0, TypeError, "positive integer"),
        (np.zeros((2, 3)), True, TypeError, "positive integer"),
        (np.zeros((2, 3)), 4, ValueError, "larger than the number of classes"),
        (np.array([[0.0, np.nan]]), 1, ValueError, "NaN"),
        (np.array([["a", "b"]]), 1, TypeError, "real numbers"),
    ],
)
def test_top_k_indices_errors(scores, k, error, match):
    with pytest.raises(error, match=match):
        top_k_indices(scores, k)


@pytest.mark.parametrize("seed", range(10))
def test_true_label_rank_is_position_in_top_k(seed):
    rng = np.random.default_rng(seed)
    n, c = 40, int(rng.integers(2, 30))
    scores = rng.integers(0, 3, size=(n, c)).astype(float)
    y = rng.integers(0, c, size=n)
    rank = true_label_rank(scores, y)
    order = np.argsort(-scores, axis=1, kind="stable")
    np.testing.assert_array_equal(rank, np.argmax(order == y[:, None], axis=1))
    for k in range(1, c + 1):
        in_top = (top_k_indices(scores, k) == y[:, None]).any(axis=1)
        np.testing.assert_array_equal(rank < k, in_top)


def test_true_label_rank_unseen_is_a_miss_for_every_k():
    rank = true_label_rank(np.array([[1.0, 2.0], [1.0, 2.0]]), [-1, 0])
    assert rank[0] == UNSEEN_RANK and rank[1] == 1
    with pytest.raises(ValueError, match=r"y_index must lie in \[-1, 2\)"):
        true_label_rank(np.zeros((1, 2)), [2])
    with pytest.raises(ValueError, match="y_index must have shape"):
        true_label_rank(np.zeros((2, 2)), [0])


def test_binary_scores_to_2d():
    d = np.array([2.0, -1.0, 0.0])
    np.testing.assert_array_equal(binary_scores_to_2d(d), np.column_stack([-d, d]))
    # Boundary values tie, and a tie ranks the first class (classes_[0]) first.
    np.testing.assert_array_equal(top_k_indices(binary_scores_to_2d(d), 1)[:, 0], [1, 0, 0])
    p = np.array([0.9, 0.5, 0.1])
    np.testing.assert_array_equal(
        top_k_indices(binary_scores_to_2d(p, kind="proba"), 1)[:, 0], [1, 0, 0]
    )
    np.testing.assert_array_equal(binary_scores_to_2d(d[:, None]), binary_scores_to_2d(d))
    with pytest.raises(ValueError, match="kind must be"):
        binary_scores_to_2d(d, kind="logit")
    with pytest.raises(ValueError, match="binary scores must have shape"):
        binary_scores_to_2d(np.zeros((2, 2)))


@settings(max_examples=60, deadline=None)
@given(
    arrays(
        np.float64,
        st.tuples(st.integers(1, 6), st.integers(1, 40)),
        elements=st.sampled_from([-np.inf, -1.0, -0.0, 0.0, 0.5, 1.0, np.inf]),
    ),
    st.data(),
)
def test_property_top_k_equals_stable_argsort(scores, data):
    k = data.draw(st.integers(1, scores.shape[1]))
    np.testing.assert_array_equal(
        top_k_indices(scores, k), np.argsort(-scores, axis=1, kind="stable")[:, :k]
    )
