"""Tests of the fused Triton kernel for the perturbed k-th largest value.

No GPU is needed: the kernel runs on CPU tensors under Triton's interpreter
(``TRITON_INTERPRET=1``). That variable must be set before the kernels are
defined (``triton.jit`` reads it at decoration), and setting it in this process
could leak into other tests, so the interpreter checks run in ONE child process
(this file run as a script with ``--worker``), and each ``_check_*`` function is
reported as its own pytest test. Sizes stay tiny: the interpreter is slow.

On a machine with a CUDA GPU the same checks run again, compiled, on the GPU
(``test_kernel_on_cuda``; skipped elsewhere): the child process then gets
``SKTOPK_TEST_DEVICE=cuda`` and makes CUDA the default device, so the bodies are
shared.
"""

import json
import math
import os
import subprocess
import sys
import traceback
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
#: Device of the checks' tensors and generators in the child process.
DEVICE = os.environ.get("SKTOPK_TEST_DEVICE", "cpu")


def _gen(seed):
    return torch.Generator(device=DEVICE).manual_seed(seed)


# ---------------------------------------------------------------------------
# Checks run in the child process, under the interpreter.
# ---------------------------------------------------------------------------

def _torch_noise(seed, n_rows, n_cols, n_draws, noise, dtype=torch.float32):
    """The noise the torch path draws from ``_gen(seed)``."""
    gen = _gen(seed)
    rows = 1 if noise == "shared" else n_rows
    return torch.stack([torch.randn(rows, n_cols, generator=gen, dtype=dtype)
                        for _ in range(n_draws)])


def _both_paths(x, k, epsilon, n_draws, noise, seed=0, config=None):
    from sktopk._perturbed import kth_largest_perturbed_torch
    from sktopk._triton_perturbed import kth_largest_perturbed_triton

    z = _torch_noise(seed, x.shape[0], x.shape[1], n_draws, noise, x.dtype)
    ref = kth_largest_perturbed_torch(x, k, epsilon, n_draws,
                                      _gen(seed), noise)
    got = kth_largest_perturbed_triton(x, k, epsilon, n_draws, noise=noise, explicit_noise=z,
                                       config=config)
    return ref, got, z


def _check_explicit_noise_bitwise_equal_to_torch_path():
    # Same noise -> the same float32 values and indices, bit for bit, across
    # k (1, a few, k = C), noise modes, single and multi-tile configurations,
    # lanes not filled by whole rows and N not a multiple of the rows per program.
    cases = [(5, 37, 3, 4, None), (7, 37, 3, 1, (8, 16, 2)), (4, 50, 5, 7, (16, 8, 4)),
             (3, 9, 2, 9, (4, 4, 1)), (6, 64, 4, 20, (8, 8, 4)), (1, 64, 1, 2, None),
             (2, 70, 2, 64, (4, 32, 2))]
    for n_rows, n_cols, n_draws, k, config in cases:
        x = torch.randn(n_rows, n_cols, generator=_gen(n_cols))
        for noise in ("independent", "shared"):
            (ref_v, ref_i), (v, i), _ = _both_paths(x, k, 0.7, n_draws, noise, 11, config)
            assert v.dtype == ref_v.dtype and i.dtype == torch.int64
            assert i.shape == (n_rows, n_draws) and v.shape == (n_rows,)
            assert torch.equal(i, ref_i), (n_rows, n_cols, n_draws, k, config, noise)
            assert torch.equal(v, ref_v), (n_rows, n_cols, n_draws, k, config, noise)


def _check_tie_rule_lower_column_first():
    # Equal perturbed values (zero explicit noise) rank by lower column first,
    # also when the tied columns straddle tiles and programs.
    from sktopk._triton_perturbed import kth_largest_perturbed_triton

    x = torch.zeros(3, 13)
    x[0, [2, 5, 6, 11]] = 1.0  # k = 3 -> the third 1.0: column 6
    x[1, :] = 2.0  # all tied: k-th is column k - 1
    x[2, [0, 12]] = 5.0  # k = 3 -> the first 0.0: column 1
    z = torch.zeros(2, 3, 13)
    for config in (None, (2, 4, 1), (8, 8, 2)):
        v, i = kth_largest_perturbed_triton(x, 3, 0.5, 2, explicit_noise=z, config=config)
        assert i.tolist() == [[6, 6], [2, 2], [1, 1]], (config, i.tolist())
        assert v.tolist() == [1.0, 2.0, 0.0]


