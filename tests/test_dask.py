"""sktopk model selection on a dask.distributed cluster (CPU only, loopback only).

One module-scoped LocalCluster of 2 single-threaded worker processes serves every
test; each distributed result is compared with the same search run serially.
The last test kills a worker in the middle of a search.
"""

import itertools
import os
import signal
import threading
import time

import joblib
import numpy as np
import pytest
import torch
from sklearn.model_selection import GridSearchCV, StratifiedKFold, cross_validate
from skorch.callbacks import Callback

import sktopk.parallel
from sktopk import ImbalancedTopKClassifier, TopKClassifier
from sktopk._training import thread_budget
from sktopk.metrics import make_top_k_scorer
from sktopk.parallel import _gpu_nanny_class, _resolve_gpus, make_local_cluster

distributed = pytest.importorskip("distributed")
dask = pytest.importorskip("dask")

PARAMS = {"hidden_layer_sizes": (16,), "max_epochs": 5, "batch_size": 32, "random_state": 0,
          "device": "cpu"}
GRID = {"k": [1, 3], "epsilon": [0.1, 1.0]}
N_SPLITS = 3
# Loopback only; "127.0.0.1:0": the scheduler's HTTP endpoints on a free loopback port
# (with dashboard_address=None it would still take 8787, and ":0" means every interface).
LOOPBACK = {"host": "127.0.0.1", "dashboard_address": "127.0.0.1:0"}


# ------------------------------------------------------------------ helpers
class Pace(Callback):
    """Sleep after every epoch: a fit lasts a known wall time without using the CPU."""

    def __init__(self, seconds=0.1):
        self.seconds = seconds

    def on_epoch_end(self, net, **kwargs):
        time.sleep(self.seconds)


class ThreadProbe(Callback):
    """Record torch's intra-op thread count at every training batch."""

    def __init__(self):
        self.seen = []

    def on_batch_begin(self, net, batch=None, training=False, **kwargs):
        self.seen.append(torch.get_num_threads())


def _search(estimator, cv, **kwargs):
    return GridSearchCV(estimator, GRID, scoring=make_top_k_scorer(5), cv=cv,
                        error_score="raise", **kwargs)


def _assert_same_search(search, reference):
    assert search.best_params_ == reference.best_params_
    for i in range(N_SPLITS):
        key = f"split{i}_test_score"
        assert np.isfinite(search.cv_results_[key]).all()
        np.testing.assert_allclose(search.cv_results_[key], reference.cv_results_[key],
                                   rtol=0, atol=1e-6, err_msg=key)
    np.testing.assert_array_equal(search.cv_results_["rank_test_score"],
                                  reference.cv_results_["rank_test_score"])


def _fit_keys(keys):
    return [key for key in keys if "_fit_and_score" in str(key)]


def _fit_in_worker(X, y):
    """Runs as a dask task: fit with torch allowed 2 threads, report the threads used."""
    initial = torch.get_num_threads()
    # As if the worker had not been started by a nanny (which sets OMP_NUM_THREADS=1):
    # torch would use every core, and the fit must bring it down to the worker's share.
    torch.set_num_threads(2)
    try:
        clf = TopKClassifier(**PARAMS, callbacks=[("probe", ThreadProbe())]).fit(X, y)
        probe = dict(clf._net.callbacks_)["probe"]  # the fit's copy of the callback
        return {"initial": initial, "omp": os.environ.get("OMP_NUM_THREADS"),
                "budget": thread_budget(), "during": set(probe.seen),
                "after": torch.get_num_threads()}
    finally:
        torch.set_num_threads(initial)


def _worker_view(dask_worker):
    """What a worker process sees (``client.run`` passes its Worker as ``dask_worker``)."""
    return {"cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
            "nthreads": dask_worker.state.nthreads, "pid": os.getpid()}


def _worker_names(dask_scheduler):
    return {address: worker.name for address, worker in dask_scheduler.workers.items()}


def _views_by_name(client):
    names = client.run_on_scheduler(_worker_names)
    return {names[address]: {**view, "address": address}
            for address, view in client.run(_worker_view).items()}


# ----------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def data():
    """12 overlapping classes, 240 samples."""
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(12), 20)
    X = rng.normal(scale=1.5, size=(12, 6))[y] + rng.normal(size=(len(y), 6))
    return X, y


