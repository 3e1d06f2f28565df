"""The exact sparse sampler against the dense reference, in distribution.

Each distribution test compares the two samplers on fixed scores with a fixed
seed (so the suite is deterministic) and is built to raise a false alarm with
probability about 1e-3 per test for a correct sampler: a two-sample chi-square
test of homogeneity of the winning-column frequencies at level 1e-3, and the
difference of the mean values within 3.3 standard errors (two-sided 1e-3).
"""

import math

import numpy as np
import pytest
import torch
from scipy import stats

from sktopk import TopKClassifier
from sktopk._perturbed import kth_largest_perturbed_torch
from sktopk._sparse_perturbed import (
    candidate_pool,
    choose_sampler,
    kth_largest_perturbed_sparse,
    sample_sparse_or_none,
)
from sktopk.functional import imbalanced_topk_hinge_loss, perturbed_topk, topk_hinge_loss
from sktopk.losses import ImbalancedTopKHingeLoss, PerturbedTopK, TopKHingeLoss

ALPHA = 1e-3
Z_ALPHA = stats.norm.isf(ALPHA / 2)  # 3.29


def _row_frequencies(indices, n_columns):
    counts = torch.zeros(indices.shape[0], n_columns, dtype=torch.float64)
    return counts.scatter_add_(1, indices, torch.ones_like(indices, dtype=torch.float64))


def _homogeneous(counts_a, counts_b):
    """Chi-square test of homogeneity of two count vectors; True if not rejected at ALPHA."""
    table = np.stack([counts_a, counts_b])
    table = table[:, table.sum(0) > 0]
    # Pool the columns with small expected counts so the chi-square law applies.
    expected = table.sum(0) / 2
    small = expected < 10
    if small.any():
        table = np.concatenate([table[:, ~small], table[:, small].sum(1, keepdims=True)], 1)
        table = table[:, table.sum(0) > 0]
    if table.shape[1] < 2:
        return np.array_equal(table[0], table[1])
    _, p_value, _, _ = stats.chi2_contingency(table, correction=False)
    return p_value > ALPHA


def assert_same_law_as_dense(x, k, epsilon, n_draws, sampler, seed=0):
    """``sampler(x, k, epsilon, B, generator) -> (values, indices)`` against the dense torch path.

    Row by row: the winning-column frequencies (chi-square, :func:`_homogeneous`)
    and the mean single-draw value (z-test), each at level ALPHA.
    """
    n_columns = x.shape[1]
    _, dense_idx = kth_largest_perturbed_torch(x, k, epsilon, n_draws,
                                               torch.Generator().manual_seed(seed))
    _, other_idx = sampler(x, k, epsilon, n_draws, torch.Generator().manual_seed(seed + 1))
    dense_counts = _row_frequencies(dense_idx, n_columns).numpy()
    other_counts = _row_frequencies(other_idx, n_columns).numpy()
    # The per-draw values: the winning column's perturbed value is not returned,
    # so compare the means over the draws through a second call with B = 1 per row
    # repeated: values of single draws have the per-draw law.
    rows = x.shape[0]
    x_rep = x.repeat_interleave(n_draws, dim=0)
    dense_v, _ = kth_largest_perturbed_torch(x_rep, k, epsilon, 1,
                                             torch.Generator().manual_seed(seed + 2))
    other_v, _ = sampler(x_rep, k, epsilon, 1, torch.Generator().manual_seed(seed + 3))
    dense_v = dense_v.double().view(rows, n_draws)
    other_v = other_v.double().view(rows, n_draws)
    for row in range(rows):
        assert _homogeneous(dense_counts[row], other_counts[row]), (
            f"row {row}: winning-column frequencies differ\n{dense_counts[row]}\n"
            f"{other_counts[row]}")
        a, b = dense_v[row], other_v[row]
        se = math.sqrt(a.var().item() / n_draws + b.var().item() / n_draws) + 1e-300
        assert abs(a.mean().item() - b.mean().item()) <= Z_ALPHA * se, (
            f"row {row}: means {a.mean().item()} vs {b.mean().item()}, se {se}")


