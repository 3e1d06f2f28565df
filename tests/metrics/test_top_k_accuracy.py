"""top_k_accuracy_score / top_k_accuracy_curve against references on random inputs."""

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.metrics import top_k_accuracy_score as sk_top_k_accuracy_score

from sktopk.metrics import top_k_accuracy_curve, top_k_accuracy_score


def reference_macro(y_true, y_score, k, labels, sample_weight=None):
    """Per-class loop: for each class in y_true, weighted share of its samples in the top k."""
    labels = list(labels)
    w = np.ones(len(y_true)) if sample_weight is None else np.asarray(sample_weight, float)
    rates = []
    for c in sorted(set(np.asarray(y_true).tolist())):
        num = den = 0.0
        for i, yi in enumerate(y_true):
            if yi != c:
                continue
            order = sorted(range(len(labels)), key=lambda j, i=i: (-y_score[i][j], j))
            num += w[i] * (labels.index(c) in order[:k])
            den += w[i]
        if den > 0:
            rates.append(num / den)
    return float(np.mean(rates))


def random_problem(rng, *, n_classes, n_samples, all_present):
    y = rng.integers(0, n_classes, size=n_samples)
    if all_present:
        y[:n_classes] = np.arange(n_classes)
        rng.shuffle(y)
    scores = rng.normal(size=(n_samples, n_classes))
    return y, scores


@pytest.fixture(autouse=True)
def _no_k_warning_noise():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        yield


@pytest.mark.parametrize("seed", range(40))
def test_micro_equals_sklearn_multiclass(seed):
    rng = np.random.default_rng(seed)
    n_classes = int(rng.integers(3, 15))
    n_samples = int(rng.integers(n_classes, 80))
    all_present = bool(seed % 2)
    y, scores = random_problem(
        rng, n_classes=n_classes, n_samples=n_samples, all_present=all_present
    )
    labels = None if all_present else np.arange(n_classes)
    weight = rng.random(n_samples) if seed % 3 == 0 else None
    for k in (1, 2, int(rng.integers(1, n_classes + 2))):
        expected = sk_top_k_accuracy_score(y, scores, k=k, labels=labels, sample_weight=weight)
        got = top_k_accuracy_score(y, scores, k=k, labels=labels, sample_weight=weight)
        assert got == pytest.approx(expected, rel=1e-12, abs=1e-12)
        assert isinstance(got, float)


@pytest.mark.parametrize("seed", range(20))
def test_micro_equals_sklearn_binary_1d(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 60))
    y = rng.integers(0, 2, size=n)
    y[:2] = [0, 1]
    # Probabilities (read with boundary 0.5) and decision values (boundary 0),
    # including exact boundary values, where both pick the first class.
    proba = rng.choice([0.0, 0.2, 0.5, 0.7, 1.0], size=n)
    decision = rng.normal(size=n)
    decision[::5] = 0.0
    labels = np.array(["no", "yes"]) if seed % 2 else None
    y_lab = labels[y] if labels is not None else y
    weight = rng.random(n) if seed % 3 == 0 else None
    for scores in (proba, decision):
        for k in (1, 2):
            expected = sk_top_k_accuracy_score(
                y_lab, scores, k=k, labels=labels, sample_weight=weight
            )
            got = top_k_accuracy_score(y_lab, scores, k=k, labels=labels, sample_weight=weight)
            assert got == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("seed", range(30))
def test_macro_equals_per_class_loop(seed):
    rng = np.random.default_rng(seed)
    n_classes = int(rng.integers(2, 10))
    y, scores = random_problem(rng, n_classes=n_classes, n_samples=40, all_present=False)
    # Coarse scores: ties at the k-th place are frequent.
    scores = np.round(scores)
    labels = np.arange(n_classes)
    weight = rng.random(40) if seed % 2 else None
    if weight is not None:
        weight[y == y[0]] = 0.0  # a class with zero total weight is treated as absent
    for k in range(1, n_classes + 1):
        got = top_k_accuracy_score(
            y, scores, k=k, average="macro", labels=labels, sample_weight=weight
        )
        assert got == pytest.approx(reference_macro(y, scores, k, labels, weight), rel=1e-12)


def test_macro_differs_from_micro_on_imbalanced_data():
    # 9 samples of class 0 always right, 1 sample of class 1 always wrong.
    y = np.array([0] * 9 + [1])
    scores = np.tile([1.0, 0.0, 0.5], (10, 1))
    assert top_k_accuracy_score(y, scores, k=1, labels=[0, 1, 2]) == pytest.approx(0.9)
    assert top_k_accuracy_score(y, scores, k=1, labels=[0, 1, 2], average="macro") == 0.5


