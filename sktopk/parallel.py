"""Run sktopk model selection on a Dask cluster: a local cluster with one worker per GPU.

scikit-learn's searches (``GridSearchCV``, ``cross_validate``...) parallelise
through joblib, and joblib runs on a ``dask.distributed`` cluster inside
``joblib.parallel_config(backend="dask")``. Each sktopk fit then runs as a task
on a worker, with one torch thread, on the GPU the worker sees.
:func:`distributed.LocalCluster` gives every worker the same environment, so on
a machine with several GPUs every worker would train on GPU 0;
:func:`make_local_cluster` starts one single-threaded worker process per GPU,
each seeing only its own through ``CUDA_VISIBLE_DEVICES``.

Needs ``dask[distributed]`` (``pip install sktopk[dask]``). See the user guide
page "Scaling out on a Dask cluster".
"""

import functools
import numbers
import os

__all__ = ["make_local_cluster"]


def make_local_cluster(n_workers=None, gpus=None, **kwargs):
    """Start a local Dask cluster of single-threaded worker processes, optionally one per GPU.

    Each worker is a separate process (restarted by its nanny if it dies) that
    runs one task, hence one sktopk fit, at a time with one torch thread. With
    ``gpus``, worker ``i`` sees only GPU ``gpus[i % len(gpus)]`` through
    ``CUDA_VISIBLE_DEVICES``, so an estimator with ``device="auto"`` (or
    ``"cuda"``) trains on that GPU, which it calls ``cuda:0``.

    Parameters
    ----------
    n_workers : int, default=None
        Number of worker processes. Defaults to the number of GPUs when ``gpus``
        is given, else to the number of CPU cores available to this process
        (``dask.system.CPU_COUNT``, which honours the affinity mask and a
        container's CPU quota).
        With more workers than GPUs, the GPUs are shared round-robin.
    gpus : int, str or sequence of (int or str), default=None
        GPUs to give the workers. ``None``: no GPU assignment (workers inherit
        this process's ``CUDA_VISIBLE_DEVICES``, so with ``device="auto"`` they
        all train on the same first GPU; pass ``device="cpu"`` for CPU-only
        workers). An int ``n``: the first ``n`` GPUs this process sees (the
        first ``n`` entries of its ``CUDA_VISIBLE_DEVICES`` when set, else
        ``0 .. n - 1``). A sequence, or a comma-separated string: the device
        indices or UUIDs as ``CUDA_VISIBLE_DEVICES`` understands them, e.g.
        ``[0, 2]`` or ``"GPU-5e1f...,GPU-77a0..."``.
    **kwargs
        Passed to :class:`distributed.LocalCluster` (``host``,
        ``dashboard_address``, ``memory_limit``, ``env``...), except
        ``threads_per_worker``, ``processes`` and ``worker_class``, which this
        layout fixes (use ``LocalCluster`` directly for other layouts).

    Returns
    -------
    cluster : distributed.LocalCluster
        The running cluster; connect with ``distributed.Client(cluster)`` and
        close it (or use it as a context manager) when done.

    Raises
    ------
    ImportError
        If ``dask[distributed]`` is not installed.
    ValueError
        If ``n_workers`` or ``gpus`` is not valid, or asks for GPUs that torch
        does not see: ``gpus`` when ``torch.cuda.device_count()`` is 0 (no GPU,
        or a CPU-only torch), an int ``gpus`` larger than that count or than
        this process's ``CUDA_VISIBLE_DEVICES`` list, or a device index at or
        beyond that count.

    See Also
    --------
    distributed.LocalCluster : The general local cluster.

    Notes
    -----
    ``CUDA_VISIBLE_DEVICES`` must be set before CUDA is initialised in a
    process; the nanny sets it in the environment of the worker process it
    spawns, and again when it restarts a worker that died, so a replacement
    worker keeps its GPU. The nannies also set ``OMP_NUM_THREADS=1``,
    ``MKL_NUM_THREADS=1`` and ``OPENBLAS_NUM_THREADS=1`` (Dask's
    ``distributed.nanny.pre-spawn-environ``) for their workers, and sktopk caps
    torch at one thread during each fit in a worker.

    Dask sets those variables in the calling process as well, just before
    spawning each worker, and leaves them set: sktopk fits run afterwards in
    this process (such as a search's final refit) use one torch thread, unless
    ``OMP_NUM_THREADS`` is removed from ``os.environ`` again.

    The GPUs are checked against ``torch.cuda.device_count()`` in the calling
    process (it reads the driver through NVML where it can, without
    initialising CUDA). When this process's ``CUDA_VISIBLE_DEVICES`` is set, the
    entries of an explicit ``gpus`` list are physical indices or UUIDs, some of
    which it may hide: then only the presence of a GPU is checked.

    Examples
    --------
    One worker per GPU on a machine with 4 GPUs, for a grid search:

    >>> import joblib
    >>> from distributed import Client  # doctest: +SKIP
    >>> from sklearn.model_selection import GridSearchCV
    >>> from sktopk import TopKClassifier
    >>> from sktopk.metrics import make_top_k_scorer
    >>> from sktopk.parallel import make_local_cluster
    >>> with make_local_cluster(gpus=4) as cluster, Client(cluster):  # doctest: +SKIP
    ...     with joblib.parallel_config(backend="dask"):
    ...         search = GridSearchCV(TopKClassifier(device="auto"),
    ...                               {"k": [1, 3, 5], "epsilon": [0.1, 1.0]},
    ...                               scoring=make_top_k_scorer(5), n_jobs=-1).fit(X, y)
    """
    try:
        from dask.system import CPU_COUNT
        from distributed import LocalCluster
    except ImportError as exc:  # pragma: no cover - the test extra installs it
        raise ImportError(
            "make_local_cluster needs dask.distributed: pip install 'sktopk[dask]'."
        ) from exc

    fixed = sorted({"threads_per_worker", "processes", "worker_class"} & set(kwargs))
    if fixed:
        raise TypeError(
            f"make_local_cluster fixes {', '.join(fixed)} (one single-threaded worker "
            "process per GPU or core); use distributed.LocalCluster for other layouts."
        )
    devices = _resolve_gpus(gpus)
    if devices:
        _check_gpus_exist(gpus, devices)
    if n_workers is None:
        n_workers = len(devices) if devices else CPU_COUNT
    if (isinstance(n_workers, bool) or not isinstance(n_workers, numbers.Integral)
            or n_workers < 1):
        raise ValueError(f"n_workers must be an integer >= 1, got {n_workers!r}.")
    options = {"n_workers": int(n_workers), "threads_per_worker": 1, "processes": True}
    if devices:
        options["worker_class"] = _gpu_nanny_class()
        options["visible_devices"] = devices
    return LocalCluster(**options, **kwargs)


