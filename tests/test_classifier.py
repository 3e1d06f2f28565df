import io
import pickle
import warnings

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from sklearn.base import clone
from sklearn.datasets import make_classification
from sklearn.utils.estimator_checks import parametrize_with_checks

from sktopk import ImbalancedTopKClassifier, TopKClassifier
from sktopk._classifier import _seed_sequence, _validation_split
from sktopk._ranking import top_k_indices
from sktopk._training import limited_torch_threads, thread_budget

FAST = {"hidden_layer_sizes": (16,), "max_epochs": 15, "batch_size": 64, "device": "cpu"}

# Each expected failure of sklearn's common checks, with the reason.
EXPECTED_FAILURES = {
    "check_sample_weight_equivalence_on_dense_data": (
        "minibatch SGD: repeating a sample is not the same as doubling its weight inside a "
        "batch, and the batches differ in number and content"
    ),
    "check_sample_weight_equivalence_on_sparse_data": (
        "minibatch SGD: repeating a sample is not the same as doubling its weight inside a "
        "batch, and the batches differ in number and content"
    ),
}


def _expected_failed_checks(estimator):
    return EXPECTED_FAILURES


@parametrize_with_checks(
    # Default parameters: only the two sample-weight checks above may fail. The
    # refit (a second training path in fit) has to pass the same checks.
    [TopKClassifier(random_state=0), ImbalancedTopKClassifier(random_state=0),
     ImbalancedTopKClassifier(refit=True, random_state=0)],
    expected_failed_checks=_expected_failed_checks,
)
def test_sklearn_common_checks(estimator, check):
    with warnings.catch_warnings():
        # The default k=5 is above the class count of most check datasets: the
        # estimator warns and trains with k = n_classes - 1, as documented.
        warnings.filterwarnings("ignore", message="k=5 but there are only")
        check(estimator)


@pytest.fixture(scope="module")
def data():
    X, y = make_classification(n_samples=400, n_features=10, n_informative=8, n_classes=8,
                               n_clusters_per_class=1, random_state=0)
    return X.astype(np.float32), y


@pytest.mark.parametrize("Estimator", [TopKClassifier, ImbalancedTopKClassifier])
def test_random_state_makes_cpu_training_bit_for_bit_reproducible(Estimator, data):
    X, y = data
    params = dict(FAST, k=3, dropout=0.2, random_state=7)
    first = Estimator(**params).fit(X, y)
    second = Estimator(**params).fit(X, y)
    for a, b in zip(first.module_.state_dict().values(), second.module_.state_dict().values(),
                    strict=True):
        assert torch.equal(a, b)
    np.testing.assert_array_equal(first.decision_function(X), second.decision_function(X))
    other = Estimator(**dict(params, random_state=8)).fit(X, y)
    assert not np.array_equal(first.decision_function(X), other.decision_function(X))


def test_fit_leaves_global_rng_untouched(data):
    X, y = data
    torch.manual_seed(123)
    state = torch.get_rng_state()
    np_state = np.random.get_state()[1].copy()
    TopKClassifier(random_state=0, dropout=0.1, **FAST).fit(X, y)
    assert torch.equal(state, torch.get_rng_state())
    np.testing.assert_array_equal(np_state, np.random.get_state()[1])


@pytest.mark.parametrize("loss", ["topk_hinge", "cross_entropy", "focal", "smooth_svm"])
def test_every_loss_learns(loss, data):
    X, y = data
    clf = TopKClassifier(k=3, loss=loss, random_state=0, **dict(FAST, max_epochs=40)).fit(X, y)
    top3 = clf.predict_topk(X)
    # A learning check: chance is 3/8 here.
    assert np.mean((top3 == y[:, None]).any(axis=1)) > 0.7


@pytest.mark.parametrize("loss", ["topk_hinge", "ldam"])
def test_imbalanced_losses_learn(loss, data):
    X, y = data
    clf = ImbalancedTopKClassifier(k=3, loss=loss, random_state=0,
                                   **dict(FAST, max_epochs=40)).fit(X, y)
    # A learning check: chance is 3/8 here.
    assert np.mean((clf.predict_topk(X) == y[:, None]).any(axis=1)) > 0.7