def _check_half_precision_rounds_like_the_torch_path():
    # float16/bfloat16: the kernel rounds fma(z, eps, x) to the input dtype (to
    # nearest even), as torch does on CUDA. Check that rule exactly, ties aside
    # (they happen at this precision: the index must then point at a column
    # holding the same value), and closeness to the torch CPU path, which rounds
    # alpha (or, in its vector tails, the product) to the half dtype first.
    from sktopk._perturbed import kth_largest_perturbed_torch
    from sktopk._triton_perturbed import kth_largest_perturbed_triton

    eps, k, n_draws = 0.7, 5, 3
    for dtype in (torch.float16, torch.bfloat16):
        x = torch.randn(6, 120, generator=_gen(3)).to(dtype)
        for noise in ("independent", "shared"):
            z = _torch_noise(5, 6, 120, n_draws, noise, dtype)
            v, i = kth_largest_perturbed_triton(x, k, eps, n_draws, noise=noise,
                                                explicit_noise=z)
            assert v.dtype == dtype and i.shape == (6, n_draws)
            exact = torch.addcmul(x.double(), z.double(), torch.tensor(eps).float().double())
            perturbed = exact.float().to(dtype).float()  # (B, N, C)
            kth = torch.topk(perturbed, k, dim=2).values[..., k - 1]  # (B, N)
            assert torch.equal(perturbed.gather(2, i.t().unsqueeze(2)).squeeze(2), kth)
            assert torch.equal(v, (kth.sum(0) / n_draws).to(dtype)), (dtype, noise)
            ref_v, ref_i = kth_largest_perturbed_torch(x, k, eps, n_draws,
                                                       _gen(5), noise)
            torch.testing.assert_close(v.float(), ref_v.float(), rtol=0.02, atol=0)
            assert (i == ref_i).float().mean() > 0.7


def _check_strided_input_and_empty_batch():
    from sktopk._triton_perturbed import kth_largest_perturbed_triton

    seed = torch.tensor([7])
    base = torch.randn(40, 6, generator=_gen(1))
    strided = base.t()  # (6, 40) with column stride 6
    a = kth_largest_perturbed_triton(strided, 3, 1.0, 4, seed=seed)
    b = kth_largest_perturbed_triton(strided.contiguous(), 3, 1.0, 4, seed=seed)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    v, i = kth_largest_perturbed_triton(torch.empty(0, 10), 2, 1.0, 3, seed=seed)
    assert v.shape == (0,) and i.shape == (0, 3)


def _check_results_independent_of_launch_config_and_batch():
    from sktopk._triton_perturbed import kth_largest_perturbed_triton, launch_config

    x = torch.randn(7, 42, generator=_gen(2))
    seed = torch.tensor([123456789])
    for noise in ("independent", "shared"):
        runs = [kth_largest_perturbed_triton(x, 4, 0.9, 3, noise=noise, seed=seed, config=c)
                for c in (None, (4, 8, 1), (8, 32, 4), (32, 64, 2), launch_config(42, 3))]
        for v, i in runs[1:]:
            assert torch.equal(v, runs[0][0]) and torch.equal(i, runs[0][1]), noise
        # A row's noise depends on (seed, row, draw, column) only, not on N.
        v3, i3 = kth_largest_perturbed_triton(x[:3], 4, 0.9, 3, noise=noise, seed=seed)
        assert torch.equal(v3, runs[0][0][:3]) and torch.equal(i3, runs[0][1][:3]), noise


