import warnings

import numpy as np
import pytest
from scipy.special import log_softmax
from sklearn.datasets import load_iris, make_classification
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.svm import LinearSVC
from sklearn.tree import DecisionTreeClassifier
from sklearn.utils.estimator_checks import parametrize_with_checks

from sktopk import TemperatureScaledClassifier, TopKClassifier
from sktopk._temperature import calibration_split, encode_calibration_labels, fit_temperature

FAST = {"hidden_layer_sizes": (64,), "max_epochs": 10, "batch_size": 256, "device": "cpu",
        "learning_rate": 3e-3, "early_stopping": False, "random_state": 0}


@parametrize_with_checks([TemperatureScaledClassifier(LogisticRegression(), random_state=0)])
def test_sklearn_common_checks(estimator, check):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        check(estimator)


def test_fit_temperature_minimises_the_log_loss():
    rng = np.random.default_rng(0)
    for scale in (1e-3, 1.0, 50.0):
        y = rng.integers(0, 5, 300)
        logits = rng.normal(size=(300, 5)) + 1.5 * np.eye(5)[y]
        logits = logits * scale + rng.normal(size=(300, 1)) * 10 * scale  # row shifts
        t = fit_temperature(logits, y)

        def nll(temp, logits=logits, y=y):
            return -log_softmax(logits / temp, axis=1)[np.arange(300), y].mean()

        grid = np.exp(np.linspace(np.log(t) - 1, np.log(t) + 1, 2001))
        assert nll(t) <= min(nll(g) for g in grid) + 1e-9
        # Row shifts do not matter: the softmax is shift invariant.
        assert fit_temperature(logits - logits.mean(1, keepdims=True), y) == pytest.approx(
            t, rel=1e-4)


def test_ranking_kept_and_prefit():
    X, y = make_classification(n_samples=800, n_features=10, n_informative=6, n_classes=5,
                               n_clusters_per_class=1, random_state=0)
    X_fit, X_cal, y_fit, y_cal = train_test_split(X, y, random_state=0, stratify=y)
    svc = LinearSVC().fit(X_fit, y_fit)
    model = TemperatureScaledClassifier(svc, cv="prefit").fit(X_cal, y_cal)
    assert model.estimator_ is svc
    proba = model.predict_proba(X)
    np.testing.assert_allclose(proba.sum(1), 1.0)
    np.testing.assert_array_equal(np.argsort(-proba, 1, kind="stable"),
                                  np.argsort(-svc.decision_function(X), 1, kind="stable"))
    np.testing.assert_allclose(model.predict_log_proba(X), np.log(proba), atol=1e-10)
    np.testing.assert_array_equal(model.predict(X), svc.predict(X))


def test_hinge_model_gets_a_better_log_loss_than_a_plain_softmax():
    X, y = make_classification(n_samples=1500, n_features=12, n_informative=8, n_classes=8,
                               n_clusters_per_class=1, class_sep=0.8, random_state=0)
    X_fit, X_rest, y_fit, y_rest = train_test_split(X, y, test_size=0.5, random_state=0,
                                                    stratify=y)
    X_cal, X_test, y_cal, y_test = train_test_split(X_rest, y_rest, test_size=0.5,
                                                    random_state=0, stratify=y_rest)
    net = TopKClassifier(k=3, **FAST).fit(X_fit.astype(np.float32), y_fit)
    model = TemperatureScaledClassifier(net, cv="prefit").fit(X_cal.astype(np.float32), y_cal)
    rows = np.arange(len(y_test))
    scaled = -model.predict_log_proba(X_test.astype(np.float32))[rows, y_test].mean()
    plain = -log_softmax(net.decision_function(X_test.astype(np.float32)), axis=1)[rows,
                                                                                   y_test].mean()
    assert scaled < plain


@pytest.mark.parametrize("make", [lambda: DecisionTreeClassifier(random_state=0),
                                  lambda: RandomForestClassifier(n_estimators=10,
                                                                 random_state=0)])
