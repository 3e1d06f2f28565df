import numpy as np
import pytest
import torch

from sktopk.backends import use_backend
from sktopk.functional import class_margins, imbalanced_topk_hinge_loss, topk_hinge_loss
from sktopk.losses import ImbalancedTopKHingeLoss, TopKHingeLoss

from ._references import reference_perturbed_topk


def reference_hinge(scores, target, k, epsilon, n_perturbations, seed, margins=None, scale=1.0):
    """Per-sample loss and d(mean loss)/ds, straight from the paper's formula."""
    t_value, t_grad = reference_perturbed_topk(scores, k + 1, epsilon, n_perturbations, seed)
    s = scores.detach().double().numpy()
    y = target.numpy()
    n = len(y)
    m = np.ones(n) if margins is None else margins[y]
    inner = m + t_value - s[np.arange(n), y]
    loss = np.maximum(scale * inner, 0.0)
    active = (inner > 0).astype(float)
    onehot = np.zeros_like(s)
    onehot[np.arange(n), y] = 1.0
    grad = scale * active[:, None] * (t_grad - onehot) / n
    return loss, grad


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(("k", "epsilon"), [(1, 1.0), (5, 0.2), (3, 0.0)])
def test_balanced_loss_matches_brute_force(dtype, k, epsilon):
    seed = 11 * k
    gen = torch.Generator().manual_seed(seed + 1)
    scores = (2 * torch.randn(32, 12, generator=gen)).to(dtype).requires_grad_(True)
    target = torch.randint(0, 12, (32,), generator=gen)
    with use_backend("torch"):  # the reference rebuilds the torch path's noise
        per_sample = topk_hinge_loss(scores, target, k=k, epsilon=epsilon, n_perturbations=5,
                                     reduction="none",
                                     generator=torch.Generator().manual_seed(seed),
                                     sampler="dense")
    per_sample.mean().backward()
    ref_loss, ref_grad = reference_hinge(scores, target, k, epsilon, 5, seed)
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    np.testing.assert_allclose(per_sample.detach().double().numpy(), ref_loss, atol=tol)
    np.testing.assert_allclose(scores.grad.double().numpy(), ref_grad, atol=tol)


def test_epsilon_zero_is_exact_top_k_calibrated_hinge():
    scores = torch.randn(100, 20, dtype=torch.float64)
    target = torch.randint(0, 20, (100,))
    for k in (1, 5, 19):
        loss = topk_hinge_loss(scores, target, k=k, epsilon=0.0, reduction="none")
        kth_plus_one = torch.sort(scores, dim=1, descending=True).values[:, k]
        expected = torch.relu(1 + kth_plus_one - scores[torch.arange(100), target])
        torch.testing.assert_close(loss, expected)


def test_loss_is_zero_iff_true_class_clears_the_k_plus_one_th_by_the_margin():
    scores = torch.tensor([[5.0, 4.0, 3.0, 0.0], [5.0, 4.0, 3.5, 3.0]], dtype=torch.float64)
    target = torch.tensor([1, 1])
    loss = topk_hinge_loss(scores, target, k=2, epsilon=0.0, reduction="none")
    # Row 1: s_[3] = 3 is a full margin below s_y = 4; row 2: s_[3] = 3.5 only half.
    torch.testing.assert_close(loss, torch.tensor([0.0, 0.5], dtype=torch.float64))


@pytest.mark.parametrize("loss_fn", ["balanced", "imbalanced"])
def test_invariant_to_adding_a_constant(loss_fn):
    scores = torch.randn(16, 9, dtype=torch.float64)
    target = torch.randint(0, 9, (16,))

    def compute(s):
        gen = torch.Generator().manual_seed(3)
        if loss_fn == "balanced":
            return topk_hinge_loss(s, target, k=2, epsilon=0.5, generator=gen)
        return imbalanced_topk_hinge_loss(s, target, np.arange(9) + 1, k=2, epsilon=0.05,
                                          generator=gen)

    torch.testing.assert_close(compute(scores + 3.0), compute(scores))


def test_weight_and_reductions():
    scores = torch.randn(10, 6, dtype=torch.float64)
    target = torch.randint(0, 6, (10,))
    weight = torch.rand(10, dtype=torch.float64)

    def loss(**kw):
        return topk_hinge_loss(scores, target, k=2, epsilon=0.3,
                               generator=torch.Generator().manual_seed(0), **kw)

    per_sample = loss(reduction="none")
    torch.testing.assert_close(loss(reduction="sum"), per_sample.sum())
    torch.testing.assert_close(loss(reduction="mean"), per_sample.mean())
    torch.testing.assert_close(loss(weight=weight, reduction="mean"),
                               (per_sample * weight).sum() / weight.sum())
    torch.testing.assert_close(loss(weight=weight, reduction="none"), per_sample * weight)