def test_bf16_autocast_trains_to_the_same_quality(data):
    X, y = data
    params = dict(FAST, k=3, max_epochs=40, random_state=0)
    full = TopKClassifier(**params).fit(X, y)
    half = TopKClassifier(precision="bf16", **params).fit(X, y)
    assert half.decision_function(X).dtype == np.float64
    top3 = {name: np.mean((clf.predict_topk(X) == y[:, None]).any(axis=1))
            for name, clf in (("fp32", full), ("bf16", half))}
    assert abs(top3["bf16"] - top3["fp32"]) < 0.05, top3


def test_predict_topk_agrees_with_decision_function_and_predict(data):
    X, y = data
    clf = TopKClassifier(k=4, random_state=0, **FAST).fit(X, y)
    top = clf.predict_topk(X)
    assert top.shape == (len(X), 4)
    np.testing.assert_array_equal(top, clf.classes_[top_k_indices(clf.decision_function(X), 4)])
    np.testing.assert_array_equal(top[:, 0], clf.predict(X))
    assert clf.predict_topk(X, k=2).shape == (len(X), 2)
    with pytest.warns(UserWarning, match="k=20 is larger than the 8 classes"):
        assert clf.predict_topk(X[:3], k=20).shape == (3, 8)


def test_string_labels_and_dataframe_feature_names(data):
    pd = pytest.importorskip("pandas")
    X, y = data
    names = np.array(["alpha", "beta", "gamma", "delta", "eps", "zeta", "eta", "theta"])
    frame = pd.DataFrame(X, columns=[f"f{i}" for i in range(X.shape[1])])
    clf = TopKClassifier(k=2, random_state=0, **FAST).fit(frame, names[y])
    assert list(clf.feature_names_in_) == list(frame.columns)
    assert set(clf.predict(frame)) <= set(names)
    assert clf.predict_topk(frame).dtype == clf.classes_.dtype


def test_sparse_input_matches_dense(data):
    X, y = data
    dense = TopKClassifier(k=2, random_state=0, **FAST).fit(X, y)
    sparse = TopKClassifier(k=2, random_state=0, **FAST).fit(sp.csr_matrix(X), y)
    np.testing.assert_allclose(sparse.decision_function(sp.csr_matrix(X)),
                               dense.decision_function(X), rtol=1e-5, atol=1e-6)


def test_k_at_or_above_n_classes_warns_and_uses_n_classes_minus_one():
    X, y = make_classification(n_samples=60, n_classes=2, random_state=0)
    with pytest.warns(UserWarning, match="k=5 but there are only 2 classes.*k=1"):
        clf = TopKClassifier(**FAST).fit(X, y)
    assert clf.k_ == 1
    assert clf.decision_function(X).shape == (60,)


def test_early_stopping_stops_and_keeps_the_best_epoch(data):
    X, y = data
    # k=1 and a large step: the last epochs score below the best, so the check
    # below fails unless the best weights are restored.
    clf = TopKClassifier(k=1, n_iter_no_change=3, learning_rate=1e-2, random_state=0,
                         **dict(FAST, max_epochs=200)).fit(X, y)
    assert clf.n_iter_ < 200
    scores = [row["valid_topk"] for row in clf.history_]
    best = int(np.argmax(scores))
    assert clf.n_iter_ - 1 - best <= 3
    # The restored weights are those of the best epoch: recompute its score on
    # the same hold-out rows.
    _, valid = _validation_split(np.searchsorted(clf.classes_, y), clf.validation_fraction,
                                 np.random.RandomState(_seed_sequence(clf._base_seed, 0)["split"]))
    hits = (clf.predict_topk(X[valid], k=clf.k_) == y[valid, None]).any(axis=1)
    assert hits.mean() == pytest.approx(max(scores), abs=1e-6)


def test_early_stopping_split_handles_singleton_classes():
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(12), [60, 30, 20, 10, 5, 3, 2, 1, 1, 1, 1, 1])
    X = rng.normal(size=(len(y), 5)) + y[:, None]
    clf = ImbalancedTopKClassifier(k=3, random_state=0, **FAST).fit(X, y)
    assert clf.class_counts_.tolist() == np.bincount(y).tolist()
    assert clf.margins_.argmax() >= 7
    assert np.isfinite(clf.decision_function(X)).all()


