"""The fused CPU kernel (sktopk/_cpu_kernel.c): its noise, its exactness, its fallbacks.

Distribution tests are two-sided at a false-alarm rate of ALPHA = 1e-3 each.
"""

import math
import multiprocessing
import os
import sys

import numpy as np
import pytest
import torch
from scipy import optimize, stats

from sktopk import _cpu_kernel
from sktopk._perturbed import kth_largest_perturbed_torch
from sktopk.backends import use_backend
from sktopk.functional import perturbed_topk, topk_hinge_loss

from .test_sparse_perturbed import ALPHA, Z_ALPHA, _scores, assert_same_law_as_dense

needs_kernel = pytest.mark.skipif(
    _cpu_kernel.library() is None,
    reason=f"the CPU kernel is not available: {_cpu_kernel.unavailable_reason()}")


@needs_kernel
def test_noise_is_standard_gaussian_and_bounded():
    key = _cpu_kernel.draw_seed(torch.Generator().manual_seed(0))
    z = torch.cat([_cpu_kernel.kernel_normals(key, row, draw, 1003)
                   for row in range(20) for draw in range(10)]).double().numpy()
    assert stats.kstest(z, "norm").pvalue > ALPHA
    assert abs(z.mean()) <= Z_ALPHA / math.sqrt(z.size)
    # Var of the sample variance of N(0, 1) is 2 / n.
    assert abs(z.var() - 1.0) <= Z_ALPHA * math.sqrt(2.0 / z.size)
    assert np.abs(z).max() <= _cpu_kernel.Z_MAX


@needs_kernel
@pytest.mark.parametrize("lag", [1, 2, 4, 1003])
def test_noise_is_uncorrelated_across_columns_rows_and_draws(lag):
    # lag 1, 2: the two normals of one Box-Muller pair and of one Philox counter;
    # lag 1003: the same column of the next row.
    key = _cpu_kernel.draw_seed(torch.Generator().manual_seed(1))
    z = torch.cat([_cpu_kernel.kernel_normals(key, row, 0, 1003)
                   for row in range(60)]).double().numpy()
    r = np.corrcoef(z[:-lag], z[lag:])[0, 1]
    assert abs(r) * math.sqrt(z.size - lag) <= Z_ALPHA
    other_draw = torch.cat([_cpu_kernel.kernel_normals(key, row, 1, 1003)
                            for row in range(60)]).double().numpy()
    assert abs(np.corrcoef(z, other_draw)[0, 1]) * math.sqrt(z.size) <= Z_ALPHA


@needs_kernel
def test_inverse_gaussian_tail_of_the_sparse_path():
    # t with P(Z > t) = p, from the centre to the far tail the thinning reaches.
    quantile = _cpu_kernel.library().sktopk_upper_quantile
    for p in np.concatenate([np.logspace(-300, -1, 60), np.linspace(0.05, 0.95, 19),
                             1 - np.logspace(-12, -2, 6)]):
        np.testing.assert_allclose(quantile(float(p)), stats.norm.isf(p), rtol=1e-10,
                                   atol=1e-12)


@needs_kernel
def test_gaussian_tail_bounds_of_the_thinning():
    # The thinning is exact only if its rate is at or above every member's
    # probability: the upper bound must never fall below P(Z > t), and stays within
    # 13% of it (the proposals it adds). The lower bound, which keeps a proposal
    # without erfc, must never rise above it.
    library = _cpu_kernel.library()
    t = np.concatenate([np.linspace(0, 10, 2001), np.logspace(1, 2, 300), [np.inf]])
    log_tail = stats.norm.logsf(t)
    upper = np.log([library.sktopk_upper_tail_bound(float(x)) for x in t]) - log_tail
    assert np.all(upper >= 0)
    normal = stats.norm.sf(t) > 1e-300  # below, the bound is the smallest normal double
    assert upper[normal].max() < np.log(1.13)
    assert upper[normal & (t >= 2)].max() < np.log(1.004)
    lower = np.log([library.sktopk_lower_tail_bound(float(x)) for x in t[normal]])
    lower -= log_tail[normal]
    assert np.all(lower <= 0)
    assert lower.min() > np.log(0.79)


@needs_kernel
@pytest.mark.parametrize("a", [0.0, 0.4, 2.0, 7.5])
def test_truncated_gaussian_draw_of_accepted_proposals(a):
    # An accepted proposal's noise is Z conditioned on Z > a: Kolmogorov-Smirnov
    # against that law, false-alarm rate 1e-3.
    draws = torch.empty(200_000, dtype=torch.float64)
    _cpu_kernel.library().sktopk_normal_beyond(a, 1234, len(draws), draws.data_ptr())
    draws = draws.numpy()
    assert draws.min() > a
    truncated = stats.truncnorm(a, np.inf)
    assert stats.kstest(draws, truncated.cdf).pvalue > 1e-3


