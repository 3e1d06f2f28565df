"""Wall time of one GridSearchCV of TopKClassifier: serial, joblib/loky processes, Dask workers.

Problem: a grid of 6 candidates (``k`` in {1, 3, 5} x ``epsilon`` in {0.1, 1.0})
with 3-fold stratified CV, i.e. 18 fits of an MLP (hidden layer 64, 10 epochs,
batch 64, no early stopping) on ``--n-samples`` x 20 features, 20 classes, scored
by ``make_top_k_scorer(5)``; the refit on the full data is included. Setups:

- ``serial``: ``n_jobs=None`` in this process, torch with its default threads
  (all cores);
- ``serial, 1 thread``: the same with ``torch.set_num_threads(1)``;
- ``loky``: ``n_jobs=2`` (joblib's default backend: 2 worker processes, each
  limited to ``cpu_count // 2`` threads by joblib);
- ``dask``: ``n_jobs=-1`` under ``joblib.parallel_config(backend="dask",
  scatter=[X, y])`` on ``sktopk.parallel.make_local_cluster(n_workers=2)``
  (2 single-threaded worker processes, loopback only).

The refit runs in this process; it gets 1 torch thread in every setup but the
first, like the fits on the workers.

Each setup runs once untimed (process start, imports), then ``--repeats`` times,
the setups interleaved round by round so that load from other processes
spreads over all of them; the table gives the median, min and max wall time,
the speed-up of the median over ``serial, 1 thread``, and the largest
difference of the CV scores from that run (0 means the same search).

Usage::

    python benchmarks/bench_dask.py                # about 2-4 minutes on 2 busy cores
    python benchmarks/bench_dask.py --repeats 5 --n-samples 3000
"""

import argparse
import os
import platform
import statistics
import time

import joblib
import numpy as np
import torch
from sklearn.model_selection import GridSearchCV, StratifiedKFold

from sktopk import TopKClassifier
from sktopk.metrics import make_top_k_scorer

N_FEATURES, N_CLASSES = 20, 20
GRID = {"k": [1, 3, 5], "epsilon": [0.1, 1.0]}
PARAMS = {"hidden_layer_sizes": (64,), "max_epochs": 10, "batch_size": 64,
          "early_stopping": False, "device": "cpu", "random_state": 0}


def make_data(n_samples, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, N_CLASSES, n_samples)
    X = rng.normal(scale=1.0, size=(N_CLASSES, N_FEATURES))[y] + rng.normal(
        size=(n_samples, N_FEATURES))
    return X.astype(np.float32), y


def search(X, y, n_jobs):
    cv = StratifiedKFold(3, shuffle=True, random_state=0)
    return GridSearchCV(TopKClassifier(**PARAMS), GRID, scoring=make_top_k_scorer(5), cv=cv,
                        n_jobs=n_jobs, error_score="raise").fit(X, y)


def scores(fitted):
    return np.array([fitted.cv_results_[f"split{i}_test_score"] for i in range(3)])


def with_threads(threads, run):
    """Run ``run()`` with ``threads`` torch threads in this process (None: unchanged)."""
    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        return run()
    finally:
        torch.set_num_threads(previous)


def run_loky(X, y):
    with joblib.parallel_config(backend="loky"):
        return search(X, y, 2)


def run_dask(X, y):
    with joblib.parallel_config(backend="dask", scatter=[X, y]):
        return search(X, y, -1)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--n-samples", type=int, default=1500)
    args = parser.parse_args(argv)

    from distributed import Client

    from sktopk.parallel import make_local_cluster

    X, y = make_data(args.n_samples)
    environ = dict(os.environ)
    start = time.perf_counter()
    cluster = make_local_cluster(n_workers=2, host="127.0.0.1",
                                 dashboard_address="127.0.0.1:0")
    client = Client(cluster)
    cluster_start = time.perf_counter() - start
    # The nannies set OMP_NUM_THREADS=1 (and MKL_..., OPENBLAS_...) in this process
    # too before spawning their workers, and sktopk caps torch's threads at
    # OMP_NUM_THREADS: undo it, or "serial" would silently train with 1 thread.
    for name in set(os.environ) - set(environ):
        del os.environ[name]
    os.environ.update(environ)
    setups = {
        "serial": lambda: with_threads(None, lambda: search(X, y, None)),
        "serial, 1 thread": lambda: with_threads(1, lambda: search(X, y, None)),
        "loky, n_jobs=2": lambda: with_threads(1, lambda: run_loky(X, y)),
        "dask, 2 workers": lambda: with_threads(1, lambda: run_dask(X, y)),
    }
    times = {name: [] for name in setups}
    results, first = {}, {}
    try:
        for name, run in setups.items():
            begin = time.perf_counter()
            results[name] = run()
            first[name] = time.perf_counter() - begin
        load_before = os.getloadavg()[0]
        for _ in range(args.repeats):
            for name, run in setups.items():
                begin = time.perf_counter()
                results[name] = run()
                times[name].append(time.perf_counter() - begin)
        load_after = os.getloadavg()[0]
    finally:
        client.close()
        cluster.close()

    reference = results["serial, 1 thread"]
    base = statistics.median(times["serial, 1 thread"])
    print(f"# bench_dask: {platform.machine()}, {os.cpu_count()} CPU(s), torch "
          f"{torch.__version__} ({torch.get_num_threads()} threads by default), "
          f"1-minute load average {load_before:.1f} before / {load_after:.1f} after")
    print(f"# GridSearchCV: {len(reference.cv_results_['params'])} candidates x 3 folds + "
          f"refit, {args.n_samples} x {N_FEATURES}, {N_CLASSES} classes; wall seconds over "
          f"{args.repeats} runs after one untimed run; Dask cluster start "
          f"{cluster_start:.1f} s\n")
    print("| setup | median s | min s | max s | first run s | speed-up | max score diff "
          "| same best params |\n|---|---|---|---|---|---|---|---|")
    for name, values in times.items():
        median = statistics.median(values)
        diff = np.abs(scores(results[name]) - scores(reference)).max()
        same = results[name].best_params_ == reference.best_params_
        print(f"| {name} | {median:.2f} | {min(values):.2f} | {max(values):.2f} | "
              f"{first[name]:.2f} | {base / median:.2f}x | {diff:.1e} | {same} |")


if __name__ == "__main__":
    main()