def test_predict_proba_only_for_probabilistic_losses(data):
    X, y = data
    hinge = TopKClassifier(**FAST)
    assert not hasattr(hinge, "predict_proba")
    with pytest.raises(AttributeError, match="CalibratedClassifierCV"):
        hinge.predict_proba(X)
    ce = TopKClassifier(loss="cross_entropy", random_state=0, **FAST).fit(X, y)
    proba = ce.predict_proba(X)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(ce.classes_[proba.argmax(1)], ce.predict(X))
    ldam = ImbalancedTopKClassifier(loss="ldam", random_state=0, **FAST).fit(X, y)
    assert ldam.predict_proba(X).shape == (len(X), 8)


def test_sample_weight_and_class_weight(data):
    X, y = data
    plain = TopKClassifier(k=2, random_state=0, **FAST).fit(X, y)
    ones = TopKClassifier(k=2, random_state=0, **FAST).fit(X, y, sample_weight=np.ones(len(y)))
    np.testing.assert_allclose(ones.decision_function(X), plain.decision_function(X),
                               rtol=1e-4, atol=1e-4)
    # Weight only class 0: the model must rank class 0 first far more often.
    weight = np.where(y == 0, 1.0, 1e-3)
    skewed = TopKClassifier(k=1, random_state=0, **FAST).fit(X, y, sample_weight=weight)
    assert np.mean(skewed.predict(X) == 0) > np.mean(plain.predict(X) == 0) + 0.2
    TopKClassifier(k=2, class_weight="balanced", random_state=0, **FAST).fit(X, y)


def test_partial_fit_and_warm_start(data):
    X, y = data
    clf = TopKClassifier(k=2, random_state=0, **FAST)
    with pytest.raises(ValueError, match="classes must be passed on the first call"):
        clf.partial_fit(X, y)
    clf.partial_fit(X[:200], y[:200], classes=np.arange(10))
    clf.partial_fit(X[200:], y[200:])
    assert clf.n_iter_ == 2
    assert clf.decision_function(X).shape == (400, 10)
    with pytest.raises(ValueError, match="not in classes_"):
        clf.partial_fit(X[:5], np.full(5, 42))
    warm = TopKClassifier(k=2, warm_start=True, early_stopping=False, random_state=0,
                          **dict(FAST, max_epochs=3)).fit(X, y)
    warm.fit(X, y)
    assert warm.n_iter_ == 6


@pytest.mark.parametrize("Estimator", [TopKClassifier, ImbalancedTopKClassifier])
def test_warm_start_after_dropout_change_continues_from_the_same_weights(data, Estimator):
    # Dropout layers inserted between two hidden layers shift the layers' positions:
    # the weights must still go to the same linear layers.
    X, y = data
    clf = Estimator(k=2, random_state=0, early_stopping=False, weight_decay=0.0,
                    **dict(FAST, hidden_layer_sizes=(8, 8), max_epochs=2)).fit(X, y)
    before = [p.detach().clone() for p in clf.module_.parameters()]
    # A learning rate so small that one more epoch cannot move the weights visibly.
    clf.set_params(warm_start=True, dropout=0.5, learning_rate=1e-12, max_epochs=1).fit(X, y)
    after = list(clf.module_.parameters())
    assert len(after) == len(before)
    for old, new in zip(before, after, strict=True):
        torch.testing.assert_close(new.detach(), old, rtol=0, atol=1e-6)
    assert any(type(m).__name__ == "GeneratorDropout" for m in clf.module_.modules())


def test_imbalanced_partial_fit_with_absent_class_keeps_finite_margins(data):
    X, y = data
    clf = ImbalancedTopKClassifier(k=2, random_state=0, **FAST)
    clf.partial_fit(X, y, classes=np.arange(9))
    assert clf.class_counts_[8] == 0
    assert np.isfinite(clf.margins_).all() and clf.margins_[8] == pytest.approx(clf.max_margin)
    assert np.isfinite(clf.decision_function(X)).all()