@needs_kernel
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(("regime", "n_columns", "k", "epsilon"), [
    ("unit", 1001, 6, 1.0),
    ("wide", 3000, 6, 0.01),
    ("trained", 998, 2, 1.0),
    ("ties", 77, 5, 0.3),
    ("flat", 40, 40, 1.0),
    ("unit", 500, 64, 0.5),
])
def test_skipping_columns_changes_nothing(dtype, regime, n_columns, k, epsilon):
    x = _scores(regime, 24, n_columns, seed=n_columns).to(dtype)
    full = _cpu_kernel.kth_largest_perturbed_cpu(x, k, epsilon, 7,
                                                 torch.Generator().manual_seed(3), skip=False)
    skipped = _cpu_kernel.kth_largest_perturbed_cpu(x, k, epsilon, 7,
                                                    torch.Generator().manual_seed(3), skip=True)
    assert torch.equal(full[0], skipped[0])
    assert torch.equal(full[1], skipped[1])


def _assert_same_law_as_torch(x, k, epsilon, sampler, n_draws=4000):
    assert_same_law_as_dense(x, k, epsilon, n_draws, sampler)


@needs_kernel
@pytest.mark.parametrize(("regime", "n_columns", "k", "epsilon"), [
    ("unit", 60, 1, 1.0),
    ("unit", 61, 4, 0.3),
    ("wide", 203, 6, 1.0),
    ("ties", 30, 3, 0.5),
    ("trained", 500, 6, 1.0),
    ("wide", 100, 3, 0.01),
])
def test_dense_kernel_matches_torch_path_in_distribution(regime, n_columns, k, epsilon):
    _assert_same_law_as_torch(_scores(regime, 6, n_columns, seed=5), k, epsilon,
                              _cpu_kernel.kth_largest_perturbed_cpu)


@needs_kernel
@pytest.mark.parametrize(("regime", "n_columns", "k", "epsilon", "m", "pool"), [
    ("trained", 300, 4, 1.0, 8, 8),  # candidates and the rest of the row
    ("trained", 300, 4, 1.0, 8, 300),  # candidates and tiers, no rest
    ("trained", 500, 6, 1.0, 12, 96),  # tiers [12, 24) ... [48, 96) and the rest
    ("unit", 203, 3, 1.0, 6, 48),  # many proposals, tiers of every size
    ("wide", 1000, 6, 0.01, 6, 24),  # tiny rates: the far tail of the truncated draws
    ("wide", 100, 2, 10.0, 2, 16),  # rates near 1
    ("ties", 40, 3, 0.5, 3, 12),  # ties across tier and pool boundaries
    ("flat", 50, 5, 1.0, 5, 10),
    ("unit", 7, 6, 1.0, 6, 7),  # C = k + 1: every column a candidate or in the pool
])
def test_sparse_kernel_matches_torch_path_in_distribution(regime, n_columns, k, epsilon, m,
                                                          pool):
    def sparse(x, k, epsilon, n_draws, generator):
        return _cpu_kernel.kth_largest_perturbed_sparse_cpu(x, k, epsilon, n_draws, generator,
                                                            m=m, pool=pool)

    _assert_same_law_as_torch(_scores(regime, 5, n_columns, seed=n_columns), k, epsilon, sparse)


@needs_kernel
def test_sparse_kernel_hundred_thousand_columns_float32():
    # The pool found through maxima of groups of 8 columns (pool < C / 8).
    x = _scores("trained", 3, 100_000, seed=0).float()
    x[:, 50_000:50_010] += 4.0  # high scores away from the first columns

    def sparse(x, k, epsilon, n_draws, generator):
        return _cpu_kernel.kth_largest_perturbed_sparse_cpu(x, k, epsilon, n_draws, generator,
                                                            m=24, pool=192)

    _assert_same_law_as_torch(x, 6, 1.0, sparse, n_draws=1500)


def _scattered_float32(offset):
    # High scores at columns spread over the row: a column misplaced in any vector
    # lane changes the law. With a negative offset every score is below zero, the
    # value the top lists' unused entries start from.
    gen = torch.Generator().manual_seed(11)
    x = 0.5 * torch.randn(5, 1000, generator=gen)
    for row in range(5):
        x[row, torch.randperm(1000, generator=gen)[:40]] += torch.linspace(2.5, 0.5, 40)
    return x + offset


@needs_kernel
@pytest.mark.parametrize(("k", "m", "pool", "offset"), [
    (6, 24, 24, 0.0),  # pool < C / 8: maxima of groups of 8, then one pass over the row
    (6, 96, 96, 0.0),  # the sizes the rule takes on trained scores at C = 1000
    (6, 96, 96, -10.0),
    (4, 8, 300, 0.0),  # pool < C / 2: groups of 2, tiers [8, 16) ... [256, 300)
])
def test_sparse_kernel_float32_with_high_scores_scattered(k, m, pool, offset):
    # float32 takes the vector code: the compaction of the scores above the
    # prefilter's bound, and the top lists of at most 8 entries.
    def sparse(x, k, epsilon, n_draws, generator):
        return _cpu_kernel.kth_largest_perturbed_sparse_cpu(x, k, epsilon, n_draws, generator,
                                                            m=m, pool=pool)

    _assert_same_law_as_torch(_scattered_float32(offset), k, 1.0, sparse)