@pytest.mark.parametrize("average", ["micro", "macro"])
@pytest.mark.parametrize("seed", range(10))
def test_monotone_in_k_and_one_at_n_classes(seed, average):
    rng = np.random.default_rng(seed)
    n_classes = int(rng.integers(2, 20))
    y, scores = random_problem(rng, n_classes=n_classes, n_samples=50, all_present=False)
    kwargs = dict(average=average, labels=np.arange(n_classes), sample_weight=rng.random(50))
    values = [top_k_accuracy_score(y, scores, k=k, **kwargs) for k in range(1, n_classes + 1)]
    assert np.all(np.diff(values) >= 0)
    assert values[-1] == 1.0
    assert top_k_accuracy_score(y, scores, k=n_classes + 3, **kwargs) == 1.0


@pytest.mark.parametrize("average", ["micro", "macro"])
@pytest.mark.parametrize("seed", range(10))
def test_curve_equals_pointwise(seed, average):
    rng = np.random.default_rng(seed)
    n_classes = int(rng.integers(2, 12))
    y, scores = random_problem(rng, n_classes=n_classes, n_samples=30, all_present=False)
    scores = np.round(scores, 1)
    ks = [3, 1, n_classes + 2, 2, 1]
    kwargs = dict(average=average, labels=np.arange(n_classes), sample_weight=rng.random(30))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the curve itself never warns
        curve = top_k_accuracy_curve(y, scores, ks=ks, **kwargs)
    assert curve.shape == (len(ks),) and curve.dtype == np.float64
    expected = [top_k_accuracy_score(y, scores, k=k, **kwargs) for k in ks]
    np.testing.assert_allclose(curve, expected, rtol=0, atol=0)
    default = top_k_accuracy_curve(y, scores, **kwargs)
    assert default.shape == (10,)


def test_tie_rule_lower_column_first_and_sklearn_difference():
    scores = np.array([[0.2, 0.4, 0.4], [0.2, 0.4, 0.4]])
    y = np.array([1, 2])
    labels = [0, 1, 2]
    # Ours: column 1 beats tied column 2. sklearn: the higher index wins the tie.
    assert top_k_accuracy_score(y[:1], scores[:1], k=1, labels=labels) == 1.0
    assert top_k_accuracy_score(y[1:], scores[1:], k=1, labels=labels) == 0.0
    assert sk_top_k_accuracy_score(y[:1], scores[:1], k=1, labels=labels) == 0.0
    assert sk_top_k_accuracy_score(y[1:], scores[1:], k=1, labels=labels) == 1.0
    # Ties not at the k-th place do not matter: both count both samples at k=2.
    assert top_k_accuracy_score(y, scores, k=2, labels=labels) == 1.0
    assert sk_top_k_accuracy_score(y, scores, k=2, labels=labels) == 1.0


def test_labels_give_column_order_and_may_be_unsorted():
    y = np.array(["b", "c", "a"])
    scores = np.array([[0.1, 0.8, 0.1], [0.1, 0.2, 0.7], [0.6, 0.3, 0.1]])
    assert top_k_accuracy_score(y, scores, k=1, labels=["a", "b", "c"]) == 1.0
    # The same scores read with another column order.
    reordered = scores[:, [2, 0, 1]]
    assert top_k_accuracy_score(y, reordered, k=1, labels=["c", "a", "b"]) == 1.0
    assert top_k_accuracy_score(y, scores, k=1) == 1.0  # default: sorted unique labels


def test_k_at_least_n_classes_warns():
    y = np.array([0, 1, 2])
    scores = np.eye(3)[::-1]
    with pytest.warns(UndefinedMetricWarning, match=r"k=3 is not smaller than the number"):
        assert top_k_accuracy_score(y, scores, k=3) == 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        top_k_accuracy_score(y, scores, k=2)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (dict(k=0), ValueError, "k must be a positive integer"),
        (dict(k=2.0), TypeError, "k must be a positive integer"),
        (dict(average="weighted"), ValueError, "average must be one of"),
        (dict(y_score=np.zeros((4, 2))), ValueError, r"y_true holds 3 distinct labels"),
        (dict(y_score=np.zeros((3, 3))), ValueError, r"y_score must have shape \(4,\)"),
        (dict(y_score=np.zeros((4, 3, 1))), ValueError, "y_score must have shape"),
        (dict(y_score=np.full((4, 3), np.nan)), ValueError, "y_score contains NaN or infinite"),
        (dict(y_score=np.full((4, 3), np.inf)), ValueError, "y_score contains NaN or infinite"),
        (dict(y_score=[["a"] * 3] * 4), TypeError, "real-valued"),
        (dict(labels=[0, 1, 3]), ValueError, r"y_true contains labels not in labels: \[2\]"),
        (dict(labels=[0, 1, 1]), ValueError, "duplicates"),
        (dict(labels=[0, 1, 2, 3]), ValueError, "labels has 4 entries but y_score has 3"),
        (dict(sample_weight=[1.0, 1.0]), ValueError, r"sample_weight must have shape \(4,\)"),
        (dict(sample_weight=[1.0, -1.0, 1.0, 1.0]), ValueError, "non-negative"),
        (dict(sample_weight=[0.0] * 4), ValueError, "sums to zero"),
        (dict(y_true=[0.5, 1.5, 2.5, 0.5]), ValueError, "target type 'continuous'"),
    ],
)
def test_bad_inputs(kwargs, error, match):
    args = dict(y_true=np.array([0, 1, 2, 2]), y_score=np.random.default_rng(0).random((4, 3)), k=1)
    args.update(kwargs)
    with pytest.raises(error, match=match):
        top_k_accuracy_score(**args)