@pytest.fixture(scope="module")
def splits(data):
    return list(StratifiedKFold(N_SPLITS, shuffle=True, random_state=0).split(*data))


@pytest.fixture(scope="module")
def serial_search(data):
    """The reference: the same search, serial, in this process with one torch thread.

    Workers train with one thread; so does the reference, so that the comparison
    tests the distribution and not float summation order across thread counts.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        cv = StratifiedKFold(N_SPLITS, shuffle=True, random_state=0)
        return _search(TopKClassifier(**PARAMS), cv).fit(*data)
    finally:
        torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def client():
    """2 single-threaded worker processes, started by make_local_cluster.

    That is ``LocalCluster(n_workers=2, threads_per_worker=1, processes=True)``
    whose nannies also give worker 0 ``CUDA_VISIBLE_DEVICES=3`` and worker 1
    ``CUDA_VISIBLE_DEVICES=5``: GPUs this machine need not have, harmless for the
    ``device="cpu"`` fits here, and they let one cluster also check the GPU layout.
    make_local_cluster refuses GPUs that torch does not see, so it is told here
    that this process sees 8.
    """
    # Each nanny also sets OMP_NUM_THREADS=1 etc. in *this* process before it spawns
    # its worker (distributed.nanny.pre-spawn-environ): restore them for later tests.
    environ = dict(os.environ)
    try:
        # A task may be lost with its worker this many times and still be rerun
        # elsewhere (3 is dask's default; the fault test needs >= 1).
        with dask.config.set({"distributed.scheduler.allowed-failures": 3}):
            with pytest.MonkeyPatch.context() as patch:
                patch.setattr(sktopk.parallel, "_visible_gpu_count", lambda: 8)
                patch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
                cluster = make_local_cluster(n_workers=2, gpus=["3", "5"], **LOOPBACK)
            with cluster, distributed.Client(cluster) as c:
                assert isinstance(cluster, distributed.LocalCluster)
                yield c
    finally:
        for name in set(os.environ) - set(environ):
            del os.environ[name]
        os.environ.update(environ)


# -------------------------------------------------------------------- tests
@pytest.mark.parametrize("scatter", [False, True], ids=["auto-scatter", "scatter-X-y"])
def test_grid_search_on_dask_equals_serial(client, data, serial_search, scatter):
    X, y = data
    options = {"scatter": [X, y]} if scatter else {}
    cv = StratifiedKFold(N_SPLITS, shuffle=True, random_state=0)
    with distributed.get_task_stream(client) as stream:
        with joblib.parallel_config(backend="dask", **options):
            search = _search(TopKClassifier(**PARAMS), cv, n_jobs=-1).fit(X, y)
    _assert_same_search(search, serial_search)
    # The fits really ran on the cluster's workers.
    fits = [task for task in stream.data if _fit_keys([task["key"]])]
    assert fits
    assert {task["worker"] for task in fits} <= set(client.scheduler_info()["workers"])


def test_cross_validate_imbalanced_estimators_come_back_from_workers(client, data):
    X, y = data
    scoring = {"top1": make_top_k_scorer(1), "macro_top5": make_top_k_scorer(5, average="macro")}
    cv = StratifiedKFold(N_SPLITS, shuffle=True, random_state=1)
    estimator = ImbalancedTopKClassifier(k=3, **PARAMS)
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        serial = cross_validate(estimator, X, y, scoring=scoring, cv=cv, return_estimator=True)
    finally:
        torch.set_num_threads(previous)
    with joblib.parallel_config(backend="dask"):
        remote = cross_validate(estimator, X, y, scoring=scoring, cv=cv, return_estimator=True,
                                n_jobs=-1)
    for name in scoring:
        np.testing.assert_allclose(remote[f"test_{name}"], serial[f"test_{name}"], atol=1e-6)
    # The fitted estimators were pickled on a worker and loaded here: same scores.
    for mine, theirs in zip(serial["estimator"], remote["estimator"], strict=True):
        np.testing.assert_allclose(theirs.decision_function(X), mine.decision_function(X),
                                   rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(theirs.margins_, mine.margins_)


def test_one_torch_thread_per_worker_during_fit(client, data):
    reports = [client.submit(_fit_in_worker, *data, workers=[address], pure=False)
               for address in client.scheduler_info()["workers"]]
    for report in client.gather(reports):
        assert report["omp"] == "1"  # set by the nanny (distributed.nanny.pre-spawn-environ)
        assert report["initial"] == 1
        assert report["budget"] == 1  # the worker's nthreads, read through get_worker()
        assert report["during"] == {1}  # capped during the fit although torch allowed 2
        assert report["after"] == 2  # and restored after it


def test_gpu_choice_of_make_local_cluster(monkeypatch):
    assert _resolve_gpus(None) == ()
    assert _resolve_gpus([0, "GPU-5e1f"]) == ("0", "GPU-5e1f")
    assert _resolve_gpus(" 2, 3 ") == ("2", "3")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert _resolve_gpus(2) == ("0", "1")
    # An int counts the GPUs this process sees, in its own CUDA_VISIBLE_DEVICES order.
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,6,7")
    assert _resolve_gpus(2) == ("4", "6")
    with pytest.raises(ValueError, match="lists 3 GPU"):
        _resolve_gpus(4)
    for bad in (0, -1, True, [], "", [0, ""], 1.5):
        with pytest.raises(ValueError):
            _resolve_gpus(bad)
    with pytest.raises(ValueError, match="n_workers"):
        make_local_cluster(n_workers=0)
    with pytest.raises(TypeError, match="threads_per_worker"):
        make_local_cluster(n_workers=1, threads_per_worker=2)
    # More workers than GPUs: shared round-robin, by worker name.
    nanny = _gpu_nanny_class()
    assert [nanny("tcp://127.0.0.1:1", visible_devices=("3", "5"), name=i).env[
        "CUDA_VISIBLE_DEVICES"] for i in range(3)] == ["3", "5", "3"]


def _cluster_must_not_start(**kwargs):
    raise AssertionError("LocalCluster started although the GPUs were refused")


@pytest.mark.parametrize(
    ("n_gpus", "environ", "gpus", "match"),
    [
        (0, None, 4, r"gpus=4 but torch sees 0 GPU\(s\).*Leave gpus=None"),
        (0, None, [0], r"torch sees 0 GPU\(s\)"),
        (0, None, "GPU-5e1f", r"torch sees 0 GPU\(s\)"),
        (0, "", [0], r"torch sees 0 GPU\(s\) in this process .*CUDA_VISIBLE_DEVICES=''"),
        (2, None, 4, r"gpus=4 but torch sees 2 GPU\(s\).*pass gpus=2 or fewer"),
        (2, None, [1, 2, 5], r"names device index\(es\) 2, 5 .*indices 0 to 1"),
        (2, "0,1,2", 3, r"gpus=3 but torch sees 2 GPU\(s\) .*CUDA_VISIBLE_DEVICES='0,1,2'"),
    ],
)
def test_make_local_cluster_refuses_absent_gpus(monkeypatch, n_gpus, environ, gpus, match):
    monkeypatch.setattr(sktopk.parallel, "_visible_gpu_count", lambda: n_gpus)
    monkeypatch.setattr(distributed, "LocalCluster", _cluster_must_not_start)
    if environ is None:
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    else:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", environ)
    with pytest.raises(ValueError, match=match):
        make_local_cluster(gpus=gpus, **LOOPBACK)


def test_make_local_cluster_accepts_the_gpus_torch_sees(monkeypatch):
    started = []
    monkeypatch.setattr(sktopk.parallel, "_visible_gpu_count", lambda: 2)
    monkeypatch.setattr(distributed, "LocalCluster", lambda **kwargs: started.append(kwargs))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    make_local_cluster(gpus=2)
    make_local_cluster(n_workers=4, gpus=[1])
    make_local_cluster(gpus="GPU-5e1f")  # a UUID: checked only for a GPU being there
    assert [(o["n_workers"], o["visible_devices"]) for o in started] == [
        (2, ("0", "1")), (4, ("1",)), (1, ("GPU-5e1f",))]
    # The parent's CUDA_VISIBLE_DEVICES hides physical indices: any is allowed.
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,6")
    make_local_cluster(gpus=[7])
    assert started[-1]["visible_devices"] == ("7",)


def test_make_local_cluster_uses_torchs_gpu_count():
    assert sktopk.parallel._visible_gpu_count() == torch.cuda.device_count()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_make_local_cluster_on_a_machine_without_gpus():
    """The issue's case, unpatched: gpus=4 where torch sees no GPU starts nothing."""
    assert sktopk.parallel._visible_gpu_count() == 0
    with pytest.raises(ValueError, match="gpus=4 but torch sees 0 GPU"):
        make_local_cluster(gpus=4, **LOOPBACK)


