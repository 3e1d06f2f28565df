"""Fits are transactional, continue with the current parameters, and are thread-safe."""

import pickle
import threading

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule
from sklearn.datasets import make_classification
from skorch.callbacks import Callback

from sktopk import ImbalancedTopKClassifier, TopKClassifier
from sktopk._classifier import _CrossEntropy
from sktopk._training import TopKNet

FAST = {"hidden_layer_sizes": (8,), "max_epochs": 3, "batch_size": 32, "device": "cpu",
        "early_stopping": False}


@pytest.fixture(scope="module")
def data():
    X, y = make_classification(n_samples=160, n_features=6, n_informative=5, n_redundant=0,
                               n_classes=4, random_state=0)
    return X.astype(np.float32), y


def test_warm_start_continues_with_the_new_parameters(data):
    X, y = data
    clf = TopKClassifier(k=2, warm_start=True, random_state=0, **FAST).fit(X, y)
    assert isinstance(clf._net.optimizer_, torch.optim.AdamW)
    before = {name: value.clone() for name, value in clf.module_.state_dict().items()}
    clf.set_params(learning_rate=0.05, optimizer="sgd", loss="cross_entropy", k=1,
                   max_epochs=2)
    assert not hasattr(clf, "predict_proba")  # still the hinge model until refitted
    clf.fit(X, y)
    assert isinstance(clf._net.optimizer_, torch.optim.SGD)
    assert clf._net.optimizer_.param_groups[0]["lr"] == 0.05
    assert isinstance(clf._net.criterion_, _CrossEntropy) and clf.k_ == 1
    assert hasattr(clf, "predict_proba") and clf.n_iter_ == 5
    # It continued from the previous weights: one SGD epoch moves them only so far.
    first = clf.history_[3]["train_loss"]
    fresh = TopKClassifier(k=1, loss="cross_entropy", optimizer="sgd", learning_rate=0.05,
                           random_state=0, **FAST).fit(X, y)
    assert first < fresh.history_[0]["train_loss"]
    assert any(not torch.equal(before[n], v) for n, v in clf.module_.state_dict().items())


def test_warm_start_keeps_the_optimizer_state_but_takes_the_new_rate(data):
    X, y = data
    clf = TopKClassifier(k=2, warm_start=True, random_state=0, **FAST).fit(X, y)
    steps = clf._net.optimizer_.state[clf._net.optimizer_.param_groups[0]["params"][0]]["step"]
    clf.set_params(learning_rate=1e-4).fit(X, y)
    state = clf._net.optimizer_.state[clf._net.optimizer_.param_groups[0]["params"][0]]
    assert float(state["step"]) == 2 * float(steps)
    assert clf._net.optimizer_.param_groups[0]["lr"] == 1e-4


def test_warm_start_schedule_starts_from_the_new_rate(data):
    # torch's schedulers keep the rate they started from (initial_lr) in the
    # optimizer state that a continued fit restores: the new rate must win.
    X, y = data
    params = {**FAST, "max_epochs": 4, "lr_schedule": "cosine", "random_state": 0}
    clf = TopKClassifier(k=2, warm_start=True, learning_rate=1e-2, **params).fit(X, y)
    clf.set_params(learning_rate=1e-4).fit(X, y)
    fresh = TopKClassifier(k=2, learning_rate=1e-4, **params).fit(X, y)
    assert [row["event_lr"] for row in clf.history_[4:]] == pytest.approx(
        [row["event_lr"] for row in fresh.history_])
    assert clf.history_[4]["event_lr"] == pytest.approx(1e-4)


def _interrupt_training_step(monkeypatch, at):
    """Ctrl-C during the ``at``-th training step (inside the step, not in a callback)."""
    calls = {"n": 0}
    step = TopKNet.train_step_single

    def interrupted(self, batch, **fit_params):
        calls["n"] += 1
        if calls["n"] == at:
            raise KeyboardInterrupt
        return step(self, batch, **fit_params)

    monkeypatch.setattr(TopKNet, "train_step_single", interrupted)
    return calls