def _tied_at_the_candidate_boundary(dtype):
    # 40 distinct high scores, 100 columns tied at 0 and 60 at -0.5: no threshold
    # leaves between 93 and 96 columns at or above it (the candidate count without
    # tiers), so the kernel falls back to selecting, and some zeros stay outside the
    # candidates, above the first bound. A fourth row has no ties: there a threshold
    # is found.
    gen = torch.Generator().manual_seed(3)
    x = torch.full((4, 1000), -3.0, dtype=torch.float64)
    for row in range(4):
        columns = torch.randperm(1000, generator=gen)
        x[row, columns[:40]] = torch.linspace(2.0, 0.2, 40, dtype=torch.float64)
        x[row, columns[40:140]] = 0.0
        x[row, columns[140:200]] = -0.5
    x[3] = torch.randn(1000, generator=gen, dtype=torch.float64)
    return x.to(dtype)


@needs_kernel
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_sparse_kernel_candidates_by_threshold_or_by_selection(dtype):
    # Without tiers the kernel takes as candidates the columns at or above a
    # threshold (m - m / 32 to m of them), found by counting; ties at the boundary
    # make the search fail and the selection run instead. Both keep the law.
    def sparse(x, k, epsilon, n_draws, generator):
        return _cpu_kernel.kth_largest_perturbed_sparse_cpu(x, k, epsilon, n_draws, generator,
                                                            m=96, pool=96)

    _assert_same_law_as_torch(_tied_at_the_candidate_boundary(dtype), 6, 1.0, sparse)


@needs_kernel
@pytest.mark.parametrize("offset", [0.0, -10.0])
def test_dense_kernel_float32_with_high_scores_scattered(offset):
    _assert_same_law_as_torch(_scattered_float32(offset)[:, :300], 6, 1.0,
                              _cpu_kernel.kth_largest_perturbed_cpu)


@needs_kernel
@pytest.mark.parametrize(("dtype", "k", "crowded"), [
    (torch.float32, 6, True), (torch.float64, 6, True),
    (torch.float32, 6, False), (torch.float32, 11, False)])
def test_dense_kernel_starting_lists_from_the_best_columns(dtype, k, crowded):
    # Each draw starts its list from the row's k best columns when they all lie in
    # the first block of 32 groups (of 4 columns) in level order, vector-filled for
    # float32 and k <= 8; crowded: 40 groups share the top level with the best
    # column's, which comes last, so the draws start from an empty list instead.
    x = torch.full((6, 400), 0.5, dtype=torch.float32)
    x[:, 0:160:4] = 6.0 - 0.001 * torch.arange(40, dtype=torch.float32)
    if crowded:
        x[:, -1] = 6.05
    else:
        x[:, 0] = 6.05
    x = x.double()  # exactly the float32 values, for the torch reference

    def kernel(scores, k, epsilon, n_draws, generator):
        values, indices = _cpu_kernel.kth_largest_perturbed_cpu(scores.to(dtype), k, epsilon,
                                                                n_draws, generator)
        return values.double(), indices

    _assert_same_law_as_torch(x, k, 1.0, kernel)


@needs_kernel
def test_sparse_kernel_checks_its_sizes_and_is_reproducible():
    x = _scores("trained", 8, 400, seed=2)
    for m, pool in ((2, 8), (8, 4), (8, 401)):
        with pytest.raises(ValueError, match="k <= m <= pool <= C"):
            _cpu_kernel.kth_largest_perturbed_sparse_cpu(x, 3, 1.0, 4, m=m, pool=pool)
    first = _cpu_kernel.kth_largest_perturbed_sparse_cpu(
        x, 3, 1.0, 10, torch.Generator().manual_seed(4), m=6, pool=24)
    second = _cpu_kernel.kth_largest_perturbed_sparse_cpu(
        x, 3, 1.0, 10, torch.Generator().manual_seed(4), m=6, pool=24)
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])


@needs_kernel
def test_sparse_sampler_goes_to_the_kernel():
    from sktopk._sparse_perturbed import _KERNEL_COSTS, _sparse_costs, _subset_top

    x = _scores("trained", 8, 400, seed=3).float()
    forced = perturbed_topk(x, 4, 1.0, 10, generator=torch.Generator().manual_seed(0),
                            sampler="sparse")
    # sampler="sparse" takes the sizes of the cheapest estimate of the kernel's model.
    estimates = _sparse_costs(_subset_top(x, 4), 4, 1.0, 10, 400, 8, _KERNEL_COSTS)
    m, pool = min(estimates, key=estimates.get)
    values, _ = _cpu_kernel.kth_largest_perturbed_sparse_cpu(
        x, 4, 1.0, 10, torch.Generator().manual_seed(0), m=m, pool=pool)
    assert torch.equal(forced, values)


@needs_kernel
def test_closed_form_expectation_of_max_of_two():
    a, b, eps, n_draws = 0.3, -0.2, 0.8, 50_000
    x = torch.tensor([[a, b]], dtype=torch.float64, requires_grad=True)
    with use_backend("cpu_kernel"):
        value = perturbed_topk(x, 1, epsilon=eps, n_perturbations=n_draws,
                               generator=torch.Generator().manual_seed(7))
    value.backward()
    theta, d = eps * math.sqrt(2.0), a - b
    cdf = stats.norm.cdf(d / theta)
    expected = a * cdf + b * (1.0 - cdf) + theta * stats.norm.pdf(d / theta)
    # Per-draw std of max(a + eps Z1, b + eps Z2) is below eps * 1.2.
    assert abs(value.item() - expected) <= Z_ALPHA * 1.2 * eps / math.sqrt(n_draws)
    grad_se = math.sqrt(cdf * (1 - cdf) / n_draws)
    np.testing.assert_allclose(x.grad.numpy()[0], [cdf, 1 - cdf], atol=Z_ALPHA * grad_se)