def test_zero_probabilities_give_a_finite_temperature_and_keep_the_ranking(make):
    # Trees have no decision_function and give log-probabilities of -inf: the
    # temperature must stay finite and the classes keep the estimator's order.
    X, y = load_iris(return_X_y=True)
    model = TemperatureScaledClassifier(make(), random_state=0).fit(X, y)
    assert np.isfinite(model.temperature_)
    proba = model.predict_proba(X)
    inner = model.estimator_.predict_proba(X)
    np.testing.assert_array_equal(model.predict(X), model.estimator_.predict(X))
    # Wherever the estimator ranks one class strictly above another, so does the model.
    above = inner[:, :, None] > inner[:, None, :]
    assert (proba[:, :, None] > proba[:, None, :])[above].all()


def test_infinite_scores_are_refused():
    y = np.array([0, 1, 2, 0, 1, 2])
    logits = np.eye(3)[y] * 2.0
    logits[0, 1] = np.inf
    with pytest.raises(ValueError, match="infinite"):
        fit_temperature(logits, y)


@pytest.mark.parametrize("counts, fraction", [([100, 2, 2, 2], 0.2), ([10, 2, 2, 2], 0.7),
                                              ([50, 3, 2, 3, 2], 0.5)])
def test_calibration_split_keeps_every_class_in_both_parts(counts, fraction):
    y = np.repeat(np.arange(len(counts)), counts)
    X = np.arange(len(y))[:, None]
    for seed in range(20):
        X_fit, y_fit, X_cal, y_cal = calibration_split(X, y, fraction, seed)
        assert set(y_fit) == set(y_cal) == set(y)
        assert len(y_cal) == int(np.ceil(fraction * len(y)))
        # A partition of the rows, labels kept with their rows.
        rows = np.concatenate([X_fit[:, 0], X_cal[:, 0]])
        np.testing.assert_array_equal(np.sort(rows), np.arange(len(y)))
        np.testing.assert_array_equal(y[rows], np.concatenate([y_fit, y_cal]))


def test_calibration_split_unchanged_when_stratification_suffices():
    y = np.repeat(np.arange(4), 25)
    X = np.arange(100)[:, None]
    _, y_fit, X_cal, _ = calibration_split(X, y, 0.2, 0)
    expected = train_test_split(np.arange(100), test_size=20, stratify=y, random_state=0)[1]
    np.testing.assert_array_equal(X_cal[:, 0], expected)


def test_calibration_labels_of_another_type_are_named_not_crashed_on():
    classes = np.array(["1", "2", "3"], dtype=object)
    with pytest.raises(ValueError, match="not fitted on"):
        encode_calibration_labels(np.array([1, 2, 3]), classes)
    np.testing.assert_array_equal(encode_calibration_labels(np.array(["3", "1"]), classes),
                                  [2, 0])


def test_finite_log_probabilities_keep_their_order():
    # GaussianNB gives finite log-probabilities far below log(1e-300): none may
    # be clipped into a tie; only the -inf of a zero probability is replaced.
    from sklearn.datasets import load_digits
    from sklearn.naive_bayes import GaussianNB

    X, y = load_digits(return_X_y=True)
    model = TemperatureScaledClassifier(GaussianNB(), random_state=0).fit(X, y)
    log_proba = model.estimator_.predict_log_proba(X)
    assert (log_proba < np.log(1e-300)).any()  # the case that was clipped
    logits = model.predict_log_proba(X)
    above = log_proba[:, :, None] > log_proba[:, None, :]
    assert (logits[:, :, None] > logits[:, None, :])[above].all()


def test_only_zero_probabilities_are_made_finite():
    from sktopk._temperature import _finite_log_probabilities

    rows = np.array([[np.inf, np.log(0.5), -np.inf], [-np.inf, -np.inf, -np.inf],
                     [-2000.0, np.log(0.5), -np.inf]])
    out = _finite_log_probabilities(rows)
    assert out[0, 0] == np.inf  # left for fit_temperature to refuse
    assert out[0, 2] == pytest.approx(np.log(1e-300) + np.log(0.5))
    assert np.isfinite(out[1]).all() and len(set(out[1])) == 1  # all tied, finite
    assert out[2, 2] < -2000.0 and out[2, 0] == -2000.0