def test_make_local_cluster_gives_each_worker_its_gpu(client):
    views = _views_by_name(client)
    assert sorted(views) == [0, 1]
    assert [views[i]["cuda_visible_devices"] for i in (0, 1)] == ["3", "5"]
    assert all(view["nthreads"] == 1 for view in views.values())


def _wait_until_forgotten(client, arrays, timeout=30):
    from dask.base import tokenize

    keys = {f"{type(array).__name__}-{tokenize(array)}" for array in arrays}

    def present(dask_scheduler, keys=keys):
        return [key for key in keys if key in dask_scheduler.tasks]

    deadline = time.monotonic() + timeout
    while client.run_on_scheduler(present) and time.monotonic() < deadline:
        time.sleep(0.05)


def test_search_survives_a_worker_killed_mid_search(client, data, splits, serial_search):
    """SIGKILL a worker while it runs fits; the scheduler reruns them elsewhere.

    The recipe that makes this safe (see docs/scaling_out.rst): every array the
    fits read is scattered to all workers up front (X, y and the CV index arrays,
    hence ``cv=splits``), and the active memory manager, which would drop those
    replicas down to one, is stopped. Otherwise the data joblib scatters can
    live on the killed worker only, and the search dies with FutureCancelledError.
    """
    X, y = data
    pids = client.run(os.getpid)
    # Each fit lasts >= 5 epochs x 0.1 s, so the 12 fits keep both workers busy
    # for >= 3 s: the kill lands after some fits, while others run or wait.
    search = _search(TopKClassifier(**PARAMS, callbacks=[("pace", Pace(0.1))]), splits,
                     n_jobs=-1)
    scatter = [X, y, *itertools.chain.from_iterable(splits)]
    outcome = {}

    def run_search():
        try:
            with joblib.parallel_config(backend="dask", scatter=scatter):
                search.fit(X, y)
        except BaseException as exc:  # re-raised in the test's thread
            outcome["error"] = exc

    client.amm.stop()
    # scatter names arrays by their content: an earlier test's scatter of the same
    # arrays, still being forgotten by the scheduler, would make this one's data
    # "lost" before any kill (dask/distributed#3703). Wait until it is gone.
    _wait_until_forgotten(client, scatter)
    try:
        runner = threading.Thread(target=run_search, daemon=True)
        runner.start()
        # Kill a worker that is running a fit once 2 fits have finished.
        victim, seen, deadline = None, set(), time.monotonic() + 30
        while victim is None and time.monotonic() < deadline and runner.is_alive():
            processing = {address: _fit_keys(keys)
                          for address, keys in client.processing().items()}
            running = set(itertools.chain.from_iterable(processing.values()))
            seen |= running
            busy = [address for address, keys in processing.items() if keys]
            if len(seen - running) >= 2 and busy:
                victim = busy[0]
            else:
                time.sleep(0.02)
        assert victim is not None, ("no worker was running a fit after 2 fits within 30 s; "
                                    f"the search's error, if any: {outcome.get('error')!r}")
        os.kill(pids[victim], signal.SIGKILL)
        runner.join(timeout=120)
        assert not runner.is_alive(), "the search did not finish within 120 s of the kill"
    finally:
        client.amm.start()
    if "error" in outcome:
        raise outcome["error"]

    removals = [msg for _, msg in client.get_events(victim)
                if isinstance(msg, dict) and msg.get("action") == "remove-worker"]
    assert removals, "the scheduler did not see the worker die"
    assert _fit_keys(removals[-1]["processing-tasks"]), "no fit was lost with the worker"
    assert not removals[-1]["lost-scattered-tasks"]
    # Every candidate scored on every split, as in the serial run.
    _assert_same_search(search, serial_search)
    # The nanny restarted the killed worker, with the same GPU.
    deadline = time.monotonic() + 60
    while len(names := client.run_on_scheduler(_worker_names)) < 2 or victim in names:
        assert time.monotonic() < deadline, "the killed worker was not restarted in 60 s"
        time.sleep(0.1)
    views = _views_by_name(client)
    assert pids[victim] not in {view["pid"] for view in views.values()}
    assert [views[i]["cuda_visible_devices"] for i in (0, 1)] == ["3", "5"]
