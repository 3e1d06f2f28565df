import numpy as np
import pytest
import torch
from sklearn.datasets import make_classification

from sktopk import ImbalancedTopKClassifier, TopKClassifier
from sktopk._class_balance import ClassWeightedLoss, effective_number_weights, replay_plan

FAST = {"k": 2, "hidden_layer_sizes": (16,), "batch_size": 64, "device": "cpu"}


@pytest.fixture(scope="module")
def data():
    return make_classification(n_samples=400, n_classes=5, n_informative=6,
                               weights=[0.5, 0.25, 0.15, 0.07, 0.03], random_state=0)


def test_effective_number_weights_closed_form():
    counts = np.array([1000, 100, 10, 1])
    beta = 0.9999
    raw = np.array([(1 - beta) / (1 - beta ** n) for n in counts])
    got = effective_number_weights(counts, beta)
    np.testing.assert_allclose(got, raw * 4 / raw.sum(), rtol=1e-12)
    assert np.isclose(got.sum(), 4) and np.all(np.diff(got) > 0)  # rarer weighs more
    np.testing.assert_allclose(effective_number_weights(counts, 0.0), np.ones(4))
    # zero counts are treated as 1 (finite weight)
    np.testing.assert_allclose(effective_number_weights([0, 5], 0.5),
                               effective_number_weights([1, 5], 0.5))
    with pytest.raises(ValueError, match=r"beta must be in \[0, 1\)"):
        effective_number_weights(counts, 1.0)


def test_class_weighted_loss_is_the_weighted_mean():
    gen = torch.Generator().manual_seed(0)
    scores, target = torch.randn(30, 3, generator=gen), torch.randint(0, 3, (30,), generator=gen)
    base = torch.nn.functional.cross_entropy(scores, target, reduction="none")

    class PerSample(torch.nn.Module):
        def forward(self, scores, target, weight=None):
            per = torch.nn.functional.cross_entropy(scores, target, reduction="none")
            return (per * weight).sum() / weight.sum()

    wrapped = ClassWeightedLoss(PerSample(), 3)
    assert torch.allclose(wrapped(scores, target), base.mean())
    wrapped.class_weight.copy_(torch.tensor([1.0, 2.0, 0.5]))
    sample_weight = torch.rand(30, generator=gen)
    w = torch.tensor([1.0, 2.0, 0.5])[target] * sample_weight
    assert torch.allclose(wrapped(scores, target, weight=sample_weight),
                          (base * w).sum() / w.sum())


@pytest.mark.parametrize("Estimator", [TopKClassifier, ImbalancedTopKClassifier])
def test_drw_switches_on_at_the_start_epoch(Estimator, data):
    X, y = data
    clf = Estimator(**FAST, max_epochs=6, early_stopping=False, drw_start=0.5,
                    random_state=0).fit(X, y)
    assert [row["drw"] for row in clf.history_] == [False] * 3 + [True] * 3
    weights = clf._net.criterion_.class_weight.numpy()
    np.testing.assert_allclose(weights, effective_number_weights(np.bincount(y), 0.9999),
                               rtol=1e-6)


def test_drw_off_and_before_start_the_loss_is_unweighted(data):
    X, y = data
    plain = TopKClassifier(**FAST, max_epochs=3, early_stopping=False, random_state=0).fit(X, y)
    late = TopKClassifier(**FAST, max_epochs=3, early_stopping=False, drw_start=1.0,
                          random_state=0).fit(X, y)
    np.testing.assert_allclose(plain.decision_function(X), late.decision_function(X),
                               atol=1e-6)


def test_a_plateau_before_the_start_switches_drw_on_instead_of_stopping(data):
    X, y = data
    # A vanishing learning rate: the hold-out score never improves after epoch 1.
    common = dict(**FAST, learning_rate=1e-12, n_iter_no_change=2, max_epochs=20,
                  random_state=0)
    plain = TopKClassifier(**common).fit(X, y)
    staged = TopKClassifier(**common, drw_start=1.0).fit(X, y)
    assert plain.n_iter_ == 3
    assert staged.n_iter_ == 5
    assert [row["drw"] for row in staged.history_] == [False] * 3 + [True] * 2


def test_a_switch_at_the_start_epoch_restarts_the_patience(data):
    X, y = data
    common = dict(**FAST, learning_rate=1e-12, n_iter_no_change=2, max_epochs=20,
                  random_state=0)
    # start epoch 3: epoch 1 is the best, epoch 2 a miss, epoch 3 re-weighted with
    # a fresh patience of 2 (epochs 3 and 4), so training stops after epoch 4, not 3.
    staged = TopKClassifier(**common, drw_start=0.1).fit(X, y)
    assert staged.n_iter_ == 4
    assert [row["drw"] for row in staged.history_] == [False, False, True, True]


class _Stopped:
    def __init__(self, best_epoch, rewound_to=None):
        self.best_epoch_, self.rewound_to_ = best_epoch, rewound_to


class _Switched:
    def __init__(self, switched_at):
        self.switched_at_ = switched_at


@pytest.mark.parametrize(("best", "rewound", "switched", "plan"), [
    (7, None, None, (7, None)),  # no re-weighting, or it never switched
    (9, None, 5, (9, 5)),  # switched at its start epoch 5: weighted from epoch 5
    (4, None, 5, (4, None)),  # ... but the best epoch came before it
    (5, None, 5, (5, 5)),
    # A plateau at the end of epoch 8 rewound to epoch 3; the best epoch is the
    # 4th of the weighted stage (epoch 12), reached by 3 + 4 epochs.
    (12, 3, 8, (7, 4)),
    (3, 3, 8, (3, None)),  # the weighted stage never beat the rewound epoch
    (0, None, None, (20, None)),  # no epoch improved: the last weights were kept
])
def test_replay_plan(best, rewound, switched, plan):
    deferred = None if switched is None else _Switched(switched)
    assert replay_plan(_Stopped(best, rewound), deferred, 20) == plan
    if switched is None:
        assert replay_plan(_Stopped(best, rewound), _Switched(None), 20) == plan


def test_a_plateau_switch_records_the_epoch_it_rewound_to(data):
    X, y = data
    common = dict(**FAST, learning_rate=1e-12, n_iter_no_change=2, max_epochs=20,
                  random_state=0)
    staged = TopKClassifier(**common, drw_start=1.0).fit(X, y)
    callbacks = dict(staged._net.callbacks_)
    # Epoch 1 is the best; the plateau at the end of epoch 3 rewinds to it.
    assert callbacks["early_stopping"].rewound_to_ == 1
    assert callbacks["deferred_reweighting"].switched_at_ == 3
    assert replay_plan(callbacks["early_stopping"], callbacks["deferred_reweighting"],
                       staged.n_iter_) == (1, None)


def test_drw_start_epoch_is_not_lost_to_rounding():
    # 0.29 * 100 is 28.999... in floating point: the switch is after epoch 29.
    from sktopk import TopKClassifier

    for start, epochs, expected in [(0.29, 100, 30), (0.57, 100, 58), (0.58, 50, 30),
                                    (0.5, 40, 21), (0.0, 10, 1)]:
        clf = TopKClassifier(drw_start=start, max_epochs=epochs)
        assert clf._drw_start_epoch() == expected
