import pickle
import warnings

import numpy as np
import pytest
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.datasets import make_classification
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import LinearSVC
from sklearn.utils.estimator_checks import parametrize_with_checks

from sktopk import AverageKClassifier, TopKClassifier, predict_topk
from sktopk._average_k import _classwise_thresholds, _global_threshold
from sktopk.metrics import make_set_scorer, mean_set_size, set_accuracy_score

FAST = {"hidden_layer_sizes": (32,), "max_epochs": 10, "batch_size": 128, "device": "cpu",
        "learning_rate": 3e-3, "early_stopping": False, "random_state": 0}

# Each expected failure of sklearn's common checks, with the reason: none so far.
EXPECTED_FAILURES = {}


@parametrize_with_checks(
    [AverageKClassifier(LogisticRegression(), average_k=1.2, random_state=0),
     AverageKClassifier(LogisticRegression(), average_k=1.2, mode="classwise",
                        random_state=0)],
    expected_failed_checks=lambda est: EXPECTED_FAILURES,
)
def test_sklearn_common_checks(estimator, check):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        check(estimator)


@pytest.fixture(scope="module")
def data():
    X, y = make_classification(n_samples=1500, n_features=12, n_informative=8, n_classes=10,
                               n_clusters_per_class=1, class_sep=0.7, random_state=0)
    return X.astype(np.float32), y


def _nearest_size_brute_force(proba, k):
    """Among all candidate thresholds (the values), the one whose mean set size is nearest k
    (the larger set on a tie), by trying every value."""
    best = None
    for c in np.sort(np.unique(proba)):
        gap = abs((proba >= c).sum() - k * len(proba))  # counts: exact ties stay ties
        if best is None or gap < best[0]:
            best = (gap, c)
    return best[1]


def test_global_threshold_matches_brute_force():
    rng = np.random.default_rng(0)
    for _ in range(20):
        proba = rng.dirichlet(np.ones(7), size=int(rng.integers(5, 60)))
        k = float(rng.uniform(0.3, 6.5))
        t = _global_threshold(proba, k)
        assert t == _nearest_size_brute_force(proba, k)
        # Without ties it is the round(k * n)-th largest probability.
        target = max(1, round(k * len(proba)))
        assert t == np.sort(proba.ravel())[::-1][target - 1]


def test_global_threshold_prefers_the_larger_set_on_a_tie():
    proba = np.linspace(0.01, 0.99, 20).reshape(5, 4)  # 20 distinct values, 5 rows
    for k, expected in [(0.5, 0.6), (2.5, 2.6), (1.5, 1.6)]:
        t = _global_threshold(proba, k)
        assert (proba >= t).sum(axis=1).mean() == pytest.approx(expected)
        assert t == _nearest_size_brute_force(proba, k)
    # Tied probabilities: sizes 5/3 and 7/3, a third of a label either side of 2.
    tied = np.array([[0.9, 0.9, 0.4, 0.0], [0.9, 0.9, 0.4, 0.0], [0.9, 0.0, 0.0, 0.0]])
    assert _global_threshold(tied, 2.0) == 0.4


def test_global_threshold_with_tied_probabilities():
    # k-NN-like probabilities (multiples of 1/5, mostly exact zeros): the size
    # jumps; the threshold must give the nearest reachable size, never the
    # threshold 0 that puts every class in every set.
    rng = np.random.default_rng(1)
    for _ in range(20):
        votes = rng.multinomial(5, rng.dirichlet(np.full(10, 0.3)), size=200)
        proba = votes / 5.0
        k = float(rng.uniform(1.0, 3.0))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            t = _global_threshold(proba, k)
        assert t == _nearest_size_brute_force(proba, k)
        assert t > 0
    proba = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.6, 0.4, 0.0]])
    with pytest.warns(UserWarning, match="unreachable"):
        assert _global_threshold(proba, 2.0) == 0.4  # size 4/3, not 3 (threshold 0)


