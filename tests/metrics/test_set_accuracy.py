import pickle

import numpy as np
import pytest
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV

from sktopk import AverageKClassifier
from sktopk.metrics import make_set_scorer, mean_set_size, set_accuracy_score


def _loop_reference(y, sets, labels, weight, average, metric):
    column = {label: j for j, label in enumerate(labels)}
    values = [sets[i, column[y[i]]] if metric == "accuracy" else sets[i].sum()
              for i in range(len(y))]
    if average == "micro":
        return sum(w * v for w, v in zip(weight, values, strict=True)) / sum(weight)
    per_class = []
    for label in dict.fromkeys(y.tolist()):
        idx = [i for i in range(len(y)) if y[i] == label]
        w = sum(weight[i] for i in idx)
        if w > 0:
            per_class.append(sum(weight[i] * values[i] for i in idx) / w)
    return sum(per_class) / len(per_class)


@pytest.mark.parametrize("average", ["micro", "macro"])
@pytest.mark.parametrize("metric", ["accuracy", "size"])
def test_against_a_per_sample_loop(average, metric):
    rng = np.random.default_rng(0)
    func = set_accuracy_score if metric == "accuracy" else mean_set_size
    for _ in range(25):
        n, c = int(rng.integers(1, 40)), int(rng.integers(2, 8))
        labels = rng.permutation(np.array(list("abcdefgh"))[:c])
        y = rng.choice(labels, n)
        sets = rng.random((n, c)) < rng.random()
        weight = rng.integers(0, 3, n).astype(float)
        weight[0] = 1.0
        got = func(y, sets, average=average, labels=labels, sample_weight=weight)
        assert got == pytest.approx(_loop_reference(y, sets, labels, weight, average, metric))


def test_agrees_with_mapie():
    mapie_metrics = pytest.importorskip("mapie.metrics.classification")
    rng = np.random.default_rng(1)
    y = rng.integers(0, 6, 200)
    sets = rng.random((200, 6, 1)) < 0.4
    assert set_accuracy_score(y, sets) == pytest.approx(
        mapie_metrics.classification_coverage_score(y, sets)[0])
    assert mean_set_size(y, sets) == pytest.approx(
        mapie_metrics.classification_mean_width_score(sets)[0])


def test_errors():
    sets = np.ones((3, 2), dtype=bool)
    with pytest.raises(ValueError, match="shape"):
        set_accuracy_score([0, 1], sets)
    with pytest.raises(TypeError, match="boolean"):
        set_accuracy_score([0, 1, 1], sets * 0.5)
    with pytest.raises(ValueError, match="labels not in labels"):
        set_accuracy_score([0, 1, 5], sets)
    with pytest.raises(ValueError, match="pass labels="):
        set_accuracy_score(["a", "b", "a"], sets)
    with pytest.raises(ValueError, match="average must be one of"):
        mean_set_size([0, 1, 1], sets, average="weighted")
    with pytest.raises(ValueError, match="needs y_true"):
        mean_set_size(None, sets, average="macro")
    with pytest.raises(ValueError, match="metric must be one of"):
        make_set_scorer("coverage")


def test_micro_mean_set_size_ignores_the_labels():
    # The docstring: y_true is only used by macro averaging, so string labels
    # need no labels= there; the sample count is still checked.
    sets = np.array([[True, True, False], [False, True, False], [False, False, True]])
    assert mean_set_size(np.array(["a", "b", "c"]), sets) == pytest.approx(4 / 3)
    assert mean_set_size(["x", "y", "z"], sets, sample_weight=[1, 0, 1]) == pytest.approx(1.5)
    with pytest.raises(ValueError, match="shape"):
        mean_set_size(["a", "b"], sets)


def test_scorer_matches_the_metrics_and_counts_unseen_labels_as_misses():
    X, y = make_classification(n_samples=600, n_features=10, n_informative=6, n_classes=5,
                               n_clusters_per_class=1, random_state=0)
    model = AverageKClassifier(LogisticRegression(max_iter=1000), average_k=1.5,
                               random_state=0).fit(X, y)
    sets = model.predict_set(X)
    for average in ("micro", "macro"):
        assert make_set_scorer("accuracy", average=average)(model, X, y) == pytest.approx(
            set_accuracy_score(y, sets, average=average))
        assert make_set_scorer("size", average=average)(model, X, y) == pytest.approx(
            -mean_set_size(y, sets, average=average))
    # A test label the model never saw is a miss; its sample's set still has a size.
    y_unseen = y.copy()
    y_unseen[:60] = 77
    expected = ((sets[np.arange(600), np.clip(y, 0, 4)]) & (y_unseen != 77)).mean()
    assert make_set_scorer()(model, X, y_unseen) == pytest.approx(expected)
    scorer = pickle.loads(pickle.dumps(make_set_scorer("size", average="macro")))
    assert repr(scorer) == "make_set_scorer('size', average='macro')"
    with pytest.raises(TypeError, match="predict_set"):
        make_set_scorer()(LogisticRegression().fit(X, y), X, y)


def test_scorer_in_grid_search():
    X, y = make_classification(n_samples=600, n_features=10, n_informative=6, n_classes=5,
                               n_clusters_per_class=1, random_state=0)
    search = GridSearchCV(AverageKClassifier(LogisticRegression(max_iter=1000), random_state=0),
                          {"average_k": [1.0, 2.0]}, cv=3,
                          scoring=make_set_scorer("size", average="micro")).fit(X, y)
    # Smaller sets score higher on the negated size.
    assert search.best_params_ == {"average_k": 1.0}
    sizes = -search.cv_results_["mean_test_score"]
    assert abs(sizes[0] - 1.0) < 0.2 and abs(sizes[1] - 2.0) < 0.3