@pytest.mark.parametrize("where", ["first training", "refit"])
def test_interrupted_fit_raises_and_leaves_the_model_as_it_was(data, monkeypatch, where):
    # skorch ends training quietly on KeyboardInterrupt (early stopping raises it);
    # an interrupted fit must instead raise and keep the previous model, like any
    # failure, and never go on to the refit.
    X, y = data
    params = {**FAST, "early_stopping": True, "max_epochs": 8, "n_iter_no_change": 3,
              "refit": True, "warm_start": True}
    clf = TopKClassifier(k=2, random_state=0, **params).fit(X, y)
    expected, n_iter = clf.decision_function(X), clf.n_iter_
    steps = TopKClassifier(k=2, random_state=0, **params).set_params(warm_start=False)
    counter = _interrupt_training_step(monkeypatch, at=-1)
    steps.fit(X, y)
    total, first = counter["n"], sum(not row.get("refit") for row in steps.history_)
    counter = _interrupt_training_step(monkeypatch, at=2 if where == "first training"
                                       else total - 1)
    assert total - 1 > first * 5  # 5 steps per epoch of the first training
    with pytest.raises(KeyboardInterrupt):
        clf.fit(X, y)
    np.testing.assert_array_equal(clf.decision_function(X), expected)
    assert clf.n_iter_ == n_iter == len(clf.history_)
    _interrupt_training_step(monkeypatch, at=1)
    with pytest.raises(KeyboardInterrupt):
        clf.partial_fit(X, y)
    np.testing.assert_array_equal(clf.decision_function(X), expected)


def test_a_callback_may_still_end_training_the_skorch_way(data):
    # A callback raising KeyboardInterrupt is skorch's way to stop (early
    # stopping does it): training ends normally with what it has learned.
    X, y = data

    class StopAfterTwo(Callback):
        def on_epoch_end(self, net, **kwargs):
            if len(net.history) == 2:
                raise KeyboardInterrupt

    clf = TopKClassifier(k=2, random_state=0, callbacks=[("stop", StopAfterTwo())],
                         **{**FAST, "max_epochs": 5}).fit(X, y)
    assert clf.n_iter_ == 2


def test_the_schedule_and_user_callbacks_see_the_epoch_early_stopping_ends(data):
    X, y = data

    class Mark(Callback):
        def on_epoch_end(self, net, **kwargs):
            net.history.record("seen", True)

    clf = TopKClassifier(k=2, random_state=0, lr_schedule="cosine", n_iter_no_change=2,
                         callbacks=[("mark", Mark())], refit=False,
                         **{**FAST, "early_stopping": True, "max_epochs": 40}).fit(X, y)
    assert clf.n_iter_ < 40  # early stopping ended it
    assert all(row.get("seen") and "event_lr" in row for row in clf.history_)


def test_class_weight_dict_applies_to_chunks_lacking_a_weighted_class(data):
    # Read against classes_, not against the labels of the chunk (as SGDClassifier).
    X, y = data
    names = np.array(["ant", "bee", "cat", "dog"])
    labels = names[y]
    chunk = labels != "cat"
    weighted = TopKClassifier(k=2, class_weight={"cat": 5.0}, random_state=0, **FAST)
    weighted.partial_fit(X[chunk], labels[chunk], classes=names)
    weighted.partial_fit(X, labels)
    by_hand = TopKClassifier(k=2, random_state=0, **FAST)
    by_hand.partial_fit(X[chunk], labels[chunk], classes=names)
    by_hand.partial_fit(X, labels, sample_weight=np.where(labels == "cat", 5.0, 1.0))
    np.testing.assert_array_equal(weighted.decision_function(X), by_hand.decision_function(X))
    warm = TopKClassifier(k=2, class_weight={"cat": 5.0}, warm_start=True, **FAST)
    warm.fit(X, labels).fit(X[chunk], labels[chunk])  # no error either
    with pytest.raises(ValueError, match="not supported by partial_fit"):
        TopKClassifier(class_weight="balanced", **FAST).partial_fit(X, labels, classes=names)
    with pytest.raises(ValueError, match="not classes of y"):
        TopKClassifier(class_weight={"emu": 2.0}, **FAST).fit(X, labels)


def test_partial_fit_after_new_sizes_says_what_to_do(data):
    X, y = data
    clf = TopKClassifier(k=2, random_state=0, **FAST).fit(X, y)
    clf.set_params(hidden_layer_sizes=(4,))
    with pytest.raises(ValueError, match="partial_fit continues.*Call fit with warm_start=False"):
        clf.partial_fit(X, y)