def test_classwise_thresholds_equalise_hit_rates():
    rng = np.random.default_rng(1)
    n, c = 2000, 6
    y = rng.integers(0, c, n)
    logits = rng.normal(size=(n, c))
    logits[np.arange(n), y] += rng.uniform(0, 3, n) * (1 + y / 2)  # easier classes
    proba = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    t = _classwise_thresholds(proba, y, 2.0)
    assert abs((proba >= t).sum(1).mean() - 2.0) < 0.01
    hit = [(proba[y == j, j] >= t[j]).mean() for j in range(c)]
    assert max(hit) - min(hit) < 0.02  # equal up to one sample per class
    # A global threshold gives the easy classes far higher hit rates.
    g = _global_threshold(proba, 2.0)
    hit_g = [(proba[y == j, j] >= g).mean() for j in range(c)]
    assert max(hit_g) - min(hit_g) > 0.1


@pytest.mark.parametrize("mode", ["global", "classwise"])
@pytest.mark.parametrize("make", [lambda: LogisticRegression(max_iter=1000),
                                  lambda: make_pipeline(StandardScaler(), LinearSVC()),
                                  lambda: TopKClassifier(k=3, **FAST)],
                         ids=["proba", "svc-temperature", "topk-temperature"])
def test_mean_set_size_on_held_out_data(make, mode, data):
    X, y = data
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.4, stratify=y,
                                                        random_state=0)
    model = AverageKClassifier(make(), average_k=2.5, calibration_fraction=0.3, mode=mode,
                               random_state=0).fit(X_train, y_train)
    assert abs(model.calibration_set_size_ - 2.5) < 0.05
    sets = model.predict_set(X_test)
    assert sets.dtype == bool and sets.shape == (len(y_test), 10)
    assert abs(mean_set_size(None, sets) - 2.5) < 0.25
    has_proba = isinstance(model.estimator_, LogisticRegression)
    assert (model.temperature_ is None) == has_proba
    # Same size as top-2.5 on average: the sets beat the top-2 accuracy.
    top2 = (predict_topk(model, X_test, k=2) == y_test[:, None]).any(1).mean()
    assert set_accuracy_score(y_test, sets) > top2


def test_pass_through_methods(data):
    X, y = data
    model = AverageKClassifier(LogisticRegression(max_iter=1000), average_k=2,
                               random_state=0).fit(X, y)
    inner = model.estimator_
    np.testing.assert_array_equal(model.predict(X), inner.predict(X))
    np.testing.assert_array_equal(model.decision_function(X), inner.decision_function(X))
    np.testing.assert_array_equal(model.predict_topk(X, k=3), predict_topk(inner, X, k=3))
    np.testing.assert_array_equal(model.predict_set(X),
                                  inner.predict_proba(X) >= model.threshold_)
    assert model.n_features_in_ == X.shape[1]


def test_prefit_uses_the_given_estimator(data):
    X, y = data
    inner = LogisticRegression(max_iter=1000).fit(X[:900], y[:900])
    model = AverageKClassifier(inner, average_k=3, cv="prefit").fit(X[900:], y[900:])
    assert model.estimator_ is inner
    proba = inner.predict_proba(X[900:])
    assert model.threshold_ == _global_threshold(proba, 3)


def test_string_labels_and_text_pipeline():
    names = ["anna", "anne", "annie", "bob", "bobby", "rob", "carl", "karl", "carla"] * 20
    labels = np.array(["A", "A", "A", "B", "B", "B", "C", "C", "C"] * 20)
    from sklearn.feature_extraction.text import TfidfVectorizer

    pipe = make_pipeline(TfidfVectorizer(analyzer="char", ngram_range=(1, 2)),
                         LogisticRegression())
    model = AverageKClassifier(pipe, average_k=1.5, random_state=0).fit(names, labels)
    np.testing.assert_array_equal(model.classes_, ["A", "B", "C"])
    assert model.predict_set(["annie", "karl"]).shape == (2, 3)


def test_clone_pickle_skops_and_grid_search(data):
    X, y = data
    model = AverageKClassifier(LogisticRegression(max_iter=1000), average_k=2, random_state=0)
    assert clone(model).get_params()["estimator__C"] == 1.0
    search = GridSearchCV(model, {"estimator__C": [0.01, 1.0], "average_k": [1.5, 2]}, cv=3,
                          scoring={"acc": make_set_scorer("accuracy", average="macro"),
                                   "size": make_set_scorer("size")}, refit="acc")
    search.fit(X, y)
    # Larger sets hold the truth more often: the search prefers average_k=2.
    assert search.best_params_["average_k"] == 2
    assert np.all(-search.cv_results_["mean_test_size"] < 2.4)
    fitted = model.fit(X, y)
    loaded = pickle.loads(pickle.dumps(fitted))
    np.testing.assert_array_equal(loaded.predict_set(X), fitted.predict_set(X))
    sio = pytest.importorskip("skops.io")
    blob = sio.dumps(fitted)
    # Nothing to trust beyond sktopk's own type (scikit-learn's are trusted by default).
    assert sio.get_untrusted_types(data=blob) == ["sktopk._average_k.AverageKClassifier"]
    loaded = sio.loads(blob, trusted=["sktopk._average_k.AverageKClassifier"])
    np.testing.assert_array_equal(loaded.predict_set(X), fitted.predict_set(X))


