"""make_top_k_scorer inside scikit-learn's model-selection and inspection tools."""

import pickle
import warnings

import numpy as np
import pytest
import sklearn
from sklearn.datasets import make_classification
from sklearn.dummy import DummyClassifier
from sklearn.exceptions import UnsetMetadataPassedError
from sklearn.inspection import permutation_importance
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.metrics import accuracy_score
from sklearn.model_selection import (
    GridSearchCV,
    KFold,
    StratifiedKFold,
    cross_validate,
    learning_curve,
)
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from sktopk.metrics import make_top_k_scorer, top_k_accuracy_score

SCORING = {
    "top1": make_top_k_scorer(1),
    "top5": make_top_k_scorer(5),
    "macro_top5": make_top_k_scorer(5, average="macro"),
}


def long_tailed(seed=0, counts=(40, 20, 12, 8, 5, 4, 3, 2, 1, 1, 1)):
    """Gaussian blobs with a heavy tail of classes, three of them singletons."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(len(counts)), counts)
    centers = rng.normal(scale=2.0, size=(len(counts), 6))
    X = centers[y] + rng.normal(size=(len(y), 6))
    perm = rng.permutation(len(y))
    return X[perm], y[perm]


def reference_score(estimator, X, y, k, average="micro", sample_weight=None):
    """Python loop: a label is a hit when it is in classes_ and among the k best columns."""
    scores = estimator.decision_function(X)
    classes = list(estimator.classes_)
    if scores.ndim == 1:
        scores = np.column_stack([-scores, scores])
    w = np.ones(len(y)) if sample_weight is None else np.asarray(sample_weight, float)
    hits = []
    for row, label in zip(scores, y, strict=True):
        order = sorted(range(len(classes)), key=lambda j, row=row: (-row[j], j))
        hits.append(label in classes and classes.index(label) in order[:k])
    hits = np.array(hits, dtype=float)
    if average == "micro":
        return float(np.sum(w * hits) / np.sum(w))
    rates = [np.sum((w * hits)[y == c]) / np.sum(w[y == c]) for c in np.unique(y)]
    return float(np.mean(rates))


def _splitter_warning(w):
    return "The least populated class in y has only" in str(w.message)


@pytest.mark.parametrize(
    "model",
    [
        LogisticRegression(max_iter=2000),
        make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)),
    ],
    ids=["logreg", "pipeline"],
)
def test_multimetric_cross_validate_on_long_tail_is_finite_and_quiet(model):
    X, y = long_tailed()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = cross_validate(
            model,
            X,
            y,
            cv=StratifiedKFold(3, shuffle=True, random_state=0),
            scoring=SCORING,
            return_estimator=True,
            error_score="raise",
        )
    # The only warning allowed is the splitter's own note about rare classes.
    assert all(_splitter_warning(w) for w in caught), [str(w.message) for w in caught]
    for name in SCORING:
        scores = result[f"test_{name}"]
        assert scores.shape == (3,) and np.isfinite(scores).all()
        assert ((scores >= 0) & (scores <= 1)).all()
    # Singletons land in one test fold only: some training folds miss classes.
    n_seen = [len(est.classes_) for est in result["estimator"]]
    assert min(n_seen) < len(np.unique(y))
    assert (result["test_top5"] >= result["test_top1"]).all()
    # And each split's score is the by-hand computation with aligned columns.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "The least populated class", UserWarning)
        splits = list(StratifiedKFold(3, shuffle=True, random_state=0).split(X, y))
    for split, (est, (_, test)) in enumerate(zip(result["estimator"], splits, strict=True)):
        for name, k, average in [
            ("top1", 1, "micro"),
            ("top5", 5, "micro"),
            ("macro_top5", 5, "macro"),
        ]:
            assert result[f"test_{name}"][split] == pytest.approx(
                reference_score(est, X[test], y[test], k, average), rel=1e-12
            )


def test_training_fold_missing_a_class_scores_finite_and_counts_it_as_miss():
    X, y = long_tailed(seed=1)
    rare = np.flatnonzero(y == 10)  # a singleton class
    train = np.setdiff1d(np.arange(len(y)), np.concatenate([rare, np.arange(30)]))
    test = np.union1d(rare, np.arange(30))
    model = LogisticRegression(max_iter=2000).fit(X[train], y[train])
    assert 10 not in model.classes_ and 10 in y[test]
    for k in (1, 3, 5, 50):
        for average in ("micro", "macro"):
            scorer = make_top_k_scorer(k, average=average)
            got = scorer(model, X[test], y[test])
            assert np.isfinite(got)
            assert got == pytest.approx(reference_score(model, X[test], y[test], k, average))
    # Even with k larger than every class count the unseen label stays a miss.
    seen = np.isin(y[test], model.classes_)
    assert make_top_k_scorer(50)(model, X[test], y[test]) == pytest.approx(seen.mean())
    assert make_top_k_scorer(50, average="macro")(model, X[test], y[test]) < 1.0

    # With explicit CV splits, cross_validate reports the same finite value.
    result = cross_validate(
        LogisticRegression(max_iter=2000), X, y, cv=[(train, test)], scoring=SCORING
    )
    assert np.isfinite(result["test_top1"]).all()
    assert result["test_top5"][0] == pytest.approx(make_top_k_scorer(5)(model, X[test], y[test]))


def test_scorer_equals_metric_on_aligned_columns():
    X, y = make_classification(
        n_samples=300, n_classes=7, n_informative=6, n_clusters_per_class=1, random_state=0
    )
    y = np.array(list("abcdefg"))[y]
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(X, y)
    Xt, yt = X[:120], y[:120]
    for k in (1, 2, 5):
        for average in ("micro", "macro"):
            expected = top_k_accuracy_score(
                yt, model.decision_function(Xt), k=k, average=average, labels=model.classes_
            )
            assert make_top_k_scorer(k, average=average)(model, Xt, yt) == pytest.approx(
                expected, rel=1e-12
            )
    # response_method="predict_proba": same ranking for a multinomial model.
    assert make_top_k_scorer(2, response_method="predict_proba")(model, Xt, yt) == (
        pytest.approx(make_top_k_scorer(2)(model, Xt, yt))
    )


@pytest.mark.parametrize("response_method", ["decision_function", "predict_proba"])
def test_binary_one_column_outputs(response_method):
    X, y = make_classification(n_samples=200, random_state=0)
    y = np.where(y == 1, 2, 1)  # classes_ = [1, 2]
    model = LogisticRegression().fit(X, y)
    scorer = make_top_k_scorer(1, response_method=response_method)
    assert scorer(model, X, y) == pytest.approx(accuracy_score(y, model.predict(X)))
    assert make_top_k_scorer(2, response_method=response_method)(model, X, y) == 1.0
    # An unseen third label is a miss even at k=2.
    y_new = y.copy()
    y_new[:10] = 3
    assert make_top_k_scorer(2)(model, X, y_new) == pytest.approx(0.95)


def test_binary_not_fooled_by_shared_cache_with_flipped_pos_label():
    # "average_precision" asks for decision_function with pos_label=1 == classes_[0],
    # so the cached binary decision values are negated for it.
    X, y = make_classification(n_samples=200, random_state=1)
    y = y + 1
    model = LogisticRegression().fit(X, y)
    result = cross_validate(
        LogisticRegression(),
        X,
        y,
        cv=KFold(2),
        return_estimator=True,
        scoring={"ap": "average_precision", "top1": make_top_k_scorer(1)},
    )
    for split, (est, (_, test)) in enumerate(
        zip(result["estimator"], KFold(2).split(X), strict=True)
    ):
        expected = accuracy_score(y[test], est.predict(X[test]))
        assert result["test_top1"][split] == pytest.approx(expected)
    assert model.classes_.tolist() == [1, 2]


def test_single_class_model_and_string_labels():
    X = np.zeros((4, 1))
    model = DummyClassifier(strategy="prior").fit(X, ["cat"] * 4)
    y = np.array(["cat", "dog", "cat", "cat"])
    assert make_top_k_scorer(1)(model, X, y) == 0.75
    assert make_top_k_scorer(1, average="macro")(model, X, y) == 0.5


def test_sample_weight_direct_call_and_metadata_routing():
    X, y = long_tailed(seed=2)
    rng = np.random.default_rng(0)
    w = rng.random(len(y)) * (y < 3)  # only the three big classes count
    model = LogisticRegression(max_iter=2000).fit(X, y)
    scorer = make_top_k_scorer(1)
    weighted = scorer(model, X, y, sample_weight=w)
    assert weighted == pytest.approx(reference_score(model, X, y, 1, sample_weight=w))
    assert weighted != pytest.approx(scorer(model, X, y))

    cv = KFold(3, shuffle=True, random_state=0)
    with sklearn.config_context(enable_metadata_routing=True):
        routed_scorer = make_top_k_scorer(1).set_score_request(sample_weight=True)
        est = LogisticRegression(max_iter=2000).set_fit_request(sample_weight=False)
        result = cross_validate(
            est,
            X,
            y,
            cv=cv,
            scoring={
                "w": routed_scorer,
                "u": make_top_k_scorer(1).set_score_request(sample_weight=False),
            },
            params={"sample_weight": w},
            return_estimator=True,
        )
        for split, (fitted, (_, test)) in enumerate(
            zip(result["estimator"], cv.split(X), strict=True)
        ):
            assert result["test_w"][split] == pytest.approx(
                reference_score(fitted, X[test], y[test], 1, sample_weight=w[test])
            )
            assert result["test_u"][split] == pytest.approx(
                reference_score(fitted, X[test], y[test], 1)
            )
        assert not np.allclose(result["test_w"], result["test_u"])

        # Passing sample_weight to a scorer that did not request it is an error.
        with pytest.raises(UnsetMetadataPassedError, match="make_top_k_scorer"):
            cross_validate(
                est, X, y, cv=cv, scoring=make_top_k_scorer(1), params={"sample_weight": w}
            )
        routing = routed_scorer.get_metadata_routing()
        assert routing.score.requests == {"sample_weight": True}

    with pytest.raises(RuntimeError, match="enable_metadata_routing"):
        make_top_k_scorer(1).set_score_request(sample_weight=True)
    # Without routing, cross_validate sends params to fit only: unweighted scores.
    plain = cross_validate(
        LogisticRegression(max_iter=2000),
        X,
        y,
        cv=cv,
        scoring=make_top_k_scorer(1),
        params={"sample_weight": np.ones(len(y))},
    )
    np.testing.assert_allclose(plain["test_score"], result["test_u"])


def test_grid_search_with_two_processes_and_refit_on_macro():
    X, y = long_tailed(seed=3)
    search = GridSearchCV(
        make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)),
        {"logisticregression__C": [0.1, 1.0]},
        cv=KFold(3, shuffle=True, random_state=0),
        scoring=SCORING,
        refit="macro_top5",
        n_jobs=2,
        error_score="raise",
    )
    search.fit(X, y)
    for name in SCORING:
        assert np.isfinite(search.cv_results_[f"mean_test_{name}"]).all()
    assert search.best_score_ == search.cv_results_["mean_test_macro_top5"].max()
    assert np.isfinite(search.score(X, y))


def test_learning_curve_and_permutation_importance():
    X, y = long_tailed(seed=4)
    _, _, test_scores = learning_curve(
        LogisticRegression(max_iter=1000),
        X,
        y,
        train_sizes=[0.5, 1.0],
        cv=KFold(3, shuffle=True, random_state=0),
        scoring=make_top_k_scorer(3),
        error_score="raise",
    )
    assert np.isfinite(test_scores).all()
    model = LogisticRegression(max_iter=1000).fit(X, y)
    result = permutation_importance(
        model,
        X,
        y,
        scoring=make_top_k_scorer(3, average="macro"),
        n_repeats=2,
        random_state=0,
    )
    assert result.importances.shape == (X.shape[1], 2) and np.isfinite(result.importances).all()
    multi = permutation_importance(model, X, y, scoring=SCORING, n_repeats=2, random_state=0)
    assert set(multi) == set(SCORING)


def test_repr_pickle_and_attributes():
    scorer = make_top_k_scorer(3, average="macro")
    assert repr(scorer) == "make_top_k_scorer(k=3, average='macro')"
    assert repr(make_top_k_scorer(1, response_method="predict_proba")) == (
        "make_top_k_scorer(k=1, average='micro', response_method='predict_proba')"
    )
    assert (scorer.k, scorer.average) == (3, "macro")
    X, y = long_tailed(seed=5)
    model = LogisticRegression(max_iter=1000).fit(X, y)
    clone = pickle.loads(pickle.dumps(scorer))
    assert repr(clone) == repr(scorer)
    assert clone(model, X, y) == scorer(model, X, y)


def test_no_warning_when_k_exceeds_classes():
    X, y = make_classification(n_samples=60, n_classes=3, n_informative=3, random_state=0)
    model = LogisticRegression().fit(X, y)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert make_top_k_scorer(5)(model, X, y) == 1.0


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (dict(k=0), ValueError, "k must be a positive integer"),
        (dict(k="5"), TypeError, "k must be a positive integer"),
        (dict(average="samples"), ValueError, "average must be one of"),
        (dict(response_method="predict"), ValueError, "response_method must be one of"),
        (dict(response_method=()), ValueError, "response_method must be one of"),
    ],
)
def test_make_top_k_scorer_validates(kwargs, error, match):
    with pytest.raises(error, match=match):
        make_top_k_scorer(**kwargs)


def test_scorer_errors_name_the_problem():
    X, y = make_classification(n_samples=60, n_classes=4, n_informative=4, random_state=0)
    with pytest.raises(ValueError, match="needs a fitted classifier with a classes_"):
        make_top_k_scorer(1)(LinearRegression().fit(X, y), X, y)
    ovo = SVC(decision_function_shape="ovo").fit(X, y)
    with pytest.raises(ValueError, match=r"returned shape \(60, 6\).*4 classes_"):
        make_top_k_scorer(1)(ovo, X, y)
    model = LogisticRegression().fit(X, y)
    with pytest.raises(ValueError, match="y should be a 1d array"):
        make_top_k_scorer(1)(model, X, np.column_stack([y, y]))
    with pytest.raises(ValueError, match=r"sample_weight must have shape \(60,\)"):
        make_top_k_scorer(1)(model, X, y, sample_weight=np.ones(3))

    class NaNModel(LogisticRegression):
        def decision_function(self, X):
            return np.full((len(X), 4), np.nan)

    with pytest.raises(ValueError, match="NaNModel.decision_function returned NaN"):
        make_top_k_scorer(1)(NaNModel().fit(X, y), X, y)
