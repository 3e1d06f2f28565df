"""The exponential moving average of the weights (``weight_averaging``)."""

import numpy as np
import pytest
import torch
from sklearn.datasets import make_classification
from skorch.callbacks import Callback

from sktopk import ImbalancedTopKClassifier, TopKClassifier
from sktopk._weight_averaging import WeightAveraging, averaging_decay, batches_per_epoch

FAST = {"k": 2, "hidden_layer_sizes": (16,), "max_epochs": 6, "batch_size": 64,
        "device": "cpu", "random_state": 0}


@pytest.fixture(scope="module")
def data():
    return make_classification(n_samples=300, n_classes=5, n_informative=6, random_state=0)


class _Recorder(Callback):
    """The network's weights after every training step, and at every epoch's end."""

    def on_train_begin(self, net, **kwargs):
        self.initial = [p.detach().double().clone() for p in net.module_.parameters()]
        self.steps, self.epoch_ends = [], []

    def on_batch_end(self, net, training=False, **kwargs):
        if training:
            self.steps.append([p.detach().double().clone() for p in net.module_.parameters()])

    def on_epoch_end(self, net, **kwargs):
        self.epoch_ends.append([p.detach().clone() for p in net.module_.parameters()])


def _fit_recording(Estimator, X, y, **params):
    """Fit, and return the estimator with the recorder the fit used (callbacks are copied)."""
    used = {}

    class _Hand(Callback):
        def on_train_end(self, net, **kwargs):
            used["recorder"] = dict(net.callbacks_)["recorder"]

    clf = Estimator(**{**FAST, **params},
                    callbacks=[("recorder", _Recorder()), ("hand", _Hand())]).fit(X, y)
    return clf, used["recorder"]


@pytest.mark.parametrize("age", [0.5, 2.0, 7.3])
@pytest.mark.parametrize("batches", [1, 5, 40])
def test_decay_gives_the_requested_mean_age(age, batches):
    decay = averaging_decay(age, batches)
    j = np.arange(200000)
    mean_age = np.sum(j * (1 - decay) * decay ** j)
    np.testing.assert_allclose(mean_age, age * batches, rtol=1e-6)
    assert batches_per_epoch(300, 64) == 5 and batches_per_epoch(3, 64) == 1


@pytest.mark.parametrize("Estimator", [TopKClassifier, ImbalancedTopKClassifier])
def test_fitted_weights_are_the_moving_average_of_an_unchanged_trajectory(Estimator, data):
    X, y = data
    _, plain = _fit_recording(Estimator, X, y, early_stopping=False)
    averaged, rec = _fit_recording(Estimator, X, y, early_stopping=False, weight_averaging=1.5)
    # Training itself goes on from the raw weights: the trajectory is the one without
    # averaging, step for step.
    assert len(rec.steps) == len(plain.steps) == FAST["max_epochs"] * 5
    for got, expected in zip(rec.steps[-1], plain.steps[-1], strict=True):
        torch.testing.assert_close(got, expected, rtol=0, atol=0)
    # The fitted weights are the average of that trajectory, by the closed form.
    decay = averaging_decay(1.5, batches_per_epoch(len(y), FAST["batch_size"]))
    average = [w.clone() for w in rec.initial]
    for t, step in enumerate(rec.steps, start=1):
        rate = 1 - min(decay, (1 + t) / (10 + t))
        average = [a + rate * (w - a) for a, w in zip(average, step, strict=True)]
    for got, expected in zip(averaged.module_.parameters(), average, strict=True):
        torch.testing.assert_close(got.detach().double(), expected, rtol=1e-5, atol=1e-6)
    # ... and differ from the last step's by far more than rounding.
    gap = max(float((p.detach().double() - w).abs().max())
              for p, w in zip(averaged.module_.parameters(), rec.steps[-1], strict=True))
    assert gap > 1e-3


