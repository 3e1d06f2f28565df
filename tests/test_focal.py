import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sktopk.functional import focal_loss
from sktopk.losses import FocalLoss


def reference_focal(scores, target, gamma):
    """Straightforward float64 formula: (1 - p_y) ** gamma * (-log p_y)."""
    s = scores.detach().double().numpy()
    y = target.numpy()
    shifted = s - s.max(axis=1, keepdims=True)
    p = np.exp(shifted) / np.exp(shifted).sum(axis=1, keepdims=True)
    p_y = p[np.arange(len(y)), y]
    return (1.0 - p_y) ** gamma * -np.log(p_y)


def random_problem(seed, n=50, c=7, dtype=torch.float64, scale=3.0):
    gen = torch.Generator().manual_seed(seed)
    scores = scale * torch.randn(n, c, generator=gen, dtype=dtype)
    target = torch.randint(0, c, (n,), generator=gen)
    return scores, target


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_gamma_zero_is_cross_entropy(reduction):
    scores, target = random_problem(0)
    scores.requires_grad_(True)
    loss = focal_loss(scores, target, gamma=0.0, reduction=reduction)
    ref = F.cross_entropy(scores, target, reduction=reduction)
    torch.testing.assert_close(loss, ref)
    (grad,) = torch.autograd.grad(loss.sum(), scores)
    (ref_grad,) = torch.autograd.grad(ref.sum(), scores)
    torch.testing.assert_close(grad, ref_grad)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("gamma", [0.5, 1.0, 2.0, 5.0])
def test_matches_float64_formula(dtype, gamma):
    scores, target = random_problem(int(10 * gamma), dtype=dtype)
    loss = focal_loss(scores, target, gamma=gamma, reduction="none")
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    np.testing.assert_allclose(loss.double().numpy(), reference_focal(scores, target, gamma),
                               rtol=tol, atol=tol)


def test_gradcheck():
    scores, target = random_problem(1, n=4, c=5)
    weight = torch.rand(4, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    for gamma in (0.5, 2.0):
        assert torch.autograd.gradcheck(
            lambda s, g=gamma: focal_loss(s, target, gamma=g, weight=weight, reduction="none"),
            (scores.requires_grad_(True),), fast_mode=True)


@pytest.mark.parametrize("gamma", [0.3, 2.0])
def test_stable_for_large_scores(gamma):
    # p_y rounds to exactly 1 (row 0) and to exactly 0 in float64's exp (row 1).
    scores = torch.tensor([[1e4, 0.0, -1e4], [-1e4, 0.0, 1e4]], requires_grad=True)
    loss = focal_loss(scores, torch.tensor([0, 0]), gamma=gamma, reduction="none")
    loss.sum().backward()
    assert torch.isfinite(loss).all() and torch.isfinite(scores.grad).all()
    assert loss[0].item() == 0.0
    torch.testing.assert_close(loss[1], torch.tensor(2e4))


def test_module_repr():
    # Parity with focal_loss, reductions, weights and bad input: tests/test_losses_common.py.
    assert repr(FocalLoss(gamma=0.5, reduction="sum")) == "FocalLoss(gamma=0.5, reduction='sum')"


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"gamma": -1.0}, ValueError, "gamma must be a finite number >= 0"),
        ({"gamma": "2"}, TypeError, "gamma must be a non-negative real number"),
    ],
)
def test_bad_parameters(kwargs, error, match):
    scores, target = random_problem(5)
    with pytest.raises(error, match=match):
        focal_loss(scores, target, **kwargs)
    with pytest.raises(error, match=match):
        FocalLoss(**kwargs)