def test_warm_start_refuses_a_new_architecture_or_new_classes_and_keeps_the_model(data):
    X, y = data
    clf = TopKClassifier(k=2, warm_start=True, random_state=0, **FAST).fit(X, y)
    expected = clf.decision_function(X)
    with pytest.raises(ValueError, match="hidden_layer_sizes changed from .8,. to .3,."):
        clf.set_params(hidden_layer_sizes=(3,)).fit(X, y)
    with pytest.raises(ValueError, match="not in classes_.*warm_start=True keeps"):
        clf.set_params(hidden_layer_sizes=(8,)).fit(X, y + 10)
    np.testing.assert_array_equal(clf.decision_function(X), expected)
    # activation and dropout may change: same weights, new layers around them.
    clf.set_params(activation="tanh", dropout=0.3, max_epochs=1).fit(X, y)
    assert isinstance(clf.module_.body[1], torch.nn.Tanh)


def test_warm_start_fit_counts_classes_afresh_and_partial_fit_accumulates(data):
    X, y = data
    clf = ImbalancedTopKClassifier(k=2, warm_start=True, random_state=0, **FAST).fit(X, y)
    counts = np.bincount(y)
    np.testing.assert_array_equal(clf.class_counts_, counts)
    clf.fit(X, y)
    np.testing.assert_array_equal(clf.class_counts_, counts)  # as documented: last fit
    clf.partial_fit(X, y)
    np.testing.assert_array_equal(clf.class_counts_, 2 * counts)


def test_callbacks_are_rebuilt_for_each_call(data):
    X, y = data
    clf = TopKClassifier(k=2, random_state=0, **dict(FAST, early_stopping=True)).fit(X, y)
    assert "valid_topk" in dict(clf._net.callbacks_)
    clf.partial_fit(X, y)  # no hold-out in partial_fit: no stale validation callback
    assert "valid_topk" not in dict(clf._net.callbacks_)
    assert "valid_topk" not in clf.history_[-1]
    warm = TopKClassifier(k=2, warm_start=True, verbose=1, random_state=0,
                          **dict(FAST, max_epochs=1)).fit(X, y)
    warm.fit(X, y)
    assert "progress_bar" in dict(warm._net.callbacks_)


def test_user_callbacks_are_never_modified(data):
    from skorch.callbacks import LRScheduler

    X, y = data
    scheduler = LRScheduler(policy="StepLR", step_size=1, gamma=0.5)
    before = dict(vars(scheduler))
    TopKClassifier(k=2, callbacks=[("lr", scheduler)], random_state=0, **FAST).fit(X, y)
    assert vars(scheduler) == before


class _Diverging:
    """Within the block, fits of ``clf`` diverge (huge SGD steps); its parameters return after."""

    def __init__(self, clf):
        self.clf = clf

    def __enter__(self):
        self.saved = self.clf.get_params()
        self.clf.set_params(learning_rate=1e30, optimizer="sgd", loss="cross_entropy")

    def __exit__(self, *exc):
        self.clf.set_params(**self.saved)


def test_failed_partial_fit_leaves_the_model_as_it_was(data):
    X, y = data
    clf = TopKClassifier(k=2, random_state=0, **FAST).fit(X, y)
    expected, n_iter = clf.decision_function(X), clf.n_iter_
    with pytest.raises(ValueError, match="diverged"), _Diverging(clf):
        clf.partial_fit(X * 1e3, y)
    np.testing.assert_array_equal(clf.decision_function(X), expected)
    assert clf.n_iter_ == n_iter


def test_failed_refit_on_new_labels_keeps_the_old_classes_and_network(data):
    X, y = data
    clf = TopKClassifier(k=2, random_state=0, **FAST).fit(X, y)
    expected = clf.predict(X)
    with pytest.raises(ValueError, match="diverged"), _Diverging(clf):
        clf.fit(X * 1e3, np.array(list("abcd"))[y])
    np.testing.assert_array_equal(clf.classes_, np.arange(4))
    np.testing.assert_array_equal(clf.predict(X), expected)


def _fit_all(params_list, X, y):
    return [TopKClassifier(**params).fit(X, y) for params in params_list]


