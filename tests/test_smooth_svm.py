import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import sktopk._smooth_svm as smooth_svm
from sktopk.functional import smooth_topk_svm_loss
from sktopk.losses import SmoothTopKSVMLoss


def brute_force(scores, target, k, tau, alpha):
    """Per-sample loss from the definition, by enumerating every k-subset (float64, autograd)."""
    n_classes = scores.shape[1]
    subsets = torch.tensor(list(itertools.combinations(range(n_classes), k)))  # (S, k)
    means = scores[:, subsets].mean(dim=2)  # (N, S)
    contains_y = (subsets.unsqueeze(0) == target.view(-1, 1, 1)).any(dim=2)  # (N, S)
    delta = alpha * (~contains_y).to(scores.dtype)
    all_subsets = tau * torch.logsumexp((delta + means) / tau, dim=1)
    with_y = tau * torch.logsumexp((means / tau).masked_fill(~contains_y, float("-inf")), dim=1)
    return all_subsets - with_y


def loss_and_grad(fn, scores, target, **kwargs):
    scores = scores.detach().clone().requires_grad_(True)
    loss = fn(scores, target, **kwargs)
    (grad,) = torch.autograd.grad(loss.sum(), scores)
    return loss.detach(), grad


def internal(method):
    def fn(scores, target, k, tau, alpha):
        return smooth_svm._smooth_topk_svm(scores, target, k, tau, alpha, None, "none", method)
    return fn


CASES = [(c, k) for c in range(2, 9) for k in range(1, c)]


