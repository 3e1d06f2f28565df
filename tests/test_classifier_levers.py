"""The long-tail and training levers of the estimators: validation and behaviour."""

import numpy as np
import pytest
import torch
from sklearn.datasets import make_classification
from sklearn.metrics import balanced_accuracy_score
from skorch.callbacks import Callback

from sktopk import ImbalancedTopKClassifier, TopKClassifier
from sktopk._class_balance import replay_plan
from sktopk._combined import HingeWithCrossEntropy
from sktopk._logit_adjusted import log_class_prior
from sktopk.losses import TopKHingeLoss

FAST = {"k": 2, "hidden_layer_sizes": (16,), "max_epochs": 8, "batch_size": 64,
        "device": "cpu", "random_state": 0}


@pytest.fixture(scope="module")
def data():
    return make_classification(n_samples=500, n_classes=6, n_informative=6,
                               weights=[0.45, 0.25, 0.12, 0.1, 0.05, 0.03], random_state=0)


@pytest.mark.parametrize("Estimator", [TopKClassifier, ImbalancedTopKClassifier])
@pytest.mark.parametrize(("params", "error", "match"), [
    ({"monitor": "accuracy"}, ValueError, "monitor"),
    ({"lr_schedule": "linear"}, ValueError, "lr_schedule"),
    ({"warmup_epochs": -1}, ValueError, "warmup_epochs"),
    ({"warmup_epochs": 8}, ValueError, "warmup_epochs=8 must be smaller than max_epochs=8"),
    ({"drw_start": 1.5}, ValueError, "drw_start"),
    ({"drw_start": "late"}, TypeError, "drw_start"),
    ({"ce_weight": -0.1}, ValueError, "ce_weight"),
    ({"logit_adjustment": "yes"}, ValueError, "logit_adjustment"),
    ({"logit_adjustment": -1.0}, ValueError, "logit_adjustment"),
    ({"refit": "yes"}, ValueError, "refit"),
    ({"refit": 1}, TypeError, "refit"),
])
def test_bad_lever_values_are_clear_errors(Estimator, params, error, match, data):
    X, y = data
    with pytest.raises(error, match=match):
        Estimator(**{**FAST, **params}).fit(X, y)


def test_ce_weight_needs_a_hinge_loss(data):
    X, y = data
    with pytest.raises(ValueError, match="ce_weight=0.5 adds cross-entropy to a top-K hinge"):
        TopKClassifier(**FAST, loss="cross_entropy", ce_weight=0.5).fit(X, y)
    with pytest.raises(ValueError, match="is not one"):
        ImbalancedTopKClassifier(**FAST, loss="ldam", ce_weight=0.5).fit(X, y)


def test_hinge_with_cross_entropy_is_the_sum():
    gen = torch.Generator().manual_seed(0)
    scores, target = torch.randn(40, 8, generator=gen), torch.randint(0, 8, (40,), generator=gen)
    weight = torch.rand(40, generator=gen)
    hinge = TopKHingeLoss(k=2, epsilon=0.0)
    combined = HingeWithCrossEntropy(hinge, 0.3, scale=2.0)
    ce = torch.nn.functional.cross_entropy(2.0 * scores, target, reduction="none")
    expected = hinge(scores, target, weight=weight) + 0.3 * (ce * weight).sum() / weight.sum()
    torch.testing.assert_close(combined(scores, target, weight=weight), expected)


@pytest.mark.parametrize("Estimator", [TopKClassifier, ImbalancedTopKClassifier])
def test_posthoc_adjustment_shifts_the_scores_by_tau_log_prior(Estimator, data):
    X, y = data
    plain = Estimator(**FAST, logit_adjustment=0.0).fit(X, y)
    adjusted = Estimator(**FAST, logit_adjustment=0.5).fit(X, y)
    assert plain.logit_adjustment_ == 0.0 and adjusted.logit_adjustment_ == 0.5
    scale = plain._logit_scale()
    expected = plain.decision_function(X) - 0.5 * log_class_prior(np.bincount(y)).numpy() / scale
    np.testing.assert_allclose(adjusted.decision_function(X), expected, rtol=1e-5, atol=1e-6)
    top = np.argsort(-expected, axis=1, kind="stable")[:, :2]
    np.testing.assert_array_equal(adjusted.predict_topk(X), adjusted.classes_[top])


