"""The hinge + cross-entropy criterion against its definition, on any target dtype."""

import pytest
import torch

from sktopk._combined import HingeWithCrossEntropy
from sktopk.losses import TopKHingeLoss


def _inputs(seed=0):
    gen = torch.Generator().manual_seed(seed)
    scores = torch.randn(40, 8, generator=gen, dtype=torch.float64)
    return scores, torch.randint(0, 8, (40,), generator=gen), torch.rand(40, generator=gen,
                                                                         dtype=torch.float64)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_follows_the_reduction_of_the_hinge(reduction):
    scores, target, weight = _inputs()
    hinge = TopKHingeLoss(k=2, epsilon=0.0, reduction=reduction)
    combined = HingeWithCrossEntropy(hinge, 0.3, scale=2.0)
    ce = torch.nn.functional.cross_entropy(2.0 * scores, target, reduction="none")
    per_sample = TopKHingeLoss(k=2, epsilon=0.0, reduction="none")(scores, target)
    expected = {"mean": ((per_sample + 0.3 * ce) * weight).sum() / weight.sum(),
                "sum": ((per_sample + 0.3 * ce) * weight).sum(),
                "none": (per_sample + 0.3 * ce) * weight}[reduction]
    torch.testing.assert_close(combined(scores, target, weight=weight), expected)


def test_any_integer_target_and_a_clear_error_out_of_range():
    scores, target, _ = _inputs(1)
    combined = HingeWithCrossEntropy(TopKHingeLoss(k=2, epsilon=0.0), 0.5)
    expected = combined(scores, target)
    for dtype in (torch.int32, torch.uint8, torch.int16):
        torch.testing.assert_close(combined(scores, target.to(dtype)), expected)
    target[3] = 8
    with pytest.raises(ValueError, match="outside"):
        combined(scores, target)