def test_topk_classifier_pickles_inside(data):
    X, y = data
    fitted = AverageKClassifier(TopKClassifier(k=3, **FAST), average_k=2,
                                random_state=0).fit(X, y)
    loaded = pickle.loads(pickle.dumps(fitted))
    np.testing.assert_array_equal(loaded.predict_set(X), fitted.predict_set(X))
    assert loaded.temperature_ == fitted.temperature_ > 0
    sio = pytest.importorskip("skops.io")
    blob = sio.dumps(fitted)
    untrusted = sio.get_untrusted_types(data=blob)
    assert all(name.startswith("sktopk.") for name in untrusted), untrusted
    loaded = sio.loads(blob, trusted=untrusted)
    np.testing.assert_array_equal(loaded.predict_set(X), fitted.predict_set(X))


class _NoScores(ClassifierMixin, BaseEstimator):
    def fit(self, X, y):
        self.classes_ = np.unique(y)
        return self

    def predict(self, X):
        return np.full(len(X), self.classes_[0])


def test_errors(data):
    X, y = data
    for bad in (0, -1, np.nan, "5", True):
        with pytest.raises(ValueError, match="average_k must be a positive number"):
            AverageKClassifier(LogisticRegression(), average_k=bad).fit(X, y)
    with pytest.raises(ValueError, match=r"smaller than the number of classes \(10\)"):
        AverageKClassifier(LogisticRegression(), average_k=10).fit(X, y)
    with pytest.raises(TypeError, match="neither decision_function nor predict_proba"):
        AverageKClassifier(_NoScores(), average_k=2).fit(X, y)
    with pytest.raises(ValueError, match="mode must be one of"):
        AverageKClassifier(LogisticRegression(), mode="macro").fit(X, y)
    with pytest.raises(ValueError, match="cv must be None"):
        AverageKClassifier(LogisticRegression(), cv=5).fit(X, y)
    with pytest.raises(ValueError, match="calibration_fraction must be a number in"):
        AverageKClassifier(LogisticRegression(), average_k=2, calibration_fraction=1.0).fit(X, y)
    inner = LogisticRegression(max_iter=1000).fit(X, y)
    with pytest.raises(ValueError, match="calibration data miss 1 of the 10 classes"):
        AverageKClassifier(inner, average_k=2, cv="prefit").fit(X[y != 3], y[y != 3])
    with pytest.raises(ValueError, match="labels the estimator was not fitted on"):
        AverageKClassifier(inner, average_k=2, cv="prefit").fit(X, y + 1)
    with pytest.raises(NotFittedError):
        AverageKClassifier(LogisticRegression(), average_k=2, cv="prefit").fit(X, y)
    y_single = y.copy()
    y_single[0] = 99
    with pytest.raises(ValueError, match=r"Classes \[99\] have a single sample"):
        AverageKClassifier(LogisticRegression(), average_k=2).fit(X, y_single)
    with pytest.raises(NotFittedError):
        AverageKClassifier(LogisticRegression()).predict_set(X)


def test_nearest_reachable_size_with_a_k_nearest_neighbours_model():
    # Five neighbours give probabilities in steps of 1/5, mostly zeros: a size of
    # 3 labels is out of reach, and the sets must not grow to every class.
    from sklearn.datasets import load_digits
    from sklearn.neighbors import KNeighborsClassifier

    X, y = load_digits(return_X_y=True)
    model = AverageKClassifier(KNeighborsClassifier(5), average_k=3, random_state=0)
    with pytest.warns(UserWarning, match="unreachable"):
        model.fit(X, y)
    assert model.threshold_ > 0
    assert model.calibration_set_size_ < 3
    assert mean_set_size(None, model.predict_set(X)) < 3
