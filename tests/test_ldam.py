import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sktopk.functional import class_margins, ldam_loss
from sktopk.losses import LDAMLoss


def reference_ldam(scores, target, class_counts, max_margin, scale):
    """Straightforward float64 formula: cross-entropy of scale * (s - m_y e_y)."""
    counts = np.maximum(np.asarray(class_counts, dtype=float), 1.0)
    margins = counts ** -0.25
    margins = max_margin * margins / margins.max()
    s = scores.detach().double().numpy().copy()
    y = target.numpy()
    rows = np.arange(len(y))
    s[rows, y] -= margins[y]
    logits = scale * s
    top = logits.max(axis=1, keepdims=True)
    log_norm = top[:, 0] + np.log(np.exp(logits - top).sum(axis=1))
    return log_norm - logits[rows, y]


def random_problem(seed, n=40, c=6, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    scores = (2 * torch.rand(n, c, generator=gen, dtype=dtype) - 1)  # cosine-like
    target = torch.randint(0, c, (n,), generator=gen)
    counts = torch.randint(1, 500, (c,), generator=gen).tolist()
    return scores, target, counts


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(("max_margin", "scale"), [(0.5, 30.0), (0.2, 40.0), (1.0, 1.0)])
def test_matches_float64_formula(dtype, max_margin, scale):
    scores, target, counts = random_problem(int(100 * max_margin + scale), dtype=dtype)
    loss = ldam_loss(scores, target, counts, max_margin=max_margin, scale=scale,
                     reduction="none")
    tol = 2e-5 if dtype == torch.float32 else 1e-12
    np.testing.assert_allclose(loss.double().numpy(),
                               reference_ldam(scores, target, counts, max_margin, scale),
                               rtol=tol, atol=tol)


def test_zero_margin_is_scaled_cross_entropy():
    scores, target, counts = random_problem(1)
    torch.testing.assert_close(ldam_loss(scores, target, counts, max_margin=0.0, scale=7.0),
                               F.cross_entropy(7.0 * scores, target))


def test_zero_class_count_gives_finite_loss_and_the_largest_margin():
    scores, target, counts = random_problem(2)
    counts[3] = 0
    target[:5] = 3
    scores.requires_grad_(True)
    loss = ldam_loss(scores, target, counts, max_margin=0.4, reduction="none")
    loss.sum().backward()
    assert torch.isfinite(loss).all() and torch.isfinite(scores.grad).all()
    np.testing.assert_allclose(loss.detach().numpy(),
                               reference_ldam(scores, target, counts, 0.4, 30.0), rtol=1e-9,
                               atol=1e-12)
    assert LDAMLoss(counts, max_margin=0.4).margins[3].item() == pytest.approx(0.4)


def test_gradcheck():
    scores, target, counts = random_problem(3, n=5, c=4)
    weight = torch.rand(5, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    assert torch.autograd.gradcheck(
        lambda s: ldam_loss(s, target, counts, scale=5.0, weight=weight),
        (scores.requires_grad_(True),), fast_mode=True)


def test_module_margin_buffer_moves_with_the_module():
    scores, target, counts = random_problem(4)
    criterion = LDAMLoss(counts, max_margin=0.3, scale=20.0)
    assert "margins" in dict(criterion.named_buffers())
    assert "margins" in criterion.state_dict()
    torch.testing.assert_close(criterion.margins,
                               class_margins(counts, 0.3).to(torch.get_default_dtype()))
    criterion.to(torch.float64)
    assert criterion.margins.dtype == torch.float64
    if torch.cuda.is_available():
        criterion.to("cuda")
        assert criterion.margins.device.type == "cuda"
        loss = criterion(scores.cuda(), target.cuda())
        assert loss.device.type == "cuda"
    # Last: a meta module holds no data and cannot be moved anywhere else.
    criterion.to("meta")
    assert criterion.margins.device.type == "meta"


def test_module_repr():
    # Parity with ldam_loss, reductions, weights and bad input: tests/test_losses_common.py.
    _, _, counts = random_problem(5)
    assert repr(LDAMLoss(counts)) == (
        "LDAMLoss(n_classes=6, max_margin=0.5, scale=30.0, reduction='mean')")


def test_wrong_class_counts_length():
    scores, target, counts = random_problem(6)
    with pytest.raises(ValueError, match="class_counts has 5 entries but scores have 6 columns"):
        ldam_loss(scores, target, counts[:5])
    with pytest.raises(ValueError, match="class_counts has 7 entries but scores have 6 columns"):
        LDAMLoss(counts + [3])(scores, target)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"scale": 0.0}, ValueError, "scale must be > 0"),
        ({"max_margin": -0.1}, ValueError, "max_margin must be a finite number >= 0"),
        ({"class_counts": [1, -2, 3, 4, 5, 6]}, ValueError, "class_counts must hold finite"),
        ({"class_counts": [[1, 2, 3]]}, ValueError, "class_counts must be a 1-d sequence"),
    ],
)
def test_bad_parameters(kwargs, error, match):
    scores, target, counts = random_problem(7)
    params = {"class_counts": counts, **kwargs}
    with pytest.raises(error, match=match):
        ldam_loss(scores, target, **params)
    with pytest.raises(error, match=match):
        LDAMLoss(**params)
