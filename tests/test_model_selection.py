"""sktopk estimators inside scikit-learn's model selection, scored by top-K accuracy."""

import warnings

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, StratifiedKFold, cross_validate
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from sktopk import ImbalancedTopKClassifier, TopKClassifier
from sktopk.metrics import make_top_k_scorer, top_k_accuracy_score

FAST = {"hidden_layer_sizes": (16,), "max_epochs": 8, "batch_size": 64, "device": "cpu",
        "random_state": 0}


@pytest.fixture(scope="module")
def heavy_tailed():
    """20 overlapping classes with sizes from 120 down to singletons."""
    rng = np.random.default_rng(0)
    sizes = np.array([120, 80, 60, 40, 30, 25, 20, 15, 12, 10, 8, 6, 5, 4, 3, 2, 2, 1, 1, 1])
    y = np.repeat(np.arange(20), sizes)
    centers = rng.normal(scale=1.5, size=(20, 8))
    X = centers[y] + rng.normal(size=(len(y), 8))
    return X, y


def test_grid_search_over_k_and_epsilon_on_heavy_tailed_data(heavy_tailed):
    X, y = heavy_tailed
    search = GridSearchCV(
        make_pipeline(StandardScaler(), TopKClassifier(**FAST)),
        {"topkclassifier__k": [1, 3, 5], "topkclassifier__epsilon": [0.1, 1.0]},
        scoring=make_top_k_scorer(5),
        cv=StratifiedKFold(3, shuffle=True, random_state=0),
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        search.fit(X, y)
    split_scores = np.array([search.cv_results_[f"split{i}_test_score"] for i in range(3)])
    assert np.isfinite(split_scores).all()
    assert ((split_scores >= 0) & (split_scores <= 1)).all()
    assert set(search.best_params_) == {"topkclassifier__k", "topkclassifier__epsilon"}
    # Only the splitter's own notice about classes smaller than n_splits is expected:
    # nothing per fit or per score.
    messages = {str(w.message) for w in caught}
    assert len(caught) <= 3, messages
    assert all("least populated class" in m for m in messages), messages


def test_cross_validate_multi_metric_for_sktopk_and_logistic_regression(heavy_tailed):
    X, y = heavy_tailed
    scoring = {
        "top1": make_top_k_scorer(1),
        "top5": make_top_k_scorer(5),
        "macro_top5": make_top_k_scorer(5, average="macro"),
    }
    cv = StratifiedKFold(3, shuffle=True, random_state=1)
    for estimator in (
        make_pipeline(StandardScaler(), TopKClassifier(k=3, **FAST)),
        ImbalancedTopKClassifier(k=3, **FAST),
        TopKClassifier(k=3, loss="cross_entropy", **FAST),
        LogisticRegression(max_iter=500),
    ):
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="The least populated class")
            result = cross_validate(estimator, X, y, scoring=scoring, cv=cv)
        for name in scoring:
            values = result[f"test_{name}"]
            assert np.isfinite(values).all(), (estimator, name)
        assert (result["test_top5"] >= result["test_top1"]).all()


def test_scorer_agrees_with_predict_topk(heavy_tailed):
    X, y = heavy_tailed
    clf = TopKClassifier(k=5, **FAST).fit(X, y)
    hits = (clf.predict_topk(X, k=5) == y[:, None]).any(axis=1).mean()
    assert make_top_k_scorer(5)(clf, X, y) == pytest.approx(hits)
    assert top_k_accuracy_score(y, clf.decision_function(X), k=5,
                                labels=clf.classes_) == pytest.approx(hits)


def test_grid_search_with_two_processes(heavy_tailed):
    X, y = heavy_tailed
    grid = {"k": [1, 3], "epsilon": [0.5]}
    serial = GridSearchCV(TopKClassifier(**FAST), grid, scoring=make_top_k_scorer(5),
                          cv=StratifiedKFold(2, shuffle=True, random_state=0))
    parallel = GridSearchCV(TopKClassifier(**FAST), grid, scoring=make_top_k_scorer(5),
                            cv=StratifiedKFold(2, shuffle=True, random_state=0), n_jobs=2)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The least populated class")
        serial.fit(X, y)
        parallel.fit(X, y)
    np.testing.assert_allclose(parallel.cv_results_["mean_test_score"],
                               serial.cv_results_["mean_test_score"])
    assert parallel.best_params_ == serial.best_params_