@pytest.mark.parametrize("Estimator", [TopKClassifier, ImbalancedTopKClassifier])
def test_pickle_round_trip_holds_no_torch_objects(Estimator, data):
    X, y = data
    clf = Estimator(k=2, random_state=0, **FAST).fit(X, y)
    state = clf.__getstate__()
    assert "module_" not in state and "_net" not in state
    assert all(isinstance(array, np.ndarray) and dtype == "float32"
               for array, dtype in state["_module_weights"].values())
    assert b"torch" not in pickle.dumps(clf)
    loaded = pickle.loads(pickle.dumps(clf))
    np.testing.assert_array_equal(loaded.decision_function(X), clf.decision_function(X))
    # Keeps training after loading (the optimiser restarts from scratch).
    loaded.partial_fit(X, y)


def test_model_saved_from_cuda_loads_on_a_cpu_only_machine(data, monkeypatch):
    X, y = data
    clf = TopKClassifier(k=2, random_state=0, **FAST).fit(X, y)
    state = clf.__getstate__()
    state["device_"] = "cuda:0"  # what a GPU-trained model records
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    restored = TopKClassifier.__new__(TopKClassifier)
    restored.__setstate__(state)
    assert restored.device_ == "cpu"
    np.testing.assert_array_equal(restored.predict(X), clf.predict(X))


class _RecordsBackwardThreading(torch.nn.Module):
    """A linear model whose backward pass records whether autograd may use its worker threads."""

    seen = []

    def __init__(self, n_features, n_classes):
        super().__init__()
        self.linear = torch.nn.Linear(n_features, n_classes)

    def forward(self, x):
        scores = self.linear(x)
        if scores.requires_grad:
            scores.register_hook(lambda grad: self.seen.append(
                torch._C._is_multithreading_enabled()) or grad)
        return scores


@pytest.mark.parametrize("n_classes", [2, 100, 1000, 4097, 10000, 100000, 10**7])
def test_fixed_prediction_batches_are_powers_of_two_of_bounded_size(n_classes):
    from sktopk._classifier import _fixed_predict_rows

    rows = _fixed_predict_rows(n_classes)
    assert 64 <= rows <= 8192 and rows & (rows - 1) == 0
    assert rows * n_classes * 4 <= 16 * 2**20 or rows == 64
    assert rows == 8192 or 2 * rows * n_classes * 4 > 16 * 2**20  # the largest that fits


def test_backward_runs_on_the_calling_thread(data):
    # On a GPU, autograd's worker-thread hand-over costs more than these small
    # backward passes (benchmarks/RESULTS.md, section 5): the estimators turn it off
    # for their own steps, and only there.
    X, y = data
    _RecordsBackwardThreading.seen = []
    TopKClassifier(**dict(FAST, k=2, max_epochs=2, module=_RecordsBackwardThreading,
                          random_state=0)).fit(X, y)
    assert _RecordsBackwardThreading.seen and not any(_RecordsBackwardThreading.seen)
    assert torch._C._is_multithreading_enabled()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("Estimator", [TopKClassifier, ImbalancedTopKClassifier])
def test_gpu_fit_predict_save_and_load_on_cpu(Estimator, data, monkeypatch):
    X, y = data
    params = dict(FAST, k=3, random_state=0, device="auto")  # "auto" takes the GPU
    clf = Estimator(**params).fit(X, y)
    assert clf.device_ == "cuda"
    cpu = Estimator(**dict(params, device="cpu")).fit(X, y)
    # Other noise and float rounding, same problem: top-3 accuracy within a few points.
    assert abs(clf.score(X, y) - cpu.score(X, y)) < 0.08
    scores = clf.decision_function(X)
    assert isinstance(scores, np.ndarray) and np.isfinite(scores).all()
    # CSR input gives the same scores.
    np.testing.assert_allclose(clf.decision_function(sp.csr_matrix(X)), scores, atol=1e-4)
    # Same seed, same GPU fit, up to the order of atomic float additions.
    again = Estimator(**params).fit(X, y)
    np.testing.assert_allclose(again.decision_function(X), scores, atol=1e-4)
    # Warm start continues on the GPU, with a new max_epochs honoured.
    before = len(clf.history_)
    clf.set_params(warm_start=True, max_epochs=2).fit(X, y)
    assert before < len(clf.history_) <= before + 2
    blob = pickle.dumps(clf)
    scores = clf.decision_function(X)
    np.testing.assert_array_equal(pickle.loads(blob).decision_function(X), scores)
    # Scores of a sample do not depend on the batch it comes with (fixed-shape batches).
    np.testing.assert_array_equal(clf.decision_function(X[:7]), scores[:7])
    np.testing.assert_array_equal(clf.decision_function(sp.csr_matrix(X[5:6])),
                                  clf.decision_function(sp.csr_matrix(X))[5:6])
    # A model saved on a GPU machine loads and predicts on a CPU-only one.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    restored = pickle.loads(blob)
    assert restored.device_ == "cpu"
    np.testing.assert_allclose(restored.decision_function(X), scores, atol=1e-4)


