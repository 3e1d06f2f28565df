"""Checks every loss of sktopk.functional / sktopk.losses must pass (one list, one test each).

The loss-specific checks (reference formulas, brute force, special cases) stay in
``test_<loss>.py``; what every loss promises is tested here, for all of them:
function/module parity, reductions, per-sample weights, shift invariance, finite
gradients, float32 against float64, integer targets of any dtype, clear errors on
bad input, and use as a skorch ``criterion``. ``PerturbedTopK`` is an operator, not a
loss: it gets the checks that apply to it at the end.

A stochastic loss (the smoothed top-K hinges) gets a generator seeded identically
on both sides of a comparison, so both sides draw the same noise. Checks that
compare different batches (weights as repetition or removal of samples) use its
exact form, ``epsilon=0``, since noise is drawn per row.
"""

import dataclasses
import inspect
from collections.abc import Callable

import numpy as np
import pytest
import torch
from sklearn.base import clone
from skorch import NeuralNetClassifier
from torch import nn

from sktopk import functional, losses
from sktopk._validation import check_loss_inputs

N, C = 12, 7
COUNTS = [40, 1, 7, 0, 12, 3, 25]  # class counts of the imbalanced losses (a zero among them)


@dataclasses.dataclass(frozen=True)
class LossCase:
    name: str
    function: Callable
    module: type
    params: dict  # passed to both twins
    stochastic: bool = False

    def kwargs(self, seed=0, exact=False):
        """Parameters for one call: a fresh generator seeded ``seed``; ``epsilon=0`` if exact."""
        params = dict(self.params)
        if self.stochastic:
            params["generator"] = torch.Generator().manual_seed(seed)
            if exact:
                params["epsilon"] = 0.0
        return params

    def call(self, scores, target, weight=None, reduction="mean", seed=0, exact=False):
        return self.function(scores, target, weight=weight, reduction=reduction,
                             **self.kwargs(seed, exact))

    def criterion(self, reduction="mean", seed=0, exact=False):
        return self.module(reduction=reduction, **self.kwargs(seed, exact))


CASES = [
    LossCase("topk_hinge", functional.topk_hinge_loss, losses.TopKHingeLoss,
             {"k": 2, "epsilon": 1.0, "n_perturbations": 4}, stochastic=True),
    LossCase("imbalanced_topk_hinge", functional.imbalanced_topk_hinge_loss,
             losses.ImbalancedTopKHingeLoss,
             {"class_counts": COUNTS, "k": 2, "max_margin": 0.3, "scale": 10.0,
              "epsilon": 0.1, "n_perturbations": 4}, stochastic=True),
    LossCase("smooth_topk_svm", functional.smooth_topk_svm_loss, losses.SmoothTopKSVMLoss,
             {"k": 2, "tau": 0.5, "alpha": 1.0}),
    LossCase("focal", functional.focal_loss, losses.FocalLoss, {"gamma": 2.0}),
    LossCase("ldam", functional.ldam_loss, losses.LDAMLoss,
             {"class_counts": COUNTS, "max_margin": 0.5, "scale": 5.0}),
    LossCase("logit_adjusted", functional.logit_adjusted_cross_entropy,
             losses.LogitAdjustedCrossEntropyLoss, {"class_counts": COUNTS, "tau": 1.0}),
]
IDS = [case.name for case in CASES]
HINGES = {"topk_hinge", "imbalanced_topk_hinge"}


def test_every_public_loss_is_covered():
    tested = {case.module.__name__ for case in CASES} | {"PerturbedTopK"}
    assert tested == set(losses.__all__)
    tested_functions = {case.function.__name__ for case in CASES}
    assert tested_functions | {"perturbed_topk", "class_margins"} == set(functional.__all__)


def problem(seed, n=N, dtype=torch.float64, magnitude=2.0):
    gen = torch.Generator().manual_seed(seed)
    scores = magnitude * torch.randn(n, C, generator=gen, dtype=dtype)
    target = torch.randint(0, C, (n,), generator=gen)
    weight = torch.rand(n, generator=gen, dtype=dtype)
    return scores, target, weight


def value_and_grad(fn, scores, *args, **kwargs):
    scores = scores.detach().clone().requires_grad_(True)
    value = fn(scores, *args, **kwargs)
    (grad,) = torch.autograd.grad(value.sum(), scores)
    return value.detach(), grad


