import warnings

import numpy as np
import pytest
from scipy.special import log_softmax
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.svm import LinearSVC
from sklearn.utils.estimator_checks import parametrize_with_checks

from sktopk import TemperatureScaledClassifier, TopKClassifier
from sktopk._temperature import fit_temperature

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