def test_binary_1d_needs_two_labels():
    with pytest.raises(ValueError, match=r"1 distinct labels but y_score has 2 \(binary\)"):
        top_k_accuracy_score([1, 1], [0.3, 0.6], k=1)
    assert top_k_accuracy_score([1, 1], [0.3, 0.6], k=1, labels=[0, 1]) == 0.5


@pytest.mark.parametrize(
    ("ks", "error", "match"),
    [
        (3, TypeError, "iterable of positive integers"),
        ([], ValueError, "non-empty"),
        ([1, 0], ValueError, "positive integers"),
        ([1.5], TypeError, "positive integers"),
    ],
)
def test_curve_bad_ks(ks, error, match):
    with pytest.raises(error, match=match):
        top_k_accuracy_curve([0, 1, 2], np.eye(3), ks=ks)


@st.composite
def problems(draw):
    n_classes = draw(st.integers(2, 8))
    n = draw(st.integers(1, 25))
    y = draw(st.lists(st.integers(0, n_classes - 1), min_size=n, max_size=n))
    values = st.sampled_from([-2.0, -0.5, 0.0, 0.5, 1.0, 3.0])
    rows = draw(
        st.lists(st.lists(values, min_size=n_classes, max_size=n_classes), min_size=n, max_size=n)
    )
    w = draw(st.lists(st.floats(0.1, 10.0), min_size=n, max_size=n))
    return np.array(y), np.array(rows), np.arange(n_classes), np.array(w)


@settings(max_examples=60, deadline=None)
@given(problems(), st.sampled_from(["micro", "macro"]))
def test_property_curve_monotone_bounded_and_invariant(problem, average):
    y, scores, labels, w = problem
    n_classes = len(labels)
    kw = dict(average=average, labels=labels, sample_weight=w)
    curve = top_k_accuracy_curve(y, scores, ks=range(1, n_classes + 1), **kw)
    assert np.all((curve >= 0) & (curve <= 1))
    assert np.all(np.diff(curve) >= -1e-12)
    assert curve[-1] == pytest.approx(1.0)
    # Invariant to a monotone transform of the scores and to scaling all weights.
    np.testing.assert_allclose(
        top_k_accuracy_curve(
            y,
            3 * scores + 1,
            ks=range(1, n_classes + 1),
            average=average,
            labels=labels,
            sample_weight=7 * w,
        ),
        curve,
        rtol=1e-12,
    )
    # Integer weights equal repeating samples.
    reps = np.arange(len(y)) % 3 + 1
    np.testing.assert_allclose(
        top_k_accuracy_curve(
            y, scores, ks=[1, 2], average=average, labels=labels, sample_weight=reps
        ),
        top_k_accuracy_curve(
            np.repeat(y, reps),
            np.repeat(scores, reps, axis=0),
            ks=[1, 2],
            average=average,
            labels=labels,
        ),
        rtol=1e-12,
    )
    if average == "macro":
        assert curve[0] == pytest.approx(reference_macro(y, scores, 1, labels, w), rel=1e-12)
    else:
        # (sklearn refuses 2-D scores for two classes, and breaks ties the other way.)
        if n_classes > 2 and not _tied_at_first_place(y, scores):
            expected = sk_top_k_accuracy_score(y, scores, k=1, labels=labels, sample_weight=w)
            assert curve[0] == pytest.approx(expected, rel=1e-12)


def _tied_at_first_place(y, scores):
    best = scores.max(axis=1)
    return bool(((scores == best[:, None]).sum(axis=1) > 1).any())