def test_auto_adjustment_picks_the_best_tau_on_the_hold_out(data, monkeypatch):
    X, y = data
    clf = ImbalancedTopKClassifier(**FAST, logit_adjustment="auto").fit(X, y)
    from sktopk import _classifier
    assert clf.logit_adjustment_ in _classifier._TAU_GRID
    without_hold_out = ImbalancedTopKClassifier(**FAST, logit_adjustment="auto",
                                                early_stopping=False)
    with pytest.warns(UserWarning, match="no adjustment"):
        without_hold_out.fit(X, y)
    assert without_hold_out.logit_adjustment_ == 0.0


@pytest.mark.parametrize(("monitor", "key"), [("loss", "holdout_loss"),
                                              ("top_k", "valid_topk"),
                                              ("macro_top_k", "valid_topk")])
def test_monitor_chooses_what_early_stopping_watches(monitor, key, data):
    X, y = data
    clf = TopKClassifier(**{**FAST, "max_epochs": 30}, n_iter_no_change=3,
                         monitor=monitor).fit(X, y)
    values = [row[key] for row in clf.history_]
    best = int(np.argmin(values) if monitor == "loss" else np.argmax(values))
    # early stopping ran and stopped n_iter_no_change epochs after the best one
    assert clf.n_iter_ == 30 or clf.n_iter_ == best + 1 + 3
    assert clf.monitor == monitor


def test_macro_monitor_records_the_class_averaged_rate(data):
    X, y = data
    micro = TopKClassifier(**FAST, monitor="top_k").fit(X, y)
    macro = TopKClassifier(**FAST, monitor="macro_top_k").fit(X, y)
    # same training (the monitor only reads the hold-out), different numbers recorded
    assert micro.history_[0]["valid_topk"] != macro.history_[0]["valid_topk"]
    assert micro.history_[0]["train_loss"] == macro.history_[0]["train_loss"]


def test_logit_adjusted_loss_trains_and_gives_probabilities(data):
    X, y = data
    params = {**FAST, "max_epochs": 40, "early_stopping": False}
    plain = TopKClassifier(**params, loss="cross_entropy").fit(X, y)
    clf = TopKClassifier(**params, loss="logit_adjusted").fit(X, y)
    proba = clf.predict_proba(X)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-6)
    # the adjustment targets the balanced error: rare classes are recalled more often
    assert (balanced_accuracy_score(y, clf.predict(X))
            > balanced_accuracy_score(y, plain.predict(X)) + 0.05)
    np.testing.assert_array_equal(clf.class_counts_, np.bincount(y))


@pytest.mark.parametrize(("estimator", "expected"), [
    (ImbalancedTopKClassifier(), 0.3),
    (ImbalancedTopKClassifier(ce_weight=0), None),
    (ImbalancedTopKClassifier(loss="ldam"), None),
    (ImbalancedTopKClassifier(ce_weight=0.5), 0.5),
    (TopKClassifier(), None),
    (TopKClassifier(ce_weight="auto"), None),
    (TopKClassifier(ce_weight=0.2), 0.2),
])
def test_ce_weight_auto_is_0_3_for_the_imbalanced_hinge_only(estimator, expected):
    criterion = estimator._wrap_criterion(TopKHingeLoss(k=2), 6)
    if expected is None:
        assert isinstance(criterion, TopKHingeLoss)
    else:
        assert isinstance(criterion, HingeWithCrossEntropy)
        assert criterion.ce_weight == expected
        assert criterion.scale == getattr(estimator, "scale", 1.0)


def test_default_ce_weight_does_not_refuse_other_losses(data):
    X, y = data
    clf = ImbalancedTopKClassifier(**FAST, loss="ldam").fit(X, y)
    assert clf.ce_weight == "auto" and clf._resolved_ce_weight() == 0.0


@pytest.mark.parametrize(("optimizer", "fused"), [("adamw", True), ("adam", True),
                                                  ("sgd", None), (torch.optim.AdamW, None)])
def test_built_in_adam_takes_the_fused_step_where_torch_has_it(optimizer, fused, data):
    from skorch.callbacks import Callback

    from sktopk._classifier import _fused_adam_works

    seen = {}

    class _Peek(Callback):
        def on_train_begin(self, net, **kwargs):
            seen["fused"] = net.optimizer_.defaults.get("fused")

    X, y = data
    TopKClassifier(**{**FAST, "max_epochs": 1}, optimizer=optimizer,
                   callbacks=[("peek", _Peek())]).fit(X, y)
    expected = fused if (fused is None or _fused_adam_works("cpu")) else None
    # torch records fused=None (its default) for optimizers that were not asked for it.
    assert seen["fused"] in ((expected,) if expected else (None, False))


# --------------------------------------------------------------------- refit
REFIT = {**FAST, "max_epochs": 30, "n_iter_no_change": 3}


