"""Saved estimators: rebuilt from what was fitted, never from later parameters or calls."""

import io
import pickle

import joblib
import numpy as np
import pytest
import torch
from sklearn.datasets import make_classification

from sktopk import ImbalancedTopKClassifier, TopKClassifier
from sktopk._persistence import FORMAT_VERSION, module_from_state, module_to_state

FAST = {"hidden_layer_sizes": (8,), "max_epochs": 3, "batch_size": 32, "device": "cpu",
        "early_stopping": False}


@pytest.fixture(scope="module")
def data():
    X, y = make_classification(n_samples=120, n_features=6, n_informative=5, n_redundant=0,
                               n_classes=4, random_state=0)
    return X.astype(np.float32), y


def _round_trips():
    sio = pytest.importorskip("skops.io")

    def with_skops(clf):
        blob = sio.dumps(clf)
        return sio.loads(blob, trusted=sio.get_untrusted_types(data=blob))

    def with_joblib(clf):
        buffer = io.BytesIO()
        joblib.dump(clf, buffer)
        buffer.seek(0)
        return joblib.load(buffer)

    return {"pickle": lambda clf: pickle.loads(pickle.dumps(clf)), "joblib": with_joblib,
            "skops": with_skops}


@pytest.mark.parametrize("how", ["pickle", "joblib", "skops"])
@pytest.mark.parametrize("Estimator", [TopKClassifier, ImbalancedTopKClassifier])
@pytest.mark.parametrize("change", [{"activation": "tanh"}, {"hidden_layer_sizes": (3,)},
                                    {"dropout": 0.5}, {"precision": "bf16"}])
def test_saved_model_predicts_as_fitted_after_set_params(Estimator, change, how, data):
    X, y = data
    clf = Estimator(k=2, random_state=0, **FAST).fit(X, y)
    expected = clf.decision_function(X)
    clf.set_params(**change)
    loaded = _round_trips()[how](clf)
    np.testing.assert_array_equal(loaded.decision_function(X), expected)
    assert loaded.get_params()[next(iter(change))] == next(iter(change.values()))


def test_fitted_loss_decides_predict_proba_and_predict_topk_k(data):
    X, y = data
    clf = TopKClassifier(k=2, random_state=0, **FAST).fit(X, y)
    top = clf.predict_topk(X)
    clf.set_params(loss="cross_entropy", k=3)
    assert not hasattr(clf, "predict_proba")  # trained with the hinge: no probabilities
    np.testing.assert_array_equal(clf.predict_topk(X), top)
    loaded = pickle.loads(pickle.dumps(clf))
    assert not hasattr(loaded, "predict_proba")
    np.testing.assert_array_equal(loaded.predict_topk(X), top)


class CountingNet(torch.nn.Module):
    """Counts its constructor calls: loading a saved model must not call it."""

    calls = 0

    def __init__(self, n_features, n_classes):
        super().__init__()
        type(self).calls += 1
        self.linear = torch.nn.Linear(n_features, n_classes)
        self.register_buffer("offset", torch.zeros(n_classes))

    def forward(self, x):
        return self.linear(x) + self.offset


@pytest.mark.parametrize("how", ["pickle", "skops"])
def test_loading_never_calls_the_module_class(how, data):
    X, y = data
    clf = TopKClassifier(k=2, module=CountingNet, random_state=0, **FAST).fit(X, y)
    calls = CountingNet.calls
    loaded = _round_trips()[how](clf)
    assert CountingNet.calls == calls
    np.testing.assert_array_equal(loaded.decision_function(X), clf.decision_function(X))
    assert loaded.module is CountingNet


@pytest.mark.parametrize("fitted", [False, True])
def test_skops_saves_a_module_instance_parameter(fitted, data):
    sio = pytest.importorskip("skops.io")
    X, y = data
    clf = TopKClassifier(k=2, module=CountingNet(6, 4), random_state=0, **FAST)
    if fitted:
        clf.fit(X, y)
    blob = sio.dumps(clf)
    untrusted = sio.get_untrusted_types(data=blob)
    loaded = sio.loads(blob, trusted=untrusted)
    assert isinstance(loaded.module, CountingNet)
    for a, b in zip(loaded.module.state_dict().values(), clf.module.state_dict().values(),
                    strict=True):
        assert torch.equal(a, b)
    if fitted:
        np.testing.assert_array_equal(loaded.predict(X), clf.predict(X))
    else:
        np.testing.assert_array_equal(loaded.fit(X, y).predict(X),
                                      clf.fit(X, y).predict(X))


