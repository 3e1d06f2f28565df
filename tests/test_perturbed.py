import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from sktopk import _cpu_kernel
from sktopk.backends import use_backend
from sktopk.functional import perturbed_topk
from sktopk.losses import PerturbedTopK

from ._references import reference_perturbed_topk


# The CPU kernel takes independent noise only: shared noise is the torch path's.
@pytest.mark.parametrize(("backend", "noise"), [("torch", "independent"), ("torch", "shared"),
                                                ("cpu_kernel", "independent")])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("k", [1, 3, 7])
def test_matches_float64_brute_force_with_same_noise(dtype, noise, k, backend):
    if backend == "cpu_kernel" and _cpu_kernel.library() is None:
        pytest.skip(f"the CPU kernel is not available: {_cpu_kernel.unavailable_reason()}")
    seed = 1234 + k
    x = torch.randn(13, 17, dtype=dtype, generator=torch.Generator().manual_seed(seed))
    x.requires_grad_(True)
    gen = torch.Generator().manual_seed(seed)
    with use_backend(backend):
        value = perturbed_topk(x, k, epsilon=0.7, n_perturbations=6, generator=gen,
                               noise=noise, sampler="dense")
    upstream = torch.rand(13, dtype=dtype, generator=torch.Generator().manual_seed(0))
    value.backward(upstream)
    ref_value, ref_grad = reference_perturbed_topk(x, k, 0.7, 6, seed, noise, backend)
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    np.testing.assert_allclose(value.detach().double().numpy(), ref_value, rtol=tol, atol=tol)
    expected_grad = ref_grad * upstream.double().numpy()[:, None]
    np.testing.assert_allclose(x.grad.double().numpy(), expected_grad, rtol=tol, atol=tol)


def test_epsilon_zero_is_exact_kth_largest_with_one_hot_gradient():
    x = torch.randn(50, 9, dtype=torch.float64, requires_grad=True)
    for k in range(1, 10):
        value = perturbed_topk(x, k, epsilon=0.0)
        expected = torch.sort(x.detach(), dim=1, descending=True).values[:, k - 1]
        torch.testing.assert_close(value.detach(), expected)
        (grad,) = torch.autograd.grad(value.sum(), x)
        assert torch.equal(grad.sum(dim=1), torch.ones(50, dtype=torch.float64))
        winners = grad.argmax(dim=1)
        torch.testing.assert_close(x.detach().gather(1, winners[:, None])[:, 0], expected)


@pytest.mark.parametrize("noise", ["independent", "shared"])
def test_large_b_matches_closed_form_expectation_of_max_of_two(noise):
    # For two Gaussians with means a, b and std eps: E[max] and its gradient are
    # known in closed form (theta = eps * sqrt(2), d = a - b).
    a, b, eps = 0.3, -0.2, 0.8
    x = torch.tensor([[a, b]], dtype=torch.float64, requires_grad=True)
    gen = torch.Generator().manual_seed(7)
    value = perturbed_topk(x, 1, epsilon=eps, n_perturbations=200_000, generator=gen,
                           noise=noise)
    value.backward()
    theta, d = eps * math.sqrt(2.0), a - b
    cdf = 0.5 * (1.0 + math.erf(d / theta / math.sqrt(2.0)))
    pdf = math.exp(-0.5 * (d / theta) ** 2) / math.sqrt(2.0 * math.pi)
    expected_value = a * cdf + b * (1.0 - cdf) + theta * pdf
    # Monte-Carlo standard error is about eps / sqrt(B) = 0.002; allow 4 of them.
    assert abs(value.item() - expected_value) < 0.008
    assert abs(x.grad[0, 0].item() - cdf) < 0.006
    assert abs(x.grad[0, 1].item() - (1.0 - cdf)) < 0.006


def test_large_b_matches_independent_monte_carlo_second_largest():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(1, 6))
    draws = x + 0.5 * rng.normal(size=(400_000, 6))
    expected = np.sort(draws, axis=1)[:, -2].mean()
    gen = torch.Generator().manual_seed(3)
    value = perturbed_topk(torch.tensor(x), 2, epsilon=0.5, n_perturbations=100_000,
                           generator=gen)
    assert abs(value.item() - expected) < 0.01


def test_gradient_rows_are_probability_vectors():
    x = torch.randn(40, 30, requires_grad=True)
    value = perturbed_topk(x, 4, epsilon=1.0, n_perturbations=7)
    (grad,) = torch.autograd.grad(value.sum(), x)
    assert (grad >= 0).all()
    torch.testing.assert_close(grad.sum(dim=1), torch.ones(40))