def _best_epoch(clf):
    """The first best hold-out score in ``history_`` (early stopping's restored epoch)."""
    return 1 + int(np.argmax([row["valid_topk"] for row in clf.history_
                              if not row.get("refit")]))


@pytest.mark.parametrize("Estimator", [TopKClassifier, ImbalancedTopKClassifier])
def test_refit_is_a_second_fit_on_all_rows_for_the_best_epoch_count(Estimator, data):
    X, y = data
    first = Estimator(**REFIT).fit(X, y)
    best = _best_epoch(first)
    assert best < first.n_iter_  # early stopping did stop: the refit has something to replay
    by_hand = Estimator(**{**REFIT, "early_stopping": False, "max_epochs": best}).fit(X, y)
    refit = Estimator(**REFIT, refit=True).fit(X, y)
    np.testing.assert_array_equal(refit.decision_function(X), by_hand.decision_function(X))
    flags = [row.get("refit", False) for row in refit.history_]
    assert flags == [False] * first.n_iter_ + [True] * best
    assert refit.n_iter_ == first.n_iter_ + best
    assert [row["epoch"] for row in refit.history_] == list(range(1, refit.n_iter_ + 1))
    # The first fit's hold-out scores are kept; the refit has no hold-out to score.
    assert [row["valid_topk"] for row in refit.history_[:first.n_iter_]] == [
        row["valid_topk"] for row in first.history_]
    assert all("valid_topk" not in row for row in refit.history_[first.n_iter_:])


def test_refit_replays_deferred_reweighting(data):
    X, y = data
    params = {**REFIT, "drw_start": 0.2, "max_epochs": 20}
    first = ImbalancedTopKClassifier(**params).fit(X, y)
    callbacks = dict(first._net.callbacks_)
    epochs, reweight_from = replay_plan(callbacks["early_stopping"],
                                        callbacks["deferred_reweighting"], first.n_iter_)
    assert reweight_from is not None  # this data makes the re-weighted stage count
    # The same path by hand: re-weighting from epoch floor(drw_start * max_epochs) + 1.
    by_hand = ImbalancedTopKClassifier(**{
        **params, "early_stopping": False, "max_epochs": epochs,
        "drw_start": (reweight_from - 0.5) / epochs}).fit(X, y)
    refit = ImbalancedTopKClassifier(**params, refit=True).fit(X, y)
    np.testing.assert_array_equal(refit.decision_function(X), by_hand.decision_function(X))
    replayed = [row["drw"] for row in refit.history_ if row.get("refit")]
    assert replayed == [epoch >= reweight_from for epoch in range(1, epochs + 1)]


def test_refit_keeps_the_tau_chosen_on_the_hold_out(data):
    X, y = data
    plain = ImbalancedTopKClassifier(**REFIT, logit_adjustment="auto").fit(X, y)
    refit = ImbalancedTopKClassifier(**REFIT, logit_adjustment="auto", refit=True).fit(X, y)
    assert refit.logit_adjustment_ == plain.logit_adjustment_


def test_refit_without_early_stopping_changes_nothing(data):
    X, y = data
    params = {**FAST, "early_stopping": False}
    plain = TopKClassifier(**params).fit(X, y)
    refit = TopKClassifier(**params, refit=True).fit(X, y)
    np.testing.assert_array_equal(refit.decision_function(X), plain.decision_function(X))
    assert refit.n_iter_ == plain.n_iter_ and not any(r.get("refit") for r in refit.history_)


def test_refit_of_a_warm_start_starts_from_the_previous_weights(data):
    starts = []

    class StartingWeights(Callback):
        def on_train_begin(self, net, **kwargs):
            starts.append([p.detach().clone() for p in net.module_.parameters()])

    X, y = data
    clf = TopKClassifier(**REFIT, warm_start=True).fit(X, y)
    previous = [p.detach().clone() for p in clf.module_.parameters()]
    clf.set_params(refit=True, callbacks=[("starts", StartingWeights())]).fit(X, y)
    assert len(starts) == 2  # the continued fit, then its refit
    for weights in starts:
        for got, want in zip(weights, previous, strict=True):
            torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_auto_refits_above_ten_thousand_rows(data, monkeypatch):
    import sktopk._classifier as classifier

    X, y = data
    fits = {}
    for rows in (len(y) - 1, len(y)):  # the threshold, scaled down: above it, then at it
        monkeypatch.setattr(classifier, "_AUTO_REFIT_ROWS", rows)
        clf = TopKClassifier(**REFIT, refit="auto").fit(X, y)
        fits[rows] = any(row.get("refit") for row in clf.history_)
    assert fits == {len(y) - 1: True, len(y): False}