@needs_kernel
def test_reproducible_thread_invariant_and_global_rng_untouched():
    x = _scores("unit", 600, 1000, seed=0).float()
    state = torch.random.get_rng_state()
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = _cpu_kernel.kth_largest_perturbed_cpu(x, 6, 1.0, 10,
                                                    torch.Generator().manual_seed(4))
        torch.set_num_threads(2)  # 6M draws: split in two tasks
        two = _cpu_kernel.kth_largest_perturbed_cpu(x, 6, 1.0, 10,
                                                    torch.Generator().manual_seed(4))
    finally:
        torch.set_num_threads(threads)
    other = _cpu_kernel.kth_largest_perturbed_cpu(x, 6, 1.0, 10, torch.Generator().manual_seed(5))
    assert torch.equal(one[0], two[0]) and torch.equal(one[1], two[1])
    assert not torch.equal(one[1], other[1])
    assert torch.equal(torch.random.get_rng_state(), state)


@needs_kernel
def test_dense_calls_use_the_kernel_and_torch_backend_does_not():
    x = _scores("unit", 16, 200, seed=1).float()
    kernel = _cpu_kernel.kth_largest_perturbed_cpu(x, 4, 1.0, 5, torch.Generator().manual_seed(0))
    dense = perturbed_topk(x, 4, 1.0, 5, generator=torch.Generator().manual_seed(0),
                           sampler="dense")
    assert torch.equal(dense, kernel[0])
    with use_backend("torch"):
        reference = perturbed_topk(x, 4, 1.0, 5, generator=torch.Generator().manual_seed(0),
                                   sampler="dense")
    expected, _ = kth_largest_perturbed_torch(x, 4, 1.0, 5, torch.Generator().manual_seed(0))
    assert torch.equal(reference, expected)


@needs_kernel
def test_calls_outside_the_kernel_take_the_torch_path():
    x = _scores("unit", 8, 100, seed=2).float()
    for kwargs in ({"k": 65}, {"k": 3, "noise": "shared"}):
        k = kwargs.pop("k")
        got = perturbed_topk(x, k, 1.0, 4, generator=torch.Generator().manual_seed(0),
                             sampler="dense", **kwargs)
        noise = kwargs.get("noise", "independent")
        expected, _ = kth_largest_perturbed_torch(x, k, 1.0, 4, torch.Generator().manual_seed(0),
                                                  noise)
        assert torch.equal(got, expected)
        with use_backend("cpu_kernel"), pytest.raises(ValueError, match="cpu_kernel"):
            perturbed_topk(x, k, 1.0, 4, noise=noise)
    half = x.half()
    with use_backend("cpu_kernel"), pytest.raises(ValueError, match="dtype"):
        perturbed_topk(half, 2, 1.0, 4)


