"""Fit the cost constants of the sampler="auto" rule (sktopk/_sparse_perturbed.py).

The rule compares the estimated cost of the dense path with that of the sparse
path for each (candidates m, pool) pair of its menu. Both are linear in a few
counts; this script times the two paths over a spread of shapes and score
regimes on one CPU thread and fits each coefficient by non-negative least
squares on the relative error (every call weighs the same, whatever its size).
Paste the printed constants into ``_sparse_perturbed.py``: the rule must stay a
fixed function of the call (never timed at run time), so that a seeded fit draws
the same numbers on every run.

Features of a sparse call (forward pass, the part that differs between paths):

- ``pool_scores = N * C`` and ``pool_slots = N * (pool + 1)``: the candidate pool;
- ``pool_rows = N``;
- ``candidates = N * B * m`` and ``pairs = N * B``: the perturbed candidates and
  their k-th largest;
- ``groups = N * B * (tiers + 1)``: the proposal rates of every group;
- ``proposals``: proposals actually drawn (counted here);
- one fixed cost per call.

With ``--kernel`` it fits the second model, that of the compiled CPU kernel
(``sktopk/_cpu_kernel.c``, used when it builds): both paths are timed in the
kernel; the proposals of a sparse call are counted on the torch sampler with
the same sizes (same law, so the same expected count).

Usage::

    python benchmarks/calibrate_sampler.py            # about 5 minutes
    python benchmarks/calibrate_sampler.py --kernel   # the kernel's constants
"""

import argparse
import itertools
import platform
import statistics
import time

import numpy as np
import torch
from scipy.optimize import nnls

from sktopk import _cpu_kernel
from sktopk import _sparse_perturbed as sparse
from sktopk._perturbed import kth_largest_perturbed_torch

SPARSE_FEATURES = ("pool_scores", "pool_slots", "pool_rows", "candidates", "pairs", "groups",
                   "proposals", "fixed")
DENSE_FEATURES = ("draws", "pairs", "fixed")


def _median_ms(fn, repeats):
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def _scores(regime, n_rows, n_columns, seed):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n_rows, n_columns, generator=gen)
    if regime == "peaked":  # a few classes well above a flat rest: a trained network
        x = 0.7 * x
        x[:, :8] += torch.linspace(5.0, 2.0, 8)
        return x[:, torch.randperm(n_columns, generator=gen)]
    return {"unit": 1.0, "wide": 3.0, "narrow": 0.5}[regime] * x


class _ProposalCounter:
    """Counts the proposals of the sparse sampler by wrapping its proposal draw."""

    def __init__(self):
        self.count = 0
        self._inner = sparse._geometric_proposals

    def __call__(self, *args):
        units, positions = self._inner(*args)
        self.count += units.numel()
        return units, positions

    def __enter__(self):
        sparse._geometric_proposals = self
        return self

    def __exit__(self, *exc):
        sparse._geometric_proposals = self._inner


def sparse_rows(repeats, k=6, b=10, kernel=False):
    rows = []
    for regime, n, c in itertools.product(("peaked", "unit", "wide", "narrow"), (256, 1024),
                                          (1000, 10000)):
        x = _scores(regime, n, c, seed=n + c)
        for m_factor, pool_factor in ((1, 1), (2, 1), (2, 8), (4, 1), (4, 8), (4, 32), (8, 1),
                                       (8, 4), (8, 16), (16, 1), (16, 8)):
            m, gen = k * m_factor, torch.Generator().manual_seed(0)
            pool = min(c - 1, m * pool_factor)
            with _ProposalCounter() as counter:
                sparse.kth_largest_perturbed_sparse(x, k, 1.0, b, gen, m=m, pool=pool)
            if counter.count > 40 * n * b * 10:  # far outside what "auto" would ever take
                continue

            def call(x=x, m=m, pool=pool, gen=gen, c=c):
                if kernel:
                    _cpu_kernel.kth_largest_perturbed_sparse_cpu(x, k, 1.0, b, gen, m=m,
                                                                 pool=pool)
                    return
                top = sparse.candidate_pool(x, min(pool + 1, c))
                sparse.kth_largest_perturbed_sparse(x, k, 1.0, b, gen, m=m, top=top, pool=pool)

            ms = _median_ms(call, repeats)
            groups = len(sparse.tier_edges(m, pool)) - 1 + (pool < c)
            rows.append({"regime": regime, "N": n, "C": c, "m": m, "pool": pool, "ms": ms,
                         "pool_scores": n * c, "pool_slots": n * (pool + 1), "pool_rows": n,
                         "candidates": n * b * m, "pairs": n * b, "groups": n * b * groups,
                         "proposals": counter.count,
                         "fixed": 1})
            print(rows[-1], flush=True)
    return rows


def dense_rows(repeats, k=6, b=10, kernel=False):
    # Unit scores: no column can be skipped, so the kernel's figure is its upper bound.
    dense = _cpu_kernel.kth_largest_perturbed_cpu if kernel else kth_largest_perturbed_torch
    rows = []
    for n, c in itertools.product((256, 1024), (32, 100, 300, 1000, 3000, 10000)):
        x = _scores("unit", n, c, seed=0)
        gen = torch.Generator().manual_seed(0)
        ms = _median_ms(lambda x=x, gen=gen: dense(x, k, 1.0, b, gen), repeats)
        rows.append({"N": n, "C": c, "ms": ms, "draws": n * c * b, "pairs": n * b, "fixed": 1})
        print(rows[-1], flush=True)
    return rows


def fit(rows, features):
    """Non-negative coefficients (ns per unit) minimising the relative squared error."""
    a = np.array([[row[f] for f in features] for row in rows], dtype=float)
    t = np.array([row["ms"] for row in rows]) * 1e6  # ns
    coef, _ = nnls(a / t[:, None], np.ones(len(t)))
    predicted = a @ coef
    error = np.abs(predicted / t - 1)
    return dict(zip(features, coef, strict=True)), float(np.median(error)), float(error.max())


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--kernel", action="store_true",
                        help="fit the compiled CPU kernel's model instead of the torch one")
    parser.add_argument("--dense-only", action="store_true",
                        help="fit the dense path's costs alone (after a change to it only)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    if args.kernel and _cpu_kernel.library() is None:
        parser.error(f"the CPU kernel is not available: {_cpu_kernel.unavailable_reason()}")
    print(f"# calibrate_sampler: {platform.machine()} {platform.processor()}, torch "
          f"{torch.__version__}, 1 thread, {'CPU kernel' if args.kernel else 'torch'} model")
    dense, d_med, d_max = fit(dense_rows(args.repeats, kernel=args.kernel), DENSE_FEATURES)
    print(f"\ndense fit (relative error median {d_med:.2f}, max {d_max:.2f}):")
    for name, value in dense.items():
        print(f"  {name}: {value:.4g} ns")
    if args.dense_only:
        return
    sparse_coef, s_med, s_max = fit(sparse_rows(args.repeats, kernel=args.kernel),
                                    SPARSE_FEATURES)
    print(f"sparse fit (relative error median {s_med:.2f}, max {s_max:.2f}):")
    for name, value in sparse_coef.items():
        print(f"  {name}: {value:.4g} ns")


if __name__ == "__main__":
    main()
