"""The sampler decision a loss module keeps over its calls (sktopk/_sampler_plan.py)."""

import pytest
import torch

from sktopk import _sparse_perturbed
from sktopk._sampler_plan import SamplerPlan, sampler_of
from sktopk.functional import topk_hinge_loss
from sktopk.losses import ImbalancedTopKHingeLoss, PerturbedTopK, TopKHingeLoss

from .test_sparse_perturbed import _scores


def test_decision_is_reused_for_refresh_calls_then_made_again():
    plan, made = SamplerPlan(refresh=3), []

    def make():
        made.append(len(made))
        return ("sparse", (len(made), len(made)))

    decisions = [plan.decide("key", make) for _ in range(7)]
    assert made == [0, 1, 2]
    assert decisions == [("sparse", (1, 1))] * 3 + [("sparse", (2, 2))] * 3 + [("sparse", (3, 3))]
    # Another call shape (columns, k, epsilon, B, dtype) gets its own decision at once.
    assert plan.decide("other", make) == ("sparse", (4, 4))


@pytest.mark.parametrize("module", [TopKHingeLoss(k=3), PerturbedTopK(k=3),
                                    ImbalancedTopKHingeLoss([5, 3, 2, 1, 1, 1], k=3)])
def test_modules_pass_their_own_plan_for_auto_only(module):
    plan = sampler_of(module)
    assert isinstance(plan, SamplerPlan) and sampler_of(module) is plan
    module.sampler = "dense"
    assert sampler_of(module) == "dense"


def test_module_decides_once_per_refresh_and_matches_the_functional_first_call(monkeypatch):
    calls = []
    estimate = _sparse_perturbed._rule_estimates  # what every decision computes

    def counting(*args, **kwargs):
        calls.append(1)
        return estimate(*args, **kwargs)

    monkeypatch.setattr(_sparse_perturbed, "_rule_estimates", counting)
    x = _scores("trained", 256, 2000, seed=1).float()
    y = torch.zeros(256, dtype=torch.long)
    module = TopKHingeLoss(k=5, generator=torch.Generator().manual_seed(3))
    first = module(x, y)
    expected = topk_hinge_loss(x, y, 5, generator=torch.Generator().manual_seed(3))
    # The first call of a module decides as the functional loss does: same numbers.
    assert torch.equal(first, expected)
    calls.clear()
    for _ in range(40):
        module(x, y)
    assert len(calls) == 2  # calls 2-41 of the module: new decisions at calls 17 and 33
    # Two fresh modules with the same seed draw the same sequence (seeded fits).
    a = TopKHingeLoss(k=5, generator=torch.Generator().manual_seed(8))
    b = TopKHingeLoss(k=5, generator=torch.Generator().manual_seed(8))
    for _ in range(20):
        assert torch.equal(a(x, y), b(x, y))