def _assert_same_law(x, k, epsilon, n_draws, seed, m=None, pool=None):
    def sparse(x, k, epsilon, n_draws, generator):
        return kth_largest_perturbed_sparse(x, k, epsilon, n_draws, generator, m=m, pool=pool)

    assert_same_law_as_dense(x, k, epsilon, n_draws, sparse, seed)


def _scores(regime, n_rows, n_columns, seed):
    gen = torch.Generator().manual_seed(seed)
    if regime == "flat":
        return torch.zeros(n_rows, n_columns, dtype=torch.float64)
    if regime == "unit":
        return torch.randn(n_rows, n_columns, generator=gen, dtype=torch.float64)
    if regime == "wide":
        return 5 * torch.randn(n_rows, n_columns, generator=gen, dtype=torch.float64)
    if regime == "ties":  # a few distinct values, ties at every candidate boundary
        return torch.randint(0, 4, (n_rows, n_columns), generator=gen).double()
    if regime == "trained":  # a few high scores well above the rest
        x = 0.5 * torch.randn(n_rows, n_columns, generator=gen, dtype=torch.float64)
        x[:, :3] += torch.tensor([6.0, 5.0, 4.5], dtype=torch.float64)
        return x
    raise ValueError(regime)


@pytest.mark.parametrize(("regime", "n_columns", "k", "epsilon"), [
    ("flat", 40, 3, 1.0),
    ("unit", 60, 1, 1.0),
    ("unit", 60, 4, 0.3),
    ("wide", 200, 6, 1.0),
    ("ties", 30, 3, 0.5),
    ("trained", 500, 6, 1.0),
    ("trained", 100, 2, 10.0),
    ("wide", 100, 3, 0.01),
])
def test_sparse_matches_dense_in_distribution(regime, n_columns, k, epsilon):
    x = _scores(regime, 3, n_columns, seed=n_columns + k)
    _assert_same_law(x, k, epsilon, 6000, seed=17)


@pytest.mark.parametrize("factor", [1, 2, 4])
def test_every_candidate_count_is_exact(factor):
    # m = k (the k-th is a min), m = 2k, m = 4k: all the same law.
    x = _scores("unit", 2, 50, seed=3)
    _assert_same_law(x, 3, 0.7, 6000, seed=29, m=3 * factor)


@pytest.mark.parametrize(("regime", "n_columns", "k", "m", "pool", "epsilon"), [
    ("unit", 60, 2, 2, 40, 1.0),      # tiers [2, 4), [4, 8), ..., [32, 40), then the outside
    ("wide", 200, 6, 6, 96, 1.0),
    ("ties", 30, 3, 3, 30, 0.5),      # the pool is the whole row: no outside group
    ("ties", 40, 3, 4, 13, 0.5),      # ties across tier and pool boundaries
    ("trained", 500, 6, 12, 96, 1.0),
    ("flat", 300, 3, 3, 48, 1.0),     # every tier proposes at the same rate as the outside
    ("wide", 100, 3, 3, 24, 0.01),
])
def test_tiered_pool_matches_dense_in_distribution(regime, n_columns, k, m, pool, epsilon):
    x = _scores(regime, 3, n_columns, seed=n_columns + m)
    _assert_same_law(x, k, epsilon, 6000, seed=23, m=m, pool=pool)


def test_pool_argument_is_checked():
    x = _scores("unit", 2, 20, seed=0)
    with pytest.raises(ValueError, match="pool=3 must lie between m=4"):
        kth_largest_perturbed_sparse(x, 2, 1.0, 3, m=4, pool=3)
    with pytest.raises(ValueError, match="top holds 5 columns; pool=8 needs 9"):
        kth_largest_perturbed_sparse(x, 2, 1.0, 3, m=4, pool=8, top=candidate_pool(x, 5))


def test_many_proposals_in_blocks():
    # Flat scores with few candidates: millions of proposals, handled in blocks of pairs.
    x = _scores("flat", 2, 1000, seed=0)
    _assert_same_law(x, 3, 1.0, 1500, seed=41, m=3)