def _resolve_gpus(gpus):
    """The ``CUDA_VISIBLE_DEVICES`` entry of each GPU, as a tuple of str (empty: no GPUs)."""
    if gpus is None:
        return ()
    if isinstance(gpus, bool):
        raise ValueError(f"gpus must be None, an int, a str or a sequence, got {gpus!r}.")
    if isinstance(gpus, numbers.Integral):
        if gpus < 1:
            raise ValueError(f"gpus must be >= 1 when it is an int, got {gpus}.")
        inherited = os.environ.get("CUDA_VISIBLE_DEVICES")
        if inherited is None:
            return tuple(str(i) for i in range(gpus))
        visible = _split_devices(inherited)
        if gpus > len(visible):
            raise ValueError(
                f"gpus={gpus} but this process's CUDA_VISIBLE_DEVICES={inherited!r} lists "
                f"{len(visible)} GPU(s); pass the devices to use explicitly."
            )
        return visible[:gpus]
    if isinstance(gpus, str):
        devices = _split_devices(gpus)
    else:
        try:
            devices = tuple(str(g).strip() for g in gpus)
        except TypeError:
            raise ValueError(
                f"gpus must be None, an int, a str or a sequence, got {gpus!r}."
            ) from None
    if not devices or not all(devices):
        raise ValueError(f"gpus must name at least one device and no empty one, got {gpus!r}.")
    return devices


def _visible_gpu_count():
    """Number of CUDA GPUs torch can use in this process (0 with a CPU-only torch)."""
    import torch

    return torch.cuda.device_count()


def _check_gpus_exist(gpus, devices):
    """Raise unless torch sees the GPUs that ``gpus`` (resolved to ``devices``) names.

    Workers pinned to absent GPUs would start, see no GPU, and train on the CPU
    (``device="auto"``) or fail at their first fit (``device="cuda"``).
    """
    count = _visible_gpu_count()
    inherited = os.environ.get("CUDA_VISIBLE_DEVICES")
    seen = (f"torch sees {count} GPU(s) in this process (torch.cuda.device_count()"
            + (f", with CUDA_VISIBLE_DEVICES={inherited!r})" if inherited is not None else ")"))
    if count == 0:
        raise ValueError(
            f"gpus={gpus!r} but {seen}: no GPU to give the workers. Leave gpus=None for "
            "CPU workers (and pass device='cpu' to the estimators), or install a CUDA "
            "build of torch."
        )
    if isinstance(gpus, numbers.Integral) and gpus > count:
        raise ValueError(
            f"gpus={gpus} but {seen}: pass gpus={count} or fewer; use n_workers to run "
            "several workers per GPU."
        )
    if inherited is None:
        # Without a parent CUDA_VISIBLE_DEVICES, indices are torch's own device indices.
        absent = [d for d in devices if d.isdigit() and int(d) >= count]
        if absent:
            raise ValueError(
                f"gpus={gpus!r} names device index(es) {', '.join(absent)} but {seen}, "
                f"indices 0 to {count - 1}."
            )


def _split_devices(value):
    return tuple(part.strip() for part in value.split(",") if part.strip())


@functools.cache
def _gpu_nanny_class():
    """A Nanny that gives its worker process the GPU matching the worker's name.

    LocalCluster names its workers 0, 1, 2... and builds every one from the same
    options; the nanny turns the name into the worker's own ``CUDA_VISIBLE_DEVICES``
    (kept when it restarts the worker, and when the cluster is scaled).
    """
    from distributed import Nanny

    class OneGPUNanny(Nanny):
        def __init__(self, *args, visible_devices, name=None, env=None, **kwargs):
            env = dict(env or {})
            env["CUDA_VISIBLE_DEVICES"] = visible_devices[
                _worker_index(name) % len(visible_devices)]
            super().__init__(*args, name=name, env=env, **kwargs)

    return OneGPUNanny


def _worker_index(name):
    try:
        return int(name)
    except (TypeError, ValueError):
        raise ValueError(
            f"Cannot assign a GPU to the worker named {name!r}: make_local_cluster's "
            "workers are named 0, 1, 2..."
        ) from None