def test_early_stopping_scores_and_keeps_the_averaged_weights(data):
    X, y = data
    clf, rec = _fit_recording(TopKClassifier, X, y, max_epochs=12, n_iter_no_change=3,
                              weight_averaging=2.0)
    scores = [row["valid_topk"] for row in clf.history_]
    best = scores.index(max(scores))  # the first best epoch, the one early stopping keeps
    # The recorder (a user callback) sees every epoch, the one early stopping ends
    # too (it runs last); the best epoch precedes the last one, which it rolls back.
    assert len(rec.epoch_ends) == len(scores) and best < len(scores) - 1
    for got, expected in zip(clf.module_.parameters(), rec.epoch_ends[best], strict=True):
        torch.testing.assert_close(got.detach(), expected, rtol=0, atol=0)


class _Net:
    def __init__(self, module):
        self.module_ = module


def test_loaded_weights_restart_the_average():
    module = torch.nn.Linear(3, 2)
    net = _Net(module)
    callback = WeightAveraging(1.0, 4)
    callback.on_train_begin(net)
    with torch.no_grad():
        module.weight.add_(1.0)
    callback.on_batch_end(net, training=True)
    callback.on_epoch_end(net)
    averaged = module.weight.detach().clone()
    # Another callback loads other weights before the next epoch.
    loaded = torch.full_like(module.weight, 0.25)
    with torch.no_grad():
        module.weight.copy_(loaded)
    callback.on_epoch_begin(net)
    torch.testing.assert_close(module.weight.detach(), loaded)
    torch.testing.assert_close(callback.average_[0], loaded)
    assert not torch.equal(averaged, loaded)
    # Without a load, the raw weights come back at the start of the next epoch.
    raw = module.weight.detach().clone() + 1.0
    with torch.no_grad():
        module.weight.copy_(raw)
    callback.on_epoch_end(net)
    assert not torch.equal(module.weight.detach(), raw)
    callback.on_epoch_begin(net)
    torch.testing.assert_close(module.weight.detach(), raw)


@pytest.mark.parametrize("value", [0, -1.0, float("inf")])
def test_bad_weight_averaging_is_a_clear_error(value, data):
    X, y = data
    with pytest.raises(ValueError, match="weight_averaging"):
        TopKClassifier(**FAST, weight_averaging=value).fit(X, y)
    with pytest.raises(TypeError, match="weight_averaging"):
        TopKClassifier(**FAST, weight_averaging="ema").fit(X, y)


def test_partial_fit_trains_without_averaging(data):
    X, y = data
    a = TopKClassifier(**FAST, weight_averaging=2.0).partial_fit(X, y, classes=np.unique(y))
    b = TopKClassifier(**FAST).partial_fit(X, y, classes=np.unique(y))
    np.testing.assert_array_equal(a.decision_function(X), b.decision_function(X))


def test_averaging_with_deferred_reweighting_restarts_at_the_switch(data):
    # DRW's switch on a plateau loads the best weights so far; the average must
    # restart there (the unit test above), and the whole fit must still end on
    # the averaged weights of its best epoch.
    X, y = data
    clf, rec = _fit_recording(ImbalancedTopKClassifier, X, y, max_epochs=16, n_iter_no_change=2,
                              drw_start=0.9, weight_averaging=1.0)
    switched = [row.get("drw", False) for row in clf.history_]
    assert any(switched) and not all(switched)
    scores = [row["valid_topk"] for row in clf.history_]
    best = scores.index(max(scores))
    # Early stopping interrupts the last epoch before the recorder sees its end; the
    # best epoch came patience epochs earlier, so it was recorded.
    assert best < len(rec.epoch_ends)
    for got, expected in zip(clf.module_.parameters(), rec.epoch_ends[best], strict=True):
        torch.testing.assert_close(got.detach(), expected, rtol=0, atol=0)
    assert np.isfinite(clf.decision_function(X)).all()