def test_two_columns_and_all_candidates():
    # C = 2 (one candidate, one proposal column) and m = C (nothing to propose).
    x = torch.tensor([[0.3, -0.2], [1.0, 1.0]], dtype=torch.float64)
    _assert_same_law(x, 1, 0.8, 6000, seed=5)
    _assert_same_law(x, 2, 0.8, 6000, seed=7)
    _assert_same_law(x, 1, 0.8, 6000, seed=9, m=2)


def test_hundred_thousand_columns():
    # One row, C = 100000, a trained-like row: the sparse path draws from the
    # same law without perturbing the 100000 columns.
    x = _scores("trained", 1, 100_000, seed=1)
    _, dense_idx = kth_largest_perturbed_torch(x, 2, 1.0, 300, torch.Generator().manual_seed(0))
    _, sparse_idx = sample_sparse_or_none(x, 2, 1.0, 1500, torch.Generator().manual_seed(1),
                                          "sparse")
    dense_counts = _row_frequencies(dense_idx, 100_000)[0].numpy()
    sparse_counts = _row_frequencies(sparse_idx, 100_000)[0].numpy()
    # Rescale to the same draw count for the homogeneity test: compare the
    # frequency of each of the top-3 columns and of "any other" column.
    table = np.stack([
        np.r_[dense_counts[:3], dense_counts[3:].sum()],
        np.r_[sparse_counts[:3], sparse_counts[3:].sum()],
    ])
    _, p_value, _, _ = stats.chi2_contingency(table[:, table.sum(0) > 0], correction=False)
    assert p_value > ALPHA
    assert sparse_counts[3:].sum() > 0  # other columns do reach the 2nd place


@pytest.mark.parametrize("sampler", ["dense", "sparse", "auto"])
def test_closed_form_expectation_of_max_of_two(sampler):
    a, b, eps = 0.3, -0.2, 0.8
    x = torch.tensor([[a, b]], dtype=torch.float64, requires_grad=True)
    gen = torch.Generator().manual_seed(7)
    value = perturbed_topk(x, 1, epsilon=eps, n_perturbations=50_000, generator=gen,
                           sampler=sampler)
    value.backward()
    theta, d = eps * math.sqrt(2.0), a - b
    cdf = stats.norm.cdf(d / theta)
    expected_value = a * cdf + b * (1.0 - cdf) + theta * stats.norm.pdf(d / theta)
    # Standard errors: about eps / sqrt(B) for the value, sqrt(cdf (1 - cdf) / B) for the gradient.
    assert abs(value.item() - expected_value) < 4.5 * eps / math.sqrt(50_000)
    grad_se = math.sqrt(cdf * (1 - cdf) / 50_000)
    np.testing.assert_allclose(x.grad.numpy()[0], [cdf, 1 - cdf], atol=4.5 * grad_se)


def test_large_spread_mean_and_gradient_match_dense():
    # The value and gradient of the operator (B draws averaged) at large B.
    x = _scores("trained", 4, 300, seed=11).requires_grad_(True)
    grads = {}
    values = {}
    for sampler, seed in (("dense", 0), ("sparse", 1)):
        x.grad = None
        value = perturbed_topk(x, 4, 1.0, 10_000, generator=torch.Generator().manual_seed(seed),
                               sampler=sampler)
        value.sum().backward()
        values[sampler], grads[sampler] = value.detach(), x.grad.clone()
    # Per-draw std of the 4th value is below 1.5 here: se of a difference < 0.022.
    torch.testing.assert_close(values["dense"], values["sparse"], atol=0.08, rtol=0)
    # Gradient entries are frequencies: se of a difference <= 0.71 / sqrt(10000) = 0.0071.
    torch.testing.assert_close(grads["dense"], grads["sparse"], atol=0.03, rtol=0)
    torch.testing.assert_close(grads["sparse"].sum(1), torch.ones(4, dtype=torch.float64))


def test_generator_reproducibility_and_global_rng_untouched():
    x = _scores("trained", 8, 400, seed=2)
    state = torch.random.get_rng_state()
    first = perturbed_topk(x, 3, 1.0, 10, generator=torch.Generator().manual_seed(4),
                           sampler="sparse")
    second = perturbed_topk(x, 3, 1.0, 10, generator=torch.Generator().manual_seed(4),
                            sampler="sparse")
    other = perturbed_topk(x, 3, 1.0, 10, generator=torch.Generator().manual_seed(5),
                           sampler="sparse")
    assert torch.equal(first, second)
    assert not torch.equal(first, other)
    assert torch.equal(torch.random.get_rng_state(), state)