# ------------------------------------------------------------------- the twins
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_module_has_the_function_parameters_and_defaults(case):
    function = inspect.signature(case.function).parameters
    module = inspect.signature(case.module).parameters
    assert set(module) <= set(function) - {"scores", "target", "weight"}
    for name, parameter in module.items():
        assert parameter.default == function[name].default, name
    assert set(function) - set(module) == {"scores", "target", "weight"}


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_function_and_module_agree(case, reduction):
    scores, target, weight = problem(1)
    for w in (None, weight):
        expected = value_and_grad(case.call, scores, target, weight=w, reduction=reduction)
        got = value_and_grad(case.criterion(reduction), scores, target, weight=w)
        # Same bits, except that the modules with margins keep them in torch's default
        # dtype (a buffer, float32) where the functions compute them in float64.
        tol = 1e-6 if "class_counts" in case.params else 0.0
        torch.testing.assert_close(got, expected, rtol=tol, atol=tol)


# ------------------------------------------------------- reductions and weights
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_reductions_and_weighted_mean(case):
    scores, target, weight = problem(2)
    per_sample = case.call(scores, target, reduction="none")
    assert per_sample.shape == (N,) and per_sample.dtype == scores.dtype
    assert (per_sample >= 0).all()
    torch.testing.assert_close(case.call(scores, target), per_sample.mean())
    torch.testing.assert_close(case.call(scores, target, reduction="sum"), per_sample.sum())
    # Weighted: "none" scales each sample, "sum" adds them, "mean" divides by the weights' sum.
    torch.testing.assert_close(case.call(scores, target, weight, reduction="none"),
                               weight * per_sample)
    torch.testing.assert_close(case.call(scores, target, weight, reduction="sum"),
                               (weight * per_sample).sum())
    torch.testing.assert_close(case.call(scores, target, weight),
                               (weight * per_sample).sum() / weight.sum())
    # Unit weights change nothing; weights are only relative under "mean".
    torch.testing.assert_close(case.call(scores, target, torch.ones(N, dtype=scores.dtype)),
                               per_sample.mean())
    torch.testing.assert_close(case.call(scores, target, 7.5 * weight),
                               case.call(scores, target, weight))


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_zero_weight_is_a_sample_left_out(case, reduction):
    scores, target, weight = problem(3)
    weight[::3] = 0.0
    keep = weight > 0
    value, grad = value_and_grad(case.call, scores, target, weight=weight, reduction=reduction,
                                 exact=True)
    kept_value, kept_grad = value_and_grad(case.call, scores[keep], target[keep],
                                           weight=weight[keep], reduction=reduction, exact=True)
    torch.testing.assert_close(value, kept_value)
    torch.testing.assert_close(grad[keep], kept_grad)
    assert (grad[~keep] == 0).all()


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_integer_weight_is_repetition(case, reduction):
    scores, target, _ = problem(4)
    counts = torch.randint(0, 4, (N,), generator=torch.Generator().manual_seed(5))
    counts[0] = 2  # at least one sample
    repeated = case.call(scores.repeat_interleave(counts, dim=0),
                         target.repeat_interleave(counts), reduction=reduction, exact=True)
    for weight in (counts, counts.double()):  # an integer weight tensor is accepted as is
        torch.testing.assert_close(
            case.call(scores, target, weight, reduction=reduction, exact=True), repeated)