def test_module_state_round_trip_keeps_everything():
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4),
                              torch.nn.Dropout(0.1), torch.nn.Linear(4, 2, bias=False))
    net[1].running_mean += 1.5
    net[3].weight.requires_grad_(False)
    net.half().eval()
    rebuilt = module_from_state(module_to_state(net))
    assert type(rebuilt) is type(net) and not rebuilt.training
    assert rebuilt[2].p == 0.1 and rebuilt[3].bias is None
    assert not rebuilt[3].weight.requires_grad
    for (name_a, a), (name_b, b) in zip(net.state_dict().items(),
                                        rebuilt.state_dict().items(), strict=True):
        assert name_a == name_b and a.dtype == b.dtype and torch.equal(a, b)
    x = torch.randn(5, 3, dtype=torch.float16)
    assert torch.equal(net.float()(x.float()), rebuilt.float()(x.float()))


def test_module_with_loose_tensor_attribute_is_refused_with_a_fix():
    class Loose(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.table = torch.ones(3)

    with pytest.raises(TypeError, match="register_buffer"):
        module_to_state(Loose())


def test_state_records_a_format_version_and_newer_files_are_refused(data):
    X, y = data
    clf = TopKClassifier(k=2, random_state=0, **FAST).fit(X, y)
    state = clf.__getstate__()
    assert state["_sktopk_format"] == FORMAT_VERSION
    state["_sktopk_format"] = FORMAT_VERSION + 1
    with pytest.raises(ValueError, match=f"format {FORMAT_VERSION + 1}.*upgrade sktopk"):
        TopKClassifier.__new__(TopKClassifier).__setstate__(state)


def _format_1_state(clf):
    """The state sktopk 0.1 wrote: plain weights, the parameters at save time, no format."""
    state = {key: value for key, value in vars(clf).items()
             if not key.startswith("_") and key != "module_"}
    if isinstance(clf, TopKClassifier):
        state.pop("class_counts_")
    # Parameters that sktopk 0.1 did not have.
    for name in ("monitor", "lr_schedule", "warmup_epochs", "drw_start", "ce_weight",
                 "logit_adjustment", "logit_adjustment_"):
        state.pop(name, None)
    state["_module_weights"] = {name: tensor.numpy().copy()
                                for name, tensor in clf.module_.state_dict().items()}
    state["_seeds"] = {"init": 1, "shuffle": 2, "loss": 3, "split": 4}
    return state


def test_files_of_format_1_load_or_fail_naming_the_version(data):
    X, y = data
    # sktopk 0.1 had no post-hoc adjustment.
    clf = ImbalancedTopKClassifier(k=2, logit_adjustment=0.0, random_state=0, **FAST).fit(X, y)
    expected = clf.decision_function(X)
    old = ImbalancedTopKClassifier.__new__(ImbalancedTopKClassifier)
    old.__setstate__(_format_1_state(clf))
    np.testing.assert_array_equal(old.decision_function(X), expected)
    assert old.get_params()["monitor"] == ImbalancedTopKClassifier().monitor
    assert hasattr(old, "predict_proba") is False
    old.partial_fit(X, y)  # and it keeps training

    mismatched = _format_1_state(clf)
    mismatched["hidden_layer_sizes"] = (3,)  # what 0.1 saved after set_params
    with pytest.raises(ValueError, match="saved by sktopk 0.1 after set_params"):
        ImbalancedTopKClassifier.__new__(ImbalancedTopKClassifier).__setstate__(mismatched)

    balanced = TopKClassifier(k=2, random_state=0, **FAST).fit(X, y)
    old = TopKClassifier.__new__(TopKClassifier)
    old.__setstate__(_format_1_state(balanced))
    np.testing.assert_array_equal(old.predict_topk(X), balanced.predict_topk(X))
    old.partial_fit(X, y)

    custom = TopKClassifier(k=2, module=CountingNet, random_state=0, **FAST).fit(X, y)
    with pytest.raises(ValueError, match="saved by sktopk 0.1 with a custom module"):
        TopKClassifier.__new__(TopKClassifier).__setstate__(_format_1_state(custom))


def test_pickle_holds_no_torch_object_even_with_callbacks(data):
    from skorch.callbacks import LRScheduler

    X, y = data
    clf = TopKClassifier(k=2, random_state=0,
                         callbacks=[("lr", LRScheduler(policy="StepLR", step_size=1))],
                         **FAST).fit(X, y)
    blob = pickle.dumps(clf)
    assert b"torch" not in blob
    sio = pytest.importorskip("skops.io")
    saved = sio.dumps(clf)
    loaded = sio.loads(saved, trusted=sio.get_untrusted_types(data=saved))
    np.testing.assert_array_equal(loaded.predict(X), clf.predict(X))


@pytest.mark.parametrize("make", [lambda: torch.nn.LSTM(3, 4, num_layers=2),
                                  lambda: torch.nn.GRU(3, 4, bidirectional=True)],
                         ids=["lstm", "gru"])
def test_recurrent_layers_round_trip(make):
    # torch's RNN layers keep lists of (weak references to) their own weights.
    torch.manual_seed(0)
    net = make()
    rebuilt = module_from_state(module_to_state(net))
    x = torch.randn(5, 2, 3)
    torch.testing.assert_close(rebuilt(x)[0], net(x)[0], rtol=0, atol=0)
    rebuilt(x)[0].sum().backward()  # the relinked weights are the trained ones
    assert all(p.grad is not None for p in rebuilt.parameters())
    blob = pickle.dumps(module_to_state(net))
    torch.testing.assert_close(module_from_state(pickle.loads(blob))(x)[0], net(x)[0])


def test_torch_dtype_and_device_attributes_round_trip():
    class Typed(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = torch.nn.Linear(3, 2)
            self.compute_dtype, self.home = torch.float64, torch.device("cpu")

    rebuilt = module_from_state(module_to_state(Typed()))
    assert rebuilt.compute_dtype is torch.float64 and rebuilt.home == torch.device("cpu")


def test_hooks_and_parametrizations_are_refused_at_save_time():
    hooked = torch.nn.Linear(3, 2)
    hooked.register_forward_hook(lambda module, args, output: 10 * output)
    with pytest.raises(TypeError, match="forward_hooks"):
        module_to_state(torch.nn.Sequential(hooked))
    normed = torch.nn.utils.parametrizations.weight_norm(torch.nn.Linear(3, 2))
    with pytest.raises(TypeError, match="parametrized"):
        module_to_state(normed)


def test_a_file_attribute_hiding_a_method_is_refused():
    # A state naming a function under "to" would have it called by __setstate__.
    state = module_to_state(torch.nn.Linear(3, 2))
    state["attributes"]["to"] = print
    with pytest.raises(TypeError, match=r"\['to'\] that would hide methods"):
        module_from_state(state)


def test_models_from_devices_this_machine_lacks_load_on_one_it_has(monkeypatch):
    from sktopk._classifier import _loadable_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert _loadable_device("cuda:1") == "cpu"
    if not torch.backends.mps.is_available():
        assert _loadable_device("mps") == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert _loadable_device("cuda:1") == "cuda"
    assert _loadable_device("cuda:0") == "cuda:0" and _loadable_device("cpu") == "cpu"


def test_a_tampered_format_version_is_a_clear_error(data):
    X, y = data
    state = TopKClassifier(k=2, random_state=0, **FAST).fit(X, y).__getstate__()
    state["_sktopk_format"] = "3"
    with pytest.raises(TypeError, match="not a version number"):
        TopKClassifier.__new__(TopKClassifier).__setstate__(state)


@pytest.mark.parametrize("name", ["_forward_hooks", "_compiled_call_impl", "forward"])
def test_a_file_setting_torch_internals_is_refused(name):
    state = module_to_state(torch.nn.Linear(3, 2))
    state["attributes"][name] = print
    with pytest.raises(TypeError, match="not one sktopk wrote"):
        module_from_state(state)


def test_the_scoring_cache_follows_repeated_weight_replacements(data):
    # Replaced storages may be freed and their addresses reused: the cache must
    # not mistake new weights at an old address for the weights it was made from.
    X, y = data
    clf = TopKClassifier(k=2, random_state=0, **FAST).fit(X, y)
    gen = torch.Generator().manual_seed(0)
    for _ in range(10):
        vector = torch.nn.utils.parameters_to_vector(clf.module_.parameters())
        torch.nn.utils.vector_to_parameters(torch.randn(vector.shape, generator=gen),
                                            clf.module_.parameters())
        np.testing.assert_array_equal(clf.decision_function(X),
                                      pickle.loads(pickle.dumps(clf)).decision_function(X))


def test_instance_attributes_named_like_torch_class_settings_round_trip():
    # Plain values under names torch also uses at class level (_version) load;
    # the compiled forward of Module.compile() is a cache, not saved.
    net = torch.nn.Linear(3, 2)
    net._version = 2
    net._compiled_call_impl = lambda *args: None
    rebuilt = module_from_state(pickle.loads(pickle.dumps(module_to_state(net))))
    assert rebuilt._version == 2 and "_compiled_call_impl" not in vars(rebuilt)
    x = torch.randn(4, 3)
    torch.testing.assert_close(rebuilt(x), torch.nn.functional.linear(x, net.weight, net.bias))