def test_shift_equivariance():
    x = torch.randn(20, 11, dtype=torch.float64)
    base = perturbed_topk(x, 3, 0.5, 5, generator=torch.Generator().manual_seed(1))
    shifted = perturbed_topk(x + 10.0, 3, 0.5, 5, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(shifted, base + 10.0)


def test_any_dim_and_shape():
    x = torch.randn(3, 8, 5, dtype=torch.float64)
    along_1 = perturbed_topk(x, 2, 0.3, 4, dim=1, generator=torch.Generator().manual_seed(5))
    manual = perturbed_topk(x.movedim(1, -1), 2, 0.3, 4,
                            generator=torch.Generator().manual_seed(5))
    assert along_1.shape == (3, 5)
    torch.testing.assert_close(along_1, manual)
    vector = torch.tensor([1.0, 5.0, 3.0])
    assert perturbed_topk(vector, 2, epsilon=0.0).item() == 3.0


def test_seeded_generator_reproduces_and_different_seeds_differ():
    x = torch.randn(10, 20)
    first = perturbed_topk(x, 2, generator=torch.Generator().manual_seed(0))
    again = perturbed_topk(x, 2, generator=torch.Generator().manual_seed(0))
    other = perturbed_topk(x, 2, generator=torch.Generator().manual_seed(1))
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


def test_does_not_touch_global_rng_when_given_a_generator():
    torch.manual_seed(0)
    before = torch.get_rng_state()
    perturbed_topk(torch.randn(4, 6, generator=torch.Generator().manual_seed(0)), 2,
                   generator=torch.Generator().manual_seed(1))
    assert torch.equal(before, torch.get_rng_state())


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_inputs(dtype):
    x = torch.randn(6, 10).to(dtype).requires_grad_(True)
    value = perturbed_topk(x, 2, 0.1, 3)
    value.sum().backward()
    assert value.dtype == dtype and x.grad.dtype == dtype
    torch.testing.assert_close(x.grad.float().sum(1), torch.ones(6), rtol=0, atol=1e-2)


def test_module_twin_matches_function():
    x = torch.randn(5, 12)
    module = PerturbedTopK(3, epsilon=0.4, n_perturbations=4,
                           generator=torch.Generator().manual_seed(9))
    expected = perturbed_topk(x, 3, 0.4, 4, generator=torch.Generator().manual_seed(9))
    torch.testing.assert_close(module(x), expected)
    assert "k=3" in repr(module)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"k": 0}, ValueError, "k must be an integer >= 1"),
        ({"k": 2.5}, TypeError, "k must be an integer"),
        ({"k": 9}, ValueError, "larger than the number of entries"),
        ({"k": 2, "epsilon": -1.0}, ValueError, "epsilon"),
        ({"k": 2, "epsilon": float("nan")}, ValueError, "epsilon"),
        ({"k": 2, "n_perturbations": 0}, ValueError, "n_perturbations"),
        ({"k": 2, "noise": "antithetic"}, ValueError, "noise must be one of"),
        ({"k": 2, "generator": 3}, TypeError, "generator must be a torch.Generator"),
        ({"k": 2, "dim": 4}, ValueError, "dim=4 is out of range"),
    ],
)
def test_bad_parameters(kwargs, error, match):
    with pytest.raises(error, match=match):
        perturbed_topk(torch.randn(4, 8), **kwargs)


def test_bad_inputs():
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        perturbed_topk(np.zeros((2, 3)), 1)
    with pytest.raises(TypeError, match="floating-point"):
        perturbed_topk(torch.zeros(2, 3, dtype=torch.long), 1)
    with pytest.raises(ValueError, match="NaN or infinite"):
        perturbed_topk(torch.tensor([[1.0, float("nan")]]), 1)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu_in_expectation():
    x = torch.randn(64, 300, dtype=torch.float64)
    cpu = perturbed_topk(x, 5, 0.5, 4000, generator=torch.Generator().manual_seed(0))
    gpu_gen = torch.Generator(device="cuda").manual_seed(0)
    gpu = perturbed_topk(x.cuda(), 5, 0.5, 4000, generator=gpu_gen)
    torch.testing.assert_close(gpu.cpu(), cpu, atol=0.03, rtol=0)


finite = st.floats(-50, 50, allow_nan=False, width=32)


@settings(max_examples=40, deadline=None)
@given(
    x=arrays(np.float32, st.tuples(st.integers(1, 6), st.integers(2, 12)), elements=finite),
    k_frac=st.floats(0, 1),
    epsilon=st.sampled_from([0.0, 0.01, 1.0]),
    seed=st.integers(0, 2**31 - 1),
)
def test_properties(x, k_frac, epsilon, seed):
    k = 1 + int(k_frac * (x.shape[1] - 1))
    tensor = torch.from_numpy(x).requires_grad_(True)
    value = perturbed_topk(tensor, k, epsilon, 3, generator=torch.Generator().manual_seed(seed))
    (grad,) = torch.autograd.grad(value.sum(), tensor)
    torch.testing.assert_close(grad.sum(1), torch.ones(x.shape[0]))
    if epsilon == 0.0:
        expected = np.sort(x, axis=1)[:, -k]
        np.testing.assert_array_equal(value.detach().numpy(), expected)
    if k > 1:
        # Same noise: the (k-1)-th largest is never below the k-th. The same noise
        # means the same path: "auto" may take the sparse path for one k and the
        # dense one for the other, which draw the same law from other numbers.
        same = perturbed_topk(tensor.detach(), k, epsilon, 3, sampler="dense",
                              generator=torch.Generator().manual_seed(seed))
        upper = perturbed_topk(tensor.detach(), k - 1, epsilon, 3, sampler="dense",
                               generator=torch.Generator().manual_seed(seed))
        assert (upper >= same).all()