# ------------------------------------------------------------ numerical checks
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_adding_a_constant_to_every_score_changes_nothing(case):
    scores, target, weight = problem(6)
    shift = 10 * torch.randn(N, 1, generator=torch.Generator().manual_seed(7),
                             dtype=scores.dtype)  # one constant per sample
    value, grad = value_and_grad(case.call, scores, target, weight=weight, reduction="none")
    shifted, shifted_grad = value_and_grad(case.call, scores + shift, target, weight=weight,
                                           reduction="none")
    torch.testing.assert_close(shifted, value, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(shifted_grad, grad, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("magnitude", [1.0, 1e3, 1e4])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_value_and_gradient_are_finite(case, magnitude, dtype):
    scores, target, weight = problem(8, dtype=dtype, magnitude=magnitude)
    for reduction in ("mean", "sum"):
        value, grad = value_and_grad(case.call, scores, target, weight=weight,
                                     reduction=reduction)
        assert value.dtype == grad.dtype == dtype
        assert torch.isfinite(value).all() and torch.isfinite(grad).all()


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_float32_agrees_with_float64(case):
    scores, target, weight = problem(9, dtype=torch.float32)
    value32, grad32 = value_and_grad(case.call, scores, target, weight=weight,
                                     reduction="none", exact=True)
    value64, grad64 = value_and_grad(case.call, scores.double(), target, weight=weight.double(),
                                     reduction="none", exact=True)
    assert value32.dtype == grad32.dtype == torch.float32
    torch.testing.assert_close(value32.double(), value64, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(grad32.double(), grad64, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------- targets
NARROW_INTEGERS = [torch.uint8, torch.int8, torch.int16]


def _target_dtype_params():
    for case in CASES:
        for dtype in (*NARROW_INTEGERS, torch.int32):
            yield pytest.param(case, dtype, id=f"{case.name}-{dtype}")


@pytest.mark.parametrize(("case", "dtype"), list(_target_dtype_params()))
def test_any_integer_target_dtype_is_accepted(case, dtype):
    scores, target, weight = problem(10)
    expected = value_and_grad(case.call, scores, target, weight=weight, reduction="none")
    got = value_and_grad(case.call, scores, target.to(dtype), weight=weight, reduction="none")
    torch.testing.assert_close(got, expected, rtol=0, atol=0)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_narrow_integer_target_out_of_range_is_refused(case):
    scores, target, _ = problem(11)
    # uint8 cannot hold -1: 255 is what a wrapped-around label looks like.
    for bad, index in ((target.to(torch.uint8).index_fill(0, torch.tensor([2]), 255), 255),
                       (target.to(torch.int8).index_fill(0, torch.tensor([2]), -1), -1)):
        with pytest.raises((ValueError, TypeError),
                           match=rf"class index {index}, outside \[0, {C}\)|pass target.long"):
            case.call(scores, bad)


# -------------------------------------------------------------------- bad input
def _bad_inputs():
    scores, target, weight = problem(12)
    nan_scores = scores.clone()
    nan_scores[3, 4] = float("nan")
    inf_scores = scores.clone()
    inf_scores[0, 0] = float("inf")
    negative = weight.clone()
    negative[5] = -0.1
    nan_weight = weight.clone()
    nan_weight[1] = float("nan")
    return {
        "scores 1-d": ((scores[:, 0], target, None), ValueError, "scores must have shape"),
        "scores 3-d": ((scores[None], target, None), ValueError, "scores must have shape"),
        "scores not a tensor": ((scores.numpy(), target, None), TypeError,
                                "scores must be a torch.Tensor"),
        "integer scores": ((scores.long(), target, None), TypeError, "floating-point"),
        "target not a tensor": ((scores, target.tolist(), None), TypeError,
                                "target must be a torch.Tensor"),
        "target 2-d": ((scores, target[:, None], None), ValueError,
                       rf"target must have shape \({N},\)"),
        "target too short": ((scores, target[:-1], None), ValueError,
                             rf"target must have shape \({N},\)"),
        "float target": ((scores, target.double(), None), TypeError,
                         "target must hold integer class indices"),
        "bool target": ((scores, target > 2, None), TypeError,
                        "target must hold integer class indices"),
        "one-hot target": ((scores, torch.eye(C)[target], None), TypeError,
                           "pass the index of the true class"),
        "target = C": ((scores, target.index_fill(0, torch.tensor([4]), C), None), ValueError,
                       rf"class index {C}, outside \[0, {C}\)"),
        "target = -1": ((scores, target.index_fill(0, torch.tensor([4]), -1), None), ValueError,
                        rf"class index -1, outside \[0, {C}\)"),
        "NaN scores": ((nan_scores, target, None), ValueError, "scores contains NaN"),
        "inf scores": ((inf_scores, target, None), ValueError, "scores contains NaN or infinite"),
        "weight shape": ((scores, target, weight[:-1]), ValueError,
                         rf"weight must have shape \({N},\)"),
        "negative weight": ((scores, target, negative), ValueError, "non-negative"),
        "NaN weight": ((scores, target, nan_weight), ValueError, "finite, non-negative"),
    }


BAD_INPUTS = _bad_inputs()


@pytest.mark.parametrize("bad", list(BAD_INPUTS))
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_bad_input_gets_a_clear_error(case, bad):
    (scores, target, weight), error, match = BAD_INPUTS[bad]
    with pytest.raises(error, match=match):
        case.call(scores, target, weight)
    with pytest.raises(error, match=match):
        case.criterion()(scores, target, weight=weight)


def test_finite_scores_whose_sum_overflows_pass_the_input_check():
    # The check reads the sum of the scores first: an overflow of finite scores
    # must not pass for an infinite score, and a NaN among them must still count.
    scores = torch.full((4, 3), 3e38)
    target = torch.tensor([0, 1, 2, 0])
    assert torch.isinf(scores.sum())
    checked, weight = check_loss_inputs(scores, target)
    assert weight is None and checked.dtype == torch.long
    scores[2, 1] = float("nan")
    with pytest.raises(ValueError, match="scores contains NaN or infinite"):
        check_loss_inputs(scores, target)


@pytest.mark.parametrize("reduction", ["avg", None, "MEAN", "batchmean"])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_bad_reduction(case, reduction):
    scores, target, _ = problem(13)
    with pytest.raises(ValueError, match=r"reduction must be one of \('mean', 'sum', 'none'\)"):
        case.call(scores, target, reduction=reduction)
    with pytest.raises(ValueError, match="reduction must be one of"):
        case.criterion(reduction)


# ------------------------------------------------------------------- in skorch
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_works_as_a_skorch_criterion(case):
    rng = np.random.default_rng(0)
    y = np.arange(60) % C
    X = (rng.normal(size=(C, 5))[y] + 0.3 * rng.normal(size=(60, 5))).astype(np.float32)
    params = {f"criterion__{name}": value for name, value in case.kwargs().items()
              if name != "generator"}  # a generator is not clone-able; the noise is global
    module = nn.Sequential(nn.Linear(5, 16), nn.ReLU(), nn.Linear(16, C))
    net = NeuralNetClassifier(module, criterion=case.module, max_epochs=8, lr=0.05,
                              batch_size=20, train_split=None, verbose=0, **params)
    with torch.random.fork_rng():  # skorch initialises the module from the global RNG
        torch.manual_seed(0)
        net.fit(X, y.astype(np.int32))  # the target reaches the loss as torch.int32
    assert isinstance(net.criterion_, case.module)
    for name, value in case.kwargs().items():
        if name not in ("generator", "class_counts"):
            assert getattr(net.criterion_, name) == value
    train_loss = net.history[:, "train_loss"]
    assert np.isfinite(train_loss).all() and train_loss[-1] < train_loss[0]
    assert net.predict_proba(X).shape == (60, C)  # raw scores: skorch applies no softmax here
    # Its parameters are searchable: clone, set_params through the criterion__ prefix.
    if "k" in case.params:
        refit = clone(net).set_params(criterion__k=3, max_epochs=1)
        with torch.random.fork_rng():
            refit.fit(X, y)
        assert refit.criterion_.k == 3


# ----------------------------------------------------- the operator, PerturbedTopK
def _operator_kwargs(seed=0, epsilon=0.5):
    return {"k": 3, "epsilon": epsilon, "n_perturbations": 5, "dim": 1,
            "generator": torch.Generator().manual_seed(seed)}


def test_operator_function_and_module_agree():
    x = torch.randn(4, 9, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    expected = value_and_grad(functional.perturbed_topk, x, **_operator_kwargs())
    got = value_and_grad(losses.PerturbedTopK(**_operator_kwargs()), x)
    assert got[0].shape == (4, 3)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    function = inspect.signature(functional.perturbed_topk).parameters
    for name, parameter in inspect.signature(losses.PerturbedTopK).parameters.items():
        assert parameter.default == function[name].default, name


def test_operator_moves_with_a_constant_and_its_gradient_is_a_probability():
    x = torch.randn(6, 9, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    value, grad = value_and_grad(functional.perturbed_topk, x, **_operator_kwargs())
    shifted, shifted_grad = value_and_grad(functional.perturbed_topk, x + 4.0,
                                           **_operator_kwargs())
    torch.testing.assert_close(shifted, value + 4.0)
    torch.testing.assert_close(shifted_grad, grad)
    torch.testing.assert_close(grad.sum(dim=1), torch.ones(6, dtype=torch.float64))


@pytest.mark.parametrize("magnitude", [1.0, 1e4])
def test_operator_float32_agrees_with_float64_and_stays_finite(magnitude):
    x = magnitude * torch.randn(6, 9, generator=torch.Generator().manual_seed(2))
    value32, grad32 = value_and_grad(functional.perturbed_topk, x, **_operator_kwargs(epsilon=0))
    value64, grad64 = value_and_grad(functional.perturbed_topk, x.double(),
                                     **_operator_kwargs(epsilon=0))
    assert value32.dtype == torch.float32
    torch.testing.assert_close(value32.double(), value64, rtol=1e-6, atol=0)
    torch.testing.assert_close(grad32.double(), grad64)
    _, grad = value_and_grad(functional.perturbed_topk, x, **_operator_kwargs(epsilon=1.0))
    assert torch.isfinite(grad).all()


@pytest.mark.parametrize(
    ("x", "kwargs", "error", "match"),
    [
        (torch.tensor([[1.0, float("nan"), 0.0]]), {}, ValueError, "x contains NaN"),
        (torch.tensor([[1, 2, 3]]), {}, TypeError, "floating-point"),
        (torch.zeros(2, 3), {"k": 4}, ValueError, "k"),
        (torch.zeros(2, 3), {"k": 0}, ValueError, "k must be an integer >= 1"),
        (torch.zeros(2, 3), {"epsilon": -1.0}, ValueError, "epsilon must be a finite number"),
        (torch.zeros(2, 3), {"dim": 2}, ValueError, "dim=2 is out of range"),
    ],
)
def test_operator_bad_input(x, kwargs, error, match):
    params = {"k": 2, **kwargs}
    with pytest.raises(error, match=match):
        functional.perturbed_topk(x, **params)
