"""Forward + backward cost of the top-K losses: sktopk against pytopk, difftopk and cross-entropy.

Each timed call is ``loss(scores, target).backward()`` with ``scores = randn(N, C)``
requiring grad (``--regime random``), or with the scores of a network trained for
a few epochs (``--regime trained``: Gaussian clusters at C = 1000, 10000, 100000
and the bundled cities data, C = 210), or with cosine scores for the imbalanced
loss at epsilon = 0.01 (``--regime cosine``). The trained scores are regenerated
deterministically at each run (seeded data, initialisation and batches), so
nothing large is stored. Every method is warmed up, then the methods are timed in
interleaved rounds (so machine noise hits them alike) and the median is reported,
with ratios taken within the same run. Peak extra memory on CPU is measured in a
fresh subprocess per case (growth of the resident-set high-water mark over the
inputs); on CUDA with ``torch.cuda.max_memory_allocated``.

Usage::

    python benchmarks/bench_losses.py                  # the acceptance grid (CPU, 1 thread)
    python benchmarks/bench_losses.py --grid full      # N, C, k, B over the whole issue grid
    python benchmarks/bench_losses.py --memory         # also the peak-memory table
    python benchmarks/bench_losses.py --device cuda    # on a GPU
    python benchmarks/bench_losses.py --regime trained --repeats 7   # scores of trained networks
    python benchmarks/bench_losses.py --regime cosine --repeats 7    # imbalanced loss, eps=0.01

pytopk and difftopk come from the ``bench`` extra (``pip install -e '.[bench]'``);
missing ones are skipped with a note.
"""

import argparse
import itertools
import json
import platform
import resource
import statistics
import subprocess
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

from sktopk import _triton_dispatch
from sktopk._modules import MLP
from sktopk.backends import use_backend
from sktopk.functional import (
    imbalanced_topk_hinge_loss,
    smooth_topk_svm_loss,
    topk_hinge_loss,
)
from sktopk.losses import ImbalancedTopKHingeLoss, TopKHingeLoss

EPSILON = 1.0
COSINE_EPSILON = 0.01
# pytopk materialises (N, C, B) noise several times over: past this many
# elements per call it needs more memory than the benchmark machine has.
PYTOPK_MAX_ELEMENTS = 3 * 10**8
DIFFTOPK_MAX_SECONDS = 30.0


def _optional(name):
    try:
        return __import__(name)
    except ImportError:
        return None


pytopk = _optional("pytopk")
difftopk = _optional("difftopk")


def on_torch_path(loss):
    """``loss`` on the dense torch path: neither compiled kernel (the reference dense path)."""
    def run(s, y):
        with use_backend("torch"):
            return loss(s, y)
    return run


def make_methods(n, c, k, b, device):
    """name -> callable(scores, target) returning a scalar loss, or None when not applicable."""
    counts = torch.randint(1, 1000, (c,)).tolist()
    gen = torch.Generator(device=device).manual_seed(0)
    methods = {
        "cross_entropy": lambda s, y: F.cross_entropy(s, y),
        "sktopk": lambda s, y: topk_hinge_loss(s, y, k, EPSILON, b, generator=gen),
        "sktopk_dense": lambda s, y: topk_hinge_loss(s, y, k, EPSILON, b, generator=gen,
                                                     sampler="dense"),
        "sktopk_torch": on_torch_path(lambda s, y: topk_hinge_loss(s, y, k, EPSILON, b,
                                                                   generator=gen)),
        "sktopk_shared": lambda s, y: topk_hinge_loss(s, y, k, EPSILON, b, generator=gen,
                                                      noise="shared"),
        "sktopk_imbal": lambda s, y: imbalanced_topk_hinge_loss(
            s, y, counts, k, epsilon=EPSILON, n_perturbations=b, generator=gen),
        "sktopk_svm": lambda s, y: smooth_topk_svm_loss(s, y, k, tau=1.0),
        "randn_floor": lambda s, y: (s.sum() * 0 + torch.randn(
            n * c * b, device=device, generator=gen).sum() * 0),
    }
    if pytopk is not None and n * c * b <= PYTOPK_MAX_ELEMENTS:
        bal = pytopk.BalNoisedTopK(k=k, epsilon=EPSILON, n_sample=b)
        imbal = pytopk.ImbalNoisedTopK(k=k, epsilon=EPSILON, max_m=0.2, cls_num_list=counts,
                                       scale=60, n_sample=b)
        methods["pytopk"] = lambda s, y: bal(s, y)
        methods["pytopk_imbal"] = lambda s, y: imbal(s, y)
    if difftopk is not None and k < c:
        svm = difftopk.SmoothTopKLoss(c, k, tau=1, device=device)
        methods["difftopk_svm"] = lambda s, y: svm(s, y)
    return methods