def test_skops_round_trip_trusting_only_sktopk_types(data):
    sio = pytest.importorskip("skops.io")
    X, y = data
    clf = ImbalancedTopKClassifier(k=2, random_state=0, **FAST).fit(X, y)
    blob = sio.dumps(clf)
    untrusted = sio.get_untrusted_types(data=blob)
    assert all(name.startswith("sktopk.") for name in untrusted), untrusted
    loaded = sio.loads(blob, trusted=untrusted)
    np.testing.assert_array_equal(loaded.decision_function(X), clf.decision_function(X))


class TinyCNN(torch.nn.Module):
    def __init__(self, n_classes=3):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 4, 3, padding=1)
        self.out = torch.nn.Linear(4 * 6 * 6, n_classes)

    def forward(self, x):
        return self.out(torch.relu(self.conv(x)).flatten(1))


def test_custom_module_class_and_instance_on_image_arrays():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 120)
    X = rng.normal(size=(120, 1, 6, 6)).astype(np.float32)
    X[np.arange(120), 0, 2 * y, :] += 2.0
    by_class = TopKClassifier(k=1, module=TinyCNN, random_state=0,
                              **dict(FAST, max_epochs=30)).fit(X, y)
    assert by_class.score(X, y) > 0.8
    again = TopKClassifier(k=1, module=TinyCNN, random_state=0,
                           **dict(FAST, max_epochs=30)).fit(X, y)
    np.testing.assert_array_equal(by_class.decision_function(X), again.decision_function(X))
    instance = TinyCNN()
    by_instance = TopKClassifier(k=1, module=instance, random_state=0, **FAST).fit(X, y)
    assert by_instance.module_ is not instance
    loaded = pickle.loads(pickle.dumps(by_instance))
    np.testing.assert_array_equal(loaded.predict(X), by_instance.predict(X))


def test_divergence_raises_a_clear_error(data):
    X, y = data
    clf = TopKClassifier(loss="cross_entropy", optimizer="sgd", learning_rate=1e30,
                         random_state=0, **FAST)
    with pytest.raises(ValueError, match="[Ll]ower learning_rate|lower the learning rate"):
        clf.fit(X * 1e3, y)


@pytest.mark.parametrize(
    ("params", "error", "match"),
    [
        ({"k": 0}, ValueError, "'k' parameter of TopKClassifier must be an int in the range"),
        ({"k": 2.5}, TypeError, "'k' parameter of TopKClassifier must be an int"),
        ({"loss": "hinge"}, ValueError, "'loss' parameter of TopKClassifier must be a str among"),
        ({"device": "tpu"}, ValueError, "device='tpu'"),
        ({"epsilon": -1.0}, ValueError, "epsilon"),
        ({"hidden_layer_sizes": (0,)}, ValueError, "hidden_layer_sizes"),
        ({"validation_fraction": 1.0}, ValueError, "validation_fraction"),
        ({"optimizer": "lbfgs"}, ValueError, "'optimizer' parameter of TopKClassifier"),
        ({"class_weight": "auto"}, ValueError, "class_weight"),
        ({"precision": "fp16"}, ValueError, "'precision' parameter of TopKClassifier"),
    ],
)
def test_bad_parameters(params, error, match, data):
    X, y = data
    with pytest.raises(error, match=match):
        TopKClassifier(**dict(FAST, **params)).fit(X, y)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU error")
def test_cuda_without_gpu_is_a_clear_error(data):
    X, y = data
    with pytest.raises(ValueError, match="no CUDA GPU"):
        TopKClassifier(**dict(FAST, device="cuda")).fit(X, y)


