import re
import warnings
from pathlib import Path

import numpy as np
import pytest
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.datasets import make_classification
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.naive_bayes import GaussianNB
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC, LinearSVC

from sktopk import ImbalancedTopKClassifier, TopKClassifier, predict_topk
from sktopk.metrics import make_top_k_scorer

FAST = {"hidden_layer_sizes": (16,), "max_epochs": 5, "batch_size": 64, "device": "cpu",
        "random_state": 0}
README = Path(__file__).resolve().parent.parent / "README.md"


@pytest.fixture(scope="module")
def data():
    X, y = make_classification(n_samples=300, n_features=8, n_informative=6, n_classes=6,
                               n_clusters_per_class=1, random_state=0)
    # String labels in a non-sorted-looking alphabet check that labels, not column
    # indices, come back.
    labels = np.array(["f", "b", "d", "a", "e", "c"])
    return X.astype(np.float32), labels[y]


def _reference(scores, classes, k):
    # Stable sort of -scores: the lower column wins a tie.
    return np.asarray(classes)[np.argsort(-np.asarray(scores), axis=1, kind="stable")[:, :k]]


@pytest.mark.parametrize("make", [
    lambda: LogisticRegression(max_iter=500),
    lambda: make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)),
    lambda: GridSearchCV(LogisticRegression(max_iter=500), {"C": [0.1, 1.0]}, cv=3),
    lambda: TopKClassifier(k=3, **FAST),
    lambda: make_pipeline(StandardScaler(), TopKClassifier(k=3, **FAST)),
    lambda: ImbalancedTopKClassifier(k=3, **FAST),
], ids=["logistic", "pipeline", "gridsearch", "topk", "topk-pipeline", "imbalanced"])
def test_matches_stable_sort_of_decision_function(make, data):
    X, y = data
    model = make().fit(X, y)
    got = predict_topk(model, X[:50], k=3)
    assert got.shape == (50, 3)
    np.testing.assert_array_equal(got, _reference(model.decision_function(X[:50]),
                                                  model.classes_, 3))
    final = model[-1] if hasattr(model, "steps") else model
    if hasattr(final, "predict_topk"):  # the sktopk estimators agree with it
        np.testing.assert_array_equal(got, model.predict_topk(X[:50], k=3) if final is model
                                      else final.predict_topk(model[:-1].transform(X[:50]),
                                                              k=3))


def test_predict_proba_only_estimator(data):
    X, y = data
    model = GaussianNB().fit(X, y)
    np.testing.assert_array_equal(predict_topk(model, X, k=2),
                                  _reference(model.predict_proba(X), model.classes_, 2))


def test_binary_one_dimensional_decision_function(data):
    X, y = data
    yb = np.where(np.isin(y, ["a", "b", "c"]), "neg", "pos")
    model = LinearSVC().fit(X, yb)
    d = model.decision_function(X)
    assert d.ndim == 1
    top = predict_topk(model, X, k=2)
    np.testing.assert_array_equal(top[:, 0], np.where(d > 0, "pos", "neg"))
    np.testing.assert_array_equal(top[:, 1], np.where(d > 0, "neg", "pos"))


class _TiedScores(ClassifierMixin, BaseEstimator):
    def fit(self, X, y):
        self.classes_ = np.unique(y)
        return self

    def decision_function(self, X):
        return np.tile([0.0, 1.0, 1.0, -0.0, 1.0], (len(X), 1))


def test_ties_go_to_the_earlier_class():
    model = _TiedScores().fit(np.zeros((5, 1)), [10, 20, 30, 40, 50])
    np.testing.assert_array_equal(predict_topk(model, np.zeros((2, 1)), k=4),
                                  [[20, 30, 50, 10]] * 2)


class _NoScores(ClassifierMixin, BaseEstimator):
    def fit(self, X, y):
        self.classes_ = np.unique(y)
        return self

    def predict(self, X):
        return np.full(len(X), self.classes_[0])


def test_errors(data):
    X, y = data
    with pytest.raises(NotFittedError, match="fit it first"):
        predict_topk(LogisticRegression(), X, k=2)
    with pytest.raises(TypeError, match="decision_function or predict_proba"):
        predict_topk(_NoScores().fit(X, y), X, k=2)
    model = LogisticRegression(max_iter=500).fit(X, y)
    with pytest.raises(ValueError, match="positive integer"):
        predict_topk(model, X, k=0)
    with pytest.raises(ValueError, match="response_method"):
        predict_topk(model, X, k=2, response_method="predict")
    with pytest.warns(UserWarning, match="larger than the 6 classes"):
        assert predict_topk(model, X[:3], k=9).shape == (3, 6)