# Trained-score regimes: a brief, seeded training run on which the losses are then timed.
TRAIN_FEATURES, TRAIN_HIDDEN, TRAIN_BATCH, TRAIN_EPOCHS = 64, 256, 256, 3


def _cluster_data(n_classes, n_samples, seed, long_tail=False):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(n_classes, TRAIN_FEATURES)).astype(np.float32)
    if long_tail:  # class frequencies falling as 1 / rank: a long-tailed problem
        p = 1.0 / np.arange(1, n_classes + 1)
        y = rng.choice(n_classes, size=n_samples, p=p / p.sum())
    else:
        y = rng.integers(0, n_classes, n_samples)
    X = centers[y] + 1.0 * rng.normal(size=(n_samples, TRAIN_FEATURES)).astype(np.float32)
    return torch.as_tensor(X), torch.as_tensor(y)


def _cities_data(seed):
    from sktopk.datasets import load_cities, make_text_vectorizer

    bunch = load_cities()
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(bunch.target))
    X = make_text_vectorizer(n_components=TRAIN_FEATURES, random_state=seed).fit_transform(
        [bunch.data[i] for i in order])
    X = torch.as_tensor(np.asarray(X, dtype=np.float32))
    y = torch.as_tensor(np.asarray(bunch.target)[order])
    return X, y


def trained_scores(source, n_classes, n_rows, seed=0, cosine=False, epochs=TRAIN_EPOCHS,
                   device="cpu"):
    """Decision function on ``n_rows`` held-out rows of a network trained for a few epochs.

    ``source`` is "clusters" (Gaussian clusters, ``n_classes`` of them) or "cities"
    (the bundled cities data). Balanced scores come from an MLP trained with the
    top-K hinge (k=5, epsilon=1, B=10); cosine scores from an MLP with a cosine
    head trained with the imbalanced loss (epsilon=0.01) on long-tailed clusters.
    The network trains on ``device`` (the same data and initialisation; the loss
    noise differs between devices). Returns (scores, targets, class_counts) on
    ``device``.
    """
    torch.manual_seed(seed)  # nothing below uses it; guards against hidden global draws
    if source == "cities":
        X, y = _cities_data(seed)
        n_classes = int(y.max()) + 1
    else:
        # About 32 samples a class, capped so that C = 100000 trains in minutes.
        n_train = min(32 * n_classes, 32768 if n_classes <= 10000 else 8192)
        X, y = _cluster_data(n_classes, n_train + n_rows, seed, long_tail=cosine)
    X, y = X.to(device), y.to(device)
    X_train, y_train = X[:-n_rows], y[:-n_rows]
    counts = torch.bincount(y_train, minlength=n_classes).cpu()
    gen = torch.Generator().manual_seed(seed)
    net = MLP(X.shape[1], n_classes, (TRAIN_HIDDEN,), cosine_head=cosine, generator=gen).to(device)
    noise = torch.Generator(device=device).manual_seed(seed) if device != "cpu" else gen
    if cosine:
        loss = ImbalancedTopKHingeLoss(counts.tolist(), k=5, epsilon=0.01, n_perturbations=5,
                                       generator=noise).to(device)
    else:
        loss = TopKHingeLoss(k=5, epsilon=1.0, n_perturbations=10, generator=noise)
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=1e-4)
    for _ in range(epochs):
        order = torch.randperm(len(X_train), generator=gen)
        for i in range(0, len(X_train), TRAIN_BATCH):
            index = order[i:i + TRAIN_BATCH].to(device)
            optimizer.zero_grad()
            loss(net(X_train[index]), y_train[index]).backward()
            optimizer.step()
    with torch.no_grad():
        scores = net(X[-n_rows:])
    return scores, y[-n_rows:], counts