def test_bad_data(data):
    X, y = data
    clf = TopKClassifier(**FAST)
    with pytest.raises(ValueError, match="NaN"):
        clf.fit(np.where(np.eye(*X.shape) > 0, np.nan, X), y)
    with pytest.raises(ValueError, match="at least 2 classes"):
        clf.fit(X, np.zeros(len(y)))
    with pytest.raises(ValueError, match="Unknown label type"):
        clf.fit(X, np.linspace(0, 1, len(y)))
    with pytest.raises(ValueError, match="[Nn]egative"):
        clf.fit(X, y, sample_weight=-np.ones(len(y)))
    fitted = clone(clf).set_params(max_epochs=1).fit(X, y)
    with pytest.raises(ValueError, match="features"):
        fitted.predict(X[:, :3])


def test_verbose_prints_an_epoch_log(data, capsys):
    X, y = data
    TopKClassifier(k=2, verbose=1, random_state=0, **dict(FAST, max_epochs=2)).fit(X, y)
    out = capsys.readouterr().out
    assert "train_loss" in out and "valid_topk" in out


def test_thread_budget_follows_omp_num_threads(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert thread_budget() == 1
    before = torch.get_num_threads()
    with limited_torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


def test_user_callbacks_and_history(data):
    from skorch.callbacks import LRScheduler

    X, y = data
    scheduler = LRScheduler(policy="StepLR", step_size=1, gamma=0.5)
    clf = TopKClassifier(k=2, callbacks=[("lr", scheduler)], early_stopping=False,
                         random_state=0, **dict(FAST, max_epochs=3)).fit(X, y)
    assert clf.n_iter_ == 3 and len(clf.history_) == 3
    assert {"epoch", "train_loss", "dur"} <= set(clf.history_[0])
    assert clf._net.optimizer_.param_groups[0]["lr"] == pytest.approx(1e-3 / 8)


def test_io_buffer_pickle(data):
    X, y = data
    clf = TopKClassifier(k=2, random_state=0, **FAST).fit(X, y)
    buffer = io.BytesIO()
    pickle.dump(clf, buffer)
    buffer.seek(0)
    np.testing.assert_array_equal(pickle.load(buffer).predict(X), clf.predict(X))


@pytest.mark.parametrize("Estimator", [TopKClassifier, ImbalancedTopKClassifier])
def test_concurrent_predictions_keep_dropout_off_and_the_model_unchanged(Estimator, data):
    # The published network is in eval mode: a scoring pass in one thread must
    # not switch dropout back on under another (it did, and drew from the global RNG).
    import threading

    X, y = data
    clf = Estimator(k=2, dropout=0.5, random_state=0, **FAST).fit(X, y)
    assert not clf.module_.training
    assert not pickle.loads(pickle.dumps(clf)).module_.training
    clf.decision_function(X[:3])
    # Every network a prediction runs stays in eval mode afterwards (the float64
    # copy's wrapper was created in train mode, and each pass restored that).
    assert not any(m.training for m in clf._scoring_network().modules())
    chunks = [X[i::8] for i in range(8)]
    expected = [clf.decision_function(chunk) for chunk in chunks]
    rng_state = torch.get_rng_state()
    failures = []

    def score(i):
        for _ in range(10):
            if not np.array_equal(clf.decision_function(chunks[i]), expected[i]):
                failures.append(i)

    threads = [threading.Thread(target=score, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures
    assert torch.equal(torch.get_rng_state(), rng_state)


def test_weights_replaced_through_data_are_seen_by_predictions(data):
    X, y = data
    clf = TopKClassifier(k=2, random_state=0, **FAST).fit(X, y)
    before = clf.decision_function(X)  # fills the float64 scoring cache
    vector = torch.nn.utils.parameters_to_vector(clf.module_.parameters())
    torch.nn.utils.vector_to_parameters(vector * 0.5, clf.module_.parameters())
    after = clf.decision_function(X)
    assert not np.allclose(after, before)
    # A loaded copy scores from the current weights, with no cache to go stale.
    np.testing.assert_array_equal(after, pickle.loads(pickle.dumps(clf)).decision_function(X))