@pytest.mark.parametrize("wrap", [lambda m: m, lambda m: make_pipeline(StandardScaler(), m),
                                  lambda m: GridSearchCV(m, {"C": [1.0]}, cv=2)],
                         ids=["svc", "pipeline", "gridsearch"])
def test_one_vs_one_pair_scores_are_refused(wrap):
    # With 3 classes, SVC's 3 one-vs-one columns have the shape of class scores.
    X, y = make_classification(n_samples=120, n_features=6, n_informative=4, n_classes=3,
                               n_clusters_per_class=1, random_state=0)
    model = wrap(SVC(decision_function_shape="ovo")).fit(X, y)
    with pytest.raises(ValueError, match="decision_function_shape='ovo'"):
        predict_topk(model, X, k=1)
    with pytest.raises(ValueError, match="decision_function_shape='ovo'"):
        make_top_k_scorer(1)(model, X, y)
    ovr = wrap(SVC()).fit(X, y)
    np.testing.assert_array_equal(predict_topk(ovr, X, k=1)[:, 0], ovr.predict(X))


def test_one_vs_one_is_fine_with_two_classes():
    # Binary: one column in either shape.
    X, y = make_classification(n_samples=120, n_features=6, n_informative=4, n_classes=2,
                               random_state=0)
    binary = SVC(decision_function_shape="ovo").fit(X, y)
    np.testing.assert_array_equal(predict_topk(binary, X, k=1)[:, 0], binary.predict(X))


@pytest.mark.parametrize("wrap", ["self-training", "bagging", "stacking"])
def test_one_vs_one_pair_scores_are_refused_through_meta_estimators(wrap):
    # These pass on (or average) the SVC's pair scores.
    from sklearn.ensemble import BaggingClassifier
    from sklearn.semi_supervised import SelfTrainingClassifier

    X, y = make_classification(n_samples=150, n_features=6, n_informative=4, n_classes=3,
                               n_clusters_per_class=1, random_state=0)
    svc = SVC(decision_function_shape="ovo", probability=True, random_state=0)
    from sklearn.ensemble import StackingClassifier

    model = {"self-training": lambda: SelfTrainingClassifier(svc),
             "bagging": lambda: BaggingClassifier(svc, n_estimators=2, random_state=0),
             "stacking": lambda: StackingClassifier([("lr", LogisticRegression())],
                                                    final_estimator=svc, cv=2)}[wrap]()
    model.fit(X, y)
    with pytest.raises(ValueError, match="decision_function_shape='ovo'"):
        predict_topk(model, X, k=1)


def _readme_snippet():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
    snippets = [b for b in blocks if "predict_topk" in b]
    assert len(snippets) == 1, "README.md should hold one Python block using predict_topk"
    return snippets[0]


def test_readme_snippet_runs_as_written(data):
    X, y = data
    X, y = X[:120], y[:120]
    namespace = {"X": X, "y": y, "X_new": X[:7]}
    code = _readme_snippet()
    # The snippet's last expression is its result: keep it.
    lines = code.rstrip("\n").split("\n")
    lines[-1] = "result = " + lines[-1]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        exec(compile("\n".join(lines), str(README), "exec"), namespace)
    result = namespace["result"]
    assert result.shape == (7, 5)
    assert set(np.unique(result)) <= set(np.unique(y))
    search = namespace["search"]
    np.testing.assert_array_equal(result, _reference(search.decision_function(X[:7]),
                                                     search.classes_, 5))


def test_sets_and_metrics_import_without_torch():
    import subprocess
    import sys

    code = ("import sys\nimport sktopk, sktopk.metrics\n"
            "sktopk.predict_topk, sktopk.AverageKClassifier, sktopk.TemperatureScaledClassifier\n"
            "sktopk.metrics.top_k_report, sktopk.metrics.make_set_scorer\n"
            "assert 'torch' not in sys.modules\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=Path(__file__).resolve().parent.parent)
    assert result.returncode == 0, result.stderr
