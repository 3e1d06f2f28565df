"""The sparse CPU kernel of another source file against this checkout's, interleaved in one process.

Both kernels are built (cached like the package's own), then called alternately
on the same scores with the same sizes and seed, and the median of each is
printed with their ratio. Calls alternate so that machine noise hits both alike;
``--new-first`` swaps the order within a round (the first call of a round can
find colder caches). The score sets are the trained-network and cosine scores
that ``bench_losses.py --regime trained/cosine --cache DIR`` saves; the sizes
(m, pool) are the rule's choice for each set.

Usage::

    git show aee087a:sktopk/_cpu_kernel.c > /tmp/old.c
    python benchmarks/ab_kernel.py /tmp/old.c --cache /tmp/scores
    python benchmarks/ab_kernel.py /tmp/old.c --cache /tmp/scores --new-first

The two sources draw other numbers when the kernel's use of its random streams
changed; the ratio compares their cost only.
"""

import argparse
import ctypes
import os
import statistics
import time
from pathlib import Path

import torch

from sktopk import _cpu_kernel
from sktopk._sparse_perturbed import _subset_top, choose_sampler

# (file saved by bench_losses.py --cache, epsilon): trained scores at epsilon 1,
# cosine scores at the imbalanced loss's epsilon (margins left out: the kernel
# sees the scores only).
CASES = [("scores_cities_None_linear_1024.pt", 1.0), ("scores_clusters_1000_linear_1024.pt", 1.0),
         ("scores_clusters_10000_linear_1024.pt", 1.0),
         ("scores_clusters_1000_cosine_1024.pt", 0.01),
         ("scores_clusters_10000_cosine_1024.pt", 0.01)]


def load_library(source):
    """The kernel library built from ``source`` (the package's loader, pointed elsewhere).

    Only the sparse entry point is declared: an older source lacks later ones.
    """
    saved = (_cpu_kernel._SOURCE, _cpu_kernel._library, _cpu_kernel._reason,
             _cpu_kernel._declare)
    try:
        _cpu_kernel._SOURCE, _cpu_kernel._library, _cpu_kernel._reason = Path(source), None, None
        _cpu_kernel._declare = lambda library: library
        library = _cpu_kernel.library()
        if library is None:
            raise SystemExit(f"{source}: {_cpu_kernel.unavailable_reason()}")
    finally:
        (_cpu_kernel._SOURCE, _cpu_kernel._library, _cpu_kernel._reason,
         _cpu_kernel._declare) = saved
    function = library.sktopk_kth_perturbed_sparse_f32
    function.argtypes = ([ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_double,
                          ctypes.c_int64, ctypes.c_uint64, ctypes.c_int64, ctypes.c_int64,
                          ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p, ctypes.c_void_p])
    function.restype = ctypes.c_int
    return library


def time_call(library, x, k, epsilon, n_draws, m, pool):
    """Seconds of one sparse kernel call on all rows of float32 ``x``."""
    n_rows, n_columns = x.shape
    values = torch.empty(n_rows)
    indices = torch.empty((n_rows, n_draws), dtype=torch.long)
    start = time.perf_counter()
    status = library.sktopk_kth_perturbed_sparse_f32(
        x.data_ptr(), n_columns, k, epsilon, n_draws, 12345, 0, n_rows, m, pool,
        values.data_ptr(), indices.data_ptr())
    elapsed = time.perf_counter() - start
    if status != 0:
        raise SystemExit(f"the kernel returned {status}")
    return elapsed


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("old_source", help="the other kernel's C source")
    parser.add_argument("--cache", required=True, help="directory of bench_losses.py's scores")
    parser.add_argument("--rounds", type=int, default=25)
    parser.add_argument("--k", type=int, default=6, help="the kernel's k (the loss's k + 1)")
    parser.add_argument("--draws", type=int, default=10)
    parser.add_argument("--new-first", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    new = _cpu_kernel.library()
    old = load_library(args.old_source)
    order = [("new", new), ("old", old)] if args.new_first else [("old", old), ("new", new)]
    print(f"| scores | (m, pool) | old ms | new ms | new / old |  ({args.rounds} rounds, "
          f"{'new' if args.new_first else 'old'} first)")
    print("|---|---|---|---|---|")
    for name, epsilon in CASES:
        path = os.path.join(args.cache, name)
        if not os.path.exists(path):
            print(f"| {name} | - | missing: run bench_losses.py with --cache first |")
            continue
        x = torch.load(path)[0].float().contiguous()
        path_taken, sizes = choose_sampler(_subset_top(x, args.k), args.k, epsilon, args.draws,
                                           x.shape[1], n_rows=x.shape[0], kernel=True)
        if path_taken != "sparse":
            print(f"| {name} | dense | - | - | - |")
            continue
        times = {"old": [], "new": []}
        for _ in range(args.rounds):
            for label, library in order:
                times[label].append(time_call(library, x, args.k, epsilon, args.draws, *sizes))
        old_ms, new_ms = (1e3 * statistics.median(times[label]) for label in ("old", "new"))
        print(f"| {name} | {sizes} | {old_ms:.3f} | {new_ms:.3f} | {new_ms / old_ms:.3f} |")


if __name__ == "__main__":
    main()