def _fit_in_threads(params_list, X, y):
    results = [None] * len(params_list)
    errors = []

    def work(index):
        try:
            results[index] = TopKClassifier(**params_list[index]).fit(X, y)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(params_list))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    return results


def test_concurrent_fits_in_threads_are_bit_identical_and_leave_the_global_rng(data):
    X, y = data
    params_list = [dict(FAST, k=2, dropout=0.2, random_state=seed) for seed in range(4)]
    sequential = [clf.decision_function(X) for clf in _fit_all(params_list, X, y)]
    torch.manual_seed(1234)
    state = torch.random.get_rng_state()
    for _ in range(3):
        threaded = _fit_in_threads(params_list, X, y)
        for clf, expected in zip(threaded, sequential, strict=True):
            np.testing.assert_array_equal(clf.decision_function(X), expected)
    assert torch.equal(torch.random.get_rng_state(), state)


def test_bad_inputs_and_parameters_raise_clear_errors(data):
    X, y = data
    clf = TopKClassifier(**FAST)
    huge = X.astype(np.float64)
    huge[0, 0] = 1e39
    with pytest.raises(ValueError, match="beyond float32"):
        clf.fit(huge, y)
    fitted = TopKClassifier(k=2, random_state=0, **FAST).fit(X, y)
    with pytest.raises(ValueError, match="beyond float32"):
        fitted.predict(huge)
    cases = [
        ({"loss": "cross_entropy", "class_weight": {0: -1.0, 1: 1.0, 2: 1.0, 3: 1.0}},
         ValueError, "class_weight values must be finite and >= 0"),
        ({"class_weight": {0: 0, 1: 0, 2: 0, 3: 0}}, ValueError, "every class a zero weight"),
        ({"optimizer": torch.optim.LBFGS}, ValueError, "LBFGS is not supported"),
        ({"loss_params": {"reduction": "none"}}, ValueError, "sets .'reduction'."),
        ({"loss_params": {"gamma": 2.0}}, ValueError, "unknown to loss='topk_hinge'"),
        ({"callbacks": "lr"}, TypeError, "'callbacks' parameter"),
        ({"callbacks": ["lr"]}, TypeError, "callbacks must be a list of"),
        ({"epsilon": 1e300}, ValueError, "'epsilon' parameter"),
        ({"learning_rate": 1e300}, ValueError, "'learning_rate' parameter"),
        ({"early_stopping": "no"}, ValueError, "'early_stopping' parameter"),
        ({"warm_start": "no"}, ValueError, "'warm_start' parameter"),
    ]
    for params, error, match in cases:
        with pytest.raises(error, match=match):
            TopKClassifier(**dict(FAST, **params)).fit(X, y)
    with pytest.raises(ValueError, match="at least one non-zero"):
        TopKClassifier(**FAST).fit(X, y, sample_weight=np.zeros(len(y)))
    with pytest.raises(ValueError, match="zero weight"):
        TopKClassifier(**dict(FAST, class_weight={0: 1.0, 1: 0, 2: 0, 3: 0})).fit(
            X, y, sample_weight=(y == 1).astype(float))


@pytest.mark.skipif(torch.backends.mps.is_available(), reason="checks the no-MPS error")
def test_mps_without_mps_is_a_clear_error(data):
    X, y = data
    with pytest.raises(ValueError, match="no usable Apple MPS"):
        TopKClassifier(**dict(FAST, device="mps")).fit(X, y)


def test_partial_fit_refuses_changed_classes(data):
    X, y = data
    clf = TopKClassifier(k=2, random_state=0, **FAST).partial_fit(X, y, classes=np.arange(4))
    with pytest.raises(ValueError, match="classes differs from the classes of the first"):
        clf.partial_fit(X, y, classes=np.arange(5))
    clf.partial_fit(X, y, classes=np.arange(4))  # the same set is fine


def test_skorch_scoring_callbacks_are_refused_with_the_alternative(data):
    from skorch.callbacks import BatchScoring, EpochScoring

    X, y = data
    for callback in (EpochScoring("accuracy", on_train=True), BatchScoring("accuracy")):
        with pytest.raises(TypeError, match="valid_topk"):
            TopKClassifier(callbacks=[("score", callback)], **FAST).fit(X, y)


class ThreeOutputs(torch.nn.Module):
    def __init__(self, n_features):
        super().__init__()
        self.linear = torch.nn.Linear(n_features, 3)

    def forward(self, x):
        return self.linear(x)