def _sync(device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_case(n, c, k, b, device, repeats, only=None):
    scores = torch.randn(n, c, device=device, requires_grad=True)
    target = torch.randint(0, c, (n,), device=device)
    methods = make_methods(n, c, k, b, device)
    if only:
        methods = {name: fn for name, fn in methods.items() if name in only}

    def run(fn):
        scores.grad = None
        _sync(device)
        start = time.perf_counter()
        fn(scores, target).backward()
        _sync(device)
        return time.perf_counter() - start

    times = {}
    for name, fn in list(methods.items()):  # warm-up; drop methods that are far too slow
        elapsed = run(fn)
        if name == "difftopk_svm" and elapsed > DIFFTOPK_MAX_SECONDS:
            del methods[name]
            times[name] = [elapsed]
    for name in methods:
        times[name] = []
    budget_rounds = repeats
    for _ in range(budget_rounds):
        for name, fn in methods.items():
            times[name].append(run(fn))
    return {name: 1e3 * statistics.median(t) for name, t in times.items()}


def _peak_memory_in_subprocess(setup, timeout):
    """Peak extra resident memory (bytes) of ``fn(scores, target).backward()`` in a fresh process.

    ``setup`` is the code that defines ``fn``, ``scores`` and ``target`` and runs ``fn``
    once on a small input (to load the code paths before the baseline).
    """
    code = f"""
import torch, json, sys
sys.path.insert(0, {repr(sys.path[0])})
torch.set_num_threads(1)
{setup}
def high_water_kib():
    # VmHWM belongs to this process image; ru_maxrss would start at the parent's peak.
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
before = high_water_kib()
fn(scores, target).backward()
print(json.dumps((high_water_kib() - before) * 1024))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=timeout)
    if out.returncode != 0:
        return None
    return int(json.loads(out.stdout.strip().splitlines()[-1]))


def peak_memory_subprocess(n, c, k, b, method):
    """Peak extra resident memory (bytes) of one call, measured in a fresh process."""
    return _peak_memory_in_subprocess(f"""
from bench_losses import make_methods
scores = torch.randn({n}, {c}, requires_grad=True)
target = torch.randint(0, {c}, ({n},))
fn = make_methods({n}, {c}, {k}, {b}, "cpu")[{method!r}]
small = torch.randn(8, {c}, requires_grad=True)
fn(small, target[:8]).backward()
""", timeout=600)


def grid(name):
    if name == "acceptance":
        return [(1024, c, 5, 10) for c in (100, 1000, 10000)] + [(1024, 1000, 1, 10),
                                                                  (1024, 1000, 20, 10)]
    if name == "full":
        return list(itertools.product((128, 1024), (10, 100, 1000, 10000, 100000), (1, 5, 20),
                                      (5, 10)))
    if name == "sparse":  # the sparse sampler's acceptance on random scores
        return [(1024, 1000, 5, 10), (1024, 10000, 5, 10)]
    if name == "quick":
        return [(128, 100, 5, 5), (128, 1000, 5, 10)]
    raise ValueError(name)


def regime_methods(regime, k, b, counts, device="cpu"):
    """name -> loss callable for the trained / cosine regimes (samplers auto, dense, sparse)."""
    gen = torch.Generator(device=device).manual_seed(0)
    if regime == "trained":
        methods = {
            "cross_entropy": lambda s, y: F.cross_entropy(s, y),
            "sktopk": lambda s, y: topk_hinge_loss(s, y, k, EPSILON, b, generator=gen),
            "sktopk_dense": lambda s, y: topk_hinge_loss(s, y, k, EPSILON, b, generator=gen,
                                                         sampler="dense"),
            "sktopk_sparse": lambda s, y: topk_hinge_loss(s, y, k, EPSILON, b, generator=gen,
                                                          sampler="sparse"),
            "sktopk_torch": on_torch_path(lambda s, y: topk_hinge_loss(s, y, k, EPSILON, b,
                                                                       generator=gen)),
        }
        # The estimators' path: a loss module keeps its sampler decision for 16 calls.
        module = TopKHingeLoss(k, EPSILON, b, generator=gen)
        methods["sktopk_module"] = lambda s, y: module(s, y)
        if pytopk is not None:
            bal = pytopk.BalNoisedTopK(k=k, epsilon=EPSILON, n_sample=b)
            methods["pytopk"] = lambda s, y: bal(s, y)
        return methods
    methods = {
        "cross_entropy": lambda s, y: F.cross_entropy(s, y),
        "sktopk_imbal": lambda s, y: imbalanced_topk_hinge_loss(
            s, y, counts, k, epsilon=COSINE_EPSILON, n_perturbations=b, generator=gen),
        "sktopk_imbal_dense": lambda s, y: imbalanced_topk_hinge_loss(
            s, y, counts, k, epsilon=COSINE_EPSILON, n_perturbations=b, generator=gen,
            sampler="dense"),
        "sktopk_imbal_sparse": lambda s, y: imbalanced_topk_hinge_loss(
            s, y, counts, k, epsilon=COSINE_EPSILON, n_perturbations=b, generator=gen,
            sampler="sparse"),
        "sktopk_imbal_torch": on_torch_path(lambda s, y: imbalanced_topk_hinge_loss(
            s, y, counts, k, epsilon=COSINE_EPSILON, n_perturbations=b, generator=gen)),
    }
    module = ImbalancedTopKHingeLoss(counts, k, epsilon=COSINE_EPSILON, n_perturbations=b,
                                     generator=gen)
    methods["sktopk_imbal_module"] = lambda s, y: module(s, y)
    if pytopk is not None:
        imbal = pytopk.ImbalNoisedTopK(k=k, epsilon=COSINE_EPSILON, max_m=0.2,
                                       cls_num_list=counts, scale=60, n_sample=b)
        methods["pytopk_imbal"] = lambda s, y: imbal(s, y)
    return methods


def time_methods(scores, target, methods, repeats):
    """Median milliseconds of ``fn(scores, target).backward()``, methods interleaved.

    A method that fails its warm-up call is reported and left out.
    """
    scores = scores.detach().clone().requires_grad_(True)
    device = scores.device.type

    def run(fn):
        scores.grad = None
        _sync(device)
        start = time.perf_counter()
        fn(scores, target).backward()
        _sync(device)
        return time.perf_counter() - start

    for name, fn in list(methods.items()):
        try:
            run(fn)
            run(fn)  # CUDA: the first call also compiles kernels and grows the cache
        except Exception as exc:  # e.g. a reference library without CUDA support
            print(f"    {name} failed and is left out: {type(exc).__name__}: {str(exc)[:150]}")
            del methods[name]
    times = {name: [] for name in methods}
    for _ in range(repeats):
        for name, fn in methods.items():
            times[name].append(run(fn))
    return {name: 1e3 * statistics.median(t) for name, t in times.items()}


def peak_memory_of_saved(path, method, regime, k, b):
    """Peak extra resident memory (bytes) of one call on saved scores, in a fresh process."""
    return _peak_memory_in_subprocess(f"""
from bench_losses import regime_methods
scores, target, counts = torch.load({path!r})
fn = regime_methods({regime!r}, {k}, {b}, counts.tolist())[{method!r}]
scores.requires_grad_(True)
small = scores[:8].detach().clone().requires_grad_(True)
fn(small, target[:8]).backward()
""", timeout=1200)


def cached_trained_scores(cache, source, c, n, cosine, device="cpu"):
    """:func:`trained_scores`, saved under ``cache`` (a directory) when one is given."""
    if cache is None or device != "cpu":
        return trained_scores(source, c, n, cosine=cosine, device=device)
    import os

    os.makedirs(cache, exist_ok=True)
    path = os.path.join(cache, f"scores_{source}_{c}_{'cosine' if cosine else 'linear'}_{n}.pt")
    if os.path.exists(path):
        return torch.load(path)
    result = trained_scores(source, c, n, cosine=cosine)
    torch.save(result, path)
    return result


def run_regime(regime, classes, repeats, memory, n=1024, k=5, b=10, cache=None, device="cpu"):
    """Time the losses on trained-network or cosine scores; print one table.

    The "sktopk" column is the functional loss, which runs the sampler rule on
    every call; the "module" column is the loss module the estimators train
    with, which keeps the rule's decision for 16 calls.

    On CUDA the "auto" column is the default dispatch (the dense Triton kernel
    there) and the "sparse" one forces the exact sparse sampler (torch operations).
    """
    from sktopk._sparse_perturbed import _subset_top, choose_sampler
    from sktopk._triton_dispatch import cpu_kernel_takes

    eps = EPSILON if regime == "trained" else COSINE_EPSILON
    cases = ([("cities", None)] if regime == "trained" else []) + [
        ("clusters", c) for c in classes]
    names = (["cross_entropy", "sktopk", "sktopk_dense", "pytopk", "sktopk_torch",
              "sktopk_sparse", "sktopk_module"]
             if regime == "trained" else
             ["cross_entropy", "sktopk_imbal", "sktopk_imbal_dense", "pytopk_imbal",
              "sktopk_imbal_torch", "sktopk_imbal_sparse", "sktopk_imbal_module"])
    main_name, dense_name, ref_name = names[1], names[2], names[3]
    print(f"\n## regime {regime}: N={n}, k={k}, B={b}, epsilon={eps}\n")
    module_name = names[-1]
    print("| scores | C | auto path | train s | " + " | ".join(names)
          + f" | {main_name} / cross_entropy | {module_name} / cross_entropy "
          f"| {dense_name} / {main_name} | {ref_name} / {main_name} |")
    print("|" + "---|" * (4 + len(names) + 4))
    for source, c in cases:
        start = time.perf_counter()
        try:
            scores, target, counts = cached_trained_scores(cache, source, c, n,
                                                           regime == "cosine", device)
        except ImportError as exc:  # the bundled data's optional package is missing
            print(f"| {source} | - | skipped: {exc} |", flush=True)
            continue
        _sync(device)
        train_s = time.perf_counter() - start
        c = scores.shape[1]
        if device == "cpu":
            kernel = cpu_kernel_takes(scores, k + 1, "independent")
            path, sizes = choose_sampler(_subset_top(scores, k + 1), k + 1, eps, b, c, n_rows=n,
                                         kernel=kernel)
            label = (f"sparse, m={sizes[0]}, pool={sizes[1]}" if path == "sparse"
                     else "dense (C kernel)" if kernel else "dense")
        else:  # "auto" stays dense off the CPU
            label = "dense (Triton)" if _triton_dispatch.get_kernel(
                scores, k + 1, eps, b, "independent") else "dense (torch)"
        methods = regime_methods(regime, k, b, counts.tolist(), device)
        if n * c * b > PYTOPK_MAX_ELEMENTS:
            methods.pop(ref_name, None)
        ms = time_methods(scores, target, methods, repeats)

        def cell(name, ms=ms):
            return f"{ms[name]:.2f}" if name in ms else "-"

        def ratio(a, bb, ms=ms):
            return f"{ms[a] / ms[bb]:.1f}x" if a in ms and bb in ms else "-"

        print(f"| {source} | {c} | {label} | {train_s:.0f} | "
              + " | ".join(cell(name) for name in names)
              + f" | {ratio(main_name, 'cross_entropy')} | {ratio(module_name, 'cross_entropy')} "
              f"| {ratio(dense_name, main_name)} | {ratio(ref_name, main_name)} |", flush=True)
        if memory and c == max(classes) and device != "cpu":
            score_bytes = scores.numel() * scores.element_size()
            for name in names[1:3] + names[5:6]:
                if name not in methods:
                    continue
                x = scores.detach().clone().requires_grad_(True)
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
                before = torch.cuda.memory_allocated()
                methods[name](x, target).backward()
                torch.cuda.synchronize()
                peak = torch.cuda.max_memory_allocated() - before
                print(f"    peak extra CUDA memory, {source} C={c}, {name}: "
                      f"{peak / 2**20:.0f} MiB, {peak / score_bytes:.2f}x the scores", flush=True)
        elif memory and c == max(classes):
            path = f"/tmp/sktopk_bench_scores_{regime}_{c}.pt"
            torch.save((scores, target, counts), path)
            score_bytes = scores.numel() * scores.element_size()
            for name in names[:3]:
                peak = peak_memory_of_saved(path, name, regime, k, b)
                text = "failed" if peak is None else (
                    f"{peak / 2**20:.0f} MiB, {peak / score_bytes:.2f}x the scores")
                print(f"    peak extra memory, {source} C={c}, {name}: {text}", flush=True)
            subprocess.run(["rm", "-f", path])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--grid", default="acceptance",
                        choices=["acceptance", "full", "quick", "sparse"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--memory", action="store_true",
                        help="also measure peak extra memory at N=1024, C=100000, B=10 (CPU)")
    parser.add_argument("--regime", default="random", choices=["random", "trained", "cosine"])
    parser.add_argument("--classes", type=int, nargs="+", default=None,
                        help="cluster counts of the trained/cosine regimes")
    parser.add_argument("--cache", default=None,
                        help="directory to keep the trained scores in between runs")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.regime != "random":
        where = (torch.cuda.get_device_name() if args.device.startswith("cuda") else "CPU")
        print(f"# bench_losses: {platform.processor() or platform.machine()}, torch "
              f"{torch.__version__}, {args.threads} thread(s), {where}, median of "
              f"{args.repeats} interleaved rounds; pytopk: {'yes' if pytopk else 'missing'}")
        classes = args.classes or ((1000, 10000, 100000) if args.regime == "trained"
                                   else (1000, 10000))
        run_regime(args.regime, classes, args.repeats, args.memory, cache=args.cache,
                   device=args.device)
        return
    print(f"# bench_losses: {platform.processor() or platform.machine()}, torch "
          f"{torch.__version__}, {args.threads} thread(s), device {args.device}, "
          f"epsilon={EPSILON}, median of {args.repeats} interleaved rounds")
    if args.device.startswith("cuda"):
        print(f"# GPU: {torch.cuda.get_device_name()}")
    print(f"# pytopk: {'yes' if pytopk else 'missing'}, difftopk: "
          f"{'yes' if difftopk else 'missing'}")
    columns = ["cross_entropy", "sktopk", "sktopk_dense", "sktopk_torch", "sktopk_shared",
               "sktopk_imbal", "pytopk",
               "pytopk_imbal", "sktopk_svm", "difftopk_svm", "randn_floor"]
    print("\n| N | C | k | B | " + " | ".join(columns)
          + " | pytopk / sktopk | difftopk_svm / sktopk | difftopk_svm / sktopk_svm "
          "| sktopk / randn |")
    print("|" + "---|" * (4 + len(columns) + 4))
    for n, c, k, b in grid(args.grid):
        if k + 1 > c:
            continue
        ms = time_case(n, c, k, b, args.device, args.repeats)

        def cell(name, ms=ms):
            return f"{ms[name]:.2f}" if name in ms else "-"

        def ratio(a, bb, ms=ms):
            return f"{ms[a] / ms[bb]:.1f}x" if a in ms and bb in ms else "-"

        print(f"| {n} | {c} | {k} | {b} | " + " | ".join(cell(m) for m in columns)
              + f" | {ratio('pytopk', 'sktopk')} | {ratio('difftopk_svm', 'sktopk')} | "
              f"{ratio('difftopk_svm', 'sktopk_svm')} | {ratio('sktopk', 'randn_floor')} |",
              flush=True)
    if args.memory:
        n, c, k, b = 1024, 100000, 5, 10
        score_bytes = n * c * 4
        print(f"\nPeak extra memory, N={n}, C={c}, k={k}, B={b} (scores: "
              f"{score_bytes / 2**20:.0f} MiB)\n")
        print("| method | peak extra MiB | x scores |\n|---|---|---|")
        for method in ("cross_entropy", "sktopk", "sktopk_shared", "sktopk_imbal"):
            peak = peak_memory_subprocess(n, c, k, b, method)
            if peak is None:
                print(f"| {method} | failed | - |")
            else:
                print(f"| {method} | {peak / 2**20:.0f} | {peak / score_bytes:.2f} |",
                      flush=True)
    print(f"\n# max RSS of this process: "
          f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.1f} GiB")


if __name__ == "__main__":
    main()