def test_imbalanced_loss_matches_brute_force():
    counts = np.array([500, 120, 40, 10, 3, 1, 0, 60])
    gen = torch.Generator().manual_seed(5)
    scores = torch.nn.functional.normalize(torch.randn(24, 8, generator=gen), dim=1)
    scores = scores.double().requires_grad_(True)
    target = torch.randint(0, 8, (24,), generator=gen)
    with use_backend("torch"):  # the reference rebuilds the torch path's noise
        loss = imbalanced_topk_hinge_loss(scores, target, counts, k=2, max_margin=0.3,
                                          scale=30.0, epsilon=0.05, n_perturbations=4,
                                          reduction="none",
                                          generator=torch.Generator().manual_seed(8),
                                          sampler="dense")
    loss.mean().backward()
    n = np.maximum(counts, 1).astype(float)
    margins = 0.3 * n**-0.25 / (n**-0.25).max()
    ref_loss, ref_grad = reference_hinge(scores, target, 2, 0.05, 4, 8, margins, 30.0)
    np.testing.assert_allclose(loss.detach().numpy(), ref_loss, atol=1e-12)
    np.testing.assert_allclose(scores.grad.numpy(), ref_grad, atol=1e-12)


def test_class_margins_formula_and_zero_counts():
    margins = class_margins([1000, 10, 1, 0], max_margin=0.5).numpy()
    np.testing.assert_allclose(margins, 0.5 * np.array([1000, 10, 1, 1]) ** -0.25)
    assert margins.max() == pytest.approx(0.5)


def test_zero_class_count_does_not_poison_the_loss():
    criterion = ImbalancedTopKHingeLoss(class_counts=[0, 0, 5, 10], k=1)
    scores = torch.randn(8, 4).clamp(-1, 1)
    loss = criterion(scores, torch.randint(0, 4, (8,)))
    assert torch.isfinite(loss)
    assert torch.isfinite(criterion.margins).all()


def test_modules_match_functions_and_move_margins():
    scores = torch.randn(6, 5)
    target = torch.randint(0, 5, (6,))
    module = TopKHingeLoss(k=2, epsilon=0.2, n_perturbations=3,
                           generator=torch.Generator().manual_seed(1))
    expected = topk_hinge_loss(scores, target, 2, 0.2, 3,
                               generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(module(scores, target), expected)
    imbalanced = ImbalancedTopKHingeLoss([3, 1, 4, 1, 5], k=2).double()
    assert imbalanced.margins.dtype == torch.float64
    assert "margins" in imbalanced.state_dict()


def test_works_as_skorch_criterion():
    skorch = pytest.importorskip("skorch")
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(6, 5)) * 3
    y = rng.integers(0, 6, 300)
    X = (centers[y] + rng.normal(size=(300, 5))).astype(np.float32)
    net = skorch.NeuralNetClassifier(
        torch.nn.Linear(5, 6), criterion=TopKHingeLoss, criterion__k=2,
        criterion__generator=torch.Generator().manual_seed(0), max_epochs=15, lr=0.1,
        train_split=None, verbose=0,
    )
    net.fit(X, y)
    losses = net.history[:, "train_loss"]
    assert losses[-1] < 0.5 * losses[0]


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda s, t: topk_hinge_loss(s, t, k=0), ValueError, "k must be an integer >= 1"),
        (lambda s, t: topk_hinge_loss(s, t, k=4), ValueError, "k \\+ 1 = 5 classes"),
        (lambda s, t: topk_hinge_loss(s, t.float()), TypeError, "integer class indices"),
        (lambda s, t: topk_hinge_loss(s, t[:2]), ValueError, "target must have shape"),
        (lambda s, t: topk_hinge_loss(s[0], t), ValueError, "scores must have shape"),
        (lambda s, t: topk_hinge_loss(s, t + 4, k=1), ValueError, "outside \\[0, 4\\)"),
        (lambda s, t: topk_hinge_loss(s, t, k=1, reduction="avg"), ValueError, "reduction"),
        (lambda s, t: topk_hinge_loss(s, t, k=1, epsilon=-1), ValueError, "epsilon"),
        (lambda s, t: topk_hinge_loss(s, t, k=1, weight=-torch.ones(5)), ValueError, "weight"),
        (lambda s, t: topk_hinge_loss(s * float("nan"), t, k=1), ValueError, "learning rate"),
        (lambda s, t: imbalanced_topk_hinge_loss(s, t, [1, 2, 3], k=1), ValueError,
         "class_counts has 3 entries"),
        (lambda s, t: imbalanced_topk_hinge_loss(s, t, [1, -2, 3, 4], k=1), ValueError,
         "non-negative"),
        (lambda s, t: imbalanced_topk_hinge_loss(s, t, [1, 2, 3, 4], k=1, scale=0), ValueError,
         "scale"),
    ],
)
def test_bad_input_errors(call, error, match):
    scores = torch.randn(5, 4)
    target = torch.tensor([0, 1, 2, 3, 0])
    with pytest.raises(error, match=match):
        call(scores, target)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu_at_epsilon_zero_and_in_expectation():
    scores = torch.randn(128, 50, dtype=torch.float64)
    target = torch.randint(0, 50, (128,))
    exact_cpu = topk_hinge_loss(scores, target, k=5, epsilon=0.0)
    exact_gpu = topk_hinge_loss(scores.cuda(), target.cuda(), k=5, epsilon=0.0)
    torch.testing.assert_close(exact_gpu.cpu(), exact_cpu)
    cpu = topk_hinge_loss(scores, target, k=5, epsilon=0.5, n_perturbations=2000)
    gpu = topk_hinge_loss(scores.cuda(), target.cuda(), k=5, epsilon=0.5, n_perturbations=2000)
    torch.testing.assert_close(gpu.cpu(), cpu, atol=0.02, rtol=0)
