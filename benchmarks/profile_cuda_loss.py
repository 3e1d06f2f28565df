"""Where the time of one CUDA call of the top-K hinge loss goes, part by part.

Run on a machine with a CUDA GPU, from the repository root::

    python benchmarks/profile_cuda_loss.py            # about 20 seconds

For N = 1024, k = 5, B = 10 and C in {1000, 10000}: the median wall time
(synchronised) of the whole loss forward + backward, of its forward alone, of the
input check, of the kernel with and without its seed draw, of cross-entropy, and
of a one-kernel baseline; then torch.profiler's table of ten loss calls at
C = 1000, by host time (the launches and host syncs that make small calls slow).
First, the backward pass alone of the loss, of cross-entropy, of a mean and of
a do-nothing Python autograd Function, each with autograd's CUDA worker thread
(the default) and on the calling thread.
"""

import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sktopk import _triton_perturbed  # noqa: E402
from sktopk._validation import check_loss_inputs  # noqa: E402
from sktopk.functional import topk_hinge_loss  # noqa: E402

N, K, B, EPSILON = 1024, 5, 10, 1.0


def median_ms(fn, repeats=50, warmup=5):
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeats):
        torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        samples.append(time.perf_counter() - start)
    return 1e3 * statistics.median(samples)


def profile_classes(n_classes, generator):
    """Print the part-by-part table for C = ``n_classes`` (and the profile at C = 1000)."""
    scores = torch.randn(N, n_classes, device="cuda", requires_grad=True)
    target = torch.randint(0, n_classes, (N,), device="cuda")
    seed = torch.tensor([7], device="cuda")
    x = scores.detach()

    def loss_backward():
        scores.grad = None
        topk_hinge_loss(scores, target, K, EPSILON, B, generator=generator).backward()

    def cross_entropy_backward():
        scores.grad = None
        F.cross_entropy(scores, target).backward()

    parts = {
        "loss forward + backward": loss_backward,
        "loss forward": lambda: topk_hinge_loss(scores, target, K, EPSILON, B,
                                                generator=generator),
        "input check (one host sync)": lambda: check_loss_inputs(scores, target),
        "kernel, seed drawn": lambda: _triton_perturbed.kth_largest_perturbed_triton(
            x, K + 1, EPSILON, B, generator),
        "kernel, seed given": lambda: _triton_perturbed.kth_largest_perturbed_triton(
            x, K + 1, EPSILON, B, seed=seed),
        "cross-entropy forward + backward": cross_entropy_backward,
        "one small kernel (x.sum())": lambda: x.sum(),
    }
    print(f"\n## C = {n_classes}\n\n| part | median ms |\n|---|---|")
    for name, fn in parts.items():
        print(f"| {name} | {median_ms(fn):.3f} |", flush=True)
    if n_classes == 1000:
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            for _ in range(10):
                loss_backward()
            torch.cuda.synchronize()
        print("\ntorch.profiler, 10 calls of the loss forward + backward at C = 1000:\n")
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25,
                                        max_name_column_width=60))


class _Identity(torch.autograd.Function):
    """A Python autograd Function that does nothing: the cost of having one."""

    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return grad


def backward_overhead(n_classes, generator):
    """Time the backward pass alone, with and without the autograd worker thread."""
    scores = torch.randn(N, n_classes, device="cuda", requires_grad=True)
    target = torch.randint(0, n_classes, (N,), device="cuda")

    def backward_of(make_loss, threads=True):
        def run():
            scores.grad = None
            loss = make_loss()
            torch.cuda.synchronize()
            start = time.perf_counter()
            with torch.autograd.set_multithreading_enabled(threads):
                loss.backward()
            torch.cuda.synchronize()
            return time.perf_counter() - start
        return run

    def median_of(run, repeats=50):
        for _ in range(5):
            run()
        return 1e3 * statistics.median(run() for _ in range(repeats))

    losses = {
        "top-K hinge": lambda: topk_hinge_loss(scores, target, K, EPSILON, B,
                                               generator=generator),
        "cross-entropy": lambda: F.cross_entropy(scores, target),
        "mean of scores": lambda: scores.mean(),
        "Python identity Function, then mean": lambda: _Identity.apply(scores).mean(),
    }
    print(f"\n## Backward pass alone, C = {n_classes} (ms)\n")
    print("| loss | worker thread (default) | calling thread |\n|---|---|---|")
    for name, make_loss in losses.items():
        print(f"| {name} | {median_of(backward_of(make_loss)):.3f} | "
              f"{median_of(backward_of(make_loss, threads=False)):.3f} |", flush=True)
    for threads in (True, False):
        def whole(threads=threads):
            scores.grad = None
            with torch.autograd.set_multithreading_enabled(threads):
                topk_hinge_loss(scores, target, K, EPSILON, B, generator=generator).backward()
        print(f"\nwhole loss forward + backward, multithreading_enabled={threads}: "
              f"{median_ms(whole):.3f} ms", flush=True)


def main():
    print(f"# {torch.cuda.get_device_name()}, torch {torch.__version__}")
    generator = torch.Generator(device="cuda").manual_seed(0)
    for n_classes in (1000, 10000):
        backward_overhead(n_classes, generator)
    for n_classes in (1000, 10000):
        profile_classes(n_classes, generator)


if __name__ == "__main__":
    main()