def test_module_with_the_wrong_number_of_outputs_fails_at_fit(data):
    X, y = data
    with pytest.raises(ValueError, match=r"shape \(2, 3\).*\(\.\.\., 4\)"):
        TopKClassifier(k=2, module=ThreeOutputs, **FAST).fit(X, y)


def test_scores_do_not_depend_on_the_batch(data):
    X, y = data
    clf = TopKClassifier(k=2, random_state=0, **dict(FAST, hidden_layer_sizes=(256,))).fit(X, y)
    full = clf.decision_function(X)
    one_by_one = np.vstack([clf.decision_function(X[i:i + 1]) for i in range(20)])
    np.testing.assert_array_equal(one_by_one, full[:20])
    # Weights changed in place are seen by the next prediction.
    with torch.no_grad():
        clf.module_.head.bias += 1.0
    np.testing.assert_allclose(clf.decision_function(X), full + 1.0, atol=1e-5)


# ----------------------------------------------------------- property-based test
_X, _Y = make_classification(n_samples=60, n_features=4, n_informative=3, n_redundant=0,
                             n_classes=3, random_state=1)
_X = _X.astype(np.float32)
_TINY = {"hidden_layer_sizes": (4,), "max_epochs": 2, "batch_size": 32, "device": "cpu",
         "early_stopping": False, "k": 1, "random_state": 0}


class EstimatorLifecycle(RuleBasedStateMachine):
    """Random fit / partial_fit / set_params / pickle / predict sequences, valid or not.

    After every step the model predicts exactly as its last successful fit left it.
    """

    @initialize(warm=st.booleans())
    def start(self, warm):
        self.clf = TopKClassifier(warm_start=warm, **_TINY).fit(_X, _Y)
        self.expected = self.clf.decision_function(_X)

    def _try(self, call, diverge=False):
        try:
            if diverge:
                with _Diverging(self.clf):
                    call()
            else:
                call()
        except (ValueError, TypeError):
            return
        self.expected = self.clf.decision_function(_X)

    @rule(bad=st.sampled_from(["none", "diverge", "nan"]))
    def fit(self, bad):
        X = np.full_like(_X, np.nan) if bad == "nan" else _X * (1e3 if bad == "diverge" else 1)
        self._try(lambda: self.clf.fit(X, _Y), diverge=bad == "diverge")

    @rule(bad=st.sampled_from(["none", "diverge", "labels", "classes"]))
    def partial_fit(self, bad):
        X, y, classes = _X, _Y, None
        if bad == "diverge":
            X = _X * 1e3
        elif bad == "labels":
            y = _Y + 7
        elif bad == "classes":
            classes = np.arange(5)
        self._try(lambda: self.clf.partial_fit(X, y, classes=classes), diverge=bad == "diverge")

    @rule(params=st.fixed_dictionaries({}, optional={
        "hidden_layer_sizes": st.sampled_from([(4,), (3,), (2, 2)]),
        "activation": st.sampled_from(["relu", "tanh"]),
        "dropout": st.sampled_from([0.0, 0.5]),
        "learning_rate": st.sampled_from([1e-3, 0.1, -1.0]),
        "loss": st.sampled_from(["topk_hinge", "cross_entropy", "nope"]),
        "k": st.sampled_from([1, 2]),
        "warm_start": st.booleans(),
    }))
    def set_params(self, params):
        self.clf.set_params(**params)

    @rule()
    def pickle_round_trip(self):
        self.clf = pickle.loads(pickle.dumps(self.clf))

    @invariant()
    def predicts_as_the_last_successful_fit(self):
        if hasattr(self, "clf"):
            np.testing.assert_array_equal(self.clf.decision_function(_X), self.expected)


EstimatorLifecycle.TestCase.settings = settings(
    max_examples=15, stateful_step_count=8, deadline=None,
    suppress_health_check=[HealthCheck.too_slow])
test_estimator_lifecycle = EstimatorLifecycle.TestCase


