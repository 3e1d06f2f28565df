import numpy as np
import pytest
import torch

from sktopk._logit_adjusted import log_class_prior, posthoc_logit_adjust
from sktopk.functional import logit_adjusted_cross_entropy
from sktopk.losses import LogitAdjustedCrossEntropyLoss


def _reference(scores, target, counts, tau):
    """float64 closed form: -log softmax(s + tau log pi)_y, by hand."""
    s = scores.double().numpy()
    prior = np.asarray(counts, dtype=np.float64)
    prior = np.maximum(prior, 1) / np.maximum(prior, 1).sum()
    z = s + tau * np.log(prior)
    z = z - z.max(axis=1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return -log_p[np.arange(len(target)), target.numpy()]


@pytest.mark.parametrize("tau", [0.0, 0.5, 1.0, 2.0])
def test_matches_the_closed_form_on_random_inputs(tau):
    gen = torch.Generator().manual_seed(int(tau * 10))
    scores = torch.randn(64, 9, generator=gen, dtype=torch.float64)
    target = torch.randint(0, 9, (64,), generator=gen)
    counts = [500, 200, 80, 40, 10, 5, 2, 1, 0]
    got = logit_adjusted_cross_entropy(scores, target, counts, tau=tau, reduction="none")
    np.testing.assert_allclose(got.numpy(), _reference(scores, target, counts, tau), rtol=1e-12)
    module = LogitAdjustedCrossEntropyLoss(counts, tau=tau, reduction="none")
    np.testing.assert_allclose(module(scores, target).numpy(), got.numpy(), rtol=1e-6)


def test_tau_zero_is_plain_cross_entropy_and_weights_give_a_weighted_mean():
    gen = torch.Generator().manual_seed(0)
    scores, target = torch.randn(20, 4, generator=gen), torch.randint(0, 4, (20,), generator=gen)
    plain = torch.nn.functional.cross_entropy(scores, target)
    assert torch.allclose(logit_adjusted_cross_entropy(scores, target, [5, 3, 2, 1], tau=0.0),
                          plain)
    weight = torch.rand(20, generator=gen)
    per = logit_adjusted_cross_entropy(scores, target, [5, 3, 2, 1], reduction="none")
    got = logit_adjusted_cross_entropy(scores, target, [5, 3, 2, 1], weight=weight)
    assert torch.allclose(got, (per * weight).sum() / weight.sum())


def test_posthoc_adjustment_closed_form_numpy_and_torch():
    counts = np.array([90, 9, 1])
    scores = np.array([[1.0, 0.5, 0.0]])
    expected = scores - 0.7 * np.log(counts / counts.sum())
    np.testing.assert_allclose(posthoc_logit_adjust(scores, counts, 0.7), expected)
    got = posthoc_logit_adjust(torch.tensor(scores), counts, 0.7)
    np.testing.assert_allclose(got.numpy(), expected)
    np.testing.assert_allclose(log_class_prior(counts).numpy(), np.log(counts / 100))


def test_set_class_counts_refreshes_the_prior():
    module = LogitAdjustedCrossEntropyLoss([1, 1])
    module.set_class_counts([3, 1])
    assert torch.allclose(module.log_prior, torch.log(torch.tensor([0.75, 0.25])))


def test_bad_inputs_raise_clear_errors():
    scores, target = torch.zeros(2, 3), torch.tensor([0, 1])
    with pytest.raises(ValueError, match="tau must be a finite number >= 0"):
        logit_adjusted_cross_entropy(scores, target, [1, 2, 3], tau=-1.0)
    with pytest.raises(ValueError, match="class_counts has 2 entries but scores have 3"):
        logit_adjusted_cross_entropy(scores, target, [1, 2])
    with pytest.raises(ValueError, match="reduction must be one of"):
        LogitAdjustedCrossEntropyLoss([1, 2, 3], reduction="avg")