def _fresh_kernel_state(monkeypatch, tmp_path):
    monkeypatch.delenv("SKTOPK_DISABLE_CPU_KERNEL", raising=False)
    monkeypatch.setenv("SKTOPK_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(_cpu_kernel, "_library", None)
    monkeypatch.setattr(_cpu_kernel, "_reason", None)


def test_missing_compiler_falls_back_to_torch_and_says_why(monkeypatch, tmp_path):
    _fresh_kernel_state(monkeypatch, tmp_path)
    monkeypatch.setenv("CC", str(tmp_path / "no-such-compiler"))
    assert _cpu_kernel.library() is None
    assert "no-such-compiler" in _cpu_kernel.unavailable_reason()
    x = _scores("unit", 4, 50, seed=3).float()
    got = perturbed_topk(x, 2, 1.0, 3, generator=torch.Generator().manual_seed(0))
    expected, _ = kth_largest_perturbed_torch(x, 2, 1.0, 3, torch.Generator().manual_seed(0))
    assert torch.equal(got, expected)
    with use_backend("cpu_kernel"), pytest.raises(ValueError, match="no-such-compiler"):
        perturbed_topk(x, 2, 1.0, 3)


def test_environment_variable_disables_the_kernel(monkeypatch, tmp_path):
    _fresh_kernel_state(monkeypatch, tmp_path)
    monkeypatch.setenv("SKTOPK_DISABLE_CPU_KERNEL", "1")
    assert _cpu_kernel.library() is None
    assert "SKTOPK_DISABLE_CPU_KERNEL" in _cpu_kernel.unavailable_reason()
    assert not list(tmp_path.iterdir())  # nothing was compiled


@needs_kernel
def test_build_is_cached_per_source_and_flags(monkeypatch, tmp_path):
    _fresh_kernel_state(monkeypatch, tmp_path)
    assert _cpu_kernel.library() is not None
    built = sorted(tmp_path.glob("cpu_kernel-*.so"))
    assert len(built) == 1
    stamp = built[0].stat().st_mtime_ns
    monkeypatch.setattr(_cpu_kernel, "_library", None)
    assert _cpu_kernel.library() is not None
    assert built[0].stat().st_mtime_ns == stamp  # loaded, not rebuilt


@needs_kernel
def test_unwritable_cache_builds_in_a_temporary_directory(monkeypatch, tmp_path):
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    _fresh_kernel_state(monkeypatch, blocker / "cache")
    assert _cpu_kernel.library() is not None
    assert _cpu_kernel.unavailable_reason() is None


@needs_kernel
def test_loss_gradient_is_a_probability_vector_minus_the_label():
    gen = torch.Generator().manual_seed(0)
    scores = torch.randn(32, 300, generator=gen).requires_grad_(True)
    target = torch.randint(0, 300, (32,), generator=gen)
    with use_backend("cpu_kernel"):
        loss = topk_hinge_loss(scores, target, k=5, epsilon=1.0, n_perturbations=10,
                               reduction="sum", generator=torch.Generator().manual_seed(1))
    loss.backward()
    active = scores.grad.abs().sum(1) > 0
    torch.testing.assert_close(scores.grad.sum(1)[active], torch.zeros(int(active.sum())))
    assert (scores.grad.gather(1, target[:, None])[active] <= 0).all()


def _kernel_in_child(x):
    torch.set_num_threads(2)  # 6M draws: two tasks on the child's own thread pool
    return _cpu_kernel.kth_largest_perturbed_cpu(x, 6, 1.0, 10,
                                                 torch.Generator().manual_seed(4))[1]


@needs_kernel
@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_forked_child_gets_its_own_thread_pool():
    # A child forked after the parent's pool started inherits the pool object but
    # none of its threads: a call there must not wait forever for them.
    x = _scores("unit", 600, 1000, seed=0).float()
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        expected = _cpu_kernel.kth_largest_perturbed_cpu(x, 6, 1.0, 10,
                                                         torch.Generator().manual_seed(4))[1]
    finally:
        torch.set_num_threads(threads)
    with multiprocessing.get_context("fork").Pool(1) as pool:
        got = pool.apply_async(_kernel_in_child, (x,)).get(timeout=120)
    assert torch.equal(got, expected)


@needs_kernel
@pytest.mark.parametrize(("dtype", "top"), [(torch.float32, 2.0**20 + 1.0),
                                            (torch.float64, 2.0**36 + 1.0)])
def test_skipping_keeps_a_column_that_ties_after_rounding(dtype, top):
    # Scores far above epsilon: perturbed values fall on a grid of spacing ulp,
    # and a column 2 ulp below the top one, just under the old cut L - 2 eps
    # ZMAX (rounded up to L - ulp), still rounds to the same perturbed value
    # L - ulp as the top column when its noise is high and the top one's low.
    # The tie goes to the lower column, as when every column is visited.
    ulp = float(torch.finfo(dtype).eps) * 2.0**math.floor(math.log2(top))
    epsilon = 0.1264 * ulp  # 2 eps ZMAX = 1.49 ulp
    n_columns = 400_000
    key = _cpu_kernel.draw_seed(torch.Generator().manual_seed(11))
    z = _cpu_kernel.kernel_normals(key, 0, 0, n_columns).double()
    high = torch.nonzero(epsilon * z >= 0.5001 * ulp).squeeze(1)
    low = torch.nonzero(epsilon * z <= -0.5001 * ulp).squeeze(1)
    low_column = int(high.min())
    assert (low > low_column).any()
    top_column = int(low[low > low_column].min())
    x = torch.full((1, n_columns), top - 1000.0, dtype=torch.float64)
    x[0, top_column] = top
    x[0, low_column] = top - 2 * ulp
    x = x.to(dtype)
    for skip in (False, True):
        values, indices = _cpu_kernel.kth_largest_perturbed_cpu(
            x, 1, epsilon, 1, torch.Generator().manual_seed(11), skip=skip)
        assert float(values) == top - ulp
        assert int(indices) == low_column, f"skip={skip}"


_UBSAN_CHILD = """
import sys, torch
from sktopk import _cpu_kernel
_cpu_kernel._FLAG_SETS = (("-O1", "-fsanitize=undefined,float-cast-overflow",
                           "-fno-sanitize-recover=all", "-lubsan", "-lm"),)
if _cpu_kernel.library() is None:
    sys.exit(77)
for dtype in (torch.float32, torch.float64):
    big = 0.9 * torch.finfo(dtype).max
    x = torch.tensor([[big] * 4 + [-big] * 4 + [1.0, 2.0]], dtype=dtype)
    for skip in (False, True):
        _cpu_kernel.kth_largest_perturbed_cpu(x, 9, 1.0, 3, torch.Generator().manual_seed(0),
                                              skip=skip)
print("ok")
"""


@needs_kernel
def test_scores_spanning_more_than_the_largest_float_are_defined_behaviour(tmp_path):
    # Finite scores from -0.9 max to 0.9 max: their range overflows to inf, and the
    # level of a group must not come from converting inf / inf to an integer.
    # Built with the undefined-behaviour sanitizer, in a child process.
    import subprocess
    import sys

    env = dict(os.environ, SKTOPK_CACHE_DIR=str(tmp_path), OMP_NUM_THREADS="1",
               UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1")
    env.pop("SKTOPK_DISABLE_CPU_KERNEL", None)
    done = subprocess.run([sys.executable, "-c", _UBSAN_CHILD], env=env, capture_output=True,
                          text=True, timeout=300)
    if done.returncode == 77:
        pytest.skip("the C compiler cannot build with -fsanitize=undefined")
    assert done.returncode == 0 and "ok" in done.stdout, done.stderr[-2000:]


def test_missing_source_falls_back_to_torch_and_says_why(monkeypatch, tmp_path):
    # An install without the C file (a bundler that drops package data) must not
    # break sktopk: the torch path runs and the reason names the file.
    _fresh_kernel_state(monkeypatch, tmp_path)
    monkeypatch.setattr(_cpu_kernel, "_SOURCE", tmp_path / "missing" / "_cpu_kernel.c")
    assert _cpu_kernel.library() is None
    assert "_cpu_kernel.c" in _cpu_kernel.unavailable_reason()
    x = _scores("unit", 4, 50, seed=3).float()
    got = perturbed_topk(x, 2, 1.0, 3, generator=torch.Generator().manual_seed(0))
    expected, _ = kth_largest_perturbed_torch(x, 2, 1.0, 3, torch.Generator().manual_seed(0))
    assert torch.equal(got, expected)


@needs_kernel
def test_direct_calls_check_k_against_the_row():
    # k = 0 would read the top list at index -1; k > C would return an unfilled list.
    x = _scores("unit", 2, 10, seed=0).float()
    for k in (0, 11):
        with pytest.raises(ValueError, match="k must lie between 1 and the number of columns"):
            _cpu_kernel.kth_largest_perturbed_cpu(x, k, 1.0, 2)
    with pytest.raises(ValueError, match="k must lie between 1"):
        _cpu_kernel.kth_largest_perturbed_sparse_cpu(x, 0, 1.0, 2, m=0, pool=4)


def _kernel_calls():
    return {
        "dense": lambda x: _cpu_kernel.kth_largest_perturbed_cpu(x, 6, 1.0, 3),
        "sparse": lambda x: _cpu_kernel.kth_largest_perturbed_sparse_cpu(x, 6, 1.0, 3, m=24,
                                                                         pool=24),
        "sparse, tiers": lambda x: _cpu_kernel.kth_largest_perturbed_sparse_cpu(
            x, 6, 1.0, 3, m=12, pool=96),
    }


@needs_kernel
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("path", list(_kernel_calls()))
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_kernel_refuses_non_finite_scores(dtype, path, bad, monkeypatch):
    # The hinge losses leave the finiteness check to the kernel, which reads every
    # score: a non-finite one in any row, also in a block run on another thread,
    # raises the losses' error.
    monkeypatch.setattr(_cpu_kernel, "_MIN_DRAWS_PER_TASK", 1)
    call = _kernel_calls()[path]
    x = _scores("trained", 40, 300, seed=4).to(dtype)
    call(x)  # finite: no error
    for row, column in ((0, 0), (39, 299), (23, 150)):
        y = x.clone()
        y[row, column] = bad
        threads = torch.get_num_threads()
        torch.set_num_threads(2)  # two row blocks, on two threads
        try:
            with pytest.raises(ValueError, match="scores contains NaN or infinite values"):
                call(y)
        finally:
            torch.set_num_threads(threads)


@needs_kernel
@pytest.mark.parametrize("backend", ["auto", "torch", "dense", "sparse", "cpu_kernel"])
@pytest.mark.parametrize("epsilon", [0.0, 1.0])
def test_hinge_loss_refuses_non_finite_scores_on_every_path(backend, epsilon):
    # The loss checks the scores itself only where the kernel does not read them
    # (the torch paths, epsilon = 0).
    x = _scores("trained", 8, 300, seed=6).float()
    target = torch.arange(8)
    topk_hinge_loss(x, target, k=5, epsilon=epsilon)
    x[5, 7] = float("nan")
    with use_backend(backend), pytest.raises(ValueError, match="scores contains NaN"):
        topk_hinge_loss(x, target, k=5, epsilon=epsilon)


@needs_kernel
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(("n_columns", "distinct"), [(7, None), (1000, None), (10000, None),
                                                    (3000, 5), (1000, 1)])
def test_order_statistics_match_a_full_sort(dtype, n_columns, distinct):
    gen = torch.Generator().manual_seed(n_columns)
    if distinct is None:
        x = torch.randn(40, n_columns, generator=gen, dtype=dtype)
    else:  # runs of ties: the selection must still end, and at the right values
        x = torch.randint(0, distinct, (40, n_columns), generator=gen).to(dtype)
    rows = [0, 3, 17, 39]
    width = min(n_columns, 4097)
    head = min(96, width)
    slots = [j for j in (96, 192, 384, 768, 1536, 4096) if j < width]
    out = _cpu_kernel.order_statistics(x, rows, width, head, slots)
    expected = torch.sort(x[rows], dim=1, descending=True).values[:, :width]
    assert torch.equal(out[:, :head], expected[:, :head])
    assert torch.equal(out[:, slots], expected[:, slots])
    others = [j for j in range(head, width) if j not in slots]
    assert torch.isnan(out[:, others]).all()


@needs_kernel
def test_order_statistics_check_their_positions():
    x = torch.randn(4, 50)
    for width, head, slots in ((51, 10, []), (50, 20, [10]), (50, 10, [50])):
        with pytest.raises(ValueError, match="head <= slots < width <= C"):
            _cpu_kernel.order_statistics(x, [0], width, head, slots)
    with pytest.raises(ValueError, match="rows in"):
        _cpu_kernel.order_statistics(x, [4], 50, 10, [])


@needs_kernel
@pytest.mark.parametrize("n_columns", [40, 1000, 10000])
def test_rule_reads_the_same_scores_from_the_kernel_and_from_torch(n_columns):
    from sktopk._sparse_perturbed import _KERNEL_COSTS, _sparse_costs, _subset_top

    x = _scores("trained", 64, n_columns, seed=5).float()
    from_kernel = _subset_top(x, 6)
    with use_backend("torch"):
        from_torch = _subset_top(x, 6)
    read = ~torch.isnan(from_kernel[0])
    assert torch.equal(from_kernel[:, read], from_torch[:, read])
    assert (_sparse_costs(from_kernel, 6, 1.0, 10, n_columns, 64, _KERNEL_COSTS)
            == _sparse_costs(from_torch, 6, 1.0, 10, n_columns, 64, _KERNEL_COSTS))


@needs_kernel
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(("n_rows", "n_columns", "k"), [(5, 40, 2), (64, 210, 6), (1024, 1000, 6),
                                                        (256, 3000, 11), (64, 10000, 6)])
def test_compiled_rule_estimates_match_the_torch_rule(dtype, n_rows, n_columns, k):
    # The functional losses run the rule on every call; the kernel computes its
    # estimates in one call. They must be the torch formulas' (to rounding), and
    # give the same decision.
    from sktopk._sparse_perturbed import (
        _KERNEL_COSTS,
        _cheaper,
        _dense_cost,
        _rule_estimates,
        _sparse_costs,
        _subset_top,
    )

    for epsilon, regime in ((0.01, "unit"), (1.0, "trained"), (1.0, "wide"), (5.0, "flat")):
        x = _scores(regime, n_rows, n_columns, seed=n_columns + k).to(dtype)
        compiled = _rule_estimates(x, k, epsilon, 10, n_rows, _KERNEL_COSTS, kernel=True)
        reference = _sparse_costs(_subset_top(x, k), k, epsilon, 10, n_columns, n_rows,
                                  _KERNEL_COSTS)
        assert compiled.keys() == reference.keys() and compiled
        for sizes, cost in reference.items():
            assert compiled[sizes] == pytest.approx(cost, rel=1e-12)
        dense = _dense_cost(n_rows, n_columns, 10, _KERNEL_COSTS)
        assert _cheaper(compiled, dense, _KERNEL_COSTS) == _cheaper(reference, dense,
                                                                    _KERNEL_COSTS)


@needs_kernel
@pytest.mark.parametrize("epsilon", [0.01, 0.3, 1.0, 5.0])
def test_expected_kth_matches_the_torch_rule_and_the_root(epsilon):
    from sktopk._sparse_perturbed import _expected_kth

    gen = torch.Generator().manual_seed(int(100 * epsilon))
    top = torch.sort(torch.randn(16, 400, generator=gen) * 2.0, dim=1, descending=True).values
    top[3] = top[3, :1]  # one row of ties
    k, sizes = 6, [6, 12, 24, 48, 96, 192]
    compiled = _cpu_kernel.expected_kth(top, k, epsilon, sizes)
    reference = _expected_kth(top, k, epsilon, sizes)
    # Both bisect 8 times over [s_(k) - 8 eps, s_(1) + 8 eps]: each ends within a
    # 256th of that bracket of the root.
    width = (top[:, 0] - top[:, k - 1] + 16 * epsilon).unsqueeze(1) / 256
    assert ((compiled - reference).abs() <= 2 * width + 1e-5).all()
    for r in (0, 3, 15):
        for i, m in enumerate(sizes):
            s = top[r, :m].double().numpy()
            root = optimize.brentq(
                lambda u, s=s: stats.norm.sf((u - s) / epsilon).sum() - (k - 0.5),
                s[k - 1] - 8 * epsilon, s[0] + 8 * epsilon)
            assert abs(float(compiled[r, i]) - root) <= float(width[r]) + 1e-5


@needs_kernel
def test_expected_kth_checks_its_arguments():
    top = torch.sort(torch.randn(2, 20), dim=1, descending=True).values
    for k, sizes, epsilon in ((6, [4], 1.0), (6, [24], 1.0), (6, [6], 0.0)):
        with pytest.raises(ValueError, match="need 1 <= k <= sizes <= W"):
            _cpu_kernel.expected_kth(top, k, epsilon, sizes)


# ---------------------------------------------------------------- build and cache
def _real_compiler():
    import shutil

    return shutil.which(os.environ.get("CC") or "cc")


def test_machine_key_tells_arm_cpus_apart(tmp_path):
    # Linux on ARM has no "flags" line and an empty platform.processor(): the
    # "Features" and part lines must reach the key, or an SVE build would be
    # loaded on a CPU without SVE.
    base = "processor\t: 0\nBogoMIPS\t: 243.75\nCPU implementer\t: 0x41\n"
    first, second = tmp_path / "n1", tmp_path / "v1"
    first.write_text(base + "Features\t: fp asimd aes\nCPU part\t: 0xd0c\n")
    second.write_text(base + "Features\t: fp asimd aes sve\nCPU part\t: 0xd40\n")
    assert _cpu_kernel._machine_key(first) != _cpu_kernel._machine_key(second)
    x86 = tmp_path / "x86"
    x86.write_text("model name\t: Some CPU\nflags\t\t: fpu avx2\n")
    assert "avx2" in _cpu_kernel._machine_key(x86)


_LOAD_IN_CHILD = """
from sktopk import _cpu_kernel
print("loaded" if _cpu_kernel.library() is not None else _cpu_kernel.unavailable_reason())
"""


@needs_kernel
def test_truncated_cached_library_is_rebuilt_not_loaded(tmp_path):
    # Loading a truncated shared library crashes the process (SIGBUS), so each
    # load runs in a child; the cache must notice and rebuild.
    import subprocess

    env = dict(os.environ, SKTOPK_CACHE_DIR=str(tmp_path), OMP_NUM_THREADS="1")
    env.pop("SKTOPK_DISABLE_CPU_KERNEL", None)

    def load():
        return subprocess.run([sys.executable, "-c", _LOAD_IN_CHILD], env=env,
                              capture_output=True, text=True, timeout=300)

    assert "loaded" in load().stdout
    (library,) = tmp_path.glob("cpu_kernel-*.so")
    whole = library.read_bytes()
    library.write_bytes(whole[: len(whole) // 2])
    done = load()
    assert done.returncode == 0 and "loaded" in done.stdout, done.stderr[-2000:]
    assert library.read_bytes() == whole  # rebuilt (the same compiler, the same bytes)


@needs_kernel
def test_flag_set_that_fails_is_remembered_and_skipped(monkeypatch, tmp_path):
    # A compiler that cannot link libmvec (musl, macOS): the next flag set works,
    # and later processes must not pay for the failing build again.
    log = tmp_path / "calls.log"
    wrapper = tmp_path / "cc-without-mvec"
    wrapper.write_text(f'#!/bin/sh\necho "$@" >> "{log}"\n'
                       'for a in "$@"; do [ "$a" = -lmvec ] && exit 1; done\n'
                       f'exec "{_real_compiler()}" "$@"\n')
    wrapper.chmod(0o755)
    _fresh_kernel_state(monkeypatch, tmp_path / "cache")
    monkeypatch.setenv("CC", str(wrapper))
    assert _cpu_kernel.library() is not None
    assert len(list((tmp_path / "cache").glob("*.failed"))) == 1
    calls = log.read_text()
    _fresh_kernel_state(monkeypatch, tmp_path / "cache")
    assert _cpu_kernel.library() is not None
    assert log.read_text() == calls  # loaded from the cache: no compiler call


@needs_kernel
def test_read_only_cache_with_a_library_is_used_as_it_is(monkeypatch, tmp_path):
    _fresh_kernel_state(monkeypatch, tmp_path)
    assert _cpu_kernel.library() is not None
    _fresh_kernel_state(monkeypatch, tmp_path)
    monkeypatch.setattr(_cpu_kernel, "_writable", lambda directory: False)
    # Same cache key (CC unchanged), nothing to build: it must not try.
    monkeypatch.setattr(_cpu_kernel, "_compile", lambda *args: pytest.fail("rebuilt"))
    assert _cpu_kernel.library() is not None


@needs_kernel
@pytest.mark.parametrize("how", ["CC with arguments", "relative cache directory",
                                 "no home directory"])
def test_builds_from_awkward_settings(monkeypatch, tmp_path, how):
    _fresh_kernel_state(monkeypatch, tmp_path)
    if how == "CC with arguments":
        monkeypatch.setenv("CC", f"{_real_compiler()} -std=gnu11")
    elif how == "relative cache directory":
        monkeypatch.chdir(tmp_path)
        monkeypatch.setenv("SKTOPK_CACHE_DIR", ".")
    else:
        monkeypatch.delenv("SKTOPK_CACHE_DIR")
        monkeypatch.delenv("XDG_CACHE_HOME", raising=False)

        def no_home():
            raise RuntimeError("Could not determine home directory.")

        monkeypatch.setattr(_cpu_kernel.Path, "home", staticmethod(no_home))
    assert _cpu_kernel.library() is not None, _cpu_kernel.unavailable_reason()
    if how == "relative cache directory":
        assert list(tmp_path.glob("cpu_kernel-*.so"))


@needs_kernel
def test_cache_files_are_readable_by_others_and_odd_markers_are_ignored(monkeypatch, tmp_path):
    # mkstemp makes private files; a cache shared by users (or a container image)
    # needs the umask's mode. A marker that cannot be read is no marker.
    import stat

    _fresh_kernel_state(monkeypatch, tmp_path)
    assert _cpu_kernel.library() is not None
    umask = _cpu_kernel._umask()  # None where it cannot be read: the files stay private
    for path in tmp_path.glob("cpu_kernel-*"):
        assert stat.S_IMODE(path.stat().st_mode) == (0o600 if umask is None
                                                     else 0o666 & ~umask)
    (library,) = tmp_path.glob("cpu_kernel-*.so")
    library.unlink()
    library.with_name(library.name + ".failed").mkdir()  # unreadable as a file
    _fresh_kernel_state(monkeypatch, tmp_path)
    assert _cpu_kernel.library() is not None, _cpu_kernel.unavailable_reason()