@pytest.mark.parametrize("average", ["micro", "macro"])
def test_hold_out_top_k_is_weighted_like_the_hold_out_loss(average):
    # Against a per-sample loop; zero-weight samples must not count.
    from sktopk._training import average_hits

    gen = torch.Generator().manual_seed(0)
    hits = torch.rand(60, generator=gen) < 0.5
    target = torch.randint(0, 5, (60,), generator=gen)
    weight = torch.rand(60, generator=gen)
    weight[target == 4] = 0.0  # class 4 weighs nothing: absent from the macro mean
    h, t, w = hits.numpy().astype(float), target.numpy(), weight.numpy().astype(float)
    if average == "micro":
        expected = (h * w).sum() / w.sum()
    else:
        expected = np.mean([(h * w)[t == c].sum() / w[t == c].sum() for c in range(4)])
    assert average_hits(hits, target, 5, average, weight) == pytest.approx(expected, rel=1e-6)
    unweighted = average_hits(hits, target, 5, average)
    assert average_hits(hits, target, 5, average, torch.ones(60)) == pytest.approx(unweighted)
    assert average_hits(hits, target, 5, average, torch.zeros(60)) == 0.0


def test_hold_out_monitor_reads_the_sample_weights(data):
    from skorch.history import History

    from sktopk._training import TensorData, ValidationTopKAccuracy

    X, y = data
    weight = np.where(y == 0, 1.0, 0.0)  # only class 0 counts
    module = torch.nn.Linear(X.shape[1], 4)
    with torch.no_grad():
        predicted = module(torch.from_numpy(X)).argmax(1).numpy()

    class Net:
        module_, history = module, History()

    Net.history.new_epoch()
    callback = ValidationTopKAccuracy(TensorData(X, y, weight), k=1, n_classes=4)
    callback.on_epoch_end(Net)
    assert Net.history[-1, "valid_topk"] == pytest.approx(np.mean(predicted[y == 0] == 0))


def test_user_callbacks_see_the_fitted_weights_at_the_end_of_training(data):
    # Early stopping runs last at each epoch's end, but its restore of the best
    # weights comes before the user's on_train_end (a TrainEndCheckpoint).
    import copy

    X, y = data

    class Grab(Callback):
        def on_train_end(self, net, **kwargs):
            Grab.state = copy.deepcopy(net.module_.state_dict())

    clf = TopKClassifier(k=2, random_state=0, n_iter_no_change=2, refit=False,
                         callbacks=[("grab", Grab())],
                         **{**FAST, "early_stopping": True, "max_epochs": 40}).fit(X, y)
    assert clf.n_iter_ < 40
    best = max(range(clf.n_iter_), key=lambda i: (clf.history_[i]["valid_topk"], -i))
    assert best < clf.n_iter_ - 1  # the best weights are not the last ones
    for key, value in clf.module_.state_dict().items():
        assert torch.equal(Grab.state[key], value)


def test_ctrl_c_while_a_callback_runs_is_an_interrupt(data):
    # A real SIGINT (not a callback raising KeyboardInterrupt to stop training).
    import signal

    X, y = data

    class CtrlC(Callback):
        def on_epoch_end(self, net, **kwargs):
            if len(net.history) == 2:
                signal.raise_signal(signal.SIGINT)

    clf = TopKClassifier(k=2, random_state=0, **FAST).fit(X, y)
    expected, n_iter = clf.decision_function(X), clf.n_iter_
    clf.set_params(warm_start=True, callbacks=[("ctrl_c", CtrlC())])
    # Python's own Ctrl-C handler (another test's library may have replaced it).
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            clf.fit(X, y)
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored
    finally:
        signal.signal(signal.SIGINT, previous)
    np.testing.assert_array_equal(clf.decision_function(X), expected)
    assert clf.n_iter_ == n_iter


def test_a_ctrl_c_swallowed_by_the_users_handler_interrupts_nothing(data):
    # A Python SIGINT handler that does not raise (a "stop after this epoch"
    # switch) must leave the skorch-style stop of the user's callback working.
    import signal

    X, y = data
    requested = []

    class StopWhenAsked(Callback):
        def on_epoch_end(self, net, **kwargs):
            if len(net.history) == 2:
                signal.raise_signal(signal.SIGINT)
            if requested:
                raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, lambda signum, frame: requested.append(True))
    try:
        clf = TopKClassifier(k=2, random_state=0, callbacks=[("stop", StopWhenAsked())],
                             **{**FAST, "max_epochs": 6}).fit(X, y)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert requested and clf.n_iter_ == 2