def _check_in_kernel_noise_is_the_dumped_noise():
    # The statistical checks below look at generated_noise(); this ties it to the
    # noise the main kernel really uses.
    from sktopk._triton_perturbed import generated_noise, kth_largest_perturbed_triton

    x = torch.randn(5, 45, generator=_gen(4))
    seed = torch.tensor([2**40 + 17])
    for noise in ("independent", "shared"):
        a = kth_largest_perturbed_triton(x, 3, 0.8, 4, noise=noise, seed=seed)
        z = generated_noise(seed, 5, 45, 4, noise)
        b = kth_largest_perturbed_triton(x, 3, 0.8, 4, noise=noise, explicit_noise=z)
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]), noise
        # and a plain torch check of the k-th largest on that noise
        kth = torch.topk(x.unsqueeze(0) + 0.8 * z, 3, dim=2).values[..., 2]
        torch.testing.assert_close(a[0], kth.mean(0), rtol=1e-6, atol=1e-6)


def _check_in_kernel_noise_is_standard_normal():
    from sktopk._triton_perturbed import generated_noise

    n_draws, n_rows, n_cols = 4, 16, 1024
    z = generated_noise(torch.tensor([99]), n_rows, n_cols, n_draws, block=1024).double()
    flat = z.flatten()
    n = flat.numel()
    assert torch.isfinite(flat).all()
    assert abs(flat.mean().item()) < 5 / math.sqrt(n)
    assert abs(flat.std().item() - 1.0) < 0.02
    assert abs((flat**3).mean().item()) < 0.05  # skewness
    assert abs((flat**4).mean().item() - 3.0) < 0.15  # kurtosis
    tail = (flat.abs() > 3).double().mean().item()  # 0.0027 for N(0, 1)
    assert 0.0015 < tail < 0.0040, tail
    cdf = 0.5 * (1.0 + torch.erf(flat.sort().values / math.sqrt(2.0)))
    steps = torch.arange(n + 1, dtype=torch.float64) / n
    ks = torch.maximum((steps[1:] - cdf).abs(), (steps[:-1] - cdf).abs()).max().item()
    assert ks < 0.01, ks  # 0.0076 is the 0.1% critical value at this n

    def corr(a, b):
        a, b = a - a.mean(), b - b.mean()
        return ((a * b).mean() / (a.std() * b.std())).item()

    # Draws, rows and neighbouring columns (the 4 outputs of one Philox call and
    # the next counters) are uncorrelated; so are their squares (Box-Muller pairs
    # share a radius: a wrong pairing would show there).
    for b in range(1, n_draws):
        assert abs(corr(z[0], z[b])) < 0.05
        assert abs(corr(z[0] ** 2, z[b] ** 2)) < 0.05
    assert abs(corr(z[:, :-1], z[:, 1:])) < 0.03
    for lag in (1, 2, 3, 4, 5, 8):
        assert abs(corr(z[..., :-lag], z[..., lag:])) < 0.03, lag
        assert abs(corr(z[..., :-lag] ** 2, z[..., lag:] ** 2)) < 0.03, lag


def _check_seeds_reproduce_and_differ():
    from sktopk._triton_perturbed import generated_noise, kth_largest_perturbed_triton

    a = generated_noise(torch.tensor([5]), 3, 50, 2)
    assert torch.equal(a, generated_noise(torch.tensor([5]), 3, 50, 2))
    other = generated_noise(torch.tensor([6]), 3, 50, 2)
    assert (a != other).float().mean() > 0.99
    shared = generated_noise(torch.tensor([5]), 3, 50, 2, "shared")
    assert shared.shape == (2, 1, 50) and (shared != a[:, :1]).float().mean() > 0.99
    # Through a torch generator: re-seeding reproduces, successive calls differ.
    x = torch.randn(4, 60, generator=_gen(8))
    first = kth_largest_perturbed_triton(x, 2, 1.0, 3, _gen(1))
    again = kth_largest_perturbed_triton(x, 2, 1.0, 3, _gen(1))
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    gen = _gen(1)
    kth_largest_perturbed_triton(x, 2, 1.0, 3, gen)
    second = kth_largest_perturbed_triton(x, 2, 1.0, 3, gen)
    assert not torch.equal(second[0], first[0])