@pytest.mark.parametrize("sampler", ["dense", "sparse", "auto"])
def test_epsilon_zero_is_unchanged(sampler):
    x = _scores("ties", 20, 9, seed=0).requires_grad_(True)
    expected = perturbed_topk(x, 3, epsilon=0.0)
    value = perturbed_topk(x, 3, epsilon=0.0, sampler=sampler)
    torch.testing.assert_close(value, expected)
    (grad,) = torch.autograd.grad(value.sum(), x)
    (expected_grad,) = torch.autograd.grad(perturbed_topk(x, 3, epsilon=0.0).sum(), x)
    assert torch.equal(grad, expected_grad)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_inputs(dtype):
    x = _scores("trained", 4, 200, seed=3).to(dtype).requires_grad_(True)
    value = perturbed_topk(x, 2, 1.0, 4000, generator=torch.Generator().manual_seed(0),
                           sampler="sparse")
    assert value.dtype == dtype
    value.sum().backward()
    assert x.grad.dtype == dtype
    dense = perturbed_topk(x.detach().double(), 2, 1.0, 4000,
                           generator=torch.Generator().manual_seed(1), sampler="dense")
    torch.testing.assert_close(value.double(), dense, atol=0.1, rtol=0)


def test_auto_picks_sparse_on_separated_scores_and_dense_on_flat_ones():
    # k = 2: the 2nd largest lies among the three high scores.
    separated = _scores("trained", 256, 5000, seed=0)
    top = candidate_pool(separated, 25)
    assert choose_sampler(top[0], 2, 1.0, 10, 5000)[0] == "sparse"
    # Flat scores with k = 6 of 60: the dense path draws little more than the
    # candidates would.
    flat = torch.zeros(64, 60)
    top = candidate_pool(flat, 25)
    assert choose_sampler(top[0], 6, 1.0, 10, 60) == ("dense", None)
    assert sample_sparse_or_none(flat, 6, 1.0, 10, None, "auto") is None
    assert sample_sparse_or_none(separated, 2, 1.0, 10, None, "auto") is not None


@pytest.mark.parametrize(("n_columns", "size"), [
    (7, 7), (64, 13), (200, 13), (403, 13), (1001, 13), (4096, 13), (10007, 25), (10007, 193)])
def test_candidate_pool_returns_the_top_values(n_columns, size):
    # Through a topk (7, 64), or groups of 2 (200), 4 (403) and 8 columns, with (403, 1001,
    # 10007) and without (200, 4096) leftover columns.
    gen = torch.Generator().manual_seed(n_columns)
    x = torch.randint(0, 50, (5, n_columns), generator=gen).float()  # many ties
    values, columns = candidate_pool(x, size)
    torch.testing.assert_close(values, torch.topk(x, size, dim=1).values)
    torch.testing.assert_close(x.gather(1, columns), values)
    assert all(len(set(row.tolist())) == size for row in columns)


def test_losses_accept_sampler_and_agree_in_expectation():
    gen = torch.Generator().manual_seed(0)
    scores = _scores("trained", 32, 300, seed=6)
    target = torch.randint(0, 300, (32,), generator=gen)
    dense = topk_hinge_loss(scores, target, k=2, n_perturbations=2000,
                            generator=torch.Generator().manual_seed(1), sampler="dense")
    sparse = TopKHingeLoss(k=2, n_perturbations=2000, generator=torch.Generator().manual_seed(2),
                           sampler="sparse")(scores, target)
    torch.testing.assert_close(dense, sparse, atol=0.02, rtol=0)
    counts = torch.randint(1, 100, (300,), generator=gen).tolist()
    cosine = torch.nn.functional.normalize(scores, dim=1)
    dense = imbalanced_topk_hinge_loss(cosine, target, counts, k=2, n_perturbations=2000,
                                       generator=torch.Generator().manual_seed(3),
                                       sampler="dense")
    sparse = ImbalancedTopKHingeLoss(counts, k=2, n_perturbations=2000, sampler="sparse",
                                     generator=torch.Generator().manual_seed(4))(cosine, target)
    torch.testing.assert_close(dense, sparse, atol=0.02, rtol=0)