@pytest.mark.parametrize(("n_classes", "k"), CASES)
@pytest.mark.parametrize("method", ["scan", "log", None])
def test_matches_brute_force_value_and_gradient(n_classes, k, method):
    gen = torch.Generator().manual_seed(100 * n_classes + k)
    for tau, alpha in [(1.0, 1.0), (0.1, 0.0), (3.0, 2.5)]:
        scores = 3 * torch.randn(6, n_classes, generator=gen, dtype=torch.float64)
        target = torch.randint(0, n_classes, (6,), generator=gen)
        ref_loss, ref_grad = loss_and_grad(brute_force, scores, target, k=k, tau=tau,
                                           alpha=alpha)
        loss, grad = loss_and_grad(internal(method), scores, target, k=k, tau=tau, alpha=alpha)
        torch.testing.assert_close(loss, ref_loss, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(grad, ref_grad, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("n_classes", [2, 10, 1000])
def test_k1_tau1_alpha0_is_cross_entropy(n_classes):
    gen = torch.Generator().manual_seed(n_classes)
    scores = 4 * torch.randn(64, n_classes, generator=gen, dtype=torch.float64)
    target = torch.randint(0, n_classes, (64,), generator=gen)
    loss, grad = loss_and_grad(smooth_topk_svm_loss, scores, target, k=1, tau=1.0, alpha=0.0,
                               reduction="none")
    ref_loss, ref_grad = loss_and_grad(F.cross_entropy, scores, target, reduction="none")
    torch.testing.assert_close(loss, ref_loss, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(("n_classes", "k"), [(7, 3), (50, 5), (300, 20), (1000, 5)])
@pytest.mark.parametrize("magnitude", [50.0, 1000.0])
def test_float32_matches_float64_for_large_scores_and_small_tau(n_classes, k, magnitude):
    gen = torch.Generator().manual_seed(k)
    scores32 = magnitude * torch.randn(40, n_classes, generator=gen)
    target = torch.randint(0, n_classes, (40,), generator=gen)
    for tau in (0.1, 1.0):
        loss32, grad32 = loss_and_grad(smooth_topk_svm_loss, scores32, target, k=k, tau=tau,
                                       reduction="none")
        loss64, grad64 = loss_and_grad(smooth_topk_svm_loss, scores32.double(), target, k=k,
                                       tau=tau, reduction="none")
        assert loss32.dtype == grad32.dtype == torch.float32
        assert torch.isfinite(loss32).all() and torch.isfinite(grad32).all()
        torch.testing.assert_close(loss32.double(), loss64, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(grad32.double(), grad64, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize(("n_classes", "k"), [(6, 2), (200, 5), (41, 20)])
def test_invariant_to_adding_a_constant(n_classes, k):
    gen = torch.Generator().manual_seed(3)
    scores = torch.randn(20, n_classes, generator=gen, dtype=torch.float64)
    target = torch.randint(0, n_classes, (20,), generator=gen)
    shift = 100 * torch.randn(20, 1, generator=gen, dtype=torch.float64)
    loss, grad = loss_and_grad(smooth_topk_svm_loss, scores, target, k=k, reduction="none")
    loss_s, grad_s = loss_and_grad(smooth_topk_svm_loss, scores + shift, target, k=k,
                                   reduction="none")
    torch.testing.assert_close(loss_s, loss, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(grad_s, grad, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(grad.sum(dim=1), torch.zeros(20, dtype=torch.float64),
                               rtol=0, atol=1e-12)


SCORE_PATTERNS = {
    "gaussian": lambda g, n, c: torch.randn(n, c, generator=g, dtype=torch.float64),
    "all equal": lambda g, n, c: torch.zeros(n, c, dtype=torch.float64),
    "near ties": lambda g, n, c: 1e-6 * torch.randn(n, c, generator=g, dtype=torch.float64),
    "few levels": lambda g, n, c: 3.0 * torch.randint(0, 4, (n, c), generator=g).double(),
    "spread": lambda g, n, c: 50 * torch.randn(n, c, generator=g, dtype=torch.float64),
    "one dominant": lambda g, n, c: torch.zeros(n, c, dtype=torch.float64).index_fill_(
        1, torch.tensor([0]), 1000.0),
}


@pytest.mark.parametrize("pattern", list(SCORE_PATTERNS))
@pytest.mark.parametrize(("n_classes", "k"), [(11, 5), (41, 20), (81, 40), (500, 3)])
def test_linear_scan_agrees_with_log_space_path(pattern, n_classes, k):
    # The default path for these sizes; the log-space path has no alternating sums.
    assert smooth_svm._use_scan(n_classes, k)
    gen = torch.Generator().manual_seed(k)
    scores = SCORE_PATTERNS[pattern](gen, 8, n_classes)
    target = torch.randint(0, n_classes, (8,), generator=gen)
    for tau in (0.1, 1.0):
        loss, grad = loss_and_grad(internal("scan"), scores, target, k=k, tau=tau, alpha=1.0)
        ref_loss, ref_grad = loss_and_grad(internal("log"), scores, target, k=k, tau=tau,
                                           alpha=1.0)
        torch.testing.assert_close(loss, ref_loss, rtol=1e-11, atol=1e-11)
        torch.testing.assert_close(grad, ref_grad, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize(("n_classes", "k"), [(42, 40), (62, 60), (9, 7)])
def test_default_path_is_accurate_with_few_classes_per_k(n_classes, k):
    # Here the linear scan's alternating sums would lose up to ~2^k in precision.
    gen = torch.Generator().manual_seed(k)
    for pattern in ("gaussian", "all equal", "near ties"):
        scores = SCORE_PATTERNS[pattern](gen, 8, n_classes)
        target = torch.randint(0, n_classes, (8,), generator=gen)
        loss, grad = loss_and_grad(smooth_topk_svm_loss, scores, target, k=k, reduction="none")
        ref_loss, ref_grad = loss_and_grad(internal("log"), scores, target, k=k, tau=1.0,
                                           alpha=1.0)
        torch.testing.assert_close(loss, ref_loss, rtol=1e-11, atol=1e-11)
        torch.testing.assert_close(grad, ref_grad, rtol=1e-9, atol=1e-11)


def test_row_chunks_give_the_same_result(monkeypatch):
    gen = torch.Generator().manual_seed(5)
    scores = torch.randn(30, 8, generator=gen, dtype=torch.float64)
    target = torch.randint(0, 8, (30,), generator=gen)
    whole = loss_and_grad(smooth_topk_svm_loss, scores, target, k=3, reduction="none")
    monkeypatch.setattr(smooth_svm, "_CHUNK_ELEMENTS", 64)  # 8 rows per chunk
    chunked = loss_and_grad(smooth_topk_svm_loss, scores, target, k=3, reduction="none")
    torch.testing.assert_close(chunked, whole, rtol=0, atol=0)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_agrees_with_difftopk_where_definitions_match():
    difftopk = pytest.importorskip("difftopk")
    # difftopk.SmoothTopKLoss is Berrada et al.'s loss with alpha = 1 and a batch mean.
    # Its gradient for k = 1 adds a spurious term (it differentiates log e_0 = 0 with
    # an approximation), so gradients are compared for k >= 2 only.
    gen = torch.Generator().manual_seed(0)
    sizes = [(10, 1, 1.0), (20, 2, 1.0), (20, 5, 0.5), (60, 5, 2.0), (100, 10, 1.0)]
    for n_classes, k, tau in sizes:
        scores = 2 * torch.randn(32, n_classes, generator=gen, dtype=torch.float64)
        target = torch.randint(0, n_classes, (32,), generator=gen)
        loss, grad = loss_and_grad(smooth_topk_svm_loss, scores, target, k=k, tau=tau)
        ref_loss, ref_grad = loss_and_grad(difftopk.SmoothTopKLoss(n_classes, k, tau=tau),
                                           scores, target)
        torch.testing.assert_close(loss, ref_loss, rtol=1e-10, atol=1e-10)
        if k >= 2:
            torch.testing.assert_close(grad, ref_grad, rtol=1e-6, atol=1e-9)


@settings(max_examples=60, deadline=None)
@given(
    data=st.data(),
    n_classes=st.integers(2, 7),
    tau=st.floats(0.05, 10.0),
    alpha=st.floats(0.0, 5.0),
    magnitude=st.sampled_from([0.0, 1e-3, 1.0, 30.0]),
)
def test_property_matches_brute_force(data, n_classes, tau, alpha, magnitude):
    k = data.draw(st.integers(1, n_classes - 1), label="k")
    n_rows = data.draw(st.integers(1, 4), label="n_rows")
    values = data.draw(st.lists(st.floats(-1.0, 1.0), min_size=n_rows * n_classes,
                                max_size=n_rows * n_classes), label="values")
    target = data.draw(st.lists(st.integers(0, n_classes - 1), min_size=n_rows,
                                max_size=n_rows), label="target")
    scores = magnitude * torch.tensor(values, dtype=torch.float64).view(n_rows, n_classes)
    target = torch.tensor(target)
    loss, grad = loss_and_grad(smooth_topk_svm_loss, scores, target, k=k, tau=tau, alpha=alpha,
                               reduction="none")
    ref_loss, ref_grad = loss_and_grad(brute_force, scores, target, k=k, tau=tau, alpha=alpha)
    assert (loss > 0).all()
    torch.testing.assert_close(loss, ref_loss, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-8, atol=1e-9)


def test_gradcheck():
    gen = torch.Generator().manual_seed(1)
    scores = torch.randn(4, 12, generator=gen, dtype=torch.float64, requires_grad=True)
    target = torch.randint(0, 12, (4,), generator=gen)
    weight = torch.rand(4, generator=gen, dtype=torch.float64)
    for k in (1, 3):
        assert torch.autograd.gradcheck(
            lambda s, k=k: smooth_topk_svm_loss(s, target, k=k, tau=0.7, weight=weight),
            (scores,))


def test_module_repr_and_empty_batch():
    # Parity with the function, reductions, weights and bad input: tests/test_losses_common.py.
    criterion = SmoothTopKSVMLoss(k=2, tau=0.5, alpha=0.3)
    assert repr(criterion) == "SmoothTopKSVMLoss(k=2, tau=0.5, alpha=0.3, reduction='mean')"
    scores, target = torch.zeros(0, 9), torch.zeros(0, dtype=torch.long)
    assert smooth_topk_svm_loss(scores, target, k=2, reduction="none").shape == (0,)
    assert smooth_topk_svm_loss(scores, target, k=2, reduction="sum").item() == 0.0


def test_no_gradient_without_requires_grad_or_under_no_grad(monkeypatch):
    calls = []
    original = smooth_svm._forward_chunk
    monkeypatch.setattr(smooth_svm, "_forward_chunk",
                        lambda *args: calls.append(args[5]) or original(*args))
    scores = torch.randn(5, 6)
    loss = smooth_topk_svm_loss(scores, torch.arange(5), k=2)
    assert not loss.requires_grad and np.isfinite(loss.item())
    with torch.no_grad():
        smooth_topk_svm_loss(scores.requires_grad_(True), torch.arange(5), k=2)
    assert calls == [False, False]  # need_grad
    smooth_topk_svm_loss(scores, torch.arange(5), k=2).backward()
    assert calls[-1] is True and scores.grad is not None


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"k": 0}, ValueError, "k must be an integer >= 1"),
        ({"k": 2.5}, TypeError, "k must be an integer"),
        ({"tau": 0.0}, ValueError, "tau must be > 0"),
        ({"tau": -1.0}, ValueError, "tau must be a finite number >= 0"),
        ({"tau": float("nan")}, ValueError, "tau must be a finite number"),
        ({"alpha": -0.5}, ValueError, "alpha must be a finite number >= 0"),
    ],
)
def test_bad_parameters(kwargs, error, match):
    scores, target = torch.randn(4, 6), torch.tensor([0, 1, 2, 5])
    params = {"k": 2, **kwargs}
    with pytest.raises(error, match=match):
        smooth_topk_svm_loss(scores, target, **params)
    with pytest.raises(error, match=match):
        SmoothTopKSVMLoss(**params)


@pytest.mark.parametrize("k", [6, 9])
def test_k_must_be_smaller_than_the_number_of_classes(k):
    scores, target = torch.randn(4, 6), torch.tensor([0, 1, 2, 5])
    match = rf"k={k} must be smaller than the number of classes \(6 .*1 <= k < n_classes"
    with pytest.raises(ValueError, match=match):
        smooth_topk_svm_loss(scores, target, k=k)
    with pytest.raises(ValueError, match=match):
        SmoothTopKSVMLoss(k=k)(scores, target)