def _check_agrees_in_expectation_with_torch_path():
    # Different noise streams, same distribution: with many draws the mean
    # k-th value and the gradient (frequency of each column) agree.
    from sktopk._perturbed import kth_largest_perturbed_torch
    from sktopk._triton_perturbed import kth_largest_perturbed_triton

    x = torch.linspace(-1.0, 1.0, 3 * 24).reshape(3, 24)
    k, eps, draws = 3, 0.5, 512
    for noise in ("independent", "shared"):
        v, i = kth_largest_perturbed_triton(x, k, eps, draws, noise=noise,
                                            seed=torch.tensor([31]), config=(512, 32, 4))
        ref_v, ref_i = kth_largest_perturbed_torch(x, k, eps, 8000,
                                                   _gen(0), noise)
        # sd of the mean over 512 draws is < 0.5 / sqrt(512) ~ 0.022
        torch.testing.assert_close(v, ref_v, atol=0.08, rtol=0)
        freq = torch.zeros(3, 24).scatter_add_(1, i, torch.ones_like(i, dtype=torch.float32))
        ref = torch.zeros(3, 24).scatter_add_(1, ref_i, torch.ones_like(ref_i,
                                                                         dtype=torch.float32))
        tv = 0.5 * (freq / draws - ref / 8000).abs().sum(1)
        assert (tv < 0.12).all(), tv


def _check_get_kernel_under_interpreter_and_refusals():
    from sktopk import _triton_dispatch
    from sktopk._perturbed import kth_largest_perturbed_torch
    from sktopk._triton_perturbed import MAX_DRAWS, kth_largest_perturbed_triton, supports
    from sktopk.backends import use_backend

    x = torch.randn(3, 70)
    kernel = kth_largest_perturbed_triton
    assert _triton_dispatch.get_kernel(x, 5, 1.0, 10, "independent") is kernel
    assert _triton_dispatch.get_kernel(x, 5, 1.0, 10, "shared") is kernel
    assert _triton_dispatch.get_kernel(x.half(), 64, 1.0, 10, "shared") is not None
    assert _triton_dispatch.get_kernel(x.double(), 5, 1.0, 10, "independent") is None
    assert _triton_dispatch.get_kernel(x, 65, 1.0, 10, "independent") is None
    assert _triton_dispatch.get_kernel(x, 5, 1.0, 10, "antithetic") is None
    assert _triton_dispatch.get_kernel(x[0], 5, 1.0, 10, "independent") is None
    assert _triton_dispatch.get_kernel(x, 5, 0.0, 10, "independent") is None
    assert _triton_dispatch.get_kernel(x, 5, 1.0, MAX_DRAWS + 1, "independent") is None
    with use_backend("torch"):
        assert _triton_dispatch.get_kernel(x, 5, 1.0, 10, "independent") is None
    assert _triton_dispatch.get_kernel(x, 5, 1.0, 10, "independent") is kernel
    # The kernel refuses what supports() refuses, saying why.
    assert not supports(x, 4, 0.0, 7, "independent")
    for args, reason in [((x, 4, 0.0, 7), "epsilon"), ((x, 2, 1.0, MAX_DRAWS + 1), "registers"),
                         ((x.double(), 2, 1.0, 5), "dtype"), ((x, 65, 1.0, 5), "k=65")]:
        try:
            kernel(*args, _gen(0))
        except ValueError as error:
            assert reason in str(error), error
        else:
            raise AssertionError(f"the kernel accepted {reason}")
    # The "triton" backend runs the kernel on what it supports and raises otherwise.
    from sktopk.functional import perturbed_topk

    with use_backend("triton"):
        value = perturbed_topk(x, 3, 1.0, 4, generator=_gen(0))
        try:
            perturbed_topk(x.double(), 3, 1.0, 4)
        except ValueError as error:
            assert "dtype" in str(error)
        else:
            raise AssertionError("use_backend('triton') accepted float64 scores")
    expected = kth_largest_perturbed_triton(x, 3, 1.0, 4, _gen(0))[0]
    assert torch.equal(value, expected)
    # epsilon = 0 goes to the exact torch path whatever the backend.
    with use_backend("triton"):
        v = perturbed_topk(x, 4, 0.0, 7)
    assert torch.equal(v, kth_largest_perturbed_torch(x, 4, 0.0, 7)[0])