def test_estimator_passes_sampler_through_loss_params():
    gen = np.random.default_rng(0)
    X = gen.normal(size=(60, 4)).astype(np.float32)
    y = gen.integers(0, 5, 60)
    clf = TopKClassifier(k=2, max_epochs=1, hidden_layer_sizes=(8,), random_state=0,
                         early_stopping=False, loss_params={"sampler": "sparse"}).fit(X, y)
    assert clf.predict(X).shape == (60,)
    with pytest.raises(ValueError, match="sampler must be one of"):
        TopKClassifier(k=2, max_epochs=1, loss_params={"sampler": "fast"}).fit(X, y)


@pytest.mark.parametrize("make", [
    lambda s: perturbed_topk(torch.randn(2, 5), 2, sampler=s),
    lambda s: PerturbedTopK(2, sampler=s),
    lambda s: topk_hinge_loss(torch.randn(2, 5), torch.tensor([0, 1]), k=2, sampler=s),
    lambda s: TopKHingeLoss(k=2, sampler=s),
    lambda s: ImbalancedTopKHingeLoss([1, 2, 3], k=1, sampler=s),
])
@pytest.mark.parametrize("bad", ["fast", None, 1, "Sparse"])
def test_bad_sampler_is_rejected(make, bad):
    with pytest.raises(ValueError, match="sampler must be one of"):
        make(bad)


def test_sparse_with_shared_noise_is_rejected_and_auto_stays_dense():
    with pytest.raises(ValueError, match="noise='independent'"):
        perturbed_topk(torch.randn(2, 5), 2, noise="shared", sampler="sparse")
    with pytest.raises(ValueError, match="noise='independent'"):
        TopKHingeLoss(k=2, noise="shared", sampler="sparse")
    # Shared noise under "auto": the dense path, so the rows get the same noise.
    x = _scores("trained", 2, 400, seed=0)
    x = torch.cat([x[:1], x[:1]])
    value = perturbed_topk(x, 2, 1.0, 5, generator=torch.Generator().manual_seed(0),
                           noise="shared")
    assert value[0] == value[1]


needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _on_cuda(m=None, pool=None, dtype=None):
    """A sampler for :func:`assert_same_law_as_dense` that runs the sparse path on CUDA.

    The CUDA generator is seeded from the CPU one the reference hands over, so
    each call stays deterministic and the two calls of a test get other noise.
    """
    def sample(x, k, epsilon, n_draws, generator):
        seed = int(torch.randint(2**31, (1,), generator=generator))
        cuda_gen = torch.Generator(device="cuda").manual_seed(seed)
        x_cuda = x.to("cuda", dtype=dtype or x.dtype)
        values, indices = kth_largest_perturbed_sparse(x_cuda, k, epsilon, n_draws, cuda_gen,
                                                       m=m, pool=pool)
        assert values.device.type == "cuda" and indices.device.type == "cuda"
        return values.double().cpu(), indices.cpu()
    return sample


@needs_cuda
@pytest.mark.parametrize(("regime", "n_columns", "k", "m", "pool", "epsilon", "dtype"), [
    ("unit", 60, 4, None, None, 0.3, torch.float64),
    ("trained", 500, 6, None, None, 1.0, torch.float32),
    ("trained", 500, 6, 12, 96, 1.0, torch.float32),
    ("ties", 40, 3, 4, 13, 0.5, torch.float64),
    ("wide", 100, 3, 3, 24, 0.01, torch.float32),
    ("flat", 300, 3, 3, 48, 1.0, torch.float32),
])
def test_sparse_on_cuda_matches_dense_in_distribution(regime, n_columns, k, m, pool, epsilon,
                                                       dtype):
    x = _scores(regime, 3, n_columns, seed=n_columns + k)
    if dtype == torch.float32:
        x = x.float().double()  # the reference sees the same float32 scores
    assert_same_law_as_dense(x, k, epsilon, 6000, _on_cuda(m, pool, dtype), seed=31)