def _check_loss_backward_through_kernel():
    # The autograd glue of sktopk._perturbed with the kernel in place of the
    # torch path (on CUDA the dispatcher does this by itself).
    from sktopk.backends import use_backend
    from sktopk.functional import perturbed_topk, topk_hinge_loss

    with use_backend("triton"):
        x = torch.randn(5, 30, generator=_gen(9), requires_grad=True)
        value = perturbed_topk(x, 3, 1.0, 8, generator=_gen(0))
        value.sum().backward()
        torch.testing.assert_close(x.grad.sum(1), torch.ones(5))
        assert ((x.grad * 8) == (x.grad * 8).round()).all()  # multiples of 1/B
        scores = torch.randn(5, 30, requires_grad=True)
        target = torch.tensor([0, 1, 2, 3, 4])
        loss = topk_hinge_loss(scores, target, k=5, epsilon=0.3, n_perturbations=4,
                               generator=_gen(0))
        loss.backward()
        assert torch.isfinite(loss) and torch.isfinite(scores.grad).all()


CHECKS = sorted(name for name in dir(sys.modules[__name__]) if name.startswith("_check_"))


def _worker():
    """Run every check; print one JSON line {name: "ok" or traceback}."""
    import time

    module = sys.modules[__name__]
    results = {}
    for name in CHECKS:
        start = time.perf_counter()
        try:
            getattr(module, name)()
        except Exception:
            results[name] = traceback.format_exc()
        else:
            results[name] = "ok"
        print(f"{name}: {time.perf_counter() - start:.1f} s", file=sys.stderr)
    print(json.dumps(results))


# ---------------------------------------------------------------------------
# The pytest side.
# ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def interpreter_results():
    pytest.importorskip("triton")
    if torch.cuda.is_available():
        # The interpreter stands in for a GPU; with one, test_kernel_on_cuda runs
        # the same checks compiled. (Triton 3.6's interpreter also fails under
        # numpy >= 2.5: it converts 1-element arrays to ints.)
        pytest.skip("this machine has a GPU: the same checks run in test_kernel_on_cuda")
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--worker"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0 or not proc.stdout.strip():
        pytest.fail(f"interpreter worker failed (rc={proc.returncode}):\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("name", CHECKS)
def test_kernel_under_interpreter(interpreter_results, name):
    result = interpreter_results[name]
    if result != "ok":
        pytest.fail(result, pytrace=False)


def test_get_kernel_refuses_cpu_tensors_outside_the_interpreter(monkeypatch):
    from sktopk import _triton_dispatch

    monkeypatch.setenv("TRITON_INTERPRET", "0")
    assert _triton_dispatch.get_kernel(torch.randn(3, 10), 2, 1.0, 5, "independent") is None


def test_sktopk_works_without_triton():
    # Block the import of triton: sktopk must import, dispatch returns None and
    # the loss runs on the torch path.
    code = (
        "import sys; sys.modules['triton'] = None\n"
        "import os; os.environ['TRITON_INTERPRET'] = '1'\n"
        "import torch\n"
        "from sktopk import _triton_dispatch, _triton_perturbed\n"
        "from sktopk.functional import topk_hinge_loss\n"
        "assert not _triton_perturbed.AVAILABLE\n"
        "assert _triton_dispatch.get_kernel(torch.randn(2, 5), 2, 1.0, 5, 'independent') is None\n"
        "s = torch.randn(4, 6, requires_grad=True)\n"
        "topk_hinge_loss(s, torch.tensor([0, 1, 2, 3]), k=2).backward()\n"
        "print('ok')\n"
    )
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-3000:]


@pytest.fixture(scope="module")
def cuda_results():
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    pytest.importorskip("triton")
    env = dict(os.environ, TRITON_INTERPRET="0", SKTOPK_TEST_DEVICE="cuda",
               PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--worker"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    if proc.returncode != 0 or not proc.stdout.strip():
        pytest.fail(f"CUDA worker failed (rc={proc.returncode}):\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("name", CHECKS)
def test_kernel_on_cuda(cuda_results, name):
    result = cuda_results[name]
    if result != "ok":
        pytest.fail(result, pytrace=False)


if __name__ == "__main__" and "--worker" in sys.argv:
    sys.path.insert(0, str(ROOT))
    if DEVICE != "cpu":
        torch.set_default_device(DEVICE)
    _worker()