@needs_cuda
def test_sparse_on_cuda_hundred_thousand_columns_and_reproducible():
    x = _scores("trained", 64, 100_000, seed=1).float().cuda()

    def draw(seed):
        return kth_largest_perturbed_sparse(x, 5, 1.0, 10,
                                            torch.Generator(device="cuda").manual_seed(seed))

    first, second, other = draw(4), draw(4), draw(5)
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])
    assert not torch.equal(first[0], other[0])
    # Against the dense path on the same rows: the 5th value averaged over the draws.
    dense, _ = kth_largest_perturbed_torch(x, 5, 1.0, 10,
                                           torch.Generator(device="cuda").manual_seed(6))
    # Per-draw std of the 5th value is below 1.5: se of a difference of row
    # averages below 0.68, and of their mean over 64 rows below 0.085.
    torch.testing.assert_close(first[0], dense, atol=3.0, rtol=0)
    torch.testing.assert_close(first[0].mean(), dense.mean(), atol=0.3, rtol=0)


@needs_cuda
@pytest.mark.parametrize("sampler", ["sparse", "auto"])
def test_losses_on_cuda_agree_with_cpu_in_expectation_and_gradient(sampler):
    gen = torch.Generator().manual_seed(0)
    scores = _scores("trained", 32, 300, seed=6).float()
    target = torch.randint(0, 300, (32,), generator=gen)
    grads, values = {}, {}
    for device, seed in (("cpu", 1), ("cuda", 2)):
        x = scores.detach().to(device).requires_grad_(True)
        value = topk_hinge_loss(x, target.to(device), k=2, n_perturbations=4000,
                                generator=torch.Generator(device=device).manual_seed(seed),
                                sampler="dense" if device == "cpu" else sampler)
        value.backward()
        values[device], grads[device] = value.detach().cpu(), x.grad.cpu()
    torch.testing.assert_close(values["cuda"], values["cpu"], atol=0.02, rtol=0)
    # Gradient entries are frequencies / 32 rows: se of a difference < 0.71 / sqrt(4000) / 32.
    torch.testing.assert_close(grads["cuda"], grads["cpu"], atol=0.02 / 32 * 4, rtol=0)
    counts = torch.randint(1, 100, (300,), generator=gen).tolist()
    cosine = torch.nn.functional.normalize(scores, dim=1)
    imbalanced = {
        device: ImbalancedTopKHingeLoss(
            counts, k=2, n_perturbations=4000, sampler="dense" if device == "cpu" else sampler,
            generator=torch.Generator(device=device).manual_seed(3)).to(device)(
                cosine.to(device), target.to(device)).cpu()
        for device in ("cpu", "cuda")}
    torch.testing.assert_close(imbalanced["cuda"], imbalanced["cpu"], atol=0.05, rtol=0)


@needs_cuda
@pytest.mark.parametrize("estimator", ["balanced", "imbalanced"])
def test_estimators_fit_on_cuda_with_the_sparse_sampler(estimator):
    from sktopk import ImbalancedTopKClassifier

    gen = np.random.default_rng(0)
    X = gen.normal(size=(300, 6)).astype(np.float32)
    y = gen.integers(0, 40, 300)
    X[np.arange(300), y % 6] += 3.0
    make = TopKClassifier if estimator == "balanced" else ImbalancedTopKClassifier
    clf = make(k=3, max_epochs=3, hidden_layer_sizes=(16,), random_state=0, device="cuda",
               loss_params={"sampler": "sparse"}).fit(X, y)
    again = make(k=3, max_epochs=3, hidden_layer_sizes=(16,), random_state=0, device="cuda",
                 loss_params={"sampler": "sparse"}).fit(X, y)
    assert clf.device_ == "cuda"
    # Same seeds, same fit, up to the order of atomic float additions on the GPU.
    np.testing.assert_allclose(clf.decision_function(X), again.decision_function(X), atol=1e-5)
    assert np.isfinite(clf.decision_function(X)).all()
